"""Rule-file validation (every error says file, rule and problem) and contributions by hand."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable
from datetime import date
from pathlib import Path

import pytest

from osmanthus.core.catalogue import Catalogue, default_rules_dir, load_catalogue
from osmanthus.core.errors import ConfigError, InvalidArgument, NotFound
from osmanthus.core.rules import (
    Record,
    RuleSet,
    Validity,
    load_default_rules,
    load_rules,
)
from osmanthus.core.types import SubjectId, SubjectKind

PERSON = SubjectKind.PERSON
ENTERPRISE = SubjectKind.ENTERPRISE
SUBJECT = SubjectId("320508199001011234")
AS_OF = date(2026, 6, 1)
_record_numbers = itertools.count(1)


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return load_catalogue()


def rules_for(catalogue: Catalogue, dept: str) -> RuleSet:
    return load_default_rules(dept, catalogue=catalogue)


def rec(
    kind: str,
    start: date,
    end: date | None = None,
    *,
    quantity: int = 1,
    status: str = "active",
    subject_kind: SubjectKind = PERSON,
) -> Record:
    return Record(
        record_id=f"R{next(_record_numbers)}",
        subject_kind=subject_kind,
        subject_id=SUBJECT,
        kind=kind,
        quantity=quantity,
        event_start=start,
        event_end=end,
        status=status,
    )


def contribution(
    rs: RuleSet, records: Iterable[Record], as_of: date = AS_OF
) -> tuple[int, dict[str, int]]:
    c = rs.contribution(PERSON, records, as_of=as_of)
    return c.deductions, dict(c.bonuses)


# -- loading ------------------------------------------------------------------------------------


def test_default_rules_load_with_digest_and_version(catalogue: Catalogue) -> None:
    rs = rules_for(catalogue, "volunteer")
    data = (default_rules_dir() / "volunteer.toml").read_bytes()
    assert rs.digest == hashlib.sha256(data).hexdigest()
    assert rs.version == "2026.1"
    assert rs.department == "volunteer"
    rule = rs.rule(PERSON, "volunteer_hours")
    assert (rule.category, rule.points, rule.per_quantity, rule.kind_cap) == (
        "volunteer_service",
        1,
        10,
        0,
    )
    assert str(rule.validity) == "3y"  # the bonus default
    assert rules_for(catalogue, "edu").rule(PERSON, "exam_cheating").validity == Validity(
        "years", 5
    )  # the deduction default
    assert [c.name for c in rs.owned_categories(PERSON)] == ["volunteer_service"]
    assert rs.owned_categories(ENTERPRISE) == ()
    assert rs.kinds(ENTERPRISE) == frozenset()
    with pytest.raises(NotFound, match="no rule for person record kind 'blood_donation'"):
        rs.rule(PERSON, "blood_donation")


def test_load_default_rules_unknown_department(catalogue: Catalogue) -> None:
    with pytest.raises(NotFound, match="'police' is not in the catalogue"):
        load_default_rules("police", catalogue=catalogue)


RULE = """
[[rule]]
kind = "tax_arrears"
subject_kind = "person"
category = "deduction"
points = 10
description = "Tax arrears"
"""


def write_rules(tmp_path: Path, body: str, *, head: str | None = None, name: str = "tax") -> Path:
    path = tmp_path / f"{name}.toml"
    header = head if head is not None else 'department = "tax"\nversion = "2026.1"\n'
    path.write_text(header + body, encoding="utf-8")
    return path


TAX_ARREARS = "rule 1 (kind 'tax_arrears'): "


def edit(old: str, new: str) -> str:
    assert old in RULE
    return RULE.replace(old, new)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (edit("points = 10", "points = -10"), TAX_ARREARS + "points: must be >= 0"),
        (edit("points = 10", "points = 1.5"), TAX_ARREARS + "points: must be a whole number"),
        (edit("points = 10", "points = true"), TAX_ARREARS + "points: must be a whole number"),
        (RULE + "per_quantity = 0\n", TAX_ARREARS + "per_quantity: must be at least 1"),
        (RULE + "kind_cap = -1\n", TAX_ARREARS + "kind_cap: must be >= 0"),
        (RULE + 'validity = "5 years"\n', TAX_ARREARS + "validity '5 years' is not understood"),
        (RULE + 'validity = "0y"\n', TAX_ARREARS + "validity '0y' is not understood"),
        (RULE + "validity = 5\n", TAX_ARREARS + "validity: must be a string"),
        (
            RULE + 'flag = "Bank Loan"\n',
            TAX_ARREARS + "flag: 'Bank Loan' must be empty or a lower-case identifier",
        ),
        (RULE + "weight = 2\n", TAX_ARREARS + "unknown key 'weight'"),
        (edit('description = "Tax arrears"\n', ""), TAX_ARREARS + "missing key 'description'"),
        (
            edit('description = "Tax arrears"', 'description = " "'),
            TAX_ARREARS + "description: must say in words",
        ),
        (
            edit('category = "deduction"', 'category = "qualifications"'),
            TAX_ARREARS + "category: 'qualifications' is not 'deduction' or a bonus category "
            "this department owns for persons",
        ),
        (
            edit('category = "deduction"', 'category = "bonus"'),
            TAX_ARREARS + "category: 'bonus' is not 'deduction'",
        ),
        (
            edit('subject_kind = "person"', 'subject_kind = "citizen"'),
            TAX_ARREARS + "subject_kind: 'citizen' is not 'person' or 'enterprise'",
        ),
        (
            edit('kind = "tax_arrears"', 'kind = "Tax Arrears"'),
            "rule 1 (kind 'Tax Arrears'): kind: must be a lower-case identifier",
        ),
        (
            edit('kind = "tax_arrears"', 'kind = "tax_arrears\\n"'),
            "kind: must be a lower-case identifier",
        ),
        (
            edit('category = "deduction"', 'category = "deduction"\nflag = "bank_loan\\n"'),
            "flag: 'bank_loan\\n' must be empty or a lower-case identifier",
        ),
        (RULE + RULE, "rule 2 (kind 'tax_arrears'): a person rule for this kind already exists"),
        (
            RULE + RULE.replace("tax_arrears", "late_filing").replace("= 10", "= -1"),
            "rule 2 (kind 'late_filing'): points: must be >= 0",
        ),
    ],
)
def test_rule_validation_errors(
    tmp_path: Path, catalogue: Catalogue, body: str, message: str
) -> None:
    path = write_rules(tmp_path, body)
    with pytest.raises(ConfigError) as e:
        load_rules(path, catalogue=catalogue)
    assert str(e.value).startswith(f"{path}: ")
    assert message in str(e.value)


def test_rule_file_level_errors(tmp_path: Path, catalogue: Catalogue) -> None:
    tax = 'department = "tax"\nversion = "1"\n'
    cases = [
        ('version = "1"\n', "tax", "department: must name a department id"),
        (tax.replace('"tax"', '"police"'), "police", "department: 'police' is not in the catalog"),
        ('department = "tax"\n', "tax", "version: missing"),
        ('department = "tax"\nversion = ""\n', "tax", "version: missing"),
        (tax + 'owner = "x"\n', "tax", "unknown top-level key 'owner'"),
        (tax, "psb", "the file says 'tax' but is named 'psb.toml'"),
    ]
    for head, name, message in cases:
        path = write_rules(tmp_path, RULE, head=head, name=name)
        with pytest.raises(ConfigError, match=message):
            load_rules(path, catalogue=catalogue)
    with pytest.raises(ConfigError, match="rule file does not exist"):
        load_rules(tmp_path / "nope.toml", catalogue=catalogue)
    broken = write_rules(tmp_path, "[[rule]\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_rules(broken, catalogue=catalogue)


def test_subject_kind_must_be_served(tmp_path: Path, catalogue: Catalogue) -> None:
    path = write_rules(
        tmp_path,
        RULE.replace('kind = "tax_arrears"', 'kind = "blood_donation"').replace(
            'subject_kind = "person"', 'subject_kind = "enterprise"'
        ),
        head='department = "blood"\nversion = "1"\n',
        name="blood",
    )
    with pytest.raises(
        ConfigError,
        match=r"rule 1 \(kind 'blood_donation'\): subject_kind: the department does not serve "
        "enterprises",
    ):
        load_rules(path, catalogue=catalogue)


def test_validity_parse() -> None:
    assert Validity.parse("5y") == Validity("years", 5)
    assert Validity.parse("while_listed").mode == "while_listed"
    assert str(Validity.parse("permanent")) == "permanent"
    for bad in ("", "5", "y", "100y", "-1y", "5Y", "5 y"):
        with pytest.raises(ValueError, match="is not understood"):
            Validity.parse(bad)


# -- contributions ------------------------------------------------------------------------------


def test_kind_cap_and_sum_of_kinds(catalogue: Catalogue) -> None:
    psb = rules_for(catalogue, "psb")
    penalties = [rec("public_order_penalty", date(2025, m, 1)) for m in range(1, 5)]
    # 4 x 5 = 20, capped at 15 for the kind; drunk driving adds 20 more, uncapped
    assert contribution(psb, penalties) == (15, {})
    assert contribution(psb, penalties[:2]) == (10, {})
    assert contribution(psb, [*penalties, rec("drunk_driving", date(2024, 1, 1))]) == (35, {})
    assert contribution(psb, []) == (0, {})


def test_per_quantity_sums_quantities_before_dividing(catalogue: Catalogue) -> None:
    vol = rules_for(catalogue, "volunteer")
    three_fours = [rec("volunteer_hours", date(2025, 1, d), quantity=4) for d in (1, 2, 3)]
    assert contribution(vol, three_fours) == (0, {"volunteer_service": 1})  # 12 h -> +1
    assert contribution(vol, three_fours[:2]) == (0, {"volunteer_service": 0})  # 8 h -> 0
    assert contribution(vol, [rec("volunteer_hours", date(2025, 1, 1), quantity=259)]) == (
        0,
        {"volunteer_service": 25},  # 25 by the rule, also the category cap
    )
    lots = [rec("volunteer_hours", date(2025, 1, 1), quantity=1000)]
    assert contribution(vol, lots) == (0, {"volunteer_service": 25})  # 100 capped at 25


def test_category_cap_applies_across_kinds(catalogue: Catalogue) -> None:
    hrss = rules_for(catalogue, "hrss")
    records = [
        rec("senior_title", date(2025, 1, 1)),
        rec("intermediate_title", date(2024, 1, 1)),
        rec("social_insurance_fraud", date(2023, 1, 1)),
    ]
    # 20 + 10 = 30 capped at the category cap 25; the deduction is separate and uncapped
    assert contribution(hrss, records) == (30, {"qualifications": 25})
    assert contribution(hrss, records[1:]) == (30, {"qualifications": 10})


def test_validity_years_after_event_end(catalogue: Catalogue) -> None:
    psb = rules_for(catalogue, "psb")
    dui = rec("drunk_driving", date(2020, 3, 1), date(2020, 3, 10))
    assert contribution(psb, [dui], date(2020, 2, 29)) == (0, {})  # before it happened
    assert contribution(psb, [dui], date(2020, 3, 1)) == (20, {})
    assert contribution(psb, [dui], date(2025, 3, 9)) == (20, {})  # last day
    assert contribution(psb, [dui], date(2025, 3, 10)) == (0, {})  # the 5th anniversary
    no_end = rec("drunk_driving", date(2020, 3, 1))
    assert contribution(psb, [no_end], date(2025, 2, 28)) == (20, {})
    assert contribution(psb, [no_end], date(2025, 3, 1)) == (0, {})
    leap = rec("drunk_driving", date(2020, 1, 1), date(2020, 2, 29))
    assert contribution(psb, [leap], date(2025, 2, 27)) == (20, {})
    assert contribution(psb, [leap], date(2025, 2, 28)) == (0, {})


def test_bonus_validity_three_years(catalogue: Catalogue) -> None:
    blood = rules_for(catalogue, "blood")
    donations = [rec("blood_donation", date(2022, 6, 1)), rec("blood_donation", date(2024, 1, 1))]
    assert contribution(blood, donations, date(2025, 5, 31)) == (0, {"blood_donation": 10})
    assert contribution(blood, donations, date(2025, 6, 1)) == (0, {"blood_donation": 5})
    assert contribution(blood, donations, date(2027, 1, 1)) == (0, {"blood_donation": 0})


def test_while_listed(catalogue: Catalogue) -> None:
    court = rules_for(catalogue, "court")
    listed = rec("judgement_defaulter", date(2012, 1, 1))
    assert contribution(court, [listed]) == (50, {})  # still listed after 14 years
    planned_end = rec("judgement_defaulter", date(2025, 1, 1), date(2026, 6, 2))
    assert contribution(court, [planned_end]) == (50, {})  # end still ahead
    assert contribution(court, [planned_end], date(2026, 6, 2)) == (0, {})  # lifted that day
    lifted = rec("judgement_defaulter", date(2025, 1, 1), date(2025, 7, 1))
    assert contribution(court, [lifted]) == (0, {})
    two = [listed, rec("judgement_defaulter", date(2020, 1, 1))]
    assert contribution(court, two) == (100, {})


def test_disputed_records_do_not_count(catalogue: Catalogue) -> None:
    court = rules_for(catalogue, "court")
    disputed = rec("judgement_defaulter", date(2025, 1, 1), status="disputed")
    assert contribution(court, [disputed]) == (0, {})
    civility = rules_for(catalogue, "civility")
    honours = [
        rec("city_honour", date(2025, 1, 1), status="disputed"),
        rec("district_honour", date(2025, 2, 1)),
    ]
    assert contribution(civility, honours) == (0, {"honours": 10})


def test_permanent_validity(tmp_path: Path, catalogue: Catalogue) -> None:
    path = tmp_path / "hrss.toml"
    path.write_text(
        'department = "hrss"\nversion = "t"\n[[rule]]\nkind = "senior_title"\n'
        'subject_kind = "person"\ncategory = "qualifications"\npoints = 20\n'
        'validity = "permanent"\ndescription = "Senior title, for good"\n',
        encoding="utf-8",
    )
    hrss = load_rules(path, catalogue=catalogue)
    title = rec("senior_title", date(1990, 1, 1))
    assert contribution(hrss, [title], date(2026, 1, 1)) == (0, {"qualifications": 20})
    assert contribution(hrss, [title], date(1989, 12, 31)) == (0, {"qualifications": 0})


def test_enterprise_contribution(catalogue: Catalogue) -> None:
    tax = rules_for(catalogue, "tax")
    records = [
        rec("a_level_taxpayer", date(2025, 1, 1), date(2025, 12, 31), subject_kind=ENTERPRISE),
        rec("a_level_taxpayer", date(2024, 1, 1), date(2024, 12, 31), subject_kind=ENTERPRISE),
        rec("tax_arrears", date(2025, 3, 1), date(2025, 5, 1), subject_kind=ENTERPRISE),
    ]
    c = tax.contribution(ENTERPRISE, records, as_of=date(2026, 6, 1))
    assert (c.deductions, dict(c.bonuses)) == (10, {"tax_credit": 30})  # 60 capped at 30
    c = tax.contribution(ENTERPRISE, records, as_of=date(2027, 1, 1))
    assert (c.deductions, dict(c.bonuses)) == (10, {"tax_credit": 0})  # ratings expired
    person = tax.contribution(PERSON, [rec("tax_arrears", date(2025, 3, 1))], as_of=AS_OF)
    assert dict(person.bonuses) == {}  # tax owns no person category


def test_unknown_kind_is_a_rules_data_mismatch(catalogue: Catalogue) -> None:
    psb = rules_for(catalogue, "psb")
    with pytest.raises(ConfigError, match="no person rule for record kind 'jaywalking'"):
        psb.contribution(PERSON, [rec("jaywalking", date(2025, 1, 1))], as_of=AS_OF)
    # a kind that exists only for the other subject kind is unknown too
    tax = rules_for(catalogue, "tax")
    with pytest.raises(ConfigError, match="'a_level_taxpayer'"):
        tax.contribution(PERSON, [rec("a_level_taxpayer", date(2025, 1, 1))], as_of=AS_OF)


def test_records_of_another_subject_kind_are_refused(catalogue: Catalogue) -> None:
    tax = rules_for(catalogue, "tax")
    with pytest.raises(
        InvalidArgument,
        match="has subject kind 'enterprise', but this contribution is for subject kind 'person'",
    ):
        tax.contribution(
            PERSON,
            [rec("tax_arrears", date(2025, 1, 1), subject_kind=ENTERPRISE)],
            as_of=AS_OF,
        )


def test_points_beyond_the_score_range_are_refused(tmp_path: Path) -> None:
    # an absurd value would otherwise only surface as an encoding overflow at query time
    path = tmp_path / "psb.toml"
    path.write_text(
        'department = "psb"\nversion = "1"\n[[rule]]\nkind = "drunk_driving"\n'
        'subject_kind = "person"\ncategory = "deduction"\npoints = 5000000000\n'
        'description = "typo"\n'
    )
    with pytest.raises(ConfigError, match="more than the whole score range"):
        load_rules(path, catalogue=load_catalogue())

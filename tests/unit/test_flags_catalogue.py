"""The joint-punishment catalogue: [[measure]] and [[flag]] validation, the defaults against the
source, which departments a FLAGS query asks, which records set a flag, the node's start-up check
and the tables of docs/joint-punishment.md (rendered here from the files, so they cannot drift)."""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from node.service import NodeService
from node.store import RecordStore
from osmanthus.core.audit import AuditLog
from osmanthus.core.catalogue import (
    Catalogue,
    FlagType,
    default_catalogue_path,
    default_rules_dir,
    load_catalogue,
)
from osmanthus.core.crypto import EncryptorCache
from osmanthus.core.errors import ConfigError, InvalidArgument, NotFound
from osmanthus.core.peers import PeerRole
from osmanthus.core.policy import (
    Decision,
    PolicyEngine,
    PolicyRequest,
    ReloadablePolicy,
    time_facts,
)
from osmanthus.core.rules import Record, RuleSet, load_default_rules, load_rules, load_rules_dir
from osmanthus.core.tls import PeerIdentity
from osmanthus.core.tokens import ReplayCache, TokenVerifier
from osmanthus.core.types import DepartmentId, Role, SubjectId, SubjectKind
from osmanthus.core.wire.node import validate_measures

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "joint-punishment.md"
PERSON = SubjectKind.PERSON
COORDINATOR = PeerIdentity(role=PeerRole.COORDINATOR, name="coordinator")
ENTERPRISE = SubjectKind.ENTERPRISE
AS_OF = date(2026, 6, 1)
_record_numbers = itertools.count(1)

# /work/shared/catalogue.md, "Joint-punishment measures": measure -> the flags that trigger it
SOURCE_MEASURES = {
    "bank_loan": {
        "judgement_defaulter", "major_tax_violation", "serious_dishonest", "housing_fund_default",
    },
    "land_approval": {
        "serious_dishonest", "work_safety_dishonest", "environmental_dishonest",
        "judgement_defaulter",
    },
    "securities_financing": {
        "judgement_defaulter", "major_tax_violation", "serious_dishonest", "work_safety_dishonest",
    },
    "government_procurement": {"serious_dishonest", "major_tax_violation", "judgement_defaulter"},
    "high_consumption": {"judgement_defaulter"},
    "customs_facilitation": {"customs_dishonest", "major_tax_violation", "serious_dishonest"},
}  # fmt: skip
# Osmanthus defaults beyond the source table, each stated in docs/joint-punishment.md
ADDED_TRIGGERS = {"government_procurement": {"social_insurance_arrears"}}
# issue 5: the flag types and the department that sets each
FLAG_DEPARTMENTS = {
    "judgement_defaulter": "court",
    "major_tax_violation": "tax",
    "serious_dishonest": "samr",
    "work_safety_dishonest": "safety",
    "environmental_dishonest": "eco",
    "social_insurance_arrears": "hrss",
    "housing_fund_default": "hpf",
    "customs_dishonest": "customs",
}


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return load_catalogue()


@pytest.fixture(scope="module")
def rules(catalogue: Catalogue) -> dict[str, RuleSet]:
    return load_rules_dir(default_rules_dir(), catalogue=catalogue)


# --- parsing --------------------------------------------------------------------------------

# the smallest catalogue the parser accepts: two departments and both score models
BASE = """
[[department]]
id = "court"
name = "Court"
name_zh = "法院"
subject_kinds = ["person", "enterprise"]

[[department]]
id = "tax"
name = "Taxation Bureau"
name_zh = "税务局"
subject_kinds = ["person", "enterprise"]

[[department]]
id = "customs"
name = "Customs"
name_zh = "海关"
subject_kinds = ["enterprise"]

[model.person]
base = 100
floor = 0
ceiling = 200
grades = []

[[model.person.category]]
name = "honours"
label = "Honours"
owner = "court"
cap = 100

[model.enterprise]
base = 100
floor = 0
ceiling = 200
grades = [["A", 90], ["D", 0]]

[[model.enterprise.category]]
name = "compliance"
label = "Compliance"
owner = "tax"
cap = 100
"""

MEASURES = """
[[measure]]
id = "bank_loan"
name = "Bank loans restricted"
name_zh = "限制银行贷款"

[[measure]]
id = "customs_facilitation"
name = "Customs facilitation withdrawn"
name_zh = "取消通关便利"
"""

FLAG = """
[[flag]]
id = "judgement_defaulter"
department = "court"
name = "Judgement defaulter"
name_zh = "失信被执行人"
measures = ["bank_loan"]
"""


def write_catalogue(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "catalogue.toml"
    path.write_text(text, encoding="utf-8")
    return path


def edited(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} must occur exactly once"
    return text.replace(old, new)


def test_a_catalogue_without_flags_or_measures_still_loads(tmp_path: Path) -> None:
    catalogue = load_catalogue(write_catalogue(tmp_path, BASE))
    assert (catalogue.measures, catalogue.flags) == ((), ())
    assert catalogue.flags_of("court") == ()
    assert catalogue.flag_departments(PERSON, ["bank_loan"]) == ()


def test_measures_and_flags_parse(tmp_path: Path) -> None:
    # a [[flag]] may come before the [[measure]] it names: the file's order does not matter
    catalogue = load_catalogue(write_catalogue(tmp_path, BASE + FLAG + MEASURES))
    assert [(m.id, m.name, m.name_zh) for m in catalogue.measures] == [
        ("bank_loan", "Bank loans restricted", "限制银行贷款"),
        ("customs_facilitation", "Customs facilitation withdrawn", "取消通关便利"),
    ]
    (flag,) = catalogue.flags
    assert (flag.id, flag.department, flag.name, flag.name_zh) == (
        "judgement_defaulter", "court", "Judgement defaulter", "失信被执行人",
    )  # fmt: skip
    assert flag.measures == frozenset({"bank_loan"})
    # a measure no flag triggers is allowed: no department is asked about it
    assert catalogue.flag_departments(ENTERPRISE, ["customs_facilitation"]) == ()
    assert catalogue.measure("customs_facilitation").name_zh == "取消通关便利"
    with pytest.raises(NotFound, match="'land_approval' is not a joint-punishment measure"):
        catalogue.measure("land_approval")


def flag_edit(old: str, new: str) -> str:
    """The base catalogue with both measures and one edited flag."""
    return BASE + MEASURES + edited(FLAG, old, new)


def measure_edit(old: str, new: str) -> str:
    """The base catalogue with one edited measure and the flag."""
    return BASE + edited(MEASURES, old, new) + FLAG


BANK_LOAN_ONLY = 'measures = ["bank_loan"]'
BANK_LOAN_AGAIN = """
[[measure]]
id = "bank_loan"
name = "Bank loans restricted (again)"
name_zh = "限制银行贷款"
"""

CATALOGUE_ERRORS = {
    "unknown-department": (
        flag_edit('department = "court"', 'department = "police"'),
        "flag[1].department: department 'police' is not in the catalogue",
    ),
    "unknown-measure": (
        flag_edit(BANK_LOAN_ONLY, 'measures = ["travel"]'),
        "flag[1].measures: 'travel' is not a [[measure]] of this catalogue; "
        "known: bank_loan, customs_facilitation",
    ),
    "duplicate-flag": (
        BASE + MEASURES + FLAG + FLAG,
        "flag[2].id: flag 'judgement_defaulter' is listed twice",
    ),
    "duplicate-measure": (
        BASE + MEASURES + BANK_LOAN_AGAIN + FLAG,
        "measure[3].id: measure 'bank_loan' is listed twice",
    ),
    "empty-measures": (
        flag_edit(BANK_LOAN_ONLY, "measures = []"),
        "flag[1].measures: must be a non-empty array of measure ids",
    ),
    "measures-not-an-array": (
        flag_edit(BANK_LOAN_ONLY, 'measures = "bank_loan"'),
        "flag[1].measures: must be a non-empty array of measure ids",
    ),
    "measure-twice-in-a-flag": (
        flag_edit(BANK_LOAN_ONLY, 'measures = ["bank_loan", "bank_loan"]'),
        "flag[1].measures: a measure is listed twice",
    ),
    "flag-id-not-an-identifier": (
        flag_edit('id = "judgement_defaulter"', 'id = "Judgement-Defaulter"'),
        "flag[1].id: 'Judgement-Defaulter' is not a flag id (a lower-case identifier)",
    ),
    "measure-id-not-an-identifier": (
        measure_edit('id = "bank_loan"', 'id = "bank loan"'),
        "measure[1].id: 'bank loan' is not a measure id (a lower-case identifier)",
    ),
    "unknown-flag-key": (
        BASE + MEASURES + FLAG + 'severity = "high"\n',
        "flag[1].severity: unknown key; allowed keys here: department, id, measures, name, name_zh",
    ),
    # which records set a flag is the rule files' `flag` key, never a second list here
    "record-kinds-in-a-flag": (
        BASE + MEASURES + FLAG + 'record_kinds = ["judgement_defaulter"]\n',
        "flag[1].record_kinds: unknown key; allowed keys here: department, id, measures, name, "
        "name_zh",
    ),
    "unknown-measure-key": (
        measure_edit('name_zh = "限制银行贷款"', 'name_zh = "限制银行贷款"\nlevel = 2'),
        "measure[1].level: unknown key; allowed keys here: id, name, name_zh",
    ),
    "missing-flag-key": (
        flag_edit('name_zh = "失信被执行人"\n', ""),
        "flag[1].name_zh: missing",
    ),
    "blank-name": (
        flag_edit('name = "Judgement defaulter"', 'name = " "'),
        "flag[1].name: must be a non-empty string",
    ),
    "measure-not-an-array-of-tables": (
        'measure = "bank_loan"\n' + BASE,
        "measure: must be an array of [[measure]] tables",
    ),
    "flag-entry-not-a-table": (
        'flag = ["judgement_defaulter"]\n' + BASE + MEASURES,
        "flag[1]: must be a table",
    ),
}


@pytest.mark.parametrize(
    ("text", "message"), list(CATALOGUE_ERRORS.values()), ids=list(CATALOGUE_ERRORS)
)
def test_catalogue_errors_name_the_key_and_the_problem(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write_catalogue(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_catalogue(path)
    assert str(caught.value) == f"{path}: {message}"


# --- the default catalogue ------------------------------------------------------------------


def triggers(catalogue: Catalogue) -> dict[str, set[str]]:
    """measure -> the flags that trigger it."""
    return {m.id: {f.id for f in catalogue.flags if m.id in f.measures} for m in catalogue.measures}


def test_default_measures_are_the_source_table_plus_the_documented_additions(
    catalogue: Catalogue,
) -> None:
    expected = {m: SOURCE_MEASURES[m] | ADDED_TRIGGERS.get(m, set()) for m in SOURCE_MEASURES}
    assert triggers(catalogue) == expected
    assert [m.id for m in catalogue.measures] == list(SOURCE_MEASURES)
    assert {f.id: f.department for f in catalogue.flags} == FLAG_DEPARTMENTS
    doc = DOC.read_text(encoding="utf-8")
    for measure, added in ADDED_TRIGGERS.items():
        for flag in added:
            assert f"`{flag}` → `{measure}`" in doc, "an addition to the source is documented"


def flag_rules(rules: Mapping[str, RuleSet], flag: FlagType) -> list[tuple[str, SubjectKind]]:
    """(record kind, subject kind) of each rule of the flag's department that sets it."""
    return [(r.kind, r.subject_kind) for r in rules[flag.department].rules if r.flag == flag.id]


def test_the_default_rules_set_exactly_the_catalogues_flags(
    catalogue: Catalogue, rules: Mapping[str, RuleSet]
) -> None:
    # the check every node makes at start-up, over every department at once
    for dept in catalogue.departments:
        defined = {f.id for f in catalogue.flags_of(dept.id)}
        assert rules[dept.id].flag_ids() == defined, dept.id
    # every measure can be triggered for both kinds of subject
    for measure in catalogue.measures:
        for kind in SubjectKind:
            assert catalogue.flag_departments(kind, [measure.id]), (measure.id, kind)


def test_housing_fund_default_is_set_by_persons_loan_defaults_only(
    catalogue: Catalogue, rules: Mapping[str, RuleSet]
) -> None:
    (flag,) = catalogue.flags_of("hpf")
    assert flag.id == "housing_fund_default"
    assert flag_rules(rules, flag) == [("provident_fund_loan_default", PERSON)]
    assert "provident_fund_contribution_arrears" in rules["hpf"].kinds(ENTERPRISE)


# catalogue order of departments: court, tax, hrss, hpf, ..., samr, eco, ..., safety, ..., customs
EXPECTED_DEPARTMENTS = {
    "bank_loan": (("court", "tax", "hpf", "samr"),) * 2,
    "land_approval": (("court", "samr", "eco", "safety"),) * 2,
    "securities_financing": (("court", "tax", "samr", "safety"),) * 2,
    "government_procurement": (("court", "tax", "hrss", "samr"),) * 2,
    "high_consumption": (("court",),) * 2,
    # customs serves enterprises only: a person's answer never waits for it
    "customs_facilitation": (("tax", "samr"), ("tax", "samr", "customs")),
}


@pytest.mark.parametrize("measure", list(EXPECTED_DEPARTMENTS))
def test_flag_departments_per_measure_and_kind(catalogue: Catalogue, measure: str) -> None:
    persons, enterprises = EXPECTED_DEPARTMENTS[measure]
    assert catalogue.flag_departments(PERSON, [measure]) == persons
    assert catalogue.flag_departments(ENTERPRISE, (m for m in [measure])) == enterprises


def test_flag_departments_of_several_measures(catalogue: Catalogue) -> None:
    # the union, in catalogue order, each department once
    assert catalogue.flag_departments(PERSON, ["customs_facilitation", "high_consumption"]) == (
        "court", "tax", "samr",
    )  # fmt: skip
    every = [m.id for m in catalogue.measures]
    assert catalogue.flag_departments(ENTERPRISE, every) == (
        "court", "tax", "hrss", "hpf", "samr", "eco", "safety", "customs",
    )  # fmt: skip
    assert catalogue.flag_departments(PERSON, []) == ()
    assert catalogue.flag_departments(PERSON, ["no_such_measure"]) == ()


def test_flags_of(catalogue: Catalogue) -> None:
    assert [f.id for f in catalogue.flags_of("court")] == ["judgement_defaulter"]
    assert [f.id for f in catalogue.flags_of("safety")] == ["work_safety_dishonest"]
    assert catalogue.flags_of("psb") == ()
    assert catalogue.flags_of("nowhere") == ()


def test_restricted_to_drops_the_flags_of_removed_departments(catalogue: Catalogue) -> None:
    small = catalogue.restricted_to(["tax", "court", "samr", "psb"])
    assert [d.id for d in small.departments] == ["psb", "court", "tax", "samr"]
    assert {f.id for f in small.flags} == {
        "judgement_defaulter", "major_tax_violation", "serious_dishonest",
    }  # fmt: skip
    assert small.measures == catalogue.measures
    assert small.models is catalogue.models
    assert small.flag_departments(PERSON, ["bank_loan"]) == ("court", "tax", "samr")
    assert small.flag_departments(ENTERPRISE, ["customs_facilitation"]) == ("tax", "samr")
    without_court = catalogue.restricted_to(["tax", "samr"])
    assert without_court.flag_departments(PERSON, ["high_consumption"]) == ()
    assert without_court.flags_of("court") == ()


def test_validate_measures(catalogue: Catalogue) -> None:
    assert validate_measures(catalogue, ["high_consumption", "bank_loan"]) == (
        "high_consumption", "bank_loan",
    )  # fmt: skip
    with pytest.raises(InvalidArgument, match="names the measures it asks about; known: bank_loan"):
        validate_measures(catalogue, [])
    with pytest.raises(InvalidArgument, match="'travel' is not a joint-punishment measure"):
        validate_measures(catalogue, ["bank_loan", "travel"])
    with pytest.raises(InvalidArgument, match="a measure is asked twice"):
        validate_measures(catalogue, ["bank_loan", "bank_loan"])


# --- which records set a flag ---------------------------------------------------------------


def rec(
    kind: str,
    start: date,
    end: date | None = None,
    *,
    status: str = "active",
    subject_kind: SubjectKind = PERSON,
    quantity: int = 1,
) -> Record:
    subject = "320508199001011234" if subject_kind is PERSON else "91320500MA1X0000X0"
    return Record(
        record_id=f"F{next(_record_numbers)}",
        subject_kind=subject_kind,
        subject_id=SubjectId(subject),
        kind=kind,
        quantity=quantity,
        event_start=start,
        event_end=end,
        status=status,
    )


def write_rules(tmp_path: Path, department: str, old: str, new: str) -> Path:
    """A copy of the department's default rule file with one edit, named as the loader wants."""
    text = (default_rules_dir() / f"{department}.toml").read_text(encoding="utf-8")
    path = tmp_path / f"{department}.toml"
    path.write_text(edited(text, old, new), encoding="utf-8")
    return path


TAX_ARREARS_RULE = 'kind = "tax_arrears"\nsubject_kind = "person"\n'


def test_flags_set_while_listed(catalogue: Catalogue) -> None:
    court = load_default_rules("court", catalogue=catalogue)

    def flags(*records: Record, kind: SubjectKind = PERSON) -> frozenset[str]:
        return court.flags_set(kind, records, as_of=AS_OF)

    listed = {"judgement_defaulter"}
    assert flags() == frozenset()
    assert flags(rec("judgement_defaulter", date(2025, 1, 1))) == listed
    # a planned delisting still ahead: listed until that day, not on it
    assert flags(rec("judgement_defaulter", date(2025, 1, 1), date(2026, 6, 2))) == listed
    assert flags(rec("judgement_defaulter", date(2025, 1, 1), AS_OF)) == frozenset()
    assert flags(rec("judgement_defaulter", date(2020, 1, 1), date(2024, 1, 1))) == frozenset()
    assert flags(rec("judgement_defaulter", date(2026, 6, 2))) == frozenset()  # not yet
    # a disputed listing sets no flag until the dispute is resolved
    assert flags(rec("judgement_defaulter", date(2025, 1, 1), status="disputed")) == frozenset()
    assert (
        flags(
            rec("judgement_defaulter", date(2025, 1, 1), status="disputed"),
            rec("judgement_defaulter", date(2025, 3, 1)),
        )
        == listed
    )
    enterprise = rec("judgement_defaulter", date(2025, 1, 1), subject_kind=ENTERPRISE)
    assert flags(enterprise, kind=ENTERPRISE) == listed


def test_flags_set_validity_in_years(catalogue: Catalogue) -> None:
    tax = load_default_rules("tax", catalogue=catalogue)

    def flags(*records: Record) -> frozenset[str]:
        return tax.flags_set(PERSON, records, as_of=AS_OF)

    violation = {"major_tax_violation"}
    # major_tax_violation counts for 5 years after the event ends (the deduction default)
    assert flags(rec("major_tax_violation", date(2020, 1, 1), date(2021, 6, 2))) == violation
    assert flags(rec("major_tax_violation", date(2020, 1, 1), date(2021, 6, 1))) == frozenset()
    assert flags(rec("major_tax_violation", date(2021, 6, 1))) == frozenset()
    # a counting record whose rule names no flag lowers the score but sets nothing
    assert flags(rec("tax_arrears", date(2025, 1, 1), quantity=3)) == frozenset()
    arrears = tax.contribution(
        PERSON, [rec("tax_arrears", date(2025, 1, 1), quantity=3)], as_of=AS_OF
    )
    assert arrears.deductions == 30
    # several counting records of the flag's kind set it once
    assert (
        flags(
            rec("major_tax_violation", date(2024, 1, 1)),
            rec("major_tax_violation", date(2025, 1, 1), quantity=2),
            rec("tax_arrears", date(2025, 1, 1)),
        )
        == violation
    )


def test_a_flag_set_by_two_kinds_and_a_department_with_two_flags(
    tmp_path: Path, catalogue: Catalogue
) -> None:
    safety = load_default_rules("safety", catalogue=catalogue)
    # one flag, set by a different record kind for each subject kind
    violation = rec("work_safety_violation", date(2025, 1, 1))
    accident = rec("work_safety_accident", date(2025, 1, 1), subject_kind=ENTERPRISE)
    assert safety.flags_set(PERSON, [violation], as_of=AS_OF) == {"work_safety_dishonest"}
    assert safety.flags_set(ENTERPRISE, [accident], as_of=AS_OF) == {"work_safety_dishonest"}
    # a rule file may give a department a second flag: each counting record sets its own
    tax = load_rules(
        write_rules(tmp_path, "tax", TAX_ARREARS_RULE, TAX_ARREARS_RULE + 'flag = "tax_arrears"\n'),
        catalogue=catalogue,
    )
    assert tax.flag_ids() == {"major_tax_violation", "tax_arrears"}

    def flags(*records: Record) -> frozenset[str]:
        return tax.flags_set(PERSON, records, as_of=AS_OF)

    arrears = rec("tax_arrears", date(2025, 1, 1))
    violation_2024 = rec("major_tax_violation", date(2024, 1, 1))
    assert flags(arrears) == {"tax_arrears"}
    assert flags(arrears, violation_2024) == {"tax_arrears", "major_tax_violation"}
    assert flags(rec("tax_arrears", date(2025, 1, 1), status="disputed"), violation_2024) == {
        "major_tax_violation"
    }


def test_flags_set_refuses_records_the_rules_do_not_know(catalogue: Catalogue) -> None:
    tax = load_default_rules("tax", catalogue=catalogue)
    with pytest.raises(ConfigError, match="no person rule for record kind 'drunk_driving'"):
        tax.flags_set(PERSON, [rec("drunk_driving", date(2025, 1, 1))], as_of=AS_OF)
    wrong_kind = rec("major_tax_violation", date(2025, 1, 1), subject_kind=ENTERPRISE)
    with pytest.raises(InvalidArgument, match="this contribution is for subject kind 'person'"):
        tax.flags_set(PERSON, [wrong_kind], as_of=AS_OF)


# --- the node's start-up check --------------------------------------------------------------


@dataclass(frozen=True)
class NodeParts:
    store: RecordStore
    policy: ReloadablePolicy
    verifier: TokenVerifier
    audit: AuditLog
    encryptors: EncryptorCache


@pytest.fixture
def node_parts(tmp_path: Path) -> Iterator[NodeParts]:
    """Everything a NodeService takes besides catalogue, department and rules, real and closed
    afterwards (a service that refuses to start never owns them)."""
    store = RecordStore(tmp_path / "eco.duckdb", department=DepartmentId("eco"))
    audit = AuditLog(path=tmp_path / "audit.jsonl", salt=os.urandom(32))
    encryptors = EncryptorCache()
    try:
        yield NodeParts(
            store=store,
            policy=ReloadablePolicy.from_file(REPO / "policies" / "node.cedar"),
            verifier=TokenVerifier(
                public_key=Ed25519PrivateKey.generate().public_key(), replay_cache=ReplayCache()
            ),
            audit=audit,
            encryptors=encryptors,
        )
    finally:
        encryptors.close()
        audit.close()
        store.close()


def start_eco_node(
    catalogue: Catalogue, parts: NodeParts, rules: RuleSet | None = None
) -> NodeService:
    return NodeService(
        department=catalogue.department("eco"),
        catalogue=catalogue,
        store=parts.store,
        rules=rules if rules is not None else load_default_rules("eco", catalogue=catalogue),
        policy=parts.policy,
        verifier=parts.verifier,
        audit=parts.audit,
        encryptors=parts.encryptors,
    )


# a second eco flag, and the eco rule that would set it
RIVER_DUMPING_FLAG = """
[[flag]]
id = "river_dumping"
department = "eco"
name = "Illegal discharge into rivers"
name_zh = "非法排污"
measures = ["land_approval"]
"""
ECO_PENALTY_RULE = 'kind_cap = 30\ndescription = "Environmental administrative penalty"\n'
ECO_PENALTY_FLAGGED = (
    'kind_cap = 30\nflag = "river_dumping"\ndescription = "Environmental administrative penalty"\n'
)


def river_dumping_catalogue(tmp_path: Path) -> Catalogue:
    text = default_catalogue_path().read_text(encoding="utf-8") + RIVER_DUMPING_FLAG
    return load_catalogue(write_catalogue(tmp_path, text))


def test_a_node_starts_when_its_rules_set_exactly_its_flags(node_parts: NodeParts) -> None:
    service = start_eco_node(load_catalogue(), node_parts)
    assert service.describe(caller=COORDINATOR).department.id == "eco"


def test_a_node_starts_with_a_second_flag_its_rules_set(
    tmp_path: Path, node_parts: NodeParts
) -> None:
    catalogue = river_dumping_catalogue(tmp_path)
    rules = load_rules(
        write_rules(tmp_path, "eco", ECO_PENALTY_RULE, ECO_PENALTY_FLAGGED), catalogue=catalogue
    )
    service = start_eco_node(catalogue, node_parts, rules)
    assert service.describe(caller=COORDINATOR).department.id == "eco"


def test_a_node_refuses_a_flag_of_its_catalogue_no_rule_sets(
    tmp_path: Path, node_parts: NodeParts
) -> None:
    catalogue = river_dumping_catalogue(tmp_path)
    version = load_default_rules("eco", catalogue=catalogue).version
    with pytest.raises(ConfigError) as caught:
        start_eco_node(catalogue, node_parts)
    assert caught.value.field == "catalogue"
    assert caught.value.message == (
        f"department eco: the catalogue's flags and the flags its rules {version} set differ; "
        "no rule sets river_dumping"
    )
    assert str(caught.value) in DOC.read_text(encoding="utf-8"), "the page quotes this error"


def test_a_node_refuses_a_flag_its_rules_set_that_the_catalogue_lacks(
    tmp_path: Path, node_parts: NodeParts
) -> None:
    catalogue = load_catalogue()
    rules = load_rules(
        write_rules(tmp_path, "eco", ECO_PENALTY_RULE, ECO_PENALTY_FLAGGED), catalogue=catalogue
    )
    with pytest.raises(ConfigError) as caught:
        start_eco_node(catalogue, node_parts, rules)
    assert caught.value.field == "catalogue"
    assert caught.value.message == (
        f"department eco: the catalogue's flags and the flags its rules {rules.version} set "
        "differ; the catalogue does not define river_dumping"
    )


def test_a_node_names_both_sides_when_a_flag_is_renamed_in_its_rules_only(
    tmp_path: Path, node_parts: NodeParts
) -> None:
    catalogue = load_catalogue()
    rules = load_rules(
        write_rules(
            tmp_path, "eco", 'flag = "environmental_dishonest"', 'flag = "environment_dishonest"'
        ),
        catalogue=catalogue,
    )
    with pytest.raises(ConfigError) as caught:
        start_eco_node(catalogue, node_parts, rules)
    assert caught.value.message == (
        f"department eco: the catalogue's flags and the flags its rules {rules.version} set "
        "differ; no rule sets environmental_dishonest; the catalogue does not define "
        "environment_dishonest"
    )


# --- docs/joint-punishment.md ---------------------------------------------------------------


def _validity(rule_validity: str) -> str:
    found = re.fullmatch(r"(\d+)y", rule_validity)
    if found:
        return f"{found.group(1)} years after the event ends"
    return rule_validity.replace("_", " ")


def render_flags_table(catalogue: Catalogue, rules: Mapping[str, RuleSet]) -> str:
    """The page's flag table: who sets each flag, from which records (the rules naming it), and
    what it triggers."""
    lines = [
        "| flag | department | name | 名称 | set by a counting record of (subject kind: validity) "
        "| triggers |",
        "|---|---|---|---|---|---|",
    ]
    for flag in catalogue.flags:
        setting = [r for r in rules[flag.department].rules if r.flag == flag.id]
        kinds = []
        for kind in sorted({r.kind for r in setting}):
            rows = [r for r in setting if r.kind == kind]
            kinds.append(
                f"`{kind}` ("
                + "; ".join(f"{r.subject_kind.value}: {_validity(str(r.validity))}" for r in rows)
                + ")"
            )
        measures = ", ".join(f"`{m.id}`" for m in catalogue.measures if m.id in flag.measures)
        lines.append(
            f"| `{flag.id}` | `{flag.department}` | {flag.name} | {flag.name_zh} "
            f"| {'<br>'.join(kinds)} | {measures} |"
        )
    return "\n".join(lines) + "\n"


def render_measures_table(catalogue: Catalogue) -> str:
    """The page's measure table: what triggers each measure and which departments are asked."""
    lines = [
        "| measure | name | 名称 | triggered by | departments asked (persons) "
        "| departments asked (enterprises) |",
        "|---|---|---|---|---|---|",
    ]
    for m in catalogue.measures:
        flags = ", ".join(f"`{f.id}`" for f in catalogue.flags if m.id in f.measures)
        asked = [
            ", ".join(f"`{d}`" for d in catalogue.flag_departments(kind, [m.id])) or "(none)"
            for kind in (PERSON, ENTERPRISE)
        ]
        lines.append(f"| `{m.id}` | {m.name} | {m.name_zh} | {flags} | {asked[0]} | {asked[1]} |")
    return "\n".join(lines) + "\n"


_LITERAL = re.compile(r'"([a-z][a-z0-9_]*)"')
#: a fixed time: a rule that looks at the hour must not make the page's table change with it
_NOON = datetime(2026, 6, 1, 4, 0, tzinfo=UTC)


def _purposes(*sources: str) -> list[str]:
    """Every lower-case literal the policies use (the purposes among them), and one they do not."""
    code = ["\n".join(line.split("//")[0] for line in s.splitlines()) for s in sources]
    return sorted({p for text in code for p in _LITERAL.findall(text)} | {"marketing"})


def _ask(
    engine: PolicyEngine,
    *,
    role: Role,
    action: str,
    resource: tuple[str, str],
    context: Mapping[str, object],
) -> Decision:
    return engine.decide(
        PolicyRequest(
            principal_type="Requester",
            principal_id="requester-1",
            principal_attrs={"role": role.value},
            action=action,
            resource_type=resource[0],
            resource_id=resource[1],
            context={**context, **time_facts(_NOON)},
        )
    )


def render_who_may_ask_table(central: PolicyEngine, node: PolicyEngine) -> str:
    """Every (subject kind, role, purpose) whose FLAGS query the shipped policies let through,
    with the measures it may ask: the central policy at the coordinator, then a department's
    node policy."""
    lines = [
        "| subject | requester role | purpose | measures | consent | central rule | node rule |",
        "|---|---|---|---|---|---|---|",
    ]
    purposes = _purposes(central.source, node.source)
    measures = [m.id for m in load_catalogue().measures]
    for kind, role, purpose in itertools.product(SubjectKind, Role, purposes):
        action = "PersonQuery" if kind is PERSON else "EnterpriseQuery"
        dataset = ("Dataset", kind.value)
        consent_state = "valid" if kind is PERSON else "not_applicable"
        allowed = []
        granted = contributed = None
        for measure in measures:
            asked = {"purpose": purpose, "shape": "flags", "measures": (measure,)}
            central_decision = _ask(
                central,
                role=role,
                action=action,
                resource=dataset,
                context={**asked, "consent": consent_state},
            )
            node_decision = _ask(
                node,
                role=role,
                action="Contribute",
                resource=("Department", "court"),
                context={**asked, "subject_kind": kind.value},
            )
            if central_decision.allowed and node_decision.allowed:
                allowed.append(measure)
                granted, contributed = central_decision, node_decision
        if not allowed or granted is None or contributed is None:
            continue
        if kind is ENTERPRISE:
            consent = "not applicable"
        elif _ask(
            central,
            role=role,
            action=action,
            resource=dataset,
            context={
                "purpose": purpose,
                "shape": "flags",
                "measures": (allowed[0],),
                "consent": "missing",
            },
        ).allowed:
            consent = "not needed (statutory purpose)"
        else:
            consent = "the person's, valid"
        shown = "every measure" if allowed == measures else ", ".join(f"`{m}`" for m in allowed)
        lines.append(
            f"| {kind.value} | `{role.value}` | `{purpose}` | {shown} | {consent} "
            f"| `{', '.join(granted.policy_ids)}` | `{', '.join(contributed.policy_ids)}` |"
        )
    return "\n".join(lines) + "\n"


def _assert_in_doc(table: str, what: str) -> None:
    doc = DOC.read_text(encoding="utf-8")
    assert table in doc, (
        f"docs/joint-punishment.md: the {what} table no longer matches the files it describes; "
        f"replace it with:\n\n{table}"
    )


def test_doc_flags_table_is_current(catalogue: Catalogue, rules: Mapping[str, RuleSet]) -> None:
    _assert_in_doc(render_flags_table(catalogue, rules), "flags")


def test_doc_measures_table_is_current(catalogue: Catalogue) -> None:
    _assert_in_doc(render_measures_table(catalogue), "measures")


def test_doc_who_may_ask_table_is_current() -> None:
    central = PolicyEngine.from_file(REPO / "policies" / "central.cedar")
    node = PolicyEngine.from_file(REPO / "policies" / "node.cedar")
    table = render_who_may_ask_table(central, node)
    assert table.count("\n") > 3, "the shipped policies grant FLAGS to someone"
    _assert_in_doc(table, "who may ask")


def test_doc_node_policy_example_withholds_flags_for_one_purpose() -> None:
    """The page's example rule loads with the default node policy and does what it says."""
    doc = DOC.read_text(encoding="utf-8")
    found = re.search(
        r"```cedar\n((?://[^\n]*\n)*@id\(\"node-no-flags-for-credit-reports\"\).*?)```", doc, re.S
    )
    assert found, "the example rule is on the page"
    source = (REPO / "policies" / "node.cedar").read_text(encoding="utf-8") + "\n" + found[1]
    engine = PolicyEngine(source=source, origin="joint-punishment.md example")

    def allowed(purpose: str, shape: str) -> bool:
        return engine.decide(
            PolicyRequest(
                principal_type="Requester",
                principal_id="bank-1",
                principal_attrs={"role": "bank"},
                action="Contribute",
                resource_type="Department",
                resource_id="tax",
                context={"purpose": purpose, "shape": shape, "subject_kind": "enterprise"},
            )
        ).allowed

    assert not allowed("credit_report", "flags")
    assert allowed("credit_report", "total")
    assert allowed("loan_underwriting", "flags")


def test_doc_new_flag_example_is_one_flag_in_both_files(
    tmp_path: Path, catalogue: Catalogue
) -> None:
    """The page's "add a flag" example: its [[flag]] table loads with the default catalogue, its
    [[rule]] is the shipped transport rule plus a `flag` key, and together they pass the node's
    start-up check and set the flag."""
    doc = DOC.read_text(encoding="utf-8")
    flag_block = re.search(r"```toml\n(\[\[flag\]\]\n.*?)```", doc, re.S)
    rule_block = re.search(r"```toml\n(\[\[rule\]\]\n.*?)```", doc, re.S)
    assert flag_block and rule_block, "both examples are on the page"
    flag_line = re.search(r'^flag = "[a-z_]+"\n', rule_block[1], re.M)
    assert flag_line, "the rule example names its flag"
    shipped_rule = rule_block[1].replace(flag_line[0], "")
    catalogue_text = default_catalogue_path().read_text(encoding="utf-8") + flag_block[1]
    with_flag = load_catalogue(write_catalogue(tmp_path, catalogue_text))
    rules = load_rules(
        write_rules(tmp_path, "transport", shipped_rule, rule_block[1]), catalogue=with_flag
    )
    (flag,) = with_flag.flags_of("transport")
    assert rules.flag_ids() == {flag.id}
    fare_evasion = rec("fare_evasion", date(2026, 5, 1))
    assert rules.flags_set(PERSON, [fare_evasion], as_of=AS_OF) == {flag.id}
    assert "transport" in with_flag.flag_departments(PERSON, flag.measures)
    assert catalogue.flags_of("transport") == ()

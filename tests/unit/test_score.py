"""The score after decryption: clamping the total, missing owners, grade boundaries."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from osmanthus.core.catalogue import Catalogue, SubjectModel, load_catalogue
from osmanthus.core.errors import InvalidArgument
from osmanthus.core.ids import make_uscc, organisation_code_check_char
from osmanthus.core.rules import Record, load_default_rules
from osmanthus.core.score import Breakdown, clamp_total, grade, score
from osmanthus.core.types import SubjectKind

CATALOGUE: Catalogue = load_catalogue()
PERSON: SubjectModel = CATALOGUE.model(SubjectKind.PERSON)
ENTERPRISE: SubjectModel = CATALOGUE.model(SubjectKind.ENTERPRISE)


def person(
    d: int, q: int | None = 0, h: int | None = 0, b: int | None = 0, v: int | None = 0
) -> Breakdown:
    return Breakdown(
        deductions=d,
        bonuses={"qualifications": q, "honours": h, "blood_donation": b, "volunteer_service": v},
    )


def test_clean_subject_scores_the_base() -> None:
    assert score(PERSON, person(0)) == 100


def test_total_is_clamped_not_the_deductions() -> None:
    # a heavy defaulter with bonuses: 100 - 150 + 60 = 10, not max(0, 100 - 150) + 60 = 60
    assert score(PERSON, person(150, 25, 10, 25, 0)) == 10
    assert score(PERSON, person(400, 25, 25, 25, 25)) == 0
    assert score(PERSON, person(0, 25, 25, 25, 25)) == 200
    assert score(PERSON, person(30, 5, 0, 10, 3)) == 88


def test_missing_owner_contributes_nothing() -> None:
    assert score(PERSON, person(10, None, 25, None, 5)) == 120
    assert person(10, None, 25, None, 5).missing() == ("qualifications", "blood_donation")
    assert person(0).missing() == ()


@pytest.mark.parametrize(
    ("breakdown", "message"),
    [
        (person(-1), "deductions must be >= 0"),
        (person(0, 26), r"bonus category 'qualifications' is 26, outside 0\.\.25"),
        (person(0, -1), r"'qualifications' is -1, outside 0\.\.25"),
        (Breakdown(deductions=0, bonuses={"honours": 0}), "'qualifications' is missing"),
        (
            Breakdown(deductions=0, bonuses={**person(0).bonuses, "tax_credit": 5}),
            "'tax_credit' is not a person bonus category",
        ),
    ],
)
def test_inconsistent_breakdowns_are_refused(breakdown: Breakdown, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        score(PERSON, breakdown)


def test_clamp_total_for_the_total_disclosure() -> None:
    assert clamp_total(PERSON, -55) == 0
    assert clamp_total(PERSON, 143) == 143
    assert clamp_total(PERSON, 250) == 200


@pytest.mark.parametrize(
    ("value", "letter"),
    [(200, "A"), (110, "A"), (109, "B"), (90, "B"), (89, "C"), (70, "C"), (69, "D"), (0, "D")],
)
def test_enterprise_grade_boundaries(value: int, letter: str) -> None:
    assert grade(ENTERPRISE, value) == letter


def test_persons_are_not_graded_and_out_of_range_scores_refused() -> None:
    assert grade(PERSON, 150) is None
    with pytest.raises(InvalidArgument, match=r"score 201 is outside 0\.\.200"):
        grade(ENTERPRISE, 201)
    with pytest.raises(InvalidArgument, match="score -1 is outside"):
        grade(PERSON, -1)


def test_enterprise_score_from_department_contributions() -> None:
    as_of = date(2026, 6, 1)
    subject = make_uscc(
        authority="9",
        category="1",
        region="320505",
        organisation="00000001" + organisation_code_check_char("00000001"),
    )

    def r(kind: str, start: date, end: date | None = None) -> Record:
        return Record(
            record_id=f"{kind}-{start}",
            subject_kind=SubjectKind.ENTERPRISE,
            subject_id=subject,
            kind=kind,
            quantity=1,
            event_start=start,
            event_end=end,
            status="active",
        )

    held = {
        "tax": [r("a_level_taxpayer", date(2025, 1, 1), date(2025, 12, 31))],
        "customs": [r("general_certified_enterprise", date(2021, 5, 1))],
        "fire": [r("fire_safety_violation", date(2024, 2, 1), date(2024, 2, 20))],
        "samr": [r("abnormal_operation_list", date(2026, 1, 10))],
        "eco": [],
    }
    deductions = 0
    bonuses: dict[str, int | None] = {c.name: None for c in ENTERPRISE.categories}
    for dept, records in held.items():
        rules = load_default_rules(dept, catalogue=CATALOGUE)
        c = rules.contribution(SubjectKind.ENTERPRISE, records, as_of=as_of)
        deductions += c.deductions
        bonuses.update(c.bonuses)
    breakdown = Breakdown(deductions=deductions, bonuses=bonuses)
    assert breakdown.bonuses == {
        "tax_credit": 30,
        "customs_certification": 15,
        "environmental_credit": 0,
        "honours_awards": 0,
    }
    assert deductions == 20
    assert score(ENTERPRISE, breakdown) == 125
    assert grade(ENTERPRISE, 125) == "A"


@given(
    d=st.integers(min_value=0, max_value=10_000),
    bonuses=st.tuples(*(st.integers(min_value=0, max_value=25) for _ in range(4))),
)
def test_score_is_in_range_and_never_rises_with_deductions(
    d: int, bonuses: tuple[int, int, int, int]
) -> None:
    s = score(PERSON, person(d, *bonuses))
    assert 0 <= s <= 200
    assert score(PERSON, person(d + 1, *bonuses)) <= s
    assert s == max(0, min(200, 100 - d + sum(bonuses)))

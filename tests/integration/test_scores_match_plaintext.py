"""Scores through the encrypted federation equal a plaintext reference written here from scratch.

The reference reads each department's DuckDB file with plain SQL and the rule and catalogue TOML
files with tomllib, and applies the score model of ARCHITECTURE.md and docs/catalogue.md itself:
validity windows (5 years after the event for deductions, 3 for bonuses unless the rule says
otherwise; `while_listed`; `permanent`), disputed records count for nothing, quantities summed per
kind then divided by `per_quantity`, kind caps, category caps, each department's deductions
saturated at base - floor + the caps, clamp to [floor, ceiling], grades.
It deliberately does not import osmanthus.core.rules or osmanthus.core.score: it is a second,
independent implementation, so a shared mistake would have to be made twice.
"""

from __future__ import annotations

import csv
import functools
import random
import tomllib
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from osmanthus.core.types import DepartmentId, Shape
from sdk import Client
from sdk.results import EnterpriseScore, PersonScore
from tests.integration.conftest import Federation, consent_for

DEFAULTS = Path(__file__).resolve().parents[2] / "osmanthus" / "core" / "defaults"
SAMPLE_SEED = 20260214
PERSON_SAMPLE = 200
ENTERPRISE_SAMPLE = 40
#: parts of the model few subjects exercise: every such subject joins the random sample
RARE_FEATURES = ("disputed", "deductions", "category_cap", "kind_cap", "clamped")
#: the documented default windows (docs/catalogue.md): negative records 5 years, bonuses 3
DEFAULT_DEDUCTION_YEARS = 5
DEFAULT_BONUS_YEARS = 3


# --- the reference implementation ------------------------------------------------------------


@dataclass(frozen=True)
class RefRule:
    category: str  # "deduction" or a bonus category
    points: int
    per_quantity: int
    kind_cap: int  # 0: no cap
    validity: str  # "Ny", "while_listed" or "permanent"


@dataclass(frozen=True)
class RefModel:
    base: int
    floor: int
    ceiling: int
    caps: dict[str, int]
    grades: list[tuple[str, int]]


@dataclass
class RefResult:
    deductions: int
    bonuses: dict[str, int]
    score: int
    grade: str | None
    #: what the data exercised, so the test can prove it covered each part of the model
    features: set[str] = field(default_factory=set)


def anniversary(d: date, years: int) -> date:
    try:
        return d.replace(year=d.year + years)
    except ValueError:  # 29 February in a non-leap target year
        return d.replace(year=d.year + years, day=28)


def counts(rule: RefRule, start: date, end: date | None, as_of: date) -> bool:
    if start > as_of:
        return False
    if rule.validity == "permanent":
        return True
    if rule.validity == "while_listed":
        return end is None or end > as_of
    years = int(rule.validity.removesuffix("y"))
    return as_of < anniversary(end if end is not None else start, years)


class Reference:
    """Plaintext scores straight from the department files and the TOML defaults."""

    def __init__(self, databases: dict[str, Path], departments: dict[str, set[str]]) -> None:
        catalogue = tomllib.loads((DEFAULTS / "catalogue.toml").read_text(encoding="utf-8"))
        self.models = {
            kind: RefModel(
                base=m["base"],
                floor=m["floor"],
                ceiling=m["ceiling"],
                caps={c["name"]: c["cap"] for c in m["category"]},
                grades=[(g[0], g[1]) for g in m["grades"]],
            )
            for kind, m in catalogue["model"].items()
        }
        #: department → subject kinds it serves in the test federation
        self.departments = departments
        self.rules: dict[tuple[str, str, str], RefRule] = {}
        for dept in departments:
            raw = tomllib.loads((DEFAULTS / "rules" / f"{dept}.toml").read_text(encoding="utf-8"))
            for r in raw.get("rule", []):
                deduction = r["category"] == "deduction"
                default = DEFAULT_DEDUCTION_YEARS if deduction else DEFAULT_BONUS_YEARS
                self.rules[(dept, r["subject_kind"], r["kind"])] = RefRule(
                    category=r["category"],
                    points=r["points"],
                    per_quantity=r.get("per_quantity", 1),
                    kind_cap=r.get("kind_cap", 0),
                    validity=r.get("validity", f"{default}y"),
                )
        # (kind, subject) → [(department, record kind, quantity, start, end, status)]
        self.records: dict[tuple[str, str], list[tuple[Any, ...]]] = defaultdict(list)
        for dept, kinds in departments.items():
            with duckdb.connect(str(databases[dept])) as conn:
                rows = conn.execute(
                    "SELECT subject_kind, subject_id, kind, quantity, event_start, event_end, "
                    "status FROM records"
                ).fetchall()
            for subject_kind, subject, kind, quantity, start, end, status in rows:
                if subject_kind in kinds:
                    self.records[(subject_kind, subject)].append(
                        (dept, kind, quantity, start, end, status)
                    )

    def subjects_with(self, subject_kind: str, feature: str, as_of: date) -> list[str]:
        return sorted(
            subject
            for (kind, subject) in self.records
            if kind == subject_kind and feature in self.result(kind, subject, as_of).features
        )

    def features(self, subject_kind: str, as_of: date) -> set[str]:
        """Every part of the model that some subject of this kind exercises in the data."""
        found: set[str] = set()
        for kind, subject in self.records:
            if kind == subject_kind:
                found |= self.result(kind, subject, as_of).features
        return found

    def result(self, subject_kind: str, subject: str, as_of: date) -> RefResult:
        model = self.models[subject_kind]
        features: set[str] = set()
        quantities: dict[tuple[str, str], int] = defaultdict(int)
        for dept, kind, quantity, start, end, status in self.records[(subject_kind, subject)]:
            rule = self.rules[(dept, subject_kind, kind)]  # a record without a rule is a bug
            if status == "disputed":
                features.add("disputed")
                continue
            assert status == "active", status
            if not counts(rule, start, end, as_of):
                features.add("expired")
                continue
            quantities[(dept, kind)] += quantity
        by_department: dict[str, int] = defaultdict(int)
        raw_bonus: dict[str, int] = {name: 0 for name in model.caps}
        for (dept, kind), quantity in quantities.items():
            rule = self.rules[(dept, subject_kind, kind)]
            if quantity % rule.per_quantity:
                features.add("per_quantity_remainder")
            value = rule.points * (quantity // rule.per_quantity)
            if rule.kind_cap and value > rule.kind_cap:
                features.add("kind_cap")
                value = rule.kind_cap
            if rule.category == "deduction":
                by_department[dept] += value
            else:
                raw_bonus[rule.category] += value
        # each department reports at most base - floor + every cap: past that the score is the
        # floor whatever the others say (docs/departments.md)
        saturation = model.base - model.floor + sum(model.caps.values())
        if any(v > saturation for v in by_department.values()):
            features.add("saturated")
        deductions = sum(min(v, saturation) for v in by_department.values())
        bonuses = {}
        for name, value in raw_bonus.items():
            if value > model.caps[name]:
                features.add("category_cap")
            bonuses[name] = min(value, model.caps[name])
        if deductions:
            features.add("deductions")
        if any(bonuses.values()):
            features.add("bonus")
        unclamped = model.base - deductions + sum(bonuses.values())
        if not model.floor <= unclamped <= model.ceiling:
            features.add("clamped")
        score = max(model.floor, min(model.ceiling, unclamped))
        grade = next((letter for letter, minimum in model.grades if score >= minimum), None)
        return RefResult(deductions, bonuses, score, grade, features)


# --- the test --------------------------------------------------------------------------------


def subjects(federation: Federation, kind: str) -> list[str]:
    with federation.data.subjects_file.open(encoding="utf-8") as f:
        return [r["subject_id"] for r in csv.DictReader(f) if r["subject_kind"] == kind]


def utc_today() -> date:
    # the nodes judge validity windows by this date (node.service.NodeService's default clock)
    return datetime.now(UTC).date()


@pytest.fixture(scope="module")
def reference(federation: Federation) -> Reference:
    served: dict[str, set[str]] = {
        d.id: {k.value for k in d.subject_kinds} for d in federation.catalogue.departments
    }
    return Reference({d: federation.data.databases[DepartmentId(d)] for d in served}, served)


def sample(federation: Federation, reference: Reference, kind: str, size: int) -> list[str]:
    """`size` random subjects (seeded) plus every subject exercising a rarer part of the model."""
    chosen = random.Random(SAMPLE_SEED).sample(subjects(federation, kind), size)
    today = utc_today()
    for feature in RARE_FEATURES:
        for subject in reference.subjects_with(kind, feature, today):
            if subject not in chosen:
                chosen.append(subject)
    return chosen


def matches(card: PersonScore, expected: Iterable[RefResult], shape: Shape) -> RefResult | None:
    for ref in expected:
        if card.score != ref.score:
            continue
        if shape is Shape.TOTAL:
            if card.deductions is None and card.bonuses == {}:
                return ref
            continue
        if card.deductions == ref.deductions and dict(card.bonuses) == ref.bonuses:
            return ref
    return None


def check(
    reference: Reference, kind: str, subject: str, shape: Shape, run: Callable[[], PersonScore]
) -> RefResult:
    """Run one query and compare it with the reference for the date(s) the nodes may have used."""
    before = utc_today()
    card = run()
    # a query that straddles midnight UTC may have been judged on either day
    days = sorted({before, utc_today()})
    assert not card.partial, f"{subject}: missing {card.missing}"
    expected_departments = {d for d, kinds in reference.departments.items() if kind in kinds}
    assert {s.department for s in card.answered} == expected_departments
    assert card.base == reference.models[kind].base
    assert card.shape is shape
    candidates = [reference.result(kind, subject, d) for d in days]
    ref = matches(card, candidates, shape)
    assert ref is not None, (
        f"{kind} {subject} {shape.value}: federation says score={card.score} "
        f"deductions={card.deductions} bonuses={dict(card.bonuses)}; plaintext reference "
        + "; ".join(
            f"score={c.score} deductions={c.deductions} bonuses={c.bonuses}" for c in candidates
        )
    )
    if isinstance(card, EnterpriseScore):
        assert card.grade == ref.grade
    return ref


@pytest.mark.slow
def test_person_scores_match_plaintext(
    federation: Federation, agency: Client, registrar: Client, reference: Reference
) -> None:
    persons = sample(federation, reference, "person", PERSON_SAMPLE)
    consents = {p: consent_for(registrar, p) for p in persons}
    seen: set[str] = set()
    for person in persons:
        for shape in (Shape.BREAKDOWN, Shape.TOTAL):
            run = functools.partial(
                agency.person_score,
                person,
                purpose="loan_underwriting",
                consent_id=consents[person],
                shape=shape,
            )
            ref = check(reference, "person", person, shape, run)
            seen |= ref.features
    # the sample must have exercised every part of the model the data offers, or agreement
    # would prove little
    # the seed's edge personas guarantee caps and both clamps are among them
    required = {"deductions", "bonus", "expired", "disputed", "per_quantity_remainder"}
    assert required | {"kind_cap", "category_cap", "clamped"} <= seen, seen
    assert reference.features("person", utc_today()) <= seen


def test_enterprise_scores_and_grades_match_plaintext(
    federation: Federation, agency: Client, reference: Reference
) -> None:
    firms = sample(federation, reference, "enterprise", ENTERPRISE_SAMPLE)
    seen: set[str] = set()
    grades: set[str | None] = set()
    for firm in firms:
        for shape in (Shape.BREAKDOWN, Shape.TOTAL):
            run = functools.partial(
                agency.enterprise_score, firm, purpose="credit_report", shape=shape
            )
            ref = check(reference, "enterprise", firm, shape, run)
            seen |= ref.features
            grades.add(ref.grade)
    assert {"deductions", "bonus", "expired", "disputed", "category_cap", "clamped"} <= seen, seen
    assert reference.features("enterprise", utc_today()) <= seen
    assert len(grades) >= 2, grades

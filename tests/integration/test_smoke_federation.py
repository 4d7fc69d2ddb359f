"""Smoke test: the in-process federation answers a person and an enterprise query end to end."""

from __future__ import annotations

import csv

from osmanthus.core.types import SubjectKind
from sdk import Client
from tests.integration.conftest import Federation, consent_for


def _subjects(federation: Federation, kind: str) -> list[str]:
    with federation.data.subjects_file.open() as f:
        return [r["subject_id"] for r in csv.DictReader(f) if r["subject_kind"] == kind]


def test_person_and_enterprise_queries_answer_with_full_coverage(
    federation: Federation, agency: Client, registrar: Client
) -> None:
    person = _subjects(federation, "person")[0]
    consent = consent_for(registrar, person)
    card = agency.person_score(person, purpose="loan_underwriting", consent_id=consent)
    assert not card.partial
    persons_depts = federation.catalogue.departments_for(SubjectKind.PERSON)
    assert {s.department for s in card.answered} == {d.id for d in persons_depts}
    assert 0 <= card.score <= 200
    firm = _subjects(federation, "enterprise")[0]
    report = agency.enterprise_score(firm, purpose="credit_report")
    firm_depts = federation.catalogue.departments_for(SubjectKind.ENTERPRISE)
    assert {s.department for s in report.answered} == {d.id for d in firm_depts}
    assert report.grade in {"A", "B", "C", "D"}

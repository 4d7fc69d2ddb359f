"""The disclosure ledger: answers that differ by too few departments are refused, durably."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from coordinator.disclosure import DisclosureLedger
from osmanthus.errors import FailedPrecondition
from osmanthus.types import RequesterId, SubjectKind

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
ALL = ("court", "psb", "tax", "blood", "volunteer")
AGENCY = RequesterId("agency-1")


def admit(ledger: DisclosureLedger, departments: tuple[str, ...], **kw: object) -> None:
    args: dict[str, object] = {
        "requester": AGENCY,
        "subject_kind": SubjectKind.PERSON,
        "subject_hash": "a" * 64,
        "departments": departments,
        "minimum": 3,
        "now": NOW,
    }
    args.update(kw)
    ledger.admit(**args)  # type: ignore[arg-type]


def test_the_same_department_set_is_admitted_again(tmp_path: Path) -> None:
    with DisclosureLedger(tmp_path / "d.duckdb") as ledger:
        admit(ledger, ALL)
        admit(ledger, tuple(reversed(ALL)))


@pytest.mark.parametrize("later", [ALL[:-1], ALL[:-2], (*ALL, "edu")], ids=["-1", "-2", "+1"])
def test_a_set_differing_by_fewer_than_the_minimum_is_refused(
    tmp_path: Path, later: tuple[str, ...]
) -> None:
    with DisclosureLedger(tmp_path / "d.duckdb") as ledger:
        admit(ledger, ALL)
        with pytest.raises(FailedPrecondition, match="disclose that part by subtraction"):
            admit(ledger, later)


def test_partial_first_then_full_is_refused_too(tmp_path: Path) -> None:
    with DisclosureLedger(tmp_path / "d.duckdb") as ledger:
        admit(ledger, ALL[:-1])
        with pytest.raises(FailedPrecondition, match="differ only by volunteer"):
            admit(ledger, ALL)


def test_a_difference_of_at_least_the_minimum_is_a_sum_and_is_admitted(tmp_path: Path) -> None:
    with DisclosureLedger(tmp_path / "d.duckdb") as ledger:
        admit(ledger, ALL)
        admit(ledger, ALL[:2])  # differs by tax, blood, volunteer: a sum of three


def test_other_requesters_subjects_and_kinds_are_independent(tmp_path: Path) -> None:
    with DisclosureLedger(tmp_path / "d.duckdb") as ledger:
        admit(ledger, ALL)
        admit(ledger, ALL[:-1], requester=RequesterId("bank-1"))
        admit(ledger, ALL[:-1], subject_hash="b" * 64)
        admit(ledger, ALL[:-1], subject_kind=SubjectKind.ENTERPRISE)


def test_a_refused_set_is_not_remembered_and_the_ledger_survives_restart(tmp_path: Path) -> None:
    path = tmp_path / "d.duckdb"
    with DisclosureLedger(path) as ledger:
        admit(ledger, ALL)
        with pytest.raises(FailedPrecondition):
            admit(ledger, ALL[:-1])
    with DisclosureLedger(path) as ledger:
        with pytest.raises(FailedPrecondition):
            admit(ledger, ALL[:-1])
        admit(ledger, ALL)

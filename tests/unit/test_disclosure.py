"""The disclosure ledger: the first released department set per requester and subject is pinned."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from coordinator.disclosure import DisclosureLedger
from osmanthus.core.errors import FailedPrecondition, Unavailable
from osmanthus.core.types import RequesterId, SubjectKind

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
ALL = frozenset({"court", "psb", "tax", "blood", "volunteer"})
AGENCY = RequesterId("agency-1")


class Releases:
    """Records what the ledger asked to release; refuses sets in `refuse`."""

    def __init__(self, *refuse: frozenset[str]) -> None:
        self.asked: list[frozenset[str]] = []
        self.refuse = refuse

    def __call__(self, departments: frozenset[str]) -> None:
        self.asked.append(departments)
        if departments in self.refuse:
            raise Unavailable("refused by the policy under test")


def settle(
    ledger: DisclosureLedger,
    answered: frozenset[str],
    release: Releases | None = None,
    **kw: object,
) -> frozenset[str]:
    args: dict[str, object] = {
        "requester": AGENCY,
        "subject_kind": SubjectKind.PERSON,
        "subject_hash": "a" * 64,
        "answered": answered,
        "release": release or Releases(),
        "now": NOW,
    }
    args.update(kw)
    return ledger.settle(**args)  # type: ignore[arg-type]


def test_the_first_released_set_is_pinned_and_summed_again(tmp_path: Path) -> None:
    with DisclosureLedger(tmp_path / "d.sqlite") as ledger:
        assert settle(ledger, ALL) == ALL
        assert settle(ledger, ALL) == ALL


def test_a_department_outside_the_pinned_set_is_left_out(tmp_path: Path) -> None:
    # a partial first answer: every later answer sums the same departments, or subtraction
    # of the two would isolate volunteer
    with DisclosureLedger(tmp_path / "d.sqlite") as ledger:
        settle(ledger, ALL - {"volunteer"})
        assert settle(ledger, ALL) == ALL - {"volunteer"}


@pytest.mark.parametrize("lacking", [{"volunteer"}, {"psb", "tax", "blood"}], ids=["one", "three"])
def test_a_pinned_department_that_does_not_answer_makes_the_answer_refused(
    tmp_path: Path, lacking: set[str]
) -> None:
    # however many are missing: combinations of several answers would isolate one department
    with DisclosureLedger(tmp_path / "d.sqlite") as ledger:
        settle(ledger, ALL)
        with pytest.raises(FailedPrecondition, match="did not answer, but earlier answers") as e:
            settle(ledger, ALL - lacking)
        assert all(d in e.value.message for d in lacking)


def test_the_attack_combinations_of_the_review_all_sum_one_set(tmp_path: Path) -> None:
    # four answers whose sets pairwise differ by >= 3 departments solved for court's part under
    # the old pairwise rule; now only the first set is ever summed
    everyone = ALL | {"hpf", "land", "edu"}
    sets = [
        everyone,
        everyone - {"court", "tax", "psb"},
        everyone - {"court", "hpf", "land"},
        everyone - {"hpf", "land", "psb", "tax"},
    ]
    with DisclosureLedger(tmp_path / "d.sqlite") as ledger:
        settle(ledger, sets[0])
        for later in sets[1:]:
            with pytest.raises(FailedPrecondition):
                settle(ledger, later)


def test_a_refused_first_set_is_not_pinned(tmp_path: Path) -> None:
    with DisclosureLedger(tmp_path / "d.sqlite") as ledger:
        partial = ALL - {"volunteer"}
        with pytest.raises(Unavailable):
            settle(ledger, partial, Releases(partial))
        assert settle(ledger, ALL) == ALL


def test_the_pinned_set_is_checked_by_release_each_time(tmp_path: Path) -> None:
    # the policy may have changed since the set was pinned
    with DisclosureLedger(tmp_path / "d.sqlite") as ledger:
        settle(ledger, ALL)
        releases = Releases(ALL)
        with pytest.raises(Unavailable):
            settle(ledger, ALL, releases)
        assert releases.asked == [ALL]


def test_requesters_subjects_and_kinds_are_independent(tmp_path: Path) -> None:
    with DisclosureLedger(tmp_path / "d.sqlite") as ledger:
        settle(ledger, ALL)
        smaller = ALL - {"volunteer"}
        assert settle(ledger, smaller, requester=RequesterId("bank-1")) == smaller
        assert settle(ledger, smaller, subject_hash="b" * 64) == smaller
        assert settle(ledger, smaller, subject_kind=SubjectKind.ENTERPRISE) == smaller


def test_the_pinned_sets_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "d.sqlite"
    with DisclosureLedger(path) as ledger:
        settle(ledger, ALL - {"volunteer"})
    with DisclosureLedger(path) as ledger:
        assert settle(ledger, ALL) == ALL - {"volunteer"}


def _batch(ledger: DisclosureLedger, hashes: list[str], departments: frozenset[str]) -> list[bool]:
    return ledger.settle_batch(
        requester=AGENCY,
        subject_kind=SubjectKind.PERSON,
        subject_hashes=hashes,
        departments=departments,
        now=NOW,
    )


def test_a_batch_pins_every_new_subject_to_its_full_set(tmp_path: Path) -> None:
    with DisclosureLedger(tmp_path / "d.sqlite") as ledger:
        hashes = ["a" * 64, "b" * 64, "a" * 64]  # a duplicate is answered like its twin
        assert _batch(ledger, hashes, ALL) == [True, True, True]
        # the batch disclosed the full sum: a partial answer now would disclose the difference
        with pytest.raises(FailedPrecondition, match="volunteer did not answer"):
            settle(ledger, ALL - {"volunteer"}, subject_hash="b" * 64)
        assert settle(ledger, ALL, subject_hash="b" * 64) == ALL
        # and a second batch over the same subjects sums the same set again
        assert _batch(ledger, hashes, ALL) == [True, True, True]


def test_a_batch_refuses_subjects_pinned_to_another_set(tmp_path: Path) -> None:
    with DisclosureLedger(tmp_path / "d.sqlite") as ledger:
        settle(ledger, ALL - {"volunteer"}, subject_hash="c" * 64)
        assert _batch(ledger, ["d" * 64, "c" * 64, "e" * 64], ALL) == [True, False, True]
        # the refusal changed nothing: the single answer still sums its pinned set
        assert settle(ledger, ALL, subject_hash="c" * 64) == ALL - {"volunteer"}


def test_batch_pins_are_per_requester_and_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "d.sqlite"
    with DisclosureLedger(path) as ledger:
        _batch(ledger, ["f" * 64], ALL)
    with DisclosureLedger(path) as ledger:
        with pytest.raises(FailedPrecondition):
            settle(ledger, ALL - {"tax"}, subject_hash="f" * 64)
        # another requester has heard nothing about the subject yet
        other = ALL - {"tax"}
        assert (
            settle(ledger, other, subject_hash="f" * 64, requester=RequesterId("bank-1")) == other
        )

"""The persistent ε ledger: reservations, rolling budgets, refusals, crashes and races."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from coordinator.epsilon import EpsilonLedger
from osmanthus.core.errors import BudgetExhausted, ConfigError, InvalidArgument
from osmanthus.core.policy import EpsilonBudget

REPO = Path(__file__).resolve().parents[2]
#: 2025-01-01T12:00:00Z, a round time so the dates in refusals are easy to read
T0 = datetime(2025, 1, 1, 12, tzinfo=UTC).timestamp()
HOUR = 3600.0
DAY = 86400.0


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def budget(epsilon: str, period: str = "day", rule: str = "central-statistics") -> EpsilonBudget:
    seconds = {"hour": HOUR, "day": DAY}[period]
    return EpsilonBudget(
        policy_id=rule, epsilon=Decimal(epsilon), period_s=seconds, text=f"{epsilon}/{period}"
    )


DAILY = [budget("1")]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ledger(tmp_path: Path, clock: Clock) -> Iterator[EpsilonLedger]:
    with EpsilonLedger(tmp_path / "epsilon.sqlite", clock=clock) as opened:
        yield opened


def spend(ledger: EpsilonLedger, query_id: str, epsilon: str, requester: str = "bank-1") -> None:
    reservation = ledger.reserve(
        query_id=query_id, requester=requester, epsilon=Decimal(epsilon), budgets=DAILY
    )
    ledger.commit(reservation)


def test_reserve_under_the_budget_then_commit(ledger: EpsilonLedger) -> None:
    reservation = ledger.reserve(
        query_id="q1", requester="bank-1", epsilon=Decimal("0.4"), budgets=DAILY
    )
    assert (reservation.query_id, reservation.requester) == ("q1", "bank-1")
    assert reservation.epsilon == Decimal("0.4")
    # a reservation counts before the answer is built: queries in flight share the budget
    assert ledger.spent("bank-1", period_s=DAY) == Decimal("0.4")
    ledger.commit(reservation)
    assert ledger.spent("bank-1", period_s=DAY) == Decimal("0.4")
    spend(ledger, "q2", "0.6")
    assert ledger.spent("bank-1", period_s=DAY) == 1


def test_sums_are_exact_where_floats_are_not(ledger: EpsilonLedger) -> None:
    # 0.1 + 0.2 > 0.3 in binary floating point; the ledger counts in 10⁻⁴ units
    budgets = [budget("0.3")]
    for query_id, epsilon in (("q1", "0.1"), ("q2", "0.2")):
        ledger.reserve(
            query_id=query_id, requester="bank-1", epsilon=Decimal(epsilon), budgets=budgets
        )
    assert ledger.spent("bank-1", period_s=DAY) == Decimal("0.3")
    with pytest.raises(BudgetExhausted):
        ledger.reserve(
            query_id="q3", requester="bank-1", epsilon=Decimal("0.0001"), budgets=budgets
        )


def test_release_gives_the_epsilon_back(ledger: EpsilonLedger) -> None:
    reservation = ledger.reserve(
        query_id="q1", requester="bank-1", epsilon=Decimal("0.8"), budgets=DAILY
    )
    with pytest.raises(BudgetExhausted):
        ledger.reserve(query_id="q2", requester="bank-1", epsilon=Decimal("0.5"), budgets=DAILY)
    ledger.release(reservation)
    assert ledger.spent("bank-1", period_s=DAY) == 0
    ledger.reserve(query_id="q2", requester="bank-1", epsilon=Decimal("0.5"), budgets=DAILY)
    assert ledger.spent("bank-1", period_s=DAY) == Decimal("0.5")


def test_release_after_commit_gives_nothing_back(ledger: EpsilonLedger) -> None:
    reservation = ledger.reserve(
        query_id="q1", requester="bank-1", epsilon=Decimal("0.7"), budgets=DAILY
    )
    ledger.commit(reservation)
    # the answer has left: spending it cannot be undone
    ledger.release(reservation)
    assert ledger.spent("bank-1", period_s=DAY) == Decimal("0.7")


def test_a_refused_reservation_charges_nothing(ledger: EpsilonLedger) -> None:
    spend(ledger, "q1", "0.9")
    with pytest.raises(BudgetExhausted):
        ledger.reserve(query_id="q2", requester="bank-1", epsilon=Decimal("0.2"), budgets=DAILY)
    assert ledger.spent("bank-1", period_s=DAY) == Decimal("0.9")
    # and the refused query id was not recorded: it may be used again
    ledger.reserve(query_id="q2", requester="bank-1", epsilon=Decimal("0.1"), budgets=DAILY)


def test_spending_persists_across_reopening(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "epsilon.sqlite"
    with EpsilonLedger(path, clock=clock) as ledger:
        spend(ledger, "q1", "0.75")
    with EpsilonLedger(path, clock=clock) as ledger:
        assert ledger.spent("bank-1", period_s=DAY) == Decimal("0.75")
        with pytest.raises(BudgetExhausted):
            ledger.reserve(query_id="q2", requester="bank-1", epsilon=Decimal("0.5"), budgets=DAILY)


_CRASH = """
import os, sys
from decimal import Decimal
from pathlib import Path
from coordinator.epsilon import EpsilonLedger
from osmanthus.core.policy import EpsilonBudget
ledger = EpsilonLedger(Path(sys.argv[1]), clock=lambda: float(sys.argv[2]))
ledger.reserve(query_id="q1", requester="bank-1", epsilon=Decimal("0.6"),
               budgets=[EpsilonBudget("central-statistics", Decimal(1), 86400.0, "1/day")])
os._exit(0)  # die mid-query: no commit, no release, no close
"""


def test_a_reservation_left_by_a_crash_stays_counted(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "epsilon.sqlite"
    subprocess.run(
        [sys.executable, "-c", _CRASH, str(path), repr(T0)], cwd=REPO, check=True, timeout=60
    )
    with EpsilonLedger(path, clock=clock) as ledger:
        # the answer may have left before the crash: over-counting is the side to err on
        assert ledger.spent("bank-1", period_s=DAY) == Decimal("0.6")
        with pytest.raises(BudgetExhausted):
            ledger.reserve(query_id="q2", requester="bank-1", epsilon=Decimal("0.5"), budgets=DAILY)
        ledger.reserve(query_id="q2", requester="bank-1", epsilon=Decimal("0.4"), budgets=DAILY)


def test_spending_older_than_the_period_no_longer_counts(
    ledger: EpsilonLedger, clock: Clock
) -> None:
    spend(ledger, "q1", "0.6")
    clock.now = T0 + 100
    spend(ledger, "q2", "0.3")
    clock.now = T0 + DAY - 1
    with pytest.raises(BudgetExhausted):
        ledger.reserve(query_id="q3", requester="bank-1", epsilon=Decimal("0.2"), budgets=DAILY)
    # exactly one period after the first charge it leaves the window
    clock.now = T0 + DAY
    assert ledger.spent("bank-1", period_s=DAY) == Decimal("0.3")
    spend(ledger, "q3", "0.7")
    assert ledger.spent("bank-1", period_s=DAY) == 1
    clock.now = T0 + 100 + DAY
    assert ledger.spent("bank-1", period_s=DAY) == Decimal("0.7")
    assert ledger.spent("bank-1", period_s=2 * DAY) == Decimal("1.6")


def test_refusal_names_requester_rule_spent_asked_left_and_when_room_comes_back(
    ledger: EpsilonLedger, clock: Clock
) -> None:
    spend(ledger, "q1", "0.4")
    clock.now = T0 + HOUR
    spend(ledger, "q2", "0.5")
    clock.now = T0 + 2 * HOUR
    with pytest.raises(BudgetExhausted) as caught:
        ledger.reserve(query_id="q3", requester="bank-1", epsilon=Decimal("0.3"), budgets=DAILY)
    message = str(caught.value)
    for part in (
        "bank-1",
        "ε 1/day",
        "rule 'central-statistics'",
        "has spent 0.9",
        "asks 0.3",
        "0.1 left",
    ):
        assert part in message, part
    # 0.3 fits once the 0.4 spent at 12:00 leaves the 24-hour window
    assert message.endswith("room for it comes back at 2025-01-02T12:00:00Z")

    with pytest.raises(BudgetExhausted) as caught:
        ledger.reserve(query_id="q3", requester="bank-1", epsilon=Decimal("0.6"), budgets=DAILY)
    # 0.6 needs the 0.5 spent at 13:00 to leave as well
    assert str(caught.value).endswith("room for it comes back at 2025-01-02T13:00:00Z")
    assert not caught.value.retryable


def test_room_comes_back_no_earlier_than_the_time_named(
    ledger: EpsilonLedger, clock: Clock
) -> None:
    clock.now = T0 + 0.25
    spend(ledger, "q1", "1")
    with pytest.raises(BudgetExhausted) as caught:
        ledger.reserve(query_id="q2", requester="bank-1", epsilon=Decimal("0.5"), budgets=DAILY)
    # the charge leaves at 12:00:00.25 the next day: the whole second after it is the answer
    assert str(caught.value).endswith("room for it comes back at 2025-01-02T12:00:01Z")
    clock.now = datetime(2025, 1, 2, 12, 0, 1, tzinfo=UTC).timestamp()
    ledger.reserve(query_id="q2", requester="bank-1", epsilon=Decimal("0.5"), budgets=DAILY)


def test_one_query_larger_than_the_whole_budget_has_its_own_message(
    ledger: EpsilonLedger,
) -> None:
    with pytest.raises(BudgetExhausted) as caught:
        ledger.reserve(query_id="q1", requester="bank-1", epsilon=Decimal("1.5"), budgets=DAILY)
    message = str(caught.value)
    assert "asks 1.5" in message and "(1 left)" in message
    assert "one query may never spend more than the budget" in message
    assert "comes back" not in message
    assert ledger.spent("bank-1", period_s=DAY) == 0


def test_every_budget_is_enforced(ledger: EpsilonLedger, clock: Clock) -> None:
    budgets = [budget("1", "hour", rule="hourly"), budget("2", "day", rule="daily")]

    def reserve(query_id: str, epsilon: str) -> None:
        ledger.reserve(
            query_id=query_id, requester="bank-1", epsilon=Decimal(epsilon), budgets=budgets
        )

    reserve("q1", "0.9")
    clock.now = T0 + 10
    with pytest.raises(BudgetExhausted) as caught:
        reserve("q2", "0.2")
    assert "rule 'hourly'" in str(caught.value)
    assert str(caught.value).endswith("comes back at 2025-01-01T13:00:00Z")
    clock.now = T0 + HOUR
    reserve("q2", "0.9")
    clock.now = T0 + 2 * HOUR
    # the hour is empty again, but the day holds 1.8 of 2
    with pytest.raises(BudgetExhausted) as caught:
        reserve("q3", "0.3")
    assert "rule 'daily'" in str(caught.value)
    assert "has spent 1.8" in str(caught.value)
    reserve("q3", "0.2")
    assert ledger.spent("bank-1", period_s=DAY) == 2


def test_no_budget_means_nothing_may_be_spent(ledger: EpsilonLedger) -> None:
    with pytest.raises(BudgetExhausted) as caught:
        ledger.reserve(query_id="q1", requester="bank-1", epsilon=Decimal("0.1"), budgets=[])
    assert "bank-1" in str(caught.value)
    assert ledger.spent("bank-1", period_s=DAY) == 0


def test_requesters_have_separate_accounts(ledger: EpsilonLedger) -> None:
    spend(ledger, "q1", "0.9", requester="bank-1")
    spend(ledger, "q2", "0.9", requester="agency-1")
    with pytest.raises(BudgetExhausted) as caught:
        spend(ledger, "q3", "0.2", requester="bank-1")
    assert "bank-1" in str(caught.value) and "agency-1" not in str(caught.value)
    assert ledger.spent("agency-1", period_s=DAY) == Decimal("0.9")
    assert ledger.spent("nobody", period_s=DAY) == 0


@pytest.mark.parametrize("epsilon", ["0", "-0.5", "0.00001"])
def test_non_positive_epsilon_is_refused(ledger: EpsilonLedger, epsilon: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        ledger.reserve(query_id="q1", requester="bank-1", epsilon=Decimal(epsilon), budgets=DAILY)
    assert caught.value.field == "epsilon"
    assert ledger.spent("bank-1", period_s=DAY) == 0


def test_epsilon_finer_than_the_ledger_counts_is_refused_not_truncated(
    ledger: EpsilonLedger,
) -> None:
    with pytest.raises(InvalidArgument):
        ledger.reserve(query_id="q1", requester="bank-1", epsilon=Decimal("0.00015"), budgets=DAILY)
    assert ledger.spent("bank-1", period_s=DAY) == 0


def race(ledgers: list[EpsilonLedger], threads: int) -> tuple[int, int]:
    """`threads` threads each reserve 0.3 at once against 1/day; (granted, refused)."""
    start = threading.Barrier(threads)
    outcomes: list[str] = []
    lock = threading.Lock()

    def one(index: int) -> None:
        start.wait()
        try:
            ledgers[index % len(ledgers)].reserve(
                query_id=f"q{index}", requester="bank-1", epsilon=Decimal("0.3"), budgets=DAILY
            )
            outcome = "granted"
        except BudgetExhausted:
            outcome = "refused"
        with lock:
            outcomes.append(outcome)

    workers = [threading.Thread(target=one, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    return outcomes.count("granted"), outcomes.count("refused")


def test_racing_reservations_never_overshoot_the_budget(ledger: EpsilonLedger) -> None:
    assert race([ledger], 8) == (3, 5)
    assert ledger.spent("bank-1", period_s=DAY) == Decimal("0.9")


def test_two_ledgers_on_one_file_never_overshoot_the_budget(tmp_path: Path, clock: Clock) -> None:
    # as two coordinator processes sharing a state directory would: SQLite's lock decides
    path = tmp_path / "epsilon.sqlite"
    with EpsilonLedger(path, clock=clock) as first, EpsilonLedger(path, clock=clock) as second:
        assert race([first, second], 8) == (3, 5)
        assert first.spent("bank-1", period_s=DAY) == Decimal("0.9")


def test_an_unopenable_ledger_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        EpsilonLedger(tmp_path)
    assert str(tmp_path) in str(caught.value)

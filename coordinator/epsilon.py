"""The persistent per-requester privacy ledger: ε reserved before a STATS query, committed after.

Privacy loss composes over everything a requester learns about the same people, whatever the
purpose it names, so the ledger keeps one account per requester and every budget a rule sets
(@epsilon_budget) caps that requester's whole spending in its rolling period.

A query reserves its ε before any node is asked, atomically against concurrent queries, so
queries in flight can never overshoot a budget together. It commits once the answer is built,
and releases the reservation only when it fails before anything was released. A reservation
left behind by a crash stays counted: the answer may have left, and over-counting is the side
to err on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from coordinator.database import LedgerDatabase
from osmanthus.core.dp import epsilon_units, from_units
from osmanthus.core.errors import BudgetExhausted, InvalidArgument
from osmanthus.core.policy import EpsilonBudget
from osmanthus.core.storefile import sqlite_transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS charges (
    query_id TEXT PRIMARY KEY,
    requester TEXT NOT NULL,
    units INTEGER NOT NULL CHECK (units > 0),   -- ε × 10^4, exact
    charged_at REAL NOT NULL,                   -- Unix time of the reservation
    state TEXT NOT NULL CHECK (state IN ('reserved', 'committed'))
);
CREATE INDEX IF NOT EXISTS charges_by_requester ON charges (requester, charged_at);
"""


@dataclass(frozen=True)
class Reservation:
    query_id: str
    requester: str
    epsilon: Decimal


class EpsilonLedger(LedgerDatabase):
    """ε charges per requester in a SQLite file, durable before any answer leaves."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(path, schema=_SCHEMA, what="privacy (ε) ledger")
        self._clock = clock

    def reserve(
        self,
        *,
        query_id: str,
        requester: str,
        epsilon: Decimal,
        budgets: Sequence[EpsilonBudget],
    ) -> Reservation:
        """Reserve `epsilon` under every budget, or raise BudgetExhausted and reserve nothing."""
        units = epsilon_units(epsilon)
        if units <= 0:
            raise InvalidArgument(f"ε {epsilon} must be positive", field="epsilon")
        if not budgets:
            # deny by default: spending without a budget would be spending without a limit
            raise BudgetExhausted(f"no privacy budget applies to {requester}; nothing may be spent")
        now = self._clock()
        with self._lock, sqlite_transaction(self._db):
            for budget in budgets:
                self._check_room(requester, units, budget, now)
            self._db.execute(
                "INSERT INTO charges (query_id, requester, units, charged_at, state) "
                "VALUES (?, ?, ?, ?, 'reserved')",
                (query_id, requester, units, now),
            )
        return Reservation(query_id=query_id, requester=requester, epsilon=epsilon)

    def commit(self, reservation: Reservation) -> None:
        """The answer is built: the reservation is spent for good."""
        with self._lock:
            self._db.execute(
                "UPDATE charges SET state = 'committed' WHERE query_id = ?",
                (reservation.query_id,),
            )

    def release(self, reservation: Reservation) -> None:
        """The query failed before anything was released: give its ε back."""
        with self._lock:
            self._db.execute(
                "DELETE FROM charges WHERE query_id = ? AND state = 'reserved'",
                (reservation.query_id,),
            )

    def spent(self, requester: str, *, period_s: float) -> Decimal:
        """What `requester` spent (reserved or committed) in the last `period_s` seconds."""
        with self._lock:
            return from_units(self._spent_units(requester, self._clock() - period_s))

    def _spent_units(self, requester: str, since: float) -> int:
        row = self._db.execute(
            "SELECT COALESCE(SUM(units), 0) FROM charges WHERE requester = ? AND charged_at > ?",
            (requester, since),
        ).fetchone()
        return int(row[0])

    def _check_room(self, requester: str, units: int, budget: EpsilonBudget, now: float) -> None:
        since = now - budget.period_s
        check_room(
            requester=requester,
            units=units,
            budget=budget,
            spent=self._spent_units(requester, since),
            charges=lambda: self._db.execute(
                "SELECT units, charged_at FROM charges WHERE requester = ? AND charged_at > ? "
                "ORDER BY charged_at",
                (requester, since),
            ).fetchall(),
        )


def check_room(
    *,
    requester: str,
    units: int,
    budget: EpsilonBudget,
    spent: int,
    charges: Callable[[], Sequence[tuple[int, float]]],
) -> None:
    """Raise BudgetExhausted unless `units` more fit under `budget` beside the `spent` units
    charged in its period; `charges` lists those charges (units, Unix time), oldest first,
    to say when room comes back. Both ledger backends decide with this."""
    limit = epsilon_units(budget.epsilon)
    if spent + units <= limit:
        return
    left = max(limit - spent, 0)
    prefix = (
        f"privacy budget exhausted: {requester} may spend ε {budget.text} under rule "
        f"'{budget.policy_id}', has spent {from_units(spent)} in that period, and this "
        f"query asks {from_units(units)} ({from_units(left)} left)"
    )
    if units > limit:
        raise BudgetExhausted(f"{prefix}; one query may never spend more than the budget")
    # room comes back as the oldest charges leave the window
    remaining = spent
    for charge_units, charged_at in charges():
        remaining -= int(charge_units)
        if remaining + units <= limit:
            # rounded up: at the second named the room is there, not a moment later
            back = datetime.fromtimestamp(math.ceil(charged_at + budget.period_s), UTC)
            raise BudgetExhausted(
                f"{prefix}; room for it comes back at "
                f"{back.isoformat(timespec='seconds').replace('+00:00', 'Z')}"
            )
    raise BudgetExhausted(prefix)  # pragma: no cover - the last charge always frees room

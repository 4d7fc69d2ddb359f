"""The disclosure ledger, the ε ledger and the rate limits in PostgreSQL, shared by every
coordinator replica.

Each check and the write it allows run in one transaction that first takes an advisory lock
on what they concern (a requester, or a requester's subject): replicas racing on the same
requester queue at the lock (a replica's own requests queue in the replica first, so that
the lock timeout meets only a stalled holder: PgState.run_locked), and each sees what the one
before it committed (READ COMMITTED takes a new snapshot per statement; PostgreSQL docs
13.2.1 and 13.3.5). So no budget and no rate limit can be overshot by racing replicas, and
two first answers about one subject cannot pin two department sets. Times are the replicas'
wall clocks (time.time): keep them in step (NTP), as a window or a period measured on two
clocks is only as exact as their agreement.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Final

from coordinator.disclosure import DisclosureLedger
from coordinator.epsilon import EpsilonLedger, Reservation, check_room
from coordinator.pgstate import Cursor, PgState, advisory_key
from coordinator.ratelimit import RateLimiter
from osmanthus.core.dp import epsilon_units, from_units
from osmanthus.core.errors import BudgetExhausted, FailedPrecondition, InvalidArgument, RateLimited
from osmanthus.core.policy import EpsilonBudget, RateLimit
from osmanthus.core.types import RequesterId, SubjectKind

#: pin locks per requester and subject kind (see _pin_lock)
PIN_LOCK_STRIPES: Final = 64


class PgDisclosureLedger(DisclosureLedger):
    """Pinned department sets in the shared database (see coordinator/disclosure.py)."""

    def __init__(self, state: PgState) -> None:
        # the file ledger's __init__ opens a file; this one shares the database instead
        self._state = state
        # a set's id never changes once committed: remembered after each commit
        self._set_ids: dict[str, int] = {}
        self._sets: dict[int, frozenset[str]] = {}
        self._lock = threading.Lock()

    def _pg_set(self, cur: Cursor, set_id: int) -> frozenset[str]:
        found = self._sets.get(set_id)
        if found is None:
            cur.execute("SELECT departments FROM osm_department_sets WHERE id = %s", [set_id])
            row = cur.fetchone()
            found = frozenset(row[0].split(",")) if row and row[0] else frozenset()
        return found

    def _pg_set_id(self, cur: Cursor, departments: frozenset[str]) -> tuple[str, int]:
        text = ",".join(sorted(departments))
        found = self._set_ids.get(text)
        if found is None:
            cur.execute(
                "INSERT INTO osm_department_sets (departments) VALUES (%s) "
                "ON CONFLICT (departments) DO NOTHING",
                [text],
            )
            cur.execute("SELECT id FROM osm_department_sets WHERE departments = %s", [text])
            row = cur.fetchone()
            assert row is not None  # inserted or there already, in this transaction
            found = int(row[0])
        return text, found

    def _remember(self, text: str, set_id: int) -> None:
        with self._lock:
            self._set_ids[text] = set_id
            self._sets[set_id] = frozenset(text.split(",")) if text else frozenset()

    def settle(
        self,
        *,
        requester: RequesterId,
        subject_kind: SubjectKind,
        subject_hash: str,
        answered: frozenset[str],
        release: Callable[[frozenset[str]], None],
        now: datetime,
    ) -> frozenset[str]:
        key = bytes.fromhex(subject_hash)
        where = [requester, subject_kind.value, key]

        def pinned_rule(cur: Cursor, set_id: int) -> frozenset[str]:
            pinned = self._pg_set(cur, set_id)
            lacking = pinned - answered
            if lacking:
                raise FailedPrecondition(
                    f"{', '.join(sorted(lacking))} did not answer, but earlier answers to "
                    f"{requester} about this subject included them; an answer without them "
                    "would disclose their contribution by subtraction. Ask again when they "
                    "answer"
                )
            release(pinned)
            return pinned

        def body(cur: Cursor) -> tuple[frozenset[str], tuple[str, int] | None]:
            row = _pinned(cur, where)
            if row is not None:
                return pinned_rule(cur, row), None
            release(answered)
            text, set_id = self._pg_set_id(cur, answered)
            # a pin that got in first all the same (a writer without the lock) is not an
            # error: the pinned-set rule applies to it
            cur.execute(
                "INSERT INTO osm_pinned_sets VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (requester, subject_kind, subject_hash) DO NOTHING RETURNING set_id",
                [*where, set_id, now],
            )
            if cur.fetchone() is None:
                row = _pinned(cur, where)
                assert row is not None  # the conflicting pin, committed before this statement
                return pinned_rule(cur, row), None
            return answered, (text, set_id)

        # the subject's lock, which settle_batch takes too: check and pin are one step
        chosen, made = self._state.run_locked(_pin_lock(requester, subject_kind, subject_hash),
                                              body)  # fmt: skip
        if made is not None:
            self._remember(*made)
        return chosen

    def settle_batch(
        self,
        *,
        requester: RequesterId,
        subject_kind: SubjectKind,
        subject_hashes: Sequence[str],
        departments: frozenset[str],
        now: datetime,
    ) -> list[bool]:
        keys = [bytes.fromhex(h) for h in subject_hashes]
        unique = sorted(set(keys))
        # each subject's lock, as settle takes it, in one order for every caller: two batches
        # over the same subjects queue rather than deadlock (settle takes only one)
        locks = sorted({_pin_lock(requester, subject_kind, h.hex()) for h in unique})

        def body(cur: Cursor) -> tuple[str, int, dict[bytes, int]]:
            cur.execute(
                "SELECT count(pg_advisory_xact_lock(k)) FROM unnest(%s::bigint[]) AS k", [locks]
            )
            text, wanted = self._pg_set_id(cur, departments)
            # a subject pinned by a racing replica keeps its set: ON CONFLICT leaves it
            cur.execute(
                "INSERT INTO osm_pinned_sets "
                "SELECT %s, %s, h, %s, %s FROM unnest(%s::bytea[]) AS h "
                "ON CONFLICT (requester, subject_kind, subject_hash) DO NOTHING",
                [requester, subject_kind.value, wanted, now, unique],
            )
            cur.execute(
                "SELECT subject_hash, set_id FROM osm_pinned_sets WHERE requester = %s "
                "AND subject_kind = %s AND subject_hash = ANY(%s::bytea[])",
                [requester, subject_kind.value, unique],
            )
            return text, wanted, {bytes(h): int(s) for h, s in cur.fetchall()}

        text, wanted, pinned = self._state.run(body)
        self._remember(text, wanted)
        return [pinned.get(k, wanted) == wanted for k in keys]

    def close(self) -> None:
        self._state.close()


def _pin_lock(requester: RequesterId, subject_kind: SubjectKind, subject_hash: str) -> int:
    """The advisory lock over a subject's pin: one of PIN_LOCK_STRIPES per requester and kind,
    chosen by the (already salted, uniform) subject hash, so a batch chunk of 10,000 subjects
    takes at most PIN_LOCK_STRIPES locks, not one each (PostgreSQL's lock table is shared and
    holds max_locks_per_transaction × max_connections entries in all)."""
    stripe = int(subject_hash[:8], 16) % PIN_LOCK_STRIPES
    return advisory_key("pin", requester, subject_kind.value, str(stripe))


def _pinned(cur: Cursor, where: Sequence[object]) -> int | None:
    """The id of the set pinned for (requester, subject kind, subject hash), if any."""
    cur.execute(
        "SELECT set_id FROM osm_pinned_sets "
        "WHERE requester = %s AND subject_kind = %s AND subject_hash = %s",
        where,
    )
    row = cur.fetchone()
    return int(row[0]) if row is not None else None


class PgEpsilonLedger(EpsilonLedger):
    """ε charges in the shared database (see coordinator/epsilon.py)."""

    def __init__(self, state: PgState, *, clock: Callable[[], float] = time.time) -> None:
        # the file ledger's __init__ opens a file; this one shares the database instead
        self._state = state
        self._clock = clock

    def reserve(
        self,
        *,
        query_id: str,
        requester: str,
        epsilon: Decimal,
        budgets: Sequence[EpsilonBudget],
    ) -> Reservation:
        units = epsilon_units(epsilon)
        if units <= 0:
            raise InvalidArgument(f"ε {epsilon} must be positive", field="epsilon")
        if not budgets:
            # deny by default: spending without a budget would be spending without a limit
            raise BudgetExhausted(f"no privacy budget applies to {requester}; nothing may be spent")

        def body(cur: Cursor) -> None:
            # the clock read under the lock: charges of one requester are stamped in order
            now = self._clock()
            for budget in budgets:
                since = now - budget.period_s
                check_room(
                    requester=requester,
                    units=units,
                    budget=budget,
                    spent=_spent(cur, requester, since),
                    charges=lambda since=since: _charges(cur, requester, since),  # type: ignore[misc]
                )
            cur.execute(
                "INSERT INTO osm_epsilon_charges (query_id, requester, units, charged_at, state) "
                "VALUES (%s, %s, %s, %s, 'reserved')",
                [query_id, requester, units, now],
            )

        # every replica's reservations for this requester queue at its lock
        self._state.run_locked(advisory_key("epsilon", requester), body)
        return Reservation(query_id=query_id, requester=requester, epsilon=epsilon)

    def commit(self, reservation: Reservation) -> None:
        with self._state.transaction() as cur:
            cur.execute(
                "UPDATE osm_epsilon_charges SET state = 'committed' WHERE query_id = %s",
                [reservation.query_id],
            )

    def release(self, reservation: Reservation) -> None:
        with self._state.transaction() as cur:
            cur.execute(
                "DELETE FROM osm_epsilon_charges WHERE query_id = %s AND state = 'reserved'",
                [reservation.query_id],
            )

    def spent(self, requester: str, *, period_s: float) -> Decimal:
        with self._state.transaction() as cur:
            return from_units(_spent(cur, requester, self._clock() - period_s))

    def close(self) -> None:
        self._state.close()


def _spent(cur: Cursor, requester: str, since: float) -> int:
    cur.execute(
        "SELECT COALESCE(SUM(units), 0) FROM osm_epsilon_charges "
        "WHERE requester = %s AND charged_at > %s",
        [requester, since],
    )
    row = cur.fetchone()
    return int(row[0]) if row else 0


def _charges(cur: Cursor, requester: str, since: float) -> list[tuple[int, float]]:
    cur.execute(
        "SELECT units, charged_at FROM osm_epsilon_charges "
        "WHERE requester = %s AND charged_at > %s ORDER BY charged_at",
        [requester, since],
    )
    return [(int(u), float(t)) for u, t in cur.fetchall()]


class PgRateLimiter(RateLimiter):
    """Sliding windows of grant times in the shared database (see coordinator/ratelimit.py):
    a request granted through any replica counts at every replica."""

    def __init__(self, state: PgState, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock=clock)
        self._state = state

    def charge(self, requester: str, limits: Sequence[RateLimit]) -> float | None:
        if not limits:
            return None

        def body(cur: Cursor) -> float:
            now = self._clock()
            for limit in limits:
                since = now - limit.period_s
                # the window's older grants count nowhere any more
                cur.execute(
                    "DELETE FROM osm_rate_grants WHERE requester = %s AND policy_id = %s "
                    "AND granted_at <= %s",
                    [requester, limit.policy_id, since],
                )
                cur.execute(
                    "SELECT count(*), min(granted_at) FROM osm_rate_grants "
                    "WHERE requester = %s AND policy_id = %s AND granted_at > %s",
                    [requester, limit.policy_id, since],
                )
                row = cur.fetchone()
                count, oldest = (int(row[0]), row[1]) if row else (0, None)
                if count >= limit.count:
                    first = float(oldest) if oldest is not None else now
                    wait = max(math.ceil(first + limit.period_s - now), 1)
                    raise RateLimited(
                        f"{requester} may be granted {limit.text} under rule "
                        f"'{limit.policy_id}' and has reached it; retry in {wait} s",
                        retry_after_s=wait,
                    )
            for limit in limits:
                cur.execute(
                    "INSERT INTO osm_rate_grants VALUES (%s, %s, %s)",
                    [requester, limit.policy_id, now],
                )
            return now

        return self._state.run_locked(advisory_key("rate", requester), body)

    def refund(self, requester: str, limits: Sequence[RateLimit], stamp: float | None) -> None:
        if stamp is None:
            return
        with self._state.transaction() as cur:
            for limit in limits:
                cur.execute(
                    "DELETE FROM osm_rate_grants WHERE ctid IN (SELECT ctid FROM osm_rate_grants "
                    "WHERE requester = %s AND policy_id = %s AND granted_at = %s LIMIT 1)",
                    [requester, limit.policy_id, stamp],
                )

"""A burst of one requester's requests at one replica queues in the replica, not at PostgreSQL.

Real PostgreSQL (tests/postgres.py), two replicas' connection sets. The lock timeout is for a
stalled holder: holders that each keep a requester's ε lock for half of LOCK_TIMEOUT_S (slow,
not stalled) must not get the requests queued behind them refused, however many there are. Had
every request of replica A waited at PostgreSQL (as before PgState.run_locked), the third of
them would have waited past the timeout and been refused UNAVAILABLE, naming a replica that
"held" the lock which none did; and a spend at replica B would wait behind all of A's.
"""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from typing import Final

from coordinator.pgledgers import PgEpsilonLedger
from coordinator.pgstate import LOCK_TIMEOUT_S, PgState, advisory_key
from osmanthus.core.policy import EpsilonBudget
from tests.postgres import Postgres, postgres  # noqa: F401 - the session fixture
from tests.waiting import wait_until

#: A's requests in the burst: their holds add up to twice and a half the lock timeout
BURST: Final = 5
#: how long each of A's holders keeps the lock: slow, within the lock timeout
HOLD_S: Final = LOCK_TIMEOUT_S / 2


def test_a_burst_at_one_replica_waits_in_the_replica_and_the_other_replica_is_not_held_up(
    postgres: Postgres,  # noqa: F811
) -> None:
    url = postgres.new_database()
    a, b = PgState(url), PgState(url)
    key = advisory_key("epsilon", "sync-1")
    holding = threading.Event()
    held: list[float] = []
    refused: list[Exception] = []

    def slow(cur: object) -> None:
        holding.set()
        # the fault: a holder slowed down (a busy replica), not stalled
        time.sleep(HOLD_S)
        held.append(time.monotonic())

    def one() -> None:
        try:
            a.run_locked(key, slow)
        except Exception as exc:  # counted: none may be refused
            refused.append(exc)

    burst = [threading.Thread(target=one) for _ in range(BURST)]
    started = time.monotonic()
    for thread in burst:
        thread.start()
    wait_until(holding.is_set, what="replica A to take the lock")
    # B spends while A's burst holds the lock: it waits for one holder of A's, not five
    ledger = PgEpsilonLedger(b)
    budget = EpsilonBudget(policy_id="stats", epsilon=Decimal("5"), period_s=86400, text="5/day")
    ledger.reserve(query_id="q-b", requester="sync-1", epsilon=Decimal("0.5"), budgets=[budget])
    for thread in burst:
        thread.join()
    assert refused == []
    assert len(held) == BURST
    # the burst took longer than the lock timeout in all, and nothing was refused for it
    assert time.monotonic() - started > BURST * HOLD_S > LOCK_TIMEOUT_S
    assert ledger.spent("sync-1", period_s=86400) == Decimal("0.5")
    a.close()
    b.close()

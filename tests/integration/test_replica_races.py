"""Requests racing through two coordinator replicas on one real PostgreSQL, with real nodes and
real SDK clients: ε spends, rate-limit charges and a consent revocation.

Two coordinator servers (each its own gRPC server, state directory and connection pool) share
one fresh database of a PostgreSQL server the session starts (tests/postgres.py), and serve
the session's federation of department nodes over mTLS. Every client is pinned to one replica
and the clients of one test are split between both, so that each race is between the replicas'
own transactions, not between threads of one replica. What each test shows:

* ε: many STATS queries of one requester at once, half through each replica. The total spent
  never exceeds the budget, every refusal is BudgetExhausted (RESOURCE_EXHAUSTED), and the
  requester's committed charges in PostgreSQL are exactly the answered spends, none left
  reserved.
* rate limits: the same with a permit's @rate_limit as what runs out: never more answers than
  the limit, every refusal RateLimited, and the grants in PostgreSQL are the answers.
* revocation: person queries with a consent run in a loop at both replicas while the consent
  is revoked through one of them. What the code guarantees, and the test checks: every query
  sent after `revoke_consent` returned is refused, at either replica, naming the revocation
  (the coordinator reads the consent row at each check, and the revocation was committed
  before it returned). A query sent before the revocation returned may be answered or refused:
  its check may have read the row before the revocation's commit, and such an answer may
  arrive after the revocation returned; each node checks the revocation feed stapled to its
  own request, so a query in flight may also be refused because some nodes saw the
  revocation and others did not (docs/caveats.md).
"""

from __future__ import annotations

import csv
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Final

import psycopg
import pytest

from coordinator.server import DEFAULT_CENTRAL_POLICY, RunningCoordinator, start_coordinator
from osmanthus.core.dp import epsilon_units
from osmanthus.core.errors import (
    BudgetExhausted,
    FailedPrecondition,
    OsmanthusError,
    PermissionDenied,
    RateLimited,
)
from osmanthus.core.types import Role, SubjectKind
from sdk import Client
from tests.integration.conftest import Federation
from tests.integration.test_coordinator_replicas import _config_of, _person
from tests.postgres import Postgres, postgres  # noqa: F401 - the session fixture
from tests.waiting import wait_until

#: STATS queries racing at once in the budget race: more than the budget lets through
RACERS: Final = 24
#: queries racing at once in the rate-limit race: as many as both replicas' worker threads
#: (16 each) take at once, most of them refused at once, so that they queue for the
#: requester's lock together
RATE_RACERS: Final = 32
#: the default central policy's STATS budget: ε 5 a day (central-statistics)
DAILY_BUDGET: Final = Decimal("5")
#: ε per query in the budget race: exactly ten fit in the budget
SPEND: Final = Decimal("0.5")
#: the STATS rate limit the rate-limit race runs under (ε 0.1 each: far within the budget)
RATE_LIMIT: Final = 6
#: queries each looping client sends after the revocation returned, at least
AFTER_REVOCATION: Final = 3
#: generous per-node deadline: a missed deadline under load would be a failure of its own
DEADLINE_S: Final = 30.0


@dataclasses.dataclass
class Pair:
    a: RunningCoordinator
    b: RunningCoordinator
    federation: Federation
    url: str

    def client(self, at: RunningCoordinator, requester: str, *, role: Role,
               purposes: list[str]) -> Client:  # fmt: skip
        fed = self.federation
        token = fed.token(requester, role=role, purposes=purposes)
        return Client(
            [f"127.0.0.1:{at.port}"], tls=fed.tls(requester), token=token,
            keys=fed.keys[requester], catalogue=fed.catalogue,
        )  # fmt: skip


StartPair = Callable[[str], Pair]


@pytest.fixture
def start_pair(
    federation: Federation,
    postgres: Postgres,  # noqa: F811
    tmp_path: Path,
) -> Iterator[StartPair]:
    """Starts two replicas on a fresh database, under the central policy `policy_text`; both
    stop when the test ends."""
    started: list[RunningCoordinator] = []

    def start(policy_text: str) -> Pair:
        policy = tmp_path / "central.cedar"
        policy.write_text(policy_text, encoding="utf-8")
        url = postgres.new_database()
        config = dataclasses.replace(
            _config_of(federation), state_url=url, policy=policy, deadline_s=DEADLINE_S
        )
        for name in ("a", "b"):
            started.append(
                start_coordinator(
                    dataclasses.replace(config, state_dir=tmp_path / name),
                    catalogue=federation.catalogue,
                )
            )
        return Pair(started[-2], started[-1], federation, url)

    yield start
    for replica in started:
        replica.stop()


def _persons(federation: Federation, count: int) -> list[str]:
    with federation.data.subjects_file.open() as f:
        rows = [r["subject_id"] for r in csv.DictReader(f) if r["subject_kind"] == "person"]
    return rows[:count]


def _race(
    pair: Pair, requester: str, role: Role, ask: Callable[[Client], object], *, racers: int
) -> tuple[int, list[OsmanthusError]]:
    """`racers` calls of `ask` at once, alternately through A and B, each on its own client:
    (answers, refusals)."""
    clients = [
        pair.client(pair.a if i % 2 == 0 else pair.b, requester, role=role,
                    purposes=["statistics"])
        for i in range(racers)
    ]  # fmt: skip
    # the key is registered through A and read by B from the database
    clients[0].register_key()
    go = threading.Barrier(racers)

    def one(client: Client) -> OsmanthusError | None:
        go.wait()
        try:
            ask(client)
        except OsmanthusError as exc:
            return exc
        return None

    try:
        with ThreadPoolExecutor(max_workers=racers) as pool:
            outcomes = list(pool.map(one, clients))
    finally:
        for client in clients:
            client.close()
    refusals = [o for o in outcomes if o is not None]
    return len(outcomes) - len(refusals), refusals


def _rows(url: str, sql: str, *params: object) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def test_racing_epsilon_spends_through_both_replicas_never_exceed_the_budget(
    start_pair: StartPair,
) -> None:
    pair = start_pair(DEFAULT_CENTRAL_POLICY.read_text(encoding="utf-8"))
    cohort = _persons(pair.federation, 10)
    answered, refusals = _race(
        pair, "sync-1", Role.SYNC_JOB,
        lambda c: c.stats(cohort, kind=SubjectKind.PERSON, purpose="statistics", epsilon=SPEND),
        racers=RACERS,
    )  # fmt: skip
    # every refusal is the budget's, a clean RESOURCE_EXHAUSTED
    assert all(isinstance(r, BudgetExhausted) for r in refusals), [str(r) for r in refusals]
    assert answered * SPEND <= DAILY_BUDGET
    # nothing failed but on the budget, and nothing was given back: the budget is spent whole
    assert answered == int(DAILY_BUDGET / SPEND)
    charges = _rows(
        pair.url,
        "SELECT state, count(*), sum(units) FROM osm_epsilon_charges WHERE requester = %s "
        "GROUP BY state",
        "sync-1",
    )
    assert charges == [("committed", answered, answered * epsilon_units(SPEND))]


def test_racing_rate_limited_queries_through_both_replicas_never_exceed_the_limit(
    start_pair: StartPair,
) -> None:
    text = DEFAULT_CENTRAL_POLICY.read_text(encoding="utf-8")
    limit = '@rate_limit("60/hour")\npermit (\n  principal,\n  action == Action::"StatsQuery"'
    assert text.count(limit) == 1
    pair = start_pair(text.replace(limit, limit.replace("60/hour", f"{RATE_LIMIT}/hour")))
    cohort = _persons(pair.federation, 10)
    answered, refusals = _race(
        pair, "registrar", Role.STATISTICS_OFFICE,
        lambda c: c.stats(cohort, kind=SubjectKind.PERSON, purpose="statistics", epsilon="0.1"),
        racers=RATE_RACERS,
    )  # fmt: skip
    assert all(isinstance(r, RateLimited) for r in refusals), [str(r) for r in refusals]
    assert answered == RATE_LIMIT
    grants = _rows(
        pair.url,
        "SELECT policy_id, count(*) FROM osm_rate_grants WHERE requester = %s GROUP BY policy_id",
        "registrar",
    )
    assert grants == [("central-statistics", RATE_LIMIT)]
    # and the ε of exactly the answers was spent
    spent = _rows(
        pair.url,
        "SELECT sum(units) FROM osm_epsilon_charges WHERE requester = %s AND state = 'committed'",
        "registrar",
    )
    assert spent == [(RATE_LIMIT * epsilon_units(Decimal("0.1")),)]


@dataclasses.dataclass(frozen=True)
class _Asked:
    replica: str
    sent: float
    done: float
    #: None: answered
    refusal: OsmanthusError | None


def test_no_query_sent_after_a_revocation_returned_is_answered_at_either_replica(
    start_pair: StartPair,
) -> None:
    pair = start_pair(DEFAULT_CENTRAL_POLICY.read_text(encoding="utf-8"))
    registrar = pair.client(
        pair.a, "registrar", role=Role.PLATFORM_SERVICE,
        purposes=["court_enforcement", "consent_management"],
    )  # fmt: skip
    person = _person(pair.federation, 37)
    consent = registrar.grant_consent(
        subject_id=person, grantee="agency-1", purpose="loan_underwriting",
        expires_at=datetime.now(UTC) + timedelta(days=1),
    ).consent_id  # fmt: skip
    # two loops at each replica
    where = [("A", pair.a), ("B", pair.b), ("A", pair.a), ("B", pair.b)]
    agencies = [
        pair.client(r, "agency-1", role=Role.CREDIT_AGENCY, purposes=["loan_underwriting"])
        for _, r in where
    ]
    agencies[0].register_key()
    asked: list[list[_Asked]] = [[] for _ in where]
    revoked_at: list[float] = []  # set once, when revoke_consent has returned
    stop = threading.Event()

    def loop(index: int) -> None:
        client = agencies[index]
        while not stop.is_set():
            sent = time.monotonic()
            refusal: OsmanthusError | None = None
            try:
                client.person_score(person, purpose="loan_underwriting", consent_id=consent)
            except OsmanthusError as exc:
                refusal = exc
            asked[index].append(_Asked(where[index][0], sent, time.monotonic(), refusal))
            if revoked_at and sum(a.sent > revoked_at[0] for a in asked[index]) >= AFTER_REVOCATION:
                return

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(len(where))]
    for thread in threads:
        thread.start()
    try:
        # both replicas answer with the consent before it is revoked
        wait_until(
            lambda: all(any(a.refusal is None for a in mine) for mine in asked),
            what=lambda: f"every loop to be answered once: {asked}",
        )
        revoker = pair.client(
            pair.b, "registrar", role=Role.PLATFORM_SERVICE, purposes=["consent_management"]
        )
        revoking = time.monotonic()
        revoker.revoke_consent(consent)
        revoked_at.append(time.monotonic())
        revoker.close()
        for thread in threads:
            thread.join(timeout=300)
            assert not thread.is_alive(), "a query loop did not finish"
    finally:
        stop.set()
        registrar.close()
        for client in agencies:
            client.close()
    everything = [a for mine in asked for a in mine]
    after = [a for a in everything if a.sent > revoked_at[0]]
    assert len(after) >= AFTER_REVOCATION * len(where)
    assert {a.replica for a in after} == {"A", "B"}
    for a in after:
        # refused, and for the revocation: not an outage, not another reason
        assert isinstance(a.refusal, PermissionDenied), a
        assert "revoked" in str(a.refusal), a
    # what finished before the revocation began was answered (the consent was valid then);
    # what was in flight was answered or refused: for the revocation (the coordinator's check
    # or every node's saw it), or, when only some nodes saw it, because the others' answers
    # lack departments earlier answers to this requester about this subject included
    for a in everything:
        if a.done < revoking:
            assert a.refusal is None, a
        elif a.refusal is not None:
            assert (isinstance(a.refusal, PermissionDenied) and "revoked" in str(a.refusal)) or (
                isinstance(a.refusal, FailedPrecondition) and "earlier answers" in str(a.refusal)
            ), a

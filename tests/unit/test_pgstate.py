"""The coordinator's PostgreSQL state, as two replicas share it: two connection sets to one real
PostgreSQL server racing on consents, ε, rate limits, pins and single-use tokens; a server
restart mid-query; a replica stalled while it holds a lock; deadlocks."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from coordinator.consent import ConsentState
from coordinator.pgledgers import PgDisclosureLedger, PgEpsilonLedger, PgRateLimiter
from coordinator.pgstate import LOCK_TIMEOUT_S, PgState, advisory_key
from coordinator.storage import PostgresBackend, StateStores
from osmanthus.core.errors import (
    BudgetExhausted,
    ConfigError,
    FailedPrecondition,
    RateLimited,
    Unauthenticated,
    Unavailable,
)
from osmanthus.core.policy import EpsilonBudget, RateLimit
from osmanthus.core.types import RequesterId, SubjectKind
from tests.postgres import Postgres, postgres  # noqa: F401 - the session fixture
from tests.waiting import wait_until

SUBJECT = "11010519491231002X"
RACERS = 24


@pytest.fixture
def replicas(postgres: Postgres) -> Iterator[tuple[StateStores, StateStores]]:  # noqa: F811
    """Two replicas' stores on one fresh database, each with its own connections."""
    url = postgres.new_database()
    key = Ed25519PrivateKey.generate()
    backends = [PostgresBackend(url), PostgresBackend(url)]
    stores = [b.open(None, receipt_key=key, receipt_issuer="osmanthus") for b in backends]  # type: ignore[arg-type]
    yield stores[0], stores[1]
    for backend in backends:
        backend.close()


def _race(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run every call at once (a barrier releases them together); results or exceptions."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], Any]) -> Any:
        barrier.wait()
        try:
            return call()
        except Exception as exc:  # the refusals are what the test counts
            return exc

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def test_consent_granted_at_one_replica_is_honoured_and_revoked_at_the_other(
    replicas: tuple[StateStores, StateStores],
) -> None:
    a, b = replicas
    now = datetime.now(UTC)
    consent = a.consents.grant(
        subject_id=SUBJECT, grantee="agency-1", purpose="loan_underwriting",
        expires_at=now + timedelta(days=1), now=now,
    )  # fmt: skip
    check = dict(subject_id=SUBJECT, grantee="agency-1", purpose="loan_underwriting")
    assert b.consents.check(consent.consent_id, **check, now=now)[0] is ConsentState.VALID
    # B checked (and would have cached, were it the file registry): A's revocation still counts
    b.consents.revoke(consent.consent_id, now=now)
    state, why = a.consents.check(consent.consent_id, **check, now=now)
    assert state is ConsentState.REVOKED, why
    # both replicas staple one feed, and it holds the revocation made at the other
    assert a.consents.feed_id == b.consents.feed_id
    staple = a.consents.revocation_staple(now, known=0)
    assert [r.consent_id for r in staple.revocations] == [consent.consent_id]


def test_racing_revocations_append_one_chain(replicas: tuple[StateStores, StateStores]) -> None:
    a, b = replicas
    now = datetime.now(UTC)
    ids = [
        a.consents.grant(
            subject_id=SUBJECT, grantee="agency-1", purpose="loan_underwriting",
            expires_at=now + timedelta(days=1), now=now,
        ).consent_id
        for _ in range(10)
    ]  # fmt: skip
    results = _race([lambda c=c, r=r: r.consents.revoke(c, now=now) for c in ids for r in (a, b)])
    assert not [r for r in results if isinstance(r, Exception)]
    staple = b.consents.revocation_staple(now, known=0)
    assert staple.size == 10
    assert sorted(r.consent_id for r in staple.revocations) == sorted(ids)
    assert [r.sequence for r in staple.revocations] == list(range(1, 11))


def test_racing_epsilon_spends_at_two_replicas_never_exceed_the_budget(
    replicas: tuple[StateStores, StateStores],
) -> None:
    a, b = replicas
    budget = EpsilonBudget(policy_id="stats", epsilon=Decimal("1"), period_s=86400, text="1/day")
    results = _race(
        [
            lambda i=i: (a if i % 2 else b).epsilon.reserve(
                query_id=f"q{i}", requester="agency-1", epsilon=Decimal("0.1"), budgets=[budget]
            )
            for i in range(RACERS)
        ]
    )
    granted = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, BudgetExhausted)]
    assert len(granted) == 10 and len(refused) == RACERS - 10, results
    assert a.epsilon.spent("agency-1", period_s=86400) == Decimal("1")
    assert b.epsilon.spent("agency-1", period_s=86400) == Decimal("1")


def test_rate_limits_count_grants_at_both_replicas(
    replicas: tuple[StateStores, StateStores],
) -> None:
    a, b = replicas
    limit = RateLimit(policy_id="score", count=5, period_s=3600, text="5/hour")
    results = _race(
        [lambda i=i: (a if i % 2 else b).rate_limiter.charge("agency-1", [limit])
         for i in range(RACERS)]
    )  # fmt: skip
    granted = [r for r in results if isinstance(r, float)]
    assert len(granted) == 5
    assert all(isinstance(r, RateLimited) for r in results if not isinstance(r, float))
    # a place given back at one replica is free at the other
    a.rate_limiter.refund("agency-1", [limit], granted[0])
    assert isinstance(b.rate_limiter.charge("agency-1", [limit]), float)
    with pytest.raises(RateLimited):
        a.rate_limiter.charge("agency-1", [limit])


def test_first_answers_racing_at_two_replicas_pin_one_department_set(
    replicas: tuple[StateStores, StateStores],
) -> None:
    a, b = replicas
    now = datetime.now(UTC)
    sets = [frozenset({"court", "tax"}), frozenset({"court", "tax", "social"})]

    def settle(i: int) -> frozenset[str]:
        return (a if i % 2 else b).disclosures.settle(
            requester=RequesterId("agency-1"), subject_kind=SubjectKind.PERSON,
            subject_hash="ab" * 32, answered=frozenset({"court", "tax", "social"})
            if i % 4 < 2 else sets[i % 2], release=lambda _s: None, now=now,
        )  # fmt: skip

    results = _race([lambda i=i: settle(i) for i in range(RACERS)])
    answers = {r for r in results if isinstance(r, frozenset)}
    # one set pinned; an answer that lacked one of its departments was refused, not summed
    assert len(answers) == 1
    assert all(isinstance(r, FailedPrecondition) for r in results if not isinstance(r, frozenset))
    pinned = answers.pop()
    assert b.disclosures.settle_batch(
        requester=RequesterId("agency-1"), subject_kind=SubjectKind.PERSON,
        subject_hashes=["ab" * 32, "cd" * 32], departments=frozenset({"court"}), now=now,
    ) == [pinned == frozenset({"court"}), True]  # fmt: skip


def test_a_postgres_restart_mid_query_is_unavailable_then_recovers(
    postgres: Postgres,  # noqa: F811
) -> None:
    url = postgres.new_database()
    state = PgState(url)
    ledger = PgEpsilonLedger(state)
    budget = EpsilonBudget(policy_id="stats", epsilon=Decimal("1"), period_s=86400, text="1/day")
    started = threading.Event()
    outcome: list[BaseException] = []

    def slow_query() -> None:
        try:
            with state.transaction() as cur:
                started.set()
                cur.execute("SELECT pg_sleep(60)")
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=slow_query)
    worker.start()
    assert started.wait(10)
    postgres.stop()  # fast shutdown: the query in flight is ended
    worker.join(30)
    assert len(outcome) == 1 and isinstance(outcome[0], Unavailable), outcome
    assert "state database is unavailable" in outcome[0].message
    with pytest.raises(Unavailable):
        ledger.spent("agency-1", period_s=60)  # down: refused, not answered from nothing
    postgres.start()
    # the same objects, no restart of the coordinator: a new connection is made
    ledger.reserve(query_id="after", requester="agency-1", epsilon=Decimal("0.5"), budgets=[budget])
    assert ledger.spent("agency-1", period_s=86400) == Decimal("0.5")
    state.close()


def test_a_url_that_is_not_postgresql_is_refused_naming_the_field() -> None:
    with pytest.raises(ConfigError) as refused:
        PgState("mysql://db/osmanthus")
    assert refused.value.field == "state_url"


def test_replicas_refuse_another_consent_key_or_salt(postgres: Postgres, tmp_path: Any) -> None:  # noqa: F811
    url = postgres.new_database()
    first, second = PostgresBackend(url), PostgresBackend(url)
    try:
        first.check_consent_key(Ed25519PrivateKey.generate())
        with pytest.raises(ConfigError) as refused:
            second.check_consent_key(Ed25519PrivateKey.generate())
        assert refused.value.field == "consent_key"
        assert first.share_salt(b"a" * 32) == b"a" * 32
        # a replica without a salt file takes the shared one
        second.adopt_salt(tmp_path / "audit.salt")
        assert (tmp_path / "audit.salt").read_bytes() == b"a" * 32
        with pytest.raises(ConfigError):
            second.share_salt(b"b" * 32)
    finally:
        first.close()
        second.close()


def _backend_pid(state: PgState) -> int:
    return int(state.read("SELECT pg_backend_pid()")[0][0])


def test_a_stalled_lock_holder_makes_the_other_replicas_spend_fail_fast_then_it_succeeds(
    postgres: Postgres,  # noqa: F811
) -> None:
    url = postgres.new_database()
    state = PgState(url)
    ledger, limiter = PgEpsilonLedger(state), PgRateLimiter(state)
    budget = EpsilonBudget(policy_id="stats", epsilon=Decimal("1"), period_s=86400, text="1/day")
    limit = RateLimit(policy_id="score", count=5, period_s=3600, text="5/hour")
    pid = _backend_pid(state)
    # a stalled replica: it took agency-1's ε and rate-limit locks and does nothing more
    with psycopg.connect(url, autocommit=True) as stalled, stalled.transaction():
        stalled.execute(
            "SELECT pg_advisory_xact_lock(%s), pg_advisory_xact_lock(%s)",
            [advisory_key("epsilon", "agency-1"), advisory_key("rate", "agency-1")],
        )
        with pytest.raises(Unavailable) as refused:
            ledger.reserve(query_id="q1", requester="agency-1", epsilon=Decimal("0.1"),
                           budgets=[budget])  # fmt: skip
        assert "another coordinator replica has held" in refused.value.message
        assert f"retry in {LOCK_TIMEOUT_S} s" in refused.value.message
        with pytest.raises(Unavailable, match="another coordinator replica has held"):
            limiter.charge("agency-1", [limit])
        # another requester is not held up
        assert limiter.charge("agency-2", [limit]) is not None
        # the refusals kept the connection: nothing was lost, nothing reconnects
        assert _backend_pid(state) == pid
    # the stalled transaction ended: the same call now goes through
    ledger.reserve(query_id="q1", requester="agency-1", epsilon=Decimal("0.1"), budgets=[budget])
    assert ledger.spent("agency-1", period_s=86400) == Decimal("0.1")
    assert limiter.charge("agency-1", [limit]) is not None
    state.close()


def test_a_statement_timeout_is_unavailable_and_keeps_the_connection(
    postgres: Postgres,  # noqa: F811
) -> None:
    state = PgState(postgres.new_database())
    pid = _backend_pid(state)
    with pytest.raises(Unavailable, match="did not answer within"), state.transaction() as cur:
        cur.execute("SET LOCAL statement_timeout = '50ms'")
        cur.execute("SELECT pg_sleep(30)")
    assert _backend_pid(state) == pid
    state.close()


def test_a_deadlock_is_retried_and_keeps_the_connections(postgres: Postgres) -> None:  # noqa: F811
    state = PgState(postgres.new_database())
    both_hold_one = threading.Barrier(2)
    attempts = {"a": 0, "b": 0}

    def crossing(name: str, first: int, second: int) -> str:
        def body(cur: Any) -> str:
            attempts[name] += 1
            # only the deadlock detector may end this wait, not the lock timeout
            cur.execute("SET LOCAL lock_timeout = '60s'")
            cur.execute("SELECT pg_advisory_xact_lock(%s)", [first])
            if attempts[name] == 1:
                both_hold_one.wait(30)
            cur.execute("SELECT pg_advisory_xact_lock(%s)", [second])
            return name

        return state.run(body)

    with ThreadPoolExecutor(2) as pool:
        a = pool.submit(crossing, "a", 1, 2)
        b = pool.submit(crossing, "b", 2, 1)
        assert (a.result(60), b.result(60)) == ("a", "b")
    # PostgreSQL rolled one back (40P01); it ran again and went through
    assert sorted(attempts.values()) == [1, 2]
    with state._lock:
        assert len(state._idle) == 2  # both connections kept: a deadlock loses none
    state.close()


def test_a_single_query_and_a_batch_chunk_racing_on_one_subject_keep_the_pin_rule(
    replicas: tuple[StateStores, StateStores],
    postgres: Postgres,  # noqa: F811
) -> None:
    a, b = replicas
    now = datetime.now(UTC)
    subject = "ef" * 32
    batch_done = threading.Event()
    batch_result: list[Any] = []

    def batch() -> None:
        try:
            batch_result.append(b.disclosures.settle_batch(
                requester=RequesterId("agency-1"), subject_kind=SubjectKind.PERSON,
                subject_hashes=[subject], departments=frozenset({"court"}), now=now,
            ))  # fmt: skip
        except Exception as exc:
            batch_result.append(exc)
        finally:
            batch_done.set()

    def waiting_on_a_pin_lock() -> bool:
        with psycopg.connect(postgres.url(), autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            ).fetchone()
        return bool(row and row[0])

    def release(_departments: frozenset[str]) -> None:
        # between the single query's check and its pin, a batch chunk pins the same subject
        # at the other replica: it must wait for this settle (its lock), not pin under it
        worker = threading.Thread(target=batch)
        worker.start()
        wait_until(
            lambda: batch_done.is_set() or waiting_on_a_pin_lock(),
            what="the batch chunk pinned the subject or waits for its lock",
        )

    answered = frozenset({"court", "tax"})
    settled = a.disclosures.settle(
        requester=RequesterId("agency-1"), subject_kind=SubjectKind.PERSON, subject_hash=subject,
        answered=answered, release=release, now=now,
    )  # fmt: skip
    assert batch_done.wait(60)
    # the single query pinned {court, tax}; the chunk summing {court} alone may not answer
    assert settled == answered
    assert batch_result == [[False]]


def test_a_pin_that_got_in_first_without_the_lock_applies_the_pinned_set_rule(
    replicas: tuple[StateStores, StateStores],
) -> None:
    ledger = replicas[0].disclosures
    assert isinstance(ledger, PgDisclosureLedger)
    now = datetime.now(UTC)
    subject = "12" * 32
    # the pin lacks nothing this answer has: it is summed as pinned, not an INTERNAL error
    assert ledger.settle(
        requester=RequesterId("agency-1"), subject_kind=SubjectKind.PERSON, subject_hash=subject,
        answered=frozenset({"court", "tax"}),
        release=_pin_other(ledger, subject, frozenset({"court"}), now), now=now,
    ) == frozenset({"court"})  # fmt: skip
    # and one that lacks a pinned department is refused by the pin rule
    with pytest.raises(FailedPrecondition, match="social did not answer"):
        ledger.settle(
            requester=RequesterId("agency-1"), subject_kind=SubjectKind.PERSON,
            subject_hash="34" * 32, answered=frozenset({"court", "tax"}),
            release=_pin_other(ledger, "34" * 32, frozenset({"court", "social"}), now), now=now,
        )  # fmt: skip


def _pin_other(
    ledger: PgDisclosureLedger, subject: str, pinned: frozenset[str], now: datetime
) -> Callable[[frozenset[str]], None]:
    """A release callback during which a writer that takes no pin lock (a replica of before
    the lock) pins `pinned` for `subject`, between the settle's check and its insert."""

    def release(_departments: frozenset[str]) -> None:
        with psycopg.connect(ledger._state.url, autocommit=True) as conn:
            text = ",".join(sorted(pinned))
            conn.execute(
                "INSERT INTO osm_department_sets (departments) VALUES (%s) ON CONFLICT DO NOTHING",
                [text],
            )
            conn.execute(
                "INSERT INTO osm_pinned_sets SELECT %s, %s, %s, id, %s "
                "FROM osm_department_sets WHERE departments = %s ON CONFLICT DO NOTHING",
                ["agency-1", "person", bytes.fromhex(subject), now, text],
            )

    return release


def test_a_single_use_token_is_answered_once_across_replicas(postgres: Postgres) -> None:  # noqa: F811
    url = postgres.new_database()
    backends = [PostgresBackend(url), PostgresBackend(url)]
    try:
        caches = [backend.replay_cache() for backend in backends]
        expires = datetime.now(UTC) + timedelta(minutes=5)
        # racing the same token at both replicas: exactly one is answered
        results = _race(
            [lambda i=i: caches[i % 2].check_and_remember("jti-raced-000000", expires)
             for i in range(RACERS)]
        )  # fmt: skip
        assert sum(r is None for r in results) == 1, results
        replays = [r for r in results if r is not None]
        assert all(isinstance(r, Unauthenticated) for r in replays)
        assert "already used" in replays[0].message
        # used at A, refused at B
        caches[0].check_and_remember("jti-sequential-0", expires)
        with pytest.raises(Unauthenticated, match="cannot be replayed"):
            caches[1].check_and_remember("jti-sequential-0", expires)
        # released at A (refused before anything was answered): B may answer it once
        caches[0].release("jti-sequential-0")
        caches[1].check_and_remember("jti-sequential-0", expires)
        with pytest.raises(Unauthenticated):
            caches[0].check_and_remember("jti-sequential-0", expires)
        # an entry whose token has expired no longer counts
        past = datetime.now(UTC) - timedelta(seconds=1)
        caches[0].check_and_remember("jti-expired-0000", past)
        caches[1].check_and_remember("jti-expired-0000", expires)
        assert len(caches[0]) == len(caches[1]) == 3
    finally:
        for backend in backends:
            backend.close()

"""The coordinator's shared state in PostgreSQL: connections that come back after a database
restart, the schema every replica ensures, and the few facts all replicas must agree on.

Two or more coordinator replicas serve one federation from one PostgreSQL database
(`coordinator serve --state-url postgresql://...`). Nothing a decision depends on is cached
in a replica's memory across requests, except what can never change once written (a key
registered with its proof, a department set's id): every consent check reads the row, every
ε reservation and rate-limit charge runs in a transaction that holds an advisory lock on the
requester, so racing replicas queue instead of overshooting (PostgreSQL docs, "Advisory
Locks", section 13.3.5; READ COMMITTED takes a new snapshot per statement, section 13.2.1, so
each statement after the lock sees what the previous holder committed).

A connection that fails (the server restarted, the network dropped) fails the request in
flight with Unavailable, which the caller sees as gRPC UNAVAILABLE and may retry; the failed
connection and the idle ones opened with it are dropped, and the next request connects anew.

No replica can hold the others up for long: every connection carries a lock timeout, a
statement timeout and an idle-in-transaction timeout (PostgreSQL docs 20.11.1, "Statement
Behavior"). A replica that stalls while it holds a requester's lock is cut off by the server
after IDLE_IN_TRANSACTION_TIMEOUT_S (its transaction rolls back, the lock is freed); until then
the other replicas' calls for that requester wait at most LOCK_TIMEOUT_S each and are refused
UNAVAILABLE with a retry hint, rather than queueing past their deadlines on worker threads.
Those refusals, and deadlocks and serialization failures (retried first, up to MAX_ATTEMPTS,
where the whole transaction can run again), leave the connection and the idle ones in use:
only a lost connection empties the pool.

The lock timeout is meant for a stalled holder, not for a queue: a burst of one requester's
requests at one replica (as many as its worker threads) would otherwise queue at PostgreSQL
all together, and the last of them wait for every one before it, past LOCK_TIMEOUT_S, to be
refused UNAVAILABLE although nothing stalled (seen with 32 racing STATS queries through two
replicas: tests/integration/test_replica_races.py). So a replica's own callers for one lock
queue in the replica first (`run_locked`: a thread lock per lock key in use), and only one
of them at a time waits at PostgreSQL, behind at most one holder per other replica. The wait
in the replica is bounded too (LOCAL_QUEUE_TIMEOUT_S), so that a stalled database cannot tie
up every worker thread.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

import psycopg

from osmanthus.core.errors import ConfigError, Unavailable

_log = logging.getLogger(__name__)

#: URL schemes libpq takes (PostgreSQL docs, 34.1.1 "Connection URIs")
URL_SCHEMES: Final = ("postgresql", "postgres")
#: idle connections kept per replica; more are opened under load and closed when returned
MAX_IDLE: Final = 8
#: how long a replica waits for the database to accept a connection before answering
#: UNAVAILABLE
CONNECT_TIMEOUT_S: Final = 5
#: how long a statement waits for a lock another replica holds (a requester's ε or rate-limit
#: lock, a subject's pin lock, a consent row) before the request is refused UNAVAILABLE: well
#: within a query's deadline, and long enough for any transaction that is not stalled
LOCK_TIMEOUT_S: Final = 2
#: the longest one statement may run; none of the registries' statements comes near it
STATEMENT_TIMEOUT_S: Final = 10
#: a transaction left open and idle this long (a replica stalled while holding a lock) is
#: ended by the server, which frees its locks
IDLE_IN_TRANSACTION_TIMEOUT_S: Final = 10
#: how long a replica ensuring the schema at start waits for another one doing the same
SCHEMA_LOCK_TIMEOUT_S: Final = 60
#: times a transaction is run when it meets a deadlock or a serialization failure (SQLSTATE
#: class 40): PostgreSQL rolled it back whole, so running it again is safe
MAX_ATTEMPTS: Final = 3
#: the keys in osm_meta of what every replica must share: the audit salt (pins are keyed by
#: salted subject hashes) and the id of the consent key that signs receipts
SALT_KEY: Final = "audit_salt"
CONSENT_KEY_ID_KEY: Final = "consent_key_id"
#: SQLSTATEs (PostgreSQL docs, appendix A): lock_timeout expired, statement_timeout expired or
#: query cancelled, and the class of deadlocks and serialization failures
_LOCK_NOT_AVAILABLE: Final = "55P03"
_QUERY_CANCELED: Final = "57014"
_TRANSACTION_ROLLBACK: Final = "40"
#: how long a request waits in its replica behind the replica's other requests for the same
#: lock (run_locked) before it is refused UNAVAILABLE: each of those waits at most
#: LOCK_TIMEOUT_S at PostgreSQL, so a queue this long means the database or its holders stall
LOCAL_QUEUE_TIMEOUT_S: Final = 10
#: the advisory lock that serialises replicas ensuring the schema at the same time
_SCHEMA_LOCK: Final = 0x05_6D_61_6E_74_68_75_73  # "osmanthus", shortened

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS osm_meta (
    key TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);
CREATE TABLE IF NOT EXISTS osm_consents (
    consent_id TEXT PRIMARY KEY,
    subject_id TEXT NOT NULL,
    grantee TEXT NOT NULL,
    purpose TEXT NOT NULL,
    granted_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    revoked_at TIMESTAMPTZ,
    receipt TEXT NOT NULL,
    subject_kind TEXT NOT NULL CHECK (subject_kind IN ('person', 'enterprise')),
    receipt_feed TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS osm_consents_by_subject ON osm_consents (subject_id);
CREATE INDEX IF NOT EXISTS osm_consents_by_grantee ON osm_consents (grantee);
-- the revocation feed (coordinator/revocation_feed.py): `hash` chains every entry up to it
CREATE TABLE IF NOT EXISTS osm_revocations (
    sequence BIGINT PRIMARY KEY,
    consent_id TEXT NOT NULL UNIQUE,
    revoked_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    hash BYTEA NOT NULL
);
CREATE TABLE IF NOT EXISTS osm_requester_keys (
    requester TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    modulus_hex TEXT NOT NULL,
    registered_at TIMESTAMPTZ NOT NULL,
    modulus_proof BYTEA NOT NULL,
    PRIMARY KEY (requester, fingerprint)
);
CREATE INDEX IF NOT EXISTS osm_requester_keys_by_fingerprint
    ON osm_requester_keys (fingerprint);
CREATE TABLE IF NOT EXISTS osm_department_sets (
    id BIGSERIAL PRIMARY KEY,
    departments TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS osm_pinned_sets (
    requester TEXT NOT NULL,
    subject_kind TEXT NOT NULL,
    subject_hash BYTEA NOT NULL,
    set_id BIGINT NOT NULL REFERENCES osm_department_sets (id),
    pinned_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (requester, subject_kind, subject_hash)
);
CREATE TABLE IF NOT EXISTS osm_epsilon_charges (
    query_id TEXT PRIMARY KEY,
    requester TEXT NOT NULL,
    units BIGINT NOT NULL CHECK (units > 0),
    charged_at DOUBLE PRECISION NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('reserved', 'committed'))
);
CREATE INDEX IF NOT EXISTS osm_epsilon_charges_by_requester
    ON osm_epsilon_charges (requester, charged_at);
CREATE TABLE IF NOT EXISTS osm_rate_grants (
    requester TEXT NOT NULL,
    policy_id TEXT NOT NULL,
    granted_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS osm_rate_grants_by_requester
    ON osm_rate_grants (requester, policy_id, granted_at);
-- single-use tokens seen by any replica (coordinator/pgreplay.py), kept until they expire
CREATE TABLE IF NOT EXISTS osm_used_tokens (
    jti TEXT PRIMARY KEY,
    expires_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS osm_used_tokens_by_expiry ON osm_used_tokens (expires_at);
"""

Cursor = psycopg.Cursor[tuple[Any, ...]]
T = TypeVar("T")


class TransactionConflict(Unavailable):
    """PostgreSQL rolled a transaction back to break a deadlock or a serialization failure
    (SQLSTATE class 40); the same transaction may be run again (PgState.run does)."""


def check_state_url(url: str, *, field: str = "state_url") -> str:
    """`url` if it is a PostgreSQL connection URI, else ConfigError naming `field`."""
    if not isinstance(url, str) or urlsplit(url).scheme not in URL_SCHEMES:
        raise ConfigError(
            f"{str(url)[:60]!r} is not a PostgreSQL URL: it must start with postgresql:// "
            "(e.g. postgresql://coordinator@db.internal:5432/osmanthus)",
            field=field,
        )
    return url


def redacted(url: str) -> str:
    """The URL without its password, for logs and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def advisory_key(*parts: str) -> int:
    """A 64-bit advisory lock key for `parts` (a requester, a subject): a hash, so that two
    replicas lock the same key for the same parts."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PgState:
    """Connections to the state database, shared by one replica's registries and ledgers.

    Each operation takes a connection, runs one transaction and gives it back. Connections
    are not shared between threads at once (psycopg's connections serialise their users, which
    would serialise the coordinator's RPCs); up to MAX_IDLE wait idle for the next operation.
    """

    def __init__(self, url: str, *, max_idle: int = MAX_IDLE) -> None:
        self.url = check_state_url(url)
        self._max_idle = max_idle
        self._idle: list[psycopg.Connection[tuple[Any, ...]]] = []
        self._lock = threading.Lock()
        self._closed = False
        # a thread lock per advisory lock key in use (run_locked), dropped when no caller holds
        # or waits for it: one requester's burst never queues behind another's keys
        self._local_locks: dict[int, tuple[threading.Lock, int]] = {}
        try:
            with self.transaction() as cur:
                cur.execute(f"SET LOCAL lock_timeout = '{SCHEMA_LOCK_TIMEOUT_S}s'")
                cur.execute("SELECT pg_advisory_xact_lock(%s)", [_SCHEMA_LOCK])
                cur.execute(SCHEMA)
        except Unavailable as exc:
            raise ConfigError(
                f"cannot open the coordinator's state database: {exc.message}", field="state_url"
            ) from exc

    @contextmanager
    def transaction(self) -> Iterator[Cursor]:
        """A cursor inside one transaction, committed when the block ends without an error.

        A database that cannot be reached, or a connection lost on the way, raises
        Unavailable and empties the pool; a lock or statement timeout raises Unavailable and
        a deadlock or serialization failure TransactionConflict, keeping the connection; any
        other error rolls the transaction back and passes through.
        """
        conn = self._take()
        try:
            with conn.transaction(), conn.cursor() as cur:
                yield cur
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            # told apart by SQLSTATE (PostgreSQL docs, appendix A): psycopg's classes for
            # them differ between versions
            sqlstate = getattr(exc, "sqlstate", None) or ""
            if conn.broken or conn.closed:
                self._discard(conn)
                raise self._unavailable(exc) from exc
            # the server refused a statement; the connection itself is sound and kept
            self._give_back(conn)
            if sqlstate == _LOCK_NOT_AVAILABLE:
                raise self._refused(
                    exc,
                    "another coordinator replica has held what this request needs (a "
                    "requester's ε or rate-limit ledger, a subject's pin, a consent) for over "
                    f"{LOCK_TIMEOUT_S} s; the request was not answered, retry in "
                    f"{LOCK_TIMEOUT_S} s",
                ) from exc
            if sqlstate == _QUERY_CANCELED:
                raise self._refused(
                    exc,
                    "the coordinator's state database did not answer within "
                    f"{STATEMENT_TIMEOUT_S} s; the request was not answered, retry shortly",
                ) from exc
            if sqlstate.startswith(_TRANSACTION_ROLLBACK):
                raise TransactionConflict(
                    "the coordinator's state database rolled the request's transaction back "
                    f"to resolve a conflict with another replica (SQLSTATE {sqlstate}); retry"
                ) from exc
            raise self._unavailable(exc) from exc
        except BaseException:
            self._give_back(conn)
            raise
        self._give_back(conn)

    def run(self, body: Callable[[Cursor], T]) -> T:
        """`body(cursor)` in one transaction, run again (up to MAX_ATTEMPTS in all) when
        PostgreSQL rolls it back for a deadlock or a serialization failure. `body` must do
        nothing outside the transaction that a second run would repeat harmfully."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                with self.transaction() as cur:
                    return body(cur)
            except TransactionConflict:
                if attempt == MAX_ATTEMPTS:
                    raise
                _log.info("state database conflict, attempt %d of %d", attempt, MAX_ATTEMPTS)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def run_locked(self, key: int, body: Callable[[Cursor], T]) -> T:
        """`body(cursor)` as `run` does, in a transaction that first takes the advisory lock
        `key` (advisory_key), after this replica's earlier callers for the same key (the
        module's docstring): at PostgreSQL it waits only for other replicas' holders."""
        local = self._local_lock(key)
        if not local.acquire(timeout=LOCAL_QUEUE_TIMEOUT_S):
            self._drop_local_lock(key)
            _log.warning(
                "requests for one advisory lock queued in this replica for over %d s",
                LOCAL_QUEUE_TIMEOUT_S,
            )
            raise Unavailable(
                "the coordinator's state database has been slow to serve this replica's "
                f"requests for what this request needs (a requester's ε or rate-limit ledger, "
                f"a subject's pin) for over {LOCAL_QUEUE_TIMEOUT_S} s; the request was not "
                "answered, retry shortly"
            )
        try:

            def locked(cur: Cursor) -> T:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", [key])
                return body(cur)

            return self.run(locked)
        finally:
            local.release()
            self._drop_local_lock(key)

    def _local_lock(self, key: int) -> threading.Lock:
        """The thread lock of `key`, counted as wanted by one more caller."""
        with self._lock:
            local, users = self._local_locks.get(key) or (threading.Lock(), 0)
            self._local_locks[key] = (local, users + 1)
            return local

    def _drop_local_lock(self, key: int) -> None:
        with self._lock:
            local, users = self._local_locks[key]
            if users > 1:
                self._local_locks[key] = (local, users - 1)
            else:
                del self._local_locks[key]

    def read(self, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        """All rows of one statement, in a transaction of its own."""
        with self.transaction() as cur:
            cur.execute(sql, params)
            return cur.fetchall()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _take(self) -> psycopg.Connection[tuple[Any, ...]]:
        with self._lock:
            if self._closed:
                raise Unavailable("the coordinator is shutting down")
            if self._idle:
                return self._idle.pop()
        try:
            return psycopg.connect(
                self.url,
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT_S,
                application_name="osmanthus-coordinator",
                # timestamps come back in UTC, as the registries store and compare them
                # and no replica holds the others up for long (the module's docstring)
                options=(
                    f"-c TimeZone=UTC -c lock_timeout={LOCK_TIMEOUT_S}s "
                    f"-c statement_timeout={STATEMENT_TIMEOUT_S}s "
                    f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_TIMEOUT_S}s"
                ),
                # a server that vanished without closing the socket is noticed within a minute
                keepalives=1,
                keepalives_idle=30,
                keepalives_interval=10,
                keepalives_count=3,
            )
        except psycopg.Error as exc:
            raise self._unavailable(exc) from exc

    def _give_back(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        if conn.broken or conn.closed:
            self._discard(conn)
            return
        with self._lock:
            if not self._closed and len(self._idle) < self._max_idle:
                self._idle.append(conn)
                return
        conn.close()

    def _discard(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        """Drop a failed connection and the idle ones: after a restart of the server they are
        all dead, and each would fail one more request."""
        with self._lock:
            idle, self._idle = self._idle, []
        for dead in (conn, *idle):
            with suppress(psycopg.Error):  # closing a dead socket
                dead.close()

    def _refused(self, exc: BaseException, message: str) -> Unavailable:
        _log.warning("state database %s: %s", redacted(self.url), str(exc).strip()[:200])
        return Unavailable(message)

    def _unavailable(self, exc: BaseException) -> Unavailable:
        # the first line of libpq's message: the server's words, never a password
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        _log.warning("state database %s: %s", redacted(self.url), why)
        return Unavailable(
            f"the coordinator's state database is unavailable ({why}); the request was not "
            "answered, retry shortly"
        )


def shared_value(state: PgState, key: str, mine: bytes) -> bytes:
    """The value every replica shares under `key`: the one stored, or `mine` if none is yet
    (the first replica to start stores its own)."""

    def body(cur: Cursor) -> bytes:
        cur.execute(
            "INSERT INTO osm_meta (key, value) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING",
            [key, mine],
        )
        cur.execute("SELECT value FROM osm_meta WHERE key = %s", [key])
        row = cur.fetchone()
        assert row is not None  # inserted or there already, in this transaction
        return bytes(row[0])

    return state.run(body)

"""Single-use tokens' replay check in PostgreSQL, shared by every coordinator replica.

A single-use token (`single_use` claim) may be answered once in the whole federation, not
once at each replica: its `jti` is recorded in osm_used_tokens by one INSERT ... ON CONFLICT,
so of two replicas racing with one token exactly one inserts it, and the other is refused as a
replay. An entry is kept until its token could no longer be accepted (expiry plus the
verifier's leeway) and then purged, at most once every PURGE_INTERVAL_S per replica.
"""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Callable
from typing import Final

from coordinator.pgstate import Cursor, PgState
from osmanthus.core.errors import Unauthenticated
from osmanthus.core.tokens import ReplayCache

#: how often a replica removes the entries of tokens that have expired
PURGE_INTERVAL_S: Final = 300.0


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class PgReplayCache(ReplayCache):
    """The ReplayCache of every replica on one database (see osmanthus/core/tokens.py)."""

    def __init__(
        self, state: PgState, *, clock: Callable[[], datetime.datetime] = _utc_now
    ) -> None:
        # the in-memory cache's structures stay unused: the database is the cache
        super().__init__(clock=clock)
        self._state = state
        self._purged_at = 0.0
        self._purge_lock = threading.Lock()

    def check_and_remember(self, jti: str, expires_at: datetime.datetime) -> None:
        now = self._clock().timestamp()

        def body(cur: Cursor) -> bool:
            # an entry whose token has expired is taken over, as if it had been purged
            cur.execute(
                "INSERT INTO osm_used_tokens (jti, expires_at) VALUES (%s, %s) "
                "ON CONFLICT (jti) DO UPDATE SET expires_at = EXCLUDED.expires_at "
                "WHERE osm_used_tokens.expires_at < %s RETURNING jti",
                [jti, expires_at.timestamp(), now],
            )
            return cur.fetchone() is not None

        if not self._state.run(body):
            raise Unauthenticated(
                f"token jti {jti} was already used: single-use tokens cannot be replayed "
                "(at any coordinator replica)"
            )
        self._purge(now)

    def release(self, jti: str) -> None:
        with self._state.transaction() as cur:
            cur.execute("DELETE FROM osm_used_tokens WHERE jti = %s", [jti])

    def __len__(self) -> int:
        rows = self._state.read(
            "SELECT count(*) FROM osm_used_tokens WHERE expires_at >= %s",
            [self._clock().timestamp()],
        )
        return int(rows[0][0])

    def _purge(self, now: float) -> None:
        with self._purge_lock:
            if self._purged_at and time.monotonic() - self._purged_at < PURGE_INTERVAL_S:
                return
            self._purged_at = time.monotonic()
        with self._state.transaction() as cur:
            cur.execute("DELETE FROM osm_used_tokens WHERE expires_at < %s", [now])

"""The consent registry's revocation feed: every revocation appended, in order, hash-chained,
and a signed head that the coordinator staples to each request under a consent.

The feed lives in the consent registry's own DuckDB file, and each revocation is appended in
the same transaction as the revocation itself: a consent is never revoked without its entry,
and never has an entry without being revoked. osmanthus.core.consent_feed defines the entries,
the chain and the head, and how a node verifies them.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import Final

import duckdb
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from osmanthus.core.consent_feed import (
    MAX_HEAD_AGE,
    Revocation,
    SignedHead,
    chain,
    genesis,
    new_feed_id,
    sign_head,
)
from osmanthus.core.errors import ConfigError
from osmanthus.core.types import ConsentId

_log = logging.getLogger(__name__)

FEED_SCHEMA: Final = """
-- the feed's id: one row, made when the registry first opens the file
CREATE TABLE IF NOT EXISTS revocation_feed (feed_id VARCHAR NOT NULL);
-- every revocation, in the order recorded; `hash` is the chain hash up to and with this entry
CREATE TABLE IF NOT EXISTS revocations (
    sequence BIGINT PRIMARY KEY,
    consent_id VARCHAR NOT NULL UNIQUE,
    revoked_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    hash BLOB NOT NULL
);
"""


class RevocationFeed:
    """The feed of one registry file. Every method runs under the registry's lock, on its
    connection (the caller holds the lock; `append` runs inside the caller's transaction)."""

    def __init__(
        self, db: duckdb.DuckDBPyConnection, *, key: Ed25519PrivateKey, issuer: str
    ) -> None:
        self._db = db
        self._key = key
        self._issuer = issuer
        row = db.execute("SELECT feed_id FROM revocation_feed").fetchall()
        if len(row) > 1:
            raise ConfigError("the consent registry names more than one revocation feed")
        if row:
            self.feed_id = str(row[0][0])
        else:
            self.feed_id = new_feed_id()
            db.execute("INSERT INTO revocation_feed VALUES (?)", [self.feed_id])
        last = db.execute(
            "SELECT sequence, hash FROM revocations ORDER BY sequence DESC LIMIT 1"
        ).fetchone()
        self.size: int = int(last[0]) if last else 0
        self._root: bytes = bytes(last[1]) if last else genesis(self.feed_id)
        self._head: tuple[SignedHead, int, datetime] | None = None
        # heads are signed outside the registry's lock by whoever asks first after it aged
        self._head_lock = threading.Lock()

    def append(self, consent_id: str, *, revoked_at: datetime, expires_at: datetime) -> Revocation:
        """Append one revocation (inside the caller's transaction); the entry."""
        entry = Revocation(
            sequence=self.size + 1,
            consent_id=ConsentId(consent_id),
            revoked_at=_seconds(revoked_at),
            expires_at=_seconds(expires_at),
        )
        root = chain(self._root, entry)
        self._db.execute(
            "INSERT INTO revocations VALUES (?, ?, ?, ?, ?)",
            [entry.sequence, entry.consent_id, entry.revoked_at, entry.expires_at, root],
        )
        return entry

    def appended(self, entry: Revocation) -> None:
        """The caller's transaction that appended `entry` committed: the feed holds it now."""
        self._root = chain(self._root, entry)
        self.size = entry.sequence

    def backfill(self) -> int:
        """Append the revoked consents that have no entry (a file from before the feed existed),
        oldest revocation first; the number appended. Inside the caller's transaction."""
        rows = self._db.execute(
            "SELECT consent_id, revoked_at, expires_at FROM consents WHERE revoked_at IS NOT "
            "NULL AND consent_id NOT IN (SELECT consent_id FROM revocations) "
            "ORDER BY revoked_at, consent_id"
        ).fetchall()
        for consent_id, revoked_at, expires_at in rows:
            entry = self.append(
                consent_id,
                revoked_at=revoked_at.replace(tzinfo=UTC),
                expires_at=expires_at.replace(tzinfo=UTC),
            )
            self.appended(entry)
        return len(rows)

    def head(self, now: datetime, *, size: int, root: bytes) -> SignedHead:
        """A signed head of `size` entries (chain `root`), at most MAX_HEAD_AGE old."""
        with self._head_lock:
            cached = self._head
            if cached is not None and cached[1] == size and now - cached[2] < MAX_HEAD_AGE:
                return cached[0]
            signed = sign_head(
                feed=self.feed_id,
                issuer=self._issuer,
                size=size,
                root=root,
                issued_at=now,
                private_key=self._key,
            )
            self._head = (signed, size, now)
            return signed

    def checkpoint(self, now: datetime, *, size: int) -> SignedHead:
        """A signed checkpoint at entry `size` (1 <= size <= self.size): "entry `size` chains
        to this root", which lets a node far behind verify and keep one page at a time. The
        chain hash of every entry is stored, so nothing is recomputed."""
        row = self._db.execute("SELECT hash FROM revocations WHERE sequence = ?", [size]).fetchone()
        if row is None:
            raise ConfigError(f"the revocation feed has no entry {size}")
        return sign_head(
            feed=self.feed_id,
            issuer=self._issuer,
            size=size,
            root=bytes(row[0]),
            issued_at=now,
            private_key=self._key,
            checkpoint=True,
        )

    @property
    def root(self) -> bytes:
        return self._root

    def after(self, sequence: int, limit: int) -> tuple[Revocation, ...]:
        """Up to `limit` entries after `sequence`, in order."""
        rows = self._db.execute(
            "SELECT sequence, consent_id, revoked_at, expires_at FROM revocations "
            "WHERE sequence > ? ORDER BY sequence LIMIT ?",
            [max(0, sequence), limit],
        ).fetchall()
        return tuple(
            Revocation(
                sequence=int(seq),
                consent_id=ConsentId(consent_id),
                revoked_at=int(revoked_at),
                expires_at=int(expires_at),
            )
            for seq, consent_id, revoked_at, expires_at in rows
        )


def _seconds(value: datetime) -> int:
    return int(value.timestamp() // 1)

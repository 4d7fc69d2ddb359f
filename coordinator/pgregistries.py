"""The consent and key registries in PostgreSQL, shared by every coordinator replica.

The same interface and checks as the file registries (coordinator/consent.py, keys.py); only
the storage differs. A consent is read from the database at every check, never from a cache:
a revocation committed through one replica refuses at the next check at every other one. The
revocation feed's entries are appended under a row lock on the feed's id, so replicas that
revoke at once append one after the other to one chain.
"""

from __future__ import annotations

import builtins
import threading
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from coordinator.consent import (
    _COLUMNS,
    _CONSENT_ID,
    ConsentRegistry,
    _consent_from_row,
    _utc,
    check_receipt_signer,
)
from coordinator.keys import KeyRegistry
from coordinator.pgstate import Cursor, PgState, advisory_key, shared_value
from osmanthus.core.consent_feed import (
    MAX_HEAD_AGE,
    MAX_STAPLED_REVOCATIONS,
    Revocation,
    SignedHead,
    Staple,
    chain,
    genesis,
    new_feed_id,
    sign_head,
)
from osmanthus.core.errors import ConfigError, FailedPrecondition, NotFound
from osmanthus.core.ids import validate_any_subject
from osmanthus.core.receipts import RECEIPT_ISSUER, issue_receipt
from osmanthus.core.types import ConsentId, KeyFingerprint, RequesterId
from osmanthus.core.wire.coordinator import Consent

#: the key in osm_meta of the feed's id; its row is also the lock every append takes
_FEED_KEY = "revocation_feed"


class PgRevocationFeed:
    """The revocation feed in the shared database: its size and root are read at each use."""

    def __init__(self, state: PgState, *, key: Ed25519PrivateKey, issuer: str) -> None:
        self._state = state
        self._key = key
        self._issuer = issuer
        self.feed_id = shared_value(state, _FEED_KEY, new_feed_id().encode()).decode()
        self._head: tuple[SignedHead, int, datetime] | None = None
        self._head_lock = threading.Lock()

    def append(
        self, cur: Cursor, consent_id: str, *, revoked_at: datetime, expires_at: datetime
    ) -> None:
        """Append one revocation inside the caller's transaction, after every other replica's
        appends committed before it (the feed row's lock orders them)."""
        cur.execute("SELECT 1 FROM osm_meta WHERE key = %s FOR UPDATE", [_FEED_KEY])
        size, root = self._last(cur)
        entry = Revocation(
            sequence=size + 1,
            consent_id=ConsentId(consent_id),
            revoked_at=int(revoked_at.timestamp() // 1),
            expires_at=int(expires_at.timestamp() // 1),
        )
        cur.execute(
            "INSERT INTO osm_revocations VALUES (%s, %s, %s, %s, %s)",
            [
                entry.sequence,
                entry.consent_id,
                entry.revoked_at,
                entry.expires_at,
                chain(root, entry),
            ],
        )

    def _last(self, cur: Cursor) -> tuple[int, bytes]:
        cur.execute("SELECT sequence, hash FROM osm_revocations ORDER BY sequence DESC LIMIT 1")
        row = cur.fetchone()
        return (int(row[0]), bytes(row[1])) if row else (0, genesis(self.feed_id))

    def staple(
        self, now: datetime, *, known: int
    ) -> tuple[SignedHead, tuple[Revocation, ...], int]:
        """What ConsentRegistry.revocation_staple returns, read in one transaction."""
        with self._state.transaction() as cur:
            size, root = self._last(cur)
            entries: tuple[Revocation, ...] = ()
            if known < size:
                cur.execute(
                    "SELECT sequence, consent_id, revoked_at, expires_at FROM osm_revocations "
                    "WHERE sequence > %s ORDER BY sequence LIMIT %s",
                    [known, MAX_STAPLED_REVOCATIONS],
                )
                entries = tuple(
                    Revocation(
                        sequence=int(seq),
                        consent_id=ConsentId(cid),
                        revoked_at=int(revoked),
                        expires_at=int(expires),
                    )
                    for seq, cid, revoked, expires in cur.fetchall()
                )
            if size - known > MAX_STAPLED_REVOCATIONS:
                page = known + MAX_STAPLED_REVOCATIONS
                cur.execute("SELECT hash FROM osm_revocations WHERE sequence = %s", [page])
                row = cur.fetchone()
                if row is None:  # pragma: no cover - sequences have no gaps
                    raise ConfigError(f"the revocation feed has no entry {page}")
                signed = sign_head(
                    feed=self.feed_id, issuer=self._issuer, size=page, root=bytes(row[0]),
                    issued_at=now, private_key=self._key, checkpoint=True,
                )  # fmt: skip
                return signed, entries, page
        return self._signed_head(now, size=size, root=root), entries, size

    def _signed_head(self, now: datetime, *, size: int, root: bytes) -> SignedHead:
        with self._head_lock:
            cached = self._head
            if cached is not None and cached[1] == size and now - cached[2] < MAX_HEAD_AGE:
                return cached[0]
            signed = sign_head(
                feed=self.feed_id, issuer=self._issuer, size=size, root=root, issued_at=now,
                private_key=self._key,
            )  # fmt: skip
            self._head = (signed, size, now)
            return signed


class PgConsentRegistry(ConsentRegistry):
    """Consents in the shared database; every read goes to it (no cache across replicas)."""

    def __init__(
        self,
        state: PgState,
        *,
        receipt_key: Ed25519PrivateKey,
        receipt_issuer: str = RECEIPT_ISSUER,
    ) -> None:
        # the file registry's __init__ opens a file; this one shares the database instead
        check_receipt_signer(receipt_key, receipt_issuer)
        self.path = None  # type: ignore[assignment]
        self._state = state
        self._receipt_key = receipt_key
        self._receipt_issuer = receipt_issuer
        self._pg_feed = PgRevocationFeed(state, key=receipt_key, issuer=receipt_issuer)

    @property
    def feed_id(self) -> str:
        return self._pg_feed.feed_id

    def _sign(self, consent: Consent) -> str:
        return issue_receipt(
            consent=consent,
            private_key=self._receipt_key,
            issuer=self._receipt_issuer,
            revocation_feed=self._pg_feed.feed_id,
        )

    def _store_new(self, consent: Consent) -> None:
        with self._state.transaction() as cur:
            cur.execute(
                f"INSERT INTO osm_consents ({_COLUMNS}, receipt_feed) "
                "VALUES (%s, %s, %s, %s, %s, %s, NULL, %s, %s, %s)",
                [
                    consent.consent_id,
                    consent.subject_id,
                    consent.grantee,
                    consent.purpose,
                    consent.granted_at,
                    consent.expires_at,
                    consent.receipt,
                    consent.subject_kind.value,
                    self._pg_feed.feed_id,
                ],
            )

    def revoke(self, consent_id: str, *, now: datetime) -> Consent:
        now = _utc(now, field="now")
        _check_id(consent_id)

        def body(cur: Cursor) -> Consent:
            # the row's lock: a second revocation of it, at any replica, waits and finds it
            # revoked; the revocation and its feed entry commit together
            consent = _one(cur, f"SELECT {_COLUMNS} FROM osm_consents WHERE consent_id = %s "
                           "FOR UPDATE", consent_id)  # fmt: skip
            if consent.revoked_at is not None:
                return consent
            cur.execute(
                "UPDATE osm_consents SET revoked_at = %s WHERE consent_id = %s", [now, consent_id]
            )
            self._pg_feed.append(
                cur, consent.consent_id, revoked_at=now, expires_at=consent.expires_at
            )
            return _one(cur, f"SELECT {_COLUMNS} FROM osm_consents WHERE consent_id = %s",
                        consent_id)  # fmt: skip

        return self._state.run(body)

    def revocation_staple(self, now: datetime, *, known: int) -> Staple:
        now = _utc(now, field="now")
        head, entries, size = self._pg_feed.staple(now, known=max(0, known))
        return Staple(head=head, revocations=entries, size=size)

    def get(self, consent_id: str) -> Consent:
        _check_id(consent_id)
        with self._state.transaction() as cur:
            return _one(cur, f"SELECT {_COLUMNS} FROM osm_consents WHERE consent_id = %s",
                        consent_id)  # fmt: skip

    def list(
        self, *, subject_id: str | None = None, grantee: str | None = None
    ) -> builtins.list[Consent]:
        conditions: builtins.list[str] = []
        parameters: builtins.list[str] = []
        if subject_id is not None:
            conditions.append("subject_id = %s")
            parameters.append(validate_any_subject(subject_id, field="subject_id"))
        if grantee is not None:
            conditions.append("grantee = %s")
            parameters.append(grantee)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        rows = self._state.read(
            f"SELECT {_COLUMNS} FROM osm_consents {where} ORDER BY granted_at, consent_id",
            parameters,
        )
        return [_consent_from_row(row) for row in rows]

    def close(self) -> None:
        self._state.close()


def _check_id(consent_id: object) -> None:
    if not isinstance(consent_id, str) or not _CONSENT_ID.fullmatch(consent_id):
        raise NotFound(
            f"consent {consent_id!r} does not exist (consent ids look like cns_ followed by "
            "22 letters, digits, '-' or '_')",
            field="consent_id",
        )


def _one(cur: Cursor, sql: str, consent_id: str) -> Consent:
    cur.execute(sql, [consent_id])
    row = cur.fetchone()
    if row is None:
        raise NotFound(f"consent {consent_id} does not exist", field="consent_id")
    return _consent_from_row(row)


class PgKeyRegistry(KeyRegistry):
    """Registered keys in the shared database. A registration found is remembered, as in the
    file registry: registrations are never removed, so the memory cannot go stale."""

    def __init__(self, state: PgState) -> None:
        # the file registry's __init__ opens a file; this one shares the database instead
        self.path = None  # type: ignore[assignment]
        self._state = state
        self._registered: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def _store(
        self,
        requester: RequesterId,
        fingerprint: KeyFingerprint,
        *,
        n: int,
        modulus_proof: bytes,
        now: datetime,
    ) -> None:

        def body(cur: Cursor) -> None:
            cur.execute(
                "SELECT requester FROM osm_requester_keys WHERE fingerprint = %s", [fingerprint]
            )
            owners = [owner for (owner,) in cur.fetchall()]
            if any(owner != requester for owner in owners):
                raise FailedPrecondition(
                    f"key {fingerprint[:16]}… is already registered to another requester; "
                    "generate a new key pair",
                    field="public_key",
                )
            if not owners:
                cur.execute(
                    "INSERT INTO osm_requester_keys (requester, fingerprint, modulus_hex, "
                    "registered_at, modulus_proof) VALUES (%s, %s, %s, %s, %s)",
                    [requester, fingerprint, format(n, "x"), _utc(now, field="now"),
                     bytes(modulus_proof)],
                )  # fmt: skip

        # one key, one requester: two replicas registering one key at once queue at its lock
        self._state.run_locked(advisory_key("key", str(fingerprint)), body)
        with self._lock:
            self._registered.add((requester, fingerprint))

    def is_registered(self, requester: RequesterId, fingerprint: KeyFingerprint) -> bool:
        if (requester, fingerprint) in self._registered:
            return True
        rows = self._state.read(
            "SELECT 1 FROM osm_requester_keys WHERE requester = %s AND fingerprint = %s",
            [requester, fingerprint],
        )
        if rows:
            with self._lock:
                self._registered.add((requester, fingerprint))
        return bool(rows)

    def _registered_without_proof(self, requester: RequesterId, fingerprint: str) -> bool:
        return False  # every key in the shared database was registered with its proof

    def modulus_proof(self, fingerprint: KeyFingerprint) -> bytes:
        rows = self._state.read(
            "SELECT modulus_proof FROM osm_requester_keys WHERE fingerprint = %s", [fingerprint]
        )
        return bytes(rows[0][0]) if rows else b""

    def get(self, requester: RequesterId, fingerprint: KeyFingerprint) -> int:
        rows = self._state.read(
            "SELECT modulus_hex FROM osm_requester_keys WHERE requester = %s AND fingerprint = %s",
            [requester, fingerprint],
        )
        if not rows:
            raise NotFound(
                f"requester {requester!r} has no registered key with fingerprint "
                f"{str(fingerprint)[:16]}…; call RegisterKey first",
                field="key_fingerprint",
            )
        return int(rows[0][0], 16)

    def close(self) -> None:
        self._state.close()

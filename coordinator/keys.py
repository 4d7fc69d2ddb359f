"""Requester key registry: the Paillier public keys each requester registered, by fingerprint.

A key is registered only with a valid modulus proof (`osmanthus.core.keyproof`), which the
registry keeps: the coordinator forwards it to each node that has not yet verified the key.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

from coordinator.database import RegistryDatabase
from osmanthus.core.crypto import (
    MAX_KEY_BITS,
    PublicKey,
    fingerprint_of_bytes,
    fingerprint_of_modulus,
)
from osmanthus.core.errors import FailedPrecondition, InvalidArgument, NotFound
from osmanthus.core.keyproof import PROOF_FIELD, verify_modulus_proof
from osmanthus.core.names import PEER_NAME_PATTERN
from osmanthus.core.tokens import TokenClaims
from osmanthus.core.types import KeyFingerprint, RequesterId

__all__ = ["MAX_KEY_BITS", "KeyRegistry", "fingerprint_of_modulus"]

# the same rule the token issuer applies to requester ids
_REQUESTER = PEER_NAME_PATTERN

_log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requester_keys (
    requester VARCHAR NOT NULL,
    fingerprint VARCHAR NOT NULL,
    -- n as lower-case hex: it does not fit any DuckDB integer type
    modulus_hex VARCHAR NOT NULL,
    -- naive timestamp, always UTC
    registered_at TIMESTAMP NOT NULL,
    PRIMARY KEY (requester, fingerprint)
);
-- the key's modulus proof (osmanthus.core.keyproof). NULL only in a registry written before
-- proofs were required: such a key counts as unregistered until registered again with one
ALTER TABLE requester_keys ADD COLUMN IF NOT EXISTS modulus_proof BLOB;
"""


class KeyRegistry(RegistryDatabase):
    """Registered keys in a DuckDB file; one connection serialised by a lock.

    Every query asks `is_registered`, so registrations found are also remembered in memory,
    which saves a DuckDB statement (~0.4 ms) per query. That is exact because a registration is
    never removed, and changed only from "without a proof" (not registered) to "with one":
    nothing here deletes from the table, and DuckDB's file lock keeps other processes from
    writing it. A method that removes keys must also drop them from `_registered`. Answers of
    "not registered" are not remembered (a registration may follow).
    """

    def __init__(self, path: Path) -> None:
        super().__init__(path, schema=_SCHEMA, what="key registry")
        # grows only with registrations, which the file holds anyway
        self._registered: set[tuple[str, str]] = set()
        with self._lock:
            row = self._db.execute(
                "SELECT count(*) FROM requester_keys WHERE modulus_proof IS NULL"
            ).fetchone()
        unproven = int(row[0]) if row is not None else 0
        if unproven:
            _log.warning(
                "%s: %d key(s) were registered before modulus proofs were required; they count "
                "as unregistered until registered again with a proof (the SDK does so by itself)",
                path,
                unproven,
            )

    def register(
        self, *, requester: RequesterId, n: int, modulus_proof: bytes, now: datetime
    ) -> KeyFingerprint:
        """Record `n` and its proof for `requester`; registering the same key again changes
        nothing, except that it adds the proof to a key registered before proofs existed.

        Refuses a key that is not well formed, and a proof that does not verify (or is missing),
        with InvalidArgument naming `public_key` or `public_key.modulus_proof`.
        """
        _check_requester(requester)
        if not isinstance(n, int) or isinstance(n, bool):
            raise InvalidArgument("the Paillier modulus must be an integer", field="public_key")
        if n.bit_length() > MAX_KEY_BITS:
            raise InvalidArgument(
                f"Paillier key has {n.bit_length()} bits; at most {MAX_KEY_BITS} are allowed",
                field="public_key",
            )
        # refuses short, even and tiny moduli with the same words the nodes use
        key = PublicKey.checked(n, field="public_key")
        if not isinstance(now, datetime) or now.utcoffset() is None:
            raise InvalidArgument("must be a timezone-aware datetime", field="now")
        fingerprint = key.fingerprint
        if self.is_registered(requester, fingerprint):
            # registered with a verified proof already: repeating the call changes nothing and
            # must not cost the proof's verification again
            return fingerprint
        # deny by default: every registration proves n = p·q
        verify_modulus_proof(key, modulus_proof, field=PROOF_FIELD)
        self._store(requester, fingerprint, n=n, modulus_proof=modulus_proof, now=now)
        return fingerprint

    def _store(
        self,
        requester: RequesterId,
        fingerprint: KeyFingerprint,
        *,
        n: int,
        modulus_proof: bytes,
        now: datetime,
    ) -> None:
        """Record a verified key (the storage step of `register`): one key, one requester."""
        with self._lock:
            owners = self._db.execute(
                "SELECT requester FROM requester_keys WHERE fingerprint = ?", [fingerprint]
            ).fetchall()
            if any(owner != requester for (owner,) in owners):
                # one key, one requester: a token binds a key to exactly one requester
                raise FailedPrecondition(
                    f"key {fingerprint[:16]}… is already registered to another requester; "
                    "generate a new key pair",
                    field="public_key",
                )
            if not owners:
                self._db.execute(
                    "INSERT INTO requester_keys "
                    "(requester, fingerprint, modulus_hex, registered_at, modulus_proof) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [
                        requester,
                        fingerprint,
                        format(n, "x"),
                        now.astimezone(UTC).replace(tzinfo=None),
                        bytes(modulus_proof),
                    ],
                )
            else:
                # a key registered before proofs were required gets its proof now; one that
                # has a proof keeps it (both verify, either serves the nodes)
                self._db.execute(
                    "UPDATE requester_keys SET modulus_proof = ? "
                    "WHERE requester = ? AND fingerprint = ? AND modulus_proof IS NULL",
                    [bytes(modulus_proof), requester, fingerprint],
                )
            self._registered.add((requester, fingerprint))

    def is_registered(self, requester: RequesterId, fingerprint: KeyFingerprint) -> bool:
        if (requester, fingerprint) in self._registered:
            return True
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM requester_keys WHERE requester = ? AND fingerprint = ? "
                "AND modulus_proof IS NOT NULL",
                [requester, fingerprint],
            ).fetchone()
            if row is not None:
                self._registered.add((requester, fingerprint))
        return row is not None

    def registered_key(
        self, claims: TokenClaims, public_key: bytes, *, field: str = "public_key"
    ) -> PublicKey:
        """The request's public key, once it is valid, bound to the token and registered."""
        # the token's key first: only then the costly tests of n
        claims.require_key(fingerprint_of_bytes(public_key, field=field))
        key = PublicKey.from_bytes(public_key, field=field)
        if not self.is_registered(claims.requester, key.fingerprint):
            if self._registered_without_proof(claims.requester, key.fingerprint):
                raise FailedPrecondition(
                    f"public key {key.fingerprint[:16]}… was registered for {claims.requester} "
                    "without a modulus proof, which every key now needs; call RegisterKey again "
                    "(the SDK does so by itself, with the proof)"
                )
            raise FailedPrecondition(
                f"public key {key.fingerprint[:16]}… is not registered for {claims.requester}; "
                "call RegisterKey first"
            )
        return key

    def _registered_without_proof(self, requester: RequesterId, fingerprint: str) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM requester_keys WHERE requester = ? AND fingerprint = ? "
                "AND modulus_proof IS NULL",
                [requester, fingerprint],
            ).fetchone()
        return row is not None

    def modulus_proof(self, fingerprint: KeyFingerprint) -> bytes:
        """The registered modulus proof of the key `fingerprint` (one requester holds it), or
        b"" when no key with a proof is registered under it."""
        with self._lock:
            row = self._db.execute(
                "SELECT modulus_proof FROM requester_keys WHERE fingerprint = ? "
                "AND modulus_proof IS NOT NULL",
                [fingerprint],
            ).fetchone()
        return bytes(row[0]) if row is not None else b""

    def get(self, requester: RequesterId, fingerprint: KeyFingerprint) -> int:
        """The modulus n registered by `requester` under `fingerprint`."""
        with self._lock:
            row = self._db.execute(
                "SELECT modulus_hex FROM requester_keys WHERE requester = ? AND fingerprint = ?",
                [requester, fingerprint],
            ).fetchone()
        if row is None:
            raise NotFound(
                f"requester {requester!r} has no registered key with fingerprint "
                f"{str(fingerprint)[:16]}…; call RegisterKey first",
                field="key_fingerprint",
            )
        return int(row[0], 16)


def _check_requester(value: object) -> None:
    if not isinstance(value, str) or not _REQUESTER.fullmatch(value):
        raise InvalidArgument(
            f"{value!r} is not a requester id: 1 to 63 lower-case letters, digits, '_' or '-'",
            field="requester",
        )

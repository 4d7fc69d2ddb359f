"""Consent registry: which requester may see a person's record, for what purpose, until when."""

from __future__ import annotations

import builtins
import enum
import re
import secrets
from collections import OrderedDict
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from coordinator.database import RegistryDatabase
from osmanthus.errors import ConfigError, InvalidArgument, NotFound
from osmanthus.ids import validate_resident_id
from osmanthus.names import PEER_NAME_PATTERN, PURPOSE_PATTERN
from osmanthus.receipts import RECEIPT_ISSUER, issue_receipt
from osmanthus.types import ConsentId, Purpose, RequesterId, SubjectId

#: longest consent the registry records; a longer one must be renewed
MAX_CONSENT_YEARS: Final = 5
CONSENT_ID_PREFIX: Final = "cns_"
# the same rules the token issuer applies to requester ids and purposes
_REQUESTER = PEER_NAME_PATTERN
_PURPOSE = PURPOSE_PATTERN
_CONSENT_ID = re.compile(r"cns_[A-Za-z0-9_-]{22}")
#: consents kept in memory, most recently used first out last; ~1.1 kB each (0.5 kB receipt)
CACHE_ENTRIES: Final = 16_384

_SCHEMA = """
CREATE TABLE IF NOT EXISTS consents (
    consent_id VARCHAR PRIMARY KEY,
    subject_id VARCHAR NOT NULL,
    grantee VARCHAR NOT NULL,
    purpose VARCHAR NOT NULL,
    -- naive timestamps, always UTC
    granted_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    revoked_at TIMESTAMP,
    -- signed consent receipt (compact JWS); NULL in rows granted before receipts existed
    receipt VARCHAR
);
-- files made before receipts existed: their rows get a receipt when first read
ALTER TABLE consents ADD COLUMN IF NOT EXISTS receipt VARCHAR;
"""
_COLUMNS = "consent_id, subject_id, grantee, purpose, granted_at, expires_at, revoked_at, receipt"


@dataclass(frozen=True)
class Consent:
    consent_id: ConsentId
    subject_id: SubjectId
    grantee: RequesterId
    purpose: Purpose
    granted_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    #: compact JWS signed with the coordinator's consent key (osmanthus.receipts); it proves the
    #: grant, never that the consent is still unrevoked
    receipt: str


class ConsentState(enum.Enum):
    """Outcome of a consent check; `value` is what the central policy sees as context.consent."""

    VALID = "valid"
    MISSING = "missing"
    REVOKED = "revoked"
    EXPIRED = "expired"
    PURPOSE_MISMATCH = "purpose_mismatch"
    GRANTEE_MISMATCH = "grantee_mismatch"
    #: enterprise subjects: consent does not apply (set by the caller, never returned by check)
    NOT_APPLICABLE = "not_applicable"


class ConsentRegistry(RegistryDatabase):
    """Consents in a DuckDB file; one connection serialised by a lock, durable across restarts.

    Every query checks a consent, so recently read consents are also kept in memory (a bounded
    LRU cache), which saves a DuckDB statement (~0.6 ms) per check. The cache holds consents,
    never check outcomes: validity against `now` is worked out afresh on every check. Only
    `revoked_at` ever changes, and only through `revoke`, which replaces the cached copy under
    the same lock as its UPDATE; a read that filled the cache did so under that lock too, so no
    stale copy can outlive a revocation. This relies on this object being the only writer of the
    file: DuckDB's file lock keeps other processes out; do not open a second registry on the
    same file in one process.

    Every consent carries a receipt signed with `receipt_key` when it is granted. Rows of a file
    made before receipts existed are signed when first read and the receipt is stored then, so
    every consent the registry returns has one; the receipt's times are those of the record.
    """

    def __init__(
        self,
        path: Path,
        *,
        receipt_key: Ed25519PrivateKey,
        receipt_issuer: str = RECEIPT_ISSUER,
        cache_entries: int = CACHE_ENTRIES,
    ) -> None:
        if not isinstance(receipt_key, Ed25519PrivateKey):
            raise ConfigError(
                "the consent receipt key must be an Ed25519 private key, not "
                f"{type(receipt_key).__name__}",
                field="receipt_key",
            )
        super().__init__(path, schema=_SCHEMA, what="consent registry")
        self._receipt_key = receipt_key
        self._receipt_issuer = receipt_issuer
        self._cache: OrderedDict[str, Consent] = OrderedDict()
        self._cache_entries = cache_entries

    def grant(
        self,
        *,
        subject_id: str,
        grantee: str,
        purpose: str,
        expires_at: datetime,
        now: datetime,
    ) -> Consent:
        subject = validate_resident_id(subject_id, field="subject_id")
        _check_requester(grantee, field="grantee")
        if not isinstance(purpose, str) or not _PURPOSE.fullmatch(purpose):
            raise InvalidArgument(
                f"{purpose!r} is not a purpose name: a lower-case letter, then up to 63 lower-case "
                "letters, digits or '_'",
                field="purpose",
            )
        now = _utc(now, field="now")
        expires = _utc(expires_at, field="expires_at")
        if expires <= now:
            raise InvalidArgument(
                f"expiry {_iso(expires)} is not in the future (now {_iso(now)})", field="expires_at"
            )
        latest = _add_years(now, MAX_CONSENT_YEARS)
        if expires > latest:
            raise InvalidArgument(
                f"expiry {_iso(expires)} is more than {MAX_CONSENT_YEARS} years away; "
                f"the latest allowed is {_iso(latest)}",
                field="expires_at",
            )
        consent = Consent(
            consent_id=ConsentId(CONSENT_ID_PREFIX + secrets.token_urlsafe(16)),
            subject_id=subject,
            grantee=RequesterId(grantee),
            purpose=Purpose(purpose),
            granted_at=now,
            expires_at=expires,
            revoked_at=None,
            receipt="",
        )
        consent = replace(consent, receipt=self._sign(consent))
        with self._lock:
            self._db.execute(
                f"INSERT INTO consents ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, NULL, ?)",
                [
                    consent.consent_id,
                    consent.subject_id,
                    consent.grantee,
                    consent.purpose,
                    _naive(consent.granted_at),
                    _naive(consent.expires_at),
                    consent.receipt,
                ],
            )
        return consent

    def revoke(self, consent_id: str, *, now: datetime) -> Consent:
        """Revoke a consent from `now` on; revoking it again changes nothing and returns it."""
        now = _utc(now, field="now")
        with self._lock:
            consent = self._get_locked(consent_id)
            if consent.revoked_at is not None:
                return consent
            self._db.execute(
                "UPDATE consents SET revoked_at = ? WHERE consent_id = ?",
                [_naive(now), consent_id],
            )
            # read back from the file, so the cache holds exactly what was stored
            self._cache.pop(consent_id, None)
            return self._get_locked(consent_id)

    def get(self, consent_id: str) -> Consent:
        with self._lock:
            return self._get_locked(consent_id)

    def list(
        self, *, subject_id: str | None = None, grantee: str | None = None
    ) -> builtins.list[Consent]:
        """Consents, oldest first, optionally only those of one subject and/or one grantee."""
        conditions: builtins.list[str] = []
        parameters: builtins.list[str] = []
        if subject_id is not None:
            conditions.append("subject_id = ?")
            parameters.append(validate_resident_id(subject_id, field="subject_id"))
        if grantee is not None:
            conditions.append("grantee = ?")
            parameters.append(grantee)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM consents {where} ORDER BY granted_at, consent_id",
                parameters,
            ).fetchall()
            return [self._signed_locked(_consent_from_row(row)) for row in rows]

    def check(
        self,
        consent_id: str | None,
        *,
        subject_id: str,
        grantee: str,
        purpose: str,
        now: datetime,
    ) -> tuple[ConsentState, str]:
        """Whether `consent_id` lets `grantee` see `subject_id`'s record for `purpose` at `now`.

        The sentence names what is missing or mismatched; it never contains the subject's id,
        so it may go to the audit log and back to the requester.
        """
        now = _utc(now, field="now")
        subject = validate_resident_id(subject_id, field="subject_id")
        if not consent_id:
            return ConsentState.MISSING, "no consent id given"
        if not _CONSENT_ID.fullmatch(consent_id):
            return ConsentState.MISSING, f"{consent_id[:40]!r} is not a consent id"
        try:
            consent = self.get(consent_id)
        except NotFound:
            return ConsentState.MISSING, f"consent {consent_id} does not exist"
        if consent.subject_id != subject:
            return ConsentState.MISSING, f"consent {consent_id} was given by another person"
        if consent.grantee != grantee:
            return (
                ConsentState.GRANTEE_MISMATCH,
                f"consent {consent_id} was granted to '{consent.grantee}', not '{grantee}'",
            )
        if consent.purpose != purpose:
            return (
                ConsentState.PURPOSE_MISMATCH,
                f"consent {consent_id} is for purpose '{consent.purpose}', not '{purpose}'",
            )
        if consent.revoked_at is not None:
            # revocation is final, even if `now` is earlier than the recorded revocation time
            return (
                ConsentState.REVOKED,
                f"consent {consent_id} was revoked at {_iso(consent.revoked_at)}",
            )
        if consent.granted_at > now:
            return (
                ConsentState.MISSING,
                f"consent {consent_id} starts at {_iso(consent.granted_at)}, after {_iso(now)}",
            )
        if consent.expires_at <= now:
            return (
                ConsentState.EXPIRED,
                f"consent {consent_id} expired at {_iso(consent.expires_at)}",
            )
        return (
            ConsentState.VALID,
            f"consent {consent_id} is valid until {_iso(consent.expires_at)}",
        )

    def _get_locked(self, consent_id: str) -> Consent:
        if not isinstance(consent_id, str) or not _CONSENT_ID.fullmatch(consent_id):
            raise NotFound(
                f"consent {consent_id!r} does not exist (consent ids look like cns_ followed by "
                "22 letters, digits, '-' or '_')",
                field="consent_id",
            )
        cached = self._cache.get(consent_id)
        if cached is not None:
            self._cache.move_to_end(consent_id)
            return cached
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM consents WHERE consent_id = ?", [consent_id]
        ).fetchone()
        if row is None:
            # absent ids are not cached: they are the requester's to invent, without bound
            raise NotFound(f"consent {consent_id} does not exist", field="consent_id")
        consent = self._signed_locked(_consent_from_row(row))
        self._cache[consent_id] = consent
        if len(self._cache) > self._cache_entries:
            self._cache.popitem(last=False)
        return consent

    def _sign(self, consent: Consent) -> str:
        return issue_receipt(
            consent=consent, private_key=self._receipt_key, issuer=self._receipt_issuer
        )

    def _signed_locked(self, consent: Consent) -> Consent:
        """`consent` with its receipt, signing and storing one for a row granted before receipts."""
        if consent.receipt:
            return consent
        signed = replace(consent, receipt=self._sign(consent))
        self._db.execute(
            "UPDATE consents SET receipt = ? WHERE consent_id = ? AND receipt IS NULL",
            [signed.receipt, signed.consent_id],
        )
        return signed


def _check_requester(value: object, *, field: str) -> None:
    if not isinstance(value, str) or not _REQUESTER.fullmatch(value):
        raise InvalidArgument(
            f"{value!r} is not a requester id: 1 to 63 lower-case letters, digits, '_' or '-'",
            field=field,
        )


def _consent_from_row(row: tuple[Any, ...]) -> Consent:
    consent_id, subject_id, grantee, purpose, granted_at, expires_at, revoked_at, receipt = row
    return Consent(
        consent_id=ConsentId(consent_id),
        subject_id=SubjectId(subject_id),
        grantee=RequesterId(grantee),
        purpose=Purpose(purpose),
        granted_at=granted_at.replace(tzinfo=UTC),
        expires_at=expires_at.replace(tzinfo=UTC),
        revoked_at=revoked_at.replace(tzinfo=UTC) if revoked_at is not None else None,
        receipt=receipt or "",
    )


def _utc(value: datetime, *, field: str) -> datetime:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise InvalidArgument("must be a timezone-aware datetime", field=field)
    return value.astimezone(UTC)


def _naive(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _add_years(value: datetime, years: int) -> datetime:
    try:
        return value.replace(year=value.year + years)
    except ValueError:
        # 29 February in a year that has none
        return value.replace(year=value.year + years, day=28)

"""Consent registry: which requester may see a subject's record, for what purpose, until when."""

from __future__ import annotations

import base64
import binascii
import builtins
import enum
import json
import logging
import secrets
from collections import OrderedDict
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import duckdb
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from coordinator.database import RegistryDatabase
from coordinator.revocation_feed import FEED_SCHEMA, RevocationFeed
from osmanthus.core.consent_feed import MAX_STAPLED_REVOCATIONS, Staple
from osmanthus.core.errors import ConfigError, InvalidArgument, NotFound, PermissionDenied
from osmanthus.core.ids import validate_any_subject, validate_subject
from osmanthus.core.names import PEER_NAME_PATTERN, PURPOSE_PATTERN
from osmanthus.core.receipts import (
    CONSENT_ID_PATTERN,
    RECEIPT_ISSUER,
    check_issuer,
    consent_key_id,
    issue_receipt,
)
from osmanthus.core.storefile import transaction
from osmanthus.core.types import ConsentId, Purpose, RequesterId, SubjectId, SubjectKind
from osmanthus.core.wire.coordinator import Consent

_log = logging.getLogger(__name__)

#: longest consent the registry records; a longer one must be renewed
MAX_CONSENT_YEARS: Final = 5
CONSENT_ID_PREFIX: Final = "cns_"
# the same rules the token issuer applies to requester ids and purposes
_REQUESTER = PEER_NAME_PATTERN
_PURPOSE = PURPOSE_PATTERN
_CONSENT_ID = CONSENT_ID_PATTERN
#: consents kept in memory, most recently used first out last; ~1.1 kB each (0.5 kB receipt)
CACHE_ENTRIES: Final = 16_384
#: rows signed per UPDATE when the registry opens a file made before receipts
_SIGN_BATCH: Final = 2_000
#: consent ids listed in the warning about rows that cannot be signed; the rest are counted
_UNSIGNED_SHOWN: Final = 50

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
    -- signed consent receipt (compact JWS); NULL in rows granted before receipts existed that
    -- were revoked by then or that cannot be signed (see ConsentRegistry)
    receipt VARCHAR
);
-- files made before receipts existed: their rows are signed when the registry opens
ALTER TABLE consents ADD COLUMN IF NOT EXISTS receipt VARCHAR;
-- files made before enterprises could consent hold persons' consents only
ALTER TABLE consents ADD COLUMN IF NOT EXISTS subject_kind VARCHAR DEFAULT 'person';
-- the revocation feed the receipt is bound to (its revocation_feed claim); rows whose receipt
-- names no feed or another one are signed again when the registry opens
ALTER TABLE consents ADD COLUMN IF NOT EXISTS receipt_feed VARCHAR;
"""
_COLUMNS = (
    "consent_id, subject_id, grantee, purpose, granted_at, expires_at, revoked_at, receipt, "
    "subject_kind"
)


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

    Every consent carries a receipt signed with `receipt_key` as `receipt_issuer` when it is
    granted, bound to this registry's revocation feed (receipts.REVOCATION_FEED_CLAIM: a node
    judges the consent against that feed only). A file made before receipts existed, or before
    they were bound to the feed, or whose feed was made anew, is brought up to date when the
    registry opens, before it serves anything: every unrevoked row without a receipt bound to
    the feed is signed, in one transaction, with the times of the record. Reads never sign, so
    they never wait for the key. Rows revoked by then are not signed again, and rows that
    today's checks refuse (a subject id stored before a rule tightened) keep what they had (no
    receipt, or one that nodes refuse) and are named by consent id in a warning; both read,
    list and revoke as before. Receipts stored under another key than `receipt_key` (the key
    was replaced) are kept and counted in a warning: they verify only against the old key's
    consent.pub.
    """

    def __init__(
        self,
        path: Path,
        *,
        receipt_key: Ed25519PrivateKey,
        receipt_issuer: str = RECEIPT_ISSUER,
        cache_entries: int = CACHE_ENTRIES,
    ) -> None:
        check_receipt_signer(receipt_key, receipt_issuer)
        super().__init__(path, schema=_SCHEMA + FEED_SCHEMA, what="consent registry")
        self._receipt_key = receipt_key
        self._receipt_issuer = receipt_issuer
        self._cache: OrderedDict[str, Consent] = OrderedDict()
        self._cache_entries = cache_entries
        try:
            # the feed first: every receipt signed names it
            self._feed = self._open_feed()
            self._sign_unsigned_rows()
            self._warn_about_other_keys()
        except BaseException:
            self._db.close()
            raise

    def grant(
        self,
        *,
        subject_id: str,
        grantee: str,
        purpose: str,
        expires_at: datetime,
        now: datetime,
        subject_kind: SubjectKind = SubjectKind.PERSON,
    ) -> Consent:
        subject = validate_subject(subject_kind, subject_id, field="subject_id")
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
            subject_kind=subject_kind,
        )
        consent = replace(consent, receipt=self._sign(consent))
        self._store_new(consent)
        return consent

    def _store_new(self, consent: Consent) -> None:
        """Record a consent just granted (the storage step of `grant`)."""
        with self._lock:
            self._db.execute(
                f"INSERT INTO consents ({_COLUMNS}, receipt_feed) "
                "VALUES (?, ?, ?, ?, ?, ?, NULL, ?, ?, ?)",
                [
                    consent.consent_id,
                    consent.subject_id,
                    consent.grantee,
                    consent.purpose,
                    _naive(consent.granted_at),
                    _naive(consent.expires_at),
                    consent.receipt,
                    consent.subject_kind.value,
                    self._feed.feed_id,
                ],
            )

    def revoke(self, consent_id: str, *, now: datetime) -> Consent:
        """Revoke a consent from `now` on; revoking it again changes nothing and returns it."""
        now = _utc(now, field="now")
        with self._lock:
            consent = self._get_locked(consent_id)
            if consent.revoked_at is not None:
                return consent
            # the revocation and its feed entry are one transaction: nodes learn every
            # revocation from the feed, so neither may exist without the other
            with transaction(self._db):
                self._db.execute(
                    "UPDATE consents SET revoked_at = ? WHERE consent_id = ?",
                    [_naive(now), consent_id],
                )
                entry = self._feed.append(
                    consent.consent_id, revoked_at=now, expires_at=consent.expires_at
                )
            self._feed.appended(entry)
            # read back from the file, so the cache holds exactly what was stored
            self._cache.pop(consent_id, None)
            return self._get_locked(consent_id)

    def revocation_staple(self, now: datetime, *, known: int) -> Staple:
        """The feed's signed head (at most MAX_HEAD_AGE old) and the entries after `known`:
        what a request under a consent carries to a node that has verified `known` entries.

        A node that lacks more than MAX_STAPLED_REVOCATIONS entries gets the next page of them
        under a signed checkpoint instead of the head (consent_feed): it keeps the page and asks
        for the rest, so it never holds more than a page unverified."""
        now = _utc(now, field="now")
        known = max(0, known)
        with self._lock:
            size, root = self._feed.size, self._feed.root
            entries = self._feed.after(known, MAX_STAPLED_REVOCATIONS) if known < size else ()
            if size - known > MAX_STAPLED_REVOCATIONS:
                page = known + MAX_STAPLED_REVOCATIONS
                checkpoint = self._feed.checkpoint(now, size=page)
                return Staple(head=checkpoint, revocations=entries, size=page)
        return Staple(
            head=self._feed.head(now, size=size, root=root), revocations=entries, size=size
        )

    @property
    def feed_id(self) -> str:
        """The id of this registry's revocation feed."""
        return self._feed.feed_id

    def _open_feed(self) -> RevocationFeed:
        """The revocation feed, with an entry for every consent revoked before it existed."""
        with self._lock:
            try:
                with transaction(self._db):
                    feed = RevocationFeed(
                        self._db, key=self._receipt_key, issuer=self._receipt_issuer
                    )
                    added = feed.backfill()
            except duckdb.Error as exc:
                raise ConfigError(f"{self.path}: cannot open the revocation feed: {exc}") from exc
        if added:
            _log.info(
                "consent registry %s: %d consents revoked before the revocation feed existed "
                "were appended to it (feed %s)",
                self.path,
                added,
                feed.feed_id,
            )
        return feed

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
            parameters.append(validate_any_subject(subject_id, field="subject_id"))
        if grantee is not None:
            conditions.append("grantee = ?")
            parameters.append(grantee)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM consents {where} ORDER BY granted_at, consent_id",
                parameters,
            ).fetchall()
            return [_consent_from_row(row) for row in rows]

    def require_still_valid(
        self,
        consent_id: str,
        *,
        subject_id: str,
        grantee: str,
        purpose: str,
        now: datetime,
        subject_kind: SubjectKind,
    ) -> None:
        """PermissionDenied unless the consent still holds, as `check` decides: asked again just
        before an answer under it is released, so that a revocation that committed while the
        departments answered refuses the answer rather than follows it."""
        state, why = self.check(consent_id, subject_id=subject_id, grantee=grantee,
                                purpose=purpose, now=now, subject_kind=subject_kind)  # fmt: skip
        if state is not ConsentState.VALID:
            raise PermissionDenied(
                f"the consent no longer holds ({why}); the answer was not released",
                field="consent_id",
            )

    def check(
        self,
        consent_id: str | None,
        *,
        subject_id: str,
        grantee: str,
        purpose: str,
        now: datetime,
        subject_kind: SubjectKind = SubjectKind.PERSON,
    ) -> tuple[ConsentState, str]:
        """Whether `consent_id` lets `grantee` see `subject_id`'s record for `purpose` at `now`.

        The sentence names what is missing or mismatched; it never contains the subject's id,
        so it may go to the audit log and back to the requester.
        """
        now = _utc(now, field="now")
        subject = validate_subject(subject_kind, subject_id, field="subject_id")
        if not consent_id:
            return ConsentState.MISSING, "no consent id given"
        if not _CONSENT_ID.fullmatch(consent_id):
            return ConsentState.MISSING, f"{consent_id[:40]!r} is not a consent id"
        try:
            consent = self.get(consent_id)
        except NotFound:
            return ConsentState.MISSING, f"consent {consent_id} does not exist"
        if consent.subject_kind is not subject_kind:
            giver = "a person" if consent.subject_kind is SubjectKind.PERSON else "an enterprise"
            return ConsentState.MISSING, f"consent {consent_id} was given by {giver}"
        if consent.subject_id != subject:
            who = "person" if subject_kind is SubjectKind.PERSON else "enterprise"
            return ConsentState.MISSING, f"consent {consent_id} was given by another {who}"
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
        consent = _consent_from_row(row)
        self._cache[consent_id] = consent
        if len(self._cache) > self._cache_entries:
            self._cache.popitem(last=False)
        return consent

    def _sign(self, consent: Consent) -> str:
        return issue_receipt(
            consent=consent,
            private_key=self._receipt_key,
            issuer=self._receipt_issuer,
            revocation_feed=self._feed.feed_id,
        )

    def _sign_unsigned_rows(self) -> None:
        """Sign every unrevoked row that has no receipt bound to this registry's revocation
        feed, in one transaction, before serving; receipts signed with another key are left
        as they are (`_warn_about_other_keys`)."""
        with self._lock:
            try:
                with transaction(self._db):
                    signed, refused = self._sign_in_pages()
            except duckdb.Error as exc:
                raise ConfigError(
                    f"{self.path}: cannot store the receipts of consents recorded before "
                    f"receipts existed: {exc}"
                ) from exc
        if signed:
            _log.info(
                "consent registry %s: signed receipts for %d consents recorded before receipts "
                "existed or not yet bound to revocation feed %s",
                self.path,
                signed,
                self._feed.feed_id,
            )
        if refused:
            shown = ", ".join(refused[:_UNSIGNED_SHOWN])
            more = (
                f" and {len(refused) - _UNSIGNED_SHOWN} more"
                if len(refused) > _UNSIGNED_SHOWN
                else ""
            )
            _log.warning(
                "consent registry %s: %d consents recorded before receipts existed have no "
                "receipt (or, if recorded before receipts named the revocation feed, none that "
                "department nodes accept), because their stored record fails today's checks "
                "(the field is named): "
                "%s%s. They are still checked, listed and revocable; correct or revoke them and "
                "re-grant to give the subject and grantee a receipt",
                self.path,
                len(refused),
                shown,
                more,
            )

    def _sign_in_pages(self) -> tuple[int, builtins.list[str]]:
        """(rows signed, rows refused) of the unsigned unrevoked rows; inside a transaction."""
        refused: builtins.list[str] = []
        signed = 0
        after = ""
        feed = self._feed.feed_id
        current = consent_key_id(self._receipt_key.public_key())
        while True:
            # keyset pagination: rows that cannot be signed stay as they are and are not read
            # again, and memory stays bounded however many rows a file holds
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM consents WHERE (receipt IS NULL OR receipt_feed IS "
                "DISTINCT FROM ?) AND revoked_at IS NULL AND consent_id > ? "
                "ORDER BY consent_id LIMIT ?",
                [feed, after, _SIGN_BATCH],
            ).fetchall()
            if not rows:
                return signed, refused
            after = rows[-1][0]
            ids: builtins.list[str] = []
            receipts: builtins.list[str] = []
            for row in rows:
                consent = _consent_from_row(row)
                if consent.receipt and _kid_of(consent.receipt.split(".", 1)[0]) != current:
                    continue  # another key's receipt: kept, and warned about
                try:
                    receipts.append(self._sign(consent))
                except InvalidArgument as exc:
                    # the field only: a message may quote the stored personal data
                    refused.append(f"{consent.consent_id} ({exc.field})")
                    continue
                ids.append(consent.consent_id)
            if ids:
                self._db.execute(
                    "UPDATE consents SET receipt = signed.receipt, receipt_feed = ? FROM (SELECT "
                    "unnest(?::VARCHAR[]) AS consent_id, unnest(?::VARCHAR[]) AS receipt) "
                    "AS signed WHERE consents.consent_id = signed.consent_id",
                    [feed, ids, receipts],
                )
                signed += len(ids)

    def _warn_about_other_keys(self) -> None:
        """Warn if stored receipts were signed with another key than the one in use now."""
        with self._lock:
            # every receipt signed with one key has the same header, so this groups by key
            headers = self._db.execute(
                "SELECT split_part(receipt, '.', 1), count(*) FROM consents "
                "WHERE receipt IS NOT NULL GROUP BY 1"
            ).fetchall()
        current = consent_key_id(self._receipt_key.public_key())
        others: dict[str, int] = {}
        for header, count in headers:
            kid = _kid_of(header)
            if kid != current:
                others[kid] = others.get(kid, 0) + count
        if others:
            _log.warning(
                "consent registry %s: %d stored receipts were signed with another consent key "
                "than the one in use (%s): %s. They verify only against that key's consent.pub; "
                "if the key was replaced by accident, stop the coordinator and restore the old "
                "consent.key",
                self.path,
                sum(others.values()),
                current,
                ", ".join(f"key {kid}: {count}" for kid, count in sorted(others.items())),
            )


def check_receipt_signer(receipt_key: object, receipt_issuer: str) -> None:
    """ConfigError unless `receipt_key` is an Ed25519 private key and `receipt_issuer` an issuer."""
    if not isinstance(receipt_key, Ed25519PrivateKey):
        raise ConfigError(
            "the consent receipt key must be an Ed25519 private key, not "
            f"{type(receipt_key).__name__}",
            field="receipt_key",
        )
    try:
        check_issuer(receipt_issuer, field="receipt_issuer")
    except InvalidArgument as exc:
        raise ConfigError(exc.message, field="receipt_issuer") from exc


def _kid_of(header: str) -> str:
    try:
        parsed = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (binascii.Error, ValueError):
        return "unreadable"
    kid = parsed.get("kid") if isinstance(parsed, dict) else None
    return kid if isinstance(kid, str) else "none"


def _check_requester(value: object, *, field: str) -> None:
    if not isinstance(value, str) or not _REQUESTER.fullmatch(value):
        raise InvalidArgument(
            f"{value!r} is not a requester id: 1 to 63 lower-case letters, digits, '_' or '-'",
            field=field,
        )


def _consent_from_row(row: tuple[Any, ...]) -> Consent:
    (consent_id, subject_id, grantee, purpose, granted_at, expires_at, revoked_at, receipt,
     kind) = row  # fmt: skip
    return Consent(
        consent_id=ConsentId(consent_id),
        subject_id=SubjectId(subject_id),
        grantee=RequesterId(grantee),
        purpose=Purpose(purpose),
        granted_at=granted_at.replace(tzinfo=UTC),
        expires_at=expires_at.replace(tzinfo=UTC),
        revoked_at=revoked_at.replace(tzinfo=UTC) if revoked_at is not None else None,
        receipt=receipt or "",
        subject_kind=_stored_kind(consent_id, kind),
    )


def _stored_kind(consent_id: str, value: object) -> SubjectKind:
    try:
        return SubjectKind(value or SubjectKind.PERSON.value)
    except ValueError:
        # only this registry writes the file: another value means it was edited by hand
        raise ConfigError(
            f"consent {consent_id}: stored subject kind {str(value)[:20]!r} is neither 'person' "
            "nor 'enterprise'; correct the row or restore the registry from backup"
        ) from None


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

"""Signed consent receipts: compact EdDSA JWS attesting a consent the coordinator recorded."""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import logging
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from osmanthus.core import signing
from osmanthus.core.errors import (
    ConfigError,
    InvalidArgument,
    OsmanthusError,
    PermissionDenied,
    Unauthenticated,
)
from osmanthus.core.files import write_atomically
from osmanthus.core.ids import validate_any_subject, validate_subject
from osmanthus.core.names import PEER_NAME_PATTERN, PURPOSE_PATTERN
from osmanthus.core.strictjson import unique_keys
from osmanthus.core.types import ConsentId, Purpose, RequesterId, SubjectId, SubjectKind

_log = logging.getLogger(__name__)

#: the default `iss` claim of receipts: the coordinator's consent registry; a deployment may name
#: its own (`coordinator serve --consent-issuer`), and verifiers then pin that name
RECEIPT_ISSUER: Final = "osmanthus-consent-registry"
#: an issuer name: 1 to 255 visible ASCII characters, e.g. a deployment's name or URL
ISSUER_PATTERN: Final = re.compile(r"[\x21-\x7e]{1,255}")
#: a consent id as the registry makes them: "cns_" and 22 base64url characters (128 random bits)
CONSENT_ID_PATTERN: Final = re.compile(r"cns_[A-Za-z0-9_-]{22}")
#: the JOSE `typ` header, so that a receipt is never mistaken for an access token and vice versa
RECEIPT_TYPE: Final = "osmanthus-consent+jwt"
#: an enterprise's consent has a type of its own: a verifier that knows only persons' receipts
#: refuses it by type, and cannot read a credit code that happens to be a valid resident id as
#: a person's consent
ENTERPRISE_RECEIPT_TYPE: Final = "osmanthus-enterprise-consent+jwt"
_KIND_OF_TYPE: Final = {
    RECEIPT_TYPE: SubjectKind.PERSON,
    ENTERPRISE_RECEIPT_TYPE: SubjectKind.ENTERPRISE,
}
RECEIPT_ALGORITHM: Final = "EdDSA"
#: file names of the coordinator's receipt-signing key pair (PEM), wherever they are kept
CONSENT_KEY_FILE: Final = "consent.key"
CONSENT_PUBLIC_KEY_FILE: Final = "consent.pub"
#: anything longer is refused before parsing; real receipts are about 500 characters
MAX_RECEIPT_CHARS: Final = 4096
#: clock difference tolerated between the coordinator that signed and the verifier
DEFAULT_LEEWAY: Final = datetime.timedelta(seconds=5)
MAX_LEEWAY: Final = datetime.timedelta(minutes=5)
REQUIRED_CLAIMS: Final = ("iss", "jti", "sub", "aud", "purpose", "iat", "nbf", "exp")
#: the claim that says an enterprise gave the consent; a person's receipt does not carry it
SUBJECT_KIND_CLAIM: Final = "sub_kind"
#: the claim that binds a receipt to the registry's revocation feed (osmanthus.core.consent_feed):
#: a node checks revocations for the consent in that feed, never in another one the consent key
#: also signed (a registry started afresh, a staging copy)
REVOCATION_FEED_CLAIM: Final = "revocation_feed"
#: a feed id as the registry makes them: "rvf_" and 22 base64url characters (128 random bits)
FEED_ID_PATTERN: Final = re.compile(r"rvf_[A-Za-z0-9_-]{22}")

# the signature may be empty here so that alg "none" is refused by name below
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_ALLOWED_HEADER_PARAMETERS = frozenset({"alg", "typ", "kid"})


class ReceiptError(OsmanthusError):
    """A consent receipt was refused; the subclass says whether it is malformed, untrusted,
    out of date or for another subject, grantee or purpose.

    `field` is "receipt" unless the error names an expected value the receipt does not match.
    """

    def __init__(self, message: str, *, field: str | None = "receipt") -> None:
        super().__init__(message, field=field)


class MalformedReceipt(ReceiptError, InvalidArgument):
    """The text is not a consent receipt at all (wrong shape, header, type or claims)."""


class UntrustedReceipt(ReceiptError, Unauthenticated):
    """The receipt was not signed by the consent key given, or names another issuer."""


class ReceiptNotInForce(ReceiptError, PermissionDenied):
    """The receipt is genuine but the consent it records has expired or has not started."""


class ReceiptMismatch(ReceiptError, PermissionDenied):
    """The receipt is genuine but for another subject, grantee or purpose; `field` says which."""


class ConsentFacts(Protocol):
    """What a receipt attests; coordinator.consent.Consent has these attributes."""

    @property
    def consent_id(self) -> str: ...
    @property
    def subject_id(self) -> str: ...
    @property
    def grantee(self) -> str: ...
    @property
    def purpose(self) -> str: ...
    @property
    def granted_at(self) -> datetime.datetime: ...
    @property
    def expires_at(self) -> datetime.datetime: ...
    @property
    def subject_kind(self) -> SubjectKind: ...


@dataclass(frozen=True)
class ConsentReceipt:
    """The verified content of a receipt: this consent was granted, by this subject, to this
    grantee, for this purpose, from `granted_at` until `expires_at` (whole seconds, rounded down).

    It does not say that the consent is still unrevoked: a revocation leaves every receipt
    verifying. The coordinator checks revocation in its registry on every query, so only a
    query answered under the consent shows that it still stands.
    """

    consent_id: ConsentId
    subject_id: SubjectId
    grantee: RequesterId
    purpose: Purpose
    granted_at: datetime.datetime
    expires_at: datetime.datetime
    issuer: str
    #: RFC 7638 thumbprint of the public key that verified the signature
    key_id: str
    #: the receipt's `sub_kind` claim; receipts without it (every person's) are persons'
    subject_kind: SubjectKind = SubjectKind.PERSON
    #: the revocation feed the receipt is bound to (its `revocation_feed` claim); None in
    #: receipts signed before receipts were bound to a feed
    revocation_feed: str | None = None

    @property
    def masked_subject(self) -> str:
        """The subject id with all but its last 4 characters starred, for display."""
        return _mask(self.subject_id)


def consent_key_id(public_key: Ed25519PublicKey) -> str:
    """The key's RFC 7638 JWK thumbprint (signing.key_id), carried as the receipt's `kid`: the
    id every Osmanthus signature gives its key."""
    return signing.key_id(public_key)


def issue_receipt(
    *,
    consent: ConsentFacts,
    private_key: Ed25519PrivateKey,
    issuer: str = RECEIPT_ISSUER,
    revocation_feed: str | None = None,
) -> str:
    """A compact JWS signed with `private_key` attesting `consent` (see ConsentReceipt), bound
    to the registry's revocation feed `revocation_feed` when given (the registry always gives
    it; a department node refuses a receipt that is not bound to the feed it is shown).

    Times are whole seconds rounded down, so a receipt never claims a consent for longer than
    it was granted. The payload is signed, not encrypted: it shows the subject's id to whoever
    holds it, so hand a receipt only to the subject and the grantee.
    """
    if not isinstance(private_key, Ed25519PrivateKey):
        raise ConfigError(
            f"the consent key must be an Ed25519 private key, not {type(private_key).__name__}",
            field="private_key",
        )
    check_issuer(issuer, field="issuer")
    if not isinstance(consent.consent_id, str) or not CONSENT_ID_PATTERN.fullmatch(
        consent.consent_id
    ):
        raise InvalidArgument(
            f"{consent.consent_id!r} is not a consent id", field="consent.consent_id"
        )
    subject = validate_subject(consent.subject_kind, consent.subject_id, field="consent.subject_id")
    if not isinstance(consent.grantee, str) or not PEER_NAME_PATTERN.fullmatch(consent.grantee):
        raise InvalidArgument(f"{consent.grantee!r} is not a requester id", field="consent.grantee")
    if not isinstance(consent.purpose, str) or not PURPOSE_PATTERN.fullmatch(consent.purpose):
        raise InvalidArgument(f"{consent.purpose!r} is not a purpose", field="consent.purpose")
    if revocation_feed is not None and (
        not isinstance(revocation_feed, str) or not FEED_ID_PATTERN.fullmatch(revocation_feed)
    ):
        raise InvalidArgument(
            f"{str(revocation_feed)[:40]!r} is not a revocation feed id", field="revocation_feed"
        )
    granted = _seconds(consent.granted_at, field="consent.granted_at")
    expires = _seconds(consent.expires_at, field="consent.expires_at")
    if expires < granted:
        raise InvalidArgument(
            f"expiry {_iso_seconds(expires)} is before the grant {_iso_seconds(granted)}",
            field="consent.expires_at",
        )
    payload: dict[str, Any] = {
        "iss": issuer,
        "jti": consent.consent_id,
        "sub": subject,
        "aud": consent.grantee,
        "purpose": consent.purpose,
        "iat": granted,
        "nbf": granted,
        "exp": expires,
    }
    if consent.subject_kind is not SubjectKind.PERSON:
        # absent for persons, so that receipts issued before enterprises could consent and
        # those issued since read the same
        payload[SUBJECT_KIND_CLAIM] = consent.subject_kind.value
    if revocation_feed is not None:
        payload[REVOCATION_FEED_CLAIM] = revocation_feed
    typ = RECEIPT_TYPE if consent.subject_kind is SubjectKind.PERSON else ENTERPRISE_RECEIPT_TYPE
    headers = {"typ": typ, "kid": consent_key_id(private_key.public_key())}
    return jwt.encode(payload, private_key, algorithm=RECEIPT_ALGORITHM, headers=headers)


def check_issuer(issuer: object, *, field: str) -> str:
    """`issuer` if it can be a receipt's `iss` (see ISSUER_PATTERN); InvalidArgument otherwise."""
    if not isinstance(issuer, str) or not ISSUER_PATTERN.fullmatch(issuer):
        raise InvalidArgument(
            f"{issuer!r:.80} is not an issuer name: 1 to 255 visible ASCII characters, no spaces",
            field=field,
        )
    return issuer


def verify_receipt(
    receipt: str,
    *,
    public_key: Ed25519PublicKey,
    now: datetime.datetime,
    expected_grantee: str | None = None,
    expected_purpose: str | None = None,
    expected_subject: str | None = None,
    issuer: str = RECEIPT_ISSUER,
    leeway: datetime.timedelta = DEFAULT_LEEWAY,
    expected_kind: SubjectKind | None = None,
) -> ConsentReceipt:
    """The receipt's content if it is genuine, in force at `now` and for what is expected.

    Checks, in order: shape, header (EdDSA only, our typ, no parameter twice), signature against
    `public_key`, issuer (`issuer`: the name the deployment's coordinator signs as), claims
    (iat <= nbf <= exp), then subject kind (`expected_kind`: a person's receipt and an
    enterprise's have different types), subject, grantee and purpose (as the registry does),
    then time.
    Raises MalformedReceipt, UntrustedReceipt, ReceiptMismatch or ReceiptNotInForce naming
    the problem, or InvalidArgument naming the parameter if an expected value, `issuer` or
    `leeway` is not one that a receipt could match. `leeway` absorbs clock skew at the start
    only; at expiry the consent ends.

    A receipt proves that a consent was granted; it does not prove that it is still unrevoked.
    Revocation is checked in the coordinator's registry on every query.
    """
    if not isinstance(public_key, Ed25519PublicKey):
        raise ConfigError(
            f"the consent key must be an Ed25519 public key, not {type(public_key).__name__}",
            field="public_key",
        )
    if not isinstance(now, datetime.datetime) or now.utcoffset() is None:
        raise InvalidArgument("must be a timezone-aware datetime", field="now")
    if (
        not isinstance(leeway, datetime.timedelta)
        or leeway < datetime.timedelta(0)
        or leeway > MAX_LEEWAY
    ):
        raise InvalidArgument(f"{leeway!r} is not between 0 and {MAX_LEEWAY}", field="leeway")
    if expected_kind is not None and not isinstance(expected_kind, SubjectKind):
        raise InvalidArgument(f"{expected_kind!r:.40} is not a SubjectKind", field="expected_kind")
    subject_wanted = (
        None
        if expected_subject is None
        else validate_any_subject(expected_subject, field="expected_subject")
        if expected_kind is None
        else validate_subject(expected_kind, expected_subject, field="expected_subject")
    )
    # a value no receipt can name is the caller's mistake, not a mismatch of the receipt
    if expected_grantee is not None and (
        not isinstance(expected_grantee, str) or not PEER_NAME_PATTERN.fullmatch(expected_grantee)
    ):
        raise InvalidArgument(
            f"{expected_grantee!r:.80} is not a requester id: 1 to 63 lower-case letters, digits, "
            "'_' or '-'",
            field="expected_grantee",
        )
    if expected_purpose is not None and (
        not isinstance(expected_purpose, str) or not PURPOSE_PATTERN.fullmatch(expected_purpose)
    ):
        raise InvalidArgument(
            f"{expected_purpose!r:.80} is not a purpose name: a lower-case letter, then up to 63 "
            "lower-case letters, digits or '_'",
            field="expected_purpose",
        )
    check_issuer(issuer, field="issuer")
    key_id = consent_key_id(public_key)
    payload, subject_kind = _verified_payload(receipt, public_key, key_id)
    receipt_issuer = _claim_str(payload, "iss")
    if receipt_issuer != issuer:
        raise UntrustedReceipt(
            f"receipt issuer {receipt_issuer[:80]!r} is not the consent registry {issuer!r}"
        )
    consent_id = _claim_str(payload, "jti")
    if not CONSENT_ID_PATTERN.fullmatch(consent_id):
        raise MalformedReceipt(f"receipt claim 'jti' is {consent_id[:40]!r}: not a consent id")
    # the type and the claim must agree: both are signed, and a receipt made by the registry
    # carries the claim exactly when it has the enterprise type
    kind_claim = payload.get(SUBJECT_KIND_CLAIM)
    if subject_kind is SubjectKind.ENTERPRISE and kind_claim != SubjectKind.ENTERPRISE.value:
        raise MalformedReceipt(
            f"receipt claim '{SUBJECT_KIND_CLAIM}' is {str(kind_claim)[:20]!r}, not "
            "'enterprise' as its type says"
        )
    if subject_kind is SubjectKind.PERSON and SUBJECT_KIND_CLAIM in payload:
        raise MalformedReceipt(
            f"receipt claim '{SUBJECT_KIND_CLAIM}' is {str(kind_claim)[:20]!r}: a person's "
            "receipt has no such claim"
        )
    try:
        subject = validate_subject(subject_kind, _claim_str(payload, "sub"), field="sub")
    except InvalidArgument as exc:
        what = "resident id" if subject_kind is SubjectKind.PERSON else "credit code"
        raise MalformedReceipt(f"receipt claim 'sub' is not a {what}: {exc.message}") from exc
    grantee = _claim_str(payload, "aud")
    if not PEER_NAME_PATTERN.fullmatch(grantee):
        raise MalformedReceipt(f"receipt claim 'aud' is {grantee[:70]!r}: not a requester id")
    purpose = _claim_str(payload, "purpose")
    if not PURPOSE_PATTERN.fullmatch(purpose):
        raise MalformedReceipt(f"receipt claim 'purpose' is {purpose[:70]!r}: not a purpose")
    revocation_feed = payload.get(REVOCATION_FEED_CLAIM)
    if revocation_feed is not None and (
        not isinstance(revocation_feed, str) or not FEED_ID_PATTERN.fullmatch(revocation_feed)
    ):
        raise MalformedReceipt(
            f"receipt claim {REVOCATION_FEED_CLAIM!r} is {str(revocation_feed)[:40]!r}: not a "
            "revocation feed id"
        )
    granted_at = _claim_time(payload, "nbf")
    issued_at = _claim_time(payload, "iat")
    expires_at = _claim_time(payload, "exp")
    # the registry signs iat = nbf = the grant: any other order is not a receipt it made
    if issued_at > granted_at:
        raise MalformedReceipt("receipt claims are inconsistent: 'iat' is after 'nbf'")
    if expires_at < granted_at:
        raise MalformedReceipt("receipt claims are inconsistent: 'exp' is before 'nbf'")

    what = f"receipt for consent {consent_id}"
    if expected_kind is not None and subject_kind is not expected_kind:
        raise ReceiptMismatch(
            f"{what} is a consent of a subject of kind {subject_kind.value}, not "
            f"{expected_kind.value}",
            field="subject_kind",
        )
    if subject_wanted is not None and subject != subject_wanted:
        raise ReceiptMismatch(
            f"{what} was given by subject {_mask(subject)}, not {_mask(subject_wanted)}",
            field="subject",
        )
    if expected_grantee is not None and grantee != expected_grantee:
        raise ReceiptMismatch(
            f"{what} is for grantee '{grantee}', not '{expected_grantee}'", field="grantee"
        )
    if expected_purpose is not None and purpose != expected_purpose:
        raise ReceiptMismatch(
            f"{what} is for purpose '{purpose}', not '{expected_purpose}'", field="purpose"
        )
    if granted_at > now + leeway:
        raise ReceiptNotInForce(
            f"{what} is not yet valid: the consent starts at {_iso(granted_at)} (now {_iso(now)})"
        )
    if expires_at <= now:
        raise ReceiptNotInForce(
            f"{what} expired at {_iso(expires_at)} (now {_iso(now)}): the consent has ended"
        )
    return ConsentReceipt(
        consent_id=ConsentId(consent_id),
        subject_id=subject,
        grantee=RequesterId(grantee),
        purpose=Purpose(purpose),
        granted_at=granted_at,
        expires_at=expires_at,
        issuer=receipt_issuer,
        key_id=key_id,
        subject_kind=subject_kind,
        revocation_feed=revocation_feed,
    )


# --- keys -----------------------------------------------------------------------------------


def generate_consent_keypair(
    private_path: Path, public_path: Path, *, overwrite: bool = False, public_mode: int = 0o644
) -> Ed25519PrivateKey:
    """Write a new Ed25519 receipt-signing key pair as PEM (private key mode 0600) and return it.

    The public key is written last, so its presence shows the pair is complete; each file and
    its directory are synced before the next step. Existing files are kept (ConfigError) unless
    `overwrite` is true: receipts signed with a replaced key no longer verify against the new
    public key. Without `overwrite` each file is created with a hard link, which fails if the
    file exists, so a pair made at the same moment by another process is never replaced either.
    """
    if not overwrite:
        for path in (private_path, public_path):
            if path.exists():
                raise ConfigError(
                    f"{path} already exists: refusing to replace the consent key, which would "
                    "leave every receipt it signed unverifiable (pass overwrite=True to replace "
                    "it)",
                    field="consent_key",
                )
    key = Ed25519PrivateKey.generate()
    _make_directory(private_path)
    _make_directory(public_path)
    if overwrite:
        try:
            public_path.unlink(missing_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot replace {public_path}: {exc.strerror}", field="consent_key"
            ) from exc
    write_atomically(
        private_path, signing.private_pem(key), mode=0o600, overwrite=overwrite, field="consent_key"
    )
    public_pem = signing.public_pem(key.public_key())
    try:
        write_atomically(
            public_path, public_pem, mode=public_mode, overwrite=overwrite, field="consent_key"
        )
    except ConfigError:
        if not overwrite and not _holds(public_path, public_pem):
            # the private file is the one just linked into place (a link never replaces), and
            # without its public half nothing can have been signed with it
            private_path.unlink(missing_ok=True)
        raise
    return key


def load_consent_private_key(path: Path) -> Ed25519PrivateKey:
    """The receipt-signing key in PEM file `path`; ConfigError naming the file if unusable.

    A file that other users may read is still used (refusing would stop the coordinator over a
    fixable mode), but a warning names it: whoever read it can forge receipts.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise ConfigError(
            f"consent private key file {path} does not exist", field="consent_key"
        ) from exc
    except OSError as exc:
        raise ConfigError(
            f"cannot read consent private key file {path}: {exc.strerror}", field="consent_key"
        ) from exc
    try:
        with os.fdopen(fd, "rb") as handle:
            mode = stat.S_IMODE(os.fstat(handle.fileno()).st_mode)
            data = handle.read()
    except OSError as exc:
        raise ConfigError(
            f"cannot read consent private key file {path}: {exc.strerror}", field="consent_key"
        ) from exc
    if mode & 0o077:
        _log.warning(
            "%s: mode %04o lets other users read the consent signing key, and whoever reads it "
            "can forge consent receipts; it should be 0600 (check who has read it, then run: "
            "chmod 600 %s)",
            path,
            mode,
            path,
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"{path} is not an unencrypted PEM private key: {exc}", field="consent_key"
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(
            f"{path} holds a {type(key).__name__}, not an Ed25519 private key",
            field="consent_key",
        )
    return key


def load_consent_public_key(path: Path) -> Ed25519PublicKey:
    """The receipt-verification key in PEM file `path` (signing.load_public_key); ConfigError
    naming the file if unusable."""
    return signing.load_public_key(path, what="consent public key", field="consent_key")


def load_consent_key_pair(private_path: Path, public_path: Path) -> Ed25519PrivateKey:
    """The signing key in `private_path`, checked against `public_path` if that file exists.

    ConfigError naming both files if the public key there is not the private key's half:
    receipts signed with the key would not verify against the consent.pub handed out.
    """
    key = load_consent_private_key(private_path)
    if public_path.exists():
        _check_public_half(key, private_path, public_path)
    return key


def restore_consent_public_key(
    private_path: Path, public_path: Path, *, public_mode: int = 0o644
) -> Ed25519PrivateKey:
    """The key in `private_path`, with its public half written to `public_path` if missing.

    Never makes a new key. An existing `public_path` is kept if it is the key's half and
    refused (ConfigError naming both files) if it is not.
    """
    key = load_consent_private_key(private_path)
    if public_path.exists():
        _check_public_half(key, private_path, public_path)
        return key
    _make_directory(public_path)
    try:
        write_atomically(
            public_path,
            signing.public_pem(key.public_key()),
            mode=public_mode,
            overwrite=False,
            field="consent_key",
        )
    except ConfigError:
        # written at the same moment by someone else: keep it if it is the same key
        if not public_path.exists():
            raise
        _check_public_half(key, private_path, public_path)
    return key


def load_or_create_consent_key(
    private_path: Path, public_path: Path, *, public_mode: int = 0o644
) -> Ed25519PrivateKey:
    """The key in `private_path`, or a new pair written there and to `public_path` (with
    `public_mode`: a copy in a private state directory is private like the rest of it).

    A missing public half (a crash between the two writes) is written again from the private
    key; a public key that is not the private key's half is refused. A public key without its
    private key is refused too (ConfigError naming both): receipts were handed out that only
    the lost key's consent.pub verifies, so the key must be restored from backup, not replaced.
    """
    if not private_path.exists():
        if public_path.exists():
            raise ConfigError(
                f"{private_path} is missing but {public_path} exists: restore the consent "
                "signing key from backup. A new key would leave every receipt already handed "
                f"out unverifiable against the published {public_path.name}; to replace the "
                f"pair knowingly, delete {public_path} first",
                field="consent_key",
            )
        return generate_consent_keypair(private_path, public_path, public_mode=public_mode)
    return restore_consent_public_key(private_path, public_path, public_mode=public_mode)


# --- helpers --------------------------------------------------------------------------------


def _verified_payload(
    receipt: object, key: Ed25519PublicKey, key_id: str
) -> tuple[dict[str, Any], SubjectKind]:
    """The verified claims, and the subject kind the receipt's type names."""
    if not isinstance(receipt, str) or not receipt:
        raise MalformedReceipt("expected a non-empty compact JWS string")
    if len(receipt) > MAX_RECEIPT_CHARS:
        raise MalformedReceipt(
            f"{len(receipt)} characters, more than the {MAX_RECEIPT_CHARS} a receipt may have"
        )
    if not _COMPACT_JWS.fullmatch(receipt):
        raise MalformedReceipt("not a compact JWS: expected three base64url parts joined by '.'")
    # The algorithm is checked before any key is used, so that a receipt cannot choose how it is
    # verified (alg "none", or HS256 keyed with the public key bytes).
    header = _header(receipt)
    alg = header.get("alg")
    if alg != RECEIPT_ALGORITHM:
        raise UntrustedReceipt(
            f"receipt algorithm {alg!r} is not allowed; receipts are signed with "
            f"{RECEIPT_ALGORITHM} only"
        )
    extra = sorted(set(header) - _ALLOWED_HEADER_PARAMETERS)
    if extra:
        # quoted and cut: the names are unverified and end up in the verifier's logs
        raise MalformedReceipt(
            f"unsupported header parameter(s) {', '.join(repr(name[:40]) for name in extra[:5])}"
        )
    typ = header.get("typ")
    if typ not in _KIND_OF_TYPE:
        raise MalformedReceipt(
            f"header typ is {str(typ)[:60]!r}, not {RECEIPT_TYPE!r} or "
            f"{ENTERPRISE_RECEIPT_TYPE!r}: this is not a consent receipt"
        )
    kind = _KIND_OF_TYPE[typ]
    kid = header.get("kid")
    if kid is not None and kid != key_id:
        raise UntrustedReceipt(
            f"receipt was signed by consent key {str(kid)[:64]!r}, not by the key given "
            f"({key_id}): verify it with the public key of the coordinator that issued it"
        )
    try:
        decoded = jwt.PyJWS().decode_complete(receipt, key, algorithms=[RECEIPT_ALGORITHM])
    except jwt.InvalidSignatureError as exc:
        raise UntrustedReceipt(
            f"receipt signature does not verify against consent key {key_id}: the receipt "
            "was altered or signed with another key"
        ) from exc
    except jwt.PyJWTError as exc:
        raise MalformedReceipt(f"{exc}") from exc
    try:
        payload = json.loads(decoded["payload"], object_pairs_hook=unique_keys("claim"))
    except (ValueError, RecursionError) as exc:
        raise MalformedReceipt(f"the payload is not JSON ({exc})") from exc
    if not isinstance(payload, dict):
        raise MalformedReceipt("the payload is not a JSON object")
    missing = [name for name in REQUIRED_CLAIMS if name not in payload]
    if missing:
        raise MalformedReceipt(
            "receipt lacks claim(s) " + ", ".join(repr(name) for name in missing)
        )
    return payload, kind


def _header(receipt: str) -> dict[str, Any]:
    # parsed here rather than by PyJWT so that a parameter given twice is refused: parsers
    # disagree on which copy wins, so the verifier could read another typ or kid than a signer
    encoded = receipt.split(".", 1)[0]
    try:
        raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        header = json.loads(raw, object_pairs_hook=unique_keys("header parameter"))
    except (binascii.Error, ValueError, RecursionError) as exc:
        raise MalformedReceipt(f"unreadable header: {exc}") from exc
    if not isinstance(header, dict):
        raise MalformedReceipt("unreadable header: it is not a JSON object")
    return header


def _claim_str(payload: dict[str, Any], name: str) -> str:
    value = payload[name]
    if not isinstance(value, str):
        raise MalformedReceipt(f"receipt claim {name!r} is {value!r:.70}: expected a string")
    return value


def _claim_time(payload: dict[str, Any], name: str) -> datetime.datetime:
    value = payload[name]
    # bool is an int subclass; a NumericDate of true is a forgery, not the epoch plus one second
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedReceipt(
            f"receipt claim {name!r} is {value!r:.70}: expected whole seconds since the epoch"
        )
    try:
        return datetime.datetime.fromtimestamp(value, datetime.UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise MalformedReceipt(f"receipt claim {name!r} is {value!r}: not a usable time") from exc


def _seconds(value: datetime.datetime, *, field: str) -> int:
    if not isinstance(value, datetime.datetime) or value.utcoffset() is None:
        raise InvalidArgument("must be a timezone-aware datetime", field=field)
    return int(value.timestamp() // 1)


def _iso(value: datetime.datetime) -> str:
    return value.astimezone(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _iso_seconds(value: int) -> str:
    return _iso(datetime.datetime.fromtimestamp(value, datetime.UTC))


def _mask(subject: str) -> str:
    return "*" * max(0, len(subject) - 4) + subject[-4:]


def _check_public_half(key: Ed25519PrivateKey, private_path: Path, public_path: Path) -> None:
    published = load_consent_public_key(public_path)
    if published.public_bytes_raw() != key.public_key().public_bytes_raw():
        raise ConfigError(
            f"{public_path} (key {consent_key_id(published)}) is not the public half of "
            f"{private_path} (key {consent_key_id(key.public_key())}): receipts signed with it "
            f"would not verify against that {public_path.name}. Put back the matching pair "
            "from backup",
            field="consent_key",
        )


def _holds(path: Path, data: bytes) -> bool:
    try:
        return path.read_bytes() == data
    except OSError:
        return False


def _make_directory(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot write {path}: cannot make its directory {path.parent}: {exc.strerror}",
            field="consent_key",
        ) from exc

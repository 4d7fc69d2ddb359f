"""Requester access tokens: EdDSA (Ed25519) JWTs the platform issues and every peer verifies."""

from __future__ import annotations

import datetime
import heapq
import json
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from osmanthus.core import signing
from osmanthus.core.errors import ConfigError, InvalidArgument, PermissionDenied, Unauthenticated
from osmanthus.core.names import PEER_NAME_PATTERN, PURPOSE_PATTERN
from osmanthus.core.strictjson import unique_keys
from osmanthus.core.types import (
    SELF_QUERY,
    SUBJECT_DEVICE_ROLES,
    KeyFingerprint,
    Purpose,
    RequesterId,
    Role,
)

TOKEN_ALGORITHM = "EdDSA"
#: the gRPC metadata key and scheme that carry a requester's token on every call (RFC 6750)
AUTHORIZATION_KEY: Final = "authorization"
BEARER_PREFIX: Final = "Bearer "
DEFAULT_ISSUER = "osmanthus-platform"
DEFAULT_AUDIENCE = "osmanthus"
REQUIRED_CLAIMS = ("iss", "aud", "sub", "exp", "iat", "nbf", "jti", "purposes", "key_fp", "role")
#: optional claim; absent means the token may be used until it expires
SINGLE_USE_CLAIM = "single_use"
#: optional claim: SHA-256 (lower-case hex) of the raw X25519 public key a subjects' portal device
#: opens sealed subject files with (osmanthus.core.subjectseal.seal_fingerprint); nodes seal a
#: subject's file only to a key with this fingerprint, so nobody on the way can substitute theirs
SEAL_FINGERPRINT_CLAIM: Final = "seal_fp"
#: anything longer is refused before parsing; real tokens are well under 1 KiB
MAX_TOKEN_BYTES = 8192
MAX_LEEWAY = datetime.timedelta(minutes=5)
#: verified token payloads a verifier remembers (one per active requester token)
VERIFIED_CACHE_ENTRIES = 1024

_REQUESTER_RE = PEER_NAME_PATTERN
_PURPOSE_RE = PURPOSE_PATTERN
_FINGERPRINT_RE = re.compile(r"[0-9a-f]{64}")
#: a token id (`jti`) as the issuer makes them, and as a deny list may name them
JTI_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]{16,128}")
_JTI_RE = JTI_PATTERN
_ALLOWED_HEADER_PARAMETERS = frozenset({"alg", "typ", "kid"})
_ROLES = {role.value: role for role in Role}

Clock = Callable[[], datetime.datetime]


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class TokenClaims:
    """The verified content of a token."""

    requester: RequesterId
    role: Role
    purposes: frozenset[Purpose]
    key_fingerprint: KeyFingerprint
    jti: str
    issued_at: datetime.datetime
    not_before: datetime.datetime
    expires_at: datetime.datetime
    single_use: bool
    issuer: str
    audience: str
    #: the `seal_fp` claim, or None when the token names no sealing key
    seal_fingerprint: str | None = None

    def require_purpose(self, purpose: str) -> None:
        """Refuse a purpose the platform did not grant this requester in the token."""
        if purpose not in self.purposes:
            raise PermissionDenied(
                f"purpose {purpose!r} is not among the token's purposes "
                f"({', '.join(sorted(self.purposes))})"
            )

    def require_key(self, fingerprint: KeyFingerprint) -> None:
        """Refuse a public key other than the one the token is bound to."""
        if fingerprint != self.key_fingerprint:
            raise PermissionDenied(
                f"public key {fingerprint[:16]}… is not the key bound to the token "
                f"({self.key_fingerprint[:16]}…)"
            )

    def require_seal_key(self, fingerprint: str) -> None:
        """Refuse a sealing key other than the one the token names in `seal_fp` (and any sealing
        key at all when the token names none)."""
        if self.seal_fingerprint is None:
            raise PermissionDenied(
                "the token names no sealing key (claim 'seal_fp'): subject files are sealed only"
                " to a key the platform bound to the requester's token"
            )
        if fingerprint != self.seal_fingerprint:
            raise PermissionDenied(
                f"sealing key {fingerprint[:16]}… is not the key bound to the token "
                f"({self.seal_fingerprint[:16]}…)",
                field="recipient_key",
            )


def generate_issuer_keypair(
    private_path: Path, public_path: Path, *, overwrite: bool = False
) -> None:
    """Write a new Ed25519 issuer key pair as PEM; the private key file is mode 0600.

    Existing files are kept (ConfigError) unless `overwrite` is true: replacing the issuer key
    invalidates every token already handed out.
    """
    signing.generate_key_pair(
        private_path=private_path,
        public_path=public_path,
        what="token issuer key, which would invalidate every token it issued",
        overwrite=overwrite,
    )


class TokenIssuer:
    """Signs requester tokens with the platform's Ed25519 key."""

    def __init__(
        self,
        *,
        private_key: Ed25519PrivateKey,
        issuer: str = DEFAULT_ISSUER,
        audience: str = DEFAULT_AUDIENCE,
        clock: Clock = _utc_now,
    ) -> None:
        if not isinstance(private_key, Ed25519PrivateKey):
            raise ConfigError(
                f"the issuer key must be an Ed25519 private key, not {type(private_key).__name__}",
                field="private_key",
            )
        _check_nonempty(issuer, "issuer")
        _check_nonempty(audience, "audience")
        self._key = private_key
        self._issuer = issuer
        self._audience = audience
        self._clock = clock

    @classmethod
    def from_file(cls, path: Path, **kw: Any) -> TokenIssuer:
        try:
            key = serialization.load_pem_private_key(_read_key_file(path, "private"), password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{path} is not an unencrypted PEM private key: {exc}") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"{path} holds a {type(key).__name__}, not an Ed25519 private key")
        return cls(private_key=key, **kw)

    def issue(
        self,
        *,
        requester: str,
        role: Role,
        purposes: Sequence[str],
        key_fingerprint: str,
        ttl: datetime.timedelta,
        single_use: bool = False,
        not_before: datetime.datetime | None = None,
        seal_fingerprint: str | None = None,
    ) -> str:
        """A signed token for `requester`, valid from `not_before` (default now) for `ttl`;
        `seal_fingerprint` (the `seal_fp` claim) binds the token to a portal's sealing key."""
        if not isinstance(requester, str) or not _REQUESTER_RE.fullmatch(requester):
            raise InvalidArgument(
                f"{requester!r} is not a requester id: use 1 to 63 lower-case letters, digits,"
                " '-' or '_'",
                field="requester",
            )
        if not isinstance(role, Role):
            raise InvalidArgument(
                f"{role!r} is not a Role; use one of {', '.join(sorted(_ROLES))}", field="role"
            )
        problem = _purposes_problem(purposes)
        if problem:
            raise InvalidArgument(problem, field="purposes")
        if not isinstance(key_fingerprint, str) or not _FINGERPRINT_RE.fullmatch(key_fingerprint):
            raise InvalidArgument(
                f"{key_fingerprint!r} is not a key fingerprint: expected 64 lower-case hex digits"
                " (SHA-256 of the Paillier modulus)",
                field="key_fingerprint",
            )
        if not isinstance(ttl, datetime.timedelta) or ttl < datetime.timedelta(seconds=1):
            raise InvalidArgument(f"{ttl!r} is shorter than one second", field="ttl")
        if not isinstance(single_use, bool):
            raise InvalidArgument(f"{single_use!r} is not true or false", field="single_use")
        if seal_fingerprint is not None and (
            not isinstance(seal_fingerprint, str) or not _FINGERPRINT_RE.fullmatch(seal_fingerprint)
        ):
            raise InvalidArgument(
                f"{seal_fingerprint!r} is not a sealing key fingerprint: expected 64 lower-case"
                " hex digits (SHA-256 of the raw X25519 public key)",
                field="seal_fingerprint",
            )
        device_problem = _subject_device_problem(role, purposes, seal_fingerprint)
        if device_problem:
            problem, field = device_problem
            raise InvalidArgument(problem, field=field)
        now = self._clock()
        if not_before is None:
            not_before = now
        elif not isinstance(not_before, datetime.datetime) or not_before.tzinfo is None:
            raise InvalidArgument(
                f"{not_before!r} is not a timezone-aware datetime", field="not_before"
            )
        payload: dict[str, Any] = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": requester,
            "iat": int(now.timestamp()),
            "nbf": int(not_before.timestamp()),
            "exp": int((not_before + ttl).timestamp()),
            "jti": secrets.token_urlsafe(24),
            "purposes": list(purposes),
            "key_fp": key_fingerprint,
            "role": role.value,
            SINGLE_USE_CLAIM: single_use,
        }
        if seal_fingerprint is not None:
            payload[SEAL_FINGERPRINT_CLAIM] = seal_fingerprint
        return jwt.encode(payload, self._key, algorithm=TOKEN_ALGORITHM, headers={"typ": "JWT"})


class ReplayCache:
    """Remembers the jti of every single-use token seen until that token expires."""

    def __init__(self, *, clock: Clock = _utc_now) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._expiry: dict[str, datetime.datetime] = {}
        # Min-heap by expiry so forgetting expired entries costs O(log n) each.
        self._queue: list[tuple[datetime.datetime, str]] = []

    def check_and_remember(self, jti: str, expires_at: datetime.datetime) -> None:
        """Record `jti` until `expires_at`; Unauthenticated if it is already recorded."""
        with self._lock:
            self._forget_expired(self._clock())
            if jti in self._expiry:
                raise Unauthenticated(
                    f"token jti {jti} was already used: single-use tokens cannot be replayed"
                )
            self._expiry[jti] = expires_at
            heapq.heappush(self._queue, (expires_at, jti))

    def release(self, jti: str) -> None:
        """Forget `jti`: the request it came with was refused before anything was answered, in
        a way that invites the caller to ask again (a missing modulus proof, a revocation feed
        behind). Single use means answered at most once, and nothing was."""
        with self._lock:
            self._expiry.pop(jti, None)  # its heap entry goes when it expires

    def __len__(self) -> int:
        with self._lock:
            self._forget_expired(self._clock())
            return len(self._expiry)

    def _forget_expired(self, now: datetime.datetime) -> None:
        while self._queue and self._queue[0][0] < now:
            _, jti = heapq.heappop(self._queue)
            # a released jti left its heap entry behind, and one remembered again has two
            self._expiry.pop(jti, None)


class TokenDenyCheck(Protocol):
    """What a verifier asks of the issuer's deny list (osmanthus.core.denylist.TokenDenial)."""

    def refusal(self, claims: TokenClaims) -> str | None:
        """Why the token with `claims` is withdrawn, or None when it is not."""
        ...


class TokenVerifier:
    """Checks a token's signature, algorithm, issuer, audience, times, claims, the issuer's
    deny list and replay."""

    def __init__(
        self,
        *,
        public_key: Ed25519PublicKey,
        issuer: str = DEFAULT_ISSUER,
        audience: str = DEFAULT_AUDIENCE,
        replay_cache: ReplayCache,
        leeway: datetime.timedelta = datetime.timedelta(seconds=5),
        clock: Clock = _utc_now,
        deny_list: TokenDenyCheck | None = None,
    ) -> None:
        """`deny_list`: the issuer's withdrawn tokens, asked on every verification (None: a
        token is good until it expires)."""
        if not isinstance(public_key, Ed25519PublicKey):
            raise ConfigError(
                f"the issuer key must be an Ed25519 public key, not {type(public_key).__name__}",
                field="public_key",
            )
        _check_nonempty(issuer, "issuer")
        _check_nonempty(audience, "audience")
        if not isinstance(replay_cache, ReplayCache):
            raise ConfigError("a ReplayCache is required", field="replay_cache")
        if (
            not isinstance(leeway, datetime.timedelta)
            or leeway < datetime.timedelta(0)
            or leeway > MAX_LEEWAY
        ):
            raise ConfigError(
                f"{leeway!r} is not a clock leeway between 0 and {MAX_LEEWAY}", field="leeway"
            )
        self._key = public_key
        self._issuer = issuer
        self._audience = audience
        self._replay_cache = replay_cache
        self._leeway = leeway
        self._clock = clock
        self._deny_list = deny_list
        self._jws = jwt.PyJWS()
        # signature checks are most of a verification and the same token arrives with every
        # query of its requester: remember verified payloads (never claims: the times, the
        # audience and single use are checked on every call)
        self._verified: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._verified_lock = threading.Lock()

    @classmethod
    def from_file(cls, path: Path, **kw: Any) -> TokenVerifier:
        try:
            key = serialization.load_pem_public_key(_read_key_file(path, "public"))
        except ValueError as exc:
            raise ConfigError(f"{path} is not a PEM public key: {exc}") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError(f"{path} holds a {type(key).__name__}, not an Ed25519 public key")
        return cls(public_key=key, **kw)

    def release(self, claims: TokenClaims) -> None:
        """A single-use token's request was refused before anything was answered, with an
        invitation to ask again (ReplayCache.release): the same token may come back once more."""
        if claims.single_use:
            self._replay_cache.release(claims.jti)

    def verify(self, token: str) -> TokenClaims:
        """The token's claims if it is valid now; Unauthenticated naming the cause otherwise."""
        with self._verified_lock:
            payload = self._verified.get(token) if isinstance(token, str) else None
            if payload is not None:
                self._verified.move_to_end(token)
        if payload is None:
            payload = self._verified_payload(token)
            with self._verified_lock:
                self._verified[token] = payload
                if len(self._verified) > VERIFIED_CACHE_ENTRIES:
                    self._verified.popitem(last=False)
        claims = self._claims(payload)
        if self._deny_list is not None:
            # on every call, not cached with the payload: a withdrawal is in force at once
            refusal = self._deny_list.refusal(claims)
            if refusal is not None:
                raise Unauthenticated(refusal)
        if claims.single_use:
            # Remember past expiry plus leeway: that is how long the token would still be accepted.
            self._replay_cache.check_and_remember(claims.jti, claims.expires_at + self._leeway)
        return claims

    def _verified_payload(self, token: str) -> dict[str, Any]:
        if not isinstance(token, str) or not token:
            raise Unauthenticated("malformed token: expected a non-empty compact JWT string")
        if len(token) > MAX_TOKEN_BYTES:
            raise Unauthenticated(
                f"malformed token: {len(token)} characters, more than the {MAX_TOKEN_BYTES} allowed"
            )
        # The algorithm is checked before any key is used so that a token cannot choose how it is
        # verified (alg "none", or HS256 keyed with our public key bytes).
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"malformed token: {exc}") from exc
        alg = header.get("alg")
        if alg != TOKEN_ALGORITHM:
            raise Unauthenticated(f"token algorithm {alg} is not allowed; only {TOKEN_ALGORITHM}")
        extra = sorted(set(header) - _ALLOWED_HEADER_PARAMETERS)
        if extra:
            raise Unauthenticated(
                f"malformed token: unsupported header parameter(s) {', '.join(extra)}"
            )
        typ = header.get("typ", "JWT")
        if not isinstance(typ, str) or typ.upper() != "JWT":
            raise Unauthenticated(f"malformed token: header typ {typ!r} is not JWT")
        try:
            decoded = self._jws.decode_complete(token, self._key, algorithms=[TOKEN_ALGORITHM])
        except jwt.InvalidSignatureError as exc:
            raise Unauthenticated(
                "token signature does not verify against the platform issuer key"
            ) from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"malformed token: {exc}") from exc
        try:
            payload = json.loads(decoded["payload"], object_pairs_hook=unique_keys("claim"))
        except (ValueError, RecursionError) as exc:
            raise Unauthenticated(f"malformed token: the payload is not JSON ({exc})") from exc
        if not isinstance(payload, dict):
            raise Unauthenticated("malformed token: the payload is not a JSON object")
        return payload

    def _claims(self, payload: dict[str, Any]) -> TokenClaims:
        missing = [name for name in REQUIRED_CLAIMS if name not in payload]
        if missing:
            raise Unauthenticated(
                "token lacks required claim(s) " + ", ".join(repr(name) for name in missing)
            )
        iss = _claim_str(payload, "iss")
        if iss != self._issuer:
            raise Unauthenticated(
                f"token issuer {iss!r} is not the platform issuer {self._issuer!r}"
            )
        aud = payload["aud"]
        audiences = aud if isinstance(aud, list) else [aud]
        if not audiences or not all(isinstance(a, str) for a in audiences):
            raise Unauthenticated(f"token claim 'aud' is {aud!r}: expected a string or strings")
        if self._audience not in audiences:
            raise Unauthenticated(f"token audience {aud!r} does not include {self._audience!r}")
        sub = _claim_str(payload, "sub")
        if not _REQUESTER_RE.fullmatch(sub):
            raise Unauthenticated(f"token claim 'sub' is {sub!r}, which is not a requester id")
        role_value = _claim_str(payload, "role")
        role = _ROLES.get(role_value)
        if role is None:
            raise Unauthenticated(
                f"token claim 'role' is {role_value!r}: expected one of {', '.join(sorted(_ROLES))}"
            )
        problem = _purposes_problem(payload["purposes"])
        if problem:
            raise Unauthenticated(f"token claim 'purposes': {problem}")
        key_fp = _claim_str(payload, "key_fp")
        if not _FINGERPRINT_RE.fullmatch(key_fp):
            raise Unauthenticated(
                f"token claim 'key_fp' is {key_fp!r}: expected 64 lower-case hex digits"
            )
        jti = _claim_str(payload, "jti")
        if not _JTI_RE.fullmatch(jti):
            raise Unauthenticated(
                f"token claim 'jti' is {jti!r}: expected 16 to 128 URL-safe characters"
            )
        single_use = payload.get(SINGLE_USE_CLAIM, False)
        if not isinstance(single_use, bool):
            raise Unauthenticated(f"token claim 'single_use' is {single_use!r}: expected a boolean")
        seal_fp = payload.get(SEAL_FINGERPRINT_CLAIM)
        if seal_fp is not None and (
            not isinstance(seal_fp, str) or not _FINGERPRINT_RE.fullmatch(seal_fp)
        ):
            raise Unauthenticated(
                f"token claim {SEAL_FINGERPRINT_CLAIM!r} is {seal_fp!r}: expected 64 lower-case hex"
                " digits (SHA-256 of the raw X25519 sealing key)"
            )
        device_problem = _subject_device_problem(role, payload["purposes"], seal_fp)
        if device_problem:
            problem, field = device_problem
            claim = SEAL_FINGERPRINT_CLAIM if field == "seal_fingerprint" else field
            raise Unauthenticated(f"token claim {claim!r}: {problem}")

        issued_at = _claim_time(payload, "iat")
        not_before = _claim_time(payload, "nbf")
        expires_at = _claim_time(payload, "exp")
        if expires_at <= not_before:
            raise Unauthenticated("token claims are inconsistent: 'exp' is not later than 'nbf'")
        now = self._clock()
        if now > expires_at + self._leeway:
            raise Unauthenticated(
                f"token expired at {expires_at.isoformat()} (now {now.isoformat()})"
            )
        if not_before > now + self._leeway:
            raise Unauthenticated(
                f"token is not yet valid: 'nbf' is {not_before.isoformat()} (now {now.isoformat()})"
            )
        if issued_at > now + self._leeway:
            raise Unauthenticated(
                f"token is not yet valid: 'iat' {issued_at.isoformat()} is in the future"
                f" (now {now.isoformat()})"
            )
        return TokenClaims(
            requester=RequesterId(sub),
            role=role,
            purposes=frozenset(Purpose(p) for p in payload["purposes"]),
            key_fingerprint=KeyFingerprint(key_fp),
            jti=jti,
            issued_at=issued_at,
            not_before=not_before,
            expires_at=expires_at,
            single_use=single_use,
            issuer=iss,
            audience=self._audience,
            seal_fingerprint=seal_fp,
        )


def _purposes_problem(purposes: object) -> str:
    """What is wrong with a purposes list, or "" if nothing is."""
    if isinstance(purposes, str | bytes) or not isinstance(purposes, Sequence):
        return f"{purposes!r} is not a list of purpose names"
    if not purposes:
        return "at least one purpose is required"
    seen: set[str] = set()
    for purpose in purposes:
        if not isinstance(purpose, str) or not _PURPOSE_RE.fullmatch(purpose):
            return (
                f"{purpose!r} is not a purpose name: start with a lower-case letter, then up to 63"
                " lower-case letters, digits or '_'"
            )
        if purpose in seen:
            return f"{purpose!r} is listed twice"
        seen.add(purpose)
    return ""


def _subject_device_problem(
    role: Role, purposes: Sequence[str], seal_fingerprint: str | None
) -> tuple[str, str] | None:
    """What makes a token for a subjects' portal device (role kiosk or portal) one the platform
    must not sign or accept, with the field at fault; None when nothing does (or the role is
    another). Such a device asks only about the subject of its session, with no consent, so its
    token carries purpose self_query alone (a kiosk token good for loan_underwriting would let
    whoever holds the kiosk underwrite loans on anyone who walks past) and the sealing key that
    subject files are sealed to."""
    if role not in SUBJECT_DEVICE_ROLES:
        return None
    if list(purposes) != [SELF_QUERY]:
        return (
            f"role {role.value!r} is a subjects' portal device: its purposes must be exactly"
            f" [{SELF_QUERY!r}], not {list(purposes)!r}",
            "purposes",
        )
    if seal_fingerprint is None:
        return (
            f"role {role.value!r} is a subjects' portal device: its token must name the"
            f" device's sealing key ({SEAL_FINGERPRINT_CLAIM!r}, SHA-256 of the raw X25519"
            " public key)",
            "seal_fingerprint",
        )
    return None


def _claim_str(payload: dict[str, Any], name: str) -> str:
    value = payload[name]
    if not isinstance(value, str):
        raise Unauthenticated(f"token claim {name!r} is {value!r}: expected a string")
    return value


def _claim_time(payload: dict[str, Any], name: str) -> datetime.datetime:
    value = payload[name]
    # bool is an int subclass; a NumericDate of true is a forgery, not the epoch plus one second.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Unauthenticated(f"token claim {name!r} is {value!r}: expected seconds since epoch")
    try:
        return datetime.datetime.fromtimestamp(value, datetime.UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise Unauthenticated(f"token claim {name!r} is {value!r}: not a usable time") from exc


def _check_nonempty(value: str, field: str) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{value!r} is not a non-empty string", field=field)


def _read_key_file(path: Path, kind: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(f"issuer {kind} key file {path} does not exist") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read issuer {kind} key file {path}: {exc.strerror}") from exc


def bearer_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """The call metadata that presents `token` to a server."""
    return ((AUTHORIZATION_KEY, BEARER_PREFIX + token),)


def bearer_token(metadata: Sequence[tuple[str, str | bytes]]) -> str | None:
    """The token in a call's 'authorization: Bearer …' metadata, or None."""
    for key, value in metadata:
        if key == AUTHORIZATION_KEY and isinstance(value, str) and value.startswith(BEARER_PREFIX):
            return value[len(BEARER_PREFIX) :].strip()
    return None

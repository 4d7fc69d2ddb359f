"""Verify OpenID Connect ID tokens from the city's identity provider for the subjects' portal.

Specs: OpenID Connect Core 1.0 §3.1.3.7 (ID token validation) and §2 (the ID token's claims),
OpenID Connect Discovery 1.0 §4 (provider configuration), RFC 7517 (JWK sets), RFC 7515 (JWS),
RFC 7519 (JWT). Signatures are checked by PyJWT; every claim rule is applied here, against an
injected clock, so each refusal names the claim that failed.
"""

from __future__ import annotations

import dataclasses
import datetime
import hmac
import ipaddress
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import jwt

from osmanthus.core.errors import ConfigError, InvalidArgument, Unauthenticated, Unavailable
from osmanthus.core.ids import validate_resident_id, validate_uscc
from osmanthus.core.types import SubjectId

__all__ = [
    "DEFAULT_ALGORITHMS",
    "DEPARTMENT_CLAIM",
    "DISCOVERY_PATH",
    "LOOPBACK_NAMES",
    "IdTokenRefused",
    "IdTokenVerifier",
    "IdentityProviderUnavailable",
    "JwksSource",
    "NoRedirect",
    "PortalIdentity",
    "ProviderKeys",
    "check_provider_url",
    "fetch_json",
    "is_loopback",
]

#: asymmetric algorithms only (Core §3.1.3.7 items 6-8); "none" and HMAC are never accepted
DEFAULT_ALGORITHMS = ("ES256", "RS256", "EdDSA")
_REFUSED_ALGORITHMS = frozenset({"none", "HS256", "HS384", "HS512"})
#: the clock skew tolerated on exp, iat, nbf and auth_time, and its upper bound
DEFAULT_LEEWAY_S = 60.0
MAX_LEEWAY_S = 300.0
#: Discovery 1.0 §4: appended to the issuer (its trailing "/" removed)
DISCOVERY_PATH = "/.well-known/openid-configuration"
#: responses from the provider are small; a larger one is refused unread
MAX_DOCUMENT_BYTES = 256 * 1024
#: an ID token larger than this is refused before it is parsed
MAX_ID_TOKEN_BYTES = 16 * 1024
FETCH_TIMEOUT_S = 5.0
#: an unknown kid refreshes the key set at most once per this interval, so forged kids cannot
#: make the portal hammer the provider
MIN_REFRESH_INTERVAL_S = 60.0
#: keys are fetched again after this long even when known, so a key the provider withdrew
#: (rotated out or compromised) stops being accepted
MAX_KEYS_AGE_S = 3600.0
#: Core §2: sub is at most 255 ASCII characters
MAX_SUB_LENGTH = 255
#: host names that are loopback besides the addresses themselves (RFC 6761 §6.3)
LOOPBACK_NAMES = frozenset({"localhost"})
#: the claim naming the department a signed-in officer works for (the portal's department
#: face admits only officers of its own department; a subject's token has no such claim)
DEPARTMENT_CLAIM = "osmanthus_department"
#: a department id is a short name (osmanthus.core.peers.validate_name allows 64 characters)
MAX_DEPARTMENT_CLAIM_CHARS = 64


class IdTokenRefused(Unauthenticated):
    """An ID token failed verification; `field` names the claim or header parameter."""


class IdentityProviderUnavailable(Unavailable):
    """The identity provider's configuration or keys could not be fetched."""


@dataclass(frozen=True, slots=True)
class PortalIdentity:
    """The verified claims the portal needs about who signed in."""

    issuer: str
    #: the provider's stable identifier of the person (Core §2 `sub`)
    sub: str
    #: the person's resident identity number (GB 11643), validated; kept out of the repr so a
    #: logged identity never shows it
    resident_id: SubjectId = dataclasses.field(repr=False)
    #: the enterprise's unified social credit code when a legal representative signs in for it
    credit_code: SubjectId | None
    name: str | None
    auth_time: datetime.datetime | None
    expires_at: datetime.datetime
    #: the department of an officer (claim DEPARTMENT_CLAIM), None for anyone else
    department: str | None = None


class JwksSource(Protocol):
    """Where the verifier finds the provider's signing key named by a token's `kid`."""

    def key(self, kid: str) -> jwt.PyJWK:
        """Return the key with this kid or raise IdTokenRefused(field="kid")."""
        ...


def is_loopback(host: str | None) -> bool:
    """Whether `host` (a name, or an IPv4/IPv6 address without brackets) is this machine."""
    if host is None:
        return False
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_provider_url(url: str, *, allow_loopback_http: bool, field: str) -> str:
    """Return `url` if it is https (or http to a loopback host when allowed), else ConfigError.

    Core §3.1.3.7 item 6 relies on TLS server validation for the keys' authenticity; plain http
    is allowed only to 127.0.0.1/::1/localhost, for tests and the demo, and only on request.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.username or parts.password or parts.fragment or not parts.hostname:
        raise ConfigError(f"{url!r} is not a usable provider URL", field=field)
    if parts.scheme == "https":
        return url
    if parts.scheme == "http" and is_loopback(parts.hostname):
        if allow_loopback_http:
            return url
        raise ConfigError(
            f"{url!r} is plain http; pass allow_loopback_http=True to allow it on loopback",
            field=field,
        )
    raise ConfigError(f"{url!r} must use https", field=field)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    """A urllib handler that follows no redirect."""

    # a redirect could lead from https to http or to another host; the provider's URLs are
    # configured exactly, so any redirect is refused
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def fetch_json(url: str, *, timeout_s: float, what: str) -> dict[str, Any]:
    """GET a JSON object from the provider (no redirects, no proxy for loopback, size-capped);
    IdentityProviderUnavailable naming `what` otherwise."""
    host = urllib.parse.urlsplit(url).hostname or ""
    handlers: list[urllib.request.BaseHandler] = [NoRedirect()]
    if is_loopback(host):
        # an environment proxy must not see (or answer for) a loopback provider
        handlers.append(urllib.request.ProxyHandler({}))
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with opener.open(request, timeout=timeout_s) as response:
            if response.status != 200:
                raise IdentityProviderUnavailable(f"{what} at {url} answered {response.status}")
            body = response.read(MAX_DOCUMENT_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise IdentityProviderUnavailable(f"{what} at {url} answered {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise IdentityProviderUnavailable(f"{what} at {url} unreachable: {exc}") from None
    if len(body) > MAX_DOCUMENT_BYTES:
        raise IdentityProviderUnavailable(f"{what} at {url} exceeds {MAX_DOCUMENT_BYTES} bytes")
    try:
        document = json.loads(body)
    except ValueError:
        raise IdentityProviderUnavailable(f"{what} at {url} is not JSON") from None
    if not isinstance(document, dict):
        raise IdentityProviderUnavailable(f"{what} at {url} is not a JSON object")
    return document


def _parse_jwks(document: Mapping[str, Any]) -> dict[str, jwt.PyJWK]:
    """RFC 7517 §5: keep the usable signature keys by kid; symmetric and ambiguous ones never."""
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise IdentityProviderUnavailable("the provider's JWKS has no 'keys' list")
    keys: dict[str, jwt.PyJWK] = {}
    duplicated: set[str] = set()
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        kid = entry.get("kid")
        # RFC 7517 §4.2: a key for encryption is not a signing key; "oct" keys are shared
        # secrets, which a public key set must never make acceptable
        if (
            not isinstance(kid, str)
            or entry.get("use", "sig") != "sig"
            or entry.get("kty") == "oct"
        ):
            continue
        try:
            key = jwt.PyJWK(entry)
        except jwt.PyJWTError:
            continue  # an algorithm or curve PyJWT cannot use: not ours to verify with
        if kid in keys:
            duplicated.add(kid)
        keys[kid] = key
    for kid in duplicated:
        # two keys under one kid: which one signed is ambiguous, so neither is trusted
        del keys[kid]
    return keys


class ProviderKeys:
    """The provider's signing keys, found through Discovery and refreshed to follow rotation."""

    def __init__(
        self,
        *,
        issuer: str,
        allow_loopback_http: bool = False,
        timeout_s: float = FETCH_TIMEOUT_S,
        min_refresh_interval_s: float = MIN_REFRESH_INTERVAL_S,
        max_keys_age_s: float = MAX_KEYS_AGE_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.issuer = check_provider_url(
            issuer, allow_loopback_http=allow_loopback_http, field="issuer"
        )
        if not 0 < timeout_s <= 60:
            raise InvalidArgument("must be in (0, 60] seconds", field="timeout_s")
        if min_refresh_interval_s < 1:
            raise InvalidArgument("must be at least 1 second", field="min_refresh_interval_s")
        self._allow_loopback_http = allow_loopback_http
        self._timeout_s = timeout_s
        self._min_refresh_s = min_refresh_interval_s
        self._max_age_s = max_keys_age_s
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._jwks_uri: str | None = None
        self._failed = False

    def _discover(self) -> str:
        # Discovery 1.0 §4: strip a trailing "/" from the issuer, then append the path
        url = self.issuer.rstrip("/") + DISCOVERY_PATH
        document = fetch_json(url, timeout_s=self._timeout_s, what="the provider configuration")
        # Discovery 1.0 §4.3: the issuer in the document MUST be exactly the one configured
        if document.get("issuer") != self.issuer:
            raise ConfigError(
                f"the provider configuration names issuer {document.get('issuer')!r}, "
                f"not {self.issuer!r}",
                field="issuer",
            )
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise ConfigError("the provider configuration has no jwks_uri", field="jwks_uri")
        return check_provider_url(
            jwks_uri, allow_loopback_http=self._allow_loopback_http, field="jwks_uri"
        )

    def _refresh(self) -> None:
        # the attempt counts even if it fails, so a provider outage is not retried per token
        self._fetched_at = self._monotonic()
        self._failed = True
        if self._jwks_uri is None:
            self._jwks_uri = self._discover()
        document = fetch_json(self._jwks_uri, timeout_s=self._timeout_s, what="the JWKS")
        self._keys = _parse_jwks(document)
        self._failed = False

    def key(self, kid: str) -> jwt.PyJWK:
        """Return the key named `kid`, fetching the key set at most once per refresh interval."""
        with self._lock:
            now = self._monotonic()
            age = None if self._fetched_at is None else now - self._fetched_at
            if age is None or age >= self._max_age_s:
                self._keys = {}
                self._refresh()
            elif kid not in self._keys and age >= self._min_refresh_s:
                # an unknown kid is how key rotation shows (Core §10.1.1): fetch again, once
                self._refresh()
            found = self._keys.get(kid)
            failed = self._failed
        if found is None and failed:
            raise IdentityProviderUnavailable(
                f"the provider's keys could not be fetched; the next attempt is at most "
                f"{self._min_refresh_s:g} s away"
            )
        if found is None:
            raise IdTokenRefused(
                f"the token is signed with key {kid!r}, which the provider does not publish "
                f"(the key set is fetched again at most every {self._min_refresh_s:g} s)",
                field="kid",
            )
        return found


def _numeric_date(claims: Mapping[str, Any], name: str, *, required: bool) -> float | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise IdTokenRefused("the claim is missing", field=name)
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise IdTokenRefused("must be a NumericDate (seconds since the epoch)", field=name)
    return float(value)


def _utc(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)


class IdTokenVerifier:
    """Verify an ID token per OpenID Connect Core 1.0 §3.1.3.7 and return who signed in."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        keys: JwksSource,
        algorithms: Iterable[str] = DEFAULT_ALGORITHMS,
        leeway_s: float = DEFAULT_LEEWAY_S,
        also_trusted_audiences: Iterable[str] = (),
        resident_id_claim: str = "resident_id",
        credit_code_claim: str = "credit_code",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not issuer:
            raise InvalidArgument("must name the provider's issuer", field="issuer")
        if not audience:
            raise InvalidArgument("must be the portal's client id", field="audience")
        allowed = tuple(algorithms)
        refused = _REFUSED_ALGORITHMS.intersection(allowed)
        if refused or not allowed:
            raise InvalidArgument(
                f"must name asymmetric algorithms only, not {sorted(refused) or 'nothing'}",
                field="algorithms",
            )
        if not 0 <= leeway_s <= MAX_LEEWAY_S:
            raise InvalidArgument(f"must be in [0, {MAX_LEEWAY_S:g}] seconds", field="leeway_s")
        self.issuer = issuer
        self.audience = audience
        self._keys = keys
        self._algorithms = allowed
        self._leeway = leeway_s
        self._trusted_audiences = frozenset({audience, *also_trusted_audiences})
        self._resident_claim = resident_id_claim
        self._credit_claim = credit_code_claim
        self._clock = clock
        self._jws = jwt.PyJWS(algorithms=list(allowed))

    def _signed_claims(self, token: str) -> dict[str, Any]:
        if not isinstance(token, str) or len(token) > MAX_ID_TOKEN_BYTES:
            raise IdTokenRefused(
                f"must be a string of at most {MAX_ID_TOKEN_BYTES} bytes", field="id_token"
            )
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise IdTokenRefused(f"is not a compact JWS: {exc}", field="id_token") from None
        alg = header.get("alg")
        if alg not in self._algorithms:
            # Core §3.1.3.7 item 7: only the algorithms agreed with the provider; "none" and
            # HMAC (whose "secret" an attacker could take from the public key) never
            raise IdTokenRefused(
                f"algorithm {alg!r} is not accepted (accepted: {', '.join(self._algorithms)})",
                field="alg",
            )
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise IdTokenRefused("the header names no key id", field="kid")
        key = self._keys.key(kid)
        try:
            # RFC 7515 §5.2: PyJWT checks the signature, the key's own algorithm and "crit"
            decoded = self._jws.decode_complete(token, key=key, algorithms=[alg])
        except jwt.InvalidSignatureError:
            raise IdTokenRefused(
                f"the signature does not verify under key {kid!r}", field="signature"
            ) from None
        except jwt.PyJWTError as exc:
            raise IdTokenRefused(f"cannot be verified: {exc}", field="id_token") from None
        try:
            claims = json.loads(decoded["payload"])
        except ValueError:
            raise IdTokenRefused("the payload is not JSON", field="id_token") from None
        if not isinstance(claims, dict):
            raise IdTokenRefused("the payload is not a JSON object", field="id_token")
        return claims

    def _check_audience(self, claims: Mapping[str, Any]) -> None:
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud
        if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
            raise IdTokenRefused("must be a string or a list of strings", field="aud")
        # Core §3.1.3.7 item 3: the client must be an audience, and no untrusted one may be
        if self.audience not in audiences:
            raise IdTokenRefused(f"does not include this portal ({self.audience!r})", field="aud")
        untrusted = sorted(set(audiences) - self._trusted_audiences)
        if untrusted:
            raise IdTokenRefused(f"includes untrusted audiences {untrusted}", field="aud")
        azp = claims.get("azp")
        # items 4-5: with several audiences azp must be present; when present it must be us
        if (len(audiences) > 1 and azp is None) or (azp is not None and azp != self.audience):
            raise IdTokenRefused(f"must be {self.audience!r}, got {azp!r}", field="azp")

    def _check_times(self, claims: Mapping[str, Any], max_age_s: float | None) -> float:
        now = self._clock()
        exp = _numeric_date(claims, "exp", required=True)
        assert exp is not None
        # item 9: the current time must be before exp
        if now >= exp + self._leeway:
            raise IdTokenRefused(f"the token expired at {_utc(exp).isoformat()}", field="exp")
        iat = _numeric_date(claims, "iat", required=True)
        assert iat is not None
        # item 10: a token issued in the future comes from a wrong clock or a forger
        if iat > now + self._leeway:
            raise IdTokenRefused(f"issued in the future ({_utc(iat).isoformat()})", field="iat")
        # RFC 7519 §4.1.5
        nbf = _numeric_date(claims, "nbf", required=False)
        if nbf is not None and now + self._leeway < nbf:
            raise IdTokenRefused(f"not valid before {_utc(nbf).isoformat()}", field="nbf")
        auth_time = _numeric_date(claims, "auth_time", required=max_age_s is not None)
        # item 13: with max_age requested, the sign-in must be recent enough
        if (
            max_age_s is not None
            and auth_time is not None
            and now - auth_time > max_age_s + self._leeway
        ):
            raise IdTokenRefused(f"the sign-in is older than {max_age_s:g} s", field="auth_time")
        return exp

    def verify(
        self, token: str, *, nonce: str | None = None, max_age_s: float | None = None
    ) -> PortalIdentity:
        """Return the identity in `token` or raise IdTokenRefused naming the failed claim.

        `nonce` is the value the portal sent in the authentication request (Core §3.1.2.1); pass
        it whenever one was sent. `max_age_s` is the max_age the request asked for, if any.
        """
        claims = self._signed_claims(token)
        # item 2: the issuer must match exactly
        if claims.get("iss") != self.issuer:
            raise IdTokenRefused(
                f"is {claims.get('iss')!r}, not the configured {self.issuer!r}", field="iss"
            )
        self._check_audience(claims)
        exp = self._check_times(claims, max_age_s)
        # item 11: the nonce binds the token to this browser's authentication request
        if nonce is not None:
            got = claims.get("nonce")
            if not isinstance(got, str) or not hmac.compare_digest(
                got.encode("utf-8"), nonce.encode("utf-8")
            ):
                raise IdTokenRefused("does not match the one this session sent", field="nonce")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or len(sub) > MAX_SUB_LENGTH:
            raise IdTokenRefused(
                f"must be a non-empty string of at most {MAX_SUB_LENGTH} characters", field="sub"
            )
        resident_id = self._identifier(claims, self._resident_claim, validate_resident_id, True)
        assert resident_id is not None
        credit_code = self._identifier(claims, self._credit_claim, validate_uscc, False)
        name = claims.get("name")
        auth_time = claims.get("auth_time")
        department = claims.get(DEPARTMENT_CLAIM)
        if department is not None and (
            not isinstance(department, str)
            or not department
            or len(department) > MAX_DEPARTMENT_CLAIM_CHARS
        ):
            raise IdTokenRefused(
                f"must be a department id of 1 to {MAX_DEPARTMENT_CLAIM_CHARS} characters",
                field=DEPARTMENT_CLAIM,
            )
        return PortalIdentity(
            issuer=self.issuer,
            sub=sub,
            resident_id=resident_id,
            credit_code=credit_code,
            name=name if isinstance(name, str) else None,
            auth_time=_utc(float(auth_time)) if isinstance(auth_time, int | float) else None,
            expires_at=_utc(exp),
            department=department,
        )

    @staticmethod
    def _identifier(
        claims: Mapping[str, Any],
        claim: str,
        validate: Callable[..., SubjectId],
        required: bool,
    ) -> SubjectId | None:
        value = claims.get(claim)
        if value is None:
            if required:
                raise IdTokenRefused("the claim is missing", field=claim)
            return None
        if not isinstance(value, str):
            raise IdTokenRefused("must be a string", field=claim)
        try:
            return validate(value, field=claim)
        except InvalidArgument as exc:
            # the validator's message names the rule, never the whole identifier
            raise IdTokenRefused(exc.message, field=claim) from None

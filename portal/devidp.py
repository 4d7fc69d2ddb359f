"""A small local OpenID provider for tests and the demo: discovery, JWKS and ID tokens on demand.

It authenticates no one: `mint_id_token` signs whatever identity it is asked for, and its
sign-in page (/authorize) lists demo identities with a button each. It listens on 127.0.0.1
only, over plain http, which a verifier accepts only with allow_loopback_http=True. Its keys
are EC P-256 (ES256, RFC 7518 §3.4), named by their RFC 7638 thumbprint. The authorization
code flow follows OpenID Connect Core 1.0 §3.1 and RFC 6749 §4.1, with PKCE required
(RFC 7636, S256 only).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import secrets
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from portal.oidc import DEPARTMENT_CLAIM, DISCOVERY_PATH

__all__ = [
    "AUTHORIZE_PATH",
    "JWKS_PATH",
    "TOKEN_PATH",
    "DemoIdentity",
    "DevIdentityProvider",
    "DevSigningKey",
    "jwk_thumbprint",
]

JWKS_PATH = "/jwks.json"
AUTHORIZE_PATH = "/authorize"
TOKEN_PATH = "/token"
DEV_CLIENT_ID = "osmanthus-portal"
DEFAULT_TOKEN_LIFETIME_S = 300
#: RFC 6749 §4.1.2: a code is short-lived (10 minutes at most is recommended)
CODE_LIFETIME_S = 60.0
#: a POST body larger than this is refused unread
MAX_FORM_BYTES = 16 * 1024
#: RFC 7636 §4.1: 43 to 128 unreserved characters
_VERIFIER_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 §3: SHA-256 over the required members, sorted, without whitespace."""
    required = {
        "EC": ("crv", "kty", "x", "y"),
        "RSA": ("e", "kty", "n"),
        "OKP": ("crv", "kty", "x"),
    }
    members = {name: jwk[name] for name in required[jwk["kty"]]}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode("utf-8")
    return _b64url(hashlib.sha256(canonical).digest())


@dataclass(frozen=True)
class DevSigningKey:
    """An EC P-256 signing key and its public JWK (kid = thumbprint)."""

    private_key: ec.EllipticCurvePrivateKey
    kid: str
    public_jwk: dict[str, Any] = field(repr=False)

    @classmethod
    def generate(cls) -> DevSigningKey:
        """A fresh key, as the provider makes on start and on rotation."""
        private_key = ec.generate_private_key(ec.SECP256R1())
        public = ECAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
        kid = jwk_thumbprint(public)
        return cls(private_key, kid, {**public, "kid": kid, "use": "sig", "alg": "ES256"})


@dataclass(frozen=True)
class DemoIdentity:
    """Someone the demo sign-in page offers: a person, or an enterprise's legal representative
    (a person with the enterprise's credit code)."""

    label: str
    subject: str
    resident_id: str
    name: str | None = None
    credit_code: str | None = None
    #: an officer of this department (the ID token carries it in DEPARTMENT_CLAIM), for the
    #: portal's department face; None for a citizen or a legal representative
    department: str | None = None


@dataclass(frozen=True)
class _Grant:
    """An authorization code issued and not yet redeemed (RFC 6749 §4.1.2)."""

    client_id: str
    redirect_uri: str
    code_challenge: str
    nonce: str | None
    identity: DemoIdentity
    expires_at: float


class _AuthorizeError(Exception):
    """A request the provider must not redirect back for (RFC 6749 §4.1.2.1: a bad client or
    redirect_uri is shown to the user, never sent to an unverified redirect_uri)."""


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        provider = self.server.provider
        path, _, query = self.path.partition("?")
        provider.record_request(path)
        if path == DISCOVERY_PATH:
            body = provider.discovery_document()
        elif path == JWKS_PATH:
            body = provider.jwks()
        elif path == AUTHORIZE_PATH:
            self._authorize_page(dict(urllib.parse.parse_qsl(query)))
            return
        else:
            self.send_error(404)
            return
        self._json(200, body)

    def do_POST(self) -> None:
        provider = self.server.provider
        path = self.path.split("?", 1)[0]
        provider.record_request(path)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_FORM_BYTES:
            self.send_error(413)
            return
        form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode("utf-8", "replace")))
        if path == AUTHORIZE_PATH:
            try:
                location = provider.approve(form)
            except _AuthorizeError as exc:
                self._html(400, f"<p>{html.escape(str(exc))}</p>")
                return
            self.send_response(303)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == TOKEN_PATH:
            status, body = provider.token_response(form)
            self._json(status, body)
        else:
            self.send_error(404)

    def _authorize_page(self, params: dict[str, str]) -> None:
        try:
            self._html(200, self.server.provider.sign_in_page(params))
        except _AuthorizeError as exc:
            self._html(400, f"<p>{html.escape(str(exc))}</p>")

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        # RFC 6749 §5.1: token responses must not be cached
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def _html(self, status: int, body: str) -> None:
        page = (
            '<!DOCTYPE html><html lang="zh-CN"><head><meta charset="utf-8">'
            "<title>演示身份提供方 Demo identity provider</title></head><body>"
            f"{body}</body></html>"
        )
        data = page.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Security-Policy", "default-src 'none'; form-action *")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests read request counts, not access logs


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    provider: DevIdentityProvider


class DevIdentityProvider:
    """An OpenID provider on 127.0.0.1 that signs ID tokens for any subject asked for.

    Use as a context manager: the server runs from `__enter__` to `__exit__`.
    """

    def __init__(
        self,
        *,
        client_id: str = DEV_CLIENT_ID,
        identities: Sequence[DemoIdentity] = (),
        redirect_uris: Sequence[str] = (),
    ) -> None:
        self.client_id = client_id
        self.identities: list[DemoIdentity] = list(identities)
        self.redirect_uris: set[str] = set(redirect_uris)
        self._codes: dict[str, _Grant] = {}
        #: tests: when set, /token answers with the token this returns for the claims it
        #: would have signed (a forged, expired or wrong-audience token) instead
        self.unsafe_id_token: Callable[[dict[str, Any]], str] | None = None
        self._lock = threading.Lock()
        self._published: list[DevSigningKey] = [DevSigningKey.generate()]
        self._current = self._published[0]
        self._requests: Counter[str] = Counter()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- the server ---------------------------------------------------------------------------

    def __enter__(self) -> DevIdentityProvider:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Listen on 127.0.0.1, on a free port."""
        server = _Server(("127.0.0.1", 0), _Handler)
        server.provider = self
        self._server = server
        # a short poll interval makes `stop` prompt (shutdown waits for the next poll)
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="dev-idp", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    @property
    def issuer(self) -> str:
        """The issuer URL, `http://127.0.0.1:<port>`."""
        if self._server is None:
            raise RuntimeError("the provider is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def record_request(self, path: str) -> None:
        """Count a request (tests check the verifier does not hammer the provider)."""
        with self._lock:
            self._requests[path] += 1

    def request_count(self, path: str = JWKS_PATH) -> int:
        """How many GET requests `path` has had."""
        with self._lock:
            return self._requests[path]

    def discovery_document(self) -> dict[str, Any]:
        """OpenID Connect Discovery 1.0 §3 metadata."""
        return {
            "issuer": self.issuer,
            "jwks_uri": self.issuer + JWKS_PATH,
            "authorization_endpoint": self.issuer + AUTHORIZE_PATH,
            "token_endpoint": self.issuer + TOKEN_PATH,
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none"],
            "scopes_supported": ["openid"],
        }

    # -- the authorization code flow ----------------------------------------------------------

    def register_redirect_uri(self, uri: str) -> None:
        """Accept `uri` as a client redirect_uri (exact match, RFC 6749 §3.1.2)."""
        with self._lock:
            self.redirect_uris.add(uri)

    def add_identity(self, identity: DemoIdentity) -> None:
        """Offer one more identity on the sign-in page."""
        with self._lock:
            self.identities.append(identity)

    def _check_request(self, params: dict[str, str]) -> None:
        if params.get("client_id") != self.client_id:
            raise _AuthorizeError("unknown client_id")
        with self._lock:
            known = params.get("redirect_uri") in self.redirect_uris
        if not known:
            raise _AuthorizeError("redirect_uri is not registered for this client")
        if params.get("response_type") != "code":
            raise _AuthorizeError("response_type must be 'code'")
        if "openid" not in params.get("scope", "").split():
            raise _AuthorizeError("scope must include 'openid'")
        # RFC 7636 §4.4.1 and RFC 9700 §2.1.1: PKCE is required, and only S256
        if params.get("code_challenge_method") != "S256" or not params.get("code_challenge"):
            raise _AuthorizeError("PKCE with code_challenge_method S256 is required")
        if not params.get("state"):
            raise _AuthorizeError("state is required")

    def sign_in_page(self, params: dict[str, str]) -> str:
        """The demo sign-in page: one form and button per demo identity."""
        self._check_request(params)
        carried = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
            for k, v in params.items()
            if k
            in (
                "client_id",
                "redirect_uri",
                "response_type",
                "scope",
                "state",
                "nonce",
                "code_challenge",
                "code_challenge_method",
            )
        )
        with self._lock:
            identities = list(self.identities)
        forms = "".join(
            f'<li><form method="post" action="{AUTHORIZE_PATH}">{carried}'
            f'<input type="hidden" name="identity" value="{index}">'
            f'<button type="submit" id="idp-identity-{index}">{html.escape(identity.label)}'
            "</button></form></li>"
            for index, identity in enumerate(identities)
        )
        return (
            "<h1>演示身份提供方 Demo identity provider</h1>"
            "<p>此页面不验证任何人，仅供测试和演示。 This page authenticates no one: tests and "
            "the demo only.</p>"
            f"<ul>{forms or '<li>没有演示身份 No demo identities</li>'}</ul>"
        )

    def approve(self, form: dict[str, str]) -> str:
        """Issue a code for the chosen identity; the redirect back (RFC 6749 §4.1.2)."""
        self._check_request(form)
        with self._lock:
            try:
                identity = self.identities[int(form.get("identity", ""))]
            except (ValueError, IndexError):
                raise _AuthorizeError("no such demo identity") from None
            code = secrets.token_urlsafe(32)
            self._codes[code] = _Grant(
                client_id=form["client_id"],
                redirect_uri=form["redirect_uri"],
                code_challenge=form["code_challenge"],
                nonce=form.get("nonce") or None,
                identity=identity,
                expires_at=time.monotonic() + CODE_LIFETIME_S,
            )
        query = urllib.parse.urlencode({"code": code, "state": form["state"]})
        return f"{form['redirect_uri']}?{query}"

    def token_response(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """The token endpoint (Core §3.1.3.3; errors RFC 6749 §5.2)."""
        if form.get("grant_type") != "authorization_code":
            return 400, {"error": "unsupported_grant_type"}
        with self._lock:
            # single use (RFC 6749 §4.1.2): a code is gone after its first redemption attempt
            grant = self._codes.pop(form.get("code", ""), None)
        if grant is None or time.monotonic() > grant.expires_at:
            return 400, {"error": "invalid_grant"}
        if form.get("client_id") != grant.client_id:
            return 400, {"error": "invalid_client"}
        if form.get("redirect_uri") != grant.redirect_uri:
            return 400, {"error": "invalid_grant", "error_description": "redirect_uri"}
        verifier = form.get("code_verifier", "")
        if not 43 <= len(verifier) <= 128 or not set(verifier) <= _VERIFIER_CHARS:
            return 400, {"error": "invalid_request", "error_description": "code_verifier"}
        challenge = _b64url(hashlib.sha256(verifier.encode("ascii")).digest())
        if not hmac.compare_digest(challenge, grant.code_challenge):
            return 400, {"error": "invalid_grant", "error_description": "code_verifier"}
        identity = grant.identity
        claims: dict[str, Any] = {
            "subject": identity.subject,
            "resident_id": identity.resident_id,
            "credit_code": identity.credit_code,
            "name": identity.name,
            "nonce": grant.nonce,
        }
        if identity.department is not None:
            claims["extra"] = {DEPARTMENT_CLAIM: identity.department}
        hook = self.unsafe_id_token
        id_token = hook(claims) if hook is not None else self.mint_id_token(**claims)
        return 200, {
            "access_token": secrets.token_urlsafe(32),
            "token_type": "Bearer",
            "expires_in": DEFAULT_TOKEN_LIFETIME_S,
            "id_token": id_token,
        }

    def jwks(self) -> dict[str, Any]:
        """The published key set (RFC 7517 §5)."""
        with self._lock:
            return {"keys": [key.public_jwk for key in self._published]}

    # -- keys ---------------------------------------------------------------------------------

    @property
    def current_kid(self) -> str:
        """The kid of the key new tokens are signed with."""
        return self._current.kid

    def rotate(self) -> DevSigningKey:
        """Sign with a new key from now on; the old one stays published until `retire`."""
        key = DevSigningKey.generate()
        with self._lock:
            self._published.append(key)
            self._current = key
        return key

    def retire(self, kid: str) -> None:
        """Stop publishing the key `kid` (not the current one)."""
        with self._lock:
            if kid == self._current.kid:
                raise ValueError("the current signing key cannot be retired")
            self._published = [key for key in self._published if key.kid != kid]

    # -- tokens -------------------------------------------------------------------------------

    def claims(
        self,
        *,
        subject: str,
        resident_id: str | None = None,
        credit_code: str | None = None,
        name: str | None = None,
        nonce: str | None = None,
        audience: str | list[str] | None = None,
        issued_at: float | None = None,
        lifetime_s: float = DEFAULT_TOKEN_LIFETIME_S,
        extra: dict[str, Any] | None = None,
        omit: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        """The claims of an ID token (Core §2); `omit` drops claims, `extra` adds or overrides."""
        iat = int(time.time() if issued_at is None else issued_at)
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.client_id if audience is None else audience,
            "iat": iat,
            "exp": int(iat + lifetime_s),
            "auth_time": iat,
        }
        optional = {
            "resident_id": resident_id,
            "credit_code": credit_code,
            "name": name,
            "nonce": nonce,
        }
        claims.update({k: v for k, v in optional.items() if v is not None})
        claims.update(extra or {})
        for name_ in omit:
            claims.pop(name_, None)
        return claims

    def mint_id_token(
        self,
        *,
        unsafe_signing_key: DevSigningKey | None = None,
        header: dict[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        """An ES256 ID token with `claims(**claims)`, signed by the current key.

        `unsafe_signing_key` signs with another key (a forgery unless published); `header`
        overrides header parameters (`{"kid": None}` drops the kid).
        """
        key = unsafe_signing_key or self._current
        headers: dict[str, Any] = {"kid": key.kid, "typ": "JWT", **(header or {})}
        if headers.get("kid") is None:
            headers.pop("kid")
        return jwt.encode(
            self.claims(**claims), key.private_key, algorithm="ES256", headers=headers
        )

    def unsafe_mint_unsigned(self, **claims: Any) -> str:
        """An attack token: alg "none" (RFC 7519 §6), no signature."""
        header = {"alg": "none", "typ": "JWT", "kid": self.current_kid}
        return _compact(header, self.claims(**claims), b"")

    def unsafe_mint_hs256_with_public_key(self, **claims: Any) -> str:
        """An attack token: HS256 keyed with the published public JWK (algorithm confusion)."""
        header = {"alg": "HS256", "typ": "JWT", "kid": self.current_kid}
        secret = json.dumps(self._current.public_jwk).encode("utf-8")
        signing_input = _signing_input(header, self.claims(**claims))
        signature = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
        return f"{signing_input}.{_b64url(signature)}"


def _signing_input(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return (
        _b64url(json.dumps(header).encode("utf-8"))
        + "."
        + _b64url(json.dumps(claims).encode("utf-8"))
    )


def _compact(header: dict[str, Any], claims: dict[str, Any], signature: bytes) -> str:
    return f"{_signing_input(header, claims)}.{_b64url(signature)}"

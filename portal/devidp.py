"""A small local OpenID provider for tests and the demo: discovery, JWKS and ID tokens on demand.

It authenticates no one: `mint_id_token` signs whatever identity it is asked for. It listens on
127.0.0.1 only, over plain http, which a verifier accepts only with allow_loopback_http=True.
Its keys are EC P-256 (ES256, RFC 7518 §3.4), named by their RFC 7638 thumbprint.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from portal.oidc import DISCOVERY_PATH

__all__ = ["JWKS_PATH", "DevIdentityProvider", "DevSigningKey", "jwk_thumbprint"]

JWKS_PATH = "/jwks.json"
DEV_CLIENT_ID = "osmanthus-portal"
DEFAULT_TOKEN_LIFETIME_S = 300


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


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        provider = self.server.provider
        path = self.path.split("?", 1)[0]
        provider.record_request(path)
        if path == DISCOVERY_PATH:
            body = provider.discovery_document()
        elif path == JWKS_PATH:
            body = provider.jwks()
        else:
            self.send_error(404)
            return
        data = json.dumps(body).encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
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

    def __init__(self, *, client_id: str = DEV_CLIENT_ID) -> None:
        self.client_id = client_id
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
        """OpenID Connect Discovery 1.0 §3 metadata (the authorization flow is to come)."""
        return {
            "issuer": self.issuer,
            "jwks_uri": self.issuer + JWKS_PATH,
            "authorization_endpoint": self.issuer + "/authorize",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
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

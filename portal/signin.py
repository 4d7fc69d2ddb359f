"""Online sign-in: the OpenID Connect authorization-code flow with state, nonce and PKCE (S256).

Specs: OpenID Connect Core 1.0 §3.1 (authorization code flow: §3.1.2.1 the request, §3.1.2.5
the response, §3.1.3 the token endpoint), RFC 6749 §4.1 (authorization code grant, §10.12 CSRF
and `state`), RFC 7636 (PKCE: §4.1 code_verifier of 43-128 unreserved characters, §4.2 S256),
RFC 9700 §2.1.1 (PKCE for every client). The ID token is checked by portal.oidc.IdTokenVerifier
with the nonce this sign-in sent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from osmanthus.core.errors import InvalidArgument, Unauthenticated
from portal.oidc import (
    DISCOVERY_PATH,
    FETCH_TIMEOUT_S,
    MAX_DOCUMENT_BYTES,
    IdentityProviderUnavailable,
    IdTokenVerifier,
    NoRedirect,
    PortalIdentity,
    check_provider_url,
    fetch_json,
    is_loopback,
)
from portal.session import new_token

__all__ = ["OidcClient", "OidcSettings", "PendingLogin", "SignInRefused", "pkce_challenge"]

#: the path of the portal's redirect_uri
CALLBACK_PATH: Final = "/auth/callback"
#: RFC 7636 §4.1: 32 random bytes give a 43-character verifier, the minimum length
PKCE_VERIFIER_BYTES: Final = 32
STATE_BYTES: Final = 32
NONCE_BYTES: Final = 32
#: what an authorization code looks like; anything else is refused before the token request
MAX_CODE_CHARS: Final = 512


class SignInRefused(Unauthenticated):
    """The provider's answer to a sign-in was not acceptable; `field` names what failed."""


@dataclass(frozen=True, kw_only=True)
class OidcSettings:
    """The portal as a client of the city's identity provider."""

    issuer: str
    client_id: str
    #: the portal's callback, registered at the provider (public_url + /auth/callback)
    redirect_uri: str
    verifier: IdTokenVerifier
    #: plain http to a loopback provider (tests, the demo)
    allow_loopback_http: bool = False
    #: set when the provider authenticates its clients (client_secret_post, Core §9);
    #: a public client with PKCE sends none
    client_secret: str | None = field(default=None, repr=False)
    scope: str = "openid"
    timeout_s: float = FETCH_TIMEOUT_S

    def __post_init__(self) -> None:
        check_provider_url(
            self.issuer, allow_loopback_http=self.allow_loopback_http, field="issuer"
        )
        if not self.client_id:
            raise InvalidArgument("must be the portal's client id", field="client_id")
        parts = urllib.parse.urlsplit(self.redirect_uri)
        if parts.scheme not in ("https", "http") or not parts.hostname or parts.fragment:
            raise InvalidArgument("must be an absolute http(s) URL", field="redirect_uri")
        if "openid" not in self.scope.split():
            raise InvalidArgument("must include 'openid'", field="scope")


@dataclass(frozen=True, kw_only=True)
class PendingLogin:
    """A sign-in under way: what the portal sent, to check what comes back."""

    state: str = field(repr=False)
    nonce: str = field(repr=False)
    code_verifier: str = field(repr=False)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def pkce_challenge(code_verifier: str) -> str:
    """RFC 7636 §4.2: BASE64URL(SHA256(ASCII(code_verifier)))."""
    return _b64url(hashlib.sha256(code_verifier.encode("ascii")).digest())


class OidcClient:
    """Start sign-ins (the authorization URL) and finish them (code → verified identity)."""

    def __init__(self, settings: OidcSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._endpoints: tuple[str, str] | None = None

    def endpoints(self) -> tuple[str, str]:
        """(authorization_endpoint, token_endpoint) from the provider's discovery document."""
        with self._lock:
            if self._endpoints is not None:
                return self._endpoints
        s = self.settings
        url = s.issuer.rstrip("/") + DISCOVERY_PATH
        document = fetch_json(url, timeout_s=s.timeout_s, what="the provider configuration")
        if document.get("issuer") != s.issuer:
            raise IdentityProviderUnavailable(
                f"the provider configuration names issuer {document.get('issuer')!r}, "
                f"not {s.issuer!r}"
            )
        found = []
        for name in ("authorization_endpoint", "token_endpoint"):
            value = document.get(name)
            if not isinstance(value, str):
                raise IdentityProviderUnavailable(f"the provider configuration has no {name}")
            found.append(
                check_provider_url(value, allow_loopback_http=s.allow_loopback_http, field=name)
            )
        methods = document.get("code_challenge_methods_supported")
        if isinstance(methods, list) and "S256" not in methods:
            raise IdentityProviderUnavailable("the provider does not support PKCE with S256")
        with self._lock:
            self._endpoints = (found[0], found[1])
            return self._endpoints

    def begin(self) -> tuple[PendingLogin, str]:
        """A new sign-in and the URL to send the browser to (Core §3.1.2.1)."""
        authorize, _ = self.endpoints()
        pending = PendingLogin(
            state=new_token(STATE_BYTES),
            nonce=new_token(NONCE_BYTES),
            code_verifier=new_token(PKCE_VERIFIER_BYTES),
        )
        query = urllib.parse.urlencode(
            {
                "response_type": "code",
                "client_id": self.settings.client_id,
                "redirect_uri": self.settings.redirect_uri,
                "scope": self.settings.scope,
                "state": pending.state,
                "nonce": pending.nonce,
                "code_challenge": pkce_challenge(pending.code_verifier),
                "code_challenge_method": "S256",
            }
        )
        separator = "&" if urllib.parse.urlsplit(authorize).query else "?"
        return pending, f"{authorize}{separator}{query}"

    def finish(self, pending: PendingLogin, params: Mapping[str, str]) -> PortalIdentity:
        """Check the callback's `state`, redeem the code and verify the ID token's nonce.

        Raises SignInRefused (state, error, code), IdTokenRefused (the token) or
        IdentityProviderUnavailable.
        """
        state = params.get("state", "")
        # RFC 6749 §10.12: the state ties the callback to the sign-in this browser started
        if not state or not hmac.compare_digest(state.encode(), pending.state.encode()):
            raise SignInRefused(
                "the sign-in's state does not match the one this browser started", field="state"
            )
        error = params.get("error")
        if error:
            # RFC 6749 §4.1.2.1: the provider says why; shown, never trusted as HTML
            raise SignInRefused(f"the provider answered {error[:64]!r}", field="error")
        code = params.get("code", "")
        if not code or len(code) > MAX_CODE_CHARS:
            raise SignInRefused("the provider sent no usable authorization code", field="code")
        id_token = self._redeem(code, pending)
        return self.settings.verifier.verify(id_token, nonce=pending.nonce)

    def _redeem(self, code: str, pending: PendingLogin) -> str:
        """Core §3.1.3.1: POST the code with the PKCE verifier; return the ID token."""
        s = self.settings
        _, token_endpoint = self.endpoints()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": s.redirect_uri,
            "client_id": s.client_id,
            "code_verifier": pending.code_verifier,
        }
        if s.client_secret is not None:
            form["client_secret"] = s.client_secret
        document = _post_form(token_endpoint, form, timeout_s=s.timeout_s)
        if "error" in document:
            raise SignInRefused(
                f"the provider refused the code: {str(document['error'])[:64]!r}", field="code"
            )
        id_token = document.get("id_token")
        if not isinstance(id_token, str) or not id_token:
            raise SignInRefused("the token response holds no id_token", field="id_token")
        return id_token


def _post_form(url: str, form: Mapping[str, str], *, timeout_s: float) -> dict[str, Any]:
    host = urllib.parse.urlsplit(url).hostname or ""
    handlers: list[urllib.request.BaseHandler] = [NoRedirect()]
    if is_loopback(host):
        handlers.append(urllib.request.ProxyHandler({}))
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(
        url,
        data=urllib.parse.urlencode(form).encode("ascii"),
        headers={
            "Accept": "application/json",
            "Content-Type": "application/x-www-form-urlencoded",
        },
        method="POST",
    )
    try:
        with opener.open(request, timeout=timeout_s) as response:
            body = response.read(MAX_DOCUMENT_BYTES + 1)
    except urllib.error.HTTPError as exc:
        # RFC 6749 §5.2: a refused grant is 400 with a JSON error body
        body = exc.read(MAX_DOCUMENT_BYTES + 1)
        if exc.code != 400:
            raise IdentityProviderUnavailable(f"the token endpoint answered {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise IdentityProviderUnavailable(f"the token endpoint is unreachable: {exc}") from None
    if len(body) > MAX_DOCUMENT_BYTES:
        raise IdentityProviderUnavailable("the token response is too large")
    try:
        document = json.loads(body)
    except ValueError:
        raise IdentityProviderUnavailable("the token response is not JSON") from None
    if not isinstance(document, dict):
        raise IdentityProviderUnavailable("the token response is not a JSON object")
    return document

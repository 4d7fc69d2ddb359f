"""Server-side sessions in memory, CSRF synchronizer tokens, and the headers every response gets.

A session is a random 256-bit id in a cookie; everything else (who signed in, what the
federation answered about them) stays in this process's memory and is dropped on sign-out and
after the idle time-out. Nothing about a subject is written anywhere (the portal's audit log
keeps salted hashes only). OWASP Session Management and CSRF Prevention Cheat Sheets: ids from
a CSPRNG, a new id at sign-in (no fixation), HttpOnly + SameSite + Secure cookies, the
`__Host-` prefix over TLS (RFC 6265bis §4.1.3.2: Secure, Path=/, no Domain), a synchronizer
token per session checked on every POST.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from osmanthus.core.types import SubjectKind

_log = logging.getLogger(__name__)

#: the session cookie over TLS: the prefix makes browsers refuse it unless Secure, Path=/ and
#: host-only, so a sibling subdomain cannot plant or overwrite it
TLS_SESSION_COOKIE: Final = "__Host-osm_session"
#: the session cookie on plain loopback http (the demo, tests): browsers refuse __Host- without
#: Secure, and Secure cookies are not sent over http
PLAIN_SESSION_COOKIE: Final = "osm_session"
#: the short-lived cookie that carries a sign-in under way to the OIDC callback; SameSite=Lax
#: because the provider's redirect back is a cross-site top-level navigation, which a Strict
#: cookie would not come with
TLS_LOGIN_COOKIE: Final = "__Host-osm_login"
PLAIN_LOGIN_COOKIE: Final = "osm_login"
#: 32 random bytes: 256 bits (design; OWASP asks for at least 64 bits of entropy)
SESSION_ID_BYTES: Final = 32
CSRF_TOKEN_BYTES: Final = 32
#: the hidden form field every POST form carries
CSRF_FIELD: Final = "csrf_token"
#: a sign-in under way is abandoned after this long (the person is at the provider's page)
LOGIN_TIMEOUT_S: Final = 600.0
#: at most this many sessions (signed-in or signing in) are held; the oldest idle one goes
#: first, so a flood of sign-in attempts cannot exhaust the portal's memory
MAX_SESSIONS: Final = 10_000

#: sent on every response, pages, errors and static files alike
SECURITY_HEADERS: Final = {
    # nothing about a subject may stay in a browser's or a proxy's cache (design; the kiosk
    # is shared): no-store forbids storing at all, Pragma for HTTP/1.0 caches
    "cache-control": "no-store",
    "pragma": "no-cache",
    # our own scripts, styles and images only: an injected tag can load nothing and run nothing
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "object-src 'none'"
    ),
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "cross-origin-opener-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
#: the CSP of a download (Content-Disposition: attachment) instead of the site's: a file a
#: subject uploaded (a PDF that is also HTML, say) that a browser renders anyway runs no
#: script, loads nothing and counts as another origin (CSP Level 3 `sandbox` with no tokens)
DOWNLOAD_CSP: Final = "sandbox; default-src 'none'"


@dataclass(frozen=True, kw_only=True)
class Subject:
    """Whom a session may ask about: a person or an enterprise, by its validated identifier."""

    kind: SubjectKind
    #: kept out of the repr so a logged session never shows a resident id
    id: str = field(repr=False)


@dataclass(frozen=True, kw_only=True)
class Officer:
    """A department officer signed in to the portal's department face (portal.department)."""

    #: the provider's stable identifier of the officer (ID token `sub`), for the audit log
    sub: str
    department: str
    name: str | None = None


@dataclass
class Session:
    """One browser's session. `subject` is set once someone has signed in."""

    id: str = field(repr=False)
    csrf_token: str = field(repr=False)
    created_at: float
    last_seen: float
    #: the subject the pages show now
    subject: Subject | None = None
    #: every subject this sign-in may see (a legal representative: themselves and the
    #: enterprise); `subject` is always one of these
    allowed: tuple[Subject, ...] = ()
    #: "card" or "oidc"
    via: str = ""
    #: the name the provider gave, for the greeting (online only)
    display_name: str | None = None
    #: the card placement this kiosk session was opened by (kiosk only)
    card_sequence: int | None = None
    #: what the federation answered in this session (score, file), dropped with the session
    cache: dict[str, Any] = field(default_factory=dict, repr=False)
    #: the officer of a department-face session (never set together with `subject`)
    officer: Officer | None = None
    #: the consent this session just revoked, shown once on the consents page (kept here
    #: rather than in the redirect's URL, which anyone could craft)
    flash_revoked: str | None = field(default=None, repr=False)

    def may_see(self, kind: SubjectKind, subject_id: str) -> bool:
        """Whether this session's sign-in covers the subject (constant-time per comparison)."""
        return any(
            s.kind is kind and hmac.compare_digest(s.id.encode(), subject_id.encode())
            for s in self.allowed
        )

    def forget(self) -> None:
        """Drop everything about the subject (sign-out, expiry, a switch of subject)."""
        self.cache.clear()
        self.flash_revoked = None


def new_token(nbytes: int = SESSION_ID_BYTES) -> str:
    """A fresh random token (URL-safe base64 of `nbytes` bytes from the OS CSPRNG)."""
    return secrets.token_urlsafe(nbytes)


def csrf_ok(session: Session, submitted: object) -> bool:
    """Whether a POST's token is this session's synchronizer token (constant-time)."""
    if not isinstance(submitted, str) or not submitted:
        return False
    return hmac.compare_digest(session.csrf_token.encode(), submitted.encode())


class SessionStore:
    """Sessions by id, in memory, expiring after `idle_s` without a request.

    `clock` is a monotonic clock in seconds (injectable for tests). Expired sessions are
    removed on every access, so a session's data never outlives its time-out by more than the
    next request to the portal; `sweep()` can also be called on a timer.
    """

    def __init__(
        self,
        *,
        idle_s: float,
        clock: Callable[[], float] = time.monotonic,
        max_sessions: int = MAX_SESSIONS,
        on_expire: Callable[[Session], None] | None = None,
    ) -> None:
        self.idle_s = idle_s
        self._clock = clock
        self._max = max_sessions
        self._on_expire = on_expire
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def create(self) -> Session:
        """A new, empty session with its own CSRF token."""
        now = self._clock()
        session = Session(
            id=new_token(SESSION_ID_BYTES),
            csrf_token=new_token(CSRF_TOKEN_BYTES),
            created_at=now,
            last_seen=now,
        )
        evicted: list[Session] = []
        with self._lock:
            evicted.extend(self._expired_locked(now))
            while len(self._sessions) >= self._max:
                oldest = min(self._sessions.values(), key=lambda s: s.last_seen)
                evicted.append(self._sessions.pop(oldest.id))
            self._sessions[session.id] = session
        self._expired(evicted)
        return session

    def get(self, session_id: str | None, *, touch: bool = True) -> Session | None:
        """The live session with this id, or None. `touch=False` reads it without counting as
        activity (the kiosk's status poll must not keep a session alive for ever)."""
        if not session_id:
            return None
        now = self._clock()
        with self._lock:
            expired = self._expired_locked(now)
            session = self._sessions.get(session_id)
            if session is not None and touch:
                session.last_seen = now
        self._expired(expired)
        return session

    def drop(self, session: Session) -> None:
        """End a session now: it is forgotten and its id never works again."""
        with self._lock:
            self._sessions.pop(session.id, None)
        session.forget()
        session.subject = None
        session.allowed = ()
        session.officer = None

    def sweep(self) -> int:
        """Remove every expired session; how many there were."""
        with self._lock:
            expired = self._expired_locked(self._clock())
        self._expired(expired)
        return len(expired)

    def remaining_s(self, session: Session) -> float:
        """Seconds until `session` expires unless a request comes."""
        return max(0.0, session.last_seen + self.idle_s - self._clock())

    def _expired_locked(self, now: float) -> list[Session]:
        gone = [s for s in self._sessions.values() if now - s.last_seen >= self.idle_s]
        for session in gone:
            del self._sessions[session.id]
        return gone

    def _expired(self, sessions: list[Session]) -> None:
        for session in sessions:
            if self._on_expire is not None and session.subject is not None:
                self._on_expire(session)
            session.forget()
            session.subject = None
            session.allowed = ()
            session.officer = None


@dataclass(frozen=True, kw_only=True)
class CookiePolicy:
    """The names and flags of the portal's cookies (secure = served over TLS)."""

    secure: bool

    @property
    def session_name(self) -> str:
        return TLS_SESSION_COOKIE if self.secure else PLAIN_SESSION_COOKIE

    @property
    def login_name(self) -> str:
        return TLS_LOGIN_COOKIE if self.secure else PLAIN_LOGIN_COOKIE

    def session_cookie(self, value: str) -> dict[str, Any]:
        """Arguments for Response.set_cookie: HttpOnly, SameSite=Strict, Path=/, no Domain,
        no Max-Age (a browser-session cookie: the server's idle expiry is what counts)."""
        return {
            "key": self.session_name,
            "value": value,
            "path": "/",
            "httponly": True,
            "samesite": "strict",
            "secure": self.secure,
        }

    def login_cookie(self, value: str) -> dict[str, Any]:
        """The sign-in-under-way cookie: Lax so it comes back with the provider's redirect."""
        return {
            "key": self.login_name,
            "value": value,
            "path": "/",
            "httponly": True,
            "samesite": "lax",
            "secure": self.secure,
            "max_age": int(LOGIN_TIMEOUT_S),
        }


#: a path segment with this many digits in a row may be (part of) a resident id or a credit
#: code; it is never logged
_ID_LIKE: Final = re.compile(r"\d{6}")


def loggable_path(scope: Scope) -> str:
    """The request's path fit for a log line: the route's parameters as `{name}` (the router
    leaves them in the scope), and any other segment that may hold an identifier redacted.

    A path like /subjects/{subject_id}/records carries a raw resident id, which no log line
    may hold (only salted hashes, docs/caveats.md)."""
    path = str(scope.get("path", "?"))
    params = scope.get("path_params") or {}
    segments = path.split("/")
    for name, value in params.items():
        segments = [f"{{{name}}}" if s == str(value) else s for s in segments]
    return "/".join("{redacted}" if _ID_LIKE.search(s) else s for s in segments)


_FAILURE_PAGE: Final = (
    '<!DOCTYPE html><html lang="zh-CN"><head><meta charset="utf-8"><title>出错了 Error</title>'
    '</head><body><h1>出错了 <span lang="en">Something went wrong</span></h1>'
    '<p><a href="/">返回首页 <span lang="en">Back to the start</span></a></p></body></html>'
).encode()


class SecurityHeadersMiddleware:
    """Adds SECURITY_HEADERS to every HTTP response (pure ASGI, so static files and errors
    raised anywhere get them too), and answers an unhandled error with a plain page that says
    nothing about it (the traceback goes to the log, never to a shared screen)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
                if headers.get("content-disposition", "").lower().startswith("attachment"):
                    headers["content-security-policy"] = DOWNLOAD_CSP
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            _log.exception("the portal failed answering %s", loggable_path(scope))
            if started:
                raise
            await send_with_headers(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", b"text/html; charset=utf-8"),
                        (b"content-length", str(len(_FAILURE_PAGE)).encode()),
                    ],
                }
            )
            await send_with_headers({"type": "http.response.body", "body": _FAILURE_PAGE})

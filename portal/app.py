"""The subjects' portal as an ASGI app: the kiosk and the online self-service site (issue 15).

`create_app` builds a Starlette application from the portal's settings, the backend that asks
the federation (as the registered kiosk or portal device) and, in kiosk mode, the card reader;
online, from the OpenID Connect client settings. Pages are server-rendered Jinja2 templates
(autoescaped), Chinese first with English; static CSS and a small script are served from the
package (no CDN, nothing built). Every page about a subject is about the session's subject
only: a route that names another is refused (403) and audited.
"""

from __future__ import annotations

import contextlib
import datetime
import hmac
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Final, TypeVar

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from osmanthus.core.auditproofs import PartCheck
from osmanthus.core.errors import (
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    OsmanthusError,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from osmanthus.core.ids import mask_subject, validate_subject
from osmanthus.core.types import SubjectKind
from portal.auditlog import PortalAudit
from portal.backend import PortalBackend
from portal.cardreader import CardReader, CardRefused, SimulatedCardReader
from portal.cardreader import check_placement as check_card
from portal.cases import SubjectCases, page_actions
from portal.oidc import IdentityProviderUnavailable, IdTokenRefused, PortalIdentity, is_loopback
from portal.session import (
    CSRF_FIELD,
    LOGIN_TIMEOUT_S,
    CookiePolicy,
    SecurityHeadersMiddleware,
    Session,
    SessionStore,
    Subject,
    csrf_ok,
)
from portal.settings import PortalMode, PortalSettings
from portal.signin import CALLBACK_PATH, OidcClient, OidcSettings, PendingLogin, SignInRefused
from portal.views import (
    consents_view,
    lists_view,
    log_problems_view,
    missing_view,
    queries_view,
    records_view,
    score_view,
)
from portal.whoasked import check_parts
from sdk.subject import SubjectFileResult

__all__ = ["create_app"]

_HERE: Final = Path(__file__).parent
#: the pages about the session's subject, by path segment after /me
PAGES: Final = ("score", "records", "queries", "consents", "lists")
#: the simulator route's secret travels in this header (never a cookie or the URL)
SIMULATOR_HEADER: Final = "x-simulator-secret"
#: how often the kiosk's start screen asks whether a card is on the reader
KIOSK_POLL_MS: Final = 1000
#: the most a form body may hold (a revoke or sign-out form is well under 1 KiB)
MAX_FORM_BYTES: Final = 16 * 1024
#: how often expired sessions are swept away when no request comes (seconds)
SWEEP_S: Final = 5.0
T = TypeVar("T")
#: the session's cache key of the last file's "who asked" check, with the file it checked
_LOG_CHECKS_KEY: Final = "log_checks"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_HERE / "templates"),
        # every value is escaped unless a template says otherwise (none does)
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env


class _Portal:
    """The app's state and handlers (one instance per app)."""

    def __init__(
        self,
        *,
        settings: PortalSettings,
        backend: PortalBackend,
        card_reader: CardReader | None,
        identity: OidcSettings | None,
        clock: Callable[[], float],
        now: Callable[[], datetime.datetime],
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.reader = card_reader
        self.oidc = OidcClient(identity) if identity is not None else None
        self.now = now
        self.clock = clock
        self.cookies = CookiePolicy(secure=settings.secure_cookies)
        self.audit = PortalAudit(state_dir=settings.state_dir, device_id=settings.device_id)
        self.sessions = SessionStore(idle_s=settings.idle_s, clock=clock, on_expire=self._expired)
        # sign-ins under way (online): the login cookie's value → what was sent to the provider
        self.logins = SessionStore(idle_s=LOGIN_TIMEOUT_S, clock=clock)
        self.env = _environment()
        # kiosk: the last card placement used (signed in or refused), so one placement signs in
        # at most once; and the refusal shown while a refused card stays on the reader
        self._used_placement = 0
        self._refused: tuple[int, CardRefused] | None = None
        # the start page's reload (no script) and its script's poll can ask at the same time;
        # one placement must open one session, so a read-and-mark is one step
        self._card_lock = threading.Lock()

    # -- plumbing -----------------------------------------------------------------------------

    def _expired(self, session: Session) -> None:
        self.audit.record(
            event="expired",
            decision="allow",
            reason="signed out after the idle time-out",
            subject=session.subject,
        )

    def render(
        self,
        request: Request,
        template: str,
        *,
        session: Session | None = None,
        status: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        subject = session.subject if session is not None else None
        base = {
            "mode": self.settings.mode.value,
            "kiosk": self.settings.mode is PortalMode.KIOSK,
            "idle_s": int(self.settings.idle_s),
            "poll_ms": KIOSK_POLL_MS,
            "signed_in": subject is not None,
            "subject_kind": subject.kind.value if subject is not None else "",
            "subject_masked": mask_subject(subject.id) if subject is not None else "",
            "allowed": [
                {"kind": s.kind.value, "masked": mask_subject(s.id), "current": s == subject}
                for s in (session.allowed if session is not None else ())
            ],
            "display_name": session.display_name if session is not None else None,
            "csrf_field": CSRF_FIELD,
            "csrf_token": session.csrf_token if session is not None else "",
            "path": request.url.path,
            "page": "",
        }
        html = self.env.get_template(template).render({**base, **context})
        return HTMLResponse(html, status_code=status)

    def message(
        self,
        request: Request,
        *,
        status: int,
        title_zh: str,
        title_en: str,
        text_zh: str,
        text_en: str,
        detail: str = "",
        session: Session | None = None,
    ) -> HTMLResponse:
        """A page that says what went wrong, in both languages."""
        return self.render(
            request,
            "message.html",
            session=session,
            status=status,
            code=status,
            title_zh=title_zh,
            title_en=title_en,
            text_zh=text_zh,
            text_en=text_en,
            detail=detail,
        )

    def session_of(self, request: Request, *, touch: bool = True) -> Session | None:
        return self.sessions.get(request.cookies.get(self.cookies.session_name), touch=touch)

    def _clear_session_cookie(self, response: Response) -> None:
        response.delete_cookie(
            self.cookies.session_name,
            path="/",
            secure=self.settings.secure_cookies,
            httponly=True,
            samesite="strict",
        )

    def _start_session(
        self,
        response: Response,
        *,
        allowed: tuple[Subject, ...],
        via: str,
        display_name: str | None = None,
        card_sequence: int | None = None,
    ) -> Session:
        # a new id at every sign-in: an id planted before it (session fixation) is worth nothing
        session = self.sessions.create()
        session.allowed = allowed
        session.subject = allowed[0]
        session.via = via
        session.display_name = display_name
        session.card_sequence = card_sequence
        response.set_cookie(**self.cookies.session_cookie(session.id))
        return session

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await run_in_threadpool(fn, *args)

    async def form(self, request: Request) -> dict[str, str] | None:
        """The POST's urlencoded form, or None when it is too large or not a form."""
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_FORM_BYTES):
            return None
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            return None
        try:
            pairs = urllib.parse.parse_qsl(body.decode("utf-8"), strict_parsing=False)
        except UnicodeDecodeError:
            return None
        return dict(pairs)

    def csrf_refused(self, request: Request, session: Session) -> HTMLResponse:
        self.audit.record(
            event="csrf",
            decision="deny",
            reason=f"a POST to {request.url.path} without this session's CSRF token",
            subject=session.subject,
        )
        return self.message(
            request,
            status=403,
            title_zh="请求无法验证",
            title_en="This request could not be verified",
            text_zh="表单已过期或并非来自本页面，未执行任何操作。请返回后重试。",
            text_en=(
                "The form has expired or did not come from this site; nothing was done. "
                "Go back and try again."
            ),
            session=session,
        )

    async def checked_post(self, request: Request) -> tuple[Session, dict[str, str]] | Response:
        """The session and form of a POST whose CSRF token is right, or the response to send."""
        session = self.session_of(request)
        if session is None or session.subject is None:
            return RedirectResponse("/", status_code=303)
        form = await self.form(request)
        if form is None or not csrf_ok(session, form.get(CSRF_FIELD)):
            return await self.call(self.csrf_refused, request, session)
        return session, form

    def backend_error(self, request: Request, session: Session, exc: OsmanthusError) -> Response:
        """A bilingual page for a federation error (shown to the subject, who asked)."""
        if isinstance(exc, PermissionDenied):
            zh, en, status = "无权查看", "Not allowed", 403
        elif isinstance(exc, NotFound):
            zh, en, status = "未找到", "Not found", 404
        elif isinstance(exc, Unavailable | DeadlineExceeded):
            zh, en, status = "服务暂时不可用", "The service is unavailable for now", 503
        elif isinstance(exc, Unauthenticated):
            zh, en, status = "本设备未通过认证", "This device's credentials were refused", 502
        else:
            zh, en, status = "查询失败", "The query failed", 502
        return self.message(
            request,
            status=status,
            title_zh=zh,
            title_en=en,
            text_zh="请稍后再试；如问题持续，请联系工作人员。",
            text_en="Please try again later; if it persists, ask the staff.",
            detail=exc.message,
            session=session,
        )

    # -- kiosk --------------------------------------------------------------------------------

    def _kiosk_sign_in(self, response: Response) -> str:
        """Sign in whoever's card is on the reader: "signed_in", "refused" or "waiting"."""
        with self._card_lock:
            return self._kiosk_sign_in_locked(response)

    def _kiosk_sign_in_locked(self, response: Response) -> str:
        assert self.reader is not None
        placement = self.reader.current()
        if placement is None:
            self._refused = None
            return "waiting"
        if placement.sequence <= self._used_placement:
            refused = self._refused
            return (
                "refused"
                if refused is not None and refused[0] == placement.sequence
                else ("waiting")
            )
        self._used_placement = placement.sequence
        try:
            resident_id = check_card(placement)
        except CardRefused as exc:
            self._refused = (placement.sequence, exc)
            self.audit.record(
                event="sign_in",
                decision="deny",
                reason=f"card refused: {exc.rule}",
                extra={"via": "card"},
            )
            return "refused"
        self._refused = None
        subject = Subject(kind=SubjectKind.PERSON, id=resident_id)
        self._start_session(
            response, allowed=(subject,), via="card", card_sequence=placement.sequence
        )
        self.audit.record(
            event="sign_in",
            decision="allow",
            reason="card read",
            subject=subject,
            extra={"via": "card"},
        )
        return "signed_in"

    def _card_still_there(self, session: Session) -> bool:
        if self.settings.mode is not PortalMode.KIOSK or self.reader is None:
            return True
        placement = self.reader.current()
        return placement is not None and placement.sequence == session.card_sequence

    def _refusal_context(self) -> dict[str, Any]:
        refused = self._refused
        if refused is None:
            return {"refused": None}
        return {
            "refused": {
                "rule": refused[1].rule,
                "check_character": refused[1].rule == "check_character",
            }
        }

    async def kiosk_poll(self, request: Request) -> Response:
        """The start screen asks: is someone's card on the reader? (JSON)"""
        response = JSONResponse({})
        state = await self.call(self._kiosk_sign_in, response)
        body: dict[str, Any] = {"state": state}
        if state == "signed_in":
            body["next"] = "/me"
        response.body = response.render(body)
        response.headers["content-length"] = str(len(response.body))
        return response

    async def kiosk_status(self, request: Request) -> Response:
        """A signed-in page asks: is this session still on? (JSON; not counted as activity)"""
        session = self.session_of(request, touch=False)
        if (
            session is not None
            and session.subject is not None
            and not self._card_still_there(session)
        ):
            await self.call(self._sign_out, session, "card removed")
            session = None
        if session is None or session.subject is None:
            response = JSONResponse({"signed_in": False})
            self._clear_session_cookie(response)
            return response
        return JSONResponse(
            {"signed_in": True, "remaining_s": round(self.sessions.remaining_s(session), 1)}
        )

    async def simulator(self, request: Request) -> Response:
        """The simulated reader's admin route: loopback callers with the secret only."""
        secret = self.settings.simulator_secret
        reader = self.reader
        if secret is None or not isinstance(reader, SimulatedCardReader):
            return Response(status_code=404)
        client = request.client.host if request.client is not None else None
        given = request.headers.get(SIMULATOR_HEADER, "")
        if not is_loopback(client) or not hmac.compare_digest(given.encode(), secret.encode()):
            return JSONResponse({"error": "forbidden"}, status_code=403)
        form = await self.form(request)
        if form is None:
            return JSONResponse({"error": "not a form"}, status_code=400)
        action = form.get("action")
        if action == "remove":
            reader.remove()
            return JSONResponse({"card": None})
        if action == "place":
            try:
                placement = reader.place(form.get("resident_id", ""))
            except InvalidArgument as exc:
                return JSONResponse({"error": exc.message}, status_code=400)
            return JSONResponse({"card": placement.sequence})
        return JSONResponse({"error": "action must be 'place' or 'remove'"}, status_code=400)

    # -- online sign-in -----------------------------------------------------------------------

    async def _drop_earlier_session(self, request: Request, response: Response) -> None:
        """A sign-in starts afresh: the session this browser had (if any) ends now, so a
        second sign-in never leaves the first one's session (and its data) behind."""
        earlier = self.session_of(request, touch=False)
        if earlier is not None:
            await self.call(self._sign_out, earlier, "signed in again")
        if self.cookies.session_name in request.cookies:
            self._clear_session_cookie(response)

    async def login(self, request: Request) -> Response:
        if self.oidc is None:
            return Response(status_code=404)
        try:
            pending, url = await self.call(self.oidc.begin)
        except (IdentityProviderUnavailable, OsmanthusError) as exc:
            return self._provider_down(request, exc)
        holder = self.logins.create()
        holder.cache["pending"] = pending
        response = RedirectResponse(url, status_code=303)
        await self._drop_earlier_session(request, response)
        response.set_cookie(**self.cookies.login_cookie(holder.id))
        return response

    def _provider_down(self, request: Request, exc: OsmanthusError) -> HTMLResponse:
        return self.message(
            request,
            status=503,
            title_zh="身份认证服务暂时不可用",
            title_en="The identity provider cannot be reached",
            text_zh="暂时无法登录，请稍后再试。",
            text_en="Signing in is not possible right now; please try again later.",
            detail=exc.message,
        )

    def _sign_in_refused(self, request: Request, field: str | None, message: str) -> HTMLResponse:
        self.audit.record(
            event="sign_in",
            decision="deny",
            reason=f"sign-in refused: {field or 'unknown'}",
            extra={"via": "oidc"},
        )
        return self.message(
            request,
            status=401,
            title_zh="登录未通过",
            title_en="Sign-in refused",
            text_zh="身份认证结果无法验证，未登录。请重新登录。",
            text_en=(
                "The sign-in could not be verified; you are not signed in. Please sign in again."
            ),
            detail=f"{field}: {message}" if field else message,
        )

    async def callback(self, request: Request) -> Response:
        if self.oidc is None:
            return Response(status_code=404)
        holder = self.logins.get(request.cookies.get(self.cookies.login_name))
        pending = holder.cache.get("pending") if holder is not None else None
        if holder is not None:
            # single use: a replayed callback finds nothing
            self.logins.drop(holder)
        params = {k: v for k, v in request.query_params.items()}
        # the cookie's session (Strict, so present only when the provider is same-site) ends
        # whatever the outcome; a new one starts below on success
        earlier = self.session_of(request, touch=False)
        if earlier is not None:
            await self.call(self._sign_out, earlier, "signed in again")
        response: Response
        if not isinstance(pending, PendingLogin):
            response = await self.call(
                self._sign_in_refused,
                request,
                "state",
                "no sign-in was started in this browser, or it took longer than 10 minutes",
            )
        else:
            try:
                identity = await self.call(self.oidc.finish, pending, params)
            except (SignInRefused, IdTokenRefused) as exc:
                response = await self.call(self._sign_in_refused, request, exc.field, exc.message)
            except IdentityProviderUnavailable as exc:
                response = self._provider_down(request, exc)
            else:
                response = self._signed_in_online(request, identity)
        if response.status_code != 200 and self.cookies.session_name in request.cookies:
            self._clear_session_cookie(response)
        response.delete_cookie(
            self.cookies.login_name,
            path="/",
            secure=self.settings.secure_cookies,
            httponly=True,
            samesite="lax",
        )
        return response

    def _signed_in_online(self, request: Request, identity: PortalIdentity) -> Response:
        person = Subject(kind=SubjectKind.PERSON, id=identity.resident_id)
        allowed: tuple[Subject, ...] = (person,)
        if identity.credit_code is not None:
            # a legal representative signed in for the enterprise: its page first
            allowed = (Subject(kind=SubjectKind.ENTERPRISE, id=identity.credit_code), person)
        # a page, not a redirect: the provider's redirect was a cross-site navigation, and a
        # browser sends no SameSite=Strict cookie on the rest of that chain; a navigation
        # this page starts is same-site, so the session cookie comes with it
        response = self.render(request, "signed_in.html")
        session = self._start_session(
            response, allowed=allowed, via="oidc", display_name=identity.name
        )
        for subject in allowed:
            self.audit.record(
                event="sign_in",
                decision="allow",
                reason="ID token verified",
                subject=subject,
                extra={"via": "oidc"},
            )
        del session
        return response

    # -- sign-out -----------------------------------------------------------------------------

    def _sign_out(self, session: Session, reason: str) -> None:
        subject = session.subject
        self.sessions.drop(session)
        self.audit.record(event="sign_out", decision="allow", reason=reason, subject=subject)

    async def signout(self, request: Request) -> Response:
        checked = await self.checked_post(request)
        if isinstance(checked, Response):
            return checked
        session, _ = checked
        await self.call(self._sign_out, session, "signed out")
        response = RedirectResponse("/", status_code=303)
        self._clear_session_cookie(response)
        return response

    # -- the start page -----------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        session = self.session_of(request)
        if session is not None and session.subject is not None:
            if self._card_still_there(session):
                return RedirectResponse("/me", status_code=303)
            await self.call(self._sign_out, session, "card removed")
        if self.settings.mode is PortalMode.KIOSK:
            # without script the start screen reloads itself; each load checks the reader
            probe = HTMLResponse("")
            state = await self.call(self._kiosk_sign_in, probe)
            if state == "signed_in":
                redirect = RedirectResponse("/me", status_code=303)
                for key, value in probe.headers.items():
                    if key == "set-cookie":
                        redirect.headers.append(key, value)
                return redirect
            response = self.render(request, "kiosk_start.html", **self._refusal_context())
        else:
            response = self.render(request, "online_start.html", can_sign_in=self.oidc is not None)
        if session is not None:
            self._clear_session_cookie(response)
        return response

    # -- the subject's pages ------------------------------------------------------------------

    async def _subject_session(self, request: Request, route: str) -> Session | Response:
        """The signed-in session of a page about the subject, or where to send the browser."""
        session = self.session_of(request)
        if session is None or session.subject is None:
            response = RedirectResponse("/", status_code=303)
            self._clear_session_cookie(response)
            return response
        if not self._card_still_there(session):
            await self.call(self._sign_out, session, "card removed")
            response = RedirectResponse("/", status_code=303)
            self._clear_session_cookie(response)
            return response
        asked = request.query_params.get("subject")
        if asked is not None:
            refused = await self._check_asked(request, session, asked, route)
            if refused is not None:
                return refused
        return session

    async def _check_asked(
        self, request: Request, session: Session, asked: str, route: str
    ) -> Response | None:
        """None when `asked` is a subject this sign-in covers (switching to it), else a 403.

        `route` names the route for the audit without its parameters (a path would carry the
        identifier asked about into the log).
        """
        assert session.subject is not None
        for subject in session.allowed:
            try:
                canonical = validate_subject(subject.kind, asked)
            except InvalidArgument:
                continue
            if session.may_see(subject.kind, canonical):
                if subject != session.subject:
                    session.forget()
                    session.subject = subject
                return None
        current = session.subject
        await self.call(
            lambda: self.audit.other_subject(asked=asked[:64], session_subject=current, route=route)
        )
        return self.message(
            request,
            status=403,
            title_zh="只能查询本人信息",
            title_en="You can see only your own record",
            text_zh="此请求涉及其他主体，已被拒绝并记录。",
            text_en="This request was about someone else; it was refused and recorded.",
            session=session,
        )

    async def _cached(self, session: Session, key: str, fetch: Callable[[], T]) -> T:
        if key not in session.cache:
            session.cache[key] = await self.call(fetch)
        value: T = session.cache[key]
        return value

    async def _log_checks(self, session: Session, file: SubjectFileResult) -> tuple[PartCheck, ...]:
        """The check of `file`'s audit lines (portal.whoasked), made once per file fetched: a
        log that fails is logged once, not on every view of the page."""
        cached = session.cache.get(_LOG_CHECKS_KEY)
        if cached is not None and cached[0] is file:
            checks: tuple[PartCheck, ...] = cached[1]
            return checks
        settings = self.settings
        checks = await self.call(
            lambda: check_parts(
                file.parts, roster=settings.log_roster, min_witnesses=settings.min_witnesses
            )
        )
        session.cache[_LOG_CHECKS_KEY] = (file, checks)
        return checks

    async def page(self, request: Request) -> Response:
        name = request.path_params.get("page", "score")
        if name not in PAGES:
            return Response(status_code=404)
        checked = await self._subject_session(request, "/me" if name == "score" else f"/me/{name}")
        if isinstance(checked, Response):
            return checked
        session = checked
        subject = session.subject
        assert subject is not None
        catalogue = self.backend.catalogue
        try:
            if name == "score":
                result = await self._cached(
                    session, "summary", lambda: self.backend.summary(subject)
                )
                return self.render(
                    request,
                    "score.html",
                    session=session,
                    page="score",
                    score=score_view(catalogue, result),
                )
            if name == "consents":
                if self.settings.mode is PortalMode.KIOSK:
                    # a kiosk's token may not list consents (central-portal-own-consents):
                    # asking would only be refused, and "no consents" would be untrue
                    return self.render(
                        request,
                        "consents.html",
                        session=session,
                        page="consents",
                        online_only=True,
                        consents=[],
                        revoked=None,
                    )
                records = await self.call(self.backend.consents, subject)
                # one-shot: the id of the consent this session just revoked, never a value
                # from the URL (a crafted link could make the page say anything)
                revoked, session.flash_revoked = session.flash_revoked, None
                return self.render(
                    request,
                    "consents.html",
                    session=session,
                    page="consents",
                    online_only=False,
                    consents=consents_view(records, self.now()),
                    revoked=revoked,
                )
            file = await self._cached(session, "file", lambda: self.backend.subject_file(subject))
        except OsmanthusError as exc:
            return self.backend_error(request, session, exc)
        common = {
            "session": session,
            "page": name,
            "missing": missing_view(catalogue, file.missing),
            "partial": file.partial,
        }
        if name == "records":
            return self.render(
                request,
                "records.html",
                departments=records_view(catalogue, subject.kind, file.parts),
                **page_actions(self, file.parts),
                **common,
            )
        if name == "queries":
            checks = await self._log_checks(session, file)
            return self.render(
                request,
                "queries.html",
                queries=queries_view(catalogue, file.parts, checks),
                log_problems=log_problems_view(catalogue, checks),
                verifying=self.settings.log_roster is not None,
                truncated=[p.source for p in file.parts if p.audit_truncated],
                **common,
            )
        return self.render(
            request,
            "lists.html",
            entries=lists_view(catalogue, file.parts),
            **page_actions(self, file.parts),
            **common,
        )

    async def about_subject(self, request: Request) -> Response:
        """/subjects/{id}/{page}: the session's own subject goes to /me; anyone else is 403."""
        name = request.path_params["page"]
        if name not in PAGES:
            return Response(status_code=404)
        route = f"/subjects/{{subject_id}}/{name}"
        checked = await self._subject_session(request, route)
        if isinstance(checked, Response):
            return checked
        refused = await self._check_asked(
            request, checked, request.path_params["subject_id"], route
        )
        if refused is not None:
            return refused
        return RedirectResponse("/me" if name == "score" else f"/me/{name}", status_code=303)

    async def revoke(self, request: Request) -> Response:
        checked = await self.checked_post(request)
        if isinstance(checked, Response):
            return checked
        session, _ = checked
        subject = session.subject
        assert subject is not None
        consent_id = request.path_params["consent_id"]
        if self.settings.mode is PortalMode.KIOSK:
            await self.call(
                lambda: self.audit.record(
                    event="revoke",
                    decision="deny",
                    reason="consents are not managed at a kiosk",
                    subject=subject,
                    extra={"consent_id": consent_id[:64]},
                )
            )
            return self._online_only(request, session)
        try:
            await self.call(self.backend.revoke, subject, consent_id)
        except PermissionDenied as exc:
            reason = revoke_refusal(exc)
            await self.call(
                lambda: self.audit.record(
                    event="revoke",
                    decision="deny",
                    reason=reason,
                    subject=subject,
                    extra={"consent_id": consent_id[:64]},
                )
            )
            return self.backend_error(request, session, exc)
        except OsmanthusError as exc:
            return self.backend_error(request, session, exc)
        await self.call(
            lambda: self.audit.record(
                event="revoke",
                decision="allow",
                reason="consent revoked by its subject",
                subject=subject,
                extra={"consent_id": consent_id[:64]},
            )
        )
        session.flash_revoked = consent_id
        return RedirectResponse("/me/consents", status_code=303)

    def _online_only(self, request: Request, session: Session) -> HTMLResponse:
        return self.message(
            request,
            status=403,
            title_zh="请在网上办理",
            title_en="Manage consents online",
            text_zh="自助查询机不办理授权；请登录网上自助服务查看或撤回授权。",
            text_en=(
                "Consents are not managed at the kiosk; sign in to the online self-service "
                "site to see or revoke them."
            ),
            session=session,
        )

    async def refresh(self, request: Request) -> Response:
        checked = await self.checked_post(request)
        if isinstance(checked, Response):
            return checked
        session, form = checked
        session.forget()
        back = form.get("next", "/me")
        if back not in ("/me", "/me/cases", *(f"/me/{p}" for p in PAGES[1:])):
            back = "/me"
        return RedirectResponse(back, status_code=303)

    async def switch(self, request: Request) -> Response:
        checked = await self.checked_post(request)
        if isinstance(checked, Response):
            return checked
        session, form = checked
        kind = form.get("kind")
        for subject in session.allowed:
            if subject.kind.value == kind:
                if subject != session.subject:
                    session.forget()
                    session.subject = subject
                return RedirectResponse("/me", status_code=303)
        return RedirectResponse("/me", status_code=303)

    async def health(self, request: Request) -> Response:
        return Response("ok", media_type="text/plain")


def revoke_refusal(exc: PermissionDenied) -> str:
    """The audit reason of a refused revoke, from what the coordinator's refusal names:
    `consent_id` when the consent is another subject's, `subject_id` when the request named
    no subject, and no field when central policy refused this device the action."""
    if exc.field == "consent_id":
        return "the consent is not this subject's"
    if exc.field == "subject_id":
        return "the request did not name the subject"
    return "central policy refused this device the revoke"


def create_app(
    *,
    settings: PortalSettings,
    backend: PortalBackend,
    card_reader: CardReader | None,
    identity: OidcSettings | None,
    clock: Callable[[], float] = time.monotonic,
    now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
) -> Starlette:
    """The portal's ASGI app. Kiosk mode needs a card reader; online mode an identity provider.

    `clock` is the monotonic clock sessions expire by (tests inject one); `now` the wall clock.
    """
    if settings.mode is PortalMode.KIOSK and card_reader is None:
        raise InvalidArgument("kiosk mode needs a card reader", field="card_reader")
    if settings.mode is PortalMode.ONLINE and card_reader is not None:
        raise InvalidArgument("the online site has no card reader", field="card_reader")
    if settings.mode is PortalMode.ONLINE and identity is None:
        raise InvalidArgument(
            "online mode needs the identity provider's settings", field="identity"
        )
    if settings.mode is PortalMode.DEPARTMENT:
        raise InvalidArgument(
            "the department face is portal.department.create_department_app", field="mode"
        )
    portal = _Portal(
        settings=settings,
        backend=backend,
        card_reader=card_reader,
        identity=identity,
        clock=clock,
        now=now,
    )
    routes = [
        Route("/", portal.home),
        Route("/healthz", portal.health),
        # browsers ask for it on every page; there is none, and a 404 would be logged each time
        Route("/favicon.ico", lambda request: Response(status_code=204)),
        Route("/me", portal.page),
        # before /me/{page}, which would take /me/cases
        *SubjectCases(portal).routes(),
        Route("/me/{page}", portal.page),
        Route("/subjects/{subject_id}/{page}", portal.about_subject),
        Route("/me/consents/{consent_id}/revoke", portal.revoke, methods=["POST"]),
        Route("/me/refresh", portal.refresh, methods=["POST"]),
        Route("/me/switch", portal.switch, methods=["POST"]),
        Route("/signout", portal.signout, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=_HERE / "static"), name="static"),
    ]
    if settings.mode is PortalMode.KIOSK:
        routes += [
            Route("/kiosk/poll", portal.kiosk_poll),
            Route("/kiosk/status", portal.kiosk_status),
            Route("/_simulator/card", portal.simulator, methods=["POST"]),
        ]
    else:
        routes += [
            Route("/login", portal.login),
            Route(CALLBACK_PATH, portal.callback),
        ]
    # outermost first: every response, the kiosk's loopback and Host refusals included, gets
    # the headers; a Host outside the allowlist (a DNS-rebinding page, a forged Host behind a
    # proxy) is refused before any route
    middleware = [
        Middleware(SecurityHeadersMiddleware),
        Middleware(TrustedHostMiddleware, allowed_hosts=list(settings.hosts), www_redirect=False),
    ]
    if settings.mode is PortalMode.KIOSK:
        middleware.append(Middleware(_LoopbackOnly))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # sessions also expire on the next request; the sweeper ends an abandoned one on time
        # on a quiet site, so its score and records leave memory (and the expiry is audited)
        # within SWEEP_S of its time-out, not whenever somebody next visits
        stop = threading.Event()
        sweeper = threading.Thread(
            target=_sweep_until, args=(portal, stop), name="portal-session-sweeper", daemon=True
        )
        sweeper.start()
        try:
            yield
        finally:
            stop.set()
            sweeper.join()
            portal.audit.close()

    app = Starlette(
        routes=routes, middleware=middleware, lifespan=lifespan, max_body_size=MAX_FORM_BYTES
    )
    app.state.portal = portal
    return app


def _sweep_until(portal: _Portal, stop: threading.Event) -> None:
    while not stop.wait(SWEEP_S):
        portal.sessions.sweep()
        portal.logins.sweep()


class _LoopbackOnly:
    """Kiosk mode answers the kiosk's own browser only: the screen and the reader are one
    machine, and a sign-in by card must not be taken over from elsewhere on the network."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            client = scope.get("client")
            if client is None or not is_loopback(client[0]):
                response = Response("the kiosk answers its own screen only", status_code=403)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

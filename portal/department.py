"""The portal's department face: a department's officers read and decide the objections and
credit-repair applications filed at its node (`osmanthus portal serve --mode department`).

Officers sign in at the identity provider as subjects do (portal.signin), and the verified ID
token must name this department in its `osmanthus_department` claim (portal.oidc.
DEPARTMENT_CLAIM): a token without it, or naming another department, is refused on a page that
says so, and the refusal is audited. The portal then talks to the department's own node as the
department (its operator certificate) through `CaseOfficeService` (sdk.caseoffice.CaseOffice):
the queue (open, overdue or all cases, newest first), a case (statement, commitment letter,
attachments as downloads, every step) and the decision (uphold: withdraw or correct; reject;
a reason always). The node checks everything again; the portal's audit log records which officer
did what, which the node (seeing one certificate per department) cannot.
"""

from __future__ import annotations

import contextlib
import datetime
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Final, Protocol

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from osmanthus.core.cases import (
    CASE_ID_PATTERN,
    MEDIA_JPEG,
    MEDIA_PDF,
    MEDIA_PNG,
    AttachmentInfo,
    Case,
    CaseCorrection,
    CasePage,
    CaseQuery,
    CaseRemedy,
    CaseStatus,
    CaseTarget,
    Decision,
)
from osmanthus.core.catalogue import Catalogue, load_catalogue
from osmanthus.core.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OsmanthusError,
    PermissionDenied,
)
from osmanthus.core.ids import mask_subject
from osmanthus.core.peers import validate_name
from portal.app import MAX_FORM_BYTES, _Portal
from portal.caseviews import OVERDUE, officer_labels, step_label, when
from portal.oidc import DEPARTMENT_CLAIM, PortalIdentity
from portal.session import (
    CSRF_FIELD,
    DOWNLOAD_CSP,
    Officer,
    SecurityHeadersMiddleware,
    Session,
    Subject,
    csrf_ok,
)
from portal.settings import PortalMode, PortalSettings
from portal.signin import CALLBACK_PATH, OidcSettings
from portal.views import department_label

__all__ = ["CaseOfficeBackend", "DepartmentPortal", "create_department_app"]

_HERE: Final = Path(__file__).parent
#: the queue's filters (?show=): open cases, those past their decision date, every case
FILTERS: Final = ("open", "overdue", "all")
#: an opaque page token longer than this is not the node's
MAX_PAGE_TOKEN_CHARS: Final = 512
#: file name extensions of the media types attachments may have
_EXTENSIONS: Final = {MEDIA_PDF: ".pdf", MEDIA_JPEG: ".jpg", MEDIA_PNG: ".png"}
#: the decide form's outcomes
OUTCOMES: Final = ("withdraw", "correct", "reject")
_DECIDED_KEY: Final = "decided"


class CaseOfficeBackend(Protocol):
    """What the department face asks the department's node (sdk.caseoffice.CaseOffice)."""

    def list_cases(self, query: CaseQuery) -> CasePage:
        """The department's cases, newest first."""
        ...

    def get_case(self, case_id: str) -> Case:
        """One case, with its statement, letter, attachments' descriptions and steps."""
        ...

    def attachment(self, case_id: str, index: int) -> tuple[AttachmentInfo, bytes]:
        """One attachment's description and content."""
        ...

    def decide(self, decision: Decision) -> Case:
        """Decide an open case; the case as decided."""
        ...


class _NoSubjects:
    """The department face's stand-in for the subjects' backend: it asks nothing about any
    subject (deny by default), and only lends the catalogue for labels."""

    def __init__(self, catalogue: Catalogue) -> None:
        self._catalogue = catalogue

    @property
    def catalogue(self) -> Catalogue:
        return self._catalogue

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise PermissionDenied("the department face asks nothing about subjects")

    summary = subject_file = consents = revoke = file_case = _refuse


def content_disposition(info: AttachmentInfo, case_id: str) -> str:
    """RFC 6266 `attachment`, with an ASCII name made here and the filed name as
    `filename*` (RFC 8187): the browser saves the file, never shows it inline."""
    fallback = f"{case_id}-{info.index + 1}{_EXTENSIONS.get(info.media_type, '')}"
    encoded = urllib.parse.quote(info.name, safe="")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


class DepartmentPortal(_Portal):
    """The department face's state and handlers."""

    def __init__(
        self,
        *,
        settings: PortalSettings,
        office: CaseOfficeBackend,
        department: str,
        identity: OidcSettings,
        catalogue: Catalogue,
        clock: Callable[[], float],
        now: Callable[[], datetime.datetime],
    ) -> None:
        super().__init__(
            settings=settings,
            backend=_NoSubjects(catalogue),
            card_reader=None,
            identity=identity,
            clock=clock,
            now=now,
        )
        self.office = office
        self.department = department
        self.catalogue = catalogue

    # -- sign-in ------------------------------------------------------------------------------

    def _signed_in_online(self, request: Request, identity: PortalIdentity) -> Response:
        """An officer of this department gets a session; anyone else a refusal, audited."""
        claimed = identity.department
        if claimed != self.department:
            reason = (
                f"the ID token names no {DEPARTMENT_CLAIM}"
                if claimed is None
                else f"the ID token's {DEPARTMENT_CLAIM} is {claimed[:64]!r}, not "
                f"{self.department!r}"
            )
            self.audit.record(
                event="sign_in",
                decision="deny",
                reason=reason,
                extra={"via": "oidc", "role": "officer", "officer": identity.sub[:64]},
            )
            return self.message(
                request,
                status=403,
                title_zh="不是本部门的办理人员",
                title_en="Not an officer of this department",
                text_zh="您的账号未被授权办理本部门的异议和信用修复案件，未登录。",
                text_en=(
                    "Your account is not authorised to handle this department's objections "
                    "and credit-repair cases; you are not signed in."
                ),
                detail=reason,
            )
        response = self.render(request, "signed_in.html", continue_to="/dept/cases")
        session = self.sessions.create()
        session.via = "oidc"
        session.display_name = identity.name
        session.officer = Officer(sub=identity.sub, department=claimed, name=identity.name)
        response.set_cookie(**self.cookies.session_cookie(session.id))
        self.audit.record(
            event="sign_in",
            decision="allow",
            reason="ID token verified; officer of this department",
            extra={"via": "oidc", "role": "officer", "officer": identity.sub[:64]},
        )
        return response

    def _officer(self, request: Request) -> Session | None:
        session = self.session_of(request)
        if session is None or session.officer is None:
            return None
        if session.officer.department != self.department:
            return None
        return session

    def _officer_context(self, session: Session) -> dict[str, Any]:
        officer = session.officer
        assert officer is not None
        return {
            "officer_name": officer.name or officer.sub,
            "department": self.department,
            "department_label": department_label(self.catalogue, self.department),
        }

    def _audit(
        self,
        session: Session,
        *,
        event: str,
        decision: str,
        reason: str,
        subject: Subject | None = None,
        **extra: str | int,
    ) -> None:
        """An officer's action in the portal's log: which officer (the node sees only the
        department's certificate), the case, and the case's subject as a salted hash."""
        officer = session.officer
        self.audit.record(
            event=event,
            decision=decision,
            reason=reason,
            subject=subject,
            extra={"role": "officer", "officer": officer.sub[:64] if officer else "", **extra},
        )

    # -- pages --------------------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        if self._officer(request) is not None:
            return RedirectResponse("/dept/cases", status_code=303)
        response = self.render(
            request,
            "dept_start.html",
            department=self.department,
            department_label=department_label(self.catalogue, self.department),
        )
        if self.cookies.session_name in request.cookies:
            self._clear_session_cookie(response)
        return response

    async def signout(self, request: Request) -> Response:
        session = self._officer(request)
        if session is None:
            return RedirectResponse("/", status_code=303)
        form = await self.form(request)
        if form is None or not csrf_ok(session, form.get(CSRF_FIELD)):
            return await self.call(self.csrf_refused, request, session)
        await self.call(self._sign_out, session, "signed out")
        response = RedirectResponse("/", status_code=303)
        self._clear_session_cookie(response)
        return response

    async def queue(self, request: Request) -> Response:
        session = self._officer(request)
        if session is None:
            return RedirectResponse("/", status_code=303)
        show = request.query_params.get("show", "open")
        if show not in FILTERS:
            show = "open"
        token = request.query_params.get("page", "")[:MAX_PAGE_TOKEN_CHARS]
        query = CaseQuery(
            status=CaseStatus.OPEN if show in ("open", "overdue") else None,
            overdue_only=show == "overdue",
            page_token=token,
        )
        try:
            page = await self.call(self.office.list_cases, query)
        except OsmanthusError as exc:
            return self.backend_error(request, session, exc)
        rows = [
            {
                "case": case,
                "labels": officer_labels(case),
                "filed": when(case.filed_at),
                "subject": mask_subject(case.subject_id),
            }
            for case in page.cases
        ]
        return self.render(
            request,
            "dept_queue.html",
            session=session,
            show=show,
            filters=FILTERS,
            rows=rows,
            next_page=page.next_page_token,
            overdue_label=OVERDUE,
            **self._officer_context(session),
        )

    def _case_id(self, request: Request) -> str | None:
        case_id = str(request.path_params.get("case_id", ""))
        return case_id if CASE_ID_PATTERN.fullmatch(case_id) else None

    def _render_case(
        self,
        request: Request,
        session: Session,
        case: Case,
        *,
        status: int = 200,
        errors: dict[str, tuple[str, str]] | None = None,
        values: dict[str, str] | None = None,
        decided: bool = False,
    ) -> HTMLResponse:
        return self.render(
            request,
            "dept_case.html",
            session=session,
            status=status,
            case=case,
            labels=officer_labels(case),
            filed=when(case.filed_at),
            decided_at=when(case.decided_at),
            steps=[
                {
                    "at": when(e.at),
                    "label": step_label(e.event),
                    "actor": e.actor,
                    "detail": e.detail,
                }
                for e in case.events
            ],
            may_correct=case.target is CaseTarget.RECORD,
            errors=errors or {},
            values=values or {},
            decided=decided,
            overdue_label=OVERDUE,
            **self._officer_context(session),
        )

    async def case_page(self, request: Request) -> Response:
        session = self._officer(request)
        if session is None:
            return RedirectResponse("/", status_code=303)
        case_id = self._case_id(request)
        if case_id is None:
            return Response(status_code=404)
        try:
            case = await self.call(self.office.get_case, case_id)
        except OsmanthusError as exc:
            return self.backend_error(request, session, exc)
        decided = session.cache.pop(_DECIDED_KEY, None) == case_id
        return self._render_case(request, session, case, decided=decided)

    async def attachment(self, request: Request) -> Response:
        session = self._officer(request)
        if session is None:
            return RedirectResponse("/", status_code=303)
        case_id = self._case_id(request)
        index = request.path_params.get("index")
        if case_id is None or not isinstance(index, int) or index < 0:
            return Response(status_code=404)
        try:
            info, content = await self.call(self.office.attachment, case_id, index)
        except OsmanthusError as exc:
            return self.backend_error(request, session, exc)
        await self.call(
            lambda: self._audit(
                session,
                event="attachment",
                decision="allow",
                reason="attachment downloaded by an officer",
                case_id=case_id,
                index=index,
            )
        )
        # the stored (content-checked) type, and never shown inline: a download only
        media_type = (
            info.media_type if info.media_type in _EXTENSIONS else "application/octet-stream"
        )
        return Response(
            content,
            media_type=media_type,
            headers={
                "content-disposition": content_disposition(info, case_id),
                "x-content-type-options": "nosniff",
                "cache-control": "no-store",
                # a polyglot (a PDF that is HTML too) rendered anyway runs nothing
                # (SecurityHeadersMiddleware sets the same for every attachment)
                "content-security-policy": DOWNLOAD_CSP,
            },
        )

    async def decide(self, request: Request) -> Response:
        session = self._officer(request)
        if session is None:
            return RedirectResponse("/", status_code=303)
        form = await self.form(request)
        if form is None or not csrf_ok(session, form.get(CSRF_FIELD)):
            return await self.call(self.csrf_refused, request, session)
        case_id = self._case_id(request)
        if case_id is None:
            return Response(status_code=404)
        try:
            case = await self.call(self.office.get_case, case_id)
        except OsmanthusError as exc:
            return self.backend_error(request, session, exc)
        values = {k: form.get(k, "") for k in ("outcome", "reason", "quantity", "event_start",
                                                "event_end")}  # fmt: skip
        errors: dict[str, tuple[str, str]] = {}
        decision = _decision(case, values, errors)
        if decision is None:
            return self._render_case(
                request, session, case, status=400, errors=errors, values=values
            )
        subject = Subject(kind=case.subject_kind, id=case.subject_id)
        try:
            decided = await self.call(self.office.decide, decision)
        except (InvalidArgument, FailedPrecondition, NotFound) as exc:
            refusal = type(exc).__name__
            await self.call(
                lambda: self._audit(
                    session,
                    event="decide",
                    decision="deny",
                    reason=f"the node refused the decision: {refusal}",
                    subject=subject,
                    case_id=case_id,
                )
            )
            errors["form"] = (
                "部门节点未接受该决定" if not isinstance(exc, FailedPrecondition)
                else "该案件已不在处理中，无法再作决定",
                exc.message,
            )  # fmt: skip
            return self._render_case(
                request, session, case, status=409, errors=errors, values=values
            )
        except OsmanthusError as exc:
            return self.backend_error(request, session, exc)
        await self.call(
            lambda: self._audit(
                session,
                event="decide",
                decision="allow",
                reason=f"case {decision.outcome.value}"
                + (f" ({decision.remedy.value})" if decision.remedy else ""),
                subject=subject,
                case_id=case_id,
            )
        )
        session.cache[_DECIDED_KEY] = decided.case_id
        return RedirectResponse(f"/dept/cases/{decided.case_id}", status_code=303)


def _decision(
    case: Case, values: dict[str, str], errors: dict[str, tuple[str, str]]
) -> Decision | None:
    """The decision the form describes, checked; None with `errors` filled in otherwise."""
    outcome = values["outcome"]
    if outcome not in OUTCOMES:
        errors["outcome"] = ("请选择决定结果", "Choose the outcome")
    if not values["reason"].strip():
        errors["reason"] = ("请填写决定理由", "Give the reason for the decision")
    correction: CaseCorrection | None = None
    if outcome == "correct":
        if case.target is not CaseTarget.RECORD:
            errors["outcome"] = (
                "名单条目不能直接更正：请撤销该条目，再发布更正后的条目",
                "A list entry is never changed in place: withdraw it and publish a corrected one",
            )
        else:
            correction = _correction(values, errors)
    if errors:
        return None
    try:
        return Decision(
            case_id=case.case_id,
            outcome=CaseStatus.REJECTED if outcome == "reject" else CaseStatus.UPHELD,
            reason=values["reason"].replace("\r\n", "\n"),
            remedy=None
            if outcome == "reject"
            else (CaseRemedy.CORRECT if outcome == "correct" else CaseRemedy.WITHDRAW),
            correction=correction,
        ).checked()
    except InvalidArgument as exc:
        name = (exc.field or "form").split(".")[-1]
        where = {"reason": "reason", "remedy": "outcome", "outcome": "outcome"}.get(name, name)
        if where not in ("reason", "outcome", "quantity", "event_start", "event_end"):
            where = "correction" if name == "correction" else "form"
        errors[where] = ("决定内容不符合要求", exc.message)
        return None


def _correction(
    values: dict[str, str], errors: dict[str, tuple[str, str]]
) -> CaseCorrection | None:
    quantity: int | None = None
    text = values["quantity"].strip()
    if text:
        if not text.isdigit() or int(text) < 1:
            errors["quantity"] = (
                "数量须为正整数",
                "The quantity must be a whole number, 1 or more",
            )
        else:
            quantity = int(text)
    dates: dict[str, datetime.date | None] = {}
    for name in ("event_start", "event_end"):
        text = values[name].strip()
        dates[name] = None
        if text:
            try:
                dates[name] = datetime.date.fromisoformat(text)
            except ValueError:
                errors[name] = ("日期格式应为 YYYY-MM-DD", "A date is written YYYY-MM-DD")
    correction = CaseCorrection(
        quantity=quantity, event_start=dates["event_start"], event_end=dates["event_end"]
    )
    if correction.empty and not errors:
        errors["correction"] = (
            "更正须至少修改数量或日期之一",
            "A correction changes the quantity or a date: give at least one",
        )
    return correction


def create_department_app(
    *,
    settings: PortalSettings,
    office: CaseOfficeBackend,
    department: str,
    identity: OidcSettings,
    catalogue: Catalogue | None = None,
    clock: Callable[[], float] = time.monotonic,
    now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
) -> Starlette:
    """The department face's ASGI app: `office` is the department's case office at its node
    (sdk.caseoffice.CaseOffice, opened with the department's operator certificate)."""
    if settings.mode is not PortalMode.DEPARTMENT:
        raise InvalidArgument("the department face runs in PortalMode.DEPARTMENT", field="mode")
    validate_name(department, field="department")
    portal = DepartmentPortal(
        settings=settings,
        office=office,
        department=department,
        identity=identity,
        catalogue=catalogue or load_catalogue(),
        clock=clock,
        now=now,
    )
    routes = [
        Route("/", portal.home),
        Route("/healthz", portal.health),
        Route("/favicon.ico", lambda request: Response(status_code=204)),
        Route("/login", portal.login),
        Route(CALLBACK_PATH, portal.callback),
        Route("/signout", portal.signout, methods=["POST"]),
        Route("/dept/cases", portal.queue),
        Route("/dept/cases/{case_id}", portal.case_page),
        Route("/dept/cases/{case_id}/attachments/{index:int}", portal.attachment),
        Route("/dept/cases/{case_id}/decide", portal.decide, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=_HERE / "static"), name="static"),
    ]
    middleware = [
        Middleware(SecurityHeadersMiddleware),
        Middleware(TrustedHostMiddleware, allowed_hosts=list(settings.hosts), www_redirect=False),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        portal.audit.close()

    app = Starlette(
        routes=routes, middleware=middleware, lifespan=lifespan, max_body_size=MAX_FORM_BYTES
    )
    app.state.portal = portal
    return app

"""The subject's side of objections (异议) and credit repair (信用修复): the forms, the filing, the
receipt and "my cases" (online; a kiosk says where to file).

A case is about one record or list entry of the subject's own file (each department's verified
part, kept in the session as the other pages keep it): the route names the department, target
and id, and anything not in that file is refused before anything is sent, and audited. The form
is multipart (statement, up to MAX_ATTACHMENTS files, for a repair the commitment letter's
confirmation); the body is refused unread beyond MAX_CASE_BODY_BYTES, each attachment is checked
by content (osmanthus.core.cases.check_attachment) and every error is shown next to its field in
both languages. The letter is rendered here from the case (commitment_letter), never taken from
the form, and the case key is the department's from its signed part, never from the form. A
per-subject limit in this process (FILINGS_PER_WINDOW per FILING_WINDOW_S) is a first line; the
node's limits are the ones that count.
"""

from __future__ import annotations

import collections
import hashlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from osmanthus.core.cases import GROUNDS as GROUND_RULES
from osmanthus.core.cases import (
    MAX_ATTACHMENT_BYTES,
    MAX_ATTACHMENTS,
    AttachmentFile,
    CaseDraft,
    CaseGround,
    CaseKind,
    CaseReceipt,
    CaseTarget,
    check_attachment,
    commitment_letter,
    encode_draft,
)
from osmanthus.core.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OsmanthusError,
    RateLimited,
    Unavailable,
)
from osmanthus.core.subjectfile import SubjectFile
from osmanthus.core.subjectseal import new_nonce
from osmanthus.core.types import DepartmentId
from portal.caseviews import GROUNDS, CaseTargetInfo, case_targets, cases_view, find_target
from portal.session import CSRF_FIELD, Session, Subject, csrf_ok, new_token
from portal.settings import PortalMode
from portal.views import missing_view

if TYPE_CHECKING:
    from portal.app import _Portal

__all__ = [
    "FILINGS_PER_WINDOW",
    "FILING_WINDOW_S",
    "MAX_CASE_BODY_BYTES",
    "FilingLimiter",
    "SubjectCases",
]

#: the most a filing's body may declare: the attachments' limit plus room for the statement
#: (2,000 characters, up to 4 bytes each), the form's other fields and the multipart framing
MAX_CASE_BODY_BYTES: Final = MAX_ATTACHMENT_BYTES + 64 * 1024
#: a body that declares no length is cut off here (Starlette's limit on the route), so memory
#: stays bounded; one that declares more than MAX_CASE_BODY_BYTES is refused unread
HARD_CASE_BODY_BYTES: Final = 2 * MAX_CASE_BODY_BYTES
#: a subject's filings this portal sends per window (the node allows 5 a day per department)
FILINGS_PER_WINDOW: Final = 5
FILING_WINDOW_S: Final = 600.0
#: form tokens a session remembers (each form shown gets one; a resubmitted form files once)
MAX_FORMS_PER_SESSION: Final = 32
#: a multipart form has these few fields besides the files
_MAX_FIELDS: Final = 16
#: the form's value for the letter's confirmation checkbox
CONFIRMED: Final = "yes"
_FORMS_KEY: Final = "case_forms"
_RECEIPT_KEY: Final = "case_receipt"
_FORM_ROUTE: Final = "/me/cases/new/{kind}/{department}/{target}/{target_id}"


@dataclass(frozen=True, kw_only=True)
class _FormState:
    """What became of one form shown: being filed now (`pending`), or its receipt; and the
    nonce it was last sent with, for the content it carried then (`digest`).

    A filing whose answer was lost (DeadlineExceeded, Unavailable, or the portal failing after
    the node took it) may have been stored: sent again with the same nonce and the same content
    the node answers the first receipt (duplicate) instead of "a case is already open"; with
    other content it is another filing, under a fresh nonce."""

    pending: bool = False
    nonce: bytes | None = None
    digest: bytes | None = None
    receipt: CaseReceipt | None = None


class FilingLimiter:
    """At most `limit` filings per subject in any `window_s` seconds (a sliding window, in
    memory; `clock` is monotonic)."""

    def __init__(self, *, limit: int, window_s: float, clock: Callable[[], float]) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._sent: dict[tuple[str, str], collections.deque[float]] = {}

    def acquire(self, subject: Subject) -> float | None:
        """None when a filing may go now (and count it), else the seconds until one may."""
        now = self._clock()
        key = (subject.kind.value, subject.id)
        with self._lock:
            # forget windows that have passed, so the map holds recent filers only
            for other in [k for k, q in self._sent.items() if q and now - q[-1] >= self.window_s]:
                del self._sent[other]
            times = self._sent.setdefault(key, collections.deque())
            while times and now - times[0] >= self.window_s:
                times.popleft()
            if len(times) >= self.limit:
                return max(1.0, times[0] + self.window_s - now)
            times.append(now)
            return None


@dataclass
class FormErrors:
    """Errors to show next to the form's fields: field → (Chinese, English)."""

    fields: dict[str, tuple[str, str]] = field(default_factory=dict)

    def add(self, name: str, zh: str, en: str) -> None:
        if name not in self.fields:
            self.fields[name] = (zh, en)

    def __bool__(self) -> bool:
        return bool(self.fields)


@dataclass(frozen=True)
class _Upload:
    name: str
    declared: str
    content: bytes


@dataclass(frozen=True)
class _CaseForm:
    fields: dict[str, str]
    files: tuple[_Upload, ...]


def _attachment_error(exc: InvalidArgument, errors: FormErrors) -> None:
    """A content check's refusal, next to the attachments field, in both languages."""
    where = exc.field or ""
    if where.endswith(".media_type"):
        zh = "文件类型不符：只接受内容确为 PDF、JPEG 或 PNG 的文件，且类型须与内容一致"
    elif where.endswith(".name"):
        zh = "文件名不可用：请改用不超过 120 个字符的普通文件名"
    elif "empty" in exc.message:
        zh = "文件是空的"
    elif "bytes" in exc.message:
        zh = f"文件过大：所有附件合计不得超过 {MAX_ATTACHMENT_BYTES // 1024} KiB"
    else:
        zh = "文件内容不是 PDF、JPEG 或 PNG（按内容检查，不看文件名）"
    errors.add("attachments", zh, exc.message)


def _safe_name(filename: str | None, index: int) -> str:
    """A file's name as filed: the browser's base name, or one made up when it sent none."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    return name or f"attachment-{index + 1}"


class SubjectCases:
    """The case pages of one portal (registered by `routes`)."""

    def __init__(self, portal: _Portal) -> None:
        self.portal = portal
        self.limiter = FilingLimiter(
            limit=FILINGS_PER_WINDOW, window_s=FILING_WINDOW_S, clock=portal.clock
        )
        # a form token's filing is sent once: taken under this lock, then done or released
        self._forms_lock = threading.Lock()

    def routes(self) -> list[Route]:
        """The routes, to go before /me/{page} (which would take /me/cases)."""
        return [
            Route("/me/cases", self.my_cases),
            Route("/me/cases/filed", self.filed),
            Route(_FORM_ROUTE, self.form_page),
            # the one route whose body may be large: its own limit replaces the app's
            Route(_FORM_ROUTE, self.file, methods=["POST"], max_body_size=HARD_CASE_BODY_BYTES),
        ]

    # -- pages ------------------------------------------------------------------------------

    async def my_cases(self, request: Request) -> Response:
        portal = self.portal
        checked = await portal._subject_session(request, "/me/cases")
        if isinstance(checked, Response):
            return checked
        session = checked
        subject = session.subject
        assert subject is not None
        try:
            file = await portal._cached(
                session, "file", lambda: portal.backend.subject_file(subject)
            )
        except OsmanthusError as exc:
            return portal.backend_error(request, session, exc)
        return portal.render(
            request,
            "my_cases.html",
            session=session,
            page="cases",
            cases=cases_view(portal.backend.catalogue, file.parts),
            missing=missing_view(portal.backend.catalogue, file.missing),
            filing_online=portal.settings.mode is PortalMode.ONLINE,
            # a department's part too large for every case keeps the open ones whole and
            # leaves out the texts (then the cases) of the oldest decided ones
            cases_truncated=sorted(part.source for part in file.parts if part.cases_truncated),
        )

    async def filed(self, request: Request) -> Response:
        """The receipt of the session's last filing (kept in the session, never in the URL)."""
        portal = self.portal
        checked = await portal._subject_session(request, "/me/cases/filed")
        if isinstance(checked, Response):
            return checked
        receipt = checked.cache.get(_RECEIPT_KEY)
        if not isinstance(receipt, CaseReceipt):
            return RedirectResponse("/me/cases", status_code=303)
        return portal.render(
            request, "case_receipt.html", session=checked, page="cases", receipt=receipt
        )

    def _parse(self, request: Request) -> tuple[CaseKind, CaseTarget, str, str] | None:
        params = request.path_params
        try:
            kind = CaseKind(params["kind"])
            target = CaseTarget(params["target"])
        except ValueError:
            return None
        return kind, target, str(params["department"]), str(params["target_id"])

    async def _target(
        self, request: Request, session: Session, *, fetch: bool
    ) -> tuple[CaseKind, CaseTargetInfo] | Response:
        """The case's kind and its target in the subject's own file, or the refusal."""
        portal = self.portal
        subject = session.subject
        assert subject is not None
        parsed = self._parse(request)
        if parsed is None:
            return Response(status_code=404)
        kind, target, department, target_id = parsed
        if portal.settings.mode is PortalMode.KIOSK:
            await portal.call(
                lambda: portal.audit.record(
                    event="file_case",
                    decision="deny",
                    reason="cases are not filed at a kiosk",
                    subject=subject,
                )
            )
            return self._at_the_counter(request, session)
        if not fetch and "file" not in session.cache:
            return portal.message(
                request,
                status=400,
                title_zh="请重新打开表单",
                title_en="Open the form again",
                text_zh="会话中已没有您的档案，未提交任何内容。",
                text_en="This session no longer holds your file; nothing was filed.",
                session=session,
            )
        try:
            file = await portal._cached(
                session, "file", lambda: portal.backend.subject_file(subject)
            )
        except OsmanthusError as exc:
            return portal.backend_error(request, session, exc)
        found = find_target(
            portal.backend.catalogue,
            file.parts,
            department=department,
            target=target,
            target_id=target_id,
        )
        if found is None:
            await portal.call(
                lambda: portal.audit.record(
                    event="file_case",
                    decision="deny",
                    reason="the target is not in the subject's own file",
                    subject=subject,
                    extra={"department": department[:64], "target": target.value},
                )
            )
            return portal.message(
                request,
                status=404,
                title_zh="您的档案中没有这条信息",
                title_en="This is not in your file",
                text_zh="只能就本人档案中的记录或名单条目提出异议或申请修复。请从“我的记录”或“红黑名单”页面进入。",
                text_en=(
                    "You can object to, or apply to repair, only a record or list entry in your "
                    "own file. Start from “My records” or “List entries”."
                ),
                session=session,
            )
        if not found.allows(kind):
            return self._not_applicable(request, session, kind, found)
        return kind, found

    def _at_the_counter(self, request: Request, session: Session) -> Response:
        return self.portal.message(
            request,
            status=403,
            title_zh="请在网上或服务窗口办理",
            title_en="File online or at the counter",
            text_zh="自助查询机不受理异议和信用修复申请；请登录网上自助服务办理，或到服务窗口办理。",
            text_en=(
                "Objections and credit repair are not filed at the kiosk: file them on the "
                "online self-service site or at the service counter."
            ),
            session=session,
        )

    def _not_applicable(
        self, request: Request, session: Session, kind: CaseKind, found: CaseTargetInfo
    ) -> Response:
        if found.open_case is not None:
            zh = f"这条信息已有处理中的异议或修复申请（{found.open_case}），请等待处理结果。"
            en = (
                f"A case about it is open already ({found.open_case}); wait for its outcome "
                "(see My cases)."
            )
            status = 409
        elif found.case_key is None:
            zh, en = (
                "该部门暂不受理网上申请，请到服务窗口办理。",
                ("This department does not take cases online yet; file at the service counter."),
            )
            status = 503
        else:
            zh = "信用修复仅适用于黑名单条目和计分中的扣分（行政处罚）记录。"
            en = (
                "Credit repair applies to black-list entries and to deduction (penalty) records "
                "that count; you may file an objection instead."
            )
            status = 409
        del kind
        return self.portal.message(
            request,
            status=status,
            title_zh="无法提交此申请",
            title_en="This cannot be filed",
            text_zh=zh,
            text_en=en,
            session=session,
        )

    def _letter(self, subject: Subject, found: CaseTargetInfo) -> str:
        return commitment_letter(
            subject_kind=subject.kind,
            subject_id=subject.id,
            department=self.portal.backend.catalogue.department(DepartmentId(found.department)),
            target=found.target,
            target_id=found.target_id,
        )

    def _form_token(self, session: Session) -> str:
        forms: dict[str, Any] = session.cache.setdefault(_FORMS_KEY, {})
        token = new_token(16)
        forms[token] = None
        while len(forms) > MAX_FORMS_PER_SESSION:
            del forms[next(iter(forms))]
        return token

    def _render_form(
        self,
        request: Request,
        session: Session,
        kind: CaseKind,
        found: CaseTargetInfo,
        *,
        status: int = 200,
        errors: FormErrors | None = None,
        values: dict[str, str] | None = None,
        form_token: str | None = None,
    ) -> Response:
        """The form, with a new form token unless `form_token` (one whose filing's answer was
        lost: sent again, it goes with the same nonce) is given."""
        subject = session.subject
        assert subject is not None
        grounds = [
            {"value": g.value, "zh": GROUNDS[g.value][0], "en": GROUNDS[g.value][1]}
            for g in _grounds(kind, found.target)
        ]
        return self.portal.render(
            request,
            "case_form.html",
            session=session,
            status=status,
            page="cases",
            kind=kind.value,
            target=found,
            target_kind=found.target.value,
            action=request.url.path,
            grounds=grounds,
            letter=self._letter(subject, found) if kind is CaseKind.REPAIR else "",
            errors=(errors or FormErrors()).fields,
            values=values or {},
            form_token=form_token or self._form_token(session),
            max_attachments=MAX_ATTACHMENTS,
            max_kib=MAX_ATTACHMENT_BYTES // 1024,
        )

    async def form_page(self, request: Request) -> Response:
        checked = await self.portal._subject_session(request, _FORM_ROUTE)
        if isinstance(checked, Response):
            return checked
        target = await self._target(request, checked, fetch=True)
        if isinstance(target, Response):
            return target
        kind, found = target
        return self._render_form(request, checked, kind, found)

    # -- the filing -------------------------------------------------------------------------

    async def _read_form(self, request: Request) -> _CaseForm | None:
        """The multipart form, or None when it is not one (or breaks its bounds)."""
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            return None
        try:
            async with request.form(
                max_files=MAX_ATTACHMENTS * 2,
                max_fields=_MAX_FIELDS,
                max_part_size=MAX_CASE_BODY_BYTES,
            ) as form:
                fields: dict[str, str] = {}
                files: list[_Upload] = []
                for name, value in form.multi_items():
                    if isinstance(value, UploadFile):
                        if name != "attachments":
                            continue
                        content = await value.read(MAX_CASE_BODY_BYTES + 1)
                        if not value.filename and not content:
                            continue  # a file input left empty
                        files.append(
                            _Upload(
                                name=_safe_name(value.filename, len(files)),
                                declared=(value.content_type or "").split(";")[0].strip(),
                                content=content,
                            )
                        )
                    elif name not in fields:
                        fields[name] = value
        except HTTPException:
            return None
        return _CaseForm(fields=fields, files=tuple(files))

    async def file(self, request: Request) -> Response:
        portal = self.portal
        checked = await portal._subject_session(request, _FORM_ROUTE)
        if isinstance(checked, Response):
            return checked
        session = checked
        subject = session.subject
        assert subject is not None
        length = request.headers.get("content-length", "")
        if length and (not length.isdigit() or int(length) > MAX_CASE_BODY_BYTES):
            # refused unread: the form again (from the file this session holds), the error
            # next to the attachments
            target = await self._target(request, session, fetch=False)
            if isinstance(target, Response):
                return target
            errors = FormErrors()
            errors.add(
                "attachments",
                f"提交的内容过大：所有附件合计不得超过 {MAX_ATTACHMENT_BYTES // 1024} KiB，"
                "请重新选择文件",
                f"The form is too large: the attachments may come to "
                f"{MAX_ATTACHMENT_BYTES // 1024} KiB together. Choose the files again.",
            )
            return self._render_form(request, session, *target, status=413, errors=errors)
        form = await self._read_form(request)
        if form is None or not csrf_ok(session, form.fields.get(CSRF_FIELD)):
            return await portal.call(portal.csrf_refused, request, session)
        target = await self._target(request, session, fetch=True)
        if isinstance(target, Response):
            return target
        kind, found = target
        values = {
            "statement": form.fields.get("statement", ""),
            "ground": form.fields.get("ground", ""),
        }
        errors = FormErrors()
        draft = self._draft(subject, kind, found, form, errors)
        if draft is None:
            return self._render_form(
                request, session, kind, found, status=400, errors=errors, values=values
            )
        token = form.fields.get("form_token", "")
        earlier = self._take_form(session, token, _content_digest(found.department, draft))
        if isinstance(earlier, CaseReceipt):
            session.cache[_RECEIPT_KEY] = earlier
            return RedirectResponse("/me/cases/filed", status_code=303)
        if earlier is None:
            errors.add(
                "form",
                "这份申请正在提交，请勿重复提交。",
                "This form is being filed already; do not send it twice.",
            )
            return self._render_form(
                request, session, kind, found, status=409, errors=errors, values=values
            )
        wait = self.limiter.acquire(subject)
        if wait is not None:
            self._release_form(session, token)
            minutes = max(1, round(wait / 60))
            await portal.call(
                lambda: portal.audit.record(
                    event="file_case",
                    decision="deny",
                    reason=f"rate limited in the portal: {FILINGS_PER_WINDOW} filings per "
                    f"{int(FILING_WINDOW_S // 60)} minutes",
                    subject=subject,
                )
            )
            errors.add(
                "form",
                f"提交过于频繁：每 {int(FILING_WINDOW_S // 60)} 分钟最多 "
                f"{FILINGS_PER_WINDOW} 份申请，请约 {minutes} 分钟后再试。",
                f"Too many filings: at most {FILINGS_PER_WINDOW} in "
                f"{int(FILING_WINDOW_S // 60)} minutes. Try again in about {minutes} min.",
            )
            return self._render_form(
                request, session, kind, found, status=429, errors=errors, values=values
            )
        assert found.case_key is not None
        case_key = found.case_key
        nonce = earlier
        try:
            try:
                receipt = await portal.call(
                    lambda: portal.backend.file_case(
                        subject,
                        department=found.department,
                        draft=draft,
                        case_key=case_key,
                        nonce=nonce,
                    )
                )
            except OsmanthusError as exc:
                return await self._refused(request, session, kind, found, exc, values, token)
            self._done_form(session, token, receipt)
        finally:
            # whatever happened (an error that is not the federation's too), the form may be
            # sent again, with its nonce: a filing the node took answers with its receipt
            self._release_form(session, token)
        await portal.call(
            lambda: portal.audit.record(
                event="file_case",
                decision="allow",
                reason=f"{kind.value} filed",
                subject=subject,
                extra={
                    "case_id": receipt.case_id,
                    "department": found.department,
                    "target": found.target.value,
                },
            )
        )
        # the file and score are stale now (a record under an open case is disputed)
        for key in ("file", "summary"):
            session.cache.pop(key, None)
        session.cache[_RECEIPT_KEY] = receipt
        return RedirectResponse("/me/cases/filed", status_code=303)

    def _draft(
        self,
        subject: Subject,
        kind: CaseKind,
        found: CaseTargetInfo,
        form: _CaseForm,
        errors: FormErrors,
    ) -> CaseDraft | None:
        """The draft the form describes, checked; None with `errors` filled in otherwise."""
        grounds = _grounds(kind, found.target)
        ground: CaseGround | None = grounds[0] if len(grounds) == 1 else None
        if ground is None:
            try:
                chosen = CaseGround(form.fields.get("ground", ""))
            except ValueError:
                chosen = None
            if chosen in grounds:
                ground = chosen
            else:
                errors.add("ground", "请选择异议的理由", "Choose what is wrong")
        statement = form.fields.get("statement", "").replace("\r\n", "\n").replace("\r", "\n")
        if not statement.strip():
            errors.add("statement", "请填写说明", "Say what is wrong, and why")
        letter = ""
        if kind is CaseKind.REPAIR:
            letter = self._letter(subject, found)
            if form.fields.get("confirm") != CONFIRMED:
                errors.add(
                    "confirm",
                    "请阅读信用承诺书并勾选确认",
                    "Read the commitment letter and tick the box to confirm it",
                )
        if len(form.files) > MAX_ATTACHMENTS:
            errors.add(
                "attachments",
                f"最多可上传 {MAX_ATTACHMENTS} 个文件（您选择了 {len(form.files)} 个）",
                f"At most {MAX_ATTACHMENTS} files; you chose {len(form.files)}",
            )
        total = sum(len(f.content) for f in form.files)
        if total > MAX_ATTACHMENT_BYTES:
            errors.add(
                "attachments",
                f"所有附件合计不得超过 {MAX_ATTACHMENT_BYTES // 1024} KiB"
                f"（现为 {total // 1024} KiB）",
                f"The attachments come to {total // 1024} KiB; at most "
                f"{MAX_ATTACHMENT_BYTES // 1024} KiB together",
            )
        attachments: list[AttachmentFile] = []
        if "attachments" not in errors.fields:
            for index, upload in enumerate(form.files):
                try:
                    attachments.append(
                        check_attachment(upload.name, upload.declared, upload.content, index=index)
                    )
                except InvalidArgument as exc:
                    _attachment_error(exc, errors)
                    break
        if errors or ground is None:
            return None
        try:
            return CaseDraft(
                kind=kind,
                ground=ground,
                target=found.target,
                target_id=found.target_id,
                statement=statement,
                attachments=tuple(attachments),
                commitment_letter=letter,
            ).checked()
        except InvalidArgument as exc:
            _field_error(exc, errors)
            return None

    async def _refused(
        self,
        request: Request,
        session: Session,
        kind: CaseKind,
        found: CaseTargetInfo,
        exc: OsmanthusError,
        values: dict[str, str],
        token: str,
    ) -> Response:
        """The node's (or coordinator's) refusal, on the form, in both languages."""
        portal = self.portal
        subject = session.subject
        await portal.call(
            lambda: portal.audit.record(
                event="file_case",
                decision="deny",
                reason=f"refused by the federation: {type(exc).__name__}",
                subject=subject,
                extra={"department": found.department, "target": found.target.value},
            )
        )
        errors = FormErrors()
        if isinstance(exc, RateLimited):
            zh, status = "已达到受理部门的申请次数上限，请稍后再试。", 429
        elif isinstance(exc, NotFound):
            zh, status = "受理部门未找到这条关于您的信息。", 404
        elif isinstance(exc, FailedPrecondition):
            zh, status = "受理部门无法受理此申请（例如已有处理中的申请）。", 409
        elif isinstance(exc, InvalidArgument):
            _field_error(exc, errors)
            return self._render_form(
                request, session, kind, found, status=400, errors=errors, values=values
            )
        elif isinstance(exc, Unavailable | DeadlineExceeded):
            # the node may have filed it: the same form (its token, so its nonce) sent again
            # with the same content gets the first receipt, never a second case
            errors.add(
                "form",
                "暂时无法确认申请是否已提交。请重新选择相同的附件后再次提交，同一申请不会被重复受理。",
                "We could not learn whether your case was filed. Choose the same files again "
                "and send the form once more: the same case is never filed twice.",
            )
            return self._render_form(
                request,
                session,
                kind,
                found,
                status=503,
                errors=errors,
                values=values,
                form_token=token or None,
            )
        else:
            return portal.backend_error(request, session, exc)
        errors.add("form", zh, exc.message)
        return self._render_form(
            request, session, kind, found, status=status, errors=errors, values=values
        )

    # -- form tokens: one filing per form shown ---------------------------------------------

    def _take_form(self, session: Session, token: str, digest: bytes) -> CaseReceipt | bytes | None:
        """What became of this form: its receipt, None while it is being filed, or else the
        nonce to file it with (now marked pending): the one it was sent with before if its
        content (`digest`) is the same, a fresh one otherwise."""
        with self._forms_lock:
            forms: dict[str, Any] = session.cache.setdefault(_FORMS_KEY, {})
            state = forms.get(token)
            if isinstance(state, _FormState) and state.receipt is not None:
                return state.receipt
            if isinstance(state, _FormState) and state.pending:
                return None
            if isinstance(state, _FormState) and state.digest == digest and state.nonce:
                nonce = state.nonce
            else:
                nonce = new_nonce()
            if token:
                forms[token] = _FormState(pending=True, nonce=nonce, digest=digest)
                while len(forms) > MAX_FORMS_PER_SESSION:
                    del forms[next(iter(forms))]
            return nonce

    def _release_form(self, session: Session, token: str) -> None:
        """The form is no longer being filed (its receipt and nonce are kept)."""
        with self._forms_lock:
            forms: dict[str, Any] = session.cache.setdefault(_FORMS_KEY, {})
            state = forms.get(token)
            if isinstance(state, _FormState) and state.pending:
                forms[token] = replace(state, pending=False)

    def _done_form(self, session: Session, token: str, receipt: CaseReceipt) -> None:
        with self._forms_lock:
            forms: dict[str, Any] = session.cache.setdefault(_FORMS_KEY, {})
            state = forms.get(token)
            if token and isinstance(state, _FormState):
                forms[token] = replace(state, pending=False, receipt=receipt)


def _content_digest(department: str, draft: CaseDraft) -> bytes:
    """What a form carried, as the node compares a nonce's filings: the department and the
    encoded case (statement, attachments, letter), hashed."""
    return hashlib.sha256(department.encode() + b"\x00" + encode_draft(draft)).digest()


def _grounds(kind: CaseKind, target: CaseTarget) -> list[CaseGround]:
    return sorted(GROUND_RULES[(kind, target)], key=lambda g: g.value)


def page_actions(portal: _Portal, parts: Sequence[SubjectFile]) -> dict[str, Any]:
    """What the records and lists pages need to offer a case on each row: the rows' targets
    (by caseviews.action_key) and whether cases are filed here (online) or not (a kiosk)."""
    return {
        "case_actions": case_targets(portal.backend.catalogue, parts),
        "filing_online": portal.settings.mode is PortalMode.ONLINE,
    }


def _field_error(exc: InvalidArgument, errors: FormErrors) -> None:
    """A draft check's refusal next to the field it names."""
    name = (exc.field or "form").split("[", 1)[0].split(".", 1)[0]
    if name == "attachments":
        _attachment_error(exc, errors)
    elif name == "statement":
        errors.add("statement", "说明不符合要求（最多 2000 字，不含控制字符）", exc.message)
    elif name == "commitment_letter":
        errors.add("confirm", "信用承诺书无法使用，请重新打开表单", exc.message)
    else:
        errors.add("form", "申请内容不符合要求", exc.message)

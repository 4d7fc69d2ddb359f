"""Enterprise credit reports: built from a decrypted answer, signed by their issuer, checkable."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import hashlib
import html
import io
import itertools
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, AnyStr, Final, Literal, NoReturn
from xml.sax.saxutils import escape as xml_escape

import reportlab
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pypdf import Configuration, PdfReader, apply_configuration, get_configuration
from reportlab.lib import colors
from reportlab.lib.enums import TA_RIGHT
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfbase.pdfdoc import PDFArray, PDFDictionary, PDFName, PDFStream, PDFString
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    Flowable,
    HRFlowable,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from osmanthus.core.bundle import key_id_of
from osmanthus.core.catalogue import Catalogue, ListColour
from osmanthus.core.clock import china_date
from osmanthus.core.errors import CryptoError, InvalidArgument, NotFound, OsmanthusError
from osmanthus.core.ids import validate_uscc
from osmanthus.core.strictjson import unique_keys
from osmanthus.core.types import Shape, SubjectKind
from sdk.results import EnterpriseScore, ListSearchResult, RestrictionResult

#: the `format` of the signed content; a verifier refuses any other
REPORT_FORMAT: Final = "osmanthus-enterprise-report/3"
#: the `format` of the envelope embedded in the HTML page or attached to the PDF
ENVELOPE_FORMAT: Final = "osmanthus-signed-report/1"
#: the id of the <script> element carrying the envelope
EMBED_ID: Final = "osmanthus-report"
#: "rpt_" and 22 base64url characters (128 random bits)
REPORT_ID_PATTERN: Final = re.compile(r"rpt_[A-Za-z0-9_-]{22}")
#: the verification code: 80 bits of SHA-256 of the content, base32 in four groups of four
CODE_PATTERN: Final = re.compile(r"[A-Z2-7]{4}(?:-[A-Z2-7]{4}){3}")
MAX_ISSUER_CHARS: Final = 200
#: a report page is about 10 kB; anything far larger is refused before parsing
MAX_REPORT_CHARS: Final = 1 << 20
#: a report file, an HTML page in UTF-8 or a PDF (about 25 kB), is at most this many bytes
MAX_REPORT_BYTES: Final = 4 * MAX_REPORT_CHARS
#: the signed content of a report is about 3 kB (20 kB with 65 departments); far larger content
#: is not signed, so that every signed report's page fits in MAX_REPORT_CHARS (it embeds the
#: content in base64 and shows it escaped, up to 5 characters a byte, "&amp;" for "&") and a
#: verifier renders any signed report again in seconds (reportlab's time grows faster than
#: the text: a 60 kB paragraph takes 2-5 s, a 120 kB one minutes)
MAX_CONTENT_BYTES: Final = 64 * 1024
#: the envelope (the content in base64, the signature, JSON) is at most this many bytes once
#: decompressed: a verifier stops decoding an embedded file there
MAX_ENVELOPE_BYTES: Final = 2 * MAX_CONTENT_BYTES
#: the name of the embedded file that carries the envelope in a PDF report
PDF_ATTACHMENT: Final = "osmanthus-report.json"
_CODE_BYTES: Final = 10
#: the revision of the code that draws a report. Bump it with any change that alters the bytes a
#: signed report renders to (layout, wording, styles, markup, envelope): a verifier re-renders
#: the report, and a file drawn by another revision must be told apart from an altered one.
#: The golden digests in tests/unit/test_report.py catch such a change.
_RENDERER_REVISION: Final = 2
#: list windows are counted in days of China Standard Time (UTC+8)
#: how far the day of the query may lie outside an entry's window: the coordinator lets a node
#: judge "in view" by its own date, a day ahead or behind near midnight (coordinator/lists.py)
_WINDOW_SLACK: Final = timedelta(days=1)


class ReportError(OsmanthusError):
    """A report was refused; the subclass says whether it is malformed or not genuine."""


class MalformedReport(ReportError, InvalidArgument):
    """The file is not a report this version can check (no embedded content, wrong format, bad
    fields, unreadable)."""


class RendererMismatch(MalformedReport):
    """The report's signature verifies, but it was drawn by another version of the renderer and
    the file differs from what this version draws: only the version that issued it can tell
    whether the file was altered. `field` is "renderer" or "format"."""


class TamperedReport(ReportError, CryptoError):
    """The report is not what its issuer signed: the signature, the key or the verification
    code does not match the signed content, or the file is not exactly what the signed report
    renders to. `field` says which."""

    # a refusal, like a consent receipt with a bad signature: the input is well-formed
    exit_code = 4


@dataclass(frozen=True)
class ReportRenderer:
    """The version of the code that draws each format of a report, signed with it."""

    html: str
    #: a PDF's bytes also depend on reportlab (its font metrics, its PDF writer)
    pdf: str


#: the renderer of this version of Osmanthus
RENDERER: Final = ReportRenderer(
    html=f"osmanthus-report-html/{_RENDERER_REVISION}",
    pdf=f"osmanthus-report-pdf/{_RENDERER_REVISION} reportlab/{reportlab.Version}",
)
_MAX_RENDERER_CHARS: Final = 100


@dataclass(frozen=True)
class ReportBonus:
    """One bonus category of the breakdown; `points` is None when its owner did not answer."""

    name: str
    label: str
    cap: int
    points: int | None


@dataclass(frozen=True)
class ReportRestriction:
    """One joint-punishment measure and whether it was in force at the time of the query."""

    measure: str
    name: str
    name_zh: str
    in_force: bool


@dataclass(frozen=True)
class ReportDepartment:
    """A department's part in the score: answered (under which rules) or why it was missing."""

    department: str
    name: str
    detail: str
    rules_version: str


@dataclass(frozen=True)
class ReportListEntry:
    """A red or black list entry about the enterprise, in public view on the day of the query:
    the fields the law publishes, with the list's and the department's names."""

    entry_id: str
    department: str
    department_name: str
    list: str
    list_name: str
    list_name_zh: str
    colour: ListColour
    #: the enterprise's name as the department published it
    subject_name: str
    legal_basis: str
    reason: str
    #: first and last day in public view (China Standard Time), both included
    window_start: date
    window_end: date
    #: red lists: the facilitation class the entry grants ("AA"), where the department uses one
    facilitation_class: str | None

    @property
    def facilitation(self) -> str | None:
        """The class as the report shows it: "AA (customs_advanced_certified, until ...)"."""
        if self.facilitation_class is None:
            return None
        return f"{self.facilitation_class} ({self.list}, until {self.window_end.isoformat()})"


@dataclass(frozen=True)
class EnterpriseReport:
    """What a report attests: the issuer's decrypted aggregate for one enterprise at one time."""

    report_id: str
    subject_id: str
    grade: str
    score: int
    base: int
    floor: int
    ceiling: int
    #: (letter, minimum score), highest first: the scale the grade was read from
    grade_scale: tuple[tuple[str, int], ...]
    deductions: int
    bonuses: tuple[ReportBonus, ...]
    restrictions: tuple[ReportRestriction, ...]
    answered: tuple[ReportDepartment, ...]
    missing: tuple[ReportDepartment, ...]
    #: the departments that answered the restrictions query (those able to set a trigger)
    restrictions_answered: tuple[str, ...]
    #: the red and black list entries about the enterprise in public view on the day of the query
    list_entries: tuple[ReportListEntry, ...]
    #: the departments that publish lists about enterprises (in the issuer's catalogue)
    list_departments: tuple[str, ...]
    #: the list-publishing departments that did not answer the list search, and why: their
    #: entries, if any, are not in `list_entries`
    lists_missing: tuple[ReportDepartment, ...]
    score_query_id: str
    restrictions_query_id: str
    #: when the issuer asked (UTC, whole seconds)
    issued_at: datetime
    issuer: str
    #: the renderer that drew the report's files
    renderer: ReportRenderer

    @property
    def in_force(self) -> tuple[ReportRestriction, ...]:
        return tuple(r for r in self.restrictions if r.in_force)

    @property
    def bonus_total(self) -> int:
        return sum(b.points for b in self.bonuses if b.points is not None)

    @property
    def facilitation(self) -> tuple[str, ...]:
        """The facilitation classes the red-list entries grant, as the report shows them."""
        return tuple(e.facilitation for e in self.list_entries if e.facilitation is not None)

    @property
    def query_day(self) -> date:
        """The day of the query in China Standard Time, the day list windows are counted in."""
        return china_date(self.issued_at)


@dataclass(frozen=True)
class SignedReport:
    """A report with its canonical content, the issuer's Ed25519 signature over it, and the
    short verification code derived from it."""

    report: EnterpriseReport
    content: bytes
    signature: bytes
    key_id: str
    verification_code: str


# --- building -------------------------------------------------------------------------------


def _department(catalogue: Catalogue, department: str, detail: str, rules: str) -> ReportDepartment:
    try:
        name = catalogue.department(department).name
    except (NotFound, InvalidArgument):
        # the coordinator named a department this catalogue lacks: show its id, hide nothing
        name = department
    return ReportDepartment(department=department, name=name, detail=detail, rules_version=rules)


def _check_issuer(issuer: str, *, error: type[OsmanthusError] = InvalidArgument) -> str:
    if (
        not 0 < len(issuer) <= MAX_ISSUER_CHARS
        or not issuer.isprintable()
        or issuer != issuer.strip()
    ):
        raise error(
            f"{issuer[:40]!r} is not an issuer name: 1-{MAX_ISSUER_CHARS} printable characters "
            "without leading or trailing spaces",
            field="issuer",
        )
    return issuer


def _in_window(day: date, start: date, end: date) -> bool:
    return start - _WINDOW_SLACK <= day <= end + _WINDOW_SLACK


def _list_entries(
    lists: ListSearchResult, *, subject: str, catalogue: Catalogue, day: date
) -> tuple[ReportListEntry, ...]:
    """The entries of a search by subject, checked to be about `subject` and in view on `day`,
    with their lists' names from the catalogue."""
    if (
        lists.subject_kind is not SubjectKind.ENTERPRISE
        or lists.subject_id != subject
        or lists.list_id is not None
        or lists.next_page_token
    ):
        asked = lists.list_id or "every list"
        raise InvalidArgument(
            f"the list search is for {lists.subject_kind.value} {str(lists.subject_id)[:40]!r} "
            f"on {asked[:40]}; a report needs the search of enterprise {subject!r} on every "
            "list, in one answer (search_lists(kind=ENTERPRISE, subject=CODE))",
            field="lists",
        )
    out = []
    for i, e in enumerate(lists.entries):
        where = f"lists.entries[{i}]"
        if e.subject_kind is not SubjectKind.ENTERPRISE or e.subject_id != subject:
            raise InvalidArgument(
                f"entry {e.entry_id[:40]!r} is about {e.subject_id[:40]!r}, not {subject!r}",
                field=where,
            )
        if not _in_window(day, e.window_start, e.window_end):
            raise InvalidArgument(
                f"entry {e.entry_id[:40]!r} is in view from {e.window_start} to {e.window_end}, "
                f"not on {day}, the day of the query: search the lists again",
                field=where,
            )
        if e.facilitation_class is not None and e.colour is not ListColour.RED:
            raise InvalidArgument(
                f"entry {e.entry_id[:40]!r} is on a black list but grants facilitation class "
                f"{e.facilitation_class[:20]!r}; only red lists grant one",
                field=where,
            )
        list_type = next((t for t in catalogue.lists if t.id == e.list), None)
        if list_type is None:
            # a list this catalogue lacks (the coordinator's is newer): show its id, hide nothing
            names = (e.list, "")
        elif (list_type.department, list_type.colour) != (e.department, e.colour):
            raise InvalidArgument(
                f"entry {e.entry_id[:40]!r} is a {e.colour.value} entry of {e.department} on "
                f"{e.list}, which your catalogue has as {list_type.colour.value} and published "
                f"by {list_type.department}: the coordinator's catalogue differs from yours",
                field=where,
            )
        else:
            names = (list_type.name, list_type.name_zh)
        out.append(
            ReportListEntry(
                entry_id=e.entry_id,
                department=e.department,
                department_name=_department(catalogue, e.department, "", "").name,
                list=e.list,
                list_name=names[0],
                list_name_zh=names[1],
                colour=e.colour,
                subject_name=e.subject_name,
                legal_basis=e.legal_basis,
                reason=e.reason,
                window_start=e.window_start,
                window_end=e.window_end,
                facilitation_class=e.facilitation_class,
            )
        )
    return tuple(out)


def build_enterprise_report(
    *,
    score: EnterpriseScore,
    restrictions: RestrictionResult,
    lists: ListSearchResult,
    catalogue: Catalogue,
    issuer: str,
    issued_at: datetime,
) -> EnterpriseReport:
    """The report of one BREAKDOWN score, the restrictions answer and the red and black list
    search (`Client.search_lists(kind=ENTERPRISE, subject=...)`) for the same enterprise.

    Every measure of the catalogue must have been asked, so that a report never reads "no
    restriction" for a measure nobody asked about; every list entry must be about the
    enterprise and in view on the day of the query (China Standard Time). The list-publishing
    departments that did not answer are named in the report, so that an empty list section is
    not read as "on no list".
    """
    subject = validate_uscc(score.subject_id, field="subject_id")
    if restrictions.subject_id != subject:
        raise InvalidArgument(
            f"the restrictions are for {restrictions.subject_id[:40]!r}, the score for {subject!r}",
            field="restrictions",
        )
    if score.shape is not Shape.BREAKDOWN or score.deductions is None or score.grade is None:
        raise InvalidArgument(
            f"a report needs a graded BREAKDOWN score, not {score.shape.value}", field="score"
        )
    if issued_at.tzinfo is None:
        raise InvalidArgument("the time of the query must carry a time zone", field="issued_at")
    issued_at = issued_at.astimezone(UTC).replace(microsecond=0)
    list_entries = _list_entries(
        lists,
        subject=subject,
        catalogue=catalogue,
        day=china_date(issued_at),
    )
    model = catalogue.model(SubjectKind.ENTERPRISE)
    if score.base != model.base:
        raise InvalidArgument(
            f"the score's base {score.base} is not the catalogue's {model.base}", field="base"
        )
    asked = set(restrictions.restricted)
    known = [m.id for m in catalogue.measures]
    if asked != set(known):
        missing = sorted(set(known) - asked) or sorted(asked - set(known))
        raise InvalidArgument(
            "a report states every measure of the catalogue; "
            + ("not asked: " if set(known) - asked else "not in the catalogue: ")
            + ", ".join(missing),
            field="restrictions",
        )
    bonuses = []
    for category in model.categories:
        if category.name not in score.bonuses:
            raise InvalidArgument(
                f"the score has no value for category {category.name}", field="bonuses"
            )
        bonuses.append(
            ReportBonus(
                name=category.name,
                label=category.label,
                cap=category.cap,
                points=score.bonuses[category.name],
            )
        )
    return EnterpriseReport(
        report_id="rpt_" + secrets.token_urlsafe(16),
        subject_id=subject,
        grade=score.grade,
        score=score.score,
        base=score.base,
        floor=model.floor,
        ceiling=model.ceiling,
        grade_scale=model.grades,
        deductions=score.deductions,
        bonuses=tuple(bonuses),
        restrictions=tuple(
            ReportRestriction(
                measure=m.id, name=m.name, name_zh=m.name_zh, in_force=restrictions.restricted[m.id]
            )
            for m in catalogue.measures
        ),
        answered=tuple(
            _department(catalogue, s.department, s.detail, s.rules_version) for s in score.answered
        ),
        missing=tuple(
            _department(catalogue, s.department, s.detail, s.rules_version) for s in score.missing
        ),
        restrictions_answered=tuple(s.department for s in restrictions.answered),
        list_entries=list_entries,
        list_departments=catalogue.list_departments(SubjectKind.ENTERPRISE),
        lists_missing=tuple(
            _department(catalogue, s.department, s.detail, s.rules_version) for s in lists.missing
        ),
        score_query_id=score.query_id,
        restrictions_query_id=restrictions.query_id,
        issued_at=issued_at,
        issuer=_check_issuer(issuer),
        renderer=RENDERER,
    )


# --- canonical content ----------------------------------------------------------------------


def _time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _to_content(report: EnterpriseReport) -> dict[str, Any]:
    def department(d: ReportDepartment) -> dict[str, str]:
        return {
            "department": d.department,
            "name": d.name,
            "detail": d.detail,
            "rules_version": d.rules_version,
        }

    return {
        "format": REPORT_FORMAT,
        "report_id": report.report_id,
        "subject_id": report.subject_id,
        "grade": report.grade,
        "score": report.score,
        "base": report.base,
        "floor": report.floor,
        "ceiling": report.ceiling,
        "grade_scale": [[letter, minimum] for letter, minimum in report.grade_scale],
        "deductions": report.deductions,
        "bonuses": [
            {"name": b.name, "label": b.label, "cap": b.cap, "points": b.points}
            for b in report.bonuses
        ],
        "restrictions": [
            {"measure": r.measure, "name": r.name, "name_zh": r.name_zh, "in_force": r.in_force}
            for r in report.restrictions
        ],
        "answered": [department(d) for d in report.answered],
        "missing": [department(d) for d in report.missing],
        "restrictions_answered": list(report.restrictions_answered),
        "list_entries": [
            {
                "entry_id": e.entry_id,
                "department": e.department,
                "department_name": e.department_name,
                "list": e.list,
                "list_name": e.list_name,
                "list_name_zh": e.list_name_zh,
                "colour": e.colour.value,
                "subject_name": e.subject_name,
                "legal_basis": e.legal_basis,
                "reason": e.reason,
                "window_start": e.window_start.isoformat(),
                "window_end": e.window_end.isoformat(),
                "facilitation_class": e.facilitation_class,
            }
            for e in report.list_entries
        ],
        "list_departments": list(report.list_departments),
        "lists_missing": [department(d) for d in report.lists_missing],
        "score_query_id": report.score_query_id,
        "restrictions_query_id": report.restrictions_query_id,
        "issued_at": _time(report.issued_at),
        "issuer": report.issuer,
        "renderer": {"html": report.renderer.html, "pdf": report.renderer.pdf},
    }


def canonical_content(report: EnterpriseReport) -> bytes:
    """The bytes the issuer signs: the content as JSON, keys sorted, no spaces, UTF-8."""
    return json.dumps(
        _to_content(report), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


def verification_code(content: bytes) -> str:
    """The first 80 bits of SHA-256 of the content in base32, as XXXX-XXXX-XXXX-XXXX."""
    text = base64.b32encode(hashlib.sha256(content).digest()[:_CODE_BYTES]).decode("ascii")
    return "-".join(text[i : i + 4] for i in range(0, len(text), 4))


def sign_report(report: EnterpriseReport, *, private_key: Ed25519PrivateKey) -> SignedReport:
    """Sign the report's canonical content with the issuer's Ed25519 key."""
    content = canonical_content(report)
    if len(content) > MAX_CONTENT_BYTES:
        raise InvalidArgument(
            f"the report's content is {len(content)} bytes; a report is at most "
            f"{MAX_CONTENT_BYTES} (the departments' details or the list entries are too long "
            "to print)",
            field="report",
        )
    return SignedReport(
        report=report,
        content=content,
        signature=private_key.sign(content),
        key_id=key_id_of(private_key.public_key()),
        verification_code=verification_code(content),
    )


class _Fields:
    """Reads the content's JSON with a MalformedReport naming the first field that is wrong."""

    def __init__(self, raw: Mapping[str, Any], prefix: str = "") -> None:
        self.raw = raw
        self.prefix = prefix

    def fail(self, key: str, problem: str) -> MalformedReport:
        return MalformedReport(problem, field=f"{self.prefix}{key}")

    def get(self, key: str, kind: type | tuple[type, ...]) -> Any:
        if key not in self.raw:
            raise self.fail(key, "missing from the signed content")
        value = self.raw[key]
        # bool is an int in Python: never accept one where a number is meant
        if isinstance(value, bool) and kind is not bool:
            raise self.fail(key, f"{value!r} is not of the expected type")
        if not isinstance(value, kind):
            raise self.fail(key, f"{str(value)[:40]!r} is not of the expected type")
        return value

    def text(self, key: str) -> str:
        value: str = self.get(key, str)
        return value

    def integer(self, key: str) -> int:
        value: int = self.get(key, int)
        return value

    def optional_integer(self, key: str) -> int | None:
        if self.raw.get(key) is None and key in self.raw:
            return None
        return self.integer(key)

    def optional_text(self, key: str) -> str | None:
        if self.raw.get(key) is None and key in self.raw:
            return None
        return self.text(key)

    def day(self, key: str) -> date:
        value = self.text(key)
        try:
            if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
                raise ValueError(value)
            return date.fromisoformat(value)
        except ValueError:
            raise self.fail(key, f"{value[:20]!r} is not a date like 2026-11-26") from None

    def department_ids(self, key: str) -> tuple[str, ...]:
        items = self.get(key, list)
        if not all(isinstance(item, str) for item in items):
            raise self.fail(key, "is not a list of department ids")
        return tuple(items)

    def objects(self, key: str, fields: frozenset[str]) -> list[_Fields]:
        """The list of objects under `key`, each with exactly the keys `fields`."""
        items = self.get(key, list)
        out = []
        for i, item in enumerate(items):
            where = f"{key}[{i}]"
            if not isinstance(item, dict):
                raise self.fail(where, "is not an object")
            unknown = set(item) - fields
            if unknown:
                raise self.fail(f"{where}.{sorted(unknown)[0][:40]}", "is not a field of it")
            out.append(_Fields(item, f"{self.prefix}{where}."))
        return out


_DEPARTMENT_FIELDS: Final = frozenset({"department", "name", "detail", "rules_version"})
_BONUS_FIELDS: Final = frozenset({"name", "label", "cap", "points"})
_RESTRICTION_FIELDS: Final = frozenset({"measure", "name", "name_zh", "in_force"})
_LIST_ENTRY_FIELDS: Final = frozenset(
    {
        "entry_id",
        "department",
        "department_name",
        "list",
        "list_name",
        "list_name_zh",
        "colour",
        "subject_name",
        "legal_basis",
        "reason",
        "window_start",
        "window_end",
        "facilitation_class",
    }
)


def _department_of(f: _Fields) -> ReportDepartment:
    return ReportDepartment(
        department=f.text("department"),
        name=f.text("name"),
        detail=f.text("detail"),
        rules_version=f.text("rules_version"),
    )


def _list_entry_of(f: _Fields) -> ReportListEntry:
    colour = f.text("colour")
    try:
        list_colour = ListColour(colour)
    except ValueError:
        raise f.fail("colour", f"{colour[:20]!r} is not red or black") from None
    facilitation = f.optional_text("facilitation_class")
    if facilitation is not None and not (facilitation and facilitation.isprintable()):
        raise f.fail("facilitation_class", f"{facilitation[:20]!r} is not a class name")
    return ReportListEntry(
        entry_id=f.text("entry_id"),
        department=f.text("department"),
        department_name=f.text("department_name"),
        list=f.text("list"),
        list_name=f.text("list_name"),
        list_name_zh=f.text("list_name_zh"),
        colour=list_colour,
        subject_name=f.text("subject_name"),
        legal_basis=f.text("legal_basis"),
        reason=f.text("reason"),
        window_start=f.day("window_start"),
        window_end=f.day("window_end"),
        facilitation_class=facilitation,
    )


def _renderer_of(f: _Fields) -> ReportRenderer:
    raw = f.get("renderer", dict)
    fields = _Fields(raw, "renderer.")
    unknown = set(raw) - {"html", "pdf"}
    if unknown:
        raise fields.fail(sorted(unknown)[0][:40], "is not a format a report is rendered in")
    names = {}
    for kind in ("html", "pdf"):
        name = fields.text(kind)
        if not 0 < len(name) <= _MAX_RENDERER_CHARS or not name.isprintable():
            raise fields.fail(kind, f"{name[:40]!r} is not a renderer version")
        names[kind] = name
    return ReportRenderer(html=names["html"], pdf=names["pdf"])


def _from_content(content: bytes) -> EnterpriseReport:
    try:
        raw = json.loads(content.decode("utf-8"), object_pairs_hook=unique_keys("key"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise MalformedReport(f"the signed content is not JSON: {exc}", field="content") from None
    if not isinstance(raw, dict):
        raise MalformedReport("the signed content is not a JSON object", field="content")
    f = _Fields(raw)
    version = f.text("format")
    if version != REPORT_FORMAT:
        if version.startswith(REPORT_FORMAT.rsplit("/", 1)[0] + "/"):
            raise RendererMismatch(
                f"the report is in format {version[:60]!r}, which another version of Osmanthus "
                f"made; this version reads {REPORT_FORMAT!r}: verify it with the version that "
                "issued it",
                field="format",
            )
        raise f.fail("format", f"{version[:40]!r} is not {REPORT_FORMAT!r}")
    report_id = f.text("report_id")
    if not REPORT_ID_PATTERN.fullmatch(report_id):
        raise f.fail("report_id", f"{report_id[:40]!r} is not a report id")
    try:
        subject = validate_uscc(f.text("subject_id"), field="subject_id")
    except InvalidArgument as exc:
        raise MalformedReport(exc.message, field="subject_id") from None
    try:
        issued_at = datetime.strptime(f.text("issued_at"), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise f.fail("issued_at", "is not a time like 2026-11-26T09:30:00Z") from None
    scale = []
    for i, pair in enumerate(f.get("grade_scale", list)):
        if not (
            isinstance(pair, list)
            and len(pair) == 2
            and isinstance(pair[0], str)
            and isinstance(pair[1], int)
            and not isinstance(pair[1], bool)
        ):
            raise f.fail(f"grade_scale[{i}]", "is not a [letter, minimum] pair")
        scale.append((pair[0], pair[1]))
    unknown = set(raw) - set(_FIELD_NAMES)
    if unknown:
        raise f.fail(sorted(unknown)[0], "is not a field of an enterprise report")
    report = EnterpriseReport(
        report_id=report_id,
        subject_id=subject,
        grade=f.text("grade"),
        score=f.integer("score"),
        base=f.integer("base"),
        floor=f.integer("floor"),
        ceiling=f.integer("ceiling"),
        grade_scale=tuple(scale),
        deductions=f.integer("deductions"),
        bonuses=tuple(
            ReportBonus(
                name=b.text("name"),
                label=b.text("label"),
                cap=b.integer("cap"),
                points=b.optional_integer("points"),
            )
            for b in f.objects("bonuses", _BONUS_FIELDS)
        ),
        restrictions=tuple(
            ReportRestriction(
                measure=r.text("measure"),
                name=r.text("name"),
                name_zh=r.text("name_zh"),
                in_force=r.get("in_force", bool),
            )
            for r in f.objects("restrictions", _RESTRICTION_FIELDS)
        ),
        answered=tuple(_department_of(d) for d in f.objects("answered", _DEPARTMENT_FIELDS)),
        missing=tuple(_department_of(d) for d in f.objects("missing", _DEPARTMENT_FIELDS)),
        restrictions_answered=f.department_ids("restrictions_answered"),
        list_entries=tuple(
            _list_entry_of(e) for e in f.objects("list_entries", _LIST_ENTRY_FIELDS)
        ),
        list_departments=f.department_ids("list_departments"),
        lists_missing=tuple(
            _department_of(d) for d in f.objects("lists_missing", _DEPARTMENT_FIELDS)
        ),
        score_query_id=f.text("score_query_id"),
        restrictions_query_id=f.text("restrictions_query_id"),
        issued_at=issued_at,
        issuer=_check_issuer(f.text("issuer"), error=MalformedReport),
        renderer=_renderer_of(f),
    )
    _check_consistent(report)
    return report


def _check_consistent(report: EnterpriseReport) -> None:
    """The score follows from the breakdown and the grade from the score: a signed report that
    says otherwise was made wrongly, and none of its values can be relied on."""
    unclamped = report.base - report.deductions + report.bonus_total
    score = min(max(unclamped, report.floor), report.ceiling)
    if report.score != score:
        raise MalformedReport(
            f"the signed score {report.score} does not follow from its breakdown ({score})",
            field="score",
        )
    grade = next((letter for letter, least in report.grade_scale if report.score >= least), None)
    if report.grade != grade:
        raise MalformedReport(
            f"the signed grade {report.grade!r} is not the grade of score {report.score} on "
            f"its scale ({grade!r})",
            field="grade",
        )
    day = report.query_day
    for i, e in enumerate(report.list_entries):
        where = f"list_entries[{i}]"
        if e.window_end < e.window_start:
            raise MalformedReport(
                f"the window ends on {e.window_end}, before it starts ({e.window_start})",
                field=f"{where}.window_end",
            )
        if not _in_window(day, e.window_start, e.window_end):
            raise MalformedReport(
                f"the entry is in view from {e.window_start} to {e.window_end}, not on {day}, "
                "the day of the query",
                field=where,
            )
        if e.facilitation_class is not None and e.colour is not ListColour.RED:
            raise MalformedReport(
                "a black-list entry grants no facilitation class", field=f"{where}.colour"
            )


_FIELD_NAMES: Final = (
    "format",
    "report_id",
    "subject_id",
    "grade",
    "score",
    "base",
    "floor",
    "ceiling",
    "grade_scale",
    "deductions",
    "bonuses",
    "restrictions",
    "answered",
    "missing",
    "restrictions_answered",
    "list_entries",
    "list_departments",
    "lists_missing",
    "score_query_id",
    "restrictions_query_id",
    "issued_at",
    "issuer",
    "renderer",
)


# --- what a report shows --------------------------------------------------------------------
#
# The HTML page and the PDF are drawn from one layout: a new section of the report is one more
# _Section in _layout(), and both formats show it. A signed value is a _Value named after its
# entry in _visible_fields() and marked with that name (a data-field attribute in HTML, a
# marked-content sequence in the PDF), so that a program can find it on the page; every other
# text is a _Text. Verification reads nothing from the page: it renders the signed report
# again and compares the whole file.


def _points(value: int | None) -> str:
    return "not answered" if value is None else str(value)


def _facilitation_text(report: EnterpriseReport) -> str:
    shown = "; ".join(report.facilitation) or "none"
    if report.lists_missing:
        # a class may sit on a list whose department did not answer
        missing = ", ".join(d.department for d in report.lists_missing)
        shown += f"; incomplete: {missing} did not answer"
    return shown


def _sentence(text: str) -> str:
    """`text` ending in a full stop, unless it ends in one already (in either script)."""
    return text if text.endswith((".", "。", "!", "！", "?", "？")) else text + "."


def _list_name(entry: ReportListEntry) -> str:
    return " ".join(n for n in (entry.list_name, entry.list_name_zh) if n)


def _visible_fields(report: EnterpriseReport, code: str) -> dict[str, str]:
    """Every signed value the report shows in a marked element, by the name of its mark."""
    fields = {
        "report_id": report.report_id,
        "subject_id": report.subject_id,
        "grade": report.grade,
        "score": str(report.score),
        "base": str(report.base),
        "deductions": str(report.deductions),
        "bonus_total": str(report.bonus_total),
        "issued_at": _time(report.issued_at),
        "issuer": report.issuer,
        "verification_code": code,
    }
    for b in report.bonuses:
        fields[f"bonus.{b.name}"] = _points(b.points)
    for r in report.restrictions:
        fields[f"restriction.{r.measure}"] = "IN FORCE" if r.in_force else "not in force"
    fields["facilitation"] = _facilitation_text(report)
    for i, e in enumerate(report.list_entries):
        fields[f"list_entry.{i}.list"] = _list_name(e)
        fields[f"list_entry.{i}.colour"] = e.colour.value.upper()
        fields[f"list_entry.{i}.window"] = (
            f"{e.window_start.isoformat()} – {e.window_end.isoformat()}"
        )
    return fields


#: how a piece of text is set: a figure (aligned right), an alert (bold, red), code (monospace)
_Style = Literal["plain", "number", "alert", "code"]


@dataclass(frozen=True)
class _Text:
    """Text the report shows unmarked (labels, names, notes)."""

    text: str
    style: _Style = "plain"


@dataclass(frozen=True)
class _Value:
    """A signed value the report shows, marked with its field name."""

    field: str
    text: str
    style: _Style = "plain"


@dataclass(frozen=True)
class _Row:
    cells: tuple[_Text | _Value, ...]
    #: a row that sums up the rows above it, set in bold
    total: bool = False


@dataclass(frozen=True)
class _Table:
    #: column headings; None for a two-column table of labels and values
    header: tuple[str, ...] | None
    rows: tuple[_Row, ...]
    #: relative column widths on paper
    widths: tuple[int, ...]


@dataclass(frozen=True)
class _Paragraph:
    parts: tuple[_Text, ...]
    #: small print: explanations rather than findings
    note: bool = False


@dataclass(frozen=True)
class _Headline:
    """The grade and the score, set large at the top."""

    grade: _Value
    score: _Value
    out_of: str


_Block = _Table | _Paragraph | _Headline


@dataclass(frozen=True)
class _Section:
    title: str
    blocks: tuple[_Block, ...]


@dataclass(frozen=True)
class _Layout:
    #: the document's title (the HTML <title>, the PDF's Title)
    title: str
    heading: str
    intro: tuple[_Block, ...]
    sections: tuple[_Section, ...]


def _layout(signed: SignedReport) -> _Layout:
    """What the report shows, in order, whatever the output format."""
    r = signed.report
    shown = _visible_fields(r, signed.verification_code)

    def value(name: str, style: _Style = "plain") -> _Value:
        return _Value(field=name, text=shown[name], style=style)

    scale = ", ".join(f"{letter} ≥ {minimum}" for letter, minimum in r.grade_scale)
    breakdown = (
        _Row((_Text("Base"), value("base", "number"), _Text(""))),
        _Row(
            (
                _Text("Deductions (dishonest records, all departments)"),
                value("deductions", "number"),
                _Text(""),
            )
        ),
        *(
            _Row((_Text(b.label), value(f"bonus.{b.name}", "number"), _Text(str(b.cap), "number")))
            for b in r.bonuses
        ),
        _Row((_Text("Bonuses in total"), value("bonus_total", "number"), _Text("")), total=True),
    )
    restrictions = tuple(
        _Row(
            (
                _Text(x.name),
                _Text(x.name_zh),
                value(f"restriction.{x.measure}", "alert" if x.in_force else "plain"),
            )
        )
        for x in r.restrictions
    )
    coverage = (
        *(
            _Row(
                (
                    _Text(d.name),
                    _Text(d.department),
                    _Text(f"answered (rules {d.rules_version or 'unversioned'})"),
                )
            )
            for d in r.answered
        ),
        *(
            _Row((_Text(d.name), _Text(d.department), _Text(f"missing: {d.detail}", "alert")))
            for d in r.missing
        ),
    )
    list_rows = tuple(
        _Row(
            (
                value(f"list_entry.{i}.list"),
                value(
                    f"list_entry.{i}.colour", "alert" if e.colour is ListColour.BLACK else "plain"
                ),
                _Text(e.department_name),
                value(f"list_entry.{i}.window"),
                _Text(
                    " ".join(
                        part
                        for part in (
                            _sentence(f"Reason: {e.reason}"),
                            _sentence(f"Legal basis: {e.legal_basis}") if e.legal_basis else "",
                            f"Grants facilitation class {e.facilitation_class}."
                            if e.facilitation_class is not None
                            else "",
                            f"Entry {e.entry_id} of {e.list}.",
                        )
                        if part
                    )
                ),
            )
        )
        for i, e in enumerate(r.list_entries)
    )
    day = f"{r.query_day.isoformat()} (China Standard Time), the day of the query"
    list_blocks: list[_Block] = []
    if r.list_entries:
        # the name each department published, once: usually one name for every entry
        names = "; ".join(dict.fromkeys(e.subject_name for e in r.list_entries))
        list_blocks += [
            _Paragraph(
                (
                    _Text(
                        f"Red and black list entries about this enterprise in public view on "
                        f"{day}. Listed as: {names}."
                    ),
                )
            ),
            _Table(
                header=("List", "Colour", "Department", "In view", "Reason and legal basis"),
                rows=list_rows,
                widths=(5, 2, 3, 3, 9),
            ),
        ]
    elif r.lists_missing:
        list_blocks.append(
            _Paragraph(
                (
                    _Text(
                        f"None found: no department that answered lists this enterprise on a red "
                        f"or black list in public view on {day}. Not every department answered "
                        "(below), so this is not proof that it is on none."
                    ),
                )
            )
        )
    else:
        list_blocks.append(
            _Paragraph(
                (
                    _Text(
                        f"None: this enterprise is on no red or black list in public view on {day}."
                    ),
                )
            )
        )
    if r.lists_missing:
        list_blocks += [
            _Paragraph(
                (
                    _Text(
                        f"{len(r.lists_missing)} department(s) publishing lists did not answer the "
                        "list search: their entries, if any, are not shown."
                    ),
                )
            ),
            _Table(
                header=("Department", "Id", "List search"),
                rows=tuple(
                    _Row(
                        (
                            _Text(d.name),
                            _Text(d.department),
                            _Text(f"did not answer: {d.detail}", "alert"),
                        )
                    )
                    for d in r.lists_missing
                ),
                widths=(4, 2, 4),
            ),
        ]
    publishers = ", ".join(r.list_departments) or "none in the issuer's catalogue"
    list_blocks.append(
        _Paragraph(
            (
                _Text(
                    f"Departments publishing enterprise lists: {publishers}. Lists are published "
                    "by law. A black-list entry sets its department's flag, so the restrictions "
                    "it triggers are in force above; a red-list entry may grant a facilitation "
                    "class, shown under the grade."
                ),
            ),
            note=True,
        )
    )
    coverage_note = (
        f"{len(r.missing)} department(s) did not answer: their records are not in this score."
        if r.missing
        else "Every department holding enterprise records answered."
    )
    about = (
        _Row((_Text("Report id"), value("report_id"))),
        _Row((_Text("Time of query (UTC)"), value("issued_at"))),
        _Row((_Text("Issued by"), value("issuer"))),
        _Row(
            (
                _Text("Query ids"),
                _Text(f"score {r.score_query_id}; restrictions {r.restrictions_query_id}"),
            )
        ),
        _Row((_Text("Signing key"), _Text(signed.key_id))),
        _Row((_Text("Verification code"), value("verification_code", "code"))),
    )
    return _Layout(
        title=f"Enterprise credit report {r.subject_id} ({r.report_id})",
        heading="Enterprise credit report 企业信用报告",
        intro=(
            _Table(
                header=None,
                rows=(_Row((_Text("Unified social credit code"), value("subject_id"))),),
                widths=(3, 7),
            ),
            _Headline(grade=value("grade"), score=value("score"), out_of=f"of {r.ceiling}"),
            _Paragraph(
                (
                    _Text(
                        f"Grades: {scale}. Score = base - deductions + bonuses, kept within "
                        f"{r.floor}–{r.ceiling}."
                    ),
                ),
                note=True,
            ),
            _Table(
                header=None,
                rows=(_Row((_Text("Facilitation classes (red lists)"), value("facilitation"))),),
                widths=(3, 7),
            ),
        ),
        sections=(
            _Section(
                "Breakdown",
                (_Table(header=("Item", "Points", "Cap"), rows=breakdown, widths=(7, 2, 1)),),
            ),
            _Section(
                "Joint-punishment restrictions 联合惩戒措施",
                (
                    _Table(
                        header=("Measure", "", "At the time of the query"),
                        rows=restrictions,
                        widths=(4, 3, 3),
                    ),
                ),
            ),
            _Section("Public list entries in force 红黑名单", tuple(list_blocks)),
            _Section(
                "Data coverage",
                (
                    _Paragraph((_Text(coverage_note),)),
                    _Table(
                        header=("Department", "Id", "Part in the score"),
                        rows=coverage,
                        widths=(4, 2, 4),
                    ),
                    _Paragraph(
                        (
                            _Text(
                                "Restrictions were answered by: "
                                + ", ".join(r.restrictions_answered)
                                + "."
                            ),
                        ),
                        note=True,
                    ),
                ),
            ),
            _Section(
                "About this report",
                (
                    _Table(header=None, rows=about, widths=(3, 7)),
                    _Paragraph(
                        (
                            _Text("The issuer signed this report with its key. To check it, run "),
                            _Text("osmanthus report verify FILE --key ISSUER.pub", "code"),
                            _Text(
                                " on the electronic copy (HTML or PDF); the verification code "
                                "printed above must equal the one the command prints. The values "
                                "are the issuer's reading of the encrypted answer of the "
                                "departments at the time of the query."
                            ),
                        ),
                        note=True,
                    ),
                ),
            ),
        ),
    )


def _envelope(signed: SignedReport) -> str:
    """The signed content with its signature, as embedded in the page or attached to the PDF."""
    return json.dumps(
        {
            "format": ENVELOPE_FORMAT,
            "content": base64.b64encode(signed.content).decode("ascii"),
            "signature": base64.b64encode(signed.signature).decode("ascii"),
            "key_id": signed.key_id,
            "verification_code": signed.verification_code,
        },
        sort_keys=True,
        indent=1,
    )


# --- HTML -----------------------------------------------------------------------------------

_STYLE = """
body { font-family: "Noto Sans", "PingFang SC", "Microsoft YaHei", sans-serif; color: #111;
       max-width: 52rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.4; }
h1 { font-size: 1.5rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.1rem; border-bottom: 1px solid #888; margin-top: 1.6rem; }
.headline { display: flex; gap: 2rem; align-items: baseline; margin: 1rem 0; }
.grade { font-size: 4rem; font-weight: bold; }
.score { font-size: 2rem; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 0.25rem 0.5rem; border-bottom: 1px solid #ddd; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.in-force { font-weight: bold; color: #a00; }
.code { font-family: monospace; font-size: 1.3rem; letter-spacing: 0.1rem; }
.meta td:first-child { color: #555; width: 14rem; }
.note { color: #555; font-size: 0.85rem; }
@media print { body { margin: 0; max-width: none; } h2 { break-after: avoid; }
               table { break-inside: avoid; } }
"""

#: the opening tag of the block that carries the envelope; no escaped value can contain it
_EMBED_OPEN: Final = f'<script type="application/json" id="{EMBED_ID}">'

_HTML_CLASS: Final[Mapping[str, str]] = {
    "plain": "",
    "number": "num",
    "alert": "in-force",
    "code": "code",
}


def _html_value(value: _Value, css: str = "") -> str:
    klass = f' class="{css}"' if css else ""
    return f'<span{klass} data-field="{html.escape(value.field)}">{html.escape(value.text)}</span>'


def _html_cell(cell: _Text | _Value, tag: str) -> str:
    css = _HTML_CLASS[cell.style]
    klass = f' class="{css}"' if css else ""
    inner = _html_value(cell) if isinstance(cell, _Value) else html.escape(cell.text)
    return f"<{tag}{klass}>{inner}</{tag}>"


def _html_block(block: _Block) -> str:
    e = html.escape
    if isinstance(block, _Headline):
        return (
            '<div class="headline">\n'
            f"<div>Grade<br>{_html_value(block.grade, 'grade')}</div>\n"
            f"<div>Score<br>{_html_value(block.score, 'score')} "
            f'<span class="note">{e(block.out_of)}</span></div>\n'
            "</div>"
        )
    if isinstance(block, _Paragraph):
        parts = "".join(
            f"<code>{e(p.text)}</code>" if p.style == "code" else e(p.text) for p in block.parts
        )
        return f'<p class="note">{parts}</p>' if block.note else f"<p>{parts}</p>"
    rows = "\n".join(
        "<tr>"
        + "".join(
            _html_cell(cell, "th" if row.total and i == 0 else "td")
            for i, cell in enumerate(row.cells)
        )
        + "</tr>"
        for row in block.rows
    )
    if block.header is None:
        return f'<table class="meta">\n{rows}\n</table>'
    head = "".join(f"<th>{e(h)}</th>" for h in block.header)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table>"


def render_html(signed: SignedReport) -> str:
    """A self-contained, printable HTML page of the report, with the signed content embedded.

    Every value is escaped. The signed content travels base64-encoded in a JSON <script> block,
    so no value, however hostile, can end the block early. The same signed report renders to
    the same page, character for character: verification relies on it.
    """
    layout = _layout(signed)
    e = html.escape
    body = "\n".join(
        [
            f"<h1>{e(layout.heading)}</h1>",
            *(_html_block(b) for b in layout.intro),
            *(
                f"\n<h2>{e(s.title)}</h2>\n" + "\n".join(_html_block(b) for b in s.blocks)
                for s in layout.sections
            ),
        ]
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{e(layout.title)}</title>
<style>{_STYLE}</style>
</head>
<body>
{body}
{_EMBED_OPEN}
{_envelope(signed)}
</script>
</body>
</html>
"""


# --- PDF ------------------------------------------------------------------------------------

#: Adobe's Simplified Chinese CID font: every PDF reader supplies it, so no font file is needed
#: to write a report or embedded in one
_CJK_FONT: Final = "STSong-Light"
#: the marked-content tag around each signed value on a PDF page (PDF 32000-1, 14.6)
_PDF_MARK: Final = "OsmanthusValue"
_PDF_GREY: Final = colors.HexColor("#555555")
_PDF_RULE: Final = colors.HexColor("#dddddd")
_PDF_ALERT: Final = colors.HexColor("#aa0000")
_PDF_NO_PADDING: Final = (
    ("LEFTPADDING", (0, 0), (-1, -1), 0),
    ("RIGHTPADDING", (0, 0), (-1, -1), 0),
)


@functools.cache
def _pdf_styles() -> dict[str, ParagraphStyle]:
    """The paragraph styles of a PDF report, by name; registers the CID font on first use."""
    pdfmetrics.registerFont(UnicodeCIDFont(_CJK_FONT))
    body = ParagraphStyle("body", fontName="Helvetica", fontSize=9.5, leading=12.5)
    note = ParagraphStyle("note", body, fontSize=8, leading=10.5, textColor=_PDF_GREY)
    return {
        "body": body,
        "note": note,
        "title": ParagraphStyle(
            "title", body, fontName="Helvetica-Bold", fontSize=17, leading=22, spaceAfter=6
        ),
        "section": ParagraphStyle(
            "section",
            body,
            fontName="Helvetica-Bold",
            fontSize=12,
            leading=15,
            spaceBefore=12,
            keepWithNext=1,
        ),
        "label": ParagraphStyle("label", note, fontSize=9),
        "grade": ParagraphStyle("grade", body, fontName="Helvetica-Bold", fontSize=40, leading=44),
        "score": ParagraphStyle("score", body, fontSize=22, leading=26),
        "th": ParagraphStyle("th", body, fontName="Helvetica-Bold"),
        "th-number": ParagraphStyle(
            "th-number", body, fontName="Helvetica-Bold", alignment=TA_RIGHT
        ),
        "number": ParagraphStyle("number", body, alignment=TA_RIGHT),
        "alert": ParagraphStyle("alert", body, fontName="Helvetica-Bold", textColor=_PDF_ALERT),
        "code": ParagraphStyle("code", body, fontName="Courier-Bold", fontSize=12, leading=15),
    }


def _needs_cid_font(char: str) -> bool:
    try:
        char.encode("cp1252")
    except UnicodeEncodeError:
        return True
    return False


def _pdf_markup(text: str, *, code: bool = False) -> str:
    """Paragraph markup for plain text: escaped, with every run that the standard fonts cannot
    encode (WinAnsi) set in the CID font."""
    out = []
    for cid, run in itertools.groupby(text, key=_needs_cid_font):
        chunk = xml_escape("".join(run))
        if cid:
            out.append(f'<font face="{_CJK_FONT}">{chunk}</font>')
        else:
            out.append(f'<font face="Courier">{chunk}</font>' if code else chunk)
    return "".join(out)


def _begin_mark(field: str) -> str:
    # the field name as a hex string: any name, no escaping rules
    return f"/{_PDF_MARK} <</Field <{field.encode('utf-8').hex()}>>> BDC"


class _Marked(Flowable):
    """A flowable drawn inside a marked-content sequence that names the signed value it shows."""

    def __init__(self, field: str, inner: Flowable) -> None:
        super().__init__()
        self.field = field
        self.inner = inner

    def wrap(self, availWidth: float, availHeight: float) -> tuple[float, float]:  # noqa: N803
        self.width, self.height = self.inner.wrap(availWidth, availHeight)
        return self.width, self.height

    def draw(self) -> None:
        self.canv.addLiteral(_begin_mark(self.field))
        self.inner.drawOn(self.canv, 0, 0)
        self.canv.addLiteral("EMC")


def _pdf_headline(block: _Headline, width: float) -> list[Flowable]:
    styles = _pdf_styles()
    score_text = _pdf_markup(block.score.text)
    score_width = pdfmetrics.stringWidth(block.score.text, "Helvetica", styles["score"].fontSize)
    # the score and "of 200" side by side, on one baseline
    score = Table(
        [
            [
                _Marked(block.score.field, Paragraph(score_text, styles["score"])),
                Paragraph(_pdf_markup(block.out_of), styles["label"]),
            ]
        ],
        colWidths=[score_width + 6, width * 0.3],
        hAlign="LEFT",
    )
    score.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "BOTTOM"), *_PDF_NO_PADDING]))
    headline = Table(
        [
            [
                [
                    Paragraph("Grade", styles["label"]),
                    _Marked(
                        block.grade.field,
                        Paragraph(_pdf_markup(block.grade.text), styles["grade"]),
                    ),
                ],
                [Paragraph("Score", styles["label"]), score],
            ]
        ],
        colWidths=[width * 0.2, width * 0.8],
        hAlign="LEFT",
    )
    headline.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), *_PDF_NO_PADDING]))
    return [Spacer(1, 8), headline, Spacer(1, 6)]


def _pdf_table(block: _Table, width: float) -> list[Flowable]:
    styles = _pdf_styles()
    numeric = {
        i for row in block.rows for i, cell in enumerate(row.cells) if cell.style == "number"
    }
    rows: list[list[Flowable]] = []
    if block.header is not None:
        rows.append(
            [
                Paragraph(_pdf_markup(h), styles["th-number" if i in numeric else "th"])
                for i, h in enumerate(block.header)
            ]
        )
    for row in block.rows:
        cells: list[Flowable] = []
        for i, cell in enumerate(row.cells):
            style: str
            if cell.style != "plain":
                style = cell.style
            elif i == 0 and row.total:
                style = "th"
            elif i == 0 and block.header is None:
                style = "label"
            else:
                style = "body"
            paragraph = Paragraph(_pdf_markup(cell.text), styles[style])
            cells.append(_Marked(cell.field, paragraph) if isinstance(cell, _Value) else paragraph)
        rows.append(cells)
    unit = width / sum(block.widths)
    table = Table(
        rows,
        colWidths=[w * unit for w in block.widths],
        repeatRows=1 if block.header else 0,
        splitInRow=1,
    )
    commands: list[tuple[Any, ...]] = [
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("LINEBELOW", (0, 0), (-1, -1), 0.5, _PDF_RULE),
        ("LEFTPADDING", (0, 0), (-1, -1), 3),
        ("RIGHTPADDING", (0, 0), (-1, -1), 3),
    ]
    if block.header is not None:
        commands.append(("LINEBELOW", (0, 0), (-1, 0), 0.8, _PDF_GREY))
    table.setStyle(TableStyle(commands))
    return [table, Spacer(1, 6)]


def _pdf_block(block: _Block, width: float) -> list[Flowable]:
    if isinstance(block, _Headline):
        return _pdf_headline(block, width)
    if isinstance(block, _Table):
        return _pdf_table(block, width)
    markup = "".join(_pdf_markup(p.text, code=p.style == "code") for p in block.parts)
    return [Paragraph(markup, _pdf_styles()["note" if block.note else "body"]), Spacer(1, 4)]


def _pdf_attachment(signed: SignedReport) -> PDFDictionary:
    """The catalogue's /Names entry: the envelope as the one embedded file of the document."""
    data = _envelope(signed).encode("utf-8")
    stream = PDFStream(
        PDFDictionary(
            {
                "Type": PDFName("EmbeddedFile"),
                # reportlab escapes "#" in names, so the escaped "/" goes in verbatim
                "Subtype": "/application#2Fjson",
                "Params": PDFDictionary({"Size": len(data)}),
            }
        ),
        data,
    )
    spec = PDFDictionary(
        {
            "Type": PDFName("Filespec"),
            "F": PDFString(PDF_ATTACHMENT),
            "UF": PDFString(PDF_ATTACHMENT),
            "Desc": PDFString("the signed report; check it with 'osmanthus report verify'"),
            "EF": PDFDictionary({"F": stream}),
        }
    )
    files = PDFDictionary({"Names": PDFArray([PDFString(PDF_ATTACHMENT), spec])})
    return PDFDictionary({"EmbeddedFiles": files})


def render_pdf(signed: SignedReport) -> bytes:
    """An A4 PDF of the report: the content of the HTML page, the report id and verification
    code on every page, and the signed content attached as `osmanthus-report.json`.

    The same signed report renders to the same bytes, in any process on any machine with the
    same reportlab: the document's dates are the time of the query, its id is a digest of its
    content, and nothing is compressed (zlib builds differ in what they write). Verification
    relies on it. No font is embedded: Latin text is set in the standard Helvetica and Courier,
    Chinese in Adobe's STSong-Light, which readers supply.
    """
    layout = _layout(signed)
    r = signed.report
    styles = _pdf_styles()
    when = r.issued_at.astimezone(UTC).strftime("D:%Y%m%d%H%M%S+00'00'")
    buffer = io.BytesIO()
    document = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=20 * mm,
        rightMargin=20 * mm,
        topMargin=18 * mm,
        bottomMargin=22 * mm,
        title=layout.title,
        author=r.issuer,
        subject=f"Enterprise credit report, verification code {signed.verification_code}",
        creator="Osmanthus",
        lang="en",
        invariant=1,
        pageCompression=0,
    )
    width = document.width
    story: list[Flowable] = [Paragraph(_pdf_markup(layout.heading), styles["title"])]
    for block in layout.intro:
        story += _pdf_block(block, width)
    for section in layout.sections:
        rule = HRFlowable(width="100%", thickness=0.8, color=_PDF_GREY, spaceAfter=4)
        # a heading and its rule never end a page: they move on with what they head
        rule.keepWithNext = 1
        story += [Paragraph(_pdf_markup(section.title), styles["section"]), rule]
        for block in section.blocks:
            story += _pdf_block(block, width)

    def footer(canvas: Canvas, doc: SimpleDocTemplate) -> None:
        # every page names its report and code, so a page cannot pass for another report's
        canvas.saveState()
        canvas.setFont("Helvetica", 7.5)
        canvas.setFillColor(_PDF_GREY)
        x, y = doc.leftMargin, 12 * mm
        for text, field in (
            ("Report ", None),
            (r.report_id, "report_id"),
            ("   Verification code ", None),
            (signed.verification_code, "verification_code"),
            (f"   Page {doc.page}", None),
        ):
            if field:
                canvas.addLiteral(_begin_mark(field))
            canvas.drawString(x, y, text)
            if field:
                canvas.addLiteral("EMC")
            x += pdfmetrics.stringWidth(text, "Helvetica", 7.5)
        canvas.restoreState()

    def first_page(canvas: Canvas, doc: SimpleDocTemplate) -> None:
        canvas.setDateFormatter(lambda *_: when)
        canvas.setCatalogEntry("Names", _pdf_attachment(signed))
        footer(canvas, doc)

    document.build(story, onFirstPage=first_page, onLaterPages=footer)
    return buffer.getvalue()


# --- verifying ------------------------------------------------------------------------------
#
# Rendering is byte-deterministic: a signed report renders to the same HTML page and the same PDF
# in any process (a test proves it). So a file is verified by rendering its signed report again
# and requiring the file to be that rendering, byte for byte. Nothing is read from the page:
# whatever a file shows beyond its signed values (a figure drawn over another, invisible or
# hidden text, a script, a style, a font that draws other letters, an extra page, a crop, a
# note) makes it another file. The work is bounded: the file's size is checked before anything
# is parsed, the embedded envelope's decoded size is capped, and only issuer-signed content is
# rendered.


def _b64(value: object, *, field: str) -> bytes:
    if not isinstance(value, str):
        raise MalformedReport("is not base64 text", field=field)
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise MalformedReport("is not base64 text", field=field) from None


def _open_envelope(text: str, *, public_key: Ed25519PublicKey) -> SignedReport:
    """The signed report an embedded envelope carries, after checking that the envelope names
    this key, that the signature verifies, that the code is the content's, and that the content
    is a well-formed report in canonical form. Raises MalformedReport or TamperedReport."""
    try:
        envelope = json.loads(text, object_pairs_hook=unique_keys("key"))
    except (ValueError, RecursionError) as exc:
        raise MalformedReport(
            f"the embedded report is not JSON: {str(exc)[:120]}", field="envelope"
        ) from None
    if not isinstance(envelope, dict) or envelope.get("format") != ENVELOPE_FORMAT:
        raise MalformedReport(f"the embedded report is not {ENVELOPE_FORMAT!r}", field="envelope")
    content = _b64(envelope.get("content"), field="content")
    signature = _b64(envelope.get("signature"), field="signature")
    key_id, code = envelope.get("key_id"), envelope.get("verification_code")
    if not isinstance(key_id, str) or not isinstance(code, str) or not CODE_PATTERN.fullmatch(code):
        raise MalformedReport("the key id or verification code is missing", field="envelope")
    expected_key = key_id_of(public_key)
    if key_id != expected_key:
        raise TamperedReport(
            f"the report was signed with key {key_id[:16]!r}, not with the key given "
            f"({expected_key}): ask the issuer for its public key",
            field="key",
        )
    try:
        public_key.verify(signature, content)
    except InvalidSignature:
        raise TamperedReport(
            "the signature does not match the content: the embedded report was altered, "
            "or not signed by this key",
            field="signature",
        ) from None
    actual_code = verification_code(content)
    if code != actual_code:
        raise TamperedReport(
            f"the embedded verification code {code} is not the content's ({actual_code})",
            field="verification_code",
        )
    report = _from_content(content)
    # the values printed, and the code derived from them, must be those of the signed bytes
    if canonical_content(report) != content:
        raise MalformedReport(
            "the signed content is not in the canonical form Osmanthus signs (keys sorted, no "
            "spaces, UTF-8): the verification code printed for it would not be its own",
            field="content",
        )
    return SignedReport(
        report=report,
        content=content,
        signature=signature,
        key_id=key_id,
        verification_code=actual_code,
    )


def _common_prefix(a: AnyStr, b: AnyStr) -> int:
    """The length of the longest common prefix of a and b (a binary search of C compares)."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def _refuse_rendering(
    signed: SignedReport, kind: Literal["html", "pdf"], difference: str
) -> NoReturn:
    """Refuse a file that is not the rendering of its signed report, which is genuine: as drawn
    by another renderer if the report names one, else as altered."""
    theirs = signed.report.renderer.html if kind == "html" else signed.report.renderer.pdf
    ours = RENDERER.html if kind == "html" else RENDERER.pdf
    if theirs != ours:
        raise RendererMismatch(
            f"the report was drawn by renderer {theirs}; this is {ours}, which draws its signed "
            f"content differently ({difference}): verify it with the Osmanthus version that "
            "issued it",
            field="renderer",
        )
    raise TamperedReport(
        f"the file is not exactly what its signed report renders to ({difference}): it was "
        "altered after signing, so what it shows may not be what the issuer signed (re-saving "
        "it in an editor or a browser alters it too). Ask the issuer for the original file; if "
        "it came straight from the issuer, check it with the Osmanthus version that issued it",
        field="file",
    )


def _html_envelope(page: str) -> str:
    """The text of the page's one envelope block; a page with none or several is no report."""
    count = page.count(_EMBED_OPEN)
    if count != 1:
        raise MalformedReport(
            f"the page holds {count} embedded reports "
            f'(<script type="application/json" id="{EMBED_ID}">); a report holds exactly one',
            field="page",
        )
    start = page.index(_EMBED_OPEN) + len(_EMBED_OPEN)
    end = page.find("</script>", start)
    if end < 0:
        raise MalformedReport("the embedded report has no closing </script>", field="page")
    return page[start:end]


def verify_report_html(page: str, *, public_key: Ed25519PublicKey) -> EnterpriseReport:
    """The report a page carries, after checking it is exactly what the key's holder signed.

    Checks, in order: the page holds one embedded envelope; it names this key; the signature
    over the content verifies; the verification code is the content's; the content is a
    well-formed report in canonical form; and the page is, character for character, what that
    signed report renders to. Raises MalformedReport (not a report this version can check;
    RendererMismatch for one drawn by another version) or TamperedReport (not what the issuer
    signed).
    """
    if len(page) > MAX_REPORT_CHARS:
        raise MalformedReport(
            f"{len(page)} characters; a report is at most {MAX_REPORT_CHARS}", field="page"
        )
    signed = _open_envelope(_html_envelope(page), public_key=public_key)
    expected = render_html(signed)
    if page != expected:
        at = _common_prefix(page, expected)
        if at == len(expected):
            difference = f"{len(page) - at} characters were added at its end"
        else:
            difference = f"it differs from line {expected.count(chr(10), 0, at) + 1} on"
        _refuse_rendering(signed, "html", difference)
    return signed.report


#: pypdf's limits while it looks for the envelope. The renderer compresses nothing, so a report
#: needs no decoding at all; a file that needs more than one envelope's worth from any stream
#: is refused rather than decoded (a few kB of zlib can decode to gigabytes)
_PDF_LIMITS: Final[Mapping[str, object]] = {
    "maximum_declared_stream_length": MAX_REPORT_BYTES,
    "array_based_stream_maximum_output_length": MAX_ENVELOPE_BYTES,
    "zlib_maximum_output_length": MAX_ENVELOPE_BYTES,
    # pypdf's recovery of a broken zlib stream is a Python loop over its bytes
    "zlib_maximum_recovery_input_length": 1,
    "lzw_maximum_output_length": MAX_ENVELOPE_BYTES,
    "run_length_maximum_output_length": MAX_ENVELOPE_BYTES,
    "brotli_maximum_output_length": MAX_ENVELOPE_BYTES,
    "jbig2_maximum_output_length": MAX_ENVELOPE_BYTES,
    "jbig2dec_binary": None,
    "stream_filters_maximum_length": 4,
    "stream_decoding_work_maximum_length": 4 * MAX_ENVELOPE_BYTES,
}
#: a report has about 30 objects; an editor's rewrite of one, a few more
_PDF_MAX_XREF_ENTRIES: Final = 100_000


def _pdf_envelope(data: bytes) -> str:
    """The text of the PDF's one embedded `osmanthus-report.json`, decoded within the limits."""
    # the limits this pypdf knows (one older than the newest skips the limits it lacks)
    known = {f.name for f in dataclasses.fields(Configuration)}
    limits = get_configuration().with_overwrites(
        **{name: value for name, value in _PDF_LIMITS.items() if name in known}
    )
    encrypted = False
    count = 0
    envelope = b""
    try:
        with apply_configuration(limits):
            reader = PdfReader(io.BytesIO(data), xref_stream_maximum_entries=_PDF_MAX_XREF_ENTRIES)
            encrypted = reader.is_encrypted
            if not encrypted:
                entries = [e for e in reader.attachment_list if e.name == PDF_ATTACHMENT]
                count = len(entries)
                # counted first: no more than one embedded file is ever decoded
                if count == 1:
                    envelope = entries[0].content
    # pypdf parses hostile input: whatever it raises (its errors, ValueError, RecursionError,
    # NotImplementedError for a filter it lacks, a limit reached) means the file cannot be read
    except Exception as exc:
        raise MalformedReport(
            f"the PDF cannot be read: {type(exc).__name__}: {str(exc)[:120]}", field="file"
        ) from None
    if encrypted:
        raise MalformedReport("the PDF is encrypted; a report never is", field="file")
    if count != 1:
        raise MalformedReport(
            f"the PDF holds {count} embedded reports ({PDF_ATTACHMENT}); a report holds "
            "exactly one",
            field="file",
        )
    if len(envelope) > MAX_ENVELOPE_BYTES:
        raise MalformedReport(
            f"{PDF_ATTACHMENT} is {len(envelope)} bytes; a report's is at most "
            f"{MAX_ENVELOPE_BYTES}",
            field="envelope",
        )
    try:
        return envelope.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedReport(f"{PDF_ATTACHMENT} is not UTF-8 text", field="envelope") from None


def verify_report_pdf(data: bytes, *, public_key: Ed25519PublicKey) -> EnterpriseReport:
    """The report a PDF carries, after checking it is exactly what the key's holder signed.

    The same checks as verify_report_html, on the one embedded file `osmanthus-report.json`
    (read with pypdf, its decoded size capped at MAX_ENVELOPE_BYTES); then the file must be,
    byte for byte, what the signed report renders to. An annotation, an incremental update, an
    extra page or any edit of a page makes another file. Raises MalformedReport (not a report
    this version can check; RendererMismatch for one drawn by another version) or
    TamperedReport (not what the issuer signed).
    """
    if len(data) > MAX_REPORT_BYTES:
        raise MalformedReport(
            f"{len(data)} bytes; a report is at most {MAX_REPORT_BYTES}", field="file"
        )
    if not data.startswith(b"%PDF-"):
        raise MalformedReport("the file is not a PDF (it does not start with %PDF-)", field="file")
    signed = _open_envelope(_pdf_envelope(data), public_key=public_key)
    expected = render_pdf(signed)
    if data != expected:
        at = _common_prefix(data, expected)
        if at == len(expected):
            # what a PDF editor saves: the original untouched, the changes after it
            difference = (
                f"{len(data) - at} bytes were appended to it, as a PDF editor appends a page, a "
                "note or a drawing over a page"
            )
        elif at == len(data):
            difference = f"it is cut short after {at} of {len(expected)} bytes"
        else:
            difference = f"it differs from byte {at} on"
        _refuse_rendering(signed, "pdf", difference)
    return signed.report


def verify_report(data: bytes, *, public_key: Ed25519PublicKey) -> EnterpriseReport:
    """A report file's content, verified: a PDF by verify_report_pdf, anything else as an HTML
    page (UTF-8) by verify_report_html."""
    if data.startswith(b"%PDF-"):
        return verify_report_pdf(data, public_key=public_key)
    if len(data) > MAX_REPORT_BYTES:
        raise MalformedReport(
            f"{len(data)} bytes; a report is at most {MAX_REPORT_BYTES}", field="file"
        )
    try:
        page = data.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedReport(
            "the file is neither a PDF nor UTF-8 text (an HTML report)", field="file"
        ) from None
    return verify_report_html(page, public_key=public_key)

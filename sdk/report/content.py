"""A report's canonical content: the JSON its issuer signs (RFC 8785), and reading it back."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any, Final

from osmanthus.core import signing
from osmanthus.core.catalogue import ListColour
from osmanthus.core.errors import InvalidArgument
from osmanthus.core.ids import validate_uscc
from sdk.report.errors import MalformedReport, RendererMismatch
from sdk.report.model import (
    MAX_RENDERER_CHARS,
    EnterpriseReport,
    ReportBonus,
    ReportDepartment,
    ReportListEntry,
    ReportRenderer,
    ReportRestriction,
    check_issuer,
    in_window,
)

#: the `format` of the signed content; a verifier refuses any other
REPORT_FORMAT: Final = "osmanthus-enterprise-report/3"
#: "rpt_" and 22 base64url characters (128 random bits)
REPORT_ID_PATTERN: Final = re.compile(r"rpt_[A-Za-z0-9_-]{22}")


def utc_time(value: datetime) -> str:
    """A time as the content states it: UTC, to the second, "2026-11-26T09:30:15Z"."""
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
        "issued_at": utc_time(report.issued_at),
        "issuer": report.issuer,
        "renderer": {"html": report.renderer.html, "pdf": report.renderer.pdf},
    }


def canonical_content(report: EnterpriseReport) -> bytes:
    """The bytes the issuer signs: the content as RFC 8785 canonical JSON (keys sorted, no
    spaces, UTF-8), the payload of the report's JWS (osmanthus.core.signing).

    InvalidArgument (field "report") when the content cannot be signed as canonical JSON: a
    string that is not Unicode text (a lone surrogate), which no reader could decode.
    """
    return signing.canonical_json(_to_content(report), field="report")


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
        if not 0 < len(name) <= MAX_RENDERER_CHARS or not name.isprintable():
            raise fields.fail(kind, f"{name[:40]!r} is not a renderer version")
        names[kind] = name
    return ReportRenderer(html=names["html"], pdf=names["pdf"])


def from_content(raw: object) -> EnterpriseReport:
    """The report a signed content (parsed JSON) states, checked field by field and for
    consistency. Raises MalformedReport naming the first field that is wrong, RendererMismatch
    for a content format another version of Osmanthus made."""
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
        issuer=check_issuer(f.text("issuer"), error=MalformedReport),
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
        if not in_window(day, e.window_start, e.window_end):
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

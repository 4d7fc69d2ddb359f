"""What an enterprise credit report says, and building it from the answers of the federation."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Final

import reportlab

from osmanthus.core.catalogue import Catalogue, ListColour
from osmanthus.core.clock import china_date
from osmanthus.core.errors import InvalidArgument, NotFound, OsmanthusError
from osmanthus.core.ids import validate_uscc
from osmanthus.core.types import Shape, SubjectKind
from sdk.results import EnterpriseScore, ListSearchResult, RestrictionResult

MAX_ISSUER_CHARS: Final = 200
#: the revision of the code that draws a report. Bump it with any change that alters the bytes a
#: signed report renders to (layout, wording, styles, markup, fonts, envelope): a verifier
#: re-renders the report, and a file drawn by another revision must be told apart from an
#: altered one. The golden digests in tests/unit/report/test_report_rendering.py catch such a
#: change.
RENDERER_REVISION: Final = 3
#: list windows are counted in days of China Standard Time (UTC+8)
#: how far the day of the query may lie outside an entry's window: the coordinator lets a node
#: judge "in view" by its own date, a day ahead or behind near midnight (coordinator/lists.py)
_WINDOW_SLACK: Final = timedelta(days=1)


@dataclass(frozen=True)
class ReportRenderer:
    """The version of the code that draws each format of a report, signed with it."""

    html: str
    #: a PDF's bytes also depend on reportlab (its layout and its PDF writer)
    pdf: str


#: the renderer of this version of Osmanthus
RENDERER: Final = ReportRenderer(
    html=f"osmanthus-report-html/{RENDERER_REVISION}",
    pdf=f"osmanthus-report-pdf/{RENDERER_REVISION} reportlab/{reportlab.Version}",
)
#: the longest renderer name a signed report may carry
MAX_RENDERER_CHARS: Final = 100


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


@dataclass(frozen=True, kw_only=True)
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


# --- building -------------------------------------------------------------------------------


def _department(catalogue: Catalogue, department: str, detail: str, rules: str) -> ReportDepartment:
    try:
        name = catalogue.department(department).name
    except (NotFound, InvalidArgument):
        # the coordinator named a department this catalogue lacks: show its id, hide nothing
        name = department
    return ReportDepartment(department=department, name=name, detail=detail, rules_version=rules)


def check_issuer(issuer: str, *, error: type[OsmanthusError] = InvalidArgument) -> str:
    """`issuer` if it is an issuer's name (printed and signed), else `error` naming it."""
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


def in_window(day: date, start: date, end: date) -> bool:
    """Whether `day` lies in the window from `start` to `end`, give or take a day."""
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
        if not in_window(day, e.window_start, e.window_end):
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
        issuer=check_issuer(issuer),
        renderer=RENDERER,
    )

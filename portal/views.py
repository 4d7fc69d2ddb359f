"""What the pages show, built from what the federation answered: labels in Chinese and English.

Pure functions from SDK results to small view records the templates render; no I/O.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from osmanthus.core.auditproofs import EntryStatus, PartCheck
from osmanthus.core.catalogue import Catalogue
from osmanthus.core.errors import OsmanthusError
from osmanthus.core.subjectfile import COORDINATOR_SOURCE, AuditLine, RecordLine, SubjectFile
from osmanthus.core.types import DepartmentStatus, SubjectKind
from sdk.results import ConsentRecord, EnterpriseScore, PersonScore

#: China Standard Time: the hall's clocks, and the day records count on
CST: Final = datetime.timezone(datetime.timedelta(hours=8), "CST")

#: why a record does or does not count, in the two languages
RECORD_STATES: Final = {
    "counts": ("计入", "Counts"),
    "expired": ("已过有效期", "Expired: its validity window has passed"),
    "disputed": ("异议处理中", "Under dispute: it counts for nothing until resolved"),
    "not_yet_in_force": ("尚未生效", "Not yet in force: the event starts later"),
}
DECISIONS: Final = {"allow": ("允许", "Allowed"), "deny": ("拒绝", "Refused")}
SHAPES: Final = {
    "breakdown": ("分项", "Breakdown"),
    "total": ("总分", "Total"),
    "threshold": ("是否达标", "Threshold"),
    "flags": ("惩戒标记", "Flags"),
    "stats": ("统计", "Statistics"),
    # the portal's own question for the subject's file (node and coordinator audit shape)
    "subject_file": ("本人信用档案", "Your file"),
    # the coordinator's registry decisions about the subject (coordinator/service.py)
    "consent_grant": ("授权登记", "Consent recorded"),
    "consent_revocation": ("撤回授权", "Consent revoked"),
    "consent_list": ("查看授权", "Consents listed"),
    "list_search": ("红黑名单查询", "List search"),
    "list_change_feed": ("名单变更同步", "List change feed"),
}
PURPOSES: Final = {
    "self_query": ("本人查询", "Self-query"),
    "loan_underwriting": ("贷款审批", "Loan underwriting"),
    "credit_report": ("信用报告", "Credit report"),
    "court_enforcement": ("法院执行", "Court enforcement"),
    "tax_bank_loan": ("税银贷", "Tax-bank loan"),
    "consent_management": ("授权管理", "Consent management"),
    "credit_rescoring": ("信用重评", "Credit rescoring"),
    "deposit_waiver": ("免押金", "Deposit waiver"),
    "government_procurement": ("政府采购", "Government procurement"),
    "statistics": ("统计", "Statistics"),
}
LIST_STATUS: Final = {"in_view": ("公示中", "In public view"), "scheduled": ("待公示", "Scheduled")}
COLOURS: Final = {"red": ("红名单", "Red list"), "black": ("黑名单", "Black list")}
COORDINATOR_LABEL: Final = ("协调中心", "Coordinator")
#: what the portal established about an audit line (osmanthus.core.auditproofs.EntryStatus),
#: said in words: the mark is text, never a colour alone
ENTRY_STATUSES: Final = {
    EntryStatus.VERIFIED.value: ("已核验", "Verified"),
    # proven, but to a checkpoint no (or too few) witnesses cosigned: the holder's word only
    EntryStatus.SIGNED.value: (
        "已签名 · 仅由该部门签名，未经见证",
        "Signed by the department only · not yet witnessed",
    ),
    EntryStatus.PENDING.value: ("未核验", "Pending"),
    EntryStatus.UNVERIFIED.value: ("未核验", "Not verified"),
}
#: the signed-only mark of the coordinator's own lines (its log is not a department's)
COORDINATOR_SIGNED: Final = (
    "已签名 · 仅由协调中心签名，未经见证",
    "Signed by the coordinator only · not yet witnessed",
)
_LABEL = re.compile(r"^(?P<en>.*?)\s+(?P<zh>[\u3400-\u9fff].*)$")


@dataclass(frozen=True)
class Bilingual:
    zh: str
    en: str


def split_label(label: str) -> Bilingual:
    """'Qualifications 资质状况' → zh 资质状况, en Qualifications (the catalogue's form)."""
    match = _LABEL.match(label)
    if match is None:
        return Bilingual(label, label)
    return Bilingual(match["zh"], match["en"])


def _pair(table: dict[str, tuple[str, str]], key: str) -> Bilingual:
    # a value the table does not know is shown once, as recorded (the English part left empty)
    zh, en = table.get(key, (key, ""))
    return Bilingual(zh, en)


def department_label(catalogue: Catalogue, source: str) -> Bilingual:
    """A department's (or the coordinator's) name in both languages."""
    if source == COORDINATOR_SOURCE:
        return Bilingual(*COORDINATOR_LABEL)
    try:
        department = catalogue.department(source)
    except OsmanthusError:
        return Bilingual(source, source)
    return Bilingual(department.name_zh, department.name)


def local_time(value: str) -> str:
    """An RFC 3339 time as the hall reads it: 2025-06-01 14:03:07 (CST)."""
    try:
        moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.astimezone(CST).strftime("%Y-%m-%d %H:%M:%S")


# --- score --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CategoryView:
    name: str
    label: Bilingual
    #: None when the owning department did not answer
    points: int | None
    cap: int


@dataclass(frozen=True)
class ScoreView:
    kind: str
    score: int
    base: int
    deductions: int | None
    bonus_total: int | None
    categories: tuple[CategoryView, ...]
    grade: str | None
    missing: tuple[Bilingual, ...]
    query_id: str


def score_view(catalogue: Catalogue, result: PersonScore | EnterpriseScore) -> ScoreView:
    """The score screen: the score first, then the bonus categories, base and deductions."""
    kind = SubjectKind.ENTERPRISE if isinstance(result, EnterpriseScore) else SubjectKind.PERSON
    model = catalogue.model(kind)
    categories = tuple(
        CategoryView(
            name=c.name, label=split_label(c.label), points=result.bonuses.get(c.name), cap=c.cap
        )
        for c in model.categories
    )
    return ScoreView(
        kind=kind.value,
        score=result.score,
        base=result.base,
        deductions=result.deductions,
        bonus_total=result.bonus_total,
        categories=categories,
        grade=result.grade if isinstance(result, EnterpriseScore) else None,
        missing=missing_view(catalogue, result.missing),
        query_id=result.query_id,
    )


def missing_view(
    catalogue: Catalogue, missing: Iterable[DepartmentStatus]
) -> tuple[Bilingual, ...]:
    return tuple(department_label(catalogue, str(s.department)) for s in missing)


# --- records ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordView:
    record_id: str
    kind: str
    description: str
    category: Bilingual
    #: "+" for a bonus, "−" for a deduction
    sign: str
    points: int
    per_quantity: int
    quantity: int
    event_start: str
    event_end: str | None
    state: str
    state_label: Bilingual
    validity: str
    counts_until: str | None


@dataclass(frozen=True)
class DepartmentRecords:
    source: str
    label: Bilingual
    counting: tuple[RecordView, ...]
    not_counting: tuple[RecordView, ...]
    deductions: int
    bonuses: tuple[tuple[Bilingual, int], ...]
    as_of: str
    rules_version: str


def _category_label(catalogue: Catalogue, kind: SubjectKind, category: str) -> Bilingual:
    if category == "deduction":
        return Bilingual("扣分", "Deduction")
    for c in catalogue.model(kind).categories:
        if c.name == category:
            return split_label(c.label)
    return Bilingual(category, category)


def _record(catalogue: Catalogue, kind: SubjectKind, line: RecordLine) -> RecordView:
    return RecordView(
        record_id=line.record_id,
        kind=line.kind,
        description=line.description,
        category=_category_label(catalogue, kind, line.category),
        sign="−" if line.category == "deduction" else "+",
        points=line.points,
        per_quantity=line.per_quantity,
        quantity=line.quantity,
        event_start=line.event_start,
        event_end=line.event_end,
        state=line.state,
        state_label=_pair(RECORD_STATES, line.state),
        validity=line.validity,
        counts_until=line.counts_until,
    )


def records_view(
    catalogue: Catalogue, kind: SubjectKind, parts: Sequence[SubjectFile]
) -> tuple[DepartmentRecords, ...]:
    """Each department's records, those that count first, then those that do not and why."""
    out = []
    for part in parts:
        if part.source == COORDINATOR_SOURCE:
            continue
        lines = [_record(catalogue, kind, r) for r in part.records]
        out.append(
            DepartmentRecords(
                source=part.source,
                label=department_label(catalogue, part.source),
                counting=tuple(r for r in lines if r.state == "counts"),
                not_counting=tuple(r for r in lines if r.state != "counts"),
                deductions=part.deductions,
                bonuses=tuple(
                    (_category_label(catalogue, kind, name), points)
                    for name, points in sorted(part.bonuses.items())
                ),
                as_of=part.as_of,
                rules_version=part.rules_version,
            )
        )
    return tuple(out)


# --- who asked ----------------------------------------------------------------------------


@dataclass(frozen=True)
class QueryView:
    time: str
    sort_key: str
    source: Bilingual
    requester: str
    purpose: Bilingual
    shape: Bilingual
    consent_id: str
    decision: str
    decision_label: Bilingual
    reason: str
    in_batch: bool
    #: EntryStatus value: "verified", "signed", "pending" or "unverified" (failed lines are
    #: not shown)
    status: str = EntryStatus.UNVERIFIED.value
    status_label: Bilingual = Bilingual(*ENTRY_STATUSES[EntryStatus.UNVERIFIED.value])


@dataclass(frozen=True)
class LogProblemView:
    """A party whose log could not be verified: its entries that failed are not shown."""

    source: Bilingual
    #: how many of its entries are left out
    hidden: int


def _sort_key(line: AuditLine) -> str:
    try:
        moment = datetime.datetime.fromisoformat(line.time.replace("Z", "+00:00"))
    except ValueError:
        return line.time
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.astimezone(datetime.UTC).isoformat()


def queries_view(
    catalogue: Catalogue,
    parts: Sequence[SubjectFile],
    checks: Sequence[PartCheck] | None = None,
) -> tuple[QueryView, ...]:
    """Every party's audit lines about the subject merged by time, newest first, each with what
    `checks` (one per part, osmanthus.core.auditproofs.verify_part) established; a line whose
    check failed is left out: it is not shown as a fact (log_problems_view says so)."""
    statuses = (
        [c.statuses for c in checks]
        if checks is not None
        else [(EntryStatus.UNVERIFIED,) * len(p.audit) for p in parts]
    )
    rows = [
        QueryView(
            time=local_time(line.time),
            sort_key=_sort_key(line),
            source=department_label(catalogue, part.source),
            requester=line.requester,
            purpose=_pair(PURPOSES, line.purpose),
            shape=_pair(SHAPES, line.shape) if line.shape else Bilingual("—", "—"),
            consent_id=line.consent_id,
            decision=line.decision,
            decision_label=_pair(DECISIONS, line.decision),
            reason=line.reason,
            in_batch=line.in_batch,
            status=status.value,
            status_label=_status_label(status, part.source),
        )
        for part, part_statuses in zip(parts, statuses, strict=True)
        for line, status in zip(part.audit, part_statuses, strict=True)
        if status is not EntryStatus.FAILED
    ]
    rows.sort(key=lambda r: r.sort_key, reverse=True)
    return tuple(rows)


def _status_label(status: EntryStatus, source: str) -> Bilingual:
    if status is EntryStatus.SIGNED and source == COORDINATOR_SOURCE:
        return Bilingual(*COORDINATOR_SIGNED)
    return Bilingual(*ENTRY_STATUSES[status.value])


def log_problems_view(
    catalogue: Catalogue, checks: Sequence[PartCheck]
) -> tuple[LogProblemView, ...]:
    """The parties whose log could not be verified, and how many of their entries are hidden."""
    return tuple(
        LogProblemView(source=department_label(catalogue, c.source), hidden=c.failed)
        for c in checks
        if c.problem is not None
    )


# --- lists --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListView:
    source: Bilingual
    #: the department's id (the part's source), which a case about the entry is filed at
    department: str
    entry_id: str
    list: str
    colour: str
    colour_label: Bilingual
    status: Bilingual
    legal_basis: str
    reason: str
    window_start: str
    window_end: str


def lists_view(catalogue: Catalogue, parts: Sequence[SubjectFile]) -> tuple[ListView, ...]:
    rows = [
        ListView(
            source=department_label(catalogue, part.source),
            department=part.source,
            entry_id=line.entry_id,
            list=line.list,
            colour=line.colour,
            colour_label=_pair(COLOURS, line.colour),
            status=_pair(LIST_STATUS, line.status),
            legal_basis=line.legal_basis,
            reason=line.reason,
            window_start=line.window_start,
            window_end=line.window_end,
        )
        for part in parts
        for line in part.list_entries
    ]
    rows.sort(key=lambda r: (r.window_start, r.entry_id))
    return tuple(rows)


# --- consents -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ConsentView:
    consent_id: str
    grantee: str
    purpose: Bilingual
    granted_at: str
    expires_at: str
    revoked_at: str | None
    in_force: bool
    state: Bilingual
    receipt: str


def consents_view(
    records: Sequence[ConsentRecord], now: datetime.datetime
) -> tuple[ConsentView, ...]:
    def when(moment: datetime.datetime) -> str:
        return moment.astimezone(CST).strftime("%Y-%m-%d %H:%M")

    out = []
    for r in sorted(records, key=lambda r: r.granted_at, reverse=True):
        if r.revoked_at is not None:
            state = Bilingual("已撤回", "Revoked")
        elif now >= r.expires_at:
            state = Bilingual("已过期", "Expired")
        else:
            state = Bilingual("有效", "In force")
        out.append(
            ConsentView(
                consent_id=r.consent_id,
                grantee=r.grantee,
                purpose=_pair(PURPOSES, r.purpose),
                granted_at=when(r.granted_at),
                expires_at=when(r.expires_at),
                revoked_at=when(r.revoked_at) if r.revoked_at is not None else None,
                in_force=r.in_force(now),
                state=state,
                receipt=r.receipt,
            )
        )
    return tuple(out)

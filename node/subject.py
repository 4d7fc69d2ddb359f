"""A subject's own file at this department: every record and why it counts or not, the list
entries about them, and this node's audit entries about them (PIPL arts. 44–47: access and
copy), built for the subjects' portal and bounded in size.

Pure functions on typed values: NodeService.subject_file reads the stores, decides, audits and
seals (osmanthus.core.subjectseal); this module only says what the file holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Final

from osmanthus.core.audit import AuditEntry
from osmanthus.core.auditproofs import ProvenAudit
from osmanthus.core.cases import Case, CaseStatus
from osmanthus.core.lists import EntryStatus, ListEntry
from osmanthus.core.rules import ACTIVE, Record, RuleSet
from osmanthus.core.subjectfile import (
    MAX_ITEMS,
    CaseLine,
    CaseStepLine,
    KindTotal,
    ListLine,
    RecordLine,
    SubjectFile,
    audit_lines,
    least_useful_first,
    rfc3339,
)
from osmanthus.core.types import DepartmentId, SubjectKind

#: why a record does or does not count today (osmanthus.core.subjectfile.RECORD_STATES)
COUNTS: Final = "counts"
EXPIRED: Final = "expired"
DISPUTED: Final = "disputed"
NOT_YET_IN_FORCE: Final = "not_yet_in_force"
#: the list entries a subject is shown: those in public view and those scheduled to be
_SHOWN_LIST_STATUSES: Final = frozenset({EntryStatus.IN_VIEW, EntryStatus.SCHEDULED})
#: the actor of the steps the subject took (node.cases.SUBJECT_ACTOR)
SUBJECT_ACTOR: Final = "subject"
#: the steps that decide a case: their detail is the decision's reason, which the case line
#: carries once (CaseLine.decision_reason), not twice
_DECISION_EVENTS: Final = frozenset({CaseStatus.UPHELD.value, CaseStatus.REJECTED.value})


def record_state(record: Record, rules: RuleSet, *, as_of: date) -> str:
    """Whether `record` counts on `as_of`, or why not, by the same tests RuleSet.contribution
    makes: a record not active is disputed, one whose event lies ahead is not yet in force,
    one whose validity window closed has expired."""
    rule = rules.rule(record.subject_kind, record.kind)
    if record.status != ACTIVE:
        return DISPUTED
    if as_of < record.event_start:
        return NOT_YET_IN_FORCE
    if not rule.validity.counts(record.event_start, record.event_end, as_of):
        return EXPIRED
    return COUNTS


def record_lines(records: Sequence[Record], rules: RuleSet, *, as_of: date) -> list[RecordLine]:
    """One line per record, in the order given, with its rule and its state on `as_of`."""
    lines: list[RecordLine] = []
    for record in records:
        rule = rules.rule(record.subject_kind, record.kind)
        last = rule.validity.last_day(record.event_start, record.event_end)
        lines.append(
            RecordLine(
                record_id=record.record_id,
                kind=record.kind,
                description=rule.description,
                category=rule.category,
                quantity=record.quantity,
                event_start=record.event_start.isoformat(),
                event_end=record.event_end.isoformat() if record.event_end else None,
                status=record.status,
                state=record_state(record, rules, as_of=as_of),
                validity=str(rule.validity),
                points=rule.points,
                per_quantity=rule.per_quantity,
                counts_until=last.isoformat() if last is not None else None,
            )
        )
    return lines


def kind_totals(
    kind: SubjectKind, records: Iterable[Record], rules: RuleSet, *, as_of: date
) -> tuple[KindTotal, ...]:
    """Per record kind with records that count, the points it gives after the kind's cap (a
    magnitude; the category gives the sign). A bonus category's cap applies to the sum of its
    kinds afterwards (SubjectFile.bonuses)."""
    quantities: dict[str, int] = {}
    for record in records:
        if record_state(record, rules, as_of=as_of) == COUNTS:
            quantities[record.kind] = quantities.get(record.kind, 0) + record.quantity
    totals = []
    for name in sorted(quantities):
        rule = rules.rule(kind, name)
        totals.append(
            KindTotal(kind=name, category=rule.category, points=rule.magnitude(quantities[name]))
        )
    return tuple(totals)


def list_lines(entries: Iterable[ListEntry]) -> tuple[ListLine, ...]:
    """The entries in view or scheduled, with their windows (at most MAX_ITEMS)."""
    lines = [
        ListLine(
            entry_id=found.entry.entry_id,
            list=found.entry.list,
            colour=found.entry.colour.value,
            status=found.status.value,
            legal_basis=found.entry.legal_basis,
            reason=found.entry.reason,
            window_start=found.entry.window_start.isoformat(),
            window_end=found.entry.window_end.isoformat(),
        )
        for found in entries
        if found.status in _SHOWN_LIST_STATUSES
    ]
    return tuple(lines[:MAX_ITEMS])


def case_lines(cases: Iterable[Case], *, department: DepartmentId) -> tuple[CaseLine, ...]:
    """The subject's cases at this department (newest first, as given), each with every step
    (oldest first); an officer's steps name the department, not the officer, and the decision's
    step leaves its reason to `decision_reason`."""
    lines = [
        CaseLine(
            case_id=case.case_id,
            kind=case.kind.value,
            ground=case.ground.value,
            target=case.target.value,
            target_id=case.target_id,
            statement=case.statement,
            status=case.status.value,
            filed_at=rfc3339(case.filed_at),
            decide_by=case.decide_by.isoformat(),
            reply_by=case.reply_by.isoformat(),
            overdue=case.overdue,
            decided_at=rfc3339(case.decided_at) if case.decided_at is not None else None,
            decision_reason=case.decision_reason,
            remedy=case.remedy.value if case.remedy is not None else "",
            attachments=len(case.attachments),
            steps=tuple(
                CaseStepLine(
                    at=rfc3339(step.at),
                    event=step.event,
                    actor=step.actor if step.actor == SUBJECT_ACTOR else department,
                    detail="" if step.event in _DECISION_EVENTS else step.detail,
                )
                for step in case.events
            ),
        )
        for case in cases
    ]
    return tuple(lines[:MAX_ITEMS])


def build(
    *,
    department: DepartmentId,
    query_id: str,
    kind: SubjectKind,
    subject: str,
    rules: RuleSet,
    records: Sequence[Record],
    lists: Iterable[ListEntry],
    audit: Iterable[tuple[AuditEntry, bool]] | ProvenAudit,
    as_of: date,
    now: datetime,
    cases: Iterable[Case] = (),
    case_key: str = "",
) -> SubjectFile:
    """The department's part of the subject's file on `as_of` (China Standard Time). `audit`:
    the log's entries about the subject, or those lines already proven to the log's checkpoint
    (osmanthus.core.auditproofs.proven_audit), which the part then carries with the subject's
    hash they must name."""
    contribution = rules.contribution(kind, records, as_of=as_of)
    lines = record_lines(records, rules, as_of=as_of)
    records_truncated = len(lines) > MAX_ITEMS
    if records_truncated:
        keep = least_useful_first(lines)[len(lines) - MAX_ITEMS :]
        lines = [lines[i] for i in sorted(keep)]
    subject_hash = ""
    if isinstance(audit, ProvenAudit):
        audit_found, audit_truncated, checkpoint = audit.lines, audit.truncated, audit.checkpoint
        subject_hash = audit.subject_hash
    else:
        (audit_found, audit_truncated), checkpoint = audit_lines(audit), ""
    return SubjectFile(
        source=department,
        query_id=query_id,
        subject_kind=kind.value,
        subject_id=subject,
        as_of=as_of.isoformat(),
        generated_at=rfc3339(now),
        rules_version=rules.version,
        records=tuple(lines),
        kind_totals=kind_totals(kind, records, rules, as_of=as_of),
        deductions=contribution.deductions,
        bonuses=dict(contribution.bonuses),
        list_entries=list_lines(lists),
        audit=audit_found,
        audit_truncated=audit_truncated,
        records_truncated=records_truncated,
        cases=case_lines(cases, department=department),
        case_key=case_key,
        checkpoint=checkpoint,
        subject_hash=subject_hash,
    )

"""What the objection and credit-repair pages show, and what a subject may file: pure functions.

Everything here is read from the subject's own file (each department's verified part: its
records, list entries, cases and case key), so a case can only ever be about something in that
file; and from the department's answers to its officer (osmanthus.core.cases.Case). No I/O.
"""

from __future__ import annotations

import base64
import binascii
import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from osmanthus.core.cases import Case, CaseKind, CaseTarget
from osmanthus.core.catalogue import Catalogue
from osmanthus.core.subjectfile import (
    COORDINATOR_SOURCE,
    CaseLine,
    ListLine,
    RecordLine,
    SubjectFile,
)
from portal.views import CST, Bilingual, department_label, local_time

#: a raw X25519 public key (RFC 7748 §5)
CASE_KEY_BYTES: Final = 32
KINDS: Final = {
    "objection": ("异议", "Objection"),
    "repair": ("信用修复", "Credit repair"),
}
TARGETS: Final = {"record": ("记录", "Record"), "list_entry": ("名单条目", "List entry")}
GROUNDS: Final = {
    "record": ("记录内容有误", "The record is wrong"),
    "entry_content": ("名单条目内容有误", "The entry's content is wrong"),
    "entry_period": ("公示期限有误", "The publication period is wrong"),
    "fulfilled": ("已履行相关义务", "The obligation is fulfilled"),
}
STATUSES: Final = {
    "open": ("处理中", "Open"),
    "upheld": ("已支持", "Upheld"),
    "rejected": ("未支持", "Rejected"),
}
#: an upheld repair is an approved one
REPAIR_UPHELD: Final = ("已批准修复", "Repair approved")
STEPS: Final = {
    "filed": ("已提交", "Filed"),
    "upheld": ("已支持", "Upheld"),
    "rejected": ("未支持", "Rejected"),
    "attachments_deleted": (
        "附件已按保存期限删除",
        "Attachments deleted after the retention period",
    ),
}
REMEDIES: Final = {
    "withdraw": ("撤销", "Withdrawn: it no longer counts"),
    "correct": ("更正", "Corrected"),
}
OVERDUE: Final = ("逾期", "Overdue")
#: list entries a case may be about (the file holds no others, but a node's words are checked)
_ENTRY_IN_FORCE: Final = frozenset({"in_view", "scheduled"})


def _pair(table: dict[str, tuple[str, str]], key: str) -> Bilingual:
    zh, en = table.get(key, (key, ""))
    return Bilingual(zh, en)


def decode_case_key(text: str) -> bytes | None:
    """The raw case key of a part (base64url without padding), or None when it is not one."""
    if not text:
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == CASE_KEY_BYTES else None


def repair_applies_to_record(line: RecordLine) -> bool:
    """A published penalty may be repaired: a deduction record that counts today."""
    return line.category == "deduction" and line.state == "counts"


def repair_applies_to_entry(line: ListLine) -> bool:
    """A black-list entry in view or scheduled may be repaired (red lists are honours)."""
    return line.colour == "black" and line.status in _ENTRY_IN_FORCE


@dataclass(frozen=True)
class CaseTargetInfo:
    """A record or list entry of the subject's file a case may be about, and what applies."""

    department: str
    department_label: Bilingual
    target: CaseTarget
    target_id: str
    #: what the record or entry is, in the department's words
    description: str
    #: the department's case key, raw; None when its part offers none (it takes no cases)
    case_key: bytes | None
    can_object: bool
    can_repair: bool
    #: the id of the subject's open case about it, if any (a second one is refused)
    open_case: str | None

    @property
    def key(self) -> str:
        return action_key(self.department, self.target.value, self.target_id)

    def allows(self, kind: CaseKind) -> bool:
        """Whether a case of `kind` may be filed about it now."""
        if self.open_case is not None or self.case_key is None:
            return False
        return self.can_object if kind is CaseKind.OBJECTION else self.can_repair


def action_key(department: str, target: str, target_id: str) -> str:
    """How the records and lists templates look a row's case actions up."""
    return f"{department}|{target}|{target_id}"


def _open_cases(part: SubjectFile) -> dict[tuple[str, str], str]:
    return {(c.target, c.target_id): c.case_id for c in part.cases if c.status == "open"}


def _department_parts(parts: Sequence[SubjectFile]) -> list[SubjectFile]:
    return [p for p in parts if p.source != COORDINATOR_SOURCE]


def _list_name(catalogue: Catalogue, list_id: str) -> str:
    """The list's name as the catalogue gives it (失信被执行人名单 Judgement defaulters), or
    its id for a list this portal's catalogue does not know."""
    for list_type in catalogue.lists:
        if list_type.id == list_id:
            return f"{list_type.name_zh} {list_type.name}"
    return list_id


def case_targets(catalogue: Catalogue, parts: Sequence[SubjectFile]) -> dict[str, CaseTargetInfo]:
    """Every record and list entry of the subject's file, by `action_key`."""
    out: dict[str, CaseTargetInfo] = {}
    for part in _department_parts(parts):
        label = department_label(catalogue, part.source)
        key = decode_case_key(part.case_key)
        open_cases = _open_cases(part)
        for record in part.records:
            info = CaseTargetInfo(
                department=part.source,
                department_label=label,
                target=CaseTarget.RECORD,
                target_id=record.record_id,
                description=record.description,
                case_key=key,
                can_object=True,
                can_repair=repair_applies_to_record(record),
                open_case=open_cases.get(("record", record.record_id)),
            )
            out[info.key] = info
        for entry in part.list_entries:
            info = CaseTargetInfo(
                department=part.source,
                department_label=label,
                target=CaseTarget.LIST_ENTRY,
                target_id=entry.entry_id,
                description=f"{_list_name(catalogue, entry.list)} · {entry.reason}",
                case_key=key,
                can_object=entry.status in _ENTRY_IN_FORCE,
                can_repair=repair_applies_to_entry(entry),
                open_case=open_cases.get(("list_entry", entry.entry_id)),
            )
            out[info.key] = info
    return out


def find_target(
    catalogue: Catalogue,
    parts: Sequence[SubjectFile],
    *,
    department: str,
    target: CaseTarget,
    target_id: str,
) -> CaseTargetInfo | None:
    """The record or entry `target_id` of `department` in the subject's own file, or None:
    nothing outside the file can be picked, whatever a form or a URL says."""
    return case_targets(catalogue, parts).get(action_key(department, target.value, target_id))


# --- the subject's cases --------------------------------------------------------------------


@dataclass(frozen=True)
class CaseStepView:
    at: str
    label: Bilingual
    actor: str
    detail: str


@dataclass(frozen=True)
class CaseView:
    case_id: str
    department: Bilingual
    kind: str
    kind_label: Bilingual
    ground: Bilingual
    target: Bilingual
    target_id: str
    #: what the record or entry is, when the file still holds it
    description: str
    statement: str
    status: str
    status_label: Bilingual
    filed_at: str
    decide_by: str
    reply_by: str
    overdue: bool
    decided_at: str | None
    outcome: Bilingual | None
    decision_reason: str
    attachments: int
    steps: tuple[CaseStepView, ...]
    sort_key: str


def _status_label(kind: str, status: str) -> Bilingual:
    if kind == "repair" and status == "upheld":
        return Bilingual(*REPAIR_UPHELD)
    return _pair(STATUSES, status)


def _case_view(
    catalogue: Catalogue, part: SubjectFile, line: CaseLine, targets: dict[str, CaseTargetInfo]
) -> CaseView:
    found = targets.get(action_key(part.source, line.target, line.target_id))
    return CaseView(
        case_id=line.case_id,
        department=department_label(catalogue, part.source),
        kind=line.kind,
        kind_label=_pair(KINDS, line.kind),
        ground=_pair(GROUNDS, line.ground),
        target=_pair(TARGETS, line.target),
        target_id=line.target_id,
        description=found.description if found is not None else "",
        statement=line.statement,
        status=line.status,
        status_label=_status_label(line.kind, line.status),
        filed_at=local_time(line.filed_at),
        decide_by=line.decide_by,
        reply_by=line.reply_by,
        overdue=line.overdue,
        decided_at=local_time(line.decided_at) if line.decided_at else None,
        outcome=_pair(REMEDIES, line.remedy) if line.remedy else None,
        decision_reason=line.decision_reason,
        attachments=line.attachments,
        steps=tuple(
            CaseStepView(
                at=local_time(step.at),
                label=_pair(STEPS, step.event),
                actor=step.actor,
                detail=step.detail,
            )
            for step in line.steps
        ),
        sort_key=line.filed_at,
    )


def cases_view(catalogue: Catalogue, parts: Sequence[SubjectFile]) -> tuple[CaseView, ...]:
    """The subject's cases at every department, newest first."""
    targets = case_targets(catalogue, parts)
    rows = [
        _case_view(catalogue, part, line, targets)
        for part in _department_parts(parts)
        for line in part.cases
    ]
    rows.sort(key=lambda r: r.sort_key, reverse=True)
    return tuple(rows)


# --- the department's cases, as its officer sees them ---------------------------------------


def when(moment: datetime.datetime | None) -> str:
    """A UTC time as the hall reads it (China Standard Time), or an empty string."""
    if moment is None:
        return ""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.astimezone(CST).strftime("%Y-%m-%d %H:%M")


def officer_labels(case: Case) -> dict[str, Bilingual]:
    """The bilingual labels of one case's kind, ground, target and status."""
    return {
        "kind": _pair(KINDS, case.kind.value),
        "ground": _pair(GROUNDS, case.ground.value),
        "target": _pair(TARGETS, case.target.value),
        "status": _status_label(case.kind.value, case.status.value),
        "remedy": _pair(REMEDIES, case.remedy.value)
        if case.remedy is not None
        else Bilingual("", ""),
    }


def step_label(event: str) -> Bilingual:
    """A case step's label."""
    return _pair(STEPS, event)

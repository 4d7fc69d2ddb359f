"""The cases' wire contract: CaseOfficeService, and FileCase at the coordinator and the node.

Request and result types and proto conversions for both ends of each call (osmanthus/v1/
cases.proto); the domain values are osmanthus.core.cases.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from osmanthus.core.cases import (
    AttachmentInfo,
    Case,
    CaseCorrection,
    CaseEvent,
    CaseGround,
    CaseKind,
    CasePage,
    CaseQuery,
    CaseReceipt,
    CaseRemedy,
    CaseStatus,
    CaseTarget,
    Decision,
)
from osmanthus.core.errors import InvalidArgument
from osmanthus.core.lists import parse_date
from osmanthus.core.types import DepartmentId, SubjectKind
from osmanthus.core.wire.common import (
    kind_from_pb,
    kind_to_pb,
    required,
    timestamp_from_proto,
    timestamp_to_proto,
)
from osmanthus.v1 import cases_pb2

#: cases one page holds at most, and when the caller names no size
MAX_CASES_PAGE_SIZE = 100
DEFAULT_CASES_PAGE_SIZE = 50

_KIND_TO_PB = {
    CaseKind.OBJECTION: cases_pb2.CASE_KIND_OBJECTION,
    CaseKind.REPAIR: cases_pb2.CASE_KIND_REPAIR,
}
_TARGET_TO_PB = {
    CaseTarget.RECORD: cases_pb2.CASE_TARGET_RECORD,
    CaseTarget.LIST_ENTRY: cases_pb2.CASE_TARGET_LIST_ENTRY,
}
_GROUND_TO_PB = {
    CaseGround.RECORD: cases_pb2.CASE_GROUND_RECORD,
    CaseGround.ENTRY_CONTENT: cases_pb2.CASE_GROUND_ENTRY_CONTENT,
    CaseGround.ENTRY_PERIOD: cases_pb2.CASE_GROUND_ENTRY_PERIOD,
    CaseGround.FULFILLED: cases_pb2.CASE_GROUND_FULFILLED,
}
_STATUS_TO_PB = {
    CaseStatus.OPEN: cases_pb2.CASE_STATUS_OPEN,
    CaseStatus.UPHELD: cases_pb2.CASE_STATUS_UPHELD,
    CaseStatus.REJECTED: cases_pb2.CASE_STATUS_REJECTED,
}
_REMEDY_TO_PB = {
    CaseRemedy.WITHDRAW: cases_pb2.CASE_REMEDY_WITHDRAW,
    CaseRemedy.CORRECT: cases_pb2.CASE_REMEDY_CORRECT,
}
_KIND_FROM_PB = {v: k for k, v in _KIND_TO_PB.items()}
_TARGET_FROM_PB = {v: k for k, v in _TARGET_TO_PB.items()}
_GROUND_FROM_PB = {v: k for k, v in _GROUND_TO_PB.items()}
_STATUS_FROM_PB = {v: k for k, v in _STATUS_TO_PB.items()}
_REMEDY_FROM_PB = {v: k for k, v in _REMEDY_TO_PB.items()}


@dataclass(frozen=True, kw_only=True)
class FileCaseRequest:
    """A filing as the coordinator receives it (and forwards it, under its query id)."""

    subject_kind: SubjectKind
    subject_id: str
    purpose: str
    department: DepartmentId
    case_nonce: bytes
    sealed_case: bytes
    #: the portal's raw X25519 sealing public key and its proof that it made `sealed_case`
    #: (osmanthus.core.cases.sender_proof)
    sender_key: bytes = b""
    sender_proof: bytes = b""
    #: the coordinator's query id (NodeService.FileCase only)
    query_id: str = ""


def case_status_from_pb(value: int) -> CaseStatus | None:
    for status, pb in _STATUS_TO_PB.items():
        if pb == value:
            return status
    return None


def case_status_to_pb(status: CaseStatus | None) -> cases_pb2.CaseStatus:
    return _STATUS_TO_PB[status] if status is not None else cases_pb2.CASE_STATUS_UNSPECIFIED


# --- filing ------------------------------------------------------------------------------------


def file_case_request_to_proto(request: FileCaseRequest) -> cases_pb2.FileCaseRequest:
    return cases_pb2.FileCaseRequest(
        subject_kind=kind_to_pb(request.subject_kind),
        subject_id=request.subject_id,
        purpose=request.purpose,
        department=request.department,
        case_nonce=request.case_nonce,
        sealed_case=request.sealed_case,
        sender_key=request.sender_key,
        sender_proof=request.sender_proof,
    )


def file_case_request_from_proto(message: cases_pb2.FileCaseRequest) -> FileCaseRequest:
    return FileCaseRequest(
        subject_kind=required(kind_from_pb(message.subject_kind), "subject kind", "subject_kind"),
        subject_id=message.subject_id,
        purpose=message.purpose,
        department=DepartmentId(message.department),
        case_nonce=message.case_nonce,
        sealed_case=message.sealed_case,
        sender_key=message.sender_key,
        sender_proof=message.sender_proof,
    )


def node_file_case_to_proto(request: FileCaseRequest) -> cases_pb2.NodeFileCaseRequest:
    return cases_pb2.NodeFileCaseRequest(
        query_id=request.query_id,
        subject_kind=kind_to_pb(request.subject_kind),
        subject_id=request.subject_id,
        purpose=request.purpose,
        case_nonce=request.case_nonce,
        sealed_case=request.sealed_case,
        sender_key=request.sender_key,
        sender_proof=request.sender_proof,
    )


def node_file_case_from_proto(
    message: cases_pb2.NodeFileCaseRequest, *, department: DepartmentId
) -> FileCaseRequest:
    return FileCaseRequest(
        query_id=message.query_id,
        subject_kind=required(kind_from_pb(message.subject_kind), "subject kind", "subject_kind"),
        subject_id=message.subject_id,
        purpose=message.purpose,
        department=department,
        case_nonce=message.case_nonce,
        sealed_case=message.sealed_case,
        sender_key=message.sender_key,
        sender_proof=message.sender_proof,
    )


def receipt_to_proto(receipt: CaseReceipt) -> cases_pb2.CaseReceipt:
    return cases_pb2.CaseReceipt(
        case_id=receipt.case_id,
        department=receipt.department,
        filed_at=timestamp_to_proto(receipt.filed_at),
        decide_by=receipt.decide_by.isoformat(),
        reply_by=receipt.reply_by.isoformat(),
        duplicate=receipt.duplicate,
    )


def receipt_from_proto(message: cases_pb2.CaseReceipt) -> CaseReceipt:
    return CaseReceipt(
        case_id=message.case_id,
        department=DepartmentId(message.department),
        filed_at=timestamp_from_proto(message.filed_at, field="filed_at"),
        decide_by=parse_date(message.decide_by, field="decide_by"),
        reply_by=parse_date(message.reply_by, field="reply_by"),
        duplicate=message.duplicate,
    )


# --- cases -------------------------------------------------------------------------------------


def _correction_to_proto(correction: CaseCorrection | None) -> cases_pb2.CaseCorrection:
    if correction is None:
        return cases_pb2.CaseCorrection()
    return cases_pb2.CaseCorrection(
        quantity=correction.quantity or 0,
        event_start=_iso(correction.event_start),
        event_end=_iso(correction.event_end),
        window_end=_iso(correction.window_end),
    )


def correction_from_proto(
    message: cases_pb2.CaseCorrection, *, field: str = "correction"
) -> CaseCorrection | None:
    correction = CaseCorrection(
        quantity=message.quantity or None,
        event_start=_date_or_none(message.event_start, field=f"{field}.event_start"),
        event_end=_date_or_none(message.event_end, field=f"{field}.event_end"),
        window_end=_date_or_none(message.window_end, field=f"{field}.window_end"),
    )
    return None if correction.empty else correction


def case_to_proto(case: Case) -> cases_pb2.Case:
    return cases_pb2.Case(
        case_id=case.case_id,
        department=case.department,
        kind=_KIND_TO_PB[case.kind],
        ground=_GROUND_TO_PB[case.ground],
        target=_TARGET_TO_PB[case.target],
        target_id=case.target_id,
        subject_kind=kind_to_pb(case.subject_kind),
        subject_id=case.subject_id,
        statement=case.statement,
        commitment_letter=case.commitment_letter,
        letter_sha256=case.letter_sha256,
        filed_at=timestamp_to_proto(case.filed_at),
        decide_by=case.decide_by.isoformat(),
        reply_by=case.reply_by.isoformat(),
        overdue=case.overdue,
        status=_STATUS_TO_PB[case.status],
        decided_at=timestamp_to_proto(case.decided_at) if case.decided_at else None,
        decision_reason=case.decision_reason,
        remedy=(
            _REMEDY_TO_PB[case.remedy]
            if case.remedy is not None
            else cases_pb2.CASE_REMEDY_UNSPECIFIED
        ),
        correction=_correction_to_proto(case.correction),
        attachments=[attachment_info_to_proto(a) for a in case.attachments],
        events=[
            cases_pb2.CaseEvent(
                at=timestamp_to_proto(e.at), event=e.event, actor=e.actor, detail=e.detail
            )
            for e in case.events
        ],
    )


def case_from_proto(message: cases_pb2.Case, *, field: str = "case") -> Case:
    return Case(
        case_id=message.case_id,
        department=DepartmentId(message.department),
        kind=required(_KIND_FROM_PB.get(message.kind), "case kind", f"{field}.kind"),
        ground=required(_GROUND_FROM_PB.get(message.ground), "case ground", f"{field}.ground"),
        target=required(_TARGET_FROM_PB.get(message.target), "case target", f"{field}.target"),
        target_id=message.target_id,
        subject_kind=required(
            kind_from_pb(message.subject_kind), "subject kind", f"{field}.subject_kind"
        ),
        subject_id=message.subject_id,
        statement=message.statement,
        commitment_letter=message.commitment_letter,
        letter_sha256=message.letter_sha256,
        filed_at=timestamp_from_proto(message.filed_at, field=f"{field}.filed_at"),
        decide_by=parse_date(message.decide_by, field=f"{field}.decide_by"),
        reply_by=parse_date(message.reply_by, field=f"{field}.reply_by"),
        overdue=message.overdue,
        status=required(_STATUS_FROM_PB.get(message.status), "case status", f"{field}.status"),
        decided_at=(
            timestamp_from_proto(message.decided_at, field=f"{field}.decided_at")
            if message.HasField("decided_at")
            else None
        ),
        decision_reason=message.decision_reason,
        remedy=_REMEDY_FROM_PB.get(message.remedy),
        correction=correction_from_proto(message.correction, field=f"{field}.correction"),
        attachments=tuple(attachment_info_from_proto(a) for a in message.attachments),
        events=tuple(
            CaseEvent(
                at=e.at.ToDatetime(tzinfo=datetime.UTC),
                event=e.event,
                actor=e.actor,
                detail=e.detail,
            )
            for e in message.events
        ),
    )


def attachment_info_to_proto(info: AttachmentInfo) -> cases_pb2.AttachmentInfo:
    return cases_pb2.AttachmentInfo(
        index=info.index,
        media_type=info.media_type,
        name=info.name,
        size=info.size,
        sha256=info.sha256,
        deleted=info.deleted,
    )


def attachment_info_from_proto(message: cases_pb2.AttachmentInfo) -> AttachmentInfo:
    return AttachmentInfo(
        index=message.index,
        media_type=message.media_type,
        name=message.name,
        size=message.size,
        sha256=message.sha256,
        deleted=message.deleted,
    )


# --- the case office ---------------------------------------------------------------------------


def case_query_to_proto(query: CaseQuery) -> cases_pb2.ListCasesRequest:
    return cases_pb2.ListCasesRequest(
        status=case_status_to_pb(query.status),
        overdue_only=query.overdue_only,
        page_size=query.page_size,
        page_token=query.page_token,
    )


def case_query_from_proto(message: cases_pb2.ListCasesRequest) -> CaseQuery:
    size = message.page_size or DEFAULT_CASES_PAGE_SIZE
    if size > MAX_CASES_PAGE_SIZE:
        raise InvalidArgument(
            f"is {size}; at most {MAX_CASES_PAGE_SIZE} cases a page", field="page_size"
        )
    return CaseQuery(
        status=case_status_from_pb(message.status),
        overdue_only=message.overdue_only,
        page_size=size,
        page_token=message.page_token,
    )


def case_page_to_proto(page: CasePage) -> cases_pb2.ListCasesResponse:
    return cases_pb2.ListCasesResponse(
        cases=[case_to_proto(c) for c in page.cases], next_page_token=page.next_page_token
    )


def case_page_from_proto(message: cases_pb2.ListCasesResponse) -> CasePage:
    return CasePage(
        cases=tuple(case_from_proto(c, field=f"cases[{i}]") for i, c in enumerate(message.cases)),
        next_page_token=message.next_page_token,
    )


def decision_to_proto(decision: Decision) -> cases_pb2.DecideCaseRequest:
    return cases_pb2.DecideCaseRequest(
        case_id=decision.case_id,
        outcome=case_status_to_pb(decision.outcome),
        reason=decision.reason,
        remedy=(
            _REMEDY_TO_PB[decision.remedy]
            if decision.remedy is not None
            else cases_pb2.CASE_REMEDY_UNSPECIFIED
        ),
        correction=_correction_to_proto(decision.correction),
    )


def decision_from_proto(message: cases_pb2.DecideCaseRequest) -> Decision:
    outcome = case_status_from_pb(message.outcome)
    if outcome not in (CaseStatus.UPHELD, CaseStatus.REJECTED):
        raise InvalidArgument("must be upheld or rejected", field="outcome")
    return Decision(
        case_id=message.case_id,
        outcome=outcome,
        reason=message.reason,
        remedy=_REMEDY_FROM_PB.get(message.remedy),
        correction=correction_from_proto(message.correction),
    ).checked()


def _iso(value: datetime.date | None) -> str:
    return value.isoformat() if value is not None else ""


def _date_or_none(value: str, *, field: str) -> datetime.date | None:
    return parse_date(value, field=field) if value else None

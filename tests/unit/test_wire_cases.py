"""The cases' proto conversions (osmanthus.core.wire.cases) round-trip every field."""

from __future__ import annotations

import datetime

import pytest

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
from osmanthus.core.types import DepartmentId, SubjectKind
from osmanthus.core.wire.cases import (
    MAX_CASES_PAGE_SIZE,
    FileCaseRequest,
    case_from_proto,
    case_page_from_proto,
    case_page_to_proto,
    case_query_from_proto,
    case_query_to_proto,
    case_to_proto,
    decision_from_proto,
    decision_to_proto,
    file_case_request_from_proto,
    file_case_request_to_proto,
    node_file_case_from_proto,
    node_file_case_to_proto,
    receipt_from_proto,
    receipt_to_proto,
)

AT = datetime.datetime(2026, 12, 7, 9, 30, tzinfo=datetime.UTC)
CASE = Case(
    case_id="case-" + "B" * 22,
    department=DepartmentId("housing"),
    kind=CaseKind.OBJECTION,
    ground=CaseGround.RECORD,
    target=CaseTarget.RECORD,
    target_id="HS-1",
    subject_kind=SubjectKind.PERSON,
    subject_id="320508198810061286",
    statement="wrong tenant",
    commitment_letter="",
    letter_sha256="",
    filed_at=AT,
    decide_by=datetime.date(2026, 12, 10),
    reply_by=datetime.date(2026, 12, 21),
    overdue=False,
    status=CaseStatus.UPHELD,
    decided_at=AT + datetime.timedelta(days=1),
    decision_reason="核实有误",
    remedy=CaseRemedy.CORRECT,
    correction=CaseCorrection(quantity=2, event_end=datetime.date(2026, 1, 31)),
    attachments=(
        AttachmentInfo(index=0, media_type="application/pdf", name="a.pdf", size=9, sha256="ab"),
    ),
    events=(CaseEvent(at=AT, event="filed", actor="subject"),),
)


def test_a_case_round_trips() -> None:
    assert case_from_proto(case_to_proto(CASE)) == CASE
    open_case = CASE.__class__(
        **{**CASE.__dict__, "status": CaseStatus.OPEN, "decided_at": None, "remedy": None,
           "correction": None, "decision_reason": ""}
    )  # fmt: skip
    assert case_from_proto(case_to_proto(open_case)) == open_case
    page = CasePage(cases=(CASE, open_case), next_page_token="t")
    assert case_page_from_proto(case_page_to_proto(page)) == page


def test_filings_receipts_queries_and_decisions_round_trip() -> None:
    filing = FileCaseRequest(
        subject_kind=SubjectKind.PERSON,
        subject_id="320508198810061286",
        purpose="self_query",
        department=DepartmentId("housing"),
        case_nonce=b"n" * 32,
        sealed_case=b"sealed",
        sender_key=b"k" * 32,
        sender_proof=b"p" * 32,
    )
    assert file_case_request_from_proto(file_case_request_to_proto(filing)) == filing
    forwarded = FileCaseRequest(**{**filing.__dict__, "query_id": "q-1"})
    assert (
        node_file_case_from_proto(node_file_case_to_proto(forwarded), department=filing.department)
        == forwarded
    )
    receipt = CaseReceipt(
        case_id=CASE.case_id,
        department=CASE.department,
        filed_at=AT,
        decide_by=CASE.decide_by,
        reply_by=CASE.reply_by,
        duplicate=True,
    )
    assert receipt_from_proto(receipt_to_proto(receipt)) == receipt
    query = CaseQuery(status=CaseStatus.OPEN, overdue_only=True, page_size=10, page_token="x")
    assert case_query_from_proto(case_query_to_proto(query)) == query
    decision = Decision(
        case_id=CASE.case_id,
        outcome=CaseStatus.UPHELD,
        reason="ok",
        remedy=CaseRemedy.CORRECT,
        correction=CaseCorrection(event_start=datetime.date(2025, 1, 1)),
    )
    assert decision_from_proto(decision_to_proto(decision)) == decision


def test_a_page_too_large_and_a_decision_left_open_are_refused() -> None:
    with pytest.raises(InvalidArgument) as info:
        case_query_from_proto(case_query_to_proto(CaseQuery(page_size=MAX_CASES_PAGE_SIZE + 1)))
    assert info.value.field == "page_size"
    undecided = Decision(case_id=CASE.case_id, outcome=CaseStatus.OPEN, reason="x")
    with pytest.raises(InvalidArgument) as info:
        decision_from_proto(decision_to_proto(undecided))
    assert info.value.field == "outcome"

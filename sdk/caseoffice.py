"""A department's case officer at its node: the queue of objections and repairs, and decisions.

Each department's node keeps the cases filed about its own records and list entries
(osmanthus.core.cases) and serves them to that department's officer alone: a mutual-TLS client
with an operator certificate named after the department ('osmanthus certs issue --role
operator --name housing'), as for the list office. The node's certificate must name the
department (node_server_name), so an officer never talks to another department's node by
mistake; the node refuses any other certificate, another department's officer's included.

    with CaseOffice("10.0.0.7:50051", tls=tls, department=DepartmentId("housing")) as office:
        page = office.list_cases(CaseQuery(status=CaseStatus.OPEN))
        case = office.get_case(page.cases[0].case_id)
        info, content = office.attachment(case.case_id, 0)
        office.decide(Decision(case_id=case.case_id, outcome=CaseStatus.REJECTED,
                               reason="The record matches the court's judgment."))

Refusals come as the SDK's errors (osmanthus.core.errors) with the node's message and field:
FailedPrecondition for a case no longer open, NotFound for an unknown case, PermissionDenied for
a certificate of another department. An answer that does not fit the question (another case,
an attachment whose digest is not its content's) is the node's fault: CryptoError.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, Final, TypeVar

import grpc

from osmanthus.core.cases import (
    CASE_ID_PATTERN,
    AttachmentInfo,
    Case,
    CasePage,
    CaseQuery,
    Decision,
)
from osmanthus.core.errors import CryptoError, InvalidArgument
from osmanthus.core.grpc_errors import error_from_rpc
from osmanthus.core.tls import TlsFiles, node_server_name, secure_channel
from osmanthus.core.types import DepartmentId
from osmanthus.core.wire.cases import (
    MAX_CASES_PAGE_SIZE,
    attachment_info_from_proto,
    case_from_proto,
    case_page_from_proto,
    case_query_to_proto,
    decision_to_proto,
)
from osmanthus.v1 import cases_pb2, cases_pb2_grpc

DEFAULT_TIMEOUT_S: Final = 30.0
M = TypeVar("M")
R = TypeVar("R")


def check_case_id(case_id: str) -> str:
    """`case_id` if it is a case id ("case-" and 22 base64url characters); InvalidArgument
    naming `case_id` otherwise."""
    if not isinstance(case_id, str) or not CASE_ID_PATTERN.fullmatch(case_id):
        raise InvalidArgument(
            f"{str(case_id)[:40]!r} is not a case id (case- and 22 letters, digits, '-' or '_', "
            "as 'osmanthus disputes list' shows them)",
            field="case_id",
        )
    return case_id


def _from_node(convert: Callable[[M], R], message: M) -> R:
    """A node's message as typed values; one no honest node sends is its fault."""
    try:
        return convert(message)
    except InvalidArgument as exc:
        raise CryptoError(
            f"the node sent a malformed answer: {exc.message}", field=exc.field
        ) from None


class CaseOffice:
    """The case office of one department's node, for that department's officer."""

    def __init__(
        self,
        target: str,
        *,
        tls: TlsFiles,
        department: DepartmentId,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        """`tls`: the officer's operator certificate (named after `department`) and the
        platform CA; `target`: the department's node, host:port."""
        self.department = department
        self._timeout_s = timeout_s
        self._channel = secure_channel(target, tls, server_name=node_server_name(department))
        self._stub = cases_pb2_grpc.CaseOfficeServiceStub(self._channel)

    def _call(self, method: Callable[..., Any], request: Any) -> Any:
        try:
            return method(request, timeout=self._timeout_s)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None

    def list_cases(self, query: CaseQuery | None = None) -> CasePage:
        """One page of the department's cases, newest first (CaseQuery: status, overdue only,
        page size up to 100, the page token of the page before). A listed case leaves out its
        steps and letter: get_case has them."""
        asked = query or CaseQuery()
        if not 1 <= asked.page_size <= MAX_CASES_PAGE_SIZE:
            raise InvalidArgument(
                f"is {asked.page_size}; 1 to {MAX_CASES_PAGE_SIZE} cases a page", field="page_size"
            )
        message = self._call(self._stub.ListCases, case_query_to_proto(asked))
        page = _from_node(case_page_from_proto, message)
        if len(page.cases) > asked.page_size:
            raise CryptoError(
                f"the node sent {len(page.cases)} cases for a page of {asked.page_size}",
                field="cases",
            )
        for index, case in enumerate(page.cases):
            self._check_case(case, field=f"cases[{index}]")
        return page

    def get_case(self, case_id: str) -> Case:
        """One case in full: statement, letter, attachments' descriptions, every step."""
        asked = check_case_id(case_id)
        message = self._call(self._stub.GetCase, cases_pb2.GetCaseRequest(case_id=asked))
        case = _from_node(case_from_proto, message)
        self._check_case(case, field="case", case_id=asked)
        return case

    def attachment(self, case_id: str, index: int) -> tuple[AttachmentInfo, bytes]:
        """Attachment `index` (from 0) of a case: its description and its content, checked
        against the SHA-256 the subject filed. A deleted attachment (the case's retention
        period is over) comes with no content."""
        asked = check_case_id(case_id)
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise InvalidArgument("must be a whole number from 0", field="index")
        message = self._call(
            self._stub.GetAttachment,
            cases_pb2.GetAttachmentRequest(case_id=asked, index=index),
        )
        info = attachment_info_from_proto(message.info)
        content = bytes(message.content)
        if info.index != index:
            raise CryptoError(
                f"the node sent attachment {info.index} for attachment {index}", field="index"
            )
        if info.deleted:
            if content:
                raise CryptoError(
                    "the node sent content for an attachment it says is deleted", field="content"
                )
            return info, b""
        if len(content) != info.size or hashlib.sha256(content).hexdigest() != info.sha256:
            raise CryptoError(
                "the attachment's content is not what its size and SHA-256 say; not used",
                field="content",
            )
        return info, content

    def decide(self, decision: Decision) -> Case:
        """Decide an open case (Decision.checked: upheld with a remedy, or rejected; a reason
        the subject reads); the case as decided, with its new step."""
        checked = decision.checked()
        message = self._call(self._stub.DecideCase, decision_to_proto(checked))
        case = _from_node(case_from_proto, message)
        self._check_case(case, field="case", case_id=checked.case_id)
        if case.status is not checked.outcome:
            raise CryptoError(
                f"the node answered with the case {case.status.value}, not {checked.outcome.value}",
                field="status",
            )
        return case

    def _check_case(self, case: Case, *, field: str, case_id: str | None = None) -> None:
        if case.department != self.department:
            raise CryptoError(
                f"the node sent a case of department {case.department[:40]!r}, not "
                f"{self.department}'s",
                field=f"{field}.department",
            )
        if case_id is not None and case.case_id != case_id:
            raise CryptoError(
                f"the node sent case {case.case_id[:40]!r} for {case_id}", field=f"{field}.case_id"
            )

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> CaseOffice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""The node's gRPC servicers (NodeService, ListOfficeService, CaseOfficeService,
IngestService): unpack, hand over, pack.

Each RPC converts its request with the wire contract, hands it to the service with the caller
CallerInterceptor read, and converts the answer back; every decision is the service's.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from node.caseoffice import CaseOffice
from node.ingest import IngestOffice
from node.office import ListOffice
from node.service import NodeService
from osmanthus.core.grpc_errors import servicer_method
from osmanthus.core.server import current_caller
from osmanthus.core.wire import cases as cases_wire
from osmanthus.core.wire import common as wire_common
from osmanthus.core.wire import ingest as ingest_wire
from osmanthus.core.wire import lists as lists_wire
from osmanthus.core.wire import node as node_wire
from osmanthus.v1 import (
    cases_pb2,
    cases_pb2_grpc,
    ingest_pb2,
    ingest_pb2_grpc,
    lists_pb2,
    lists_pb2_grpc,
    node_pb2,
    node_pb2_grpc,
)


class NodeServicer(node_pb2_grpc.NodeServiceServicer):
    def __init__(self, service: NodeService) -> None:
        self._service = service

    @servicer_method
    def Contribute(  # noqa: N802 - gRPC method name
        self, request: node_pb2.ContributeRequest, context: grpc.ServicerContext
    ) -> node_pb2.ContributeResponse:
        caller = current_caller()
        result = self._service.contribute(
            node_wire.contribution_request_from_proto(request, limits=self._service.request_limits),
            caller=caller.peer,
            token=caller.token,
        )
        return node_wire.contribution_result_to_proto(result)

    @servicer_method
    def ContributeChunk(  # noqa: N802 - gRPC method name
        self, request: node_pb2.ContributeChunkRequest, context: grpc.ServicerContext
    ) -> node_pb2.ContributeChunkResponse:
        caller = current_caller()
        result = self._service.contribute_chunk(
            node_wire.chunk_request_from_proto(request, limits=self._service.request_limits),
            caller=caller.peer,
            token=caller.token,
        )
        return node_wire.chunk_result_to_proto(result)

    @servicer_method
    def ContributeStats(  # noqa: N802 - gRPC method name
        self, request: node_pb2.ContributeStatsRequest, context: grpc.ServicerContext
    ) -> node_pb2.ContributeStatsResponse:
        caller = current_caller()
        result = self._service.contribute_stats(
            node_wire.stats_request_from_proto(request, limits=self._service.request_limits),
            caller=caller.peer,
            token=caller.token,
        )
        return node_wire.stats_result_to_proto(result)

    @servicer_method
    def SubjectFile(  # noqa: N802 - gRPC method name
        self, request: node_pb2.NodeSubjectFileRequest, context: grpc.ServicerContext
    ) -> node_pb2.SealedSubjectFile:
        caller = current_caller()
        part = self._service.subject_file(
            node_wire.subject_file_query_from_proto(request), caller=caller.peer, token=caller.token
        )
        return node_wire.sealed_part_to_proto(part)

    @servicer_method
    def FileCase(  # noqa: N802 - gRPC method name
        self, request: cases_pb2.NodeFileCaseRequest, context: grpc.ServicerContext
    ) -> cases_pb2.CaseReceipt:
        caller = current_caller()
        receipt = self._service.file_case(
            cases_wire.node_file_case_from_proto(request, department=self._service.department_id),
            caller=caller.peer,
            token=caller.token,
        )
        return cases_wire.receipt_to_proto(receipt)

    @servicer_method
    def PublicEntries(  # noqa: N802 - gRPC method name
        self, request: lists_pb2.PublicEntriesRequest, context: grpc.ServicerContext
    ) -> lists_pb2.PublicEntriesResponse:
        page = self._service.public_entries(
            lists_wire.public_query_from_proto(request), caller=current_caller().peer
        )
        return lists_wire.public_page_to_proto(page)

    @servicer_method
    def ListChanges(  # noqa: N802 - gRPC method name
        self, request: node_pb2.NodeListChangesRequest, context: grpc.ServicerContext
    ) -> lists_pb2.ListChangesResponse:
        page = self._service.list_changes(
            lists_wire.changes_query_from_proto(request), caller=current_caller().peer
        )
        return lists_wire.list_changes_page_to_proto(page)

    @servicer_method
    def GetInfo(  # noqa: N802 - gRPC method name
        self, request: node_pb2.GetInfoRequest, context: grpc.ServicerContext
    ) -> node_pb2.NodeInfo:
        # any platform certificate may ask (CallerInterceptor admitted it); no anonymous peers.
        # The node's standing is for operators and the coordinator only (describe decides)
        return node_wire.node_description_to_proto(
            self._service.describe(caller=current_caller().peer)
        )


class ListOfficeServicer(lists_pb2_grpc.ListOfficeServiceServicer):
    """The department's list officer publishes, withdraws and reads the history here."""

    def __init__(self, office: ListOffice) -> None:
        self._office = office

    @servicer_method
    def PublishEntries(  # noqa: N802 - gRPC method name
        self, request: lists_pb2.PublishEntriesRequest, context: grpc.ServicerContext
    ) -> lists_pb2.PublishEntriesResponse:
        result = self._office.publish(
            lists_wire.entry_drafts_from_proto(request), caller=current_caller().peer
        )
        return lists_wire.publish_result_to_proto(result)

    @servicer_method
    def WithdrawEntry(  # noqa: N802 - gRPC method name
        self, request: lists_pb2.WithdrawEntryRequest, context: grpc.ServicerContext
    ) -> lists_pb2.ListEntry:
        entry = self._office.withdraw(
            request.entry_id,
            reason=lists_wire.withdraw_reason_from_pb(request.reason),
            reference=request.reference,
            caller=current_caller().peer,
        )
        return lists_wire.list_entry_to_proto(entry)

    @servicer_method
    def History(  # noqa: N802 - gRPC method name
        self, request: lists_pb2.HistoryRequest, context: grpc.ServicerContext
    ) -> lists_pb2.HistoryResponse:
        entries = self._office.history(
            wire_common.kind_from_pb(request.subject_kind),
            request.subject_id,
            caller=current_caller().peer,
        )
        return lists_wire.history_to_proto(entries)


class CaseOfficeServicer(cases_pb2_grpc.CaseOfficeServiceServicer):
    """The department's case officer lists, reads and decides the subjects' cases here."""

    def __init__(self, office: CaseOffice) -> None:
        self._office = office

    @servicer_method
    def ListCases(  # noqa: N802 - gRPC method name
        self, request: cases_pb2.ListCasesRequest, context: grpc.ServicerContext
    ) -> cases_pb2.ListCasesResponse:
        # read inside the office's audited call: a refused caller's bad query is a refusal
        page = self._office.list_cases(
            lambda: cases_wire.case_query_from_proto(request), caller=current_caller().peer
        )
        return cases_wire.case_page_to_proto(page)

    @servicer_method
    def GetCase(  # noqa: N802 - gRPC method name
        self, request: cases_pb2.GetCaseRequest, context: grpc.ServicerContext
    ) -> cases_pb2.Case:
        case = self._office.get_case(request.case_id, caller=current_caller().peer)
        return cases_wire.case_to_proto(case)

    @servicer_method
    def GetAttachment(  # noqa: N802 - gRPC method name
        self, request: cases_pb2.GetAttachmentRequest, context: grpc.ServicerContext
    ) -> cases_pb2.Attachment:
        info, content = self._office.attachment(
            request.case_id, request.index, caller=current_caller().peer
        )
        return cases_pb2.Attachment(info=cases_wire.attachment_info_to_proto(info), content=content)

    @servicer_method
    def DecideCase(  # noqa: N802 - gRPC method name
        self, request: cases_pb2.DecideCaseRequest, context: grpc.ServicerContext
    ) -> cases_pb2.Case:
        case = self._office.decide(
            lambda: cases_wire.decision_from_proto(request), caller=current_caller().peer
        )
        return cases_wire.case_to_proto(case)


class IngestServicer(ingest_pb2_grpc.IngestServiceServicer):
    def __init__(self, office: IngestOffice) -> None:
        self._office = office

    @servicer_method
    def ImportRecords(  # noqa: N802 - gRPC method name
        self, request_iterator: Iterator[ingest_pb2.ImportChunk], context: grpc.ServicerContext
    ) -> ingest_pb2.ImportRecordsResponse:
        caller = current_caller()
        header, data = ingest_wire.upload_from_proto(request_iterator)
        outcome = self._office.upload(header, data, caller=caller.peer)
        return ingest_wire.outcome_to_proto(outcome)

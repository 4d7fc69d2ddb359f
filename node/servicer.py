"""The node's gRPC servicers (NodeService, ListOfficeService): unpack, identify, delegate."""

from __future__ import annotations

import grpc

from node import convert
from node.lists import ListOffice
from node.service import NodeService
from osmanthus.grpc_errors import servicer_method
from osmanthus.tls import peer_identity
from osmanthus.v1 import lists_pb2, lists_pb2_grpc, node_pb2, node_pb2_grpc

AUTHORIZATION_KEY = "authorization"
BEARER_PREFIX = "Bearer "


def bearer_token(context: grpc.ServicerContext) -> str | None:
    """The JWT in the 'authorization: Bearer …' metadata, or None."""
    for key, value in context.invocation_metadata():
        if key == AUTHORIZATION_KEY and isinstance(value, str) and value.startswith(BEARER_PREFIX):
            return value[len(BEARER_PREFIX) :].strip()
    return None


class NodeServicer(node_pb2_grpc.NodeServiceServicer):
    def __init__(self, service: NodeService) -> None:
        self._service = service

    @servicer_method
    def Contribute(  # noqa: N802 - gRPC method name
        self, request: node_pb2.ContributeRequest, context: grpc.ServicerContext
    ) -> node_pb2.ContributeResponse:
        caller = peer_identity(context)
        result = self._service.contribute(
            convert.contribution_request(request), caller=caller, token=bearer_token(context)
        )
        return convert.contribution_response(result)

    @servicer_method
    def ContributeChunk(  # noqa: N802 - gRPC method name
        self, request: node_pb2.ContributeChunkRequest, context: grpc.ServicerContext
    ) -> node_pb2.ContributeChunkResponse:
        result = self._service.contribute_chunk(
            convert.chunk_request(request),
            caller=peer_identity(context),
            token=bearer_token(context),
        )
        return convert.chunk_response(result)

    @servicer_method
    def ContributeStats(  # noqa: N802 - gRPC method name
        self, request: node_pb2.ContributeStatsRequest, context: grpc.ServicerContext
    ) -> node_pb2.ContributeStatsResponse:
        result = self._service.contribute_stats(
            convert.stats_request(request),
            caller=peer_identity(context),
            token=bearer_token(context),
        )
        return convert.stats_response(result)

    @servicer_method
    def PublicEntries(  # noqa: N802 - gRPC method name
        self, request: lists_pb2.PublicEntriesRequest, context: grpc.ServicerContext
    ) -> lists_pb2.PublicEntriesResponse:
        page = self._service.public_entries(
            convert.public_query(request), caller=peer_identity(context)
        )
        return convert.public_page_message(page)

    @servicer_method
    def ListChanges(  # noqa: N802 - gRPC method name
        self, request: node_pb2.NodeListChangesRequest, context: grpc.ServicerContext
    ) -> lists_pb2.ListChangesResponse:
        page = self._service.list_changes(
            convert.changes_query(request), caller=peer_identity(context)
        )
        return convert.list_changes_response(page)

    @servicer_method
    def GetInfo(  # noqa: N802 - gRPC method name
        self, request: node_pb2.GetInfoRequest, context: grpc.ServicerContext
    ) -> node_pb2.NodeInfo:
        peer_identity(context)  # any platform certificate may ask; no anonymous peers
        return convert.node_info(self._service.describe())


class ListOfficeServicer(lists_pb2_grpc.ListOfficeServiceServicer):
    """The department's list officer publishes, withdraws and reads the history here."""

    def __init__(self, office: ListOffice) -> None:
        self._office = office

    @servicer_method
    def PublishEntries(  # noqa: N802 - gRPC method name
        self, request: lists_pb2.PublishEntriesRequest, context: grpc.ServicerContext
    ) -> lists_pb2.PublishEntriesResponse:
        result = self._office.publish(convert.entry_drafts(request), caller=peer_identity(context))
        return convert.publish_response(result)

    @servicer_method
    def WithdrawEntry(  # noqa: N802 - gRPC method name
        self, request: lists_pb2.WithdrawEntryRequest, context: grpc.ServicerContext
    ) -> lists_pb2.ListEntry:
        entry = self._office.withdraw(
            request.entry_id,
            reason=convert.withdraw_reason_from_pb(request.reason),
            reference=request.reference,
            caller=peer_identity(context),
        )
        return convert.list_entry_message(entry)

    @servicer_method
    def History(  # noqa: N802 - gRPC method name
        self, request: lists_pb2.HistoryRequest, context: grpc.ServicerContext
    ) -> lists_pb2.HistoryResponse:
        entries = self._office.history(
            convert.kind_from_pb(request.subject_kind),
            request.subject_id,
            caller=peer_identity(context),
        )
        return convert.history_response(entries)

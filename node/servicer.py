"""The gRPC NodeService servicer: unpacks messages, identifies the caller, delegates."""

from __future__ import annotations

import grpc

from node import convert
from node.service import NodeService
from osmanthus.grpc_errors import servicer_method
from osmanthus.tls import peer_identity
from osmanthus.v1 import node_pb2, node_pb2_grpc

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
    def GetInfo(  # noqa: N802 - gRPC method name
        self, request: node_pb2.GetInfoRequest, context: grpc.ServicerContext
    ) -> node_pb2.NodeInfo:
        peer_identity(context)  # any platform certificate may ask; no anonymous peers
        return convert.node_info(self._service.describe())

"""The receiver's gRPC servicer (ProvinceService): unpack, identify the caller, delegate."""

from __future__ import annotations

import grpc

from osmanthus.grpc_errors import servicer_method
from osmanthus.tls import peer_identity
from osmanthus.v1 import province_pb2, province_pb2_grpc
from province import convert
from province.service import ProvinceService


class ProvinceServicer(province_pb2_grpc.ProvinceServiceServicer):
    def __init__(self, service: ProvinceService) -> None:
        self._service = service

    @servicer_method
    def Deliver(  # noqa: N802 - gRPC method name
        self, request: province_pb2.DeliverRequest, context: grpc.ServicerContext
    ) -> province_pb2.DeliverResponse:
        caller = peer_identity(context)
        delivery = self._service.deliver(convert.signed_batch(request), caller=caller)
        return convert.deliver_response(delivery)

    @servicer_method
    def ListBatches(  # noqa: N802 - gRPC method name
        self, request: province_pb2.ListBatchesRequest, context: grpc.ServicerContext
    ) -> province_pb2.ListBatchesResponse:
        page = self._service.list_batches(
            convert.batch_query(request), caller=peer_identity(context)
        )
        return convert.list_batches_response(page)

    @servicer_method
    def ListRejections(  # noqa: N802 - gRPC method name
        self, request: province_pb2.ListRejectionsRequest, context: grpc.ServicerContext
    ) -> province_pb2.ListRejectionsResponse:
        page = self._service.list_rejections(
            convert.rejection_query(request), caller=peer_identity(context)
        )
        return convert.list_rejections_response(page)

"""The receiver's gRPC servicer (ProvinceService): unpack, hand over with the caller, pack."""

from __future__ import annotations

import grpc

from osmanthus.core.grpc_errors import servicer_method
from osmanthus.core.server import current_caller
from osmanthus.core.wire import province as province_wire
from osmanthus.v1 import province_pb2, province_pb2_grpc
from province.service import ProvinceService


class ProvinceServicer(province_pb2_grpc.ProvinceServiceServicer):
    def __init__(self, service: ProvinceService) -> None:
        self._service = service

    @servicer_method
    def Deliver(  # noqa: N802 - gRPC method name
        self, request: province_pb2.DeliverRequest, context: grpc.ServicerContext
    ) -> province_pb2.DeliverResponse:
        caller = current_caller()
        delivery = self._service.deliver(
            province_wire.signed_batch_from_proto(request), caller=caller.peer
        )
        return province_wire.delivery_to_proto(delivery)

    @servicer_method
    def ListBatches(  # noqa: N802 - gRPC method name
        self, request: province_pb2.ListBatchesRequest, context: grpc.ServicerContext
    ) -> province_pb2.ListBatchesResponse:
        caller = current_caller()
        page = self._service.list_batches(
            province_wire.batch_query_from_proto(request), caller=caller.peer
        )
        return province_wire.batch_page_to_proto(page)

    @servicer_method
    def ListRejections(  # noqa: N802 - gRPC method name
        self, request: province_pb2.ListRejectionsRequest, context: grpc.ServicerContext
    ) -> province_pb2.ListRejectionsResponse:
        caller = current_caller()
        page = self._service.list_rejections(
            province_wire.rejection_query_from_proto(request), caller=caller.peer
        )
        return province_wire.rejection_page_to_proto(page)

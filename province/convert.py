"""Conversion between ProvinceService protobuf messages and the receiver's typed Python values."""

from __future__ import annotations

import datetime

from google.protobuf import timestamp_pb2

from osmanthus.errors import InvalidArgument
from osmanthus.syncbatch import BatchKind, SignedBatch
from osmanthus.v1 import province_pb2
from province.store import (
    BatchPage,
    BatchQuery,
    BatchSummary,
    Delivery,
    Rejection,
    RejectionPage,
    RejectionQuery,
)

_KIND_FROM_PB: dict[int, BatchKind] = {
    province_pb2.BATCH_KIND_LIST_CHANGES: BatchKind.LIST_CHANGES,
    province_pb2.BATCH_KIND_GRADES: BatchKind.GRADES,
    province_pb2.BATCH_KIND_STATISTICS: BatchKind.STATISTICS,
}
_KIND_TO_PB: dict[BatchKind, province_pb2.BatchKind] = {
    BatchKind.LIST_CHANGES: province_pb2.BATCH_KIND_LIST_CHANGES,
    BatchKind.GRADES: province_pb2.BATCH_KIND_GRADES,
    BatchKind.STATISTICS: province_pb2.BATCH_KIND_STATISTICS,
}


def _timestamp(value: datetime.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value.astimezone(datetime.UTC))
    return stamp


def _datetime(stamp: timestamp_pb2.Timestamp) -> datetime.datetime:
    return stamp.ToDatetime(tzinfo=datetime.UTC)


def _kind_from_pb(value: int, *, field: str) -> BatchKind | None:
    if value == province_pb2.BATCH_KIND_UNSPECIFIED:
        return None
    kind = _KIND_FROM_PB.get(value)
    if kind is None:
        raise InvalidArgument(f"{value} is not a batch kind", field=field)
    return kind


def _required_kind(value: int, *, field: str) -> BatchKind:
    kind = _kind_from_pb(value, field=field)
    if kind is None:
        raise InvalidArgument("is unspecified", field=field)
    return kind


# --- Deliver ------------------------------------------------------------------------------------


def deliver_request(signed: SignedBatch) -> province_pb2.DeliverRequest:
    return province_pb2.DeliverRequest(
        batch=province_pb2.SignedBatch(
            payload=signed.payload, signature=signed.signature, key_id=signed.key_id
        )
    )


def signed_batch(request: province_pb2.DeliverRequest) -> SignedBatch:
    # a request without a batch reads as an empty one, which the service refuses and records
    return SignedBatch(
        payload=request.batch.payload,
        signature=request.batch.signature,
        key_id=request.batch.key_id,
    )


def deliver_response(delivery: Delivery) -> province_pb2.DeliverResponse:
    return province_pb2.DeliverResponse(
        batch_id=delivery.batch_id,
        duplicate=delivery.duplicate,
        records=delivery.records,
        received_at=_timestamp(delivery.received_at),
        sequence=delivery.sequence,
        watermark_to=delivery.watermark_to,
    )


def delivery(message: province_pb2.DeliverResponse) -> Delivery:
    return Delivery(
        batch_id=message.batch_id,
        duplicate=message.duplicate,
        records=message.records,
        received_at=_datetime(message.received_at),
        sequence=message.sequence,
        watermark_to=message.watermark_to,
    )


# --- ListBatches --------------------------------------------------------------------------------


def list_batches_request(query: BatchQuery) -> province_pb2.ListBatchesRequest:
    return province_pb2.ListBatchesRequest(
        sender=query.sender or "",
        kind=_KIND_TO_PB[query.kind] if query.kind else province_pb2.BATCH_KIND_UNSPECIFIED,
        page_size=query.page_size,
        page_token=query.page_token,
    )


def batch_query(request: province_pb2.ListBatchesRequest) -> BatchQuery:
    return BatchQuery(
        sender=request.sender or None,
        kind=_kind_from_pb(request.kind, field="kind"),
        page_size=request.page_size,
        page_token=request.page_token,
    )


def _summary_message(batch: BatchSummary) -> province_pb2.BatchSummary:
    return province_pb2.BatchSummary(
        batch_id=batch.batch_id,
        sender=batch.sender,
        kind=_KIND_TO_PB[batch.kind],
        sequence=batch.sequence,
        watermark_from=batch.watermark_from,
        watermark_to=batch.watermark_to,
        created_at=_timestamp(batch.created_at),
        received_at=_timestamp(batch.received_at),
        records=batch.records,
        partial=batch.partial,
        missing_departments=list(batch.missing_departments),
        key_id=batch.key_id,
        peer=batch.peer,
        payload_sha256=batch.payload_sha256,
    )


def list_batches_response(page: BatchPage) -> province_pb2.ListBatchesResponse:
    return province_pb2.ListBatchesResponse(
        batches=[_summary_message(b) for b in page.batches],
        next_page_token=page.next_page_token,
    )


def batch_page(message: province_pb2.ListBatchesResponse) -> BatchPage:
    return BatchPage(
        batches=tuple(
            BatchSummary(
                batch_id=b.batch_id,
                sender=b.sender,
                kind=_required_kind(b.kind, field="batches.kind"),
                sequence=b.sequence,
                watermark_from=b.watermark_from,
                watermark_to=b.watermark_to,
                created_at=_datetime(b.created_at),
                received_at=_datetime(b.received_at),
                records=b.records,
                partial=b.partial,
                missing_departments=tuple(b.missing_departments),
                key_id=b.key_id,
                peer=b.peer,
                payload_sha256=b.payload_sha256,
            )
            for b in message.batches
        ),
        next_page_token=message.next_page_token,
    )


# --- ListRejections -----------------------------------------------------------------------------


def list_rejections_request(query: RejectionQuery) -> province_pb2.ListRejectionsRequest:
    return province_pb2.ListRejectionsRequest(
        page_size=query.page_size, page_token=query.page_token
    )


def rejection_query(request: province_pb2.ListRejectionsRequest) -> RejectionQuery:
    return RejectionQuery(page_size=request.page_size, page_token=request.page_token)


def list_rejections_response(page: RejectionPage) -> province_pb2.ListRejectionsResponse:
    return province_pb2.ListRejectionsResponse(
        rejections=[
            province_pb2.Rejection(
                at=_timestamp(r.at),
                peer=r.peer,
                sender=r.sender,
                batch_id=r.batch_id,
                code=r.code,
                reason=r.reason,
            )
            for r in page.rejections
        ],
        next_page_token=page.next_page_token,
    )


def rejection_page(message: province_pb2.ListRejectionsResponse) -> RejectionPage:
    return RejectionPage(
        rejections=tuple(
            Rejection(
                at=_datetime(r.at),
                peer=r.peer,
                sender=r.sender,
                batch_id=r.batch_id,
                code=r.code,
                reason=r.reason,
            )
            for r in message.rejections
        ),
        next_page_token=message.next_page_token,
    )

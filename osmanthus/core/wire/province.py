"""ProvinceService's wire contract: deliveries of signed batches and what operators list.

The sync job (sdk.province.ProvinceClient) and the reference receiver (province/) both use these
types and conversions, so a field added to province.proto is read and written in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

from osmanthus.core.errors import InvalidArgument
from osmanthus.core.syncbatch import BatchKind, SignedBatch
from osmanthus.core.wire.common import timestamp_to_proto
from osmanthus.v1 import province_pb2


@dataclass(frozen=True)
class Delivery:
    """What the receiver answers a delivered batch: stored now, or already held (duplicate)."""

    batch_id: str
    duplicate: bool
    records: int
    #: when the receiver first stored the batch (UTC)
    received_at: datetime
    sequence: int
    #: this batch's end: where the stream continues for a batch stored now, only that batch's
    #: end for a duplicate of an older one (the stream may have moved on since)
    watermark_to: str


@dataclass(frozen=True)
class BatchSummary:
    """A stored batch without its records: what an operator lists."""

    batch_id: str
    sender: str
    kind: BatchKind
    sequence: int
    watermark_from: str
    watermark_to: str
    created_at: datetime
    received_at: datetime
    records: int
    partial: bool
    missing_departments: tuple[str, ...]
    key_id: str
    #: the certificate that delivered it, as "role/name"
    peer: str
    #: SHA-256 of the signed payload as stored: the province can check it against the sender's
    payload_sha256: str


@dataclass(frozen=True)
class Rejection:
    """One refused delivery: when, from which certificate, what it claimed, and why."""

    at: datetime
    peer: str
    #: the sender whose registered key the batch names ("" while that is unknown): the
    #: signature may still have failed, so it is what the batch claims, not what it proved
    sender: str
    #: the batch id the payload claims ("" if unread): read only once the key's sender is known
    batch_id: str
    #: the gRPC status name the deliverer received, e.g. "FAILED_PRECONDITION"
    code: str
    reason: str


@dataclass(frozen=True)
class BatchQuery:
    sender: str | None = None
    kind: BatchKind | None = None
    page_size: int = 0
    page_token: str = ""


@dataclass(frozen=True)
class RejectionQuery:
    page_size: int = 0
    page_token: str = ""


@dataclass(frozen=True)
class BatchPage:
    """Batches newest first; `next_page_token` is "" on the last page."""

    batches: tuple[BatchSummary, ...]
    next_page_token: str


@dataclass(frozen=True)
class RejectionPage:
    """Rejections newest first; `next_page_token` is "" on the last page."""

    rejections: tuple[Rejection, ...]
    next_page_token: str


# --- conversions ---------------------------------------------------------------------------

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


def _datetime(stamp: timestamp_pb2.Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


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


def signed_batch_to_proto(signed: SignedBatch) -> province_pb2.DeliverRequest:
    return province_pb2.DeliverRequest(
        batch=province_pb2.SignedBatch(
            payload=signed.payload, signature=signed.signature, key_id=signed.key_id
        )
    )


def signed_batch_from_proto(request: province_pb2.DeliverRequest) -> SignedBatch:
    # a request without a batch reads as an empty one, which the service refuses and records
    return SignedBatch(
        payload=request.batch.payload,
        signature=request.batch.signature,
        key_id=request.batch.key_id,
    )


def delivery_to_proto(delivery: Delivery) -> province_pb2.DeliverResponse:
    return province_pb2.DeliverResponse(
        batch_id=delivery.batch_id,
        duplicate=delivery.duplicate,
        records=delivery.records,
        received_at=timestamp_to_proto(delivery.received_at),
        sequence=delivery.sequence,
        watermark_to=delivery.watermark_to,
    )


def delivery_from_proto(message: province_pb2.DeliverResponse) -> Delivery:
    return Delivery(
        batch_id=message.batch_id,
        duplicate=message.duplicate,
        records=message.records,
        received_at=_datetime(message.received_at),
        sequence=message.sequence,
        watermark_to=message.watermark_to,
    )


# --- ListBatches --------------------------------------------------------------------------------


def batch_query_to_proto(query: BatchQuery) -> province_pb2.ListBatchesRequest:
    return province_pb2.ListBatchesRequest(
        sender=query.sender or "",
        kind=_KIND_TO_PB[query.kind] if query.kind else province_pb2.BATCH_KIND_UNSPECIFIED,
        page_size=query.page_size,
        page_token=query.page_token,
    )


def batch_query_from_proto(request: province_pb2.ListBatchesRequest) -> BatchQuery:
    return BatchQuery(
        sender=request.sender or None,
        kind=_kind_from_pb(request.kind, field="kind"),
        page_size=request.page_size,
        page_token=request.page_token,
    )


def _batch_summary_to_proto(batch: BatchSummary) -> province_pb2.BatchSummary:
    return province_pb2.BatchSummary(
        batch_id=batch.batch_id,
        sender=batch.sender,
        kind=_KIND_TO_PB[batch.kind],
        sequence=batch.sequence,
        watermark_from=batch.watermark_from,
        watermark_to=batch.watermark_to,
        created_at=timestamp_to_proto(batch.created_at),
        received_at=timestamp_to_proto(batch.received_at),
        records=batch.records,
        partial=batch.partial,
        missing_departments=list(batch.missing_departments),
        key_id=batch.key_id,
        peer=batch.peer,
        payload_sha256=batch.payload_sha256,
    )


def batch_page_to_proto(page: BatchPage) -> province_pb2.ListBatchesResponse:
    return province_pb2.ListBatchesResponse(
        batches=[_batch_summary_to_proto(b) for b in page.batches],
        next_page_token=page.next_page_token,
    )


def batch_page_from_proto(message: province_pb2.ListBatchesResponse) -> BatchPage:
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


def rejection_query_to_proto(query: RejectionQuery) -> province_pb2.ListRejectionsRequest:
    return province_pb2.ListRejectionsRequest(
        page_size=query.page_size, page_token=query.page_token
    )


def rejection_query_from_proto(request: province_pb2.ListRejectionsRequest) -> RejectionQuery:
    return RejectionQuery(page_size=request.page_size, page_token=request.page_token)


def rejection_page_to_proto(page: RejectionPage) -> province_pb2.ListRejectionsResponse:
    return province_pb2.ListRejectionsResponse(
        rejections=[
            province_pb2.Rejection(
                at=timestamp_to_proto(r.at),
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


def rejection_page_from_proto(message: province_pb2.ListRejectionsResponse) -> RejectionPage:
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

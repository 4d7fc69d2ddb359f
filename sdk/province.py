"""A client of ProvinceService: what a city's sync job delivers with, and operators list with.

>>> with ProvinceClient("province.example:50060", tls=tls) as province:
...     delivery = province.deliver(sign_batch(batch, private_key=key))

Errors arrive as Osmanthus errors (osmanthus.core.grpc_errors): Unavailable and DeadlineExceeded are
retryable, and retrying a delivery is always safe, since a batch already stored is acknowledged
with `duplicate` set; FailedPrecondition says "conflict", "gap" or "overlap" and the receiver's
position; anything else is a refusal that retrying does not change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, TypeVar

import grpc

from osmanthus.core.grpc_errors import error_from_rpc
from osmanthus.core.peers import PROVINCE_SERVER_NAME
from osmanthus.core.syncbatch import BatchKind, SignedBatch
from osmanthus.core.tls import TlsFiles, secure_channel
from osmanthus.core.wire import MAX_RECEIVE_BYTES
from osmanthus.core.wire import province as province_wire
from osmanthus.core.wire.province import (
    BatchPage,
    BatchQuery,
    BatchSummary,
    Delivery,
    RejectionPage,
    RejectionQuery,
)
from osmanthus.v1 import province_pb2_grpc

DEFAULT_TIMEOUT_S: Final = 30.0
T = TypeVar("T")


class ProvinceClient:
    """A mutual-TLS channel to a provincial receiver whose certificate names `server_name`."""

    def __init__(
        self,
        target: str,
        *,
        tls: TlsFiles,
        server_name: str = PROVINCE_SERVER_NAME,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self._timeout_s = timeout_s
        self._channel = secure_channel(
            target,
            tls,
            server_name=server_name,
            options=[("grpc.max_send_message_length", MAX_RECEIVE_BYTES)],
        )
        self._stub = province_pb2_grpc.ProvinceServiceStub(self._channel)

    def _call(self, method: Callable[..., T], request: object) -> T:
        try:
            return method(request, timeout=self._timeout_s)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None

    def deliver(self, signed: SignedBatch) -> Delivery:
        """Deliver one signed batch; the receiver stores it once however often it is sent."""
        return province_wire.delivery_from_proto(
            self._call(self._stub.Deliver, province_wire.signed_batch_to_proto(signed))
        )

    def batches(
        self,
        *,
        sender: str | None = None,
        kind: BatchKind | None = None,
        page_size: int = 0,
        page_token: str = "",
    ) -> BatchPage:
        """One page of stored batches, newest first."""
        query = BatchQuery(sender=sender, kind=kind, page_size=page_size, page_token=page_token)
        return province_wire.batch_page_from_proto(
            self._call(self._stub.ListBatches, province_wire.batch_query_to_proto(query))
        )

    def last_batch(self, *, sender: str, kind: BatchKind) -> BatchSummary | None:
        """The receiver's newest batch of `sender`'s stream of `kind`: where that stream
        continues (its sequence + 1, from its watermark_to); None before the first."""
        page = self.batches(sender=sender, kind=kind, page_size=1)
        return page.batches[0] if page.batches else None

    def rejections(self, *, page_size: int = 0, page_token: str = "") -> RejectionPage:
        """One page of refused deliveries, newest first (a sender's certificate sees its own)."""
        query = RejectionQuery(page_size=page_size, page_token=page_token)
        return province_wire.rejection_page_from_proto(
            self._call(self._stub.ListRejections, province_wire.rejection_query_to_proto(query))
        )

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> ProvinceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

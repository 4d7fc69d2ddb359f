"""Conversion between coordinator protobuf messages and the SDK's typed results."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

from node.convert import SHAPE_TO_PB
from osmanthus.types import ConsentId, DepartmentId, DepartmentStatus, Shape
from osmanthus.v1 import common_pb2, coordinator_pb2
from sdk.results import ConsentRecord


def public_key_message(n_bytes: bytes) -> common_pb2.PaillierPublicKey:
    return common_pb2.PaillierPublicKey(n=n_bytes)


def shape_message(shape: Shape) -> common_pb2.Shape:
    return SHAPE_TO_PB[shape]


def statuses(items: object) -> tuple[DepartmentStatus, ...]:
    return tuple(
        DepartmentStatus(DepartmentId(s.department), s.detail, s.rules_version)
        for s in items  # type: ignore[attr-defined]
    )


def _dt(ts: timestamp_pb2.Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def consent_record(message: coordinator_pb2.Consent) -> ConsentRecord:
    return ConsentRecord(
        consent_id=ConsentId(message.consent_id),
        subject_id=message.subject_id,
        grantee=message.grantee,
        purpose=message.purpose,
        granted_at=_dt(message.granted_at),
        expires_at=_dt(message.expires_at),
        revoked_at=_dt(message.revoked_at) if message.HasField("revoked_at") else None,
    )


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value.astimezone(UTC))
    return ts

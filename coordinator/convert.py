"""Conversion between coordinator protobuf messages and the coordinator's typed Python values."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

from coordinator.consent import Consent
from coordinator.service import QueryOutcome, QueryRequest
from node.convert import SHAPE_TO_PB, shape_from_pb
from osmanthus.errors import InvalidArgument
from osmanthus.types import SubjectKind
from osmanthus.v1 import common_pb2, coordinator_pb2


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value.astimezone(UTC))
    return ts


def datetime_from(ts: timestamp_pb2.Timestamp, *, field: str) -> datetime:
    if ts.seconds == 0 and ts.nanos == 0:
        raise InvalidArgument("a timestamp is required", field=field)
    return ts.ToDatetime(tzinfo=UTC)


def person_query(message: coordinator_pb2.PersonQueryRequest) -> QueryRequest:
    return QueryRequest(
        subject_kind=SubjectKind.PERSON,
        subject_id=message.resident_id,
        shape=shape_from_pb(message.shape),
        purpose=message.purpose,
        consent_id=message.consent_id,
        public_key=message.public_key.n,
    )


def enterprise_query(message: coordinator_pb2.EnterpriseQueryRequest) -> QueryRequest:
    return QueryRequest(
        subject_kind=SubjectKind.ENTERPRISE,
        subject_id=message.credit_code,
        shape=shape_from_pb(message.shape),
        purpose=message.purpose,
        consent_id="",
        public_key=message.public_key.n,
    )


def query_response(outcome: QueryOutcome) -> coordinator_pb2.QueryResponse:
    return coordinator_pb2.QueryResponse(
        query_id=outcome.query_id,
        shape=SHAPE_TO_PB[outcome.shape],
        ciphertext=common_pb2.Ciphertext(value=outcome.ciphertext),
        slots=list(outcome.slots),
        slot_bits=outcome.slot_bits,
        base=outcome.base,
        answered=[
            coordinator_pb2.DepartmentStatus(
                department=s.department, detail=s.detail, rules_version=s.rules_version
            )
            for s in outcome.answered
        ],
        missing=[
            coordinator_pb2.DepartmentStatus(department=s.department, detail=s.detail)
            for s in outcome.missing
        ],
        partial=outcome.partial,
    )


def consent_message(consent: Consent) -> coordinator_pb2.Consent:
    return coordinator_pb2.Consent(
        consent_id=consent.consent_id,
        subject_id=consent.subject_id,
        grantee=consent.grantee,
        purpose=consent.purpose,
        granted_at=timestamp(consent.granted_at),
        expires_at=timestamp(consent.expires_at),
        revoked_at=timestamp(consent.revoked_at),
    )

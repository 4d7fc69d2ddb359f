"""Conversion between coordinator protobuf messages and the coordinator's typed Python values."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

from coordinator.batch import BatchHeader, BatchPlan, ChunkOutcome, SubjectChunk
from coordinator.consent import Consent
from coordinator.list_changes import ChangesRequest
from coordinator.lists import ListSearch, ListSearchOutcome
from coordinator.service import QueryOutcome, QueryRequest
from coordinator.stats import StatsOutcome, StatsQuery
from node.convert import (
    KIND_TO_PB,
    SHAPE_TO_PB,
    consent_kind_from_pb,
    kind_from_pb,
    public_entry_message,
    shape_from_pb,
)
from node.convert import list_changes_response as list_changes_message
from osmanthus.errors import InvalidArgument
from osmanthus.lists import ListChangesPage
from osmanthus.types import SubjectKind
from osmanthus.v1 import common_pb2, coordinator_pb2, lists_pb2


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
        threshold=message.threshold,
        measures=tuple(message.measures),
    )


def enterprise_query(message: coordinator_pb2.EnterpriseQueryRequest) -> QueryRequest:
    return QueryRequest(
        subject_kind=SubjectKind.ENTERPRISE,
        subject_id=message.credit_code,
        shape=shape_from_pb(message.shape),
        purpose=message.purpose,
        consent_id=message.consent_id,
        public_key=message.public_key.n,
        threshold=message.threshold,
        measures=tuple(message.measures),
        departments=tuple(message.departments),
    )


def consent_subject_kind(value: int) -> SubjectKind:
    kind = consent_kind_from_pb(value)
    if kind is None:
        raise InvalidArgument(f"{value} is not a subject kind", field="subject_kind")
    return kind


def query_response(outcome: QueryOutcome) -> coordinator_pb2.QueryResponse:
    return coordinator_pb2.QueryResponse(
        query_id=outcome.query_id,
        shape=SHAPE_TO_PB[outcome.shape],
        ciphertext=common_pb2.Ciphertext(value=outcome.ciphertext),
        slots=list(outcome.slots),
        slot_widths=list(outcome.slot_widths),
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
        candidates=[common_pb2.Ciphertext(value=c) for c in outcome.candidates],
        threshold=outcome.threshold,
        measures=list(outcome.measures),
        flags=[common_pb2.Ciphertext(value=c) for c in outcome.flags],
    )


def stats_query(message: coordinator_pb2.StatsQueryRequest) -> StatsQuery:
    return StatsQuery(
        subject_kind=kind_from_pb(message.subject_kind),
        subject_ids=tuple(message.subject_ids),
        purpose=message.purpose,
        epsilon=message.epsilon,
        statistics=tuple(message.statistics),
        public_key=message.public_key.n,
    )


def stats_response(outcome: StatsOutcome) -> coordinator_pb2.StatsResponse:
    return coordinator_pb2.StatsResponse(
        query_id=outcome.query_id,
        statistics=list(outcome.statistics),
        ciphertexts=[common_pb2.Ciphertext(value=c) for c in outcome.ciphertexts],
        noise_scales=[f"{b.numerator}/{b.denominator}" for b in outcome.noise_scales],
        cohort=outcome.cohort,
        epsilon=format(outcome.epsilon.normalize(), "f"),
        epsilon_left=format(outcome.epsilon_left.normalize(), "f"),
        base=outcome.base,
        answered=[
            coordinator_pb2.DepartmentStatus(
                department=s.department, detail=s.detail, rules_version=s.rules_version
            )
            for s in outcome.answered
        ],
    )


def search_lists(message: coordinator_pb2.SearchListsRequest) -> ListSearch:
    return ListSearch(
        subject_kind=kind_from_pb(message.subject_kind),
        subject_id=message.subject_id,
        list_id=message.list,
        page_size=message.page_size,
        page_token=message.page_token,
    )


def search_lists_response(outcome: ListSearchOutcome) -> coordinator_pb2.SearchListsResponse:
    # rebuilt from the checked values: nothing else a node put in its messages goes on
    return coordinator_pb2.SearchListsResponse(
        entries=[public_entry_message(e) for e in outcome.entries],
        next_page_token=outcome.next_page_token,
        missing=[
            coordinator_pb2.DepartmentStatus(department=s.department, detail=s.detail)
            for s in outcome.missing
        ],
    )


def list_changes(message: lists_pb2.ListChangesRequest) -> ChangesRequest:
    return ChangesRequest(
        department=message.department, after=message.after, page_size=message.page_size
    )


def list_changes_response(page: ListChangesPage) -> lists_pb2.ListChangesResponse:
    # rebuilt from the checked values: nothing else a node put in its messages goes on
    return list_changes_message(page)


def consent_message(consent: Consent) -> coordinator_pb2.Consent:
    return coordinator_pb2.Consent(
        consent_id=consent.consent_id,
        subject_id=consent.subject_id,
        grantee=consent.grantee,
        purpose=consent.purpose,
        granted_at=timestamp(consent.granted_at),
        expires_at=timestamp(consent.expires_at),
        revoked_at=timestamp(consent.revoked_at),
        receipt=consent.receipt,
        subject_kind=KIND_TO_PB[consent.subject_kind],
    )


def batch_header(message: coordinator_pb2.BatchQueryRequest) -> BatchHeader:
    if message.WhichOneof("item") != "header":
        raise InvalidArgument(
            "a batch starts with its header (subject kind, shape, purpose, public key)",
            field="header",
        )
    header = message.header
    return BatchHeader(
        subject_kind=kind_from_pb(header.subject_kind),
        shape=shape_from_pb(header.shape),
        purpose=header.purpose,
        public_key=header.public_key.n,
    )


def subject_chunks(messages: Iterator[coordinator_pb2.BatchQueryRequest]) -> Iterator[SubjectChunk]:
    for message in messages:
        if message.WhichOneof("item") != "chunk":
            raise InvalidArgument("only the first message of a batch is a header", field="chunk")
        yield SubjectChunk(chunk=message.chunk.chunk, subject_ids=tuple(message.chunk.subject_ids))


def batch_layout(plan: BatchPlan) -> coordinator_pb2.BatchQueryResponse:
    return coordinator_pb2.BatchQueryResponse(
        layout=coordinator_pb2.BatchLayout(
            query_id=plan.query_id,
            shape=SHAPE_TO_PB[plan.shape],
            slots=list(plan.slots),
            slot_widths=list(plan.slot_widths),
            subjects_per_ciphertext=plan.subjects_per_ciphertext,
            base=plan.base,
            offset=plan.offset,
            departments=[
                coordinator_pb2.DepartmentStatus(department=s.department, detail=s.detail)
                for s in plan.departments
            ],
        )
    )


def chunk_result(outcome: ChunkOutcome) -> coordinator_pb2.BatchQueryResponse:
    return coordinator_pb2.BatchQueryResponse(
        chunk=coordinator_pb2.ChunkResult(
            chunk=outcome.chunk,
            subject_ids=list(outcome.subject_ids),
            ciphertexts=[common_pb2.Ciphertext(value=c) for c in outcome.ciphertexts],
            refused=[
                coordinator_pb2.RefusedSubject(subject_id=r.subject_id, reason=r.reason)
                for r in outcome.refused
            ],
        )
    )

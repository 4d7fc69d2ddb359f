"""Conversion between coordinator protobuf messages and the SDK's typed requests and answers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

from node.convert import KIND_TO_PB, SHAPE_TO_PB, consent_kind_from_pb, public_entry, shape_from_pb
from node.convert import list_changes_page as node_list_changes_page
from osmanthus.errors import CryptoError, InvalidArgument
from osmanthus.lists import ListChangesPage, PublicEntry
from osmanthus.types import ConsentId, DepartmentId, DepartmentStatus, Shape, SubjectKind
from osmanthus.v1 import common_pb2, coordinator_pb2, lists_pb2
from sdk.results import ConsentRecord


@dataclass(frozen=True)
class Answer:
    """The coordinator's answer to a query, before decryption."""

    query_id: str
    shape: Shape | None
    ciphertext: bytes
    slots: tuple[str, ...]
    slot_widths: tuple[int, ...]
    base: int
    answered: tuple[DepartmentStatus, ...]
    missing: tuple[DepartmentStatus, ...]
    candidates: tuple[bytes, ...] = ()
    threshold: int = 0
    measures: tuple[str, ...] = ()
    flags: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class BatchLayoutAnswer:
    query_id: str
    shape: Shape | None
    slots: tuple[str, ...]
    slot_widths: tuple[int, ...]
    subjects_per_ciphertext: int
    base: int
    offset: int
    departments: tuple[DepartmentStatus, ...]


@dataclass(frozen=True)
class ChunkAnswer:
    chunk: int
    subject_ids: tuple[str, ...]
    ciphertexts: tuple[bytes, ...]
    #: (subject id, reason) for each subject of the chunk that was not summed
    refused: tuple[tuple[str, str], ...]


def _key(n_bytes: bytes) -> common_pb2.PaillierPublicKey:
    return common_pb2.PaillierPublicKey(n=n_bytes)


def _timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value.astimezone(UTC))
    return ts


def _statuses(items: object) -> tuple[DepartmentStatus, ...]:
    return tuple(
        DepartmentStatus(DepartmentId(s.department), s.detail, s.rules_version)
        for s in items  # type: ignore[attr-defined]
    )


def register_key_request(n_bytes: bytes) -> coordinator_pb2.RegisterKeyRequest:
    return coordinator_pb2.RegisterKeyRequest(public_key=_key(n_bytes))


def person_query_request(
    *,
    resident_id: str,
    shape: Shape,
    purpose: str,
    consent_id: str,
    n_bytes: bytes,
    threshold: int = 0,
    measures: Sequence[str] = (),
) -> coordinator_pb2.PersonQueryRequest:
    return coordinator_pb2.PersonQueryRequest(
        resident_id=resident_id,
        shape=SHAPE_TO_PB[shape],
        purpose=purpose,
        consent_id=consent_id,
        public_key=_key(n_bytes),
        threshold=threshold,
        measures=list(measures),
    )


def enterprise_query_request(
    *,
    credit_code: str,
    shape: Shape,
    purpose: str,
    n_bytes: bytes,
    threshold: int = 0,
    measures: Sequence[str] = (),
    consent_id: str = "",
    departments: Sequence[str] = (),
) -> coordinator_pb2.EnterpriseQueryRequest:
    return coordinator_pb2.EnterpriseQueryRequest(
        credit_code=credit_code,
        shape=SHAPE_TO_PB[shape],
        purpose=purpose,
        public_key=_key(n_bytes),
        threshold=threshold,
        measures=list(measures),
        consent_id=consent_id,
        departments=list(departments),
    )


def answer(message: coordinator_pb2.QueryResponse) -> Answer:
    return Answer(
        query_id=message.query_id,
        shape=shape_from_pb(message.shape),
        ciphertext=message.ciphertext.value,
        slots=tuple(message.slots),
        slot_widths=tuple(message.slot_widths),
        base=message.base,
        answered=_statuses(message.answered),
        missing=_statuses(message.missing),
        candidates=tuple(c.value for c in message.candidates),
        threshold=message.threshold,
        measures=tuple(message.measures),
        flags=tuple(c.value for c in message.flags),
    )


@dataclass(frozen=True)
class StatsAnswer:
    query_id: str
    statistics: tuple[str, ...]
    ciphertexts: tuple[bytes, ...]
    noise_scales: tuple[str, ...]
    cohort: int
    epsilon: str
    epsilon_left: str
    base: int
    answered: tuple[DepartmentStatus, ...]


def stats_query_request(
    *,
    kind: SubjectKind,
    subject_ids: Sequence[str],
    purpose: str,
    epsilon: str,
    statistics: Sequence[str],
    n_bytes: bytes,
) -> coordinator_pb2.StatsQueryRequest:
    return coordinator_pb2.StatsQueryRequest(
        subject_kind=KIND_TO_PB[kind],
        subject_ids=list(subject_ids),
        purpose=purpose,
        epsilon=epsilon,
        statistics=list(statistics),
        public_key=_key(n_bytes),
    )


def stats_answer(message: coordinator_pb2.StatsResponse) -> StatsAnswer:
    return StatsAnswer(
        query_id=message.query_id,
        statistics=tuple(message.statistics),
        ciphertexts=tuple(c.value for c in message.ciphertexts),
        noise_scales=tuple(message.noise_scales),
        cohort=message.cohort,
        epsilon=message.epsilon,
        epsilon_left=message.epsilon_left,
        base=message.base,
        answered=_statuses(message.answered),
    )


def grant_consent_request(
    *, subject_id: str, kind: SubjectKind, grantee: str, purpose: str, expires_at: datetime
) -> coordinator_pb2.GrantConsentRequest:
    return coordinator_pb2.GrantConsentRequest(
        subject_id=subject_id,
        grantee=grantee,
        purpose=purpose,
        expires_at=_timestamp(expires_at),
        subject_kind=KIND_TO_PB[kind],
    )


def revoke_consent_request(consent_id: str) -> coordinator_pb2.RevokeConsentRequest:
    return coordinator_pb2.RevokeConsentRequest(consent_id=consent_id)


def list_consents_request(*, subject_id: str, grantee: str) -> coordinator_pb2.ListConsentsRequest:
    return coordinator_pb2.ListConsentsRequest(subject_id=subject_id, grantee=grantee)


def consent_record(message: coordinator_pb2.Consent) -> ConsentRecord:
    def dt(ts: timestamp_pb2.Timestamp) -> datetime:
        return ts.ToDatetime(tzinfo=UTC)

    return ConsentRecord(
        consent_id=ConsentId(message.consent_id),
        subject_id=message.subject_id,
        grantee=message.grantee,
        purpose=message.purpose,
        granted_at=dt(message.granted_at),
        expires_at=dt(message.expires_at),
        revoked_at=dt(message.revoked_at) if message.HasField("revoked_at") else None,
        receipt=message.receipt,
        subject_kind=_consent_kind(message.subject_kind),
    )


def _consent_kind(value: int) -> SubjectKind:
    kind = consent_kind_from_pb(value)
    if kind is None:
        raise CryptoError(f"the coordinator sent subject kind {value}", field="subject_kind")
    return kind


def consent_records(message: coordinator_pb2.ListConsentsResponse) -> list[ConsentRecord]:
    return [consent_record(c) for c in message.consents]


@dataclass(frozen=True)
class ListAnswer:
    """The coordinator's answer to SearchLists, entries typed but not yet checked."""

    entries: tuple[PublicEntry, ...]
    next_page_token: str
    missing: tuple[DepartmentStatus, ...]


def search_lists_request(
    *, kind: SubjectKind, subject_id: str, list_id: str, page_size: int, page_token: str
) -> coordinator_pb2.SearchListsRequest:
    return coordinator_pb2.SearchListsRequest(
        subject_kind=KIND_TO_PB[kind],
        subject_id=subject_id,
        list=list_id,
        page_size=page_size,
        page_token=page_token,
    )


def list_answer(message: coordinator_pb2.SearchListsResponse) -> ListAnswer:
    try:
        entries = tuple(
            public_entry(e, field=f"entries[{i}]") for i, e in enumerate(message.entries)
        )
    except InvalidArgument as exc:
        # the coordinator checks every entry before it forwards it: this one is malformed
        raise CryptoError(
            f"the coordinator sent a malformed entry: {exc}", field=exc.field
        ) from None
    return ListAnswer(
        entries=entries,
        next_page_token=message.next_page_token,
        missing=_statuses(message.missing),
    )


def list_changes_request(
    *, department: str, after: str, page_size: int
) -> lists_pb2.ListChangesRequest:
    return lists_pb2.ListChangesRequest(department=department, after=after, page_size=page_size)


def list_changes_page(message: lists_pb2.ListChangesResponse) -> ListChangesPage:
    try:
        return node_list_changes_page(message)
    except InvalidArgument as exc:
        # the coordinator checks every event before it forwards a page: this one is malformed
        raise CryptoError(
            f"the coordinator sent a malformed list change: {exc}", field=exc.field
        ) from None


def batch_header(
    *, kind: SubjectKind, shape: Shape, purpose: str, n_bytes: bytes
) -> coordinator_pb2.BatchQueryRequest:
    return coordinator_pb2.BatchQueryRequest(
        header=coordinator_pb2.BatchHeader(
            subject_kind=KIND_TO_PB[kind],
            shape=SHAPE_TO_PB[shape],
            purpose=purpose,
            public_key=_key(n_bytes),
        )
    )


def subject_chunk(number: int, subject_ids: list[str]) -> coordinator_pb2.BatchQueryRequest:
    return coordinator_pb2.BatchQueryRequest(
        chunk=coordinator_pb2.SubjectChunk(chunk=number, subject_ids=subject_ids)
    )


def batch_answer(
    message: coordinator_pb2.BatchQueryResponse,
) -> BatchLayoutAnswer | ChunkAnswer | None:
    """The layout, a chunk, or None for a message of neither kind."""
    which = message.WhichOneof("item")
    if which == "layout":
        layout = message.layout
        return BatchLayoutAnswer(
            query_id=layout.query_id,
            shape=shape_from_pb(layout.shape),
            slots=tuple(layout.slots),
            slot_widths=tuple(layout.slot_widths),
            subjects_per_ciphertext=layout.subjects_per_ciphertext,
            base=layout.base,
            offset=layout.offset,
            departments=_statuses(layout.departments),
        )
    if which == "chunk":
        chunk = message.chunk
        return ChunkAnswer(
            chunk=chunk.chunk,
            subject_ids=tuple(chunk.subject_ids),
            ciphertexts=tuple(c.value for c in chunk.ciphertexts),
            refused=tuple((r.subject_id, r.reason) for r in chunk.refused),
        )
    return None

"""CoordinatorService's wire contract: the requester's questions and the coordinator's answers.

The SDK writes requests and reads answers with these; the coordinator's servicer reads requests
and writes answers with the same functions, so every field of coordinator.proto has one reader
and one writer. A `*_from_proto` raises InvalidArgument naming the field for a message no honest
peer sends; the SDK reports that as the coordinator's fault (CryptoError), the coordinator as
the requester's (INVALID_ARGUMENT).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from osmanthus.core.errors import InvalidArgument
from osmanthus.core.lists import PublicEntry
from osmanthus.core.types import (
    ConsentId,
    DepartmentStatus,
    Purpose,
    QueryId,
    RequesterId,
    Shape,
    SubjectId,
    SubjectKind,
)
from osmanthus.core.wire.common import (
    KIND_TO_PB,
    SHAPE_TO_PB,
    RequestLimits,
    capped,
    consent_kind_from_pb,
    kind_from_pb,
    kind_to_pb,
    required,
    shape_from_pb,
    statuses_from_proto,
    timestamp_from_proto,
    timestamp_to_proto,
)
from osmanthus.core.wire.lists import public_entry_from_proto, public_entry_to_proto
from osmanthus.core.wire.node import (
    MAX_CHUNK_SUBJECTS,
    MAX_COHORT,
    SealedPart,
    sealed_part_from_proto,
    sealed_part_to_proto,
)
from osmanthus.v1 import common_pb2, coordinator_pb2, lists_pb2

# --- common ---------------------------------------------------------------------------------


def _key(n_bytes: bytes) -> common_pb2.PaillierPublicKey:
    return common_pb2.PaillierPublicKey(n=n_bytes)


def _statuses_to_proto(
    statuses: Iterable[DepartmentStatus], *, with_rules: bool = True
) -> list[coordinator_pb2.DepartmentStatus]:
    return [
        coordinator_pb2.DepartmentStatus(
            department=s.department,
            detail=s.detail,
            rules_version=s.rules_version if with_rules else "",
        )
        for s in statuses
    ]


def register_key_to_proto(
    n_bytes: bytes, *, modulus_proof: bytes
) -> coordinator_pb2.RegisterKeyRequest:
    """RegisterKey: the key with its modulus proof (osmanthus.core.keyproof), which is required."""
    return coordinator_pb2.RegisterKeyRequest(
        public_key=common_pb2.PaillierPublicKey(n=n_bytes, modulus_proof=modulus_proof)
    )


# --- one subject: PersonQuery and EnterpriseQuery --------------------------------------------


@dataclass(frozen=True, kw_only=True)
class QueryRequest:
    """A question about one person or enterprise, as the requester asks it (unchecked)."""

    subject_kind: SubjectKind
    subject_id: str
    shape: Shape | None
    purpose: str
    public_key: bytes
    #: the subject's recorded consent ("" for none: a statutory purpose, or an enterprise)
    consent_id: str = ""
    #: THRESHOLD: the score asked about; 0 for the other shapes
    threshold: int = 0
    #: FLAGS: the joint-punishment measures asked
    measures: tuple[str, ...] = ()
    #: ask only these departments; empty asks every department serving the subject kind
    departments: tuple[str, ...] = ()


@dataclass(frozen=True)
class QueryOutcome:
    """The coordinator's answer to one question, before the requester decrypts it."""

    query_id: QueryId
    shape: Shape
    ciphertext: bytes
    slots: tuple[str, ...]
    slot_widths: tuple[int, ...]
    base: int
    answered: tuple[DepartmentStatus, ...]
    missing: tuple[DepartmentStatus, ...]
    #: THRESHOLD: the shuffled zero tests, in place of `ciphertext`
    candidates: tuple[bytes, ...] = ()
    threshold: int = 0
    #: FLAGS: per measure, E(r · count): 0 when no flag triggering it is set
    measures: tuple[str, ...] = ()
    flags: tuple[bytes, ...] = ()

    @property
    def partial(self) -> bool:
        return bool(self.missing)


def person_query_to_proto(request: QueryRequest) -> coordinator_pb2.PersonQueryRequest:
    if request.departments:
        raise InvalidArgument(
            "a person query asks every department serving persons", field="departments"
        )
    return coordinator_pb2.PersonQueryRequest(
        resident_id=request.subject_id,
        shape=SHAPE_TO_PB[request.shape] if request.shape else common_pb2.SHAPE_UNSPECIFIED,
        purpose=request.purpose,
        consent_id=request.consent_id,
        public_key=_key(request.public_key),
        threshold=request.threshold,
        measures=list(request.measures),
    )


def _measures(values: Sequence[str], limits: RequestLimits) -> tuple[str, ...]:
    return capped(
        values, limit=limits.measures, field="measures", natural="the catalogue's measures"
    )


def person_query_from_proto(
    message: coordinator_pb2.PersonQueryRequest, *, limits: RequestLimits
) -> QueryRequest:
    """The question, each repeated field refused past its natural size before it is read."""
    return QueryRequest(
        subject_kind=SubjectKind.PERSON,
        subject_id=message.resident_id,
        shape=shape_from_pb(message.shape),
        purpose=message.purpose,
        consent_id=message.consent_id,
        public_key=message.public_key.n,
        threshold=message.threshold,
        measures=_measures(message.measures, limits),
    )


def enterprise_query_to_proto(request: QueryRequest) -> coordinator_pb2.EnterpriseQueryRequest:
    return coordinator_pb2.EnterpriseQueryRequest(
        credit_code=request.subject_id,
        shape=SHAPE_TO_PB[request.shape] if request.shape else common_pb2.SHAPE_UNSPECIFIED,
        purpose=request.purpose,
        consent_id=request.consent_id,
        public_key=_key(request.public_key),
        threshold=request.threshold,
        measures=list(request.measures),
        departments=list(request.departments),
    )


def enterprise_query_from_proto(
    message: coordinator_pb2.EnterpriseQueryRequest, *, limits: RequestLimits
) -> QueryRequest:
    """The question, each repeated field refused past its natural size before it is read."""
    return QueryRequest(
        subject_kind=SubjectKind.ENTERPRISE,
        subject_id=message.credit_code,
        shape=shape_from_pb(message.shape),
        purpose=message.purpose,
        consent_id=message.consent_id,
        public_key=message.public_key.n,
        threshold=message.threshold,
        measures=_measures(message.measures, limits),
        departments=capped(
            message.departments,
            limit=limits.departments,
            field="departments",
            natural="the catalogue's departments",
        ),
    )


def query_outcome_to_proto(outcome: QueryOutcome) -> coordinator_pb2.QueryResponse:
    return coordinator_pb2.QueryResponse(
        query_id=outcome.query_id,
        shape=SHAPE_TO_PB[outcome.shape],
        ciphertext=common_pb2.Ciphertext(value=outcome.ciphertext),
        slots=list(outcome.slots),
        slot_widths=list(outcome.slot_widths),
        base=outcome.base,
        answered=_statuses_to_proto(outcome.answered),
        missing=_statuses_to_proto(outcome.missing, with_rules=False),
        partial=outcome.partial,
        candidates=[common_pb2.Ciphertext(value=c) for c in outcome.candidates],
        threshold=outcome.threshold,
        measures=list(outcome.measures),
        flags=[common_pb2.Ciphertext(value=c) for c in outcome.flags],
    )


def query_outcome_from_proto(message: coordinator_pb2.QueryResponse) -> QueryOutcome:
    return QueryOutcome(
        query_id=QueryId(message.query_id),
        shape=required(shape_from_pb(message.shape), "disclosure shape", "shape"),
        ciphertext=message.ciphertext.value,
        slots=tuple(message.slots),
        slot_widths=tuple(message.slot_widths),
        base=message.base,
        answered=statuses_from_proto(message.answered),
        missing=statuses_from_proto(message.missing),
        candidates=tuple(c.value for c in message.candidates),
        threshold=message.threshold,
        measures=tuple(message.measures),
        flags=tuple(c.value for c in message.flags),
    )


# --- StatsQuery -------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatsQuery:
    """Noisy sums over a cohort, as the requester asks for them (unchecked)."""

    subject_kind: SubjectKind | None
    subject_ids: tuple[str, ...]
    purpose: str
    #: ε in decimal notation, e.g. "0.5"
    epsilon: str
    #: BREAKDOWN slot names; empty asks for every one
    statistics: tuple[str, ...]
    public_key: bytes


@dataclass(frozen=True)
class StatsOutcome:
    query_id: QueryId
    statistics: tuple[str, ...]
    ciphertexts: tuple[bytes, ...]
    #: per statistic, the discrete Laplace scale of the noise added (its variance follows)
    noise_scales: tuple[Fraction, ...]
    cohort: int
    epsilon: Decimal
    #: the least room left under the requester's ε budgets after this answer
    epsilon_left: Decimal
    base: int
    answered: tuple[DepartmentStatus, ...]


def stats_query_to_proto(query: StatsQuery) -> coordinator_pb2.StatsQueryRequest:
    return coordinator_pb2.StatsQueryRequest(
        subject_kind=kind_to_pb(query.subject_kind),
        subject_ids=list(query.subject_ids),
        purpose=query.purpose,
        epsilon=query.epsilon,
        statistics=list(query.statistics),
        public_key=_key(query.public_key),
    )


def stats_query_from_proto(
    message: coordinator_pb2.StatsQueryRequest, *, limits: RequestLimits
) -> StatsQuery:
    """The question, each repeated field refused past its natural size before it is read."""
    return StatsQuery(
        subject_kind=kind_from_pb(message.subject_kind),
        subject_ids=capped(
            message.subject_ids,
            limit=MAX_COHORT,
            field="subject_ids",
            natural="the subjects of one STATS cohort",
        ),
        purpose=message.purpose,
        epsilon=message.epsilon,
        statistics=capped(
            message.statistics,
            limit=limits.slots,
            field="statistics",
            natural="a breakdown's slots in this catalogue",
        ),
        public_key=message.public_key.n,
    )


def _decimal_text(value: Decimal) -> str:
    return format(value.normalize(), "f")


def stats_outcome_to_proto(outcome: StatsOutcome) -> coordinator_pb2.StatsResponse:
    return coordinator_pb2.StatsResponse(
        query_id=outcome.query_id,
        statistics=list(outcome.statistics),
        ciphertexts=[common_pb2.Ciphertext(value=c) for c in outcome.ciphertexts],
        noise_scales=[f"{b.numerator}/{b.denominator}" for b in outcome.noise_scales],
        cohort=outcome.cohort,
        epsilon=_decimal_text(outcome.epsilon),
        epsilon_left=_decimal_text(outcome.epsilon_left),
        base=outcome.base,
        answered=_statuses_to_proto(outcome.answered),
    )


def _positive_fraction(text: str, *, field: str) -> Fraction:
    try:
        value = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise InvalidArgument(f"{text[:40]!r} is not a fraction", field=field) from None
    if value <= 0:
        raise InvalidArgument(f"{text[:40]!r} is not positive", field=field)
    return value


def _decimal(text: str, *, field: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise InvalidArgument(f"{text[:40]!r} is not a decimal number", field=field) from None
    if not value.is_finite() or value < 0:
        raise InvalidArgument(f"{text[:40]!r} is not a finite amount of ε", field=field)
    return value


def stats_outcome_from_proto(message: coordinator_pb2.StatsResponse) -> StatsOutcome:
    return StatsOutcome(
        query_id=QueryId(message.query_id),
        statistics=tuple(message.statistics),
        ciphertexts=tuple(c.value for c in message.ciphertexts),
        noise_scales=tuple(
            _positive_fraction(s, field=f"noise_scales[{i}]")
            for i, s in enumerate(message.noise_scales)
        ),
        cohort=message.cohort,
        epsilon=_decimal(message.epsilon, field="epsilon"),
        epsilon_left=_decimal(message.epsilon_left or "0", field="epsilon_left"),
        base=message.base,
        answered=statuses_from_proto(message.answered),
    )


# --- SearchLists and ListChanges --------------------------------------------------------------


@dataclass(frozen=True)
class ListSearch:
    """A public list query as asked: by subject, by list, or a subject on one list."""

    subject_kind: SubjectKind | None
    subject_id: str
    list_id: str
    page_size: int
    page_token: str


@dataclass(frozen=True)
class ListSearchOutcome:
    query_id: QueryId
    entries: tuple[PublicEntry, ...]
    #: by list: the next page's token; "" on the last page and for a subject's entries
    next_page_token: str
    #: departments whose entries the answer may lack, with why
    missing: tuple[DepartmentStatus, ...]


def list_search_to_proto(search: ListSearch) -> coordinator_pb2.SearchListsRequest:
    return coordinator_pb2.SearchListsRequest(
        subject_kind=kind_to_pb(search.subject_kind),
        subject_id=search.subject_id,
        list=search.list_id,
        page_size=search.page_size,
        page_token=search.page_token,
    )


def list_search_from_proto(message: coordinator_pb2.SearchListsRequest) -> ListSearch:
    return ListSearch(
        subject_kind=kind_from_pb(message.subject_kind),
        subject_id=message.subject_id,
        list_id=message.list,
        page_size=message.page_size,
        page_token=message.page_token,
    )


def list_search_outcome_to_proto(
    outcome: ListSearchOutcome,
) -> coordinator_pb2.SearchListsResponse:
    # rebuilt from the checked values: nothing else a node put in its messages goes on
    return coordinator_pb2.SearchListsResponse(
        entries=[public_entry_to_proto(e) for e in outcome.entries],
        next_page_token=outcome.next_page_token,
        missing=_statuses_to_proto(outcome.missing, with_rules=False),
    )


def list_search_outcome_from_proto(
    message: coordinator_pb2.SearchListsResponse,
) -> ListSearchOutcome:
    """The entries typed (each field's form checked), not yet checked against the question."""
    return ListSearchOutcome(
        # SearchListsResponse carries no query id
        query_id=QueryId(""),
        entries=tuple(
            public_entry_from_proto(e, field=f"entries[{i}]") for i, e in enumerate(message.entries)
        ),
        next_page_token=message.next_page_token,
        missing=statuses_from_proto(message.missing),
    )


@dataclass(frozen=True)
class ChangesRequest:
    """CoordinatorService.ListChanges: a page of one department's list change feed."""

    department: str
    #: a cursor of the department's feed; "" for its first event
    after: str
    #: 0 means osmanthus.core.lists.DEFAULT_CHANGES_PAGE_SIZE
    page_size: int


def changes_request_to_proto(request: ChangesRequest) -> lists_pb2.ListChangesRequest:
    return lists_pb2.ListChangesRequest(
        department=request.department, after=request.after, page_size=request.page_size
    )


def changes_request_from_proto(message: lists_pb2.ListChangesRequest) -> ChangesRequest:
    return ChangesRequest(
        department=message.department, after=message.after, page_size=message.page_size
    )


# --- BatchQuery -------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchHeader:
    """The first message of a batch: what every chunk after it asks."""

    subject_kind: SubjectKind | None
    shape: Shape | None
    purpose: str
    public_key: bytes


@dataclass(frozen=True)
class SubjectChunk:
    chunk: int
    subject_ids: tuple[str, ...]


@dataclass(frozen=True)
class BatchPlan:
    """The coordinator's first answer to a batch: what the requester needs to decode it."""

    query_id: QueryId
    shape: Shape
    slots: tuple[str, ...]
    slot_widths: tuple[int, ...]
    subjects_per_ciphertext: int
    base: int
    offset: int
    departments: tuple[DepartmentStatus, ...]


@dataclass(frozen=True)
class RefusedSubject:
    subject_id: str
    reason: str


@dataclass(frozen=True)
class ChunkOutcome:
    chunk: int
    #: the subjects summed, in packing order
    subject_ids: tuple[str, ...]
    ciphertexts: tuple[bytes, ...]
    refused: tuple[RefusedSubject, ...]


def batch_header_to_proto(header: BatchHeader) -> coordinator_pb2.BatchQueryRequest:
    return coordinator_pb2.BatchQueryRequest(
        header=coordinator_pb2.BatchHeader(
            subject_kind=kind_to_pb(header.subject_kind),
            shape=SHAPE_TO_PB[header.shape] if header.shape else common_pb2.SHAPE_UNSPECIFIED,
            purpose=header.purpose,
            public_key=_key(header.public_key),
        )
    )


def batch_header_from_proto(message: coordinator_pb2.BatchQueryRequest) -> BatchHeader:
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


def subject_chunk_to_proto(chunk: SubjectChunk) -> coordinator_pb2.BatchQueryRequest:
    return coordinator_pb2.BatchQueryRequest(
        chunk=coordinator_pb2.SubjectChunk(chunk=chunk.chunk, subject_ids=list(chunk.subject_ids))
    )


def subject_chunks_from_proto(
    messages: Iterable[coordinator_pb2.BatchQueryRequest],
) -> Iterator[SubjectChunk]:
    for message in messages:
        if message.WhichOneof("item") != "chunk":
            raise InvalidArgument("only the first message of a batch is a header", field="chunk")
        yield SubjectChunk(
            chunk=message.chunk.chunk,
            subject_ids=capped(
                message.chunk.subject_ids,
                limit=MAX_CHUNK_SUBJECTS,
                field="subject_ids",
                natural=f"the subjects of one chunk; chunk {message.chunk.chunk}",
            ),
        )


def batch_plan_to_proto(plan: BatchPlan) -> coordinator_pb2.BatchQueryResponse:
    return coordinator_pb2.BatchQueryResponse(
        layout=coordinator_pb2.BatchLayout(
            query_id=plan.query_id,
            shape=SHAPE_TO_PB[plan.shape],
            slots=list(plan.slots),
            slot_widths=list(plan.slot_widths),
            subjects_per_ciphertext=plan.subjects_per_ciphertext,
            base=plan.base,
            offset=plan.offset,
            departments=_statuses_to_proto(plan.departments, with_rules=False),
        )
    )


def chunk_outcome_to_proto(outcome: ChunkOutcome) -> coordinator_pb2.BatchQueryResponse:
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


def batch_answer_from_proto(
    message: coordinator_pb2.BatchQueryResponse,
) -> BatchPlan | ChunkOutcome:
    """The layout or a chunk, whichever the message carries."""
    which = message.WhichOneof("item")
    if which == "layout":
        layout = message.layout
        return BatchPlan(
            query_id=QueryId(layout.query_id),
            shape=required(shape_from_pb(layout.shape), "disclosure shape", "layout.shape"),
            slots=tuple(layout.slots),
            slot_widths=tuple(layout.slot_widths),
            subjects_per_ciphertext=layout.subjects_per_ciphertext,
            base=layout.base,
            offset=layout.offset,
            departments=statuses_from_proto(layout.departments),
        )
    if which == "chunk":
        chunk = message.chunk
        return ChunkOutcome(
            chunk=chunk.chunk,
            subject_ids=tuple(chunk.subject_ids),
            ciphertexts=tuple(c.value for c in chunk.ciphertexts),
            refused=tuple(RefusedSubject(r.subject_id, r.reason) for r in chunk.refused),
        )
    raise InvalidArgument("a batch answer carries a layout or a chunk", field="item")


# --- consent ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConsentGrant:
    """GrantConsent: a subject's consent for one grantee and purpose, until `expires_at`."""

    subject_id: str
    grantee: str
    purpose: str
    expires_at: datetime
    #: a person, or an enterprise consenting through its legal representative
    subject_kind: SubjectKind = SubjectKind.PERSON


@dataclass(frozen=True)
class Consent:
    """A recorded consent, as the coordinator's registry holds it and answers it."""

    consent_id: ConsentId
    subject_id: SubjectId
    grantee: RequesterId
    purpose: Purpose
    granted_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    #: compact JWS signed with the coordinator's consent key (osmanthus.core.receipts); it
    #: proves the grant, never that the consent is still unrevoked (check it with
    #: sdk.verify_consent_receipt). Empty for a consent recorded before receipts existed that
    #: was already revoked then, or whose stored record today's checks refuse
    receipt: str
    #: a person, or an enterprise consenting through its legal representative (a tax-bank loan)
    subject_kind: SubjectKind = SubjectKind.PERSON

    def in_force(self, now: datetime) -> bool:
        return self.revoked_at is None and now < self.expires_at


def consent_grant_to_proto(grant: ConsentGrant) -> coordinator_pb2.GrantConsentRequest:
    return coordinator_pb2.GrantConsentRequest(
        subject_id=grant.subject_id,
        grantee=grant.grantee,
        purpose=grant.purpose,
        expires_at=timestamp_to_proto(grant.expires_at),
        subject_kind=KIND_TO_PB[grant.subject_kind],
    )


def _consent_kind(value: int) -> SubjectKind:
    return required(consent_kind_from_pb(value), "known subject kind", "subject_kind")


def consent_grant_from_proto(message: coordinator_pb2.GrantConsentRequest) -> ConsentGrant:
    return ConsentGrant(
        subject_id=message.subject_id,
        grantee=message.grantee,
        purpose=message.purpose,
        expires_at=timestamp_from_proto(message.expires_at, field="expires_at"),
        subject_kind=_consent_kind(message.subject_kind),
    )


def consent_to_proto(consent: Consent) -> coordinator_pb2.Consent:
    message = coordinator_pb2.Consent(
        consent_id=consent.consent_id,
        subject_id=consent.subject_id,
        grantee=consent.grantee,
        purpose=consent.purpose,
        granted_at=timestamp_to_proto(consent.granted_at),
        expires_at=timestamp_to_proto(consent.expires_at),
        receipt=consent.receipt,
        subject_kind=KIND_TO_PB[consent.subject_kind],
    )
    if consent.revoked_at is not None:
        message.revoked_at.CopyFrom(timestamp_to_proto(consent.revoked_at))
    return message


def consent_from_proto(message: coordinator_pb2.Consent, *, field: str = "consent") -> Consent:
    return Consent(
        consent_id=ConsentId(message.consent_id),
        subject_id=SubjectId(message.subject_id),
        grantee=RequesterId(message.grantee),
        purpose=Purpose(message.purpose),
        granted_at=timestamp_from_proto(message.granted_at, field=f"{field}.granted_at"),
        expires_at=timestamp_from_proto(message.expires_at, field=f"{field}.expires_at"),
        revoked_at=(
            timestamp_from_proto(message.revoked_at, field=f"{field}.revoked_at")
            if message.HasField("revoked_at")
            else None
        ),
        receipt=message.receipt,
        subject_kind=_consent_kind(message.subject_kind),
    )


def revoke_consent_to_proto(
    consent_id: str, *, subject_id: str = ""
) -> coordinator_pb2.RevokeConsentRequest:
    """RevokeConsent; with `subject_id` the consent must be that subject's (the portal's way)."""
    return coordinator_pb2.RevokeConsentRequest(consent_id=consent_id, subject_id=subject_id)


def list_consents_to_proto(*, subject_id: str, grantee: str) -> coordinator_pb2.ListConsentsRequest:
    return coordinator_pb2.ListConsentsRequest(subject_id=subject_id, grantee=grantee)


def consents_to_proto(consents: Iterable[Consent]) -> coordinator_pb2.ListConsentsResponse:
    return coordinator_pb2.ListConsentsResponse(consents=[consent_to_proto(c) for c in consents])


def consents_from_proto(message: coordinator_pb2.ListConsentsResponse) -> list[Consent]:
    return [consent_from_proto(c, field=f"consents[{i}]") for i, c in enumerate(message.consents)]


# --- a subject's own file: SubjectFile -------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SubjectFileRequest:
    """SubjectFile as asked by a subjects' portal device: whose file, and the key to seal it to."""

    subject_kind: SubjectKind | None
    subject_id: str
    purpose: str
    #: the device's raw X25519 public key; its SHA-256 must be the token's seal_fp claim
    recipient_key: bytes
    #: random bytes the device chose for this call (16 to 64), forwarded to every node and
    #: bound into each part's seal and signature: a part from an earlier call does not fit
    nonce: bytes


@dataclass(frozen=True, kw_only=True)
class SubjectFileOutcome:
    """Every part of the file, sealed: the answering departments' in order, then the
    coordinator's own (source "coordinator"); the departments that sent none, and why."""

    query_id: QueryId
    parts: tuple[SealedPart, ...]
    missing: tuple[DepartmentStatus, ...]
    partial: bool


def subject_file_request_to_proto(
    request: SubjectFileRequest,
) -> coordinator_pb2.SubjectFileRequest:
    return coordinator_pb2.SubjectFileRequest(
        subject_kind=kind_to_pb(request.subject_kind),
        subject_id=request.subject_id,
        purpose=request.purpose,
        recipient_key=request.recipient_key,
        nonce=request.nonce,
    )


def subject_file_request_from_proto(
    message: coordinator_pb2.SubjectFileRequest,
) -> SubjectFileRequest:
    return SubjectFileRequest(
        subject_kind=kind_from_pb(message.subject_kind),
        subject_id=message.subject_id,
        purpose=message.purpose,
        recipient_key=message.recipient_key,
        nonce=message.nonce,
    )


def subject_file_outcome_to_proto(
    outcome: SubjectFileOutcome,
) -> coordinator_pb2.SubjectFileResponse:
    return coordinator_pb2.SubjectFileResponse(
        query_id=outcome.query_id,
        files=[sealed_part_to_proto(part) for part in outcome.parts],
        missing=_statuses_to_proto(outcome.missing, with_rules=False),
        partial=outcome.partial,
    )


def subject_file_outcome_from_proto(
    message: coordinator_pb2.SubjectFileResponse,
) -> SubjectFileOutcome:
    """The parts as sent (still sealed), each source named once; opening them is the SDK's."""
    if not message.query_id:
        raise InvalidArgument("the answer names no query id", field="query_id")
    parts = tuple(sealed_part_from_proto(item) for item in message.files)
    seen: set[str] = set()
    for index, part in enumerate(parts):
        if not part.source:
            raise InvalidArgument(f"part {index} names no source", field=f"files[{index}].source")
        if part.source in seen:
            raise InvalidArgument(
                f"two parts come from {part.source[:40]!r}", field=f"files[{index}].source"
            )
        seen.add(part.source)
    return SubjectFileOutcome(
        query_id=QueryId(message.query_id),
        parts=parts,
        missing=statuses_from_proto(message.missing),
        partial=message.partial,
    )

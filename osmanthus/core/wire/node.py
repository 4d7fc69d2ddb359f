"""NodeService's wire contract: the coordinator's requests to a department node and its answers.

The request and result types, the limits both ends enforce and the proto conversions both ends
use: the node's servicer reads requests and writes results with them, the coordinator's node
pool writes requests and reads results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from osmanthus.core.catalogue import Catalogue, Department
from osmanthus.core.consent_feed import MAX_STAPLED_REVOCATIONS, Revocation, SignedHead
from osmanthus.core.encoding import SlotLayout
from osmanthus.core.errors import InvalidArgument
from osmanthus.core.ids import validate_subject
from osmanthus.core.names import validate_purpose, validate_query_id
from osmanthus.core.status import NO_CHECKPOINT_AGE, AuditStanding
from osmanthus.core.types import (
    ConsentId,
    DepartmentId,
    Purpose,
    QueryId,
    Shape,
    SubjectId,
    SubjectKind,
)
from osmanthus.core.wire.common import (
    KIND_TO_PB,
    SHAPE_TO_PB,
    RequestLimits,
    capped,
    kind_from_pb,
    kind_to_pb,
    shape_from_pb,
    shape_to_pb,
)
from osmanthus.v1 import common_pb2, node_pb2, status_pb2

#: the most subjects one batch chunk may carry: bounds a node's memory and work per call
MAX_CHUNK_SUBJECTS = 10_000
#: the most subjects one STATS cohort may name: their ids (~20 bytes each on the wire) must fit
#: one message under the servers' 1 MiB receive limit (osmanthus.core.wire.MAX_RECEIVE_BYTES)
MAX_COHORT = 50_000

#: the largest sealed part of a subject's file one node sends (NodeService.SubjectFile): the
#: coordinator forwards every department's part in one answer, so each is bounded; a node
#: leaves out its oldest audit entries (then its records that count least) to stay under it
MAX_SEALED_PART_BYTES = 256 * 1024

_SLOTS = "a layout's slots in this catalogue"


@dataclass(frozen=True)
class ContributionRequest:
    query_id: str
    subject_kind: SubjectKind | None
    subject_id: str
    shape: Shape | None
    purpose: str
    consent_id: str
    public_key: bytes
    slots: tuple[str, ...]
    slot_widths: tuple[int, ...]
    #: FLAGS: the joint-punishment measures asked, in order
    measures: tuple[str, ...] = ()
    #: a query under a consent: the registry's signed receipt for `consent_id`, its current
    #: revocation head and the feed entries the node has not acknowledged (consent_feed)
    consent_receipt: str = ""
    revocation_head: SignedHead | None = None
    revocations: tuple[Revocation, ...] = ()
    #: the key's modulus proof (osmanthus.core.keyproof), sent until the node has verified it
    modulus_proof: bytes = b""


@dataclass(frozen=True)
class ChunkRequest:
    """One chunk of a batch: many subjects, packed `subjects_per_ciphertext` to a ciphertext."""

    query_id: str
    chunk: int
    subject_kind: SubjectKind | None
    subject_ids: tuple[str, ...]
    shape: Shape | None
    purpose: str
    public_key: bytes
    slots: tuple[str, ...]
    slot_widths: tuple[int, ...]
    subjects_per_ciphertext: int
    #: the key's modulus proof (osmanthus.core.keyproof), sent until the node has verified it
    modulus_proof: bytes = b""


@dataclass(frozen=True)
class StatsRequest:
    """A STATS query's cohort: the department sums each asked statistic over every subject."""

    query_id: str
    subject_kind: SubjectKind | None
    subject_ids: tuple[str, ...]
    purpose: str
    public_key: bytes
    statistics: tuple[str, ...]
    slots: tuple[str, ...]
    slot_widths: tuple[int, ...]
    #: one subject's largest value of each slot, which the coordinator calibrates noise to
    slot_bounds: tuple[int, ...]
    #: the key's modulus proof (osmanthus.core.keyproof), sent until the node has verified it
    modulus_proof: bytes = b""


@dataclass(frozen=True)
class StatsResult:
    department: DepartmentId
    #: per statistic, in the order asked
    ciphertexts: tuple[bytes, ...]
    rules_version: str
    policy_hash: str


def validate_measures(catalogue: Catalogue, measures: Sequence[str]) -> tuple[str, ...]:
    """The measures a FLAGS query asks: at least one, each a catalogue measure, none twice."""
    if not measures:
        raise InvalidArgument(
            "a FLAGS query names the measures it asks about; known: "
            + ", ".join(m.id for m in catalogue.measures),
            field="measures",
        )
    known = [m.id for m in catalogue.measures]
    # a set: one lookup per measure asked, whatever the catalogue's size
    known_set = frozenset(known)
    for name in measures:
        if name not in known_set:
            raise InvalidArgument(
                f"{name[:40]!r} is not a joint-punishment measure; known: {', '.join(known)}",
                field="measures",
            )
    if len(set(measures)) != len(measures):
        raise InvalidArgument("a measure is asked twice", field="measures")
    return tuple(measures)


def validate_cohort(kind: SubjectKind, subject_ids: Sequence[str]) -> tuple[SubjectId, ...]:
    """Each id valid and canonical, no subject twice, 1..MAX_COHORT of them."""
    if not 0 < len(subject_ids) <= MAX_COHORT:
        raise InvalidArgument(
            f"a cohort names 1..{MAX_COHORT} subjects, this one {len(subject_ids)}",
            field="subject_ids",
        )
    cohort = tuple(
        validate_subject(kind, s, field=f"subject_ids[{i}]") for i, s in enumerate(subject_ids)
    )
    seen: dict[SubjectId, int] = {}
    for index, subject in enumerate(cohort):
        first = seen.setdefault(subject, index)
        if first != index:
            # a subject counted twice would weigh double and break the noise's guarantee
            raise InvalidArgument(
                f"subject_ids[{index}] repeats subject_ids[{first}]: a cohort names each "
                "subject once",
                field=f"subject_ids[{index}]",
            )
    return cohort


def validate_statistics(layout: SlotLayout, names: Sequence[str]) -> tuple[str, ...]:
    """The statistics asked, all slot names of `layout`, none twice; empty means all."""
    if not names:
        return layout.names
    known = frozenset(layout.names)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InvalidArgument(
            f"unknown statistic {unknown[0][:40]!r}; choose from {', '.join(layout.names)}",
            field="statistics",
        )
    if len(set(names)) != len(names):
        raise InvalidArgument("a statistic is asked for twice", field="statistics")
    return tuple(names)


@dataclass(frozen=True)
class ChunkResult:
    department: DepartmentId
    chunk: int
    ciphertexts: tuple[bytes, ...]
    rules_version: str
    policy_hash: str


@dataclass(frozen=True)
class ContributionResult:
    department: DepartmentId
    ciphertext: bytes
    single_source_allowed: bool
    rules_version: str
    policy_hash: str
    #: FLAGS: per measure asked, E(how many of this department's flags triggering it are set)
    flag_counts: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class NodeDescription:
    department: Department
    rules_version: str
    rules_digest: str
    policy_hash: str
    owned_categories: tuple[str, ...]
    software_version: str
    #: for `osmanthus status` (osmanthus.core.status): the catalogue's fingerprint
    catalogue_digest: str = ""
    # the fields below are for operators and the coordinator only (NodeService.describe)
    records_held: int = 0
    #: when records last came in (seconds since the epoch; None: unknown), how, and by whom
    last_ingest_at: float | None = None
    last_ingest_source: str = ""
    last_ingest_actor: str = ""
    audit: AuditStanding = field(
        default_factory=lambda: AuditStanding(entries=0, checkpoints=False)
    )


@dataclass(frozen=True)
class SubjectFileQuery:
    """NodeService.SubjectFile: the portal's question about its subject, as the coordinator
    forwards it (the node checks every field; nothing here is trusted)."""

    query_id: str
    subject_kind: SubjectKind | None
    subject_id: str
    purpose: str
    #: the portal's raw X25519 public key; its SHA-256 must be the token's seal_fp claim
    recipient_key: bytes
    #: the portal's random nonce for this call (16 to 64 bytes), forwarded unchanged: bound
    #: into the seal and the part's signature so that no part answers another call
    nonce: bytes


@dataclass(frozen=True)
class SealedPart:
    """One party's part of a subject's file, sealed to the portal's key (subjectseal)."""

    #: the department id, or subjectfile.COORDINATOR_SOURCE
    source: str
    #: enc || AEAD ciphertext of the RFC 8785 JSON file
    sealed: bytes
    rules_version: str = ""
    policy_hash: str = ""
    #: the maker's detached ES256 JWS over the seal context and the sealed bytes' SHA-256
    #: (osmanthus.core.subjectpart)
    signature: str = ""
    #: the maker's PEM certificate (its node's, or the coordinator's), from the platform CA
    certificate: bytes = b""


def validate_query_fields(
    *, query_id: str, purpose: str, shape: Shape | None
) -> tuple[QueryId, Purpose, Shape]:
    """Checks shared by node and coordinator entry points."""
    checked_query_id = validate_query_id(query_id)
    checked_purpose = validate_purpose(purpose)
    if shape is None:
        raise InvalidArgument("a disclosure shape (BREAKDOWN or TOTAL) is required", field="shape")
    return checked_query_id, checked_purpose, shape


# --- conversions ---------------------------------------------------------------------------


def contribution_request_from_proto(
    message: node_pb2.ContributeRequest, *, limits: RequestLimits
) -> ContributionRequest:
    """The request, each repeated field refused past its natural size before it is read."""
    return ContributionRequest(
        query_id=message.query_id,
        subject_kind=kind_from_pb(message.subject_kind),
        subject_id=message.subject_id,
        shape=shape_from_pb(message.shape),
        purpose=message.purpose,
        consent_id=message.consent_id,
        public_key=message.public_key.n,
        modulus_proof=message.public_key.modulus_proof,
        slots=capped(message.slots, limit=limits.slots, field="slots", natural=_SLOTS),
        slot_widths=capped(
            message.slot_widths, limit=limits.slots, field="slot_widths", natural=_SLOTS
        ),
        measures=capped(
            message.measures,
            limit=limits.measures,
            field="measures",
            natural="the catalogue's measures",
        ),
        consent_receipt=message.consent_receipt,
        revocation_head=(
            SignedHead(
                payload=message.revocation_head.payload,
                signature=message.revocation_head.signature,
            )
            if message.HasField("revocation_head")
            else None
        ),
        revocations=tuple(
            Revocation(
                sequence=r.sequence,
                consent_id=ConsentId(r.consent_id),
                revoked_at=r.revoked_at,
                expires_at=r.expires_at,
            )
            for r in capped(
                message.revocations,
                limit=MAX_STAPLED_REVOCATIONS,
                field="revocations",
                natural="the revocations one request carries",
            )
        ),
    )


def contribution_request_to_proto(request: ContributionRequest) -> node_pb2.ContributeRequest:
    return node_pb2.ContributeRequest(
        query_id=request.query_id,
        subject_kind=(
            KIND_TO_PB[request.subject_kind]
            if request.subject_kind
            else common_pb2.SUBJECT_KIND_UNSPECIFIED
        ),
        subject_id=request.subject_id,
        shape=SHAPE_TO_PB[request.shape] if request.shape else common_pb2.SHAPE_UNSPECIFIED,
        purpose=request.purpose,
        consent_id=request.consent_id,
        public_key=common_pb2.PaillierPublicKey(
            n=request.public_key, modulus_proof=request.modulus_proof
        ),
        slots=list(request.slots),
        slot_widths=list(request.slot_widths),
        measures=list(request.measures),
        consent_receipt=request.consent_receipt,
        revocation_head=(
            node_pb2.ConsentRevocationHead(
                payload=request.revocation_head.payload,
                signature=request.revocation_head.signature,
            )
            if request.revocation_head is not None
            else None
        ),
        revocations=[
            node_pb2.ConsentRevocation(
                sequence=r.sequence,
                consent_id=r.consent_id,
                revoked_at=r.revoked_at,
                expires_at=r.expires_at,
            )
            for r in request.revocations
        ],
    )


def contribution_result_to_proto(result: ContributionResult) -> node_pb2.ContributeResponse:
    return node_pb2.ContributeResponse(
        department=result.department,
        ciphertext=common_pb2.Ciphertext(value=result.ciphertext),
        single_source_allowed=result.single_source_allowed,
        rules_version=result.rules_version,
        policy_hash=result.policy_hash,
        flag_counts=[common_pb2.Ciphertext(value=c) for c in result.flag_counts],
    )


def contribution_result_from_proto(message: node_pb2.ContributeResponse) -> ContributionResult:
    return ContributionResult(
        department=DepartmentId(message.department),
        ciphertext=message.ciphertext.value,
        single_source_allowed=message.single_source_allowed,
        rules_version=message.rules_version,
        policy_hash=message.policy_hash,
        flag_counts=tuple(c.value for c in message.flag_counts),
    )


def chunk_request_from_proto(
    message: node_pb2.ContributeChunkRequest, *, limits: RequestLimits
) -> ChunkRequest:
    """The request, each repeated field refused past its natural size before it is read."""
    return ChunkRequest(
        query_id=message.query_id,
        chunk=message.chunk,
        subject_kind=kind_from_pb(message.subject_kind),
        subject_ids=capped(
            message.subject_ids,
            limit=MAX_CHUNK_SUBJECTS,
            field="subject_ids",
            natural="the subjects of one batch chunk",
        ),
        shape=shape_from_pb(message.shape),
        purpose=message.purpose,
        public_key=message.public_key.n,
        modulus_proof=message.public_key.modulus_proof,
        slots=capped(message.slots, limit=limits.slots, field="slots", natural=_SLOTS),
        slot_widths=capped(
            message.slot_widths, limit=limits.slots, field="slot_widths", natural=_SLOTS
        ),
        subjects_per_ciphertext=message.subjects_per_ciphertext,
    )


def chunk_request_to_proto(request: ChunkRequest) -> node_pb2.ContributeChunkRequest:
    return node_pb2.ContributeChunkRequest(
        query_id=request.query_id,
        chunk=request.chunk,
        subject_kind=kind_to_pb(request.subject_kind),
        subject_ids=list(request.subject_ids),
        shape=shape_to_pb(request.shape),
        purpose=request.purpose,
        public_key=common_pb2.PaillierPublicKey(
            n=request.public_key, modulus_proof=request.modulus_proof
        ),
        slots=list(request.slots),
        slot_widths=list(request.slot_widths),
        subjects_per_ciphertext=request.subjects_per_ciphertext,
    )


def chunk_result_to_proto(result: ChunkResult) -> node_pb2.ContributeChunkResponse:
    return node_pb2.ContributeChunkResponse(
        department=result.department,
        chunk=result.chunk,
        ciphertexts=[common_pb2.Ciphertext(value=c) for c in result.ciphertexts],
        rules_version=result.rules_version,
        policy_hash=result.policy_hash,
    )


def chunk_result_from_proto(message: node_pb2.ContributeChunkResponse) -> ChunkResult:
    return ChunkResult(
        department=DepartmentId(message.department),
        chunk=message.chunk,
        ciphertexts=tuple(c.value for c in message.ciphertexts),
        rules_version=message.rules_version,
        policy_hash=message.policy_hash,
    )


def stats_request_from_proto(
    message: node_pb2.ContributeStatsRequest, *, limits: RequestLimits
) -> StatsRequest:
    """The request, each repeated field refused past its natural size before it is read."""
    return StatsRequest(
        query_id=message.query_id,
        subject_kind=kind_from_pb(message.subject_kind),
        subject_ids=capped(
            message.subject_ids,
            limit=MAX_COHORT,
            field="subject_ids",
            natural="the subjects of one STATS cohort",
        ),
        purpose=message.purpose,
        public_key=message.public_key.n,
        modulus_proof=message.public_key.modulus_proof,
        statistics=capped(
            message.statistics, limit=limits.slots, field="statistics", natural=_SLOTS
        ),
        slots=capped(message.slots, limit=limits.slots, field="slots", natural=_SLOTS),
        slot_widths=capped(
            message.slot_widths, limit=limits.slots, field="slot_widths", natural=_SLOTS
        ),
        slot_bounds=capped(
            message.slot_bounds, limit=limits.slots, field="slot_bounds", natural=_SLOTS
        ),
    )


def stats_request_to_proto(request: StatsRequest) -> node_pb2.ContributeStatsRequest:
    return node_pb2.ContributeStatsRequest(
        query_id=request.query_id,
        subject_kind=kind_to_pb(request.subject_kind),
        subject_ids=list(request.subject_ids),
        purpose=request.purpose,
        public_key=common_pb2.PaillierPublicKey(
            n=request.public_key, modulus_proof=request.modulus_proof
        ),
        statistics=list(request.statistics),
        slots=list(request.slots),
        slot_widths=list(request.slot_widths),
        slot_bounds=list(request.slot_bounds),
    )


def stats_result_to_proto(result: StatsResult) -> node_pb2.ContributeStatsResponse:
    return node_pb2.ContributeStatsResponse(
        department=result.department,
        ciphertexts=[common_pb2.Ciphertext(value=c) for c in result.ciphertexts],
        rules_version=result.rules_version,
        policy_hash=result.policy_hash,
    )


def stats_result_from_proto(message: node_pb2.ContributeStatsResponse) -> StatsResult:
    return StatsResult(
        department=DepartmentId(message.department),
        ciphertexts=tuple(c.value for c in message.ciphertexts),
        rules_version=message.rules_version,
        policy_hash=message.policy_hash,
    )


def node_description_to_proto(description: NodeDescription) -> node_pb2.NodeInfo:
    dept = description.department
    return node_pb2.NodeInfo(
        department=dept.id,
        name=f"{dept.name} {dept.name_zh}",
        subject_kinds=[KIND_TO_PB[k] for k in sorted(dept.subject_kinds, key=lambda k: k.value)],
        rules_version=description.rules_version,
        rules_digest=description.rules_digest,
        policy_hash=description.policy_hash,
        owned_categories=list(description.owned_categories),
        software_version=description.software_version,
        catalogue_digest=description.catalogue_digest,
        records_held=description.records_held,
        last_ingest_at=round(description.last_ingest_at or 0),
        last_ingest_source=description.last_ingest_source,
        last_ingest_actor=description.last_ingest_actor,
        **audit_standing_fields(description.audit),
    )


def audit_standing_fields(audit: AuditStanding) -> dict[str, Any]:
    """The audit fields NodeInfo and CoordinatorStatus share, by name."""
    return {
        "audit_entries": audit.entries,
        "audit_checkpoints": audit.checkpoints,
        "checkpoint_size": audit.checkpoint_size,
        "checkpoint_age_s": (
            audit.checkpoint_age_s if audit.checkpoint_age_s is not None else NO_CHECKPOINT_AGE
        ),
        "audit_failure": audit.failure or "",
    }


def audit_standing_from_proto(
    message: node_pb2.NodeInfo | status_pb2.CoordinatorStatus,
) -> AuditStanding:
    return AuditStanding(
        entries=message.audit_entries,
        checkpoints=message.audit_checkpoints,
        checkpoint_size=message.checkpoint_size,
        checkpoint_age_s=message.checkpoint_age_s if message.checkpoint_age_s >= 0 else None,
        failure=message.audit_failure or None,
    )


@dataclass(frozen=True)
class NodeInfoView:
    """A node's GetInfo answer as `osmanthus status` reads it (the catalogue's Department is
    not rebuilt: the reader may hold another catalogue)."""

    department: str
    name: str
    rules_version: str
    rules_digest: str
    policy_hash: str
    software_version: str
    catalogue_digest: str
    records_held: int
    last_ingest_at: float | None
    last_ingest_source: str
    audit: AuditStanding
    last_ingest_actor: str = ""


def node_info_from_proto(message: node_pb2.NodeInfo) -> NodeInfoView:
    return NodeInfoView(
        department=message.department,
        name=message.name,
        rules_version=message.rules_version,
        rules_digest=message.rules_digest,
        policy_hash=message.policy_hash,
        software_version=message.software_version,
        catalogue_digest=message.catalogue_digest,
        records_held=message.records_held,
        last_ingest_at=float(message.last_ingest_at) if message.last_ingest_at > 0 else None,
        last_ingest_source=message.last_ingest_source,
        audit=audit_standing_from_proto(message),
        last_ingest_actor=message.last_ingest_actor,
    )


def subject_file_query_from_proto(message: node_pb2.NodeSubjectFileRequest) -> SubjectFileQuery:
    return SubjectFileQuery(
        query_id=message.query_id,
        subject_kind=kind_from_pb(message.subject_kind),
        subject_id=message.subject_id,
        purpose=message.purpose,
        recipient_key=message.recipient_key,
        nonce=message.nonce,
    )


def subject_file_query_to_proto(query: SubjectFileQuery) -> node_pb2.NodeSubjectFileRequest:
    return node_pb2.NodeSubjectFileRequest(
        query_id=query.query_id,
        subject_kind=(
            KIND_TO_PB[query.subject_kind]
            if query.subject_kind
            else common_pb2.SUBJECT_KIND_UNSPECIFIED
        ),
        subject_id=query.subject_id,
        purpose=query.purpose,
        recipient_key=query.recipient_key,
        nonce=query.nonce,
    )


def sealed_part_to_proto(part: SealedPart) -> node_pb2.SealedSubjectFile:
    return node_pb2.SealedSubjectFile(
        source=part.source,
        sealed=part.sealed,
        rules_version=part.rules_version,
        policy_hash=part.policy_hash,
        signature=part.signature,
        certificate=part.certificate,
    )


def sealed_part_from_proto(message: node_pb2.SealedSubjectFile) -> SealedPart:
    return SealedPart(
        source=message.source,
        sealed=message.sealed,
        rules_version=message.rules_version,
        policy_hash=message.policy_hash,
        signature=message.signature,
        certificate=message.certificate,
    )

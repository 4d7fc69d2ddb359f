"""Conversion between node protobuf messages and the node's typed Python values."""

from __future__ import annotations

from node.service import (
    ChunkRequest,
    ChunkResult,
    ContributionRequest,
    ContributionResult,
    NodeDescription,
    StatsRequest,
    StatsResult,
)
from osmanthus.types import DepartmentId, Shape, SubjectKind
from osmanthus.v1 import common_pb2, node_pb2

_KIND_FROM_PB: dict[int, SubjectKind] = {
    common_pb2.SUBJECT_KIND_PERSON: SubjectKind.PERSON,
    common_pb2.SUBJECT_KIND_ENTERPRISE: SubjectKind.ENTERPRISE,
}
KIND_TO_PB: dict[SubjectKind, common_pb2.SubjectKind] = {
    SubjectKind.PERSON: common_pb2.SUBJECT_KIND_PERSON,
    SubjectKind.ENTERPRISE: common_pb2.SUBJECT_KIND_ENTERPRISE,
}
_SHAPE_FROM_PB: dict[int, Shape] = {
    common_pb2.SHAPE_BREAKDOWN: Shape.BREAKDOWN,
    common_pb2.SHAPE_TOTAL: Shape.TOTAL,
    common_pb2.SHAPE_THRESHOLD: Shape.THRESHOLD,
    common_pb2.SHAPE_FLAGS: Shape.FLAGS,
}
SHAPE_TO_PB: dict[Shape, common_pb2.Shape] = {
    Shape.BREAKDOWN: common_pb2.SHAPE_BREAKDOWN,
    Shape.TOTAL: common_pb2.SHAPE_TOTAL,
    Shape.THRESHOLD: common_pb2.SHAPE_THRESHOLD,
    Shape.FLAGS: common_pb2.SHAPE_FLAGS,
}


def kind_from_pb(value: int) -> SubjectKind | None:
    return _KIND_FROM_PB.get(value)


def shape_from_pb(value: int) -> Shape | None:
    return _SHAPE_FROM_PB.get(value)


def contribution_request(message: node_pb2.ContributeRequest) -> ContributionRequest:
    return ContributionRequest(
        query_id=message.query_id,
        subject_kind=kind_from_pb(message.subject_kind),
        subject_id=message.subject_id,
        shape=shape_from_pb(message.shape),
        purpose=message.purpose,
        consent_id=message.consent_id,
        public_key=message.public_key.n,
        slots=tuple(message.slots),
        slot_widths=tuple(message.slot_widths),
        measures=tuple(message.measures),
    )


def contribute_request_message(request: ContributionRequest) -> node_pb2.ContributeRequest:
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
        public_key=common_pb2.PaillierPublicKey(n=request.public_key),
        slots=list(request.slots),
        slot_widths=list(request.slot_widths),
        measures=list(request.measures),
    )


def contribution_response(result: ContributionResult) -> node_pb2.ContributeResponse:
    return node_pb2.ContributeResponse(
        department=result.department,
        ciphertext=common_pb2.Ciphertext(value=result.ciphertext),
        single_source_allowed=result.single_source_allowed,
        rules_version=result.rules_version,
        policy_hash=result.policy_hash,
        flag_counts=[common_pb2.Ciphertext(value=c) for c in result.flag_counts],
    )


def contribution_result(message: node_pb2.ContributeResponse) -> ContributionResult:
    return ContributionResult(
        department=DepartmentId(message.department),
        ciphertext=message.ciphertext.value,
        single_source_allowed=message.single_source_allowed,
        rules_version=message.rules_version,
        policy_hash=message.policy_hash,
        flag_counts=tuple(c.value for c in message.flag_counts),
    )


def _kind_pb(kind: SubjectKind | None) -> common_pb2.SubjectKind:
    return KIND_TO_PB[kind] if kind else common_pb2.SUBJECT_KIND_UNSPECIFIED


def _shape_pb(shape: Shape | None) -> common_pb2.Shape:
    return SHAPE_TO_PB[shape] if shape else common_pb2.SHAPE_UNSPECIFIED


def chunk_request(message: node_pb2.ContributeChunkRequest) -> ChunkRequest:
    return ChunkRequest(
        query_id=message.query_id,
        chunk=message.chunk,
        subject_kind=kind_from_pb(message.subject_kind),
        subject_ids=tuple(message.subject_ids),
        shape=shape_from_pb(message.shape),
        purpose=message.purpose,
        public_key=message.public_key.n,
        slots=tuple(message.slots),
        slot_widths=tuple(message.slot_widths),
        subjects_per_ciphertext=message.subjects_per_ciphertext,
    )


def chunk_request_message(request: ChunkRequest) -> node_pb2.ContributeChunkRequest:
    return node_pb2.ContributeChunkRequest(
        query_id=request.query_id,
        chunk=request.chunk,
        subject_kind=_kind_pb(request.subject_kind),
        subject_ids=list(request.subject_ids),
        shape=_shape_pb(request.shape),
        purpose=request.purpose,
        public_key=common_pb2.PaillierPublicKey(n=request.public_key),
        slots=list(request.slots),
        slot_widths=list(request.slot_widths),
        subjects_per_ciphertext=request.subjects_per_ciphertext,
    )


def chunk_response(result: ChunkResult) -> node_pb2.ContributeChunkResponse:
    return node_pb2.ContributeChunkResponse(
        department=result.department,
        chunk=result.chunk,
        ciphertexts=[common_pb2.Ciphertext(value=c) for c in result.ciphertexts],
        rules_version=result.rules_version,
        policy_hash=result.policy_hash,
    )


def chunk_result(message: node_pb2.ContributeChunkResponse) -> ChunkResult:
    return ChunkResult(
        department=DepartmentId(message.department),
        chunk=message.chunk,
        ciphertexts=tuple(c.value for c in message.ciphertexts),
        rules_version=message.rules_version,
        policy_hash=message.policy_hash,
    )


def stats_request(message: node_pb2.ContributeStatsRequest) -> StatsRequest:
    return StatsRequest(
        query_id=message.query_id,
        subject_kind=kind_from_pb(message.subject_kind),
        subject_ids=tuple(message.subject_ids),
        purpose=message.purpose,
        public_key=message.public_key.n,
        statistics=tuple(message.statistics),
        slots=tuple(message.slots),
        slot_widths=tuple(message.slot_widths),
        slot_bounds=tuple(message.slot_bounds),
    )


def stats_request_message(request: StatsRequest) -> node_pb2.ContributeStatsRequest:
    return node_pb2.ContributeStatsRequest(
        query_id=request.query_id,
        subject_kind=_kind_pb(request.subject_kind),
        subject_ids=list(request.subject_ids),
        purpose=request.purpose,
        public_key=common_pb2.PaillierPublicKey(n=request.public_key),
        statistics=list(request.statistics),
        slots=list(request.slots),
        slot_widths=list(request.slot_widths),
        slot_bounds=list(request.slot_bounds),
    )


def stats_response(result: StatsResult) -> node_pb2.ContributeStatsResponse:
    return node_pb2.ContributeStatsResponse(
        department=result.department,
        ciphertexts=[common_pb2.Ciphertext(value=c) for c in result.ciphertexts],
        rules_version=result.rules_version,
        policy_hash=result.policy_hash,
    )


def stats_result(message: node_pb2.ContributeStatsResponse) -> StatsResult:
    return StatsResult(
        department=DepartmentId(message.department),
        ciphertexts=tuple(c.value for c in message.ciphertexts),
        rules_version=message.rules_version,
        policy_hash=message.policy_hash,
    )


def node_info(description: NodeDescription) -> node_pb2.NodeInfo:
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
    )

from osmanthus.v1 import cases_pb2 as _cases_pb2
from osmanthus.v1 import common_pb2 as _common_pb2
from osmanthus.v1 import lists_pb2 as _lists_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ContributeRequest(_message.Message):
    __slots__ = ("query_id", "subject_kind", "subject_id", "shape", "purpose", "consent_id", "public_key", "slots", "slot_widths", "measures", "consent_receipt", "revocation_head", "revocations")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_KIND_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    SLOT_WIDTHS_FIELD_NUMBER: _ClassVar[int]
    MEASURES_FIELD_NUMBER: _ClassVar[int]
    CONSENT_RECEIPT_FIELD_NUMBER: _ClassVar[int]
    REVOCATION_HEAD_FIELD_NUMBER: _ClassVar[int]
    REVOCATIONS_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    subject_kind: _common_pb2.SubjectKind
    subject_id: str
    shape: _common_pb2.Shape
    purpose: str
    consent_id: str
    public_key: _common_pb2.PaillierPublicKey
    slots: _containers.RepeatedScalarFieldContainer[str]
    slot_widths: _containers.RepeatedScalarFieldContainer[int]
    measures: _containers.RepeatedScalarFieldContainer[str]
    consent_receipt: str
    revocation_head: ConsentRevocationHead
    revocations: _containers.RepeatedCompositeFieldContainer[ConsentRevocation]
    def __init__(self, query_id: _Optional[str] = ..., subject_kind: _Optional[_Union[_common_pb2.SubjectKind, str]] = ..., subject_id: _Optional[str] = ..., shape: _Optional[_Union[_common_pb2.Shape, str]] = ..., purpose: _Optional[str] = ..., consent_id: _Optional[str] = ..., public_key: _Optional[_Union[_common_pb2.PaillierPublicKey, _Mapping]] = ..., slots: _Optional[_Iterable[str]] = ..., slot_widths: _Optional[_Iterable[int]] = ..., measures: _Optional[_Iterable[str]] = ..., consent_receipt: _Optional[str] = ..., revocation_head: _Optional[_Union[ConsentRevocationHead, _Mapping]] = ..., revocations: _Optional[_Iterable[_Union[ConsentRevocation, _Mapping]]] = ...) -> None: ...

class ConsentRevocationHead(_message.Message):
    __slots__ = ("payload", "signature")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    signature: str
    def __init__(self, payload: _Optional[bytes] = ..., signature: _Optional[str] = ...) -> None: ...

class ConsentRevocation(_message.Message):
    __slots__ = ("sequence", "consent_id", "revoked_at", "expires_at")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    consent_id: str
    revoked_at: int
    expires_at: int
    def __init__(self, sequence: _Optional[int] = ..., consent_id: _Optional[str] = ..., revoked_at: _Optional[int] = ..., expires_at: _Optional[int] = ...) -> None: ...

class ContributeResponse(_message.Message):
    __slots__ = ("department", "ciphertext", "single_source_allowed", "rules_version", "policy_hash", "flag_counts")
    DEPARTMENT_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    SINGLE_SOURCE_ALLOWED_FIELD_NUMBER: _ClassVar[int]
    RULES_VERSION_FIELD_NUMBER: _ClassVar[int]
    POLICY_HASH_FIELD_NUMBER: _ClassVar[int]
    FLAG_COUNTS_FIELD_NUMBER: _ClassVar[int]
    department: str
    ciphertext: _common_pb2.Ciphertext
    single_source_allowed: bool
    rules_version: str
    policy_hash: str
    flag_counts: _containers.RepeatedCompositeFieldContainer[_common_pb2.Ciphertext]
    def __init__(self, department: _Optional[str] = ..., ciphertext: _Optional[_Union[_common_pb2.Ciphertext, _Mapping]] = ..., single_source_allowed: _Optional[bool] = ..., rules_version: _Optional[str] = ..., policy_hash: _Optional[str] = ..., flag_counts: _Optional[_Iterable[_Union[_common_pb2.Ciphertext, _Mapping]]] = ...) -> None: ...

class ContributeChunkRequest(_message.Message):
    __slots__ = ("query_id", "chunk", "subject_kind", "subject_ids", "shape", "purpose", "public_key", "slots", "slot_widths", "subjects_per_ciphertext")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_KIND_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_IDS_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    SLOT_WIDTHS_FIELD_NUMBER: _ClassVar[int]
    SUBJECTS_PER_CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    chunk: int
    subject_kind: _common_pb2.SubjectKind
    subject_ids: _containers.RepeatedScalarFieldContainer[str]
    shape: _common_pb2.Shape
    purpose: str
    public_key: _common_pb2.PaillierPublicKey
    slots: _containers.RepeatedScalarFieldContainer[str]
    slot_widths: _containers.RepeatedScalarFieldContainer[int]
    subjects_per_ciphertext: int
    def __init__(self, query_id: _Optional[str] = ..., chunk: _Optional[int] = ..., subject_kind: _Optional[_Union[_common_pb2.SubjectKind, str]] = ..., subject_ids: _Optional[_Iterable[str]] = ..., shape: _Optional[_Union[_common_pb2.Shape, str]] = ..., purpose: _Optional[str] = ..., public_key: _Optional[_Union[_common_pb2.PaillierPublicKey, _Mapping]] = ..., slots: _Optional[_Iterable[str]] = ..., slot_widths: _Optional[_Iterable[int]] = ..., subjects_per_ciphertext: _Optional[int] = ...) -> None: ...

class ContributeChunkResponse(_message.Message):
    __slots__ = ("department", "chunk", "ciphertexts", "rules_version", "policy_hash")
    DEPARTMENT_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXTS_FIELD_NUMBER: _ClassVar[int]
    RULES_VERSION_FIELD_NUMBER: _ClassVar[int]
    POLICY_HASH_FIELD_NUMBER: _ClassVar[int]
    department: str
    chunk: int
    ciphertexts: _containers.RepeatedCompositeFieldContainer[_common_pb2.Ciphertext]
    rules_version: str
    policy_hash: str
    def __init__(self, department: _Optional[str] = ..., chunk: _Optional[int] = ..., ciphertexts: _Optional[_Iterable[_Union[_common_pb2.Ciphertext, _Mapping]]] = ..., rules_version: _Optional[str] = ..., policy_hash: _Optional[str] = ...) -> None: ...

class ContributeStatsRequest(_message.Message):
    __slots__ = ("query_id", "subject_kind", "subject_ids", "purpose", "public_key", "statistics", "slots", "slot_widths", "slot_bounds")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_KIND_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_IDS_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    STATISTICS_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    SLOT_WIDTHS_FIELD_NUMBER: _ClassVar[int]
    SLOT_BOUNDS_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    subject_kind: _common_pb2.SubjectKind
    subject_ids: _containers.RepeatedScalarFieldContainer[str]
    purpose: str
    public_key: _common_pb2.PaillierPublicKey
    statistics: _containers.RepeatedScalarFieldContainer[str]
    slots: _containers.RepeatedScalarFieldContainer[str]
    slot_widths: _containers.RepeatedScalarFieldContainer[int]
    slot_bounds: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, query_id: _Optional[str] = ..., subject_kind: _Optional[_Union[_common_pb2.SubjectKind, str]] = ..., subject_ids: _Optional[_Iterable[str]] = ..., purpose: _Optional[str] = ..., public_key: _Optional[_Union[_common_pb2.PaillierPublicKey, _Mapping]] = ..., statistics: _Optional[_Iterable[str]] = ..., slots: _Optional[_Iterable[str]] = ..., slot_widths: _Optional[_Iterable[int]] = ..., slot_bounds: _Optional[_Iterable[int]] = ...) -> None: ...

class ContributeStatsResponse(_message.Message):
    __slots__ = ("department", "ciphertexts", "rules_version", "policy_hash")
    DEPARTMENT_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXTS_FIELD_NUMBER: _ClassVar[int]
    RULES_VERSION_FIELD_NUMBER: _ClassVar[int]
    POLICY_HASH_FIELD_NUMBER: _ClassVar[int]
    department: str
    ciphertexts: _containers.RepeatedCompositeFieldContainer[_common_pb2.Ciphertext]
    rules_version: str
    policy_hash: str
    def __init__(self, department: _Optional[str] = ..., ciphertexts: _Optional[_Iterable[_Union[_common_pb2.Ciphertext, _Mapping]]] = ..., rules_version: _Optional[str] = ..., policy_hash: _Optional[str] = ...) -> None: ...

class NodeListChangesRequest(_message.Message):
    __slots__ = ("request", "requester")
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_FIELD_NUMBER: _ClassVar[int]
    request: _lists_pb2.ListChangesRequest
    requester: str
    def __init__(self, request: _Optional[_Union[_lists_pb2.ListChangesRequest, _Mapping]] = ..., requester: _Optional[str] = ...) -> None: ...

class GetInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NodeInfo(_message.Message):
    __slots__ = ("department", "name", "subject_kinds", "rules_version", "rules_digest", "policy_hash", "owned_categories", "software_version", "catalogue_digest", "records_held", "last_ingest_at", "last_ingest_source", "audit_entries", "audit_checkpoints", "checkpoint_size", "checkpoint_age_s", "audit_failure", "last_ingest_actor")
    DEPARTMENT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_KINDS_FIELD_NUMBER: _ClassVar[int]
    RULES_VERSION_FIELD_NUMBER: _ClassVar[int]
    RULES_DIGEST_FIELD_NUMBER: _ClassVar[int]
    POLICY_HASH_FIELD_NUMBER: _ClassVar[int]
    OWNED_CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    SOFTWARE_VERSION_FIELD_NUMBER: _ClassVar[int]
    CATALOGUE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    RECORDS_HELD_FIELD_NUMBER: _ClassVar[int]
    LAST_INGEST_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_INGEST_SOURCE_FIELD_NUMBER: _ClassVar[int]
    AUDIT_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    AUDIT_CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_SIZE_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_AGE_S_FIELD_NUMBER: _ClassVar[int]
    AUDIT_FAILURE_FIELD_NUMBER: _ClassVar[int]
    LAST_INGEST_ACTOR_FIELD_NUMBER: _ClassVar[int]
    department: str
    name: str
    subject_kinds: _containers.RepeatedScalarFieldContainer[_common_pb2.SubjectKind]
    rules_version: str
    rules_digest: str
    policy_hash: str
    owned_categories: _containers.RepeatedScalarFieldContainer[str]
    software_version: str
    catalogue_digest: str
    records_held: int
    last_ingest_at: int
    last_ingest_source: str
    audit_entries: int
    audit_checkpoints: bool
    checkpoint_size: int
    checkpoint_age_s: float
    audit_failure: str
    last_ingest_actor: str
    def __init__(self, department: _Optional[str] = ..., name: _Optional[str] = ..., subject_kinds: _Optional[_Iterable[_Union[_common_pb2.SubjectKind, str]]] = ..., rules_version: _Optional[str] = ..., rules_digest: _Optional[str] = ..., policy_hash: _Optional[str] = ..., owned_categories: _Optional[_Iterable[str]] = ..., software_version: _Optional[str] = ..., catalogue_digest: _Optional[str] = ..., records_held: _Optional[int] = ..., last_ingest_at: _Optional[int] = ..., last_ingest_source: _Optional[str] = ..., audit_entries: _Optional[int] = ..., audit_checkpoints: _Optional[bool] = ..., checkpoint_size: _Optional[int] = ..., checkpoint_age_s: _Optional[float] = ..., audit_failure: _Optional[str] = ..., last_ingest_actor: _Optional[str] = ...) -> None: ...

class NodeSubjectFileRequest(_message.Message):
    __slots__ = ("query_id", "subject_kind", "subject_id", "purpose", "recipient_key", "nonce")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_KIND_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_KEY_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    subject_kind: _common_pb2.SubjectKind
    subject_id: str
    purpose: str
    recipient_key: bytes
    nonce: bytes
    def __init__(self, query_id: _Optional[str] = ..., subject_kind: _Optional[_Union[_common_pb2.SubjectKind, str]] = ..., subject_id: _Optional[str] = ..., purpose: _Optional[str] = ..., recipient_key: _Optional[bytes] = ..., nonce: _Optional[bytes] = ...) -> None: ...

class SealedSubjectFile(_message.Message):
    __slots__ = ("source", "sealed", "rules_version", "policy_hash", "signature", "certificate")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SEALED_FIELD_NUMBER: _ClassVar[int]
    RULES_VERSION_FIELD_NUMBER: _ClassVar[int]
    POLICY_HASH_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    source: str
    sealed: bytes
    rules_version: str
    policy_hash: str
    signature: str
    certificate: bytes
    def __init__(self, source: _Optional[str] = ..., sealed: _Optional[bytes] = ..., rules_version: _Optional[str] = ..., policy_hash: _Optional[str] = ..., signature: _Optional[str] = ..., certificate: _Optional[bytes] = ...) -> None: ...

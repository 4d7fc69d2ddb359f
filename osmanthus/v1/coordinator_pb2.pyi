import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from osmanthus.v1 import cases_pb2 as _cases_pb2
from osmanthus.v1 import common_pb2 as _common_pb2
from osmanthus.v1 import lists_pb2 as _lists_pb2
from osmanthus.v1 import node_pb2 as _node_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RegisterKeyRequest(_message.Message):
    __slots__ = ("public_key",)
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    public_key: _common_pb2.PaillierPublicKey
    def __init__(self, public_key: _Optional[_Union[_common_pb2.PaillierPublicKey, _Mapping]] = ...) -> None: ...

class RegisterKeyResponse(_message.Message):
    __slots__ = ("key_fingerprint",)
    KEY_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    key_fingerprint: str
    def __init__(self, key_fingerprint: _Optional[str] = ...) -> None: ...

class PersonQueryRequest(_message.Message):
    __slots__ = ("resident_id", "shape", "purpose", "consent_id", "public_key", "threshold", "measures")
    RESIDENT_ID_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MEASURES_FIELD_NUMBER: _ClassVar[int]
    resident_id: str
    shape: _common_pb2.Shape
    purpose: str
    consent_id: str
    public_key: _common_pb2.PaillierPublicKey
    threshold: int
    measures: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, resident_id: _Optional[str] = ..., shape: _Optional[_Union[_common_pb2.Shape, str]] = ..., purpose: _Optional[str] = ..., consent_id: _Optional[str] = ..., public_key: _Optional[_Union[_common_pb2.PaillierPublicKey, _Mapping]] = ..., threshold: _Optional[int] = ..., measures: _Optional[_Iterable[str]] = ...) -> None: ...

class EnterpriseQueryRequest(_message.Message):
    __slots__ = ("credit_code", "shape", "purpose", "public_key", "threshold", "measures", "consent_id", "departments")
    CREDIT_CODE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MEASURES_FIELD_NUMBER: _ClassVar[int]
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    DEPARTMENTS_FIELD_NUMBER: _ClassVar[int]
    credit_code: str
    shape: _common_pb2.Shape
    purpose: str
    public_key: _common_pb2.PaillierPublicKey
    threshold: int
    measures: _containers.RepeatedScalarFieldContainer[str]
    consent_id: str
    departments: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, credit_code: _Optional[str] = ..., shape: _Optional[_Union[_common_pb2.Shape, str]] = ..., purpose: _Optional[str] = ..., public_key: _Optional[_Union[_common_pb2.PaillierPublicKey, _Mapping]] = ..., threshold: _Optional[int] = ..., measures: _Optional[_Iterable[str]] = ..., consent_id: _Optional[str] = ..., departments: _Optional[_Iterable[str]] = ...) -> None: ...

class DepartmentStatus(_message.Message):
    __slots__ = ("department", "detail", "rules_version")
    DEPARTMENT_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    RULES_VERSION_FIELD_NUMBER: _ClassVar[int]
    department: str
    detail: str
    rules_version: str
    def __init__(self, department: _Optional[str] = ..., detail: _Optional[str] = ..., rules_version: _Optional[str] = ...) -> None: ...

class QueryResponse(_message.Message):
    __slots__ = ("query_id", "shape", "ciphertext", "slots", "slot_widths", "base", "answered", "missing", "partial", "candidates", "threshold", "measures", "flags")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    SLOT_WIDTHS_FIELD_NUMBER: _ClassVar[int]
    BASE_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MEASURES_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    shape: _common_pb2.Shape
    ciphertext: _common_pb2.Ciphertext
    slots: _containers.RepeatedScalarFieldContainer[str]
    slot_widths: _containers.RepeatedScalarFieldContainer[int]
    base: int
    answered: _containers.RepeatedCompositeFieldContainer[DepartmentStatus]
    missing: _containers.RepeatedCompositeFieldContainer[DepartmentStatus]
    partial: bool
    candidates: _containers.RepeatedCompositeFieldContainer[_common_pb2.Ciphertext]
    threshold: int
    measures: _containers.RepeatedScalarFieldContainer[str]
    flags: _containers.RepeatedCompositeFieldContainer[_common_pb2.Ciphertext]
    def __init__(self, query_id: _Optional[str] = ..., shape: _Optional[_Union[_common_pb2.Shape, str]] = ..., ciphertext: _Optional[_Union[_common_pb2.Ciphertext, _Mapping]] = ..., slots: _Optional[_Iterable[str]] = ..., slot_widths: _Optional[_Iterable[int]] = ..., base: _Optional[int] = ..., answered: _Optional[_Iterable[_Union[DepartmentStatus, _Mapping]]] = ..., missing: _Optional[_Iterable[_Union[DepartmentStatus, _Mapping]]] = ..., partial: _Optional[bool] = ..., candidates: _Optional[_Iterable[_Union[_common_pb2.Ciphertext, _Mapping]]] = ..., threshold: _Optional[int] = ..., measures: _Optional[_Iterable[str]] = ..., flags: _Optional[_Iterable[_Union[_common_pb2.Ciphertext, _Mapping]]] = ...) -> None: ...

class BatchHeader(_message.Message):
    __slots__ = ("subject_kind", "shape", "purpose", "public_key")
    SUBJECT_KIND_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    subject_kind: _common_pb2.SubjectKind
    shape: _common_pb2.Shape
    purpose: str
    public_key: _common_pb2.PaillierPublicKey
    def __init__(self, subject_kind: _Optional[_Union[_common_pb2.SubjectKind, str]] = ..., shape: _Optional[_Union[_common_pb2.Shape, str]] = ..., purpose: _Optional[str] = ..., public_key: _Optional[_Union[_common_pb2.PaillierPublicKey, _Mapping]] = ...) -> None: ...

class SubjectChunk(_message.Message):
    __slots__ = ("chunk", "subject_ids")
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_IDS_FIELD_NUMBER: _ClassVar[int]
    chunk: int
    subject_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, chunk: _Optional[int] = ..., subject_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class BatchQueryRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: BatchHeader
    chunk: SubjectChunk
    def __init__(self, header: _Optional[_Union[BatchHeader, _Mapping]] = ..., chunk: _Optional[_Union[SubjectChunk, _Mapping]] = ...) -> None: ...

class BatchLayout(_message.Message):
    __slots__ = ("query_id", "shape", "slots", "slot_widths", "subjects_per_ciphertext", "base", "offset", "departments")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    SLOT_WIDTHS_FIELD_NUMBER: _ClassVar[int]
    SUBJECTS_PER_CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    BASE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DEPARTMENTS_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    shape: _common_pb2.Shape
    slots: _containers.RepeatedScalarFieldContainer[str]
    slot_widths: _containers.RepeatedScalarFieldContainer[int]
    subjects_per_ciphertext: int
    base: int
    offset: int
    departments: _containers.RepeatedCompositeFieldContainer[DepartmentStatus]
    def __init__(self, query_id: _Optional[str] = ..., shape: _Optional[_Union[_common_pb2.Shape, str]] = ..., slots: _Optional[_Iterable[str]] = ..., slot_widths: _Optional[_Iterable[int]] = ..., subjects_per_ciphertext: _Optional[int] = ..., base: _Optional[int] = ..., offset: _Optional[int] = ..., departments: _Optional[_Iterable[_Union[DepartmentStatus, _Mapping]]] = ...) -> None: ...

class RefusedSubject(_message.Message):
    __slots__ = ("subject_id", "reason")
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    subject_id: str
    reason: str
    def __init__(self, subject_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ChunkResult(_message.Message):
    __slots__ = ("chunk", "subject_ids", "ciphertexts", "refused")
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_IDS_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXTS_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    chunk: int
    subject_ids: _containers.RepeatedScalarFieldContainer[str]
    ciphertexts: _containers.RepeatedCompositeFieldContainer[_common_pb2.Ciphertext]
    refused: _containers.RepeatedCompositeFieldContainer[RefusedSubject]
    def __init__(self, chunk: _Optional[int] = ..., subject_ids: _Optional[_Iterable[str]] = ..., ciphertexts: _Optional[_Iterable[_Union[_common_pb2.Ciphertext, _Mapping]]] = ..., refused: _Optional[_Iterable[_Union[RefusedSubject, _Mapping]]] = ...) -> None: ...

class BatchQueryResponse(_message.Message):
    __slots__ = ("layout", "chunk")
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    layout: BatchLayout
    chunk: ChunkResult
    def __init__(self, layout: _Optional[_Union[BatchLayout, _Mapping]] = ..., chunk: _Optional[_Union[ChunkResult, _Mapping]] = ...) -> None: ...

class StatsQueryRequest(_message.Message):
    __slots__ = ("subject_kind", "subject_ids", "purpose", "epsilon", "statistics", "public_key")
    SUBJECT_KIND_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_IDS_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    STATISTICS_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    subject_kind: _common_pb2.SubjectKind
    subject_ids: _containers.RepeatedScalarFieldContainer[str]
    purpose: str
    epsilon: str
    statistics: _containers.RepeatedScalarFieldContainer[str]
    public_key: _common_pb2.PaillierPublicKey
    def __init__(self, subject_kind: _Optional[_Union[_common_pb2.SubjectKind, str]] = ..., subject_ids: _Optional[_Iterable[str]] = ..., purpose: _Optional[str] = ..., epsilon: _Optional[str] = ..., statistics: _Optional[_Iterable[str]] = ..., public_key: _Optional[_Union[_common_pb2.PaillierPublicKey, _Mapping]] = ...) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("query_id", "statistics", "ciphertexts", "noise_scales", "cohort", "epsilon", "epsilon_left", "base", "answered")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    STATISTICS_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXTS_FIELD_NUMBER: _ClassVar[int]
    NOISE_SCALES_FIELD_NUMBER: _ClassVar[int]
    COHORT_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    EPSILON_LEFT_FIELD_NUMBER: _ClassVar[int]
    BASE_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    statistics: _containers.RepeatedScalarFieldContainer[str]
    ciphertexts: _containers.RepeatedCompositeFieldContainer[_common_pb2.Ciphertext]
    noise_scales: _containers.RepeatedScalarFieldContainer[str]
    cohort: int
    epsilon: str
    epsilon_left: str
    base: int
    answered: _containers.RepeatedCompositeFieldContainer[DepartmentStatus]
    def __init__(self, query_id: _Optional[str] = ..., statistics: _Optional[_Iterable[str]] = ..., ciphertexts: _Optional[_Iterable[_Union[_common_pb2.Ciphertext, _Mapping]]] = ..., noise_scales: _Optional[_Iterable[str]] = ..., cohort: _Optional[int] = ..., epsilon: _Optional[str] = ..., epsilon_left: _Optional[str] = ..., base: _Optional[int] = ..., answered: _Optional[_Iterable[_Union[DepartmentStatus, _Mapping]]] = ...) -> None: ...

class SearchListsRequest(_message.Message):
    __slots__ = ("subject_kind", "subject_id", "list", "page_size", "page_token")
    SUBJECT_KIND_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    LIST_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    subject_kind: _common_pb2.SubjectKind
    subject_id: str
    list: str
    page_size: int
    page_token: str
    def __init__(self, subject_kind: _Optional[_Union[_common_pb2.SubjectKind, str]] = ..., subject_id: _Optional[str] = ..., list: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class SearchListsResponse(_message.Message):
    __slots__ = ("entries", "next_page_token", "missing")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[_lists_pb2.PublicEntry]
    next_page_token: str
    missing: _containers.RepeatedCompositeFieldContainer[DepartmentStatus]
    def __init__(self, entries: _Optional[_Iterable[_Union[_lists_pb2.PublicEntry, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., missing: _Optional[_Iterable[_Union[DepartmentStatus, _Mapping]]] = ...) -> None: ...

class Consent(_message.Message):
    __slots__ = ("consent_id", "subject_id", "grantee", "purpose", "granted_at", "expires_at", "revoked_at", "receipt", "subject_kind")
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    GRANTEE_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    GRANTED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_KIND_FIELD_NUMBER: _ClassVar[int]
    consent_id: str
    subject_id: str
    grantee: str
    purpose: str
    granted_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    revoked_at: _timestamp_pb2.Timestamp
    receipt: str
    subject_kind: _common_pb2.SubjectKind
    def __init__(self, consent_id: _Optional[str] = ..., subject_id: _Optional[str] = ..., grantee: _Optional[str] = ..., purpose: _Optional[str] = ..., granted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revoked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., receipt: _Optional[str] = ..., subject_kind: _Optional[_Union[_common_pb2.SubjectKind, str]] = ...) -> None: ...

class GrantConsentRequest(_message.Message):
    __slots__ = ("subject_id", "grantee", "purpose", "expires_at", "subject_kind")
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    GRANTEE_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_KIND_FIELD_NUMBER: _ClassVar[int]
    subject_id: str
    grantee: str
    purpose: str
    expires_at: _timestamp_pb2.Timestamp
    subject_kind: _common_pb2.SubjectKind
    def __init__(self, subject_id: _Optional[str] = ..., grantee: _Optional[str] = ..., purpose: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., subject_kind: _Optional[_Union[_common_pb2.SubjectKind, str]] = ...) -> None: ...

class RevokeConsentRequest(_message.Message):
    __slots__ = ("consent_id", "subject_id")
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    consent_id: str
    subject_id: str
    def __init__(self, consent_id: _Optional[str] = ..., subject_id: _Optional[str] = ...) -> None: ...

class ListConsentsRequest(_message.Message):
    __slots__ = ("subject_id", "grantee")
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    GRANTEE_FIELD_NUMBER: _ClassVar[int]
    subject_id: str
    grantee: str
    def __init__(self, subject_id: _Optional[str] = ..., grantee: _Optional[str] = ...) -> None: ...

class ListConsentsResponse(_message.Message):
    __slots__ = ("consents",)
    CONSENTS_FIELD_NUMBER: _ClassVar[int]
    consents: _containers.RepeatedCompositeFieldContainer[Consent]
    def __init__(self, consents: _Optional[_Iterable[_Union[Consent, _Mapping]]] = ...) -> None: ...

class SubjectFileRequest(_message.Message):
    __slots__ = ("subject_kind", "subject_id", "purpose", "recipient_key", "nonce")
    SUBJECT_KIND_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_KEY_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    subject_kind: _common_pb2.SubjectKind
    subject_id: str
    purpose: str
    recipient_key: bytes
    nonce: bytes
    def __init__(self, subject_kind: _Optional[_Union[_common_pb2.SubjectKind, str]] = ..., subject_id: _Optional[str] = ..., purpose: _Optional[str] = ..., recipient_key: _Optional[bytes] = ..., nonce: _Optional[bytes] = ...) -> None: ...

class SubjectFileResponse(_message.Message):
    __slots__ = ("query_id", "files", "missing", "partial")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    files: _containers.RepeatedCompositeFieldContainer[_node_pb2.SealedSubjectFile]
    missing: _containers.RepeatedCompositeFieldContainer[DepartmentStatus]
    partial: bool
    def __init__(self, query_id: _Optional[str] = ..., files: _Optional[_Iterable[_Union[_node_pb2.SealedSubjectFile, _Mapping]]] = ..., missing: _Optional[_Iterable[_Union[DepartmentStatus, _Mapping]]] = ..., partial: _Optional[bool] = ...) -> None: ...

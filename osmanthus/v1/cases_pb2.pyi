import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from osmanthus.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CaseKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CASE_KIND_UNSPECIFIED: _ClassVar[CaseKind]
    CASE_KIND_OBJECTION: _ClassVar[CaseKind]
    CASE_KIND_REPAIR: _ClassVar[CaseKind]

class CaseTarget(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CASE_TARGET_UNSPECIFIED: _ClassVar[CaseTarget]
    CASE_TARGET_RECORD: _ClassVar[CaseTarget]
    CASE_TARGET_LIST_ENTRY: _ClassVar[CaseTarget]

class CaseGround(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CASE_GROUND_UNSPECIFIED: _ClassVar[CaseGround]
    CASE_GROUND_RECORD: _ClassVar[CaseGround]
    CASE_GROUND_ENTRY_CONTENT: _ClassVar[CaseGround]
    CASE_GROUND_ENTRY_PERIOD: _ClassVar[CaseGround]
    CASE_GROUND_FULFILLED: _ClassVar[CaseGround]

class CaseStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CASE_STATUS_UNSPECIFIED: _ClassVar[CaseStatus]
    CASE_STATUS_OPEN: _ClassVar[CaseStatus]
    CASE_STATUS_UPHELD: _ClassVar[CaseStatus]
    CASE_STATUS_REJECTED: _ClassVar[CaseStatus]

class CaseRemedy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CASE_REMEDY_UNSPECIFIED: _ClassVar[CaseRemedy]
    CASE_REMEDY_WITHDRAW: _ClassVar[CaseRemedy]
    CASE_REMEDY_CORRECT: _ClassVar[CaseRemedy]
CASE_KIND_UNSPECIFIED: CaseKind
CASE_KIND_OBJECTION: CaseKind
CASE_KIND_REPAIR: CaseKind
CASE_TARGET_UNSPECIFIED: CaseTarget
CASE_TARGET_RECORD: CaseTarget
CASE_TARGET_LIST_ENTRY: CaseTarget
CASE_GROUND_UNSPECIFIED: CaseGround
CASE_GROUND_RECORD: CaseGround
CASE_GROUND_ENTRY_CONTENT: CaseGround
CASE_GROUND_ENTRY_PERIOD: CaseGround
CASE_GROUND_FULFILLED: CaseGround
CASE_STATUS_UNSPECIFIED: CaseStatus
CASE_STATUS_OPEN: CaseStatus
CASE_STATUS_UPHELD: CaseStatus
CASE_STATUS_REJECTED: CaseStatus
CASE_REMEDY_UNSPECIFIED: CaseRemedy
CASE_REMEDY_WITHDRAW: CaseRemedy
CASE_REMEDY_CORRECT: CaseRemedy

class CaseCorrection(_message.Message):
    __slots__ = ("quantity", "event_start", "event_end", "window_end")
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    EVENT_START_FIELD_NUMBER: _ClassVar[int]
    EVENT_END_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    quantity: int
    event_start: str
    event_end: str
    window_end: str
    def __init__(self, quantity: _Optional[int] = ..., event_start: _Optional[str] = ..., event_end: _Optional[str] = ..., window_end: _Optional[str] = ...) -> None: ...

class CaseEvent(_message.Message):
    __slots__ = ("at", "event", "actor", "detail")
    AT_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    at: _timestamp_pb2.Timestamp
    event: str
    actor: str
    detail: str
    def __init__(self, at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., event: _Optional[str] = ..., actor: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class AttachmentInfo(_message.Message):
    __slots__ = ("index", "media_type", "name", "size", "sha256", "deleted")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    index: int
    media_type: str
    name: str
    size: int
    sha256: str
    deleted: bool
    def __init__(self, index: _Optional[int] = ..., media_type: _Optional[str] = ..., name: _Optional[str] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ..., deleted: _Optional[bool] = ...) -> None: ...

class Case(_message.Message):
    __slots__ = ("case_id", "department", "kind", "ground", "target", "target_id", "subject_kind", "subject_id", "statement", "commitment_letter", "letter_sha256", "filed_at", "decide_by", "reply_by", "overdue", "status", "decided_at", "decision_reason", "remedy", "correction", "attachments", "events")
    CASE_ID_FIELD_NUMBER: _ClassVar[int]
    DEPARTMENT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    GROUND_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    TARGET_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_KIND_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    STATEMENT_FIELD_NUMBER: _ClassVar[int]
    COMMITMENT_LETTER_FIELD_NUMBER: _ClassVar[int]
    LETTER_SHA256_FIELD_NUMBER: _ClassVar[int]
    FILED_AT_FIELD_NUMBER: _ClassVar[int]
    DECIDE_BY_FIELD_NUMBER: _ClassVar[int]
    REPLY_BY_FIELD_NUMBER: _ClassVar[int]
    OVERDUE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_FIELD_NUMBER: _ClassVar[int]
    DECISION_REASON_FIELD_NUMBER: _ClassVar[int]
    REMEDY_FIELD_NUMBER: _ClassVar[int]
    CORRECTION_FIELD_NUMBER: _ClassVar[int]
    ATTACHMENTS_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    case_id: str
    department: str
    kind: CaseKind
    ground: CaseGround
    target: CaseTarget
    target_id: str
    subject_kind: _common_pb2.SubjectKind
    subject_id: str
    statement: str
    commitment_letter: str
    letter_sha256: str
    filed_at: _timestamp_pb2.Timestamp
    decide_by: str
    reply_by: str
    overdue: bool
    status: CaseStatus
    decided_at: _timestamp_pb2.Timestamp
    decision_reason: str
    remedy: CaseRemedy
    correction: CaseCorrection
    attachments: _containers.RepeatedCompositeFieldContainer[AttachmentInfo]
    events: _containers.RepeatedCompositeFieldContainer[CaseEvent]
    def __init__(self, case_id: _Optional[str] = ..., department: _Optional[str] = ..., kind: _Optional[_Union[CaseKind, str]] = ..., ground: _Optional[_Union[CaseGround, str]] = ..., target: _Optional[_Union[CaseTarget, str]] = ..., target_id: _Optional[str] = ..., subject_kind: _Optional[_Union[_common_pb2.SubjectKind, str]] = ..., subject_id: _Optional[str] = ..., statement: _Optional[str] = ..., commitment_letter: _Optional[str] = ..., letter_sha256: _Optional[str] = ..., filed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., decide_by: _Optional[str] = ..., reply_by: _Optional[str] = ..., overdue: _Optional[bool] = ..., status: _Optional[_Union[CaseStatus, str]] = ..., decided_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., decision_reason: _Optional[str] = ..., remedy: _Optional[_Union[CaseRemedy, str]] = ..., correction: _Optional[_Union[CaseCorrection, _Mapping]] = ..., attachments: _Optional[_Iterable[_Union[AttachmentInfo, _Mapping]]] = ..., events: _Optional[_Iterable[_Union[CaseEvent, _Mapping]]] = ...) -> None: ...

class ListCasesRequest(_message.Message):
    __slots__ = ("status", "overdue_only", "page_size", "page_token")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    OVERDUE_ONLY_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    status: CaseStatus
    overdue_only: bool
    page_size: int
    page_token: str
    def __init__(self, status: _Optional[_Union[CaseStatus, str]] = ..., overdue_only: _Optional[bool] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListCasesResponse(_message.Message):
    __slots__ = ("cases", "next_page_token")
    CASES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    cases: _containers.RepeatedCompositeFieldContainer[Case]
    next_page_token: str
    def __init__(self, cases: _Optional[_Iterable[_Union[Case, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetCaseRequest(_message.Message):
    __slots__ = ("case_id",)
    CASE_ID_FIELD_NUMBER: _ClassVar[int]
    case_id: str
    def __init__(self, case_id: _Optional[str] = ...) -> None: ...

class GetAttachmentRequest(_message.Message):
    __slots__ = ("case_id", "index")
    CASE_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    case_id: str
    index: int
    def __init__(self, case_id: _Optional[str] = ..., index: _Optional[int] = ...) -> None: ...

class Attachment(_message.Message):
    __slots__ = ("info", "content")
    INFO_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    info: AttachmentInfo
    content: bytes
    def __init__(self, info: _Optional[_Union[AttachmentInfo, _Mapping]] = ..., content: _Optional[bytes] = ...) -> None: ...

class DecideCaseRequest(_message.Message):
    __slots__ = ("case_id", "outcome", "reason", "remedy", "correction")
    CASE_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REMEDY_FIELD_NUMBER: _ClassVar[int]
    CORRECTION_FIELD_NUMBER: _ClassVar[int]
    case_id: str
    outcome: CaseStatus
    reason: str
    remedy: CaseRemedy
    correction: CaseCorrection
    def __init__(self, case_id: _Optional[str] = ..., outcome: _Optional[_Union[CaseStatus, str]] = ..., reason: _Optional[str] = ..., remedy: _Optional[_Union[CaseRemedy, str]] = ..., correction: _Optional[_Union[CaseCorrection, _Mapping]] = ...) -> None: ...

class FileCaseRequest(_message.Message):
    __slots__ = ("subject_kind", "subject_id", "purpose", "department", "case_nonce", "sealed_case", "sender_key", "sender_proof")
    SUBJECT_KIND_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    DEPARTMENT_FIELD_NUMBER: _ClassVar[int]
    CASE_NONCE_FIELD_NUMBER: _ClassVar[int]
    SEALED_CASE_FIELD_NUMBER: _ClassVar[int]
    SENDER_KEY_FIELD_NUMBER: _ClassVar[int]
    SENDER_PROOF_FIELD_NUMBER: _ClassVar[int]
    subject_kind: _common_pb2.SubjectKind
    subject_id: str
    purpose: str
    department: str
    case_nonce: bytes
    sealed_case: bytes
    sender_key: bytes
    sender_proof: bytes
    def __init__(self, subject_kind: _Optional[_Union[_common_pb2.SubjectKind, str]] = ..., subject_id: _Optional[str] = ..., purpose: _Optional[str] = ..., department: _Optional[str] = ..., case_nonce: _Optional[bytes] = ..., sealed_case: _Optional[bytes] = ..., sender_key: _Optional[bytes] = ..., sender_proof: _Optional[bytes] = ...) -> None: ...

class NodeFileCaseRequest(_message.Message):
    __slots__ = ("query_id", "subject_kind", "subject_id", "purpose", "case_nonce", "sealed_case", "sender_key", "sender_proof")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_KIND_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    CASE_NONCE_FIELD_NUMBER: _ClassVar[int]
    SEALED_CASE_FIELD_NUMBER: _ClassVar[int]
    SENDER_KEY_FIELD_NUMBER: _ClassVar[int]
    SENDER_PROOF_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    subject_kind: _common_pb2.SubjectKind
    subject_id: str
    purpose: str
    case_nonce: bytes
    sealed_case: bytes
    sender_key: bytes
    sender_proof: bytes
    def __init__(self, query_id: _Optional[str] = ..., subject_kind: _Optional[_Union[_common_pb2.SubjectKind, str]] = ..., subject_id: _Optional[str] = ..., purpose: _Optional[str] = ..., case_nonce: _Optional[bytes] = ..., sealed_case: _Optional[bytes] = ..., sender_key: _Optional[bytes] = ..., sender_proof: _Optional[bytes] = ...) -> None: ...

class CaseReceipt(_message.Message):
    __slots__ = ("case_id", "department", "filed_at", "decide_by", "reply_by", "duplicate")
    CASE_ID_FIELD_NUMBER: _ClassVar[int]
    DEPARTMENT_FIELD_NUMBER: _ClassVar[int]
    FILED_AT_FIELD_NUMBER: _ClassVar[int]
    DECIDE_BY_FIELD_NUMBER: _ClassVar[int]
    REPLY_BY_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    case_id: str
    department: str
    filed_at: _timestamp_pb2.Timestamp
    decide_by: str
    reply_by: str
    duplicate: bool
    def __init__(self, case_id: _Optional[str] = ..., department: _Optional[str] = ..., filed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., decide_by: _Optional[str] = ..., reply_by: _Optional[str] = ..., duplicate: _Optional[bool] = ...) -> None: ...

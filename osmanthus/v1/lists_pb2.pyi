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

class ListColour(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LIST_COLOUR_UNSPECIFIED: _ClassVar[ListColour]
    LIST_COLOUR_RED: _ClassVar[ListColour]
    LIST_COLOUR_BLACK: _ClassVar[ListColour]

class WithdrawReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WITHDRAW_REASON_UNSPECIFIED: _ClassVar[WithdrawReason]
    WITHDRAW_REASON_REPAIRED: _ClassVar[WithdrawReason]
    WITHDRAW_REASON_REVOKED: _ClassVar[WithdrawReason]
    WITHDRAW_REASON_ERROR: _ClassVar[WithdrawReason]

class EntryStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENTRY_STATUS_UNSPECIFIED: _ClassVar[EntryStatus]
    ENTRY_STATUS_SCHEDULED: _ClassVar[EntryStatus]
    ENTRY_STATUS_IN_VIEW: _ClassVar[EntryStatus]
    ENTRY_STATUS_EXPIRED: _ClassVar[EntryStatus]
    ENTRY_STATUS_WITHDRAWN: _ClassVar[EntryStatus]

class ListChangeKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LIST_CHANGE_KIND_UNSPECIFIED: _ClassVar[ListChangeKind]
    LIST_CHANGE_KIND_PUBLISHED: _ClassVar[ListChangeKind]
    LIST_CHANGE_KIND_WITHDRAWN: _ClassVar[ListChangeKind]
LIST_COLOUR_UNSPECIFIED: ListColour
LIST_COLOUR_RED: ListColour
LIST_COLOUR_BLACK: ListColour
WITHDRAW_REASON_UNSPECIFIED: WithdrawReason
WITHDRAW_REASON_REPAIRED: WithdrawReason
WITHDRAW_REASON_REVOKED: WithdrawReason
WITHDRAW_REASON_ERROR: WithdrawReason
ENTRY_STATUS_UNSPECIFIED: EntryStatus
ENTRY_STATUS_SCHEDULED: EntryStatus
ENTRY_STATUS_IN_VIEW: EntryStatus
ENTRY_STATUS_EXPIRED: EntryStatus
ENTRY_STATUS_WITHDRAWN: EntryStatus
LIST_CHANGE_KIND_UNSPECIFIED: ListChangeKind
LIST_CHANGE_KIND_PUBLISHED: ListChangeKind
LIST_CHANGE_KIND_WITHDRAWN: ListChangeKind

class PublicEntry(_message.Message):
    __slots__ = ("entry_id", "department", "list", "colour", "subject_kind", "subject_id", "subject_name", "legal_basis", "reason", "window_start", "window_end", "facilitation_class")
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    DEPARTMENT_FIELD_NUMBER: _ClassVar[int]
    LIST_FIELD_NUMBER: _ClassVar[int]
    COLOUR_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_KIND_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_NAME_FIELD_NUMBER: _ClassVar[int]
    LEGAL_BASIS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    FACILITATION_CLASS_FIELD_NUMBER: _ClassVar[int]
    entry_id: str
    department: str
    list: str
    colour: ListColour
    subject_kind: _common_pb2.SubjectKind
    subject_id: str
    subject_name: str
    legal_basis: str
    reason: str
    window_start: str
    window_end: str
    facilitation_class: str
    def __init__(self, entry_id: _Optional[str] = ..., department: _Optional[str] = ..., list: _Optional[str] = ..., colour: _Optional[_Union[ListColour, str]] = ..., subject_kind: _Optional[_Union[_common_pb2.SubjectKind, str]] = ..., subject_id: _Optional[str] = ..., subject_name: _Optional[str] = ..., legal_basis: _Optional[str] = ..., reason: _Optional[str] = ..., window_start: _Optional[str] = ..., window_end: _Optional[str] = ..., facilitation_class: _Optional[str] = ...) -> None: ...

class NewEntry(_message.Message):
    __slots__ = ("entry_id", "list", "subject_kind", "subject_id", "subject_name", "legal_basis", "reason", "window_start", "window_end")
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    LIST_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_KIND_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_NAME_FIELD_NUMBER: _ClassVar[int]
    LEGAL_BASIS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    entry_id: str
    list: str
    subject_kind: _common_pb2.SubjectKind
    subject_id: str
    subject_name: str
    legal_basis: str
    reason: str
    window_start: str
    window_end: str
    def __init__(self, entry_id: _Optional[str] = ..., list: _Optional[str] = ..., subject_kind: _Optional[_Union[_common_pb2.SubjectKind, str]] = ..., subject_id: _Optional[str] = ..., subject_name: _Optional[str] = ..., legal_basis: _Optional[str] = ..., reason: _Optional[str] = ..., window_start: _Optional[str] = ..., window_end: _Optional[str] = ...) -> None: ...

class ListEvent(_message.Message):
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

class ListEntry(_message.Message):
    __slots__ = ("entry", "status", "withdraw_reason", "withdraw_reference", "events")
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    WITHDRAW_REASON_FIELD_NUMBER: _ClassVar[int]
    WITHDRAW_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    entry: PublicEntry
    status: EntryStatus
    withdraw_reason: WithdrawReason
    withdraw_reference: str
    events: _containers.RepeatedCompositeFieldContainer[ListEvent]
    def __init__(self, entry: _Optional[_Union[PublicEntry, _Mapping]] = ..., status: _Optional[_Union[EntryStatus, str]] = ..., withdraw_reason: _Optional[_Union[WithdrawReason, str]] = ..., withdraw_reference: _Optional[str] = ..., events: _Optional[_Iterable[_Union[ListEvent, _Mapping]]] = ...) -> None: ...

class PublishEntriesRequest(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[NewEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[NewEntry, _Mapping]]] = ...) -> None: ...

class PublishEntriesResponse(_message.Message):
    __slots__ = ("published", "unchanged")
    PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    published: int
    unchanged: int
    def __init__(self, published: _Optional[int] = ..., unchanged: _Optional[int] = ...) -> None: ...

class WithdrawEntryRequest(_message.Message):
    __slots__ = ("entry_id", "reason", "reference")
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    entry_id: str
    reason: WithdrawReason
    reference: str
    def __init__(self, entry_id: _Optional[str] = ..., reason: _Optional[_Union[WithdrawReason, str]] = ..., reference: _Optional[str] = ...) -> None: ...

class HistoryRequest(_message.Message):
    __slots__ = ("subject_kind", "subject_id")
    SUBJECT_KIND_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    subject_kind: _common_pb2.SubjectKind
    subject_id: str
    def __init__(self, subject_kind: _Optional[_Union[_common_pb2.SubjectKind, str]] = ..., subject_id: _Optional[str] = ...) -> None: ...

class HistoryResponse(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[ListEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[ListEntry, _Mapping]]] = ...) -> None: ...

class PublicEntriesRequest(_message.Message):
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

class PublicEntriesResponse(_message.Message):
    __slots__ = ("entries", "next_page_token")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[PublicEntry]
    next_page_token: str
    def __init__(self, entries: _Optional[_Iterable[_Union[PublicEntry, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListChange(_message.Message):
    __slots__ = ("cursor", "entry", "event", "at", "withdraw_reason", "withheld", "entry_id")
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    WITHDRAW_REASON_FIELD_NUMBER: _ClassVar[int]
    WITHHELD_FIELD_NUMBER: _ClassVar[int]
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    cursor: str
    entry: PublicEntry
    event: ListChangeKind
    at: _timestamp_pb2.Timestamp
    withdraw_reason: WithdrawReason
    withheld: str
    entry_id: str
    def __init__(self, cursor: _Optional[str] = ..., entry: _Optional[_Union[PublicEntry, _Mapping]] = ..., event: _Optional[_Union[ListChangeKind, str]] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., withdraw_reason: _Optional[_Union[WithdrawReason, str]] = ..., withheld: _Optional[str] = ..., entry_id: _Optional[str] = ...) -> None: ...

class ListChangesRequest(_message.Message):
    __slots__ = ("department", "after", "page_size")
    DEPARTMENT_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    department: str
    after: str
    page_size: int
    def __init__(self, department: _Optional[str] = ..., after: _Optional[str] = ..., page_size: _Optional[int] = ...) -> None: ...

class ListChangesResponse(_message.Message):
    __slots__ = ("department", "events", "next_cursor", "more", "feed_id")
    DEPARTMENT_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    FEED_ID_FIELD_NUMBER: _ClassVar[int]
    department: str
    events: _containers.RepeatedCompositeFieldContainer[ListChange]
    next_cursor: str
    more: bool
    feed_id: str
    def __init__(self, department: _Optional[str] = ..., events: _Optional[_Iterable[_Union[ListChange, _Mapping]]] = ..., next_cursor: _Optional[str] = ..., more: _Optional[bool] = ..., feed_id: _Optional[str] = ...) -> None: ...

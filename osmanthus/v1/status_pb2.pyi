from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CoordinatorStatus(_message.Message):
    __slots__ = ("software_version", "catalogue_digest", "policy_hash", "audit_entries", "audit_checkpoints", "checkpoint_size", "checkpoint_age_s", "nodes", "witnessing", "audit_failure")
    SOFTWARE_VERSION_FIELD_NUMBER: _ClassVar[int]
    CATALOGUE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    POLICY_HASH_FIELD_NUMBER: _ClassVar[int]
    AUDIT_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    AUDIT_CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_SIZE_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_AGE_S_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    WITNESSING_FIELD_NUMBER: _ClassVar[int]
    AUDIT_FAILURE_FIELD_NUMBER: _ClassVar[int]
    software_version: str
    catalogue_digest: str
    policy_hash: str
    audit_entries: int
    audit_checkpoints: bool
    checkpoint_size: int
    checkpoint_age_s: float
    nodes: _containers.RepeatedCompositeFieldContainer[StatusNode]
    witnessing: bool
    audit_failure: str
    def __init__(self, software_version: _Optional[str] = ..., catalogue_digest: _Optional[str] = ..., policy_hash: _Optional[str] = ..., audit_entries: _Optional[int] = ..., audit_checkpoints: _Optional[bool] = ..., checkpoint_size: _Optional[int] = ..., checkpoint_age_s: _Optional[float] = ..., nodes: _Optional[_Iterable[_Union[StatusNode, _Mapping]]] = ..., witnessing: _Optional[bool] = ..., audit_failure: _Optional[str] = ...) -> None: ...

class StatusNode(_message.Message):
    __slots__ = ("department", "address", "witnessed", "cosigned_size", "alarms")
    DEPARTMENT_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    WITNESSED_FIELD_NUMBER: _ClassVar[int]
    COSIGNED_SIZE_FIELD_NUMBER: _ClassVar[int]
    ALARMS_FIELD_NUMBER: _ClassVar[int]
    department: str
    address: str
    witnessed: bool
    cosigned_size: int
    alarms: _containers.RepeatedCompositeFieldContainer[WitnessAlarmCount]
    def __init__(self, department: _Optional[str] = ..., address: _Optional[str] = ..., witnessed: _Optional[bool] = ..., cosigned_size: _Optional[int] = ..., alarms: _Optional[_Iterable[_Union[WitnessAlarmCount, _Mapping]]] = ...) -> None: ...

class WitnessAlarmCount(_message.Message):
    __slots__ = ("reason", "count")
    REASON_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    reason: str
    count: int
    def __init__(self, reason: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class SubjectKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SUBJECT_KIND_UNSPECIFIED: _ClassVar[SubjectKind]
    SUBJECT_KIND_PERSON: _ClassVar[SubjectKind]
    SUBJECT_KIND_ENTERPRISE: _ClassVar[SubjectKind]

class Shape(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SHAPE_UNSPECIFIED: _ClassVar[Shape]
    SHAPE_BREAKDOWN: _ClassVar[Shape]
    SHAPE_TOTAL: _ClassVar[Shape]
    SHAPE_THRESHOLD: _ClassVar[Shape]
    SHAPE_FLAGS: _ClassVar[Shape]
SUBJECT_KIND_UNSPECIFIED: SubjectKind
SUBJECT_KIND_PERSON: SubjectKind
SUBJECT_KIND_ENTERPRISE: SubjectKind
SHAPE_UNSPECIFIED: Shape
SHAPE_BREAKDOWN: Shape
SHAPE_TOTAL: Shape
SHAPE_THRESHOLD: Shape
SHAPE_FLAGS: Shape

class PaillierPublicKey(_message.Message):
    __slots__ = ("n", "modulus_proof")
    N_FIELD_NUMBER: _ClassVar[int]
    MODULUS_PROOF_FIELD_NUMBER: _ClassVar[int]
    n: bytes
    modulus_proof: bytes
    def __init__(self, n: _Optional[bytes] = ..., modulus_proof: _Optional[bytes] = ...) -> None: ...

class Ciphertext(_message.Message):
    __slots__ = ("value",)
    VALUE_FIELD_NUMBER: _ClassVar[int]
    value: bytes
    def __init__(self, value: _Optional[bytes] = ...) -> None: ...

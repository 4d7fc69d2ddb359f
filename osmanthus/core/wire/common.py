"""Wire values every Osmanthus API shares: subject kinds, shapes, times, department statuses.

The rest of `osmanthus.core.wire` builds on these: each module holds one API's request and result
types and their conversions to and from protobuf messages, in `x_message` / `x_from_message`
style pairs that both ends of a call use (after flwr's serde).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from google.protobuf import timestamp_pb2

from osmanthus.core.catalogue import Catalogue
from osmanthus.core.errors import InvalidArgument
from osmanthus.core.types import DepartmentId, DepartmentStatus, Shape, SubjectKind
from osmanthus.v1 import common_pb2

T = TypeVar("T")

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


@dataclass(frozen=True, kw_only=True)
class RequestLimits:
    """The most entries each catalogue-sized repeated request field may hold: its natural size.

    A 1 MiB message holds ~170,000 short strings; a server refuses a repeated field longer than
    anything an honest peer sends (`capped`) before it reads one entry, authenticates or
    decides, so that no check ever meets more entries than the catalogue has. Both ends derive
    the limits from the catalogue they share.
    """

    #: departments a query may name: the catalogue's departments
    departments: int
    #: joint-punishment measures a FLAGS query may ask: the catalogue's measures
    measures: int
    #: slot names, widths or bounds of a layout, and statistics of a STATS query: the most
    #: BREAKDOWN slots of any subject kind
    slots: int

    @classmethod
    def for_catalogue(cls, catalogue: Catalogue) -> RequestLimits:
        return cls(
            departments=len(catalogue.departments),
            measures=len(catalogue.measures),
            slots=max((len(m.slot_names()) for m in catalogue.models.values()), default=0),
        )


def capped(values: Sequence[T], *, limit: int, field: str, natural: str) -> tuple[T, ...]:
    """`values` as a tuple; InvalidArgument naming `field` and the cap, before reading any entry,
    if there are more than `limit` (`natural` says what the cap is, e.g. "the catalogue's
    measures")."""
    # len() of a repeated field is O(1): the refusal costs nothing however long the field is
    if len(values) > limit:
        raise InvalidArgument(
            f"{len(values)} entries; at most {limit} ({natural})",
            field=field,
        )
    return tuple(values)


def kind_from_pb(value: int) -> SubjectKind | None:
    return _KIND_FROM_PB.get(value)


def consent_kind_from_pb(value: int) -> SubjectKind | None:
    """A consent's subject kind, None if unknown: unspecified is a person, since consents
    were persons' only before enterprises could give one (a tax-bank loan's)."""
    if value == common_pb2.SUBJECT_KIND_UNSPECIFIED:
        return SubjectKind.PERSON
    return _KIND_FROM_PB.get(value)


def shape_from_pb(value: int) -> Shape | None:
    return _SHAPE_FROM_PB.get(value)


def kind_to_pb(kind: SubjectKind | None) -> common_pb2.SubjectKind:
    return KIND_TO_PB[kind] if kind else common_pb2.SUBJECT_KIND_UNSPECIFIED


def shape_to_pb(shape: Shape | None) -> common_pb2.Shape:
    return SHAPE_TO_PB[shape] if shape else common_pb2.SHAPE_UNSPECIFIED


def required(value: T | None, what: str, field: str) -> T:
    if value is None:
        raise InvalidArgument(f"the peer sent no {what}", field=field)
    return value


def timestamp_to_proto(value: datetime.datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value.astimezone(datetime.UTC))
    return ts


def timestamp_from_proto(message: timestamp_pb2.Timestamp, *, field: str) -> datetime.datetime:
    """An aware UTC time; InvalidArgument naming `field` for an unset or out-of-range one."""
    if message.seconds == 0 and message.nanos == 0:
        raise InvalidArgument("a time is required", field=field)
    try:
        return message.ToDatetime(tzinfo=datetime.UTC)
    except (ValueError, OverflowError):
        raise InvalidArgument("is not a time", field=field) from None


def statuses_from_proto(items: Iterable[object]) -> tuple[DepartmentStatus, ...]:
    """DepartmentStatus messages of any API (they share fields) as typed values."""
    return tuple(
        DepartmentStatus(DepartmentId(s.department), s.detail, s.rules_version)  # type: ignore[attr-defined]
        for s in items
    )

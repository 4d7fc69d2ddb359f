"""Red and black list entries as every package sees them: validation, windows, status, masking."""

from __future__ import annotations

import datetime
import enum
import re
import unicodedata
from dataclasses import dataclass
from typing import Final, NewType

from osmanthus.catalogue import Catalogue, ListColour, ListType
from osmanthus.errors import InvalidArgument
from osmanthus.ids import mask_subject, validate_subject
from osmanthus.types import DepartmentId, SubjectId, SubjectKind

EntryId = NewType("EntryId", str)

#: entries one publication may carry; a larger file is sent in several publications
MAX_ENTRIES_PER_PUBLISH: Final = 10_000
#: entries one page of a public query holds at most, and when the caller names no size
MAX_PAGE_SIZE: Final = 100
DEFAULT_PAGE_SIZE: Final = 20
MAX_NAME_LENGTH: Final = 200
MAX_REASON_LENGTH: Final = 1_000
MAX_LEGAL_BASIS_LENGTH: Final = 500
MAX_REFERENCE_LENGTH: Final = 200
#: the department's own reference: printable, no spaces, so it survives CSV and logs unchanged
ENTRY_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}")
#: how far ahead a window may start: a publication is a decision already taken, not a plan
MAX_START_AHEAD_DAYS: Final = 366


class EntryStatus(enum.Enum):
    """Where an entry stands on a given day (China Standard Time)."""

    SCHEDULED = "scheduled"
    IN_VIEW = "in_view"
    EXPIRED = "expired"
    WITHDRAWN = "withdrawn"


class WithdrawReason(enum.Enum):
    """Why an entry left public view before its window ended."""

    REPAIRED = "repaired"  # black lists: the subject completed credit repair
    REVOKED = "revoked"  # red lists: the honour or certification was revoked
    ERROR = "error"  # either: published in error


@dataclass(frozen=True)
class NewEntry:
    """An entry as a department's list officer publishes it (subject id in full)."""

    entry_id: EntryId
    list: str
    subject_kind: SubjectKind
    subject_id: SubjectId
    subject_name: str
    legal_basis: str
    reason: str
    window_start: datetime.date
    window_end: datetime.date


@dataclass(frozen=True)
class PublicEntry:
    """The fields of an entry the law publishes; `subject_id` is masked for a person."""

    entry_id: EntryId
    department: DepartmentId
    list: str
    colour: ListColour
    subject_kind: SubjectKind
    subject_id: str
    subject_name: str
    legal_basis: str
    reason: str
    window_start: datetime.date
    window_end: datetime.date
    facilitation_class: str | None = None


@dataclass(frozen=True)
class ListEvent:
    at: datetime.datetime  # UTC
    event: str  # "published" or "withdrawn"
    actor: str  # the list officer's certificate name
    detail: str


@dataclass(frozen=True)
class ListEntry:
    """An entry with everything its department knows of it; `entry.subject_id` is in full."""

    entry: PublicEntry
    status: EntryStatus
    withdraw_reason: WithdrawReason | None
    withdraw_reference: str
    events: tuple[ListEvent, ...]


def status_of(
    window_start: datetime.date,
    window_end: datetime.date,
    *,
    withdrawn: bool,
    today: datetime.date,
) -> EntryStatus:
    """An entry is in view from the first to the last day of its window, both included."""
    if withdrawn:
        return EntryStatus.WITHDRAWN
    if today < window_start:
        return EntryStatus.SCHEDULED
    if today > window_end:
        return EntryStatus.EXPIRED
    return EntryStatus.IN_VIEW


def public_subject(kind: SubjectKind, subject_id: str) -> str:
    """The subject id as a public list shows it: a person's masked, an enterprise's in full."""
    return mask_subject(subject_id) if kind is SubjectKind.PERSON else subject_id


def reason_allowed(colour: ListColour, reason: WithdrawReason) -> bool:
    """Credit repair takes an entry off a black list, revocation off a red one; errors off both."""
    if reason is WithdrawReason.ERROR:
        return True
    return (reason is WithdrawReason.REPAIRED) == (colour is ListColour.BLACK)


def check_text(value: str, *, field: str, limit: int, required: bool = True) -> str:
    """`value` stripped, if it is printable text of at most `limit` characters."""
    text = value.strip() if isinstance(value, str) else ""
    if not text:
        if required:
            raise InvalidArgument("is empty", field=field)
        return ""
    if len(text) > limit:
        raise InvalidArgument(f"is {len(text)} characters long; at most {limit}", field=field)
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in text):
        raise InvalidArgument("contains control or format characters", field=field)
    return text


def parse_date(value: str, *, field: str) -> datetime.date:
    """An ISO date (YYYY-MM-DD)."""
    if not isinstance(value, str) or not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
        raise InvalidArgument(f"{str(value)[:20]!r} is not a date (YYYY-MM-DD)", field=field)
    try:
        return datetime.date.fromisoformat(value)
    except ValueError:
        raise InvalidArgument(f"{value!r} is not a calendar date", field=field) from None


def validate_new_entry(
    *,
    entry_id: str,
    list_id: str,
    subject_kind: SubjectKind,
    subject_id: str,
    subject_name: str,
    legal_basis: str,
    reason: str,
    window_start: str,
    window_end: str,
    catalogue: Catalogue,
    department: DepartmentId,
    today: datetime.date,
    prefix: str = "",
) -> NewEntry:
    """A checked NewEntry; InvalidArgument names the field (after `prefix`) and the problem."""
    if not isinstance(entry_id, str) or not ENTRY_ID_PATTERN.fullmatch(entry_id):
        raise InvalidArgument(
            f"{str(entry_id)[:70]!r} is not an entry id: 1 to 64 letters, digits or . _ : / -, "
            "starting with a letter or digit",
            field=f"{prefix}entry_id",
        )
    list_type = list_of(catalogue, list_id, department=department, field=f"{prefix}list")
    if subject_kind not in list_type.subject_kinds:
        kinds = " or ".join(sorted(k.value for k in list_type.subject_kinds))
        raise InvalidArgument(
            f"{list_type.id} lists {kinds}s, not {subject_kind.value}s",
            field=f"{prefix}subject_kind",
        )
    subject = validate_subject(subject_kind, subject_id, field=f"{prefix}subject_id")
    start = parse_date(window_start, field=f"{prefix}window_start")
    end = parse_date(window_end, field=f"{prefix}window_end")
    if end < start:
        raise InvalidArgument(
            f"{end} is before the window's start {start}", field=f"{prefix}window_end"
        )
    days = (end - start).days + 1
    if days > list_type.max_window_days:
        raise InvalidArgument(
            f"the window is {days} days; {list_type.id} allows at most {list_type.max_window_days}",
            field=f"{prefix}window_end",
        )
    if (start - today).days > MAX_START_AHEAD_DAYS:
        raise InvalidArgument(
            f"{start} is more than {MAX_START_AHEAD_DAYS} days ahead",
            field=f"{prefix}window_start",
        )
    basis = check_text(
        legal_basis,
        field=f"{prefix}legal_basis",
        limit=MAX_LEGAL_BASIS_LENGTH,
        required=False,
    )
    return NewEntry(
        entry_id=EntryId(entry_id),
        list=list_type.id,
        subject_kind=subject_kind,
        subject_id=subject,
        subject_name=check_text(subject_name, field=f"{prefix}subject_name", limit=MAX_NAME_LENGTH),
        legal_basis=basis or list_type.legal_basis,
        reason=check_text(reason, field=f"{prefix}reason", limit=MAX_REASON_LENGTH),
        window_start=start,
        window_end=end,
    )


def list_of(
    catalogue: Catalogue, list_id: str, *, department: str | None, field: str = "list"
) -> ListType:
    """The catalogue's list `list_id`, which `department` (when given) must publish."""
    if not isinstance(list_id, str) or not list_id:
        raise InvalidArgument("is empty", field=field)
    found = next((t for t in catalogue.lists if t.id == list_id), None)
    if found is None:
        known = ", ".join(t.id for t in catalogue.lists) or "none"
        raise InvalidArgument(f"{list_id[:40]!r} is not a list; known: {known}", field=field)
    if department is not None and found.department != department:
        own = ", ".join(t.id for t in catalogue.lists_of(department)) or "none"
        raise InvalidArgument(
            f"{found.id} is published by {found.department}, not {department} "
            f"({department} publishes: {own})",
            field=field,
        )
    return found


def page_size(value: int, *, field: str = "page_size") -> int:
    """The page size asked, with 0 meaning the default; InvalidArgument past the maximum."""
    if value == 0:
        return DEFAULT_PAGE_SIZE
    if not 0 < value <= MAX_PAGE_SIZE:
        raise InvalidArgument(f"{value} is out of range; use 1 to {MAX_PAGE_SIZE}", field=field)
    return value

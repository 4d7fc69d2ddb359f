"""Red and black list entries as every package sees them: validation, windows, status, masking."""

from __future__ import annotations

import base64
import binascii
import datetime
import enum
import re
import secrets
import unicodedata
from dataclasses import dataclass
from typing import Final, NewType

from osmanthus.core.catalogue import Catalogue, ListColour, ListType
from osmanthus.core.errors import InvalidArgument
from osmanthus.core.ids import mask_subject, validate_resident_id, validate_subject
from osmanthus.core.types import DepartmentId, SubjectId, SubjectKind

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
#: the version prefix inside a node's page token: base64url("1:" + the last entry id shown)
_PAGE_TOKEN_PREFIX: Final = "1:"
#: longest node page token a node reads (an entry id is at most 64 characters)
MAX_NODE_PAGE_TOKEN_CHARS: Final = 128


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


class ListChange(enum.Enum):
    """What happened to a list entry: the event a department's change feed and a sync batch's
    list-change record report."""

    PUBLISHED = "published"
    WITHDRAWN = "withdrawn"
    #: its window ended without a withdrawal (the sync job derives it: no node stores it)
    EXPIRED = "expired"


@dataclass(frozen=True)
class ListChangeEvent:
    """One event of a department's list change feed, as the provincial sync job reads it: the
    entry's published fields (a person's id masked), what happened and when.

    A withheld event stands for a stored entry that fails a check on content its node or the
    coordinator makes today (a text that reads as a resident identity number, a window longer
    than the list now allows, a list that no longer takes the subject's kind, ...): entries
    are never changed, so such an entry would fail on every later read too. It keeps its place
    in the feed (`cursor`, `event`, `at`) but carries none of the entry's fields: `entry` is
    None and `withheld` says, in words without any value, which check the entry failed. It
    still says which entry the event is about, so that a withdrawal closes the entry it names:
    `entry_id` is the entry's id when that id passes its own checks (ENTRY_ID_PATTERN, and it
    does not read as a resident identity number), "" when it does not; a withheld WITHDRAWN
    carries its `withdraw_reason` (an enum value, never the withdrawal's text or reference),
    a withheld PUBLISHED none. The department's operator finds the entry by the cursor in the
    node's log.

    The rule for `entry_id`, the same at the node, the coordinator and the SDK: an event that
    carries its entry has `entry_id == entry.entry_id` (filled in from the entry when not
    given; any other value is a ValueError), so a reader can always key on `entry_id`; "" means
    a withheld event whose entry id itself is withheld. `withdraw_reason` is given exactly
    with WITHDRAWN, withheld or not, and is one the list's colour allows (reason_allowed):
    the node checks it against its catalogue; the coordinator against its own wherever it
    knows the entry's list (an event it forwards with its entry, or one it withholds itself);
    for an event the node withheld it cannot know the list and takes any WithdrawReason.
    """

    #: the feed position of this event: ask for the events after it to continue
    cursor: str
    #: None exactly when the event is withheld
    entry: PublicEntry | None
    #: PUBLISHED or WITHDRAWN (a node never reports EXPIRED)
    event: ListChange
    at: datetime.datetime  # UTC, aware
    #: with WITHDRAWN only (withheld or not)
    withdraw_reason: WithdrawReason | None = None
    #: "" for an event that carries its entry; otherwise the check its entry failed
    withheld: str = ""
    #: the entry's id: `entry.entry_id` when the entry is carried; when withheld, the id if it
    #: passes its own checks, else ""
    entry_id: str = ""

    def __post_init__(self) -> None:
        if self.entry is None:
            return
        if not self.entry_id:
            object.__setattr__(self, "entry_id", self.entry.entry_id)
        elif self.entry_id != self.entry.entry_id:
            raise ValueError("an event that carries its entry has that entry's entry_id")


@dataclass(frozen=True)
class ListChangesPage:
    """Events of one department's feed after a cursor, oldest first."""

    department: DepartmentId
    events: tuple[ListChangeEvent, ...]
    #: where the next page starts: the last event's cursor, or the cursor asked if none came
    next_cursor: str
    #: whether the department holds further events after this page
    more: bool
    #: the identity of the department's feed: made at random when the node's list store was
    #: created. Cursors belong to one feed: a store lost and made again numbers its events
    #: from 1 under another feed_id, and the cursors of the old feed mean nothing in it
    feed_id: str


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


#: what people put between the groups of a long number ("320505 19800401 0178",
#: "320505-1980-0401-0178", "320505.19800401.0178"), besides spaces, dashes and underscores;
#: list punctuation (commas, semicolons, the enumeration comma 、, brackets) is not among them:
#: it separates numbers, it does not group one
_DIGIT_GROUP_MARKS: Final = frozenset("./\\:·・'’*#+|~")
#: 17 digits and a digit or X, overlapping: a longer run of digits is read at every offset
_RESIDENT_ID_CANDIDATE: Final = re.compile(r"(?=([0-9]{17}[0-9X]))")


def _groups_digits(char: str) -> bool:
    return (
        char.isspace()
        or char in _DIGIT_GROUP_MARKS
        or unicodedata.category(char) in ("Pd", "Pc", "Cf", "Zs")
    )


def _digits_joined(text: str) -> str:
    """`text` in NFKC, every decimal digit as ASCII, upper case, one mark between digits gone."""
    normal = unicodedata.normalize("NFKC", text)
    ascii_digits = "".join(
        str(unicodedata.decimal(c)) if unicodedata.category(c) == "Nd" else c for c in normal
    ).upper()
    last = len(ascii_digits) - 1
    return "".join(
        c
        for i, c in enumerate(ascii_digits)
        if not (
            0 < i < last
            and _groups_digits(c)
            and ascii_digits[i - 1].isdigit()
            and (ascii_digits[i + 1].isdigit() or ascii_digits[i + 1] == "X")
        )
    )


def holds_resident_id(text: str) -> bool:
    """Whether `text` holds what reads as a full resident identity number (GB 11643).

    The rule, and why it keeps false alarms on ordinary text rare:

    * The text is NFKC-normalised and every decimal digit of any script read as ASCII, so
      full-width digits (３２０５…) and a full-width or lower-case x count like 0-9 and X.
    * One space, dash, underscore, dot, slash, colon, middle dot or similar mark between two
      digits is dropped, so an id written in groups ("320505 19800401 0178") reads as one.
      Two or more marks, and list punctuation (commas, semicolons, 、, brackets), keep numbers
      apart: "2021-02-02, 2022-03-03" stays two dates.
    * Every 18-character stretch of 17 digits and a digit or X is a candidate, wherever it
      starts or ends: a letter or digit before or after ("…0178J", "9320505…") hides nothing.
    * A candidate counts only if it is a valid resident id in full: a real province code, a
      birth date from 1900 to today and the ISO 7064 MOD 11-2 check character. About one
      random 18-digit string in 70,000 passes, so case numbers, amounts, phone and account
      numbers practically never do; a list's text has no reason to carry an 18-digit number
      that does, and a masked id (first 6 and last 2 shown) never does.

    It catches ids written plainly or grouped, not ids spelt out in words or encoded: it guards
    against mistakes and careless leaks, not against a department set on hiding one.
    """
    if sum(c.isdigit() for c in text) < 17:
        return False
    for match in _RESIDENT_ID_CANDIDATE.finditer(_digits_joined(text)):
        try:
            validate_resident_id(match.group(1))
        except InvalidArgument:
            continue
        return True
    return False


def refuse_resident_id(value: str, *, field: str) -> None:
    """InvalidArgument naming `field` (never the value) if `value` holds a full resident id."""
    if holds_resident_id(value):
        raise InvalidArgument(
            "holds what reads as a full resident identity number; lists show a person only by "
            "the masked id (first 6 and last 2 characters), so leave the number out of this "
            "field (the subject is named by subject_id)",
            field=field,
        )


def encode_page_token(after: EntryId) -> str:
    """A node's token for the page after entry `after`: base64url("1:" + entry id), unpadded.

    The node gives it to the coordinator, and the coordinator builds it itself from the last
    entry it forwarded: the node's token never reaches a requester.
    """
    raw = (_PAGE_TOKEN_PREFIX + after).encode("ascii")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_page_token(token: str) -> EntryId | None:
    """The entry id a node's page token continues after; None for "" (the first page)."""
    if not token:
        return None
    problem = InvalidArgument(
        "is not a page token this node gave; start again with an empty page_token",
        field="page_token",
    )
    if not isinstance(token, str) or len(token) > MAX_NODE_PAGE_TOKEN_CHARS:
        raise problem
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        raise problem from None
    after = text.removeprefix(_PAGE_TOKEN_PREFIX)
    if after == text or not ENTRY_ID_PATTERN.fullmatch(after):
        raise problem
    return EntryId(after)


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
    refuse_resident_id(entry_id, field=f"{prefix}entry_id")
    list_type = list_of(catalogue, list_id, department=department, field=f"{prefix}list")
    if subject_kind not in list_type.subject_kinds:
        kinds = " or ".join(sorted(k.value for k in list_type.subject_kinds))
        raise InvalidArgument(
            f"{list_type.id} lists {kinds}s, not {subject_kind.value}s",
            field=f"{prefix}subject_kind",
        )
    subject = validate_subject(subject_kind, subject_id, field=f"{prefix}subject_id")
    if subject_kind is SubjectKind.ENTERPRISE and holds_resident_id(subject):
        # a credit code's check character does not cover its organisation code, so a rare
        # 18-digit code also passes as a resident id: the province, a reader of the public
        # lists, a log could not tell it from a person's number (a sync batch refuses it too)
        raise InvalidArgument(
            "reads as a full resident identity number as well as a credit code; no one could "
            "tell it from a person's id, so an enterprise with a credit code of this rare "
            "shape cannot be published on a list (make that entry known by other means)",
            field=f"{prefix}subject_id",
        )
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
    texts: dict[str, str] = {}
    for name, value, limit, required in (
        ("subject_name", subject_name, MAX_NAME_LENGTH, True),
        ("legal_basis", legal_basis, MAX_LEGAL_BASIS_LENGTH, False),
        ("reason", reason, MAX_REASON_LENGTH, True),
    ):
        text = check_text(value, field=f"{prefix}{name}", limit=limit, required=required)
        # the coordinator drops an entry whose text reads as a full id: refuse it here instead
        refuse_resident_id(text, field=f"{prefix}{name}")
        texts[name] = text
    return NewEntry(
        entry_id=EntryId(entry_id),
        list=list_type.id,
        subject_kind=subject_kind,
        subject_id=subject,
        subject_name=texts["subject_name"],
        legal_basis=texts["legal_basis"] or list_type.legal_basis,
        reason=texts["reason"],
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


# --- a department's change feed ----------------------------------------------------------------

#: events one page of a change feed holds at most, and when the caller names no size
MAX_CHANGES_PAGE_SIZE: Final = 1_000
DEFAULT_CHANGES_PAGE_SIZE: Final = 500
#: an event's place in its department's feed: its sequence number at the node, in decimal
#: without leading zeros (a node's events are numbered from 1, in the order they were stored)
_CHANGE_CURSOR: Final = re.compile(r"0|[1-9][0-9]{0,15}")
#: the largest sequence number a node stores: 16 digits at most, so that no cursor can read as
#: a resident identity number (17 digits and a digit or X), in a message or an audit log
MAX_CHANGE_SEQ: Final = 10**16 - 1
#: a feed's identity: 16 random bytes in unpadded base64url (secrets.token_urlsafe(16))
FEED_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]{22}")
#: how a message names a value it must not quote
RESIDENT_ID_SHOWN: Final = "a value that reads as a resident identity number"

# what a withheld event says (ListChangeEvent.withheld): the check its entry failed, never a value
WITHHELD_TEXT_READS_AS_ID: Final = "a text field reads as a resident identity number"
WITHHELD_TEXT_MALFORMED: Final = (
    "a text field is empty, too long, padded with spaces or holds control characters"
)
WITHHELD_ENTRY_ID_READS_AS_ID: Final = "the entry id reads as a resident identity number"
WITHHELD_ENTRY_ID_MALFORMED: Final = "the entry id is not one a publication takes"
WITHHELD_CODE_READS_AS_ID: Final = (
    "the enterprise's credit code also reads as a resident identity number"
)
WITHHELD_SUBJECT_ID_MALFORMED: Final = "the subject's id is not a valid identifier of its kind"
WITHHELD_WINDOW_TOO_LONG: Final = "the window is longer than the list allows"
WITHHELD_WINDOW_MALFORMED: Final = "the window is not one the list allows"
WITHHELD_LIST_UNKNOWN: Final = "the list is not one of the department's lists in the catalogue"
WITHHELD_KIND_REFUSED: Final[dict[SubjectKind, str]] = {
    SubjectKind.PERSON: "the list no longer takes persons",
    SubjectKind.ENTERPRISE: "the list no longer takes enterprises",
}
WITHHELD_COLOUR: Final = "the list's colour in the catalogue is not the entry's"
WITHHELD_FACILITATION: Final = "the list's facilitation class in the catalogue is not the entry's"
WITHHELD_OTHER: Final = "the entry fails a check a publication makes now"
#: what the coordinator forwards for a node's withheld event whose words it does not know
WITHHELD_BY_NODE: Final = "the department's node withheld the entry"
#: every withheld text a node or the coordinator writes; the coordinator forwards no other
WITHHELD_REASONS: Final = frozenset(
    {
        WITHHELD_TEXT_READS_AS_ID,
        WITHHELD_TEXT_MALFORMED,
        WITHHELD_ENTRY_ID_READS_AS_ID,
        WITHHELD_ENTRY_ID_MALFORMED,
        WITHHELD_CODE_READS_AS_ID,
        WITHHELD_SUBJECT_ID_MALFORMED,
        WITHHELD_WINDOW_TOO_LONG,
        WITHHELD_WINDOW_MALFORMED,
        WITHHELD_LIST_UNKNOWN,
        *WITHHELD_KIND_REFUSED.values(),
        WITHHELD_COLOUR,
        WITHHELD_FACILITATION,
        WITHHELD_OTHER,
        WITHHELD_BY_NODE,
    }
)
#: the longest withheld text a reader takes (the ones above are far shorter)
MAX_WITHHELD_LENGTH: Final = 200


def shown_value(value: object, *, limit: int = 40) -> str:
    """`value` quoted (at most `limit` characters) for a message, unless it reads as a resident
    identity number: then RESIDENT_ID_SHOWN, so that neither the caller's error nor an audit
    log that records it holds the number."""
    text = str(value)
    if holds_resident_id(text):
        return RESIDENT_ID_SHOWN
    return repr(text[:limit])


def new_feed_id() -> str:
    """A new feed's identity: random, made once when a node's list store is created."""
    while True:
        feed_id = secrets.token_urlsafe(16)
        # 22 characters from 64 hardly ever hold 17 digits in a row, let alone a valid id
        if not holds_resident_id(feed_id):
            return feed_id


def check_feed_id(value: str, *, field: str = "feed_id") -> str:
    """`value` if it is a plausible feed id (what new_feed_id makes); InvalidArgument if not."""
    if not isinstance(value, str) or not FEED_ID_PATTERN.fullmatch(value):
        raise InvalidArgument(
            "is not a feed id (22 letters, digits, - or _, made when the node's list store was "
            "created)",
            field=field,
        )
    if holds_resident_id(value):
        raise InvalidArgument("reads as a resident identity number, not a feed id", field=field)
    return value


def check_withheld(value: str, *, field: str = "withheld") -> str:
    """A withheld event's text as a reader takes it: printable, short, without a resident id."""
    text = check_text(value, field=field, limit=MAX_WITHHELD_LENGTH)
    if text != value:
        raise InvalidArgument("has leading or trailing space", field=field)
    refuse_resident_id(text, field=field)
    return text


def withheld_entry_id(entry_id: str) -> str:
    """The entry id a withheld event carries: `entry_id` if it passes its own checks (an entry
    id's pattern, and it does not read as a resident identity number), else "".

    A withheld event names its entry so that the sync job can close the entry a withdrawal
    takes out of view; the id is the department's own reference, published with the entry,
    and these are the checks a publication makes of it.
    """
    if (
        isinstance(entry_id, str)
        and ENTRY_ID_PATTERN.fullmatch(entry_id)
        and not holds_resident_id(entry_id)
    ):
        return entry_id
    return ""


def stored_entry_withheld(
    entry: NewEntry, *, catalogue: Catalogue, department: DepartmentId
) -> str:
    """Why a stored entry must go out in a change feed withheld, or "" if it need not: the
    checks a publication makes today, on the entry as stored.

    Entries never change, but the checks can: the catalogue may shorten a list's windows or
    stop it taking a kind of subject, a check may be added (entry ids that read as resident
    ids), and whether an 18-digit number reads as a resident id depends on the day (its birth
    date must not be in the future). The answer names the check, never a value.
    """
    try:
        checked = validate_new_entry(
            entry_id=entry.entry_id,
            list_id=entry.list,
            subject_kind=entry.subject_kind,
            subject_id=entry.subject_id,
            subject_name=entry.subject_name,
            legal_basis=entry.legal_basis,
            reason=entry.reason,
            window_start=entry.window_start.isoformat(),
            window_end=entry.window_end.isoformat(),
            catalogue=catalogue,
            department=department,
            # how far ahead a window may start mattered when it was published, not now
            today=entry.window_start,
        )
    except InvalidArgument as exc:
        return _withheld_for(entry, exc.field or "", catalogue)
    if checked != entry:
        # a text stored padded, or a legal basis stored empty: not what a publication stores
        return WITHHELD_TEXT_MALFORMED
    return ""


def _withheld_for(entry: NewEntry, field: str, catalogue: Catalogue) -> str:
    if field == "entry_id":
        if holds_resident_id(entry.entry_id):
            return WITHHELD_ENTRY_ID_READS_AS_ID
        return WITHHELD_ENTRY_ID_MALFORMED
    if field == "list":
        return WITHHELD_LIST_UNKNOWN
    if field == "subject_kind":
        return WITHHELD_KIND_REFUSED[entry.subject_kind]
    if field == "subject_id":
        if entry.subject_kind is SubjectKind.ENTERPRISE and holds_resident_id(entry.subject_id):
            return WITHHELD_CODE_READS_AS_ID
        return WITHHELD_SUBJECT_ID_MALFORMED
    if field in ("window_start", "window_end"):
        list_type = next(t for t in catalogue.lists if t.id == entry.list)
        days = (entry.window_end - entry.window_start).days + 1
        if days > list_type.max_window_days:
            return WITHHELD_WINDOW_TOO_LONG
        return WITHHELD_WINDOW_MALFORMED
    if field in ("subject_name", "legal_basis", "reason"):
        if holds_resident_id(getattr(entry, field)):
            return WITHHELD_TEXT_READS_AS_ID
        return WITHHELD_TEXT_MALFORMED
    return WITHHELD_OTHER


def change_cursor(seq: int) -> str:
    """The cursor of the event numbered `seq` in its department's feed."""
    if not 0 <= seq <= MAX_CHANGE_SEQ:
        raise ValueError(f"an event's sequence number is 0 to {MAX_CHANGE_SEQ}, not {seq}")
    return str(seq)


def parse_change_cursor(cursor: str, *, field: str = "after") -> int:
    """The sequence number a feed cursor names; 0 for "" (from the feed's first event)."""
    if cursor == "":
        return 0
    if (
        not isinstance(cursor, str)
        or not _CHANGE_CURSOR.fullmatch(cursor)
        or int(cursor) > MAX_CHANGE_SEQ
    ):
        raise InvalidArgument(
            f"{shown_value(cursor, limit=30)} is not a change feed cursor: pass next_cursor (or "
            "an event's cursor) from an earlier page unchanged, or an empty string to start "
            "from the first event",
            field=field,
        )
    return int(cursor)


def changes_page_size(value: int, *, field: str = "page_size") -> int:
    """The change feed page size asked, 0 meaning the default; InvalidArgument out of range."""
    if value == 0:
        return DEFAULT_CHANGES_PAGE_SIZE
    if not 0 < value <= MAX_CHANGES_PAGE_SIZE:
        raise InvalidArgument(
            f"{value} is out of range; use 1 to {MAX_CHANGES_PAGE_SIZE}", field=field
        )
    return value

"""The checks every value of a sync batch passes, and the limits they hold it to.

osmanthus.core.syncbatch builds and reads batches and checks their header; this module checks
what they carry: the sender and watermarks, each kind's records field by field (list changes,
grades, statistics) and, before any of that, that no value anywhere reads as a full resident
identity number. Every check raises InvalidArgument naming the field (e.g. "records[3].score"),
and a message repeats a value only through shown(), which describes, never repeats, one that
reads as a resident id.
"""

from __future__ import annotations

import datetime
import enum
import re
from decimal import Decimal
from fractions import Fraction
from typing import Any, Final, TypeVar

from osmanthus.core.catalogue import DEPARTMENT_ID_PATTERN, ListColour
from osmanthus.core.dp import EPSILON_PLACES, MAX_EPSILON
from osmanthus.core.errors import InvalidArgument
from osmanthus.core.ids import validate_uscc
from osmanthus.core.lists import (
    ENTRY_ID_PATTERN,
    MAX_LEGAL_BASIS_LENGTH,
    MAX_NAME_LENGTH,
    MAX_REASON_LENGTH,
    ListChange,
    WithdrawReason,
    check_text,
    holds_resident_id,
    parse_date,
)
from osmanthus.core.names import PEER_NAME_PATTERN
from osmanthus.core.types import SubjectKind

#: a position in the sender's change stream, chosen by the sync job (a counter, an ISO time);
#: the receiver compares watermarks for equality only, never for order
WATERMARK_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}")
#: the largest integer anywhere in a batch: JSON readers that keep numbers as doubles (JavaScript,
#: jq) lose precision above it, and sender and receiver must never disagree on a value
MAX_INTEGER: Final = 2**53 - 1
MAX_DEPARTMENTS: Final = 200
#: scores run from a catalogue's floor to its ceiling (0 to 200 by default); the format allows
#: any catalogue up to this ceiling
MAX_SCORE: Final = 1_000
#: the platform's default minimum cohort for statistics (ARCHITECTURE.md, STATS): a statistic
#: over fewer subjects is never reported upward
MIN_COHORT_SIZE: Final = 10
MAX_FACILITATION_CLASS_LENGTH: Final = 32
STATISTIC_NAME_PATTERN: Final = re.compile(r"[a-z][a-z0-9_.:-]{0,127}")
GRADE_PATTERN: Final = re.compile(r"[A-Z]{1,3}")
_LIST_ID_PATTERN: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")
#: a person's id as a public list shows it: first 6 and last 2 characters, 10 stars between
_MASKED_RESIDENT_ID: Final = re.compile(r"[0-9]{6}\*{10}[0-9][0-9X]")
_TIMESTAMP: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
#: how a batch writes a time (syncbatch.format_timestamp) and parse_timestamp reads it
TIMESTAMP_FORMAT: Final = "%Y-%m-%dT%H:%M:%SZ"
_NOISE_SCALE: Final = re.compile(r"[1-9][0-9]{0,30}(/[1-9][0-9]{0,30})?")
#: ε as the ledger counts it (osmanthus.core.dp): at most EPSILON_PLACES places, no trailing zero
_EPSILON: Final = re.compile(rf"(0|[1-9][0-9]?)(\.[0-9]{{0,{EPSILON_PLACES - 1}}}[1-9])?")

E = TypeVar("E", bound=enum.Enum)


#: record fields whose own checks deal with an id in them (see refuse_resident_ids)
_SUBJECT_FIELDS: Final = frozenset({"credit_code", "subject_id"})
_RESIDENT_ID_REFUSED: Final = (
    "holds what reads as a full resident identity number; a sync batch never carries one (a "
    "person on a list appears with the masked id the list shows)"
)
_SURROGATE_REFUSED: Final = (
    "holds a lone surrogate escape (\\ud800 to \\udfff without its pair), which is no "
    "character: UTF-8 cannot carry it; write the character itself"
)
_LIST_CHANGE_FIELDS: Final = frozenset(
    {
        "colour",
        "department",
        "entry_id",
        "event",
        "event_at",
        "facilitation_class",
        "legal_basis",
        "list",
        "reason",
        "subject_id",
        "subject_kind",
        "subject_name",
        "window_end",
        "window_start",
        "withdraw_reason",
    }
)
_GRADE_FIELDS: Final = frozenset(
    {
        "as_of",
        "credit_code",
        "departments_answered",
        "grade",
        "missing_departments",
        "partial",
        "score",
    }
)
_STATISTIC_FIELDS: Final = frozenset(
    {
        "as_of",
        "cohort_size",
        "epsilon",
        "missing_departments",
        "name",
        "noise_scale",
        "partial",
        "subject_kind",
        "value",
    }
)


# --- records: each check returns the key a batch may report a record under once -----------------


def check_list_change(record: dict[str, Any], where: str) -> tuple[str, ...]:
    check_fields(record, _LIST_CHANGE_FIELDS, where=f"{where}.")
    event = _enum(ListChange, record["event"], field=f"{where}.event")
    parse_timestamp(record["event_at"], field=f"{where}.event_at")
    entry_id = record["entry_id"]
    if not isinstance(entry_id, str) or not ENTRY_ID_PATTERN.fullmatch(entry_id):
        raise InvalidArgument(
            f"{shown(entry_id)} is not an entry id (1 to 64 letters, digits or . _ : / -)",
            field=f"{where}.entry_id",
        )
    department = _department(record["department"], field=f"{where}.department")
    list_id = record["list"]
    if not isinstance(list_id, str) or not _LIST_ID_PATTERN.fullmatch(list_id):
        raise InvalidArgument(f"{shown(list_id)} is not a list id", field=f"{where}.list")
    colour = _enum(ListColour, record["colour"], field=f"{where}.colour")
    kind = _enum(SubjectKind, record["subject_kind"], field=f"{where}.subject_kind")
    subject = record["subject_id"]
    if kind is SubjectKind.PERSON:
        if not isinstance(subject, str) or not _MASKED_RESIDENT_ID.fullmatch(subject):
            raise InvalidArgument(
                "a person appears with the masked id the list shows (first 6 and last 2 "
                "characters, 10 stars between), never in full",
                field=f"{where}.subject_id",
            )
    else:
        _credit_code(subject, field=f"{where}.subject_id")
    for name, limit, required in (
        ("subject_name", MAX_NAME_LENGTH, True),
        ("legal_basis", MAX_LEGAL_BASIS_LENGTH, True),
        ("reason", MAX_REASON_LENGTH, True),
    ):
        _text(record[name], field=f"{where}.{name}", limit=limit, required=required)
    start = parse_date(record["window_start"], field=f"{where}.window_start")
    end = parse_date(record["window_end"], field=f"{where}.window_end")
    if end < start:
        raise InvalidArgument(
            f"{end} is before the window's start {start}", field=f"{where}.window_end"
        )
    facilitation = record["facilitation_class"]
    if facilitation is not None:
        if colour is not ListColour.RED:
            raise InvalidArgument(
                "only a red list entry grants a facilitation class; write null",
                field=f"{where}.facilitation_class",
            )
        _text(
            facilitation,
            field=f"{where}.facilitation_class",
            limit=MAX_FACILITATION_CLASS_LENGTH,
            required=True,
        )
    reason = record["withdraw_reason"]
    if event is ListChange.WITHDRAWN:
        _enum(WithdrawReason, reason, field=f"{where}.withdraw_reason")
    elif reason is not None:
        raise InvalidArgument(
            f"a {event.value} event has no withdraw reason; write null",
            field=f"{where}.withdraw_reason",
        )
    return (department, entry_id, event.value)


def check_grade(record: dict[str, Any], where: str) -> tuple[str, ...]:
    check_fields(record, _GRADE_FIELDS, where=f"{where}.")
    code = _credit_code(record["credit_code"], field=f"{where}.credit_code")
    grade = record["grade"]
    if not isinstance(grade, str) or not GRADE_PATTERN.fullmatch(grade):
        raise InvalidArgument(
            f"{shown(grade)} is not a grade (1 to 3 capital letters, e.g. A)",
            field=f"{where}.grade",
        )
    check_integer(record["score"], field=f"{where}.score", low=0, high=MAX_SCORE)
    parse_date(record["as_of"], field=f"{where}.as_of")
    check_integer(
        record["departments_answered"],
        field=f"{where}.departments_answered",
        low=1,
        high=MAX_DEPARTMENTS,
    )
    _coverage(record, where)
    return (code,)


def check_statistic(record: dict[str, Any], where: str) -> tuple[str, ...]:
    check_fields(record, _STATISTIC_FIELDS, where=f"{where}.")
    name = record["name"]
    if not isinstance(name, str) or not STATISTIC_NAME_PATTERN.fullmatch(name):
        raise InvalidArgument(
            f"{shown(name)} is not a statistic name (a lower-case letter, then up to 127 "
            "lower-case letters, digits or _ . : -)",
            field=f"{where}.name",
        )
    kind = _enum(SubjectKind, record["subject_kind"], field=f"{where}.subject_kind")
    check_integer(
        record["cohort_size"], field=f"{where}.cohort_size", low=MIN_COHORT_SIZE, high=MAX_INTEGER
    )
    _coverage(record, where)
    parse_date(record["as_of"], field=f"{where}.as_of")
    if record["partial"]:
        for missing_value in ("value", "noise_scale", "epsilon"):
            if record[missing_value] is not None:
                raise InvalidArgument(
                    "a partial statistic has no value (a sum without a department would be "
                    "biased by what it holds); write null",
                    field=f"{where}.{missing_value}",
                )
        return (kind.value, name)
    check_integer(record["value"], field=f"{where}.value", low=-MAX_INTEGER, high=MAX_INTEGER)
    scale = record["noise_scale"]
    if (
        not isinstance(scale, str)
        or not _NOISE_SCALE.fullmatch(scale)
        or str(Fraction(scale)) != scale
    ):
        raise InvalidArgument(
            f"{shown(scale)} is not a noise scale: a positive rational in lowest terms, "
            "written p or p/q (str(Fraction))",
            field=f"{where}.noise_scale",
        )
    epsilon = record["epsilon"]
    if not isinstance(epsilon, str) or not _EPSILON.fullmatch(epsilon):
        raise InvalidArgument(
            f"{shown(epsilon)} is not an ε: a decimal like 0.5, no exponent, no trailing zero",
            field=f"{where}.epsilon",
        )
    if not Decimal(0) < Decimal(epsilon) <= MAX_EPSILON:
        raise InvalidArgument(
            f"{epsilon} is out of range; ε is above 0 and at most {MAX_EPSILON}",
            field=f"{where}.epsilon",
        )
    return (kind.value, name)


# --- values -------------------------------------------------------------------------------------


def _credit_code(value: object, *, field: str) -> str:
    # validate_uscc does not check the organisation code's own check digit, so an 18-digit
    # string can pass both as a credit code and as a resident id; the receiver cannot tell
    # which it is, so such a value is refused (a genuine code of that shape is very rare)
    if isinstance(value, str) and holds_resident_id(value):
        raise InvalidArgument(
            "reads as a full resident identity number as well as a credit code; a sync batch "
            "never carries a string that could be a person's id, so a credit code of this "
            "rare shape cannot be sent (report that enterprise by other means)",
            field=field,
        )
    return validate_uscc(value, field=field)  # type: ignore[arg-type]


def _coverage(record: dict[str, Any], where: str) -> None:
    missing = check_departments(record["missing_departments"], field=f"{where}.missing_departments")
    partial = check_boolean(record["partial"], field=f"{where}.partial")
    if partial != bool(missing):
        raise InvalidArgument(
            "must be true exactly when missing_departments names a department",
            field=f"{where}.partial",
        )


def refuse_resident_ids(document: dict[str, Any]) -> None:
    """InvalidArgument naming the field (never the value) where a full resident id is written.

    Runs before any other check, so that a value is known to hold no id before a message
    may repeat it (and shown describes, never repeats, one that does). A record's
    credit_code and subject_id are left to their own checks, which refuse an id with a
    message of their own (a credit code that also reads as an id; a person's subject_id must
    be masked) and never repeat the value.
    """
    records = document.get("records")
    for key, value in document.items():
        if key == "records" and isinstance(records, list):
            for index, record in enumerate(records):
                _scan(record, where=f"records[{index}]", exempt=_SUBJECT_FIELDS)
        else:
            _scan({key: value}, where="", exempt=frozenset())


def _scan(value: Any, *, where: str, exempt: frozenset[str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            name = f"{where}.{key}" if where else key
            if holds_resident_id(key):
                raise InvalidArgument(_RESIDENT_ID_REFUSED, field=f"{where or 'payload'} (a key)")
            if not _encodes(key):
                raise InvalidArgument(_SURROGATE_REFUSED, field=f"{where or 'payload'} (a key)")
            if key not in exempt:
                _scan(item, where=name, exempt=frozenset())
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _scan(item, where=f"{where}[{index}]", exempt=frozenset())
    elif isinstance(value, str):
        if holds_resident_id(value):
            raise InvalidArgument(_RESIDENT_ID_REFUSED, field=where)
        if not _encodes(value):
            raise InvalidArgument(_SURROGATE_REFUSED, field=where)
    elif isinstance(value, int) and not isinstance(value, bool) and holds_resident_id(str(value)):
        # an id's 18 digits are an integer too (one ending in X is not); Python writes any
        # integer JSON parsing gave (at most 4,300 digits: a longer one fails to parse)
        raise InvalidArgument(_RESIDENT_ID_REFUSED, field=where)


def _encodes(text: str) -> bool:
    """Whether UTF-8 can carry `text`: JSON's \\ud800 escapes parse to lone surrogates it cannot."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_fields(document: dict[str, Any], expected: frozenset[str], *, where: str) -> None:
    unknown = sorted(set(document) - expected)
    if unknown:
        names = ", ".join(shown(n) for n in unknown[:5])
        raise InvalidArgument(f"unknown field {names}", field=f"{where}{unknown[0]}")
    absent = sorted(expected - set(document))
    if absent:
        raise InvalidArgument("is missing", field=f"{where}{absent[0]}")


def check_sender(value: object, *, field: str) -> str:
    # the id scan first: the message below repeats the value
    if isinstance(value, str) and holds_resident_id(value):
        raise InvalidArgument(_RESIDENT_ID_REFUSED, field=field)
    if not isinstance(value, str) or not PEER_NAME_PATTERN.fullmatch(value):
        raise InvalidArgument(
            f"{shown(value)} is not a sender id (1 to 63 lower-case letters, digits, - or _)",
            field=field,
        )
    return value


def check_watermarks(low: object, high: object) -> tuple[str, str]:
    start = _watermark(low, field="watermark_from")
    end = _watermark(high, field="watermark_to")
    if start == end:
        raise InvalidArgument(
            "equals watermark_from: a batch covers a range that moves the watermark on",
            field="watermark_to",
        )
    return start, end


def _watermark(value: object, *, field: str) -> str:
    # the id scan first: the message below repeats the value
    if isinstance(value, str) and holds_resident_id(value):
        raise InvalidArgument(_RESIDENT_ID_REFUSED, field=field)
    if not isinstance(value, str) or not WATERMARK_PATTERN.fullmatch(value):
        raise InvalidArgument(
            f"{shown(value)} is not a watermark (1 to 128 letters, digits or . _ : + -, "
            "starting with a letter or digit)",
            field=field,
        )
    return value


def _department(value: object, *, field: str) -> str:
    if not isinstance(value, str) or not DEPARTMENT_ID_PATTERN.match(value):
        raise InvalidArgument(f"{shown(value)} is not a department id", field=field)
    return value


def check_departments(value: object, *, field: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise InvalidArgument("must be a list of department ids", field=field)
    if len(value) > MAX_DEPARTMENTS:
        raise InvalidArgument(
            f"names {len(value)} departments; at most {MAX_DEPARTMENTS}", field=field
        )
    ids = [_department(v, field=f"{field}[{i}]") for i, v in enumerate(value)]
    if ids != sorted(set(ids)):
        raise InvalidArgument("must be sorted, each department once", field=field)
    return tuple(ids)


def check_integer(value: object, *, field: str, low: int, high: int) -> int:
    # bool is an int subclass: true is not 1 in a batch
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{shown(value)} is not an integer", field=field)
    if not low <= value <= high:
        raise InvalidArgument(f"{shown(value)} is out of range; use {low} to {high}", field=field)
    return value


def check_boolean(value: object, *, field: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidArgument(f"{shown(value)} is not true or false", field=field)
    return value


def _enum(cls: type[E], value: object, *, field: str) -> E:
    try:
        return cls(value)
    except ValueError:
        known = ", ".join(str(m.value) for m in cls)
        raise InvalidArgument(f"{shown(value)} is not one of {known}", field=field) from None


def _text(value: object, *, field: str, limit: int, required: bool) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(f"{shown(value)} is not text", field=field)
    text = check_text(value, field=field, limit=limit, required=required)
    if text != value:
        raise InvalidArgument("has spaces at its start or end; write it trimmed", field=field)
    return text


def parse_timestamp(value: object, *, field: str) -> datetime.datetime:
    if not isinstance(value, str) or not _TIMESTAMP.fullmatch(value):
        raise InvalidArgument(
            f"{shown(value)} is not a time like 2026-11-26T08:30:00Z (UTC, whole seconds)",
            field=field,
        )
    try:
        parsed = datetime.datetime.strptime(value, TIMESTAMP_FORMAT)
    except ValueError:
        raise InvalidArgument(f"{value} is not a calendar time", field=field) from None
    return parsed.replace(tzinfo=datetime.UTC)


def shown(value: object, limit: int = 60) -> str:
    """`value` as Python writes it, cut short: what a batch holds is untrusted until checked.

    A value that reads as a resident id (a string, a key, an integer's digits, or the text
    shown) is described, never repeated: no message may carry one into a log or the
    receiver's record of refusals."""
    if isinstance(value, str) and len(value) > limit:
        value = value[:limit]
    try:
        text = repr(value)
        plain = "" if isinstance(value, bool) else str(value)
    except (RecursionError, ValueError):
        # an integer too long to write out, or a structure too deep: say what it is instead
        text, plain = f"a {type(value).__name__}", ""
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    if holds_resident_id(plain) or holds_resident_id(text):
        return "a value that reads as a resident identity number"
    return text

"""The sync batch: what a city reports to the provincial platform, in canonical signed JSON.

A batch carries one kind of report (list changes, enterprise grades or statistics) for one
watermark range of one sender (the city). Its payload is canonical JSON: sorted keys, no
whitespace, UTF-8, integers only (decimals travel as strings), every string in one spelling, so
that one content has exactly one encoding (RFC 8785) and a receiver can refuse any other. The
payload is signed with the sender's Ed25519 key in the one signing envelope every Osmanthus
artefact uses (osmanthus.core.signing: a JWS with the payload detached, of type
SYNC_BATCH_TYPE, so that a batch signature can never pass for another artefact's), and the key
is named by its RFC 7638 thumbprint (as consent receipts name theirs).

The batch id is derived from the sender, the kind and the watermark range, never chosen: a job that
crashes and gathers the same range again makes the same id, and the receiver acknowledges it as a
duplicate instead of storing it twice. The content compared for that is everything but
`created_at` (see Batch.content_sha256).

A batch never carries raw personal records: no resident identity number in full (a person on a
list appears with the masked id the list shows), and statistics only over a cohort of at least
MIN_COHORT_SIZE subjects. build_batch and read_batch apply one and the same validation, so what a
sync job builds is what a receiver accepts. This module checks a batch's header; the checks of
each value and record, and the limits they hold a batch to (MIN_COHORT_SIZE, MAX_INTEGER, the
patterns of grades and statistic names), are in osmanthus.core.syncbatch_checks.
"""

from __future__ import annotations

import datetime
import enum
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from osmanthus.core import signing
from osmanthus.core.errors import ConfigError, InvalidArgument, OsmanthusError, Unauthenticated
from osmanthus.core.lists import (
    ListChange,
    PublicEntry,
    WithdrawReason,
    holds_resident_id,
)
from osmanthus.core.names import PEER_NAME_PATTERN
from osmanthus.core.strictjson import unique_keys
from osmanthus.core.syncbatch_checks import (
    MAX_INTEGER,
    TIMESTAMP_FORMAT,
    check_boolean,
    check_departments,
    check_fields,
    check_grade,
    check_integer,
    check_list_change,
    check_sender,
    check_statistic,
    check_watermarks,
    parse_timestamp,
    refuse_resident_ids,
    shown,
)
from osmanthus.core.types import SubjectKind

FORMAT: Final = "osmanthus-sync-batch/1"
_BATCH_ID_CONTEXT: Final = "osmanthus-sync-batch-id/1"
#: "sb-" and the first 128 bits of SHA-256 over the sender, kind and watermark range, in hex
BATCH_ID_PATTERN: Final = re.compile(r"sb-[0-9a-f]{32}")
#: an RFC 7638 thumbprint: base64url SHA-256 without padding
KEY_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]{43}")
#: a signature of the earlier format: a bare Ed25519 signature over b"osmanthus-sync-batch/1\n"
#: and the payload, which the receiver refuses and the sync job signs anew
_LEGACY_SIGNATURE_BYTES: Final = 64
#: the gRPC servers take messages of up to 1 MiB; a batch stays well under it. This is the one
#: limit on a batch's size: the smallest record takes over 100 bytes, so it also bounds the count
MAX_PAYLOAD_BYTES: Final = 512 * 1024
#: bytes a batch's header takes at most (with syncbatch_checks.MAX_DEPARTMENTS missing
#: departments): records whose record_size() + 1 sum to at most MAX_RECORDS_BYTES always fit
#: in one batch
HEADER_RESERVE: Final = 8 * 1024
MAX_RECORDS_BYTES: Final = MAX_PAYLOAD_BYTES - HEADER_RESERVE


class BatchKind(enum.Enum):
    """What a batch reports; one batch carries one kind."""

    #: red and black list entries that were published, withdrawn or expired in the range
    LIST_CHANGES = "list_changes"
    #: enterprise credit grades (score, grade and the departments behind them)
    GRADES = "grades"
    #: noisy statistics over cohorts, as the coordinator's STATS shape gives them
    STATISTICS = "statistics"


_HEADER_FIELDS: Final = frozenset(
    {
        "batch_id",
        "created_at",
        "format",
        "kind",
        "missing_departments",
        "partial",
        "records",
        "sender",
        "sequence",
        "watermark_from",
        "watermark_to",
    }
)


@dataclass(frozen=True, kw_only=True)
class Batch:
    """A batch whose payload passed every check of the format; made by build_batch or
    read_batch only. `payload` is authoritative: the other fields are read from it."""

    sender: str
    batch_id: str
    sequence: int
    kind: BatchKind
    watermark_from: str
    watermark_to: str
    created_at: datetime.datetime
    #: the records as parsed from the payload, in its order
    records: tuple[dict[str, Any], ...] = field(repr=False)
    partial: bool
    #: every department missing from any record, and any whose data could not be gathered
    missing_departments: tuple[str, ...]
    payload: bytes = field(repr=False)

    @property
    def payload_sha256(self) -> str:
        return hashlib.sha256(self.payload).hexdigest()

    @property
    def content_sha256(self) -> str:
        """SHA-256 of the canonical payload without `created_at`: the same range gathered
        again after a crash is the same content, whenever it was built."""
        document = json.loads(self.payload)
        del document["created_at"]
        return hashlib.sha256(canonical_json(document)).hexdigest()

    def record_json(self) -> tuple[str, ...]:
        """Each record in its canonical JSON text, as stored."""
        return tuple(canonical_json(r).decode("utf-8") for r in self.records)


@dataclass(frozen=True, kw_only=True)
class SignedBatch:
    """A batch payload, its signature (the detached JWS of osmanthus.core.signing, as ASCII
    bytes) and the RFC 7638 thumbprint of the key that made it. Unverified until open_batch or
    verify_signature."""

    payload: bytes
    signature: bytes
    key_id: str


# --- encoding -----------------------------------------------------------------------------------


def canonical_json(value: Any) -> bytes:
    """`value` as RFC 8785 canonical JSON (osmanthus.core.signing.canonical_json): sorted keys,
    no whitespace, UTF-8, no NaN or Infinity; InvalidArgument for a value JSON cannot carry."""
    return signing.canonical_json(value)


def record_size(record: Mapping[str, Any]) -> int:
    """The bytes `record` takes in a payload (a comma apart): for packing records into batches,
    keep sum(record_size(r) + 1) at most MAX_RECORDS_BYTES."""
    try:
        return len(canonical_json(record))
    except InvalidArgument as exc:
        raise InvalidArgument(exc.message, field="record") from None


def format_timestamp(value: datetime.datetime, *, field: str) -> str:
    """An aware datetime as a batch writes times: UTC, whole seconds (rounded down), "Z"."""
    if not isinstance(value, datetime.datetime) or value.utcoffset() is None:
        raise InvalidArgument("must be a timezone-aware datetime", field=field)
    return value.astimezone(datetime.UTC).strftime(TIMESTAMP_FORMAT)


def sender_key_id(public_key: Ed25519PublicKey) -> str:
    """The key id a batch signed by `public_key` carries: its RFC 7638 thumbprint."""
    return signing.key_id(public_key)


def batch_id_for(*, sender: str, kind: BatchKind, watermark_from: str, watermark_to: str) -> str:
    """The id of the batch for this sender, kind and watermark range: the same inputs always
    give the same id, so a range sent again is recognised as the same batch."""
    check_sender(sender, field="sender")
    if not isinstance(kind, BatchKind):
        raise InvalidArgument(f"{kind!r} is not a BatchKind", field="kind")
    check_watermarks(watermark_from, watermark_to)
    material = canonical_json([_BATCH_ID_CONTEXT, sender, kind.value, watermark_from, watermark_to])
    return "sb-" + hashlib.sha256(material).hexdigest()[:32]


# --- records ------------------------------------------------------------------------------------


def list_change_record(
    entry: PublicEntry,
    *,
    event: ListChange,
    at: datetime.datetime,
    withdraw_reason: WithdrawReason | None = None,
) -> dict[str, Any]:
    """The record of one list event: the entry's published fields (a person's id masked, as
    the list shows it), what happened and when. `withdraw_reason` goes with WITHDRAWN only."""
    return {
        "event": ListChange(event).value,
        "event_at": format_timestamp(at, field="at"),
        "entry_id": entry.entry_id,
        "department": entry.department,
        "list": entry.list,
        "colour": entry.colour.value,
        "subject_kind": entry.subject_kind.value,
        "subject_id": entry.subject_id,
        "subject_name": entry.subject_name,
        "legal_basis": entry.legal_basis,
        "reason": entry.reason,
        "window_start": entry.window_start.isoformat(),
        "window_end": entry.window_end.isoformat(),
        "facilitation_class": entry.facilitation_class,
        "withdraw_reason": withdraw_reason.value if withdraw_reason is not None else None,
    }


def grade_record(
    *,
    credit_code: str,
    grade: str,
    score: int,
    as_of: datetime.date,
    departments_answered: int,
    missing_departments: Iterable[str] = (),
) -> dict[str, Any]:
    """The record of one enterprise's grade, with the departments it was computed from."""
    missing = sorted(set(missing_departments))
    return {
        "credit_code": credit_code,
        "grade": grade,
        "score": score,
        "as_of": as_of.isoformat(),
        "departments_answered": departments_answered,
        "missing_departments": missing,
        "partial": bool(missing),
    }


def statistic_record(
    *,
    name: str,
    subject_kind: SubjectKind,
    cohort_size: int,
    value: int | None,
    noise_scale: Fraction | None,
    epsilon: Decimal | None,
    as_of: datetime.date,
    missing_departments: Iterable[str] = (),
) -> dict[str, Any]:
    """The record of one noisy statistic: its noisy sum over the cohort, the noise's scale b
    and the ε it cost, so the province knows how far to trust it.

    A statistic sums every department (the coordinator refuses a sum without one: it would be
    biased by what that department holds), so one a department could not answer has no value:
    `value`, `noise_scale` and `epsilon` are None and `missing_departments` names who was
    missing. The record still goes up, so the province sees the statistic is owed, not zero.
    """
    missing = sorted(set(missing_departments))
    return {
        "name": name,
        "subject_kind": SubjectKind(subject_kind).value,
        "cohort_size": cohort_size,
        "value": value,
        "noise_scale": None if noise_scale is None else str(Fraction(noise_scale)),
        "epsilon": None if epsilon is None else _decimal_text(epsilon),
        "as_of": as_of.isoformat(),
        "missing_departments": missing,
        "partial": bool(missing),
    }


# --- building and reading -----------------------------------------------------------------------


def build_batch(
    *,
    sender: str,
    kind: BatchKind,
    sequence: int,
    watermark_from: str,
    watermark_to: str,
    records: Sequence[Mapping[str, Any]],
    created_at: datetime.datetime,
    missing_departments: Iterable[str] = (),
) -> Batch:
    """A checked batch; InvalidArgument names the field (e.g. "records[3].score") if any value
    breaks the format, a record holds a full resident id, or the batch is too large.

    `missing_departments` names departments whose data could not be gathered for the whole
    range (a list office that did not answer); those the records name are added.
    """
    batch_id = batch_id_for(
        sender=sender, kind=kind, watermark_from=watermark_from, watermark_to=watermark_to
    )
    if isinstance(records, (str, bytes)) or not isinstance(records, Sequence):
        raise InvalidArgument("must be a sequence of records", field="records")
    missing = set(missing_departments)
    if kind is not BatchKind.LIST_CHANGES:
        for record in records:
            named = record.get("missing_departments") if isinstance(record, Mapping) else None
            if isinstance(named, list):
                missing.update(m for m in named if isinstance(m, str))
    document = {
        "format": FORMAT,
        "sender": sender,
        "batch_id": batch_id,
        "sequence": sequence,
        "kind": kind.value,
        "watermark_from": watermark_from,
        "watermark_to": watermark_to,
        "created_at": format_timestamp(created_at, field="created_at"),
        "records": list(records),
        "partial": bool(missing),
        "missing_departments": sorted(missing),
    }
    # encoded as any JSON and read back as a receiver reads it: the format's checks run on what
    # travels, before the canonical encoding (which refuses some values the checks name better)
    try:
        encoded = json.dumps(document, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(
            f"hold a value JSON cannot carry ({type(exc).__name__})", field="records"
        ) from None
    parsed = _parse(encoded)
    _validate(parsed, encoded)
    return read_batch(canonical_json(parsed))


def read_batch(payload: bytes) -> Batch:
    """The batch in `payload` if it is in the format, canonical and within the limits;
    InvalidArgument naming the field otherwise. Does not check any signature."""
    if not isinstance(payload, bytes):
        raise InvalidArgument("must be bytes", field="payload")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise InvalidArgument(
            f"is {len(payload)} bytes; a batch is at most {MAX_PAYLOAD_BYTES}: split the "
            "watermark range into smaller batches",
            field="payload",
        )
    document = _parse(payload)
    batch = _validate(document, payload)
    # _validate refused every string UTF-8 cannot carry, so this encodes
    if canonical_json(document) != payload:
        raise InvalidArgument(
            "is not in canonical form (keys sorted, no whitespace, UTF-8 without \\u escapes "
            "where a character can be written as itself): encode it with canonical_json",
            field="payload",
        )
    return batch


def sign_batch(batch: Batch, *, private_key: Ed25519PrivateKey) -> SignedBatch:
    """`batch` signed with the sender's Ed25519 key (deterministic: the same batch and key
    always give the same bytes)."""
    if not isinstance(private_key, Ed25519PrivateKey):
        raise ConfigError(
            f"a batch is signed with an Ed25519 private key, not {type(private_key).__name__}",
            field="private_key",
        )
    if not isinstance(batch, Batch):
        raise InvalidArgument("must be a Batch from build_batch or read_batch", field="batch")
    signature = signing.sign(
        batch.payload, payload_type=signing.SYNC_BATCH_TYPE, private_key=private_key
    )
    return SignedBatch(
        payload=batch.payload,
        signature=signature.encode("ascii"),
        key_id=sender_key_id(private_key.public_key()),
    )


def signed_in_current_format(signed: SignedBatch) -> bool:
    """Whether `signed` carries a signature in the one envelope (not the earlier bare Ed25519
    signature): the sync job signs anew a waiting batch for which this is False."""
    try:
        _signature_text(signed.signature)
    except OsmanthusError:
        return False
    return True


def _signature_text(signature: object) -> str:
    if not isinstance(signature, bytes) or not signature:
        raise Unauthenticated("is missing", field="signature")
    if len(signature) == _LEGACY_SIGNATURE_BYTES and b".." not in signature:
        raise InvalidArgument(
            "is a signature of the earlier format (a bare Ed25519 signature, before batches "
            "were signed in the one envelope of osmanthus.core.signing); this receiver reads "
            "the envelope only. Upgrade the city's sync job: it signs its waiting batches "
            "anew, with the same key, before it delivers them",
            field="signature",
        )
    if len(signature) > signing.MAX_SIGNATURE_CHARS or not signature.isascii():
        raise Unauthenticated(
            f"is not a detached JWS of at most {signing.MAX_SIGNATURE_CHARS} ASCII characters",
            field="signature",
        )
    return signature.decode("ascii")


def check_envelope(signed: SignedBatch) -> None:
    """Sizes and shapes of a signed batch, before any key is looked up or any JSON is read."""
    if not isinstance(signed.payload, bytes) or not signed.payload:
        raise InvalidArgument("is empty", field="payload")
    if len(signed.payload) > MAX_PAYLOAD_BYTES:
        raise InvalidArgument(
            f"is {len(signed.payload)} bytes; a batch is at most {MAX_PAYLOAD_BYTES}: split the "
            "watermark range into smaller batches",
            field="payload",
        )
    if not isinstance(signed.key_id, str) or not KEY_ID_PATTERN.fullmatch(signed.key_id):
        # not repeated: no signature vouches for it yet, and it could carry anything
        raise Unauthenticated(
            "is not a key id (the RFC 7638 thumbprint of the sender's Ed25519 key: 43 "
            "base64url characters)",
            field="key_id",
        )
    _signature_text(signed.signature)


def verify_signature(signed: SignedBatch, *, public_key: Ed25519PublicKey) -> None:
    """Unauthenticated unless `signed` was signed by `public_key`, which its key id names, in
    the one envelope as a sync batch."""
    check_envelope(signed)
    expected = sender_key_id(public_key)
    if signed.key_id != expected:
        raise Unauthenticated(
            f"the batch names key {shown_key_id(signed.key_id)}, not the sender's key {expected}",
            field="key_id",
        )
    try:
        signing.verify(
            signed.payload,
            _signature_text(signed.signature),
            payload_type=signing.SYNC_BATCH_TYPE,
            trusted_keys={expected: public_key},
        )
    except signing.UntrustedSignature:
        raise Unauthenticated(
            f"does not verify against key {expected}: the payload was changed after it was "
            "signed, or it was signed by another key",
            field="signature",
        ) from None
    except signing.MalformedSignature as exc:
        # its header is not ours, names another key or another artefact's type
        raise Unauthenticated(
            f"is not a sync batch signature: it {exc.message}", field="signature"
        ) from None


def shown_key_id(key_id: object) -> str:
    """`key_id` as a message may repeat it: quoted if it has a key id's shape and reads as no
    resident id, else a description (an unverified envelope could carry anything in it)."""
    if (
        isinstance(key_id, str)
        and KEY_ID_PATTERN.fullmatch(key_id)
        and not holds_resident_id(key_id)
    ):
        return key_id
    return "(a value that is not a key id this receiver could repeat)"


def open_batch(signed: SignedBatch, *, public_key: Ed25519PublicKey) -> Batch:
    """The batch in `signed`, once its signature verifies against `public_key`."""
    verify_signature(signed, public_key=public_key)
    return read_batch(signed.payload)


def peek_claims(payload: bytes) -> tuple[str, str]:
    """(sender, batch id) a payload claims, unverified and "" where unreadable: for reporting a
    rejected batch, never for trusting one."""
    if not isinstance(payload, bytes) or len(payload) > MAX_PAYLOAD_BYTES:
        return "", ""
    try:
        document = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return "", ""
    if not isinstance(document, dict):
        return "", ""
    sender, batch_id = document.get("sender"), document.get("batch_id")
    readable = (
        isinstance(sender, str)
        and PEER_NAME_PATTERN.fullmatch(sender) is not None
        and not holds_resident_id(sender)
    )
    return (
        sender if readable and isinstance(sender, str) else "",
        batch_id if isinstance(batch_id, str) and BATCH_ID_PATTERN.fullmatch(batch_id) else "",
    )


# --- validation ---------------------------------------------------------------------------------


def _parse(payload: bytes) -> dict[str, Any]:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidArgument(
            f"is not UTF-8 (bad byte at offset {exc.start})", field="payload"
        ) from None
    try:
        document = json.loads(
            text,
            object_pairs_hook=unique_keys("field", shown),
            parse_float=_no_float,
            parse_constant=_no_constant,
        )
    except RecursionError:
        raise InvalidArgument("is nested too deeply to be a batch", field="payload") from None
    except ValueError as exc:
        raise InvalidArgument(f"is not a batch: {str(exc)[:200]}", field="payload") from None
    if not isinstance(document, dict):
        raise InvalidArgument("is not a JSON object", field="payload")
    return document


def _no_float(text: str) -> Any:
    # the number is not repeated: its digits could be a resident id, and the id scan only
    # runs on a parsed document
    raise ValueError(
        "holds a fractional number; a batch holds integers only (ε and noise scales are "
        "written as decimal strings)"
    )


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _validate(document: dict[str, Any], payload: bytes) -> Batch:
    refuse_resident_ids(document)
    fmt = document.get("format")
    if fmt != FORMAT:
        raise InvalidArgument(
            f"is {shown(fmt)}, not {FORMAT!r}: this is not a sync batch this version reads",
            field="format",
        )
    check_fields(document, _HEADER_FIELDS, where="")
    sender = check_sender(document["sender"], field="sender")
    kind_text = document["kind"]
    try:
        kind = BatchKind(kind_text)
    except ValueError:
        known = ", ".join(k.value for k in BatchKind)
        raise InvalidArgument(
            f"{shown(kind_text)} is not a kind; known: {known}", field="kind"
        ) from None
    sequence = check_integer(document["sequence"], field="sequence", low=1, high=MAX_INTEGER)
    watermark_from, watermark_to = check_watermarks(
        document["watermark_from"], document["watermark_to"]
    )
    expected_id = batch_id_for(
        sender=sender, kind=kind, watermark_from=watermark_from, watermark_to=watermark_to
    )
    if document["batch_id"] != expected_id:
        raise InvalidArgument(
            f"is {shown(document['batch_id'])}, but the sender, kind and watermark range make "
            f"{expected_id}: a batch id is derived (batch_id_for), never chosen",
            field="batch_id",
        )
    created_at = parse_timestamp(document["created_at"], field="created_at")
    records = document["records"]
    if not isinstance(records, list):
        raise InvalidArgument("must be a list", field="records")
    check = _RECORD_CHECKS[kind]
    seen: dict[tuple[str, ...], int] = {}
    named_missing: set[str] = set()
    for index, record in enumerate(records):
        where = f"records[{index}]"
        if not isinstance(record, dict):
            raise InvalidArgument("must be a JSON object", field=where)
        key = check(record, where)
        if key in seen:
            raise InvalidArgument(
                f"repeats records[{seen[key]}] ({' '.join(key)}): a batch reports each once",
                field=where,
            )
        seen[key] = index
        named_missing.update(record.get("missing_departments", ()))
    missing = check_departments(document["missing_departments"], field="missing_departments")
    not_named = sorted(named_missing - set(missing))
    if not_named:
        raise InvalidArgument(
            f"leaves out {', '.join(not_named)}, which records name as missing",
            field="missing_departments",
        )
    partial = check_boolean(document["partial"], field="partial")
    if partial != bool(missing):
        raise InvalidArgument(
            "must be true exactly when missing_departments names a department", field="partial"
        )
    return Batch(
        sender=sender,
        batch_id=expected_id,
        sequence=sequence,
        kind=kind,
        watermark_from=watermark_from,
        watermark_to=watermark_to,
        created_at=created_at,
        records=tuple(records),
        partial=partial,
        missing_departments=missing,
        payload=payload,
    )


_RECORD_CHECKS: Final[Mapping[BatchKind, Callable[[dict[str, Any], str], tuple[str, ...]]]] = {
    BatchKind.LIST_CHANGES: check_list_change,
    BatchKind.GRADES: check_grade,
    BatchKind.STATISTICS: check_statistic,
}


def _decimal_text(value: Decimal) -> str:
    try:
        number = Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise InvalidArgument(f"{shown(value)} is not a decimal", field="epsilon") from None
    if not number.is_finite():
        raise InvalidArgument(f"{value} is not a finite decimal", field="epsilon")
    # normalize() drops trailing zeros; "f" writes it without an exponent (1E+1 → 10)
    return format(number.normalize(), "f")

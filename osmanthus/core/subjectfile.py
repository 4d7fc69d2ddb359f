"""A subject's file as one party holds it: records, list entries and audit entries about them.

Each department's node builds its part (`SubjectFile`) for the portal, encodes it as RFC 8785
canonical JSON (`encode`) and seals it (osmanthus.core.subjectseal); the coordinator builds one
too, holding only its own audit entries. The portal opens each part and reads it back with
`decode`, which refuses anything that is not exactly this schema (an unknown key, a wrong type,
a file about another subject), naming the field.

Nothing here leaves the portal's session: the portal renders it and forgets it.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final

import rfc8785

from osmanthus.core.audit import AuditEntry
from osmanthus.core.errors import InvalidArgument
from osmanthus.core.strictjson import unique_keys
from osmanthus.core.subjectseal import nonce_text

#: 2 adds the department's cases and its case key; 3 each audit entry's logged line, leaf index
#: and inclusion proof, and the part's signed checkpoint (osmanthus.core.auditproofs); 4 the
#: subject's hash as the party's log names it, which every proven line must name
SCHEMA_VERSION: Final = 4
#: the source name of the coordinator's part
COORDINATOR_SOURCE: Final = "coordinator"
#: the disclosure shape an audit entry names for a request for a subject's file (nodes and
#: the coordinator alike), so that "who asked about me" shows the portal's own questions
AUDIT_SHAPE: Final = "subject_file"
#: why a record does or does not count today
RECORD_STATES: Final = frozenset({"counts", "expired", "disputed", "not_yet_in_force"})
#: at most this many entries of each kind in one part: a bound on what the portal renders
MAX_ITEMS: Final = 10_000
#: an audit line longer than this is sent without its logged line (and so unproven): a batch
#: chunk's line names up to 10,000 subjects' hashes, more than a whole part may hold
MAX_LEAF_CHARS: Final = 8 * 1024
#: hashes in one inclusion proof: a tree of 2^64 leaves needs 64 (merkle.MAX_PROOF_HASHES)
MAX_PROOF_HASHES: Final = 64
#: a signed checkpoint note with its cosignatures (signednote.MAX_NOTE_BYTES)
MAX_CHECKPOINT_CHARS: Final = 64 * 1024
#: AuditLog.subject_hash: an HMAC-SHA-256 in lower-case hex
_SUBJECT_HASH: Final = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, kw_only=True)
class RecordLine:
    """One record the department holds about the subject, and whether it counts today."""

    record_id: str
    kind: str
    #: the rule's description (what the record is), from the department's rule file
    description: str
    #: "deduction" or the bonus category the rule adds to
    category: str
    quantity: int
    event_start: str  # ISO date
    event_end: str | None  # ISO date, or None for an open-ended event
    #: "active" or "disputed" as stored
    status: str
    #: one of RECORD_STATES: "counts", or why it does not
    state: str
    #: the rule's validity ("3y", "while_listed", "permanent")
    validity: str
    #: the rule's points per `per_quantity` units (a magnitude; the category gives the sign)
    points: int
    per_quantity: int
    #: the last day the record counts under its validity (ISO date), None when open-ended
    counts_until: str | None = None


@dataclass(frozen=True, kw_only=True)
class KindTotal:
    """The points one record kind gives the subject today, after the kind's cap."""

    kind: str
    category: str
    points: int


@dataclass(frozen=True, kw_only=True)
class ListLine:
    """A red or black list entry about the subject that is in force (or scheduled)."""

    entry_id: str
    list: str
    colour: str  # "red" or "black"
    status: str  # "in_view", "scheduled"
    legal_basis: str
    reason: str
    window_start: str  # ISO date
    window_end: str  # ISO date


@dataclass(frozen=True, kw_only=True)
class AuditLine:
    """One decision a log recorded about the subject (the subject appears as a salted hash in
    the log; the log's owner matched it with its own salt)."""

    time: str  # RFC 3339, UTC
    query_id: str
    requester: str
    purpose: str
    shape: str
    consent_id: str
    decision: str  # "allow" or "deny"
    reason: str
    #: True when the entry is about a batch or cohort the subject was part of
    in_batch: bool = False
    #: the entry's line exactly as the log holds it, without its newline: the input of its
    #: RFC 9162 leaf hash. The fields above must be what this line says (the portal checks).
    #: "" when the line is not sent: an entry not in the log yet (the coordinator's answer to
    #: this very request), or a line over MAX_LEAF_CHARS
    leaf: str = ""
    #: the line's leaf index in the log's tree (its line number less one); None without a leaf
    leaf_index: int | None = None
    #: the RFC 9162 §2.1.3 inclusion proof of the leaf in the tree of the part's checkpoint
    #: (standard base64 hashes, leaf to root); None when the checkpoint does not cover the
    #: entry (pending until the next one) or the part has no checkpoint
    proof: tuple[str, ...] | None = None


@dataclass(frozen=True, kw_only=True)
class CaseStepLine:
    """One step of a case, as the subject sees it (every step the node audited)."""

    at: str  # RFC 3339, UTC
    event: str  # "filed", "upheld", "rejected", "attachments_deleted"
    actor: str  # "subject" or the department
    detail: str


@dataclass(frozen=True, kw_only=True)
class CaseLine:
    """An objection or credit-repair case the subject filed at this department
    (osmanthus.core.cases), with its deadlines and every step."""

    case_id: str
    kind: str  # "objection" or "repair"
    ground: str  # osmanthus.core.cases.CaseGround values
    target: str  # "record" or "list_entry"
    target_id: str
    statement: str
    status: str  # "open", "upheld", "rejected"
    filed_at: str  # RFC 3339, UTC
    decide_by: str  # ISO date
    reply_by: str  # ISO date
    #: open past decide_by on the node's today
    overdue: bool
    decided_at: str | None
    decision_reason: str
    remedy: str  # "withdraw", "correct" or ""
    attachments: int
    steps: tuple[CaseStepLine, ...] = ()


@dataclass(frozen=True, kw_only=True)
class SubjectFile:
    """One party's part of a subject's file."""

    source: str
    query_id: str
    subject_kind: str
    subject_id: str
    as_of: str  # ISO date the states were computed for (China Standard Time)
    generated_at: str  # RFC 3339, UTC
    #: the portal's nonce for the call this part answers (base64url, subjectseal.nonce_text)
    nonce: str = ""
    rules_version: str = ""
    records: tuple[RecordLine, ...] = ()
    kind_totals: tuple[KindTotal, ...] = ()
    #: this department's part of the score: deductions and each bonus category it owns
    deductions: int = 0
    bonuses: Mapping[str, int] = field(default_factory=dict)
    list_entries: tuple[ListLine, ...] = ()
    audit: tuple[AuditLine, ...] = ()
    #: True when more than MAX_ITEMS audit entries matched (or more than fit one part's
    #: size), and only the newest are here
    audit_truncated: bool = False
    #: True when the records did not all fit one part (osmanthus.core.wire.node.
    #: MAX_SEALED_PART_BYTES): those that count are here first, then the newest of the rest
    records_truncated: bool = False
    #: the subject's cases at this department, newest first
    cases: tuple[CaseLine, ...] = ()
    #: True when the cases did not all fit one part whole: the statements and decisions'
    #: reasons of the oldest decided cases are left out (empty), then those cases; open cases
    #: are always here whole
    cases_truncated: bool = False
    #: the department's X25519 case key (raw, base64url without padding) the portal seals a
    #: new case to (osmanthus.core.cases.seal_case); covered by the part's signature. Empty
    #: from the coordinator
    case_key: str = ""
    #: the log's latest signed checkpoint (a C2SP signed note: the log's signature and any
    #: witnesses' cosignatures) to whose size every audit line's proof leads; "" when the
    #: party issues no checkpoints
    checkpoint: str = ""
    #: the subject's salted hash as the party's audit log names them (AuditLog.subject_hash
    #: under the party's own salt; 64 lower-case hex digits), covered by the part's signature:
    #: every logged line in `audit` must name it (the portal checks), so that a party cannot
    #: show verifiable entries about other subjects. "" in a part without logged lines
    subject_hash: str = ""
    version: int = SCHEMA_VERSION


def encode(subject_file: SubjectFile) -> bytes:
    """RFC 8785 canonical JSON of `subject_file` (what a node seals)."""
    for name in ("records", "kind_totals", "list_entries", "audit", "cases"):
        if len(getattr(subject_file, name)) > MAX_ITEMS:
            raise InvalidArgument(f"a subject file holds at most {MAX_ITEMS} {name}", field=name)
    record = asdict(subject_file)
    record["bonuses"] = dict(subject_file.bonuses)
    return rfc8785.dumps(record)


def decode(
    data: bytes, *, source: str, query_id: str, subject_kind: str, subject_id: str, nonce: bytes
) -> SubjectFile:
    """Read a part back, refusing anything but this schema and a file about another subject,
    query or source, or for another call (`nonce`), than expected."""
    try:
        raw = json.loads(data.decode("utf-8"), object_pairs_hook=unique_keys("key"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidArgument(f"the file from {source!r} is not JSON: {exc}", field="file") from exc
    top = _object(raw, "file", _SUBJECT_FILE_FIELDS)
    if top["version"] != SCHEMA_VERSION:
        raise InvalidArgument(
            f"the file from {source!r} has schema version {top['version']!r}, expected "
            f"{SCHEMA_VERSION}",
            field="version",
        )
    for name, expected in (
        ("source", source),
        ("query_id", query_id),
        ("subject_kind", subject_kind),
        ("subject_id", subject_id),
        ("nonce", nonce_text(nonce)),
    ):
        if top[name] != expected:
            raise InvalidArgument(
                f"the file from {source!r} names another {name} than the one asked for",
                field=name,
            )
    bonuses = top["bonuses"]
    if not isinstance(bonuses, dict) or not all(
        isinstance(k, str) and _is_int(v) for k, v in bonuses.items()
    ):
        raise InvalidArgument("bonuses must map category names to whole numbers", field="bonuses")
    return SubjectFile(
        source=top["source"],
        query_id=top["query_id"],
        subject_kind=top["subject_kind"],
        subject_id=top["subject_id"],
        as_of=top["as_of"],
        generated_at=top["generated_at"],
        nonce=top["nonce"],
        rules_version=top["rules_version"],
        records=tuple(_parse_record(item) for item in _list(top["records"], "records", RecordLine)),
        kind_totals=tuple(
            KindTotal(**item) for item in _list(top["kind_totals"], "kind_totals", KindTotal)
        ),
        deductions=top["deductions"],
        bonuses=dict(bonuses),
        list_entries=tuple(
            ListLine(**item) for item in _list(top["list_entries"], "list_entries", ListLine)
        ),
        audit=tuple(
            _parse_audit(item, i) for i, item in enumerate(_list(top["audit"], "audit", AuditLine))
        ),
        audit_truncated=top["audit_truncated"],
        records_truncated=top["records_truncated"],
        cases=tuple(_parse_case(item) for item in _list(top["cases"], "cases", CaseLine)),
        cases_truncated=top["cases_truncated"],
        case_key=top["case_key"],
        checkpoint=_checkpoint_text(top["checkpoint"]),
        subject_hash=_subject_hash_text(top["subject_hash"]),
        version=top["version"],
    )


def today_cst(now: datetime.datetime | None = None) -> datetime.date:
    """The date in China Standard Time (UTC+8), the day records count on."""
    moment = now or datetime.datetime.now(datetime.UTC)
    return (moment + datetime.timedelta(hours=8)).date()


# --- building a part (nodes and the coordinator) ---------------------------------------------

#: which records a file too large keeps first: those that count, then those the subject may
#: want to contest or will see count, then the expired ones
_KEEP_ORDER: Final = {"counts": 0, "disputed": 1, "not_yet_in_force": 2, "expired": 3}


def audit_lines(
    found: Iterable[tuple[AuditEntry, bool]], *, keep: int = MAX_ITEMS
) -> tuple[tuple[AuditLine, ...], bool]:
    """The newest `keep` entries of `found` (AuditLog.entries_about, oldest first), oldest
    first, and whether older ones were left out. Memory stays bounded whatever the log holds."""
    newest: deque[tuple[AuditEntry, bool]] = deque(maxlen=keep)
    seen = 0
    for item in found:
        newest.append(item)
        seen += 1
    lines = tuple(audit_line(entry, in_batch=in_batch) for entry, in_batch in newest)
    return lines, seen > len(lines)


def audit_line(
    entry: AuditEntry,
    *,
    in_batch: bool,
    leaf: str = "",
    leaf_index: int | None = None,
    proof: tuple[str, ...] | None = None,
) -> AuditLine:
    """What the subject is shown of `entry`: the one mapping from a log's entry to a line, used
    by the parties that build a part and by the portal that checks a line against its leaf."""
    return AuditLine(
        time=rfc3339(entry.time),
        query_id=entry.query_id,
        requester=entry.requester,
        purpose=entry.purpose,
        shape=entry.shape,
        consent_id=entry.consent_id,
        decision=entry.decision,
        reason=entry.reason,
        in_batch=in_batch,
        leaf=leaf,
        leaf_index=leaf_index,
        proof=proof,
    )


def rfc3339(moment: datetime.datetime) -> str:
    """`moment` in UTC as RFC 3339 with a Z, to the second's fraction the log kept."""
    return moment.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")


def fit(subject_file: SubjectFile, *, max_bytes: int) -> tuple[SubjectFile, bytes]:
    """`subject_file` and its encoding, made to fit `max_bytes`: the oldest audit lines go
    first (audit_truncated), then the texts of the oldest decided cases and then those cases
    (cases_truncated; open cases stay whole), then records, those that count kept longest
    (records_truncated). ValueError if the file does not fit even so."""
    data = encode(subject_file)
    if len(data) <= max_bytes:
        return subject_file, data
    audit = subject_file.audit
    subject_file, data = _trim(
        data,
        items=audit,
        order=range(len(audit)),
        rebuild=lambda kept: dataclasses.replace(
            subject_file, audit=tuple(audit[i] for i in kept), audit_truncated=True
        ),
        max_bytes=max_bytes,
    )
    if len(data) <= max_bytes:
        return subject_file, data
    subject_file, data = _fit_cases(subject_file, data, max_bytes=max_bytes)
    if len(data) <= max_bytes:
        return subject_file, data
    records = subject_file.records
    subject_file, data = _trim(
        data,
        items=records,
        order=least_useful_first(records),
        rebuild=lambda kept: dataclasses.replace(
            subject_file, records=tuple(records[i] for i in kept), records_truncated=True
        ),
        max_bytes=max_bytes,
    )
    if len(data) <= max_bytes:
        return subject_file, data
    raise ValueError(
        f"a subject's file without records, audit lines or decided cases is {len(data)} bytes, "
        f"more than the {max_bytes} allowed"
    )


def _fit_cases(
    subject_file: SubjectFile, data: bytes, *, max_bytes: int
) -> tuple[SubjectFile, bytes]:
    """Make room among the cases: the statements and reasons of decided cases, the oldest
    decision first, then those cases themselves in the same order. Open cases are never
    touched: the department has still to decide them, and the subject to see them."""
    cases = subject_file.cases
    decided = sorted(
        (i for i, case in enumerate(cases) if case.status != "open"),
        key=lambda i: (cases[i].decided_at or "", cases[i].filed_at, i),
    )
    if not decided:
        return subject_file, data
    bare = {i: dataclasses.replace(cases[i], statement="", decision_reason="") for i in decided}

    def without_texts(cut: int) -> SubjectFile:
        stripped = set(decided[:cut])
        return dataclasses.replace(
            subject_file,
            cases=tuple(bare[i] if i in stripped else c for i, c in enumerate(cases)),
            cases_truncated=subject_file.cases_truncated or cut > 0,
        )

    subject_file, data = _shrink(
        data,
        sizes=[_size(cases[i]) - _size(bare[i]) for i in decided],
        rebuild=without_texts,
        max_bytes=max_bytes,
    )
    if len(data) <= max_bytes:
        return subject_file, data
    stripped_cases = subject_file.cases

    def without_cases(cut: int) -> SubjectFile:
        dropped = set(decided[:cut])
        return dataclasses.replace(
            subject_file,
            cases=tuple(c for i, c in enumerate(stripped_cases) if i not in dropped),
            cases_truncated=True,
        )

    return _shrink(
        data,
        sizes=[_size(stripped_cases[i]) + 1 for i in decided],
        rebuild=without_cases,
        max_bytes=max_bytes,
    )


def _size(item: AuditLine | RecordLine | CaseLine) -> int:
    """Bytes of `item`'s canonical JSON (in a list, one more for the comma after it)."""
    return len(rfc8785.dumps(dataclasses.asdict(item)))


def least_useful_first(records: Sequence[RecordLine]) -> list[int]:
    """Positions of `records`, those a subject can best do without first: expired, then not
    yet in force, then disputed, then those that count; the oldest events first in each."""
    return sorted(
        range(len(records)),
        key=lambda i: (-_KEEP_ORDER[records[i].state], records[i].event_start, i),
    )


#: bytes an estimate of what dropping items frees may be short by (the truncation flags)
_SLACK: Final = 16


def _trim(
    data: bytes,
    *,
    items: Sequence[AuditLine] | Sequence[RecordLine],
    order: Sequence[int],
    rebuild: Callable[[Sequence[int]], SubjectFile],
    max_bytes: int,
) -> tuple[SubjectFile, bytes]:
    """Drop `items` in `order` until the file `rebuild` makes of the rest fits, or none is
    left; `rebuild` takes the positions kept, in their original order."""
    # each item's share of the encoding is its canonical JSON and the comma after it
    return _shrink(
        data,
        sizes=[_size(items[i]) + 1 for i in order],
        rebuild=lambda cut: rebuild(sorted(order[cut:])),
        max_bytes=max_bytes,
    )


def _shrink(
    data: bytes,
    *,
    sizes: Sequence[int],
    rebuild: Callable[[int], SubjectFile],
    max_bytes: int,
) -> tuple[SubjectFile, bytes]:
    """Take the steps that free `sizes` bytes each, in order, as few as make the file that
    `rebuild(steps taken)` builds fit, or all of them."""
    cut = _how_many(sizes, len(data) - max_bytes + _SLACK)
    while True:
        candidate = rebuild(cut)
        data = encode(candidate)
        if len(data) <= max_bytes or cut >= len(sizes):
            return candidate, data
        cut += 1


def _how_many(sizes: Sequence[int], excess: int) -> int:
    """How many of `sizes`, from the front, must go to free at least `excess` bytes."""
    freed = 0
    for count, size in enumerate(sizes):
        if freed >= excess:
            return count
        freed += size
    return len(sizes)


def _parse_record(item: dict[str, Any]) -> RecordLine:
    line = RecordLine(**item)
    if line.state not in RECORD_STATES:
        raise InvalidArgument(
            f"record {line.record_id!r} has state {line.state!r}; expected one of "
            f"{', '.join(sorted(RECORD_STATES))}",
            field="records.state",
        )
    return line


def _parse_audit(item: dict[str, Any], position: int) -> AuditLine:
    where = f"audit[{position}]"
    leaf, index, proof = item["leaf"], item["leaf_index"], item["proof"]
    if len(leaf) > MAX_LEAF_CHARS:
        raise InvalidArgument(
            f"{where}.leaf is over {MAX_LEAF_CHARS} characters", field=f"{where}.leaf"
        )
    if (index is None) != (leaf == ""):
        raise InvalidArgument(
            f"{where} must carry both its logged line and its leaf index, or neither",
            field=f"{where}.leaf_index",
        )
    if index is not None and index < 0:
        raise InvalidArgument(
            f"{where}.leaf_index must not be negative", field=f"{where}.leaf_index"
        )
    if proof is not None:
        if index is None:
            raise InvalidArgument(
                f"{where} carries a proof but no logged line", field=f"{where}.proof"
            )
        if len(proof) > MAX_PROOF_HASHES or not all(isinstance(h, str) for h in proof):
            raise InvalidArgument(
                f"{where}.proof must be a list of at most {MAX_PROOF_HASHES} base64 hashes",
                field=f"{where}.proof",
            )
        proof = tuple(proof)
    return AuditLine(**{**item, "proof": proof})


def _checkpoint_text(text: str) -> str:
    if len(text) > MAX_CHECKPOINT_CHARS:
        raise InvalidArgument(
            f"checkpoint is over {MAX_CHECKPOINT_CHARS} characters", field="checkpoint"
        )
    return text


def _subject_hash_text(text: str) -> str:
    if text and not _SUBJECT_HASH.fullmatch(text):
        raise InvalidArgument(
            "subject_hash must be 64 lower-case hex digits (or empty)", field="subject_hash"
        )
    return text


def _parse_case(item: dict[str, Any]) -> CaseLine:
    steps = _list(item["steps"], f"cases[{item['case_id']!r}].steps", CaseStepLine)
    return CaseLine(**{**item, "steps": tuple(CaseStepLine(**step) for step in steps)})


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _schema(cls: type) -> dict[str, tuple[type, ...]]:
    hints = {
        "str": (str,),
        "int": (int,),
        "bool": (bool,),
        "str | None": (str, type(None)),
        "int | None": (int, type(None)),
        "tuple[str, ...] | None": (list, type(None)),
    }
    out: dict[str, tuple[type, ...]] = {}
    for name, annotation in cls.__annotations__.items():
        out[name] = hints.get(str(annotation), (object,))
    return out


def _check_fields(
    raw: Mapping[str, Any], where: str, schema: Mapping[str, tuple[type, ...]]
) -> None:
    unknown = sorted(set(raw) - set(schema))
    if unknown:
        raise InvalidArgument(f"{where} has unknown keys {unknown}", field=where)
    missing = sorted(set(schema) - set(raw))
    if missing:
        raise InvalidArgument(f"{where} lacks keys {missing}", field=where)
    for name, types in schema.items():
        value = raw[name]
        if object in types:
            continue
        if int in types and bool not in types and isinstance(value, bool):
            raise InvalidArgument(f"{where}.{name} must be a whole number", field=f"{where}.{name}")
        if not isinstance(value, types):
            expected = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise InvalidArgument(f"{where}.{name} must be {expected}", field=f"{where}.{name}")


def _object(raw: object, where: str, schema: Mapping[str, tuple[type, ...]]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise InvalidArgument(f"{where} must be a JSON object", field=where)
    _check_fields(raw, where, schema)
    return raw


def _list(raw: object, where: str, cls: type) -> Sequence[dict[str, Any]]:
    if not isinstance(raw, list):
        raise InvalidArgument(f"{where} must be a list", field=where)
    if len(raw) > MAX_ITEMS:
        raise InvalidArgument(f"{where} holds more than {MAX_ITEMS} items", field=where)
    schema = _schema(cls)
    return [_object(item, f"{where}[{i}]", schema) for i, item in enumerate(raw)]


_SUBJECT_FILE_FIELDS: Final = {
    **_schema(SubjectFile),
    "records": (list,),
    "kind_totals": (list,),
    "list_entries": (list,),
    "audit": (list,),
    "cases": (list,),
    "bonuses": (dict,),
}

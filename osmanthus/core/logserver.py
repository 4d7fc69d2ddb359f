"""Serves one transparency log over gRPC: its checkpoints, their cosignatures, proofs and entries.

A `LocalLog` bundles a peer's AuditLog, the Checkpointer that signs its tree heads
(osmanthus.core.checkpoints) and the witness cosignatures the log has received for them (C2SP
tlog-cosignature lines). The cosignatures are kept beside the log in `<log>.cosignatures`, one
JSON line `{"size", "root" (hex), "lines": [...]}` per call that brought new ones, appended and
fsynced, mode 0600. A line is kept only if it verifies against a witness key of the roster and
is for a checkpoint this log signed (the latest, or one in `<log>.checkpoints`); one cosignature
per witness and checkpoint, so handing the same lines again changes nothing.

`TransparencyServicer` implements TransparencyService (protos/osmanthus/v1/transparency.proto)
for the local log: GetCheckpoint returns the latest signed note with every cosignature held for
it; GetInclusionProof and GetConsistencyProof return RFC 9162 §2.1.3 / §2.1.4 proofs from the
log's own tree; GetEntries at most MAX_ENTRIES_PER_CALL lines and MAX_ENTRIES_RESPONSE_BYTES
(a page ends early rather than grow past it: the reader continues from where it stopped);
AddCosignatures stores lines as above. A size of 0 where a tree size is asked (`tree_size`,
`second_size`) means the latest checkpoint's size; any size beyond the log's tree is refused
naming the field. Who may call is the injected `authorize` (nobody without one); requests for
another origin go to the optional `relay` (the coordinator forwards them to the node whose log
it is), NOT_FOUND without one.
The server side's TransparencyService conversions are here; the clients' are in
osmanthus.core.wire.transparency.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

import grpc

from osmanthus.core import probes
from osmanthus.core.audit import AuditLog
from osmanthus.core.checkpoints import Checkpointer, SignedCheckpoint, history_path
from osmanthus.core.errors import (
    ConfigError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OsmanthusError,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from osmanthus.core.files import append_durably
from osmanthus.core.grpc_errors import servicer_method
from osmanthus.core.logkeys import LogRoster
from osmanthus.core.server import Caller, current_caller
from osmanthus.core.signednote import (
    MAX_NOTE_BYTES,
    SIGNATURE_LINE_PREFIX,
    TEXT_SIGNATURES_SEPARATOR,
    Checkpoint,
    CosignatureVerifier,
    NoteSigner,
    NoteVerifier,
    open_note,
    parse_checkpoint,
)
from osmanthus.core.wire.transparency import (
    ENTRIES_RESPONSE_OVERHEAD_BYTES,
    ENTRY_OVERHEAD_BYTES,
    MAX_ENTRIES_RESPONSE_BYTES,
)
from osmanthus.v1 import transparency_pb2, transparency_pb2_grpc

#: the cosignatures of `audit.jsonl`'s checkpoints are in `audit.jsonl.cosignatures`
COSIGNATURES_SUFFIX: Final = ".cosignatures"
#: transparency.proto GetEntries: at most this many entries a call
MAX_ENTRIES_PER_CALL: Final = 1000
#: the default checkpoint cadence of `node serve` and `coordinator serve`
DEFAULT_CHECKPOINT_EVERY: Final = 1000
DEFAULT_CHECKPOINT_INTERVAL_S: Final = 60.0
#: lines between two remembered byte offsets of the log, for GetEntries
_INDEX_STRIDE: Final = 1024

#: the TransparencyService methods, as `authorize` and `relay` are told them
METHODS: Final = (
    "GetCheckpoint",
    "GetInclusionProof",
    "GetConsistencyProof",
    "GetEntries",
    "AddCosignatures",
)

#: authorize(caller, method, origin): returns if the caller may call `method` on the log
#: `origin` (the serving party's own origin for a request naming none); raises an
#: OsmanthusError (PermissionDenied, Unauthenticated, RateLimited) otherwise, after auditing it
Authorize = Callable[[Caller, str, str], None]
#: relay(origin, method, request) -> response: the same call to the party that holds `origin`'s
#: log; NotFound for an origin it does not know
Relay = Callable[[str, str, Any], Any]

_M = TypeVar("_M")

_log = logging.getLogger(__name__)


def cosignatures_path(log_path: Path) -> Path:
    return log_path.with_name(log_path.name + COSIGNATURES_SUFFIX)


@dataclass(frozen=True)
class CosignedCheckpoint:
    """A checkpoint this log signed, its signed note, and the witness lines held for it."""

    signed: SignedCheckpoint
    cosignatures: tuple[str, ...]

    @property
    def note(self) -> bytes:
        """The log's note with the cosignature lines after its own signature."""
        return self.signed.note + "".join(self.cosignatures).encode("utf-8")


class LocalLog:
    """One peer's audit log as a transparency log: checkpoints, cosignatures, proofs, entries.

    Thread-safe. A CheckpointSource (osmanthus.core.auditproofs): `last` is the latest
    checkpoint with the cosignatures held for it, `latest_cosigned()` the newest checkpoint
    that a witness of the roster cosigned. `checkpointer` is the log's own; `start` runs it in
    the background until `close`.
    """

    def __init__(
        self,
        *,
        log: AuditLog,
        checkpointer: Checkpointer,
        witnesses: Sequence[CosignatureVerifier] = (),
    ) -> None:
        if checkpointer.log is not log:
            raise ConfigError("the checkpointer signs another log", field="checkpointer")
        self.log = log
        self.checkpointer = checkpointer
        self.origin = checkpointer.origin
        self.cosignatures_path = cosignatures_path(log.path)
        self._witnesses = {w.name: w for w in witnesses}
        self._lock = threading.Lock()
        #: (size, root) -> witness name -> its line, for checkpoints this log signed
        self._held: dict[tuple[int, bytes], dict[str, str]] = {}
        #: the largest checkpoint this log signed that holds a cosignature (the log's note)
        self._newest_cosigned: SignedCheckpoint | None = None
        self._index = _LineIndex(log)
        self._load()
        # its checkpoint age is a metric (osmanthus.core.metrics) while it is open
        probes.log_opened(self)

    # -- checkpoints and cosignatures ------------------------------------------------------------

    @property
    def last(self) -> SignedCheckpoint | None:
        """The latest checkpoint, its note carrying the cosignatures held for it; None before
        the first."""
        last = self.checkpointer.last
        if last is None:
            return None
        return SignedCheckpoint(checkpoint=last.checkpoint, note=self._cosigned(last).note)

    def latest_cosigned(self) -> SignedCheckpoint | None:
        """The largest checkpoint this log signed for which a witness's cosignature is held,
        its note carrying every cosignature held for it; None while no witness cosigned one.
        Read from memory: no file is read and nothing is signed."""
        with self._lock:
            newest = self._newest_cosigned
        if newest is None:
            return None
        return SignedCheckpoint(checkpoint=newest.checkpoint, note=self._cosigned(newest).note)

    def issue(self) -> SignedCheckpoint:
        """Sign a checkpoint of the whole log now (Checkpointer.issue)."""
        return self.checkpointer.issue()

    def start(self) -> None:
        """Issue checkpoints in the background (Checkpointer.start) until `close`."""
        self.checkpointer.start()

    def latest(self) -> CosignedCheckpoint:
        """The latest checkpoint with its cosignatures; FailedPrecondition if none was issued."""
        last = self.checkpointer.last
        if last is None:
            raise FailedPrecondition(
                f"{self.origin}: no checkpoint issued yet (one is signed every "
                f"{self.checkpointer.every_entries} entries or {self.checkpointer.every_s:g} s "
                "once the log grew)"
            )
        return self._cosigned(last)

    def _cosigned(self, signed: SignedCheckpoint) -> CosignedCheckpoint:
        with self._lock:
            held = self._held.get((signed.size, signed.root), {})
            lines = tuple(held[name] for name in sorted(held))
        return CosignedCheckpoint(signed=signed, cosignatures=lines)

    def add_cosignatures(self, note: bytes) -> CosignedCheckpoint:
        """Keep the witness cosignatures in `note` (a checkpoint this log signed, then signature
        lines) that verify against the roster's witness keys; lines from other keys (the log's
        own signature among them) are ignored. Refused, keeping nothing, if none verifies."""
        if not isinstance(note, bytes) or not note:
            raise InvalidArgument("a cosigned checkpoint note is required", field="note")
        if len(note) > MAX_NOTE_BYTES:
            raise InvalidArgument(f"longer than {MAX_NOTE_BYTES} bytes", field="note")
        split = note.rfind(TEXT_SIGNATURES_SEPARATOR)
        if split < 0:
            raise InvalidArgument(
                "no blank line separates the checkpoint from the signatures", field="note"
            )
        text, block = note[: split + 1], note[split + 2 :]
        try:
            checkpoint = parse_checkpoint(text.decode("utf-8"))
        except UnicodeDecodeError:
            raise InvalidArgument("not valid UTF-8", field="note") from None
        if checkpoint.origin != self.origin:
            raise InvalidArgument(
                f"the checkpoint is for origin {checkpoint.origin!r}, not this log's "
                f"{self.origin!r}",
                field="note",
            )
        signed = self._signed_checkpoint(checkpoint)
        if signed is None or signed.checkpoint.body().encode("utf-8") != text:
            raise InvalidArgument(
                f"{self.origin} signed no checkpoint of {checkpoint.size} entries with that root: "
                "a log keeps cosignatures of its own checkpoints only",
                field="note",
            )
        good, bad = self._verified_lines(text, block)
        if not good:
            if bad:
                raise PermissionDenied(
                    f"the cosignature of witness {bad[0]!r} does not verify against its key in "
                    "the roster; nothing was kept",
                    field="note",
                )
            raise InvalidArgument(
                "the note carries no cosignature from a witness of the roster "
                f"({', '.join(sorted(self._witnesses)) or 'none listed'})",
                field="note",
            )
        if bad:
            _log.warning(
                "%s: cosignatures of %s for checkpoint %d do not verify; ignored",
                self.origin, ", ".join(sorted(bad)), checkpoint.size,
            )  # fmt: skip
        key = (signed.size, signed.root)
        with self._lock:
            held = self._held.setdefault(key, {})
            new = {name: line for name, line in good.items() if name not in held}
            if new:
                record = {
                    "size": signed.size,
                    "root": signed.root.hex(),
                    "lines": [new[name] for name in sorted(new)],
                }
                data = json.dumps(record, ensure_ascii=True, separators=(",", ":")) + "\n"
                append_durably(self.cosignatures_path, data.encode("ascii"), field="cosignatures")
                held.update(new)
            self._note_cosigned(signed)
        return self._cosigned(signed)

    def _note_cosigned(self, signed: SignedCheckpoint) -> None:
        """Remember `signed` as the newest cosigned checkpoint if it is; called under _lock."""
        if self._newest_cosigned is None or signed.size > self._newest_cosigned.size:
            self._newest_cosigned = signed

    def _verified_lines(self, text: bytes, block: bytes) -> tuple[dict[str, str], list[str]]:
        """(witness name -> its verifying line, names of roster witnesses whose line failed)."""
        good: dict[str, str] = {}
        bad: list[str] = []
        try:
            lines = block.decode("utf-8").split("\n")
        except UnicodeDecodeError:
            raise InvalidArgument("not valid UTF-8", field="note") from None
        for line in lines:
            if not line:
                continue
            name = line[len(SIGNATURE_LINE_PREFIX) :].partition(" ")[0]
            verifier = self._witnesses.get(name) if line.startswith(SIGNATURE_LINE_PREFIX) else None
            if verifier is None or name in good:
                continue  # another key's signature (the log's own, an unknown witness's)
            try:
                open_note(text + b"\n" + (line + "\n").encode("utf-8"), [verifier])
            except (InvalidArgument, Unauthenticated):
                bad.append(name)
                continue
            good[name] = line + "\n"
        return good, [name for name in bad if name not in good]

    def _signed_checkpoint(self, checkpoint: Checkpoint) -> SignedCheckpoint | None:
        """This log's signed checkpoint equal to `checkpoint`, from the latest or the history."""
        last = self.checkpointer.last
        if last is not None and last.checkpoint == checkpoint:
            return last
        for size, root, note in _history(history_path(self.log.path)):
            if size == checkpoint.size and root == checkpoint.root_hash:
                try:
                    found = parse_checkpoint(_note_text(note).decode("utf-8"))
                except (InvalidArgument, UnicodeDecodeError):
                    return None
                if found != checkpoint:
                    return None
                return SignedCheckpoint(checkpoint=found, note=note)
        return None

    def _load(self) -> None:
        """Read `<log>.cosignatures`, keeping the lines that still verify against the roster."""
        try:
            handle = self.cosignatures_path.open("rb")
        except FileNotFoundError:
            return
        except OSError as exc:
            raise ConfigError(f"{self.cosignatures_path}: cannot read: {exc.strerror}") from exc
        signed: dict[tuple[int, bytes], bytes] = {
            (size, root): note for size, root, note in _history(history_path(self.log.path))
        }
        last = self.checkpointer.last
        if last is not None:
            signed.setdefault((last.size, last.root), last.note)
        with handle:
            for number, raw in enumerate(handle, 1):
                if not raw.endswith(b"\n"):
                    break  # a torn last line: a crash while appending, never acknowledged
                try:
                    record = json.loads(raw)
                    key = (int(record["size"]), bytes.fromhex(record["root"]))
                    lines = [str(line) for line in record["lines"]]
                except (ValueError, KeyError, TypeError) as exc:
                    raise ConfigError(
                        f"{self.cosignatures_path} line {number}: not a cosignature record "
                        f"({type(exc).__name__}); restore the file from a backup"
                    ) from exc
                note = signed.get(key)
                if note is None:
                    continue
                text = _note_text(note)
                good, _ = self._verified_lines(text, "".join(lines).encode("utf-8"))
                self._held.setdefault(key, {}).update(good)
                if good:
                    try:
                        checkpoint = parse_checkpoint(text.decode("utf-8"))
                    except (InvalidArgument, UnicodeDecodeError):
                        continue  # verify_log reports a bad history record; not ours to
                    self._note_cosigned(SignedCheckpoint(checkpoint=checkpoint, note=note))

    # -- proofs and entries ----------------------------------------------------------------------

    def resolve_size(self, size: int, *, field: str) -> int:
        """`size`, or the latest checkpoint's for 0; InvalidArgument beyond the tree."""
        tree_size = self.log.tree_size
        if size == 0:
            return self.latest().signed.size
        if size > tree_size:
            raise InvalidArgument(
                f"{field} {size} is beyond the log's tree of {tree_size} entries", field=field
            )
        return size

    def inclusion_proof(self, leaf_index: int, tree_size: int) -> tuple[int, list[bytes], bytes]:
        """(tree size, RFC 9162 §2.1.3.1 path, the entry's line) of entry `leaf_index`."""
        size = self.resolve_size(tree_size, field="tree_size")
        if leaf_index >= size:
            raise InvalidArgument(
                f"leaf_index {leaf_index} is not in a tree of {size} entries (indexes run from "
                f"0 to {size - 1})"
                if size
                else "the tree is empty: it has no leaf to prove",
                field="leaf_index",
            )
        proof = self.log.inclusion_proof(leaf_index, size)
        entry = self._index.lines(leaf_index, leaf_index + 1, field="leaf_index")[0]
        return size, proof, entry

    def consistency_proof(self, first_size: int, second_size: int) -> tuple[int, list[bytes]]:
        """(second size, RFC 9162 §2.1.4.1 proof from `first_size`); from 0 the proof is empty
        (every tree extends the empty one: C2SP tlog-witness takes an empty proof from old
        size 0)."""
        second = self.resolve_size(second_size, field="second_size")
        if first_size > second:
            raise InvalidArgument(
                f"first_size {first_size} is larger than second_size {second}", field="first_size"
            )
        if first_size == 0:
            return second, []
        return second, self.log.consistency_proof(first_size, second)

    def entries(
        self, start: int, end: int, *, max_bytes: int = MAX_ENTRIES_RESPONSE_BYTES
    ) -> tuple[list[bytes], int]:
        """(lines [start, start + n) without their newlines, the tree size they were read under):
        every line to `end` (n = end - start) if the response fits in `max_bytes`, else the
        lines before the first that would not fit (at least one: FailedPrecondition naming the
        entry if that one alone does not)."""
        tree_size = self.log.tree_size
        if end <= start:
            raise InvalidArgument(f"end {end} must be larger than start {start}", field="end")
        if end - start > MAX_ENTRIES_PER_CALL:
            raise InvalidArgument(
                f"end {end} asks for {end - start} entries from start {start}; at most "
                f"{MAX_ENTRIES_PER_CALL} entries a call",
                field="end",
            )
        if end > tree_size:
            raise InvalidArgument(
                f"end {end} is beyond the log's tree of {tree_size} entries", field="end"
            )
        return self._index.lines(start, end, max_bytes=max_bytes), tree_size

    def close(self) -> None:
        probes.log_closed(self)
        self.checkpointer.close()


def open_local_log(
    *,
    log: AuditLog,
    signer: NoteSigner,
    origin: str,
    roster: LogRoster | None,
    every_entries: int = DEFAULT_CHECKPOINT_EVERY,
    every_s: float = DEFAULT_CHECKPOINT_INTERVAL_S,
) -> LocalLog:
    """The log's LocalLog: a checkpoint of the log as it is now is signed at once (unless the
    last one already covers it); `start()` then signs one every `every_entries` entries or
    `every_s` seconds. ConfigError if the key is not the origin's (or not the roster's key for
    it) or the log does not extend its last checkpoint."""
    if signer.name != origin:
        raise ConfigError(
            f"the log key is named {signer.name!r}; the key of this log must be named after its "
            f"origin {origin!r} (osmanthus certs log-key)",
            field="log_key",
        )
    if roster is not None:
        listed = roster.logs.get(origin)
        if listed is not None and listed.verifier_key != signer.verifier_key:
            raise ConfigError(
                f"the roster lists another key for {origin!r} than this log key: witnesses and "
                "auditors would refuse every checkpoint it signs. Use the log.key whose log.pub "
                "the roster lists",
                field="log_key",
            )
        mine = NoteVerifier(name=signer.name, public_key=signer.public_key)
        others = [o for o in roster.origins_with_key(mine) if o != origin]
        if others:
            # one key signing two logs lets either pass for the other (a coordinator replica
            # given the coordinator's log.key, renamed): witnesses would see a fork, or none
            raise ConfigError(
                f"the roster lists this log key's public key for {', '.join(others)}, not for "
                f"{origin!r}: every log signs with a key of its own. Give this log its own key "
                "(osmanthus certs log-key; a coordinator replica's: --role coordinator "
                "--replica NAME)",
                field="log_key",
            )
    checkpointer = Checkpointer(
        log=log, signer=signer, origin=origin, every_entries=every_entries, every_s=every_s
    )
    try:
        last = checkpointer.last
        if last is None or last.size != log.tree_size:
            checkpointer.issue()
        return LocalLog(
            log=log,
            checkpointer=checkpointer,
            witnesses=roster.witness_verifiers() if roster is not None else (),
        )
    except BaseException:
        checkpointer.close()
        raise


class _LineIndex:
    """Byte offsets of every _INDEX_STRIDE-th line of a log, extended as the log grows, so that
    reading lines [start, end) seeks near `start` instead of reading the log from its start."""

    def __init__(self, log: AuditLog) -> None:
        self._path = log.path
        self._lock = threading.Lock()
        #: _marks[k] is the byte offset of line k * _INDEX_STRIDE
        self._marks: list[int] = [0]
        #: lines counted so far and the offset after them
        self._counted = 0
        self._offset = 0

    def lines(
        self,
        start: int,
        end: int,
        *,
        max_bytes: int = MAX_ENTRIES_RESPONSE_BYTES,
        field: str = "start",
    ) -> list[bytes]:
        """Lines [start, end) without newlines, or those of them before the first that would
        take a GetEntriesResponse past `max_bytes` (always the first line: FailedPrecondition if
        it alone does not fit). The caller checked end <= the tree's size (so every one of them
        is whole and durable). A served line is read no further than the room left, so a huge
        line costs no more memory than the budget."""
        with self._lock, self._path.open("rb") as handle:
            self._extend(handle, start)
            mark = start // _INDEX_STRIDE
            handle.seek(self._marks[mark])
            for number in range(mark * _INDEX_STRIDE, start):
                if not handle.readline().endswith(b"\n"):
                    raise Unavailable(f"{self._path}: line {number + 1} is not whole yet")
            out: list[bytes] = []
            used = ENTRIES_RESPONSE_OVERHEAD_BYTES
            for number in range(start, end):
                room = max(max_bytes - used - ENTRY_OVERHEAD_BYTES, 0)
                # the line and its newline if they fit in the room left, else `room + 1` bytes
                raw = handle.readline(room + 1)
                if raw.endswith(b"\n"):
                    out.append(raw[:-1])
                    used += len(raw) - 1 + ENTRY_OVERHEAD_BYTES
                    continue
                if len(raw) <= room:
                    raise Unavailable(f"{self._path}: line {number + 1} is not whole yet")
                if out:
                    break  # the page ends here; the reader asks again from this entry
                raise FailedPrecondition(
                    f"entry {number} (line {number + 1} of the log) is longer than one "
                    f"GetEntries response may carry ({max_bytes} bytes with its framing), so "
                    "it cannot be served over TransparencyService: audit it from a copy of the "
                    "log file (osmanthus audit verify), or ask from the entry after it",
                    field=field,
                )
            return out

    def _extend(self, handle: Any, upto: int) -> None:
        """Count lines until the mark of line `upto` is known."""
        needed = upto // _INDEX_STRIDE
        if len(self._marks) > needed:
            return
        handle.seek(self._offset)
        while len(self._marks) <= needed:
            raw = handle.readline()
            if not raw.endswith(b"\n"):
                raise Unavailable(f"{self._path}: the log is shorter than its tree")
            self._counted += 1
            self._offset += len(raw)
            if self._counted % _INDEX_STRIDE == 0:
                self._marks.append(self._offset)


def _note_text(note: bytes) -> bytes:
    """The text of a signed note (up to and with the newline before the blank line)."""
    return note[: note.rfind(TEXT_SIGNATURES_SEPARATOR) + 1]


def _history(path: Path) -> Iterator[tuple[int, bytes, bytes]]:
    """(size, root, note) of each whole record of a checkpoint history; nothing if none."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    with handle:
        for raw in handle:
            if not raw.endswith(b"\n"):
                return
            try:
                record = json.loads(raw)
                yield int(record["size"]), bytes.fromhex(record["root"]), record["note"].encode()
            except (ValueError, KeyError, TypeError, AttributeError):
                continue  # the checkpointer and verify_log report a bad record; not ours to


# --- the servicer --------------------------------------------------------------------------------


def signed_checkpoint_to_proto(note: bytes) -> transparency_pb2.SignedCheckpoint:
    """A SignedCheckpoint message of a note (its fields parsed from the note's text)."""
    checkpoint = parse_checkpoint(_note_text(note).decode("utf-8"))
    return transparency_pb2.SignedCheckpoint(
        note=note,
        origin=checkpoint.origin,
        tree_size=checkpoint.size,
        root_hash=checkpoint.root_hash,
    )


def _deny_all(caller: Caller, method: str, origin: str) -> None:
    raise PermissionDenied(
        f"this server serves no transparency log reads ({method} on {origin}); the caller's "
        f"certificate names {caller.peer.role.value} {caller.peer.name!r}"
    )


class TransparencyServicer(transparency_pb2_grpc.TransparencyServiceServicer):
    """TransparencyService for a LocalLog, with `authorize` deciding who may call (nobody
    without it) and `relay` answering for other origins (NOT_FOUND without it).

    With `roster`, a relayed checkpoint is passed on only if the roster's key for its origin
    signed it and it is for the origin asked: a node cannot pass off another log's checkpoint
    through the coordinator.
    """

    def __init__(
        self,
        *,
        local: LocalLog | None,
        authorize: Authorize | None = None,
        relay: Relay | None = None,
        roster: LogRoster | None = None,
    ) -> None:
        self._local = local
        self._authorize: Authorize = authorize if authorize is not None else _deny_all
        self._relay = relay
        self._roster = roster

    def _route(self, method: str, origin: str) -> LocalLog | None:
        """The local log if `origin` names it (or nothing), after `authorize`; None: relay."""
        own = self._local.origin if self._local is not None else ""
        asked = origin or own
        if not asked:
            raise NotFound("this server keeps no transparency log; name an origin", field="origin")
        self._authorize(current_caller(), method, asked)
        if self._local is not None and asked == own:
            return self._local
        if self._relay is None:
            raise NotFound(
                f"no log {asked!r} here" + (f"; this server serves {own!r}" if own else ""),
                field="origin",
            )
        return None

    def _relayed(self, method: str, request: Any, kind: type[_M]) -> _M:
        assert self._relay is not None
        response = self._relay(request.origin, method, request)
        if not isinstance(response, kind):
            raise Unavailable(f"the relay for {request.origin} answered {method} wrongly")
        if isinstance(response, transparency_pb2.SignedCheckpoint):
            self._check_relayed(request.origin, response)
        return response

    def _check_relayed(self, origin: str, response: transparency_pb2.SignedCheckpoint) -> None:
        if self._roster is None:
            return
        try:
            text = open_note(response.note, [self._roster.log_verifier(origin)]).text
            checkpoint = parse_checkpoint(text)
        except NotFound:
            raise
        except OsmanthusError as exc:
            raise Unavailable(
                f"the checkpoint relayed for {origin} is not signed by its key in the roster "
                f"({exc.message}); not passed on"
            ) from None
        if (
            checkpoint.origin != origin
            or checkpoint.size != response.tree_size
            or checkpoint.root_hash != response.root_hash
            or response.origin != origin
        ):
            raise Unavailable(
                f"the checkpoint relayed for {origin} does not match its own fields or the "
                "origin asked; not passed on"
            )

    @servicer_method
    def GetCheckpoint(  # noqa: N802 - gRPC method name
        self, request: transparency_pb2.GetCheckpointRequest, context: grpc.ServicerContext
    ) -> transparency_pb2.SignedCheckpoint:
        local = self._route("GetCheckpoint", request.origin)
        if local is None:
            return self._relayed("GetCheckpoint", request, transparency_pb2.SignedCheckpoint)
        return signed_checkpoint_to_proto(local.latest().note)

    @servicer_method
    def GetInclusionProof(  # noqa: N802 - gRPC method name
        self, request: transparency_pb2.GetInclusionProofRequest, context: grpc.ServicerContext
    ) -> transparency_pb2.InclusionProof:
        local = self._route("GetInclusionProof", request.origin)
        if local is None:
            return self._relayed("GetInclusionProof", request, transparency_pb2.InclusionProof)
        size, proof, entry = local.inclusion_proof(request.leaf_index, request.tree_size)
        return transparency_pb2.InclusionProof(
            leaf_index=request.leaf_index, tree_size=size, hashes=proof, entry=entry
        )

    @servicer_method
    def GetConsistencyProof(  # noqa: N802 - gRPC method name
        self, request: transparency_pb2.GetConsistencyProofRequest, context: grpc.ServicerContext
    ) -> transparency_pb2.ConsistencyProof:
        local = self._route("GetConsistencyProof", request.origin)
        if local is None:
            return self._relayed("GetConsistencyProof", request, transparency_pb2.ConsistencyProof)
        second, proof = local.consistency_proof(request.first_size, request.second_size)
        return transparency_pb2.ConsistencyProof(
            first_size=request.first_size, second_size=second, hashes=proof
        )

    @servicer_method
    def GetEntries(  # noqa: N802 - gRPC method name
        self, request: transparency_pb2.GetEntriesRequest, context: grpc.ServicerContext
    ) -> transparency_pb2.GetEntriesResponse:
        local = self._route("GetEntries", request.origin)
        if local is None:
            return self._relayed("GetEntries", request, transparency_pb2.GetEntriesResponse)
        lines, tree_size = local.entries(request.start, request.end)
        return transparency_pb2.GetEntriesResponse(
            start=request.start, entries=lines, tree_size=tree_size
        )

    @servicer_method
    def AddCosignatures(  # noqa: N802 - gRPC method name
        self, request: transparency_pb2.AddCosignaturesRequest, context: grpc.ServicerContext
    ) -> transparency_pb2.SignedCheckpoint:
        local = self._route("AddCosignatures", request.origin)
        if local is None:
            return self._relayed("AddCosignatures", request, transparency_pb2.SignedCheckpoint)
        return signed_checkpoint_to_proto(local.add_cosignatures(request.note).note)


#: the full name of TransparencyService, for start_server's service_names
TRANSPARENCY_SERVICE_NAME: Final = transparency_pb2.DESCRIPTOR.services_by_name[
    "TransparencyService"
].full_name

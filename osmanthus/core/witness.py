"""A transparency-log witness: cosigns a log's checkpoint only if it extends what it cosigned.

Follows C2SP tlog-witness (https://c2sp.org/tlog-witness), carried over gRPC instead of HTTP:
the add-checkpoint request body is the specification's, byte for byte,

    old <size>\\n
    <base64 consistency proof hash>\\n   (zero or more)
    \\n
    <signed checkpoint note>

and the answer is the witness's C2SP tlog-cosignature line(s). For each log (by origin) the
witness keeps the latest checkpoint it cosigned, durably, and checks, in the specification's
order:

1. the origin is known (the roster lists the log's key), else `NotFound` (404);
2. the note carries a valid signature by the log's key, else `PermissionDenied` (403);
3. the old size is not larger than the checkpoint's size, else `InvalidArgument` (400);
4. the old size is the size it last cosigned (0 for a log it never cosigned), else
   `WitnessConflict` carrying that size (409); at the same size the roots must be equal, else
   `WitnessConflict` (409: a fork);
5. the consistency proof from its last root to the new root verifies (RFC 9162 §2.1.4.2),
   else `WitnessInconsistent` (422).

Only then does it store the new checkpoint (atomically, fsynced) and cosign it. Refusals that
show the log misbehaving (a bad signature under its name, a checkpoint smaller than one already
cosigned: a rollback; another root at a cosigned size: a fork; a failed proof) are alarms: the
witness logs them at ERROR, keeps them in its alarm file and counts them. A merely stale old
size (the submitter was behind) is a refusal, not an alarm.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from osmanthus.core import merkle
from osmanthus.core.errors import (
    ConfigError,
    InvalidArgument,
    NotFound,
    OsmanthusError,
    PermissionDenied,
    Unauthenticated,
    WitnessConflict,
    WitnessInconsistent,
)
from osmanthus.core.files import write_atomically
from osmanthus.core.logkeys import LogRoster
from osmanthus.core.signednote import (
    MAX_NOTE_BYTES,
    Checkpoint,
    CosignatureSigner,
    open_note,
    parse_checkpoint,
)

#: the first line of an add-checkpoint body names the old size after this word and a space
OLD_SIZE_PREFIX: Final = b"old "
#: a body is the old-size line, at most MAX_PROOF_HASHES proof lines, a blank line and a note
MAX_BODY_BYTES: Final = MAX_NOTE_BYTES + 64 * (merkle.MAX_PROOF_HASHES + 2)
#: the reasons a refusal is counted under (metrics label values)
REASON_UNKNOWN_ORIGIN: Final = "unknown_origin"
REASON_BAD_SIGNATURE: Final = "bad_signature"
REASON_MALFORMED: Final = "malformed"
REASON_OLD_SIZE_AHEAD: Final = "old_size_ahead"
REASON_STALE: Final = "stale_old_size"
REASON_ROLLBACK: Final = "rollback"
REASON_FORK: Final = "fork"
REASON_INCONSISTENT: Final = "inconsistent"
#: the reasons that show a log misbehaving rather than a submitter behind or confused
ALARM_REASONS: Final = frozenset(
    {REASON_BAD_SIGNATURE, REASON_ROLLBACK, REASON_FORK, REASON_INCONSISTENT}
)
_STATE_VERSION: Final = 1
#: how many earlier cosigned checkpoints per log a witness remembers to tell a replay from a
#: rollback (in memory: after a restart an old checkpoint replayed is reported as a rollback)
REPLAY_MEMORY: Final = 256

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AddCheckpoint:
    """A parsed add-checkpoint request body."""

    old_size: int
    proof: tuple[bytes, ...]
    note: bytes


def encode_add_checkpoint(*, old_size: int, proof: Sequence[bytes], note: bytes) -> bytes:
    """The C2SP tlog-witness add-checkpoint body for `note` and a proof from `old_size`."""
    if isinstance(old_size, bool) or not isinstance(old_size, int) or old_size < 0:
        raise InvalidArgument("the old size must be a whole number, 0 or more", field="old_size")
    lines = [OLD_SIZE_PREFIX + str(old_size).encode("ascii")]
    for item in proof:
        if not isinstance(item, bytes) or len(item) != merkle.HASH_BYTES:
            raise InvalidArgument(
                f"each proof hash must be {merkle.HASH_BYTES} bytes", field="proof"
            )
        lines.append(base64.b64encode(item))
    return b"\n".join(lines) + b"\n\n" + note


def parse_add_checkpoint(body: bytes) -> AddCheckpoint:
    """Parse an add-checkpoint body, refusing anything malformed (InvalidArgument, "body")."""
    if not isinstance(body, bytes):
        raise InvalidArgument("the request body must be bytes", field="body")
    if len(body) > MAX_BODY_BYTES:
        raise InvalidArgument(f"the body is over {MAX_BODY_BYTES} bytes", field="body")
    head, sep, note = body.partition(b"\n\n")
    if not sep:
        raise InvalidArgument(
            "no blank line between the old size and proof lines and the checkpoint", field="body"
        )
    lines = head.split(b"\n")
    first = lines[0]
    digits = first[len(OLD_SIZE_PREFIX) :]
    if (
        not first.startswith(OLD_SIZE_PREFIX)
        or not digits.isdigit()
        or (digits.startswith(b"0") and digits != b"0")
        or len(digits) > 20
    ):
        raise InvalidArgument(
            'the first line must be "old <size>", a decimal without leading zeros',
            field="body.old_size",
        )
    proof: list[bytes] = []
    for number, line in enumerate(lines[1:], start=2):
        try:
            item = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError):
            item = b""
        if len(item) != merkle.HASH_BYTES or base64.b64encode(item) != line:
            raise InvalidArgument(
                f"line {number}: a proof line must be the standard base64 of a "
                f"{merkle.HASH_BYTES}-byte hash",
                field="body.proof",
            )
        proof.append(item)
    if len(proof) > merkle.MAX_PROOF_HASHES:
        raise InvalidArgument(
            f"{len(proof)} proof hashes; at most {merkle.MAX_PROOF_HASHES}", field="body.proof"
        )
    return AddCheckpoint(old_size=int(digits), proof=tuple(proof), note=note)


@dataclass(frozen=True)
class WitnessedCheckpoint:
    """The latest checkpoint a witness cosigned for one log, and the log-signed note."""

    origin: str
    size: int
    root: bytes
    note: bytes


class AlarmSink(Protocol):
    """Where a witness reports a log's misbehaviour (besides its own log and counters)."""

    def alarm(self, origin: str, reason: str, detail: str) -> None: ...


class FileAlarmSink:
    """Appends each alarm as one JSON line ({"time", "origin", "reason", "detail"}), fsynced."""

    def __init__(self, path: Path, *, now: Callable[[], float] = time.time) -> None:
        self.path = path
        self._now = now
        self._lock = threading.Lock()

    def alarm(self, origin: str, reason: str, detail: str) -> None:
        line = json.dumps(
            {"time": round(self._now(), 3), "origin": origin, "reason": reason, "detail": detail},
            ensure_ascii=False,
            sort_keys=True,
        )
        with self._lock, self.path.open("a", encoding="utf-8") as out:
            out.write(line + "\n")
            out.flush()
            os.fsync(out.fileno())


class Witness:
    """Cosigns checkpoints of the roster's logs after checking consistency (module docstring).

    Thread-safe: requests are checked and recorded one at a time, so two submitters racing
    with the same old size get one cosignature and one conflict.
    """

    def __init__(
        self,
        *,
        signer: CosignatureSigner,
        roster: LogRoster,
        state_path: Path,
        alarms: AlarmSink | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(signer, CosignatureSigner):
            raise InvalidArgument("a witness signs with a CosignatureSigner", field="signer")
        self.signer = signer
        self.roster = roster
        self.state_path = state_path
        self._alarms = alarms
        self._now = now
        self._lock = threading.Lock()
        self._counts_lock = threading.Lock()
        self._refusals: Counter[tuple[str, str]] = Counter()
        self._cosigned: Counter[str] = Counter()
        self._state = self._load()
        # the last REPLAY_MEMORY checkpoints cosigned per log (in memory): a replay of one of
        # them is a stale submission, not a rollback
        self._history: dict[str, deque[tuple[int, bytes]]] = {}

    # -- state ---------------------------------------------------------------------------------

    def _load(self) -> dict[str, WitnessedCheckpoint]:
        try:
            raw = json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            # never start afresh over a damaged state: that would let a log roll back
            raise ConfigError(
                f"{self.state_path}: the witness state cannot be read ({e}); restore it from "
                "backup (starting empty would let every log roll back)"
            ) from None
        if not isinstance(raw, dict) or raw.get("version") != _STATE_VERSION:
            raise ConfigError(f"{self.state_path}: not a witness state file of version 1")
        logs = raw.get("logs")
        if not isinstance(logs, dict):
            raise ConfigError(f"{self.state_path}: logs must be an object")
        state: dict[str, WitnessedCheckpoint] = {}
        for origin, item in logs.items():
            try:
                note = str(item["note"]).encode("utf-8")
                size, root = int(item["size"]), bytes.fromhex(str(item["root"]))
            except (KeyError, TypeError, ValueError) as e:
                raise ConfigError(f"{self.state_path}: log {origin!r}: {e}") from None
            if size < 0 or len(root) != merkle.HASH_BYTES:
                raise ConfigError(f"{self.state_path}: log {origin!r}: bad size or root")
            state[origin] = WitnessedCheckpoint(origin=origin, size=size, root=root, note=note)
        return state

    def _save(self) -> None:
        logs = {
            origin: {"size": item.size, "root": item.root.hex(), "note": item.note.decode()}
            for origin, item in sorted(self._state.items())
        }
        data = json.dumps({"version": _STATE_VERSION, "logs": logs}, indent=1, sort_keys=True)
        write_atomically(self.state_path, data.encode("utf-8") + b"\n", mode=0o600)

    # -- reading ------------------------------------------------------------------------------

    def origins(self) -> list[str]:
        return self.roster.origins()

    def latest(self, origin: str) -> WitnessedCheckpoint | None:
        with self._lock:
            return self._state.get(origin)

    def refusal_counts(self) -> dict[tuple[str, str], int]:
        """{(origin, reason): refusals} since start, for metrics."""
        with self._counts_lock:
            return dict(self._refusals)

    def alarm_counts(self) -> dict[tuple[str, str], int]:
        """{(origin, reason): alarms} since start: the refusals that show a log misbehaving."""
        with self._counts_lock:
            return {k: n for k, n in self._refusals.items() if k[1] in ALARM_REASONS}

    def cosigned_counts(self) -> dict[str, int]:
        with self._counts_lock:
            return dict(self._cosigned)

    # -- add-checkpoint ----------------------------------------------------------------------

    def add_checkpoint(self, body: bytes) -> bytes:
        """Check one add-checkpoint request and return the cosignature line(s), or refuse."""
        try:
            request = parse_add_checkpoint(body)
        except InvalidArgument:
            self._count("", REASON_MALFORMED)
            raise
        checkpoint = self._checkpoint_of(request.note)
        origin = checkpoint.origin
        try:
            verifier = self.roster.log_verifier(origin)
        except NotFound:
            # counted under "" rather than the origin named: a caller cannot grow the counters
            self._count("", REASON_UNKNOWN_ORIGIN)
            raise NotFound(f"the witness knows no log {origin!r}", field="origin") from None
        try:
            opened = open_note(request.note, [verifier])
        except (Unauthenticated, InvalidArgument) as e:
            self._refuse(origin, REASON_BAD_SIGNATURE, f"no valid signature by the log's key: {e}")
            raise PermissionDenied(
                f"checkpoint of {origin!r} at size {checkpoint.size} carries no valid signature "
                f"by the log's key {verifier.name}+{verifier.key_id.hex()}",
                field="note.signatures",
            ) from None
        # what is checked and cosigned is the text the signature covers, as open_note split it
        # (the origin above only picked the key): never a text the log did not sign
        checkpoint = parse_checkpoint(opened.text)
        if checkpoint.origin != origin:
            self._count(origin, REASON_MALFORMED)
            raise InvalidArgument("the note's signed text names another origin", field="note")
        if checkpoint.size == 0 and checkpoint.root_hash != merkle.EMPTY_ROOT:
            self._count(origin, REASON_MALFORMED)
            raise InvalidArgument(
                "a checkpoint of the empty tree must carry the empty tree's root (RFC 9162 "
                "§2.1.1: SHA-256 of nothing)",
                field="note",
            )
        if request.old_size > checkpoint.size:
            self._count(origin, REASON_OLD_SIZE_AHEAD)
            raise InvalidArgument(
                f"old size {request.old_size} is ahead of the checkpoint's size {checkpoint.size}",
                field="body.old_size",
            )
        with self._lock:
            return self._add(origin, request, checkpoint)

    def _checkpoint_of(self, note: bytes) -> Checkpoint:
        # the body is parsed before any signature is checked, as the origin picks the key
        text, sep, _ = note.partition(b"\n\n")
        try:
            if not sep:
                raise InvalidArgument("no blank line before the signatures", field="note")
            return parse_checkpoint(text.decode("utf-8") + "\n")
        except (InvalidArgument, UnicodeDecodeError) as e:
            self._count("", REASON_MALFORMED)
            raise InvalidArgument(f"the checkpoint note is malformed: {e}", field="note") from None

    def _add(self, origin: str, request: AddCheckpoint, checkpoint: Checkpoint) -> bytes:
        last = self._state.get(origin)
        last_size = last.size if last else 0
        if checkpoint.size < last_size:
            if (checkpoint.size, checkpoint.root_hash) in self._history.get(origin, ()):
                # a checkpoint this witness cosigned before, submitted again (a replay, or a
                # submitter far behind): the log is not shown to misbehave, so no alarm
                self._count(origin, REASON_STALE)
                raise WitnessConflict(
                    f"checkpoint at size {checkpoint.size} of {origin!r} was cosigned before; "
                    f"this witness is at size {last_size}",
                    field="note",
                    latest_size=last_size,
                )
            # the log signed a tree smaller than one already cosigned, one this witness never
            # saw: whatever the old size, the log went back
            self._refuse(
                origin,
                REASON_ROLLBACK,
                f"checkpoint at size {checkpoint.size} is smaller than size {last_size} already "
                f"cosigned (a rollback); signed by the log: {_evidence(checkpoint)}",
            )
            raise WitnessConflict(
                f"log {origin!r} rolled back: checkpoint at size {checkpoint.size} after size "
                f"{last_size} was cosigned",
                field="body.old_size",
                latest_size=last_size,
            )
        if request.old_size != last_size:
            self._count(origin, REASON_STALE)
            raise WitnessConflict(
                f"old size {request.old_size} is not the size this witness last cosigned for "
                f"{origin!r} ({last_size}): ask the log for a proof from {last_size}",
                field="body.old_size",
                latest_size=last_size,
            )
        if last is not None and checkpoint.size == last.size:
            if checkpoint.root_hash != last.root or request.proof:
                if checkpoint.root_hash != last.root:
                    self._refuse(
                        origin,
                        REASON_FORK,
                        f"another root at size {last.size}, which was cosigned (a fork); "
                        f"signed by the log: {_evidence(checkpoint)}",
                    )
                    raise WitnessConflict(
                        f"log {origin!r} forked: checkpoint at size {checkpoint.size} has a "
                        "root other than the one cosigned at that size",
                        field="note",
                        latest_size=last.size,
                    )
                self._count(origin, REASON_MALFORMED)
                raise InvalidArgument(
                    "a checkpoint of the size already cosigned needs an empty proof",
                    field="body.proof",
                )
        elif last is not None and last.size > 0:
            try:
                merkle.verify_consistency(
                    last.size, checkpoint.size, last.root, checkpoint.root_hash, request.proof
                )
            except InvalidArgument as e:
                self._refuse(
                    origin,
                    REASON_INCONSISTENT,
                    f"no consistency from size {last.size} to {checkpoint.size}: {e.message}; "
                    f"signed by the log: {_evidence(checkpoint)} (fetch a consistency proof from "
                    "the log itself to confirm: a submitter may have sent a wrong proof)",
                )
                raise WitnessInconsistent(
                    f"log {origin!r}: the consistency proof from size {last.size} to "
                    f"{checkpoint.size} does not verify (the log does not extend what was "
                    "cosigned, or the proof is for other sizes)",
                    field="body.proof",
                ) from None
        elif request.proof:
            # C2SP tlog-witness: the proof MUST be empty if the old size is zero
            self._count(origin, REASON_MALFORMED)
            raise InvalidArgument("from old size 0 the proof must be empty", field="body.proof")
        previous = self._state.get(origin)
        if previous is not None:
            seen = self._history.setdefault(origin, deque(maxlen=REPLAY_MEMORY))
            seen.append((previous.size, previous.root))
        self._state[origin] = WitnessedCheckpoint(
            origin=origin, size=checkpoint.size, root=checkpoint.root_hash, note=request.note
        )
        try:
            self._save()
        except OsmanthusError:
            if previous is None:
                del self._state[origin]
            else:
                self._state[origin] = previous
            raise
        with self._counts_lock:
            self._cosigned[origin] += 1
        timestamp = int(self._now())
        return self.signer.signature_line(checkpoint.body(), timestamp=timestamp).encode("utf-8")

    # -- refusals -----------------------------------------------------------------------------

    def _count(self, origin: str, reason: str) -> None:
        with self._counts_lock:
            self._refusals[(origin, reason)] += 1

    def _refuse(self, origin: str, reason: str, detail: str) -> None:
        self._count(origin, reason)
        if reason in ALARM_REASONS:
            _log.error("witness alarm for log %s: %s: %s", origin, reason, detail)
            if self._alarms is not None:
                self._alarms.alarm(origin, reason, detail)


def _evidence(checkpoint: Checkpoint) -> str:
    """The log-signed checkpoint an alarm is about, in one line (its body's three lines)."""
    return " | ".join(checkpoint.body().splitlines()[:3])

"""Signed checkpoints beside an audit log, and the verifier that replays a log against them.

A `Checkpointer` signs the audit log's tree head (a C2SP `tlog-checkpoint` note: origin, tree
size, base64 root hash, signed with the log's Ed25519 `NoteSigner`) every `every_entries` new
entries, or every `every_s` seconds when the log grew. Before signing, it checks that the log's
tree extends the last checkpoint (an RFC 9162 consistency proof from the log's own tree): a log
that was rewritten, truncated or replaced is refused a new signature, so the operator cannot get
a fresh checkpoint over a history that contradicts an old one. Two files sit beside the log:

- `<log>.checkpoint`: the latest signed note, replaced atomically (temp file, fsync, rename,
  fsync of the directory), for whoever fetches "the current checkpoint";
- `<log>.checkpoints`: every checkpoint ever issued, one JSON line each
  (`{"size", "root" (hex), "note" (the signed note text)}`), appended and fsynced, mode 0600.

The history is appended before the latest file is replaced, so a crash between the two leaves the
latest file one checkpoint behind the history (harmless), never ahead of it.

`verify_log` replays a log file against its history with the verifiers' keys only: it trusts
neither the tree files beside the log nor the checkpointer. Each checkpoint's root must be the
root of the log's first `size` lines; two checkpoints whose roots both match the log are then
consistent by construction (both are prefixes of one sequence of leaves), so the first root
that does not match names the range of lines where the log differs from what was signed.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from osmanthus.core import merkle
from osmanthus.core.audit import AuditLog
from osmanthus.core.errors import ConfigError, InvalidArgument, Unauthenticated
from osmanthus.core.files import append_durably, write_atomically
from osmanthus.core.signednote import (
    Checkpoint,
    NoteSigner,
    NoteVerifier,
    open_note,
    parse_checkpoint,
)

#: the latest signed checkpoint of `audit.jsonl` is `audit.jsonl.checkpoint`
LATEST_SUFFIX: Final = ".checkpoint"
#: every checkpoint of `audit.jsonl`, one JSON line each, is in `audit.jsonl.checkpoints`
HISTORY_SUFFIX: Final = ".checkpoints"
_FILE_MODE: Final = 0o600
#: how often the background thread looks at the log's size (at most), in seconds
DEFAULT_POLL_S: Final = 1.0
#: verify_log tells its progress callback of the bytes replayed about this often
_PROGRESS_BYTES: Final = 1 << 20

_log = logging.getLogger(__name__)


def latest_path(log_path: Path) -> Path:
    return log_path.with_name(log_path.name + LATEST_SUFFIX)


def history_path(log_path: Path) -> Path:
    return log_path.with_name(log_path.name + HISTORY_SUFFIX)


@dataclass(frozen=True)
class SignedCheckpoint:
    """A checkpoint and its signed note (the note's text is `checkpoint.body()`)."""

    checkpoint: Checkpoint
    note: bytes

    @property
    def size(self) -> int:
        return self.checkpoint.size

    @property
    def root(self) -> bytes:
        return self.checkpoint.root_hash

    def record(self) -> str:
        """The checkpoint's line in `<log>.checkpoints`, without its newline."""
        return json.dumps(
            {"size": self.size, "root": self.root.hex(), "note": self.note.decode("utf-8")},
            ensure_ascii=True,
            separators=(",", ":"),
        )


class Checkpointer:
    """Issues signed checkpoints of one AuditLog's tree and keeps them beside the log.

    Thread-safe. `issue_if_due` signs when the tree grew by `every_entries` since the last
    checkpoint, or when `every_s` seconds passed (by `now`) and the tree grew at all; `issue`
    signs whatever the tree holds. Both raise ConfigError, and sign nothing, when the tree does
    not extend the last checkpoint. `start` runs `issue_if_due` in a background thread until
    `close`.
    """

    def __init__(
        self,
        *,
        log: AuditLog,
        signer: NoteSigner,
        origin: str,
        every_entries: int = 1000,
        every_s: float = 60.0,
        now: Callable[[], float] = time.monotonic,
        poll_s: float = DEFAULT_POLL_S,
    ) -> None:
        if isinstance(every_entries, bool) or not isinstance(every_entries, int):
            raise InvalidArgument("every_entries must be a whole number", field="every_entries")
        if every_entries < 1:
            raise InvalidArgument("every_entries must be at least 1", field="every_entries")
        if not every_s > 0:
            raise InvalidArgument("every_s must be more than 0 seconds", field="every_s")
        if not poll_s > 0:
            raise InvalidArgument("poll_s must be more than 0 seconds", field="poll_s")
        # refuses a malformed origin now rather than at the first checkpoint
        Checkpoint(origin=origin, size=0, root_hash=merkle.EMPTY_ROOT)
        self.log = log
        self.signer = signer
        self.origin = origin
        self.every_entries = every_entries
        self.every_s = every_s
        self.poll_s = poll_s
        self._now = now
        self.latest_path = latest_path(log.path)
        self.history_path = history_path(log.path)
        self._verifier = NoteVerifier(name=signer.name, public_key=signer.public_key)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_error: str | None = None
        self._last = self._load_last()
        self._last_time = now()

    @property
    def last(self) -> SignedCheckpoint | None:
        """The last checkpoint issued (by this or an earlier Checkpointer of the log), or None."""
        with self._lock:
            return self._last

    def _load_last(self) -> SignedCheckpoint | None:
        """The larger of the history's last checkpoint and the latest file's (either may have
        been cut short by whoever holds the files): a new checkpoint never goes behind either."""
        found: list[SignedCheckpoint] = []
        last_record: str | None = None
        for _, record, ended in _history_lines(self.history_path):
            if ended:  # a torn last line (a crash while appending) was never a checkpoint
                last_record = record
        if last_record is not None:
            try:
                _, note = _parse_record(last_record)
                found.append(self._own(note, where=str(self.history_path)))
            except (ValueError, KeyError, TypeError, InvalidArgument) as exc:
                raise ConfigError(
                    f"{self.history_path}: its last line is not a checkpoint record ({exc}); "
                    "restore the file from a backup"
                ) from exc
        try:
            latest = self.latest_path.read_bytes()
        except FileNotFoundError:
            latest = None
        except OSError as exc:
            raise ConfigError(f"{self.latest_path}: cannot read: {exc.strerror}") from exc
        if latest is not None:
            found.append(self._own(latest, where=str(self.latest_path)))
        if not found:
            return None
        last = max(found, key=lambda signed: signed.size)
        if len(found) == 2 and found[0].size == found[1].size:
            if found[0].checkpoint != found[1].checkpoint:
                raise ConfigError(
                    f"{self.latest_path} and the last line of {self.history_path} both sign "
                    f"{last.size} entries, with different roots: this key signed two different "
                    "logs (a fork). Keep both files as evidence and find out which log is right"
                )
            last = found[1]  # the same checkpoint: keep the latest file as it is
        if latest is not None and last.note != latest:
            # a crash between the history's append and the rename, or an old note put back
            _log.warning(
                "%s holds checkpoint %d, behind the history's %d; replacing it",
                self.latest_path, found[-1].size, last.size,
            )  # fmt: skip
            write_atomically(self.latest_path, last.note, mode=_FILE_MODE, field="checkpoint")
        return last

    def _own(self, note: bytes, *, where: str) -> SignedCheckpoint:
        """A stored note of this log, checked against this signer's key and origin."""
        try:
            text = open_note(note, [self._verifier]).text
            checkpoint = parse_checkpoint(text)
        except (InvalidArgument, Unauthenticated) as exc:
            raise ConfigError(
                f"{where}: the stored checkpoint is not one this key ({self.signer.name}) "
                f"signed: {exc}. Keep the file as evidence and find out who wrote it"
            ) from exc
        if checkpoint.origin != self.origin:
            raise ConfigError(
                f"{where}: the stored checkpoint is for origin {checkpoint.origin!r}, "
                f"not {self.origin!r}"
            )
        return SignedCheckpoint(checkpoint=checkpoint, note=note)

    def issue_if_due(self) -> SignedCheckpoint | None:
        """Sign a checkpoint when one is due (see the class docstring), else None."""
        with self._lock:
            size = self.log.tree_size
            last_size = self._last.size if self._last is not None else 0
            if size == last_size:
                return None
            if size > last_size:
                elapsed = self._now() - self._last_time
                if size - last_size < self.every_entries and elapsed < self.every_s:
                    return None
            # a tree smaller than the last checkpoint: _issue refuses it loudly
            return self._issue(size)

    def issue(self) -> SignedCheckpoint:
        """Sign a checkpoint of the whole tree now."""
        with self._lock:
            return self._issue(self.log.tree_size)

    def _issue(self, size: int) -> SignedCheckpoint:
        """Check `size` against the last checkpoint, sign, store; called under _lock."""
        root = self.log.root(size)
        last = self._last
        if last is not None:
            self._check_extends(last, size, root)
        checkpoint = Checkpoint(origin=self.origin, size=size, root_hash=root)
        signed = SignedCheckpoint(checkpoint=checkpoint, note=self.signer.sign(checkpoint.body()))
        # the history first: a crash before the rename leaves the latest file behind, not ahead
        append_durably(
            self.history_path, (signed.record() + "\n").encode("ascii"), field="checkpoint"
        )
        write_atomically(self.latest_path, signed.note, mode=_FILE_MODE, field="checkpoint")
        self._last = signed
        self._last_time = self._now()
        return signed

    def _check_extends(self, last: SignedCheckpoint, size: int, root: bytes) -> None:
        where = f"{self.log.path}: refusing to sign a checkpoint of {size} entries"
        if size < last.size:
            raise ConfigError(
                f"{where}: the last checkpoint signed {last.size}, and the log's tree now holds "
                f"only {size}. The log was truncated or replaced by an older copy; restore it "
                f"(the checkpoints in {self.history_path} say what it held)"
            )
        if last.size == 0:
            return
        try:
            proof = self.log.consistency_proof(last.size, size)
            merkle.verify_consistency(last.size, size, last.root, root, proof)
        except merkle.ProofError as exc:
            raise ConfigError(
                f"{where}: the log's tree of {size} does not extend the last checkpoint of "
                f"{last.size} ({exc}): an entry among lines 1..{last.size} was changed, "
                "removed, inserted or reordered after it was signed, or the log was replaced by "
                f"a fork. Run verify_log on {self.log.path} to find where"
            ) from exc

    # -- the background thread --------------------------------------------------------------------

    def start(self) -> None:
        """Run `issue_if_due` every min(poll_s, every_s) seconds until `close`."""
        with self._lock:
            if self._thread is not None:
                raise ConfigError("the checkpointer is already running")
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name=f"checkpointer {self.log.path.name}", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        interval = min(self.poll_s, self.every_s)
        while not self._stop.wait(interval):
            try:
                self.issue_if_due()
            except Exception as exc:
                # the thread outlives one failure: the next poll may find the log repaired
                message = str(exc)
                if message != self._last_error:
                    # once per distinct failure: a refused log would otherwise flood the log
                    _log.error("%s: no checkpoint issued: %s", self.log.path, message)
                    self._last_error = message
            else:
                self._last_error = None

    def close(self) -> None:
        """Stop the background thread (if started) and wait for it; idempotent."""
        self._stop.set()
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _history_lines(path: Path) -> Iterator[tuple[int, str, bool]]:
    """(line number, text without newline, whether it ended in a newline) of each non-empty line
    of a checkpoint history; nothing if there is none."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    with handle:
        for number, raw in enumerate(handle, 1):
            ended = raw.endswith(b"\n")
            text = raw.rstrip(b"\n").decode("utf-8", errors="replace")
            if text.strip():
                yield number, text, ended


def _parse_record(text: str) -> tuple[dict[str, object], bytes]:
    record = json.loads(text)
    if not isinstance(record, dict):
        raise TypeError("a record is a JSON object")
    note = record["note"]
    if not isinstance(note, str):
        raise TypeError("note must be text")
    return record, note.encode("utf-8")


# --- verifying a log against its checkpoints -----------------------------------------------------


@dataclass(frozen=True)
class VerifyReport:
    """What `verify_log` found: `ok` when no problem; `problem` is the first one, naming where.

    `warnings` are findings that do not make a log untrustworthy by themselves (a latest file
    behind the history, a torn last line).
    """

    ok: bool
    entries: int
    checkpoints: int
    problem: str | None = None
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Signed:
    where: str
    checkpoint: Checkpoint


class _CompactRange:
    """The RFC 9162 root of a growing list of leaves, keeping only its perfect subtrees."""

    def __init__(self) -> None:
        self.size = 0
        self._stack: list[tuple[int, bytes]] = []  # (leaves, hash), largest first

    def append(self, leaf: bytes) -> None:
        self.size += 1
        width, node = 1, leaf
        while self._stack and self._stack[-1][0] == width:
            left_width, left = self._stack.pop()
            width, node = left_width + width, merkle.node_hash(left, node)
        self._stack.append((width, node))

    def root(self) -> bytes:
        if not self._stack:
            return merkle.EMPTY_ROOT
        node = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            node = merkle.node_hash(left, node)
        return node


def verify_log(
    log_path: Path,
    verifiers: Sequence[NoteVerifier],
    *,
    origin: str | None = None,
    progress: Callable[[int], object] | None = None,
) -> VerifyReport:
    """Replay `log_path` against `<log>.checkpoints` (and `<log>.checkpoint`), trusting only
    `verifiers`: every note must be signed by one of them, all for one origin (`origin` if
    given), sizes never decrease, and each root must be the root of the log's first `size`
    lines. The report's `problem` is the first thing wrong, naming the lines or sizes.
    `progress(n)` is told of every n bytes of the log replayed (for a progress bar)."""
    history = history_path(log_path)
    latest = latest_path(log_path)
    warnings: list[str] = []
    signed: list[_Signed] = []
    problem: str | None = None
    expected_origin = origin
    for number, text, ended in _history_lines(history):
        where = f"{history.name} line {number}"
        if not ended:
            warnings.append(f"{where} is torn (no newline): a crash while appending; ignored")
            break
        found, problem = _open_record(text, where, verifiers)
        if found is None:
            break
        checkpoint = found.checkpoint
        if expected_origin is None:
            expected_origin = checkpoint.origin
        if checkpoint.origin != expected_origin:
            problem = (
                f"{where}: checkpoint {checkpoint.size} is for origin {checkpoint.origin!r}, "
                f"not {expected_origin!r}: a checkpoint of another log"
            )
            break
        if signed and checkpoint.size < signed[-1].checkpoint.size:
            problem = (
                f"{where}: checkpoint {checkpoint.size} follows checkpoint "
                f"{signed[-1].checkpoint.size}: the history goes backwards (an old checkpoint "
                "replayed into it)"
            )
            break
        signed.append(found)
    if problem is None:
        problem = _check_latest(latest, history, signed, verifiers, expected_origin, warnings)
    entries, mismatch = _check_roots(log_path, signed, warnings, progress)
    # the first problem in the history's order: a root mismatch before a bad record comes first
    problem = mismatch or problem
    return VerifyReport(
        ok=problem is None,
        entries=entries,
        checkpoints=len(signed),
        problem=problem,
        warnings=tuple(warnings),
    )


def _open_record(
    text: str, where: str, verifiers: Sequence[NoteVerifier]
) -> tuple[_Signed | None, str | None]:
    try:
        record, note = _parse_record(text)
        size, root = record["size"], record["root"]
    except (ValueError, KeyError, TypeError) as exc:
        return None, f"{where}: not a checkpoint record ({type(exc).__name__}: {exc})"
    try:
        checkpoint = parse_checkpoint(open_note(note, verifiers).text)
    except Unauthenticated as exc:
        return None, f"{where}: the checkpoint's signature is not from a trusted key: {exc}"
    except InvalidArgument as exc:
        return None, f"{where}: not a valid signed checkpoint: {exc}"
    if size != checkpoint.size or root != checkpoint.root_hash.hex():
        return None, (
            f"{where}: the record's size {size} and root do not match its signed checkpoint "
            f"({checkpoint.size}): the record was edited"
        )
    return _Signed(where=f"{where} (checkpoint {checkpoint.size})", checkpoint=checkpoint), None


def _check_latest(
    latest: Path,
    history: Path,
    signed: list[_Signed],
    verifiers: Sequence[NoteVerifier],
    origin: str | None,
    warnings: list[str],
) -> str | None:
    """Check `<log>.checkpoint` against the history; a latest ahead of it is a problem."""
    try:
        note = latest.read_bytes()
    except FileNotFoundError:
        if signed:
            warnings.append(f"{latest.name} is missing; the history was checked without it")
        return None
    try:
        checkpoint = parse_checkpoint(open_note(note, verifiers).text)
    except Unauthenticated as exc:
        return f"{latest.name}: the checkpoint's signature is not from a trusted key: {exc}"
    except InvalidArgument as exc:
        return f"{latest.name}: not a valid signed checkpoint: {exc}"
    if origin is not None and checkpoint.origin != origin:
        return (
            f"{latest.name}: checkpoint {checkpoint.size} is for origin {checkpoint.origin!r}, "
            f"not {origin!r}: a checkpoint of another log"
        )
    last = signed[-1].checkpoint if signed else None
    if last is None or checkpoint.size > last.size:
        return (
            f"{latest.name} signed {checkpoint.size} entries but the history ends at "
            f"{last.size if last else 0}: checkpoints were removed from {history.name}"
        )
    if checkpoint == last:
        return None
    if checkpoint.size == last.size:
        return (
            f"{latest.name} and the history's last line both sign {checkpoint.size} entries, "
            "with different roots: the log forked"
        )
    if checkpoint not in {s.checkpoint for s in signed}:
        return (
            f"{latest.name} signed checkpoint {checkpoint.size}, which is in no line of the "
            f"history: the log forked"
        )
    warnings.append(
        f"{latest.name} holds checkpoint {checkpoint.size}, behind the history's last "
        f"({last.size}): an old checkpoint replayed as the latest, or a crash between the "
        "history's append and the rename; the history was checked"
    )
    return None


def _check_roots(
    log_path: Path,
    signed: list[_Signed],
    warnings: list[str],
    progress: Callable[[int], object] | None = None,
) -> tuple[int, str | None]:
    """(lines in the log, the first checkpoint whose root is not the log's) in one pass."""
    tree = _CompactRange()
    pending = iter(signed)
    target = next(pending, None)
    good = 0  # the size of the last checkpoint that matched the log

    def check(item: _Signed) -> str | None:
        nonlocal good
        size = item.checkpoint.size
        if tree.root() == item.checkpoint.root_hash:
            good = size
            return None
        return (
            f"{item.where}: an entry among lines {good + 1}..{size} differs from what "
            f"checkpoint {size} signed (changed, removed, inserted or reordered)"
        )

    try:
        handle = log_path.open("rb")
    except OSError as exc:
        return 0, f"{log_path}: cannot read the log: {exc.strerror}"
    with handle:
        while target is not None and target.checkpoint.size == 0:
            if (mismatch := check(target)) is not None:
                return 0, mismatch
            target = next(pending, None)
        unreported = 0
        for raw in handle:
            if progress is not None:
                unreported += len(raw)
                if unreported >= _PROGRESS_BYTES:
                    progress(unreported)
                    unreported = 0
            if not raw.endswith(b"\n"):
                warnings.append(
                    f"line {tree.size + 1} is torn (no newline): a crash while writing; it "
                    "counts as an entry, as the log's own tree counts it once reopened"
                )
                raw += b"\n"
            tree.append(merkle.leaf_hash(raw[:-1]))
            while target is not None and target.checkpoint.size == tree.size:
                if (mismatch := check(target)) is not None:
                    # count the rest of the lines for the report, without hashing them
                    return tree.size + sum(1 for _ in handle), mismatch
                target = next(pending, None)
    if progress is not None and unreported:
        progress(unreported)
    if target is not None:
        size = target.checkpoint.size
        removed = f" (or an entry among lines {good + 1}..{size} was deleted)" if good else ""
        return tree.size, (
            f"{target.where}: the log was truncated: it holds {tree.size} lines but "
            f"checkpoint {size} signed {size}{removed}"
        )
    return tree.size, None

"""What `osmanthus audit` checks: a log file's leaves and proofs, its signed files, a live log.

Nothing here trusts what sits beside a log or what a server sends, but the keys it is given (the
roster `logs.toml`, `--log-key`, `--witness`). A local log is replayed with
`osmanthus.core.checkpoints.verify_log`; a live log is fetched through TransparencyService
(`sdk.transparency`) and its entries are hashed into the root its signed checkpoint names. When
the root differs, RFC 9162 consistency proofs from the log itself find the first entry that
differs (the largest prefix whose root the signed root extends is the part that is right), so
the report names the entry rather than a range.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from osmanthus.core import merkle
from osmanthus.core.checkpoints import history_path, latest_path, verify_log
from osmanthus.core.errors import (
    ConfigError,
    CryptoError,
    InvalidArgument,
    OsmanthusError,
    Unauthenticated,
)
from osmanthus.core.logkeys import LogRoster, party_host
from osmanthus.core.logserver import cosignatures_path
from osmanthus.core.signednote import (
    Checkpoint,
    CosignatureVerifier,
    NoteVerifier,
    parse_checkpoint,
)
from sdk.transparency import (
    TransparencyClient,
    VerifiedCheckpoint,
    check_cosignatures,
    verify_checkpoint,
)

#: the tree files beside a log (osmanthus.core.audit.TREE_SUFFIX), level 0 = the leaves
_TREE_LEAVES_SUFFIX: Final = ".tree.0"
_RANGE = re.compile(r"among lines (\d+)\.\.(\d+)")

Progress = Callable[[int], object]


# --- keys ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    """The keys an auditor trusts: the roster, or `--log-key` keys; witnesses from either."""

    roster: LogRoster | None
    log_keys: tuple[NoteVerifier, ...]
    extra_witnesses: tuple[CosignatureVerifier, ...]

    def log_verifiers(self, origin: str) -> list[NoteVerifier]:
        """The keys that may sign `origin`'s checkpoints; InvalidArgument when none is known."""
        if self.log_keys:
            return list(self.log_keys)
        if self.roster is not None and origin in self.roster.logs:
            return [self.roster.log_verifier(origin)]
        raise InvalidArgument(
            f"no key for log {origin!r}: it is not in the roster; give --logs with it, or "
            "--log-key with its verifier key",
            field="origin",
        )

    def witnesses(self) -> list[CosignatureVerifier]:
        found = {w.name: w for w in self.roster.witness_verifiers()} if self.roster else {}
        found.update({w.name: w for w in self.extra_witnesses})
        return [found[name] for name in sorted(found)]

    @property
    def given(self) -> bool:
        return self.roster is not None or bool(self.log_keys)


def key_text(value: str, *, field_name: str) -> str:
    """A verifier key text given as is, or the path of a file holding one (e.g. log.pub)."""
    candidate = Path(value)
    if "+" not in value or candidate.is_file():
        try:
            return candidate.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise InvalidArgument(
                f"{value!r} is neither a verifier key text nor a readable file ({exc.strerror})",
                field=field_name,
            ) from None
    return value.strip()


# --- a log file ----------------------------------------------------------------------------------


class Levels:
    """An RFC 9162 tree over leaf hashes in memory, every complete subtree kept (32 bytes per
    node, ~64 MB for 10⁶ leaves), so that any prefix's root or proof takes O(log² n) hashes."""

    def __init__(self) -> None:
        self._levels: list[bytearray] = [bytearray()]

    @property
    def size(self) -> int:
        return len(self._levels[0]) // merkle.HASH_BYTES

    def append(self, leaf: bytes) -> None:
        self._levels[0] += leaf
        index, level, node = self.size - 1, 0, leaf
        while index & 1:  # a right child completes its parent
            data = self._levels[level]
            left = bytes(data[(index - 1) * merkle.HASH_BYTES : index * merkle.HASH_BYTES])
            node = merkle.node_hash(left, node)
            level, index = level + 1, index >> 1
            if level == len(self._levels):
                self._levels.append(bytearray())
            self._levels[level] += node

    def leaf(self, index: int) -> bytes:
        return bytes(self._levels[0][index * merkle.HASH_BYTES : (index + 1) * merkle.HASH_BYTES])

    def subtree(self, start: int, end: int) -> bytes:
        width = end - start
        if width & (width - 1) == 0 and start % width == 0:
            level = width.bit_length() - 1
            position = (start >> level) * merkle.HASH_BYTES
            return bytes(self._levels[level][position : position + merkle.HASH_BYTES])
        k = 1 << ((width - 1).bit_length() - 1)
        return merkle.node_hash(self.subtree(start, start + k), self.subtree(start + k, end))

    def root(self, size: int | None = None) -> bytes:
        n = self.size if size is None else size
        return merkle.EMPTY_ROOT if n == 0 else self.subtree(0, n)


def log_lines(path: Path, progress: Progress | None = None) -> Iterator[bytes]:
    """Each line of a log file without its newline (a torn last line as it is: the log's own
    tree counts it once reopened); `progress(n)` is told of the bytes read."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the log: {exc.strerror}") from None
    with handle:
        for raw in handle:
            if progress is not None:
                progress(len(raw))
            yield raw[:-1] if raw.endswith(b"\n") else raw


def leaves_of(path: Path, progress: Progress | None = None) -> Levels:
    tree = Levels()
    for line in log_lines(path, progress):
        tree.append(merkle.leaf_hash(line))
    return tree


@dataclass(frozen=True)
class HistoryRecord:
    """A line of `<log>.checkpoints` as written, unverified (verify_log verifies them)."""

    size: int
    root: bytes
    note: bytes


def history(path: Path) -> list[HistoryRecord]:
    """The readable records of a log's checkpoint history, in order (unverified)."""
    records: list[HistoryRecord] = []
    try:
        text = history_path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return records
    except OSError as exc:
        raise ConfigError(f"{history_path(path)}: cannot read: {exc.strerror}") from None
    for line in text.splitlines():
        try:
            record = json.loads(line)
            records.append(
                HistoryRecord(
                    size=int(record["size"]),
                    root=bytes.fromhex(record["root"]),
                    note=str(record["note"]).encode("utf-8"),
                )
            )
        except (ValueError, KeyError, TypeError):
            continue  # verify_log names a bad record; this list only helps to read the rest
    return records


def latest_note(path: Path) -> bytes | None:
    try:
        return latest_path(path).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"{latest_path(path)}: cannot read: {exc.strerror}") from None


def origin_of(path: Path) -> str | None:
    """The origin the log's checkpoint files name (unverified: only to pick the key)."""
    notes = [record.note for record in history(path)[:1]]
    latest = latest_note(path)
    if latest is not None:
        notes.append(latest)
    for note in notes:
        first, _, _ = note.partition(b"\n")
        if first:
            return first.decode("utf-8", errors="replace")
    return None


@dataclass(frozen=True)
class CosignatureRecord:
    """A line of `<log>.cosignatures` (osmanthus.core.logserver.LocalLog writes them): the
    witness cosignature lines the log received for its checkpoint of `size` and `root`."""

    where: str
    size: int
    root: bytes
    lines: tuple[str, ...]

    def note(self, origin: str) -> bytes:
        """The checkpoint body the lines cosign, followed by them (a note to open)."""
        body = Checkpoint(origin=origin, size=self.size, root_hash=self.root).body()
        return (body + "\n" + "".join(self.lines)).encode("utf-8")


def cosignature_records(path: Path) -> tuple[list[CosignatureRecord], str | None]:
    """The records of `<log>.cosignatures` and the first unreadable line's problem, if any (a
    torn last line, a crash while appending, is skipped as the log itself skips it)."""
    where_file = cosignatures_path(path)
    try:
        data = where_file.read_bytes()
    except FileNotFoundError:
        return [], None
    except OSError as exc:
        raise ConfigError(f"{where_file}: cannot read: {exc.strerror}") from None
    records: list[CosignatureRecord] = []
    for number, raw in enumerate(data.splitlines(keepends=True), 1):
        if not raw.endswith(b"\n"):
            break
        where = f"{where_file.name} line {number}"
        try:
            record = json.loads(raw)
            lines = tuple(str(line) for line in record["lines"])
            records.append(
                CosignatureRecord(
                    where=where,
                    size=int(record["size"]),
                    root=bytes.fromhex(record["root"]),
                    lines=lines,
                )
            )
        except (ValueError, KeyError, TypeError) as exc:
            return records, f"{where}: not a cosignature record ({type(exc).__name__})"
    return records, None


# --- verifying -----------------------------------------------------------------------------------


@dataclass
class LogReport:
    """What `audit verify` found about one log; `problem` is the first thing wrong."""

    log: str
    origin: str | None = None
    entries: int = 0
    checkpoints: int = 0
    latest_size: int | None = None
    problem: str | None = None
    #: a pointer to the first changed line from the unsigned tree files beside the log
    hint: str | None = None
    warnings: list[str] = field(default_factory=list)
    #: witness name -> the checkpoint sizes it cosigned (verified)
    cosigned: dict[str, list[int]] = field(default_factory=dict)
    #: the largest checkpoint size cosigned by at least `quorum` witnesses
    witnessed_size: int | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def to_json(self) -> dict[str, object]:
        return {
            "log": self.log,
            "ok": self.ok,
            "origin": self.origin,
            "entries": self.entries,
            "checkpoints": self.checkpoints,
            "latest_size": self.latest_size,
            "problem": self.problem,
            "hint": self.hint,
            "warnings": self.warnings,
            "cosigned": self.cosigned,
            "witnessed_size": self.witnessed_size,
        }


def verify_local(
    path: Path,
    keys: Keys,
    *,
    origin: str | None,
    quorum: int,
    progress: Progress | None,
    previous: bytes | None = None,
) -> LogReport:
    """Replay a log file against its checkpoints and the cosignatures beside it; with
    `previous` (a checkpoint note saved earlier), check that the log still holds it."""
    report = LogReport(log=str(path))
    if not path.is_file():
        raise InvalidArgument(f"{path}: no such log file", field="log")
    origin = origin or origin_of(path)
    report.origin = origin
    if origin is None:
        report.entries = sum(1 for _ in log_lines(path))
        if report.entries:
            report.problem = (
                f"no signed checkpoint beside the log ({history_path(path).name} and "
                f"{latest_path(path).name} are missing): nothing proves its {report.entries} "
                "entries were not rewritten"
            )
        else:
            report.warnings.append("an empty log without checkpoints: nothing to verify")
        return report
    try:
        verifiers = keys.log_verifiers(origin)
    except InvalidArgument as exc:
        # a log nobody vouches for fails verification; the others of a directory go on
        report.problem = f"its checkpoints name origin {origin!r}: {exc.message}"
        return report
    result = verify_log(path, verifiers, origin=origin, progress=progress)
    report.entries, report.checkpoints = result.entries, result.checkpoints
    report.warnings.extend(result.warnings)
    report.problem = result.problem
    records = history(path)
    if records:
        report.latest_size = records[-1].size
    if result.problem is not None:
        report.hint = _tree_hint(path, result.problem)
        return report
    if report.latest_size is not None and report.entries > report.latest_size:
        report.warnings.append(
            f"lines {report.latest_size + 1}..{report.entries} come after the last checkpoint "
            f"({report.latest_size}): no signature covers them yet"
        )
    if previous is not None:
        report.problem = _check_saved(previous, verifiers, origin, records)
        if report.problem is not None:
            return report
    _check_cosignatures(path, report, verifiers, keys.witnesses(), records, quorum)
    return report


def _check_saved(
    previous: bytes, verifiers: list[NoteVerifier], origin: str, records: list[HistoryRecord]
) -> str | None:
    """Why a log (whose history verify_log accepted) does not hold a checkpoint saved earlier:
    a log rolled back together with its checkpoint files replays cleanly on its own."""
    saved = _open_any(previous, verifiers, [], origin)
    if isinstance(saved, str):
        raise InvalidArgument(f"--previous: {saved}", field="previous")
    last = records[-1].size if records else 0
    for record in records:
        if record.size == saved.size:
            if record.root == saved.root:
                return None
            return (
                f"checkpoint {saved.size} you saved has another root than the history's "
                f"checkpoint {saved.size}: the log was replaced by a fork"
            )
    if saved.size > last:
        return (
            f"the log's history ends at checkpoint {last}, behind checkpoint {saved.size} you "
            "saved: the log and its checkpoints were rolled back"
        )
    return (
        f"checkpoint {saved.size} you saved is not in the log's history: its checkpoint "
        "files were rewritten"
    )


def _check_cosignatures(
    path: Path,
    report: LogReport,
    verifiers: list[NoteVerifier],
    witnesses: list[CosignatureVerifier],
    records: list[HistoryRecord],
    quorum: int,
) -> None:
    """Each witness cosignature kept beside the log must verify, for a checkpoint of the
    (verified) history; a cosignature of another root is a fork the witness was shown."""
    signed = {record.size: record.root for record in records}
    # the parties (not keys) that cosigned each size: coordinator replicas are one party, and
    # a witness of the log's own party is no witness of it
    parties: dict[int, set[str]] = {}
    found, unreadable = cosignature_records(path)
    if unreadable is not None:
        report.problem = unreadable
        return
    for record in found:
        cosigned, bad, _ = check_cosignatures(record.note(report.origin or ""), witnesses)
        if bad:
            report.problem = (
                f"{record.where}: the cosignature of {', '.join(bad)} on checkpoint "
                f"{record.size} does not verify (forged or damaged)"
            )
            return
        if cosigned and signed.get(record.size) != record.root:
            report.problem = (
                f"{record.where}: {', '.join(sorted(cosigned))} cosigned checkpoint "
                f"{record.size} with a root that no checkpoint of the history has: the log "
                "showed its witnesses a fork"
            )
            return
        for name in cosigned:
            sizes = report.cosigned.setdefault(name, [])
            if record.size not in sizes:
                sizes.append(record.size)
            if party_host(name) != party_host(report.origin or ""):
                parties.setdefault(record.size, set()).add(party_host(name))
    for sizes in report.cosigned.values():
        sizes.sort()
    enough = [size for size, named in parties.items() if len(named) >= max(quorum, 1)]
    report.witnessed_size = max(enough) if enough else None
    if quorum and report.witnessed_size is None:
        report.problem = (
            f"no checkpoint is cosigned by witnesses of {quorum} parties other than the log's "
            f"({len(witnesses)} witness keys known): the log's history is not witnessed"
        )


def _open_any(
    note: bytes,
    verifiers: list[NoteVerifier],
    witnesses: list[CosignatureVerifier],
    origin: str,
) -> VerifiedCheckpoint | str:
    """The note verified with one of the log's keys, or why it does not verify."""
    failure = "no checkpoint note"
    for verifier in verifiers:
        try:
            return verify_checkpoint(note, log_key=verifier, witnesses=witnesses, origin=origin)
        except (Unauthenticated, InvalidArgument) as exc:
            failure = f"not a checkpoint signed by the log's key: {exc.message}"
    return failure


def _tree_hint(path: Path, problem: str) -> str | None:
    """The first line in the range a problem names whose hash differs from the tree file beside
    the log. That file is unsigned (whoever edits the log can rewrite it), so this is a pointer
    for the investigation, never a finding; an attacker who rewrote both leaves no hint."""
    found = _RANGE.search(problem)
    leaves_file = path.with_name(path.name + _TREE_LEAVES_SUFFIX)
    if found is None or not leaves_file.is_file():
        return None
    first, last = int(found.group(1)), int(found.group(2))
    try:
        with leaves_file.open("rb") as stored:
            for number, line in enumerate(log_lines(path), 1):
                if number < first:
                    continue
                if number > last:
                    break
                stored.seek((number - 1) * merkle.HASH_BYTES)
                leaf = stored.read(merkle.HASH_BYTES)
                if len(leaf) < merkle.HASH_BYTES:
                    return None
                if leaf != merkle.leaf_hash(line):
                    return (
                        f"line {number} is the first in {first}..{last} whose hash differs from "
                        f"the unsigned tree beside the log ({leaves_file.name}): start there"
                    )
    except OSError:
        return None
    return None


def verify_live(
    client: TransparencyClient,
    keys: Keys,
    *,
    origin: str,
    previous: bytes | None,
    quorum: int,
    progress: Progress | None,
) -> LogReport:
    """Fetch a live log's checkpoint and every entry it covers, and check that the entries hash
    to the signed root; with `previous` (a note saved earlier), that the log only grew since."""
    report = LogReport(log=f"live {origin}", origin=origin)
    verifiers = keys.log_verifiers(origin)
    witnesses = keys.witnesses()
    checkpoint: VerifiedCheckpoint | None = None
    failure = ""
    note = client.get_checkpoint_note(origin)
    checked = _open_any(note, verifiers, witnesses, origin)
    if isinstance(checked, str):
        report.problem = f"the served checkpoint: {checked}"
        return report
    checkpoint = checked
    if checkpoint.bad_cosignatures:
        failure = (
            f"the cosignature of {', '.join(checkpoint.bad_cosignatures)} on checkpoint "
            f"{checkpoint.size} does not verify (forged or damaged)"
        )
    report.latest_size = report.checkpoints = checkpoint.size
    report.checkpoints = 1
    report.cosigned = {name: [checkpoint.size] for name in checkpoint.cosigned_at}
    independent = {
        party_host(name)
        for name in checkpoint.cosigned_at
        if party_host(name) != party_host(checkpoint.origin)
    }
    if len(independent) >= max(quorum, 1):
        report.witnessed_size = checkpoint.size
    elif quorum:
        failure = failure or (
            f"checkpoint {checkpoint.size} is cosigned by witnesses of {len(independent)} "
            f"parties other than the log's, fewer than --quorum {quorum}"
        )
    if previous is not None:
        failure = failure or _check_previous(client, previous, checkpoint, verifiers, origin)
    tree = Levels()
    if checkpoint.size:
        for entry in client.entries(0, checkpoint.size, origin=origin):
            tree.append(merkle.leaf_hash(entry))
            if progress is not None:
                progress(1)
    report.entries = tree.size
    if tree.size < checkpoint.size:
        report.problem = (
            f"the log served {tree.size} entries but checkpoint {checkpoint.size} signed "
            f"{checkpoint.size}: entries {tree.size}..{checkpoint.size - 1} are missing"
        )
        return report
    if tree.root() != checkpoint.root:
        report.problem = _first_bad_entry(client, tree, checkpoint, origin)
        return report
    report.problem = failure or None
    return report


def _check_previous(
    client: TransparencyClient,
    previous: bytes,
    checkpoint: VerifiedCheckpoint,
    verifiers: list[NoteVerifier],
    origin: str,
) -> str:
    """Why the current checkpoint does not extend a saved one ("" when it does)."""
    old = _open_any(previous, verifiers, [], origin)
    if isinstance(old, str):
        raise InvalidArgument(f"--previous: {old}", field="previous")
    if old.size > checkpoint.size:
        return (
            f"the log's checkpoint ({checkpoint.size}) is behind the one you saved "
            f"({old.size}): the log was rolled back"
        )
    try:
        client.consistency_proof(old, checkpoint, origin=origin)
    except CryptoError as exc:
        return (
            f"checkpoint {checkpoint.size} does not extend the checkpoint {old.size} you saved "
            f"({exc.message}): the log was rewritten or forked since"
        )
    return ""


def _first_bad_entry(
    client: TransparencyClient, tree: Levels, checkpoint: VerifiedCheckpoint, origin: str
) -> str:
    """Name the first served entry that is not what the checkpoint signed: the largest k for
    which the log's consistency proof links the root of our first k entries to the signed root
    (RFC 9162 §2.1.4.2) is the length of the good prefix; entry k is the first bad one."""
    size = checkpoint.size
    good, bad = 0, size  # the prefix of 0 entries is always good; the whole tree is not
    try:
        while bad - good > 1:
            middle = (good + bad) // 2
            proof = client.raw_consistency_proof(origin, middle, size)
            try:
                merkle.verify_consistency(
                    middle, size, tree.root(middle), checkpoint.root, proof.hashes
                )
            except merkle.ProofError:
                bad = middle
            else:
                good = middle
    except OsmanthusError as exc:
        return (
            f"the entries served do not hash to the root checkpoint {size} signed: an entry "
            f"among entries {good}..{bad - 1} (lines {good + 1}..{bad}) differs; the log "
            f"refused the proofs that would narrow it down ({exc})"
        )
    return (
        f"entry {good} (line {good + 1}) is not what checkpoint {size} signed: the first "
        f"{good} entries are (the log's own consistency proof from {good} verifies), entry "
        f"{good} was changed, removed, inserted or reordered"
    )


def checked_note(
    note: bytes, keys: Keys, *, origin: str | None
) -> tuple[VerifiedCheckpoint | None, str]:
    """A note verified with the keys when there are any: (checkpoint, "") or (None, why not)."""
    text_origin = note.partition(b"\n")[0].decode("utf-8", errors="replace")
    origin = origin or text_origin
    result = _open_any(note, keys.log_verifiers(origin), keys.witnesses(), origin)
    if isinstance(result, str):
        return None, result
    return result, ""


def unverified_checkpoint(note: bytes) -> VerifiedCheckpoint:
    """A note's checkpoint without any signature checked (shown as NOT VERIFIED)."""
    text, _, _ = note.rpartition(b"\n\n")
    checkpoint = parse_checkpoint(text.decode("utf-8", errors="replace") + "\n")
    return VerifiedCheckpoint(checkpoint=checkpoint, note=note)


def merged_note(path: Path, note: bytes) -> bytes:
    """The latest note with the cosignature lines kept for it beside the log added."""
    body, _, signatures = note.rpartition(b"\n\n")
    lines = [line + b"\n" for line in signatures.split(b"\n") if line]
    try:
        checkpoint = parse_checkpoint(body.decode("utf-8") + "\n")
    except (InvalidArgument, UnicodeDecodeError):
        return note
    for record in cosignature_records(path)[0]:
        if (record.size, record.root) == (checkpoint.size, checkpoint.root_hash):
            lines += [line.encode() for line in record.lines if line.encode() not in lines]
    return body + b"\n\n" + b"".join(lines)


def lines_with_index(paths: Iterable[Path]) -> Iterator[tuple[Path, int, bytes]]:
    """(log, leaf index, line) of every line of every log, in order."""
    for path in paths:
        for index, line in enumerate(log_lines(path)):
            yield path, index, line

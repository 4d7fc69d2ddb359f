"""Loading records into a running node: the department operator's uploads and the inbox folder.

Both paths end in RecordStore.import_file on the node's own read-write connection: one
transaction per file (every row or none), queries reading the records before it or after it
(node.store). A file is known by its SHA-256, so an upload retried after a lost answer, or an
inbox file the node had applied just before it died, is not applied twice. Every import, loaded
or refused, is one audited decision in the node's log (who, the file's digest, the rows added,
corrected and withdrawn, the outcome); no row's content is written there.

The operator uploads with `osmanthus node import --node HOST:PORT FILE` (IngestService, an
operator certificate named after the department, as the list office). The inbox is a folder
the node watches (`node serve --inbox DIR`): files moved into it are applied in name order
and moved to `done/`, or to `rejected/` with a `<name>.reason.txt` saying why.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pwd
import secrets
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from types import TracebackType
from typing import Final

from node.cases import CaseStore
from node.importworker import StagingWorker
from node.store import ImportReport, RecordStore
from osmanthus.core import metrics
from osmanthus.core.audit import AuditLog, redacted_reason
from osmanthus.core.audited import INTERNAL_ERROR, AuditedRequest
from osmanthus.core.catalogue import Catalogue, Department
from osmanthus.core.clock import china_today
from osmanthus.core.errors import (
    FailedPrecondition,
    ImportRejected,
    InvalidArgument,
    OsmanthusError,
    PermissionDenied,
)
from osmanthus.core.lists import holds_resident_id
from osmanthus.core.peers import PeerRole
from osmanthus.core.rules import RuleSet
from osmanthus.core.tls import PeerIdentity
from osmanthus.core.wire.ingest import (
    IMPORT_SUFFIXES,
    MAX_IMPORT_BYTES,
    ImportOutcome,
    UploadHeader,
)

#: where uploads are spooled while they arrive (in the node's state directory, owner-only)
SPOOL_DIR: Final = "ingest-spool"
#: the inbox's subfolders
DONE: Final = "done"
REJECTED: Final = "rejected"
REASON_SUFFIX: Final = ".reason.txt"
#: how often the inbox is looked at when nothing wakes it
DEFAULT_INBOX_POLL_S: Final = 2.0
#: names in the inbox that are still being written (moved in atomically under another name)
_IN_PROGRESS_SUFFIXES: Final = (".tmp", ".part", ".partial")
#: how long an inbox file whose import failed for a fault of the node's (a full disk, say) waits
#: before it is tried again (at once if it changes)
DEFAULT_INBOX_RETRY_S: Final = 30.0

_log = logging.getLogger(__name__)


def _audit_reason(error: OsmanthusError) -> str:
    """A refusal's reason without row content: a rejected file is counted, not quoted (its
    problems quote the rows' values, resident ids among them)."""
    if isinstance(error, ImportRejected):
        return f"ImportRejected: {error.problem_count} problem(s); nothing was imported"
    return redacted_reason(error)


class IngestOffice:
    """The node's IngestService and inbox on typed values: who may import, the audit entry,
    the spooled upload; the store does the import."""

    def __init__(
        self,
        *,
        department: Department,
        catalogue: Catalogue,
        store: RecordStore,
        rules: RuleSet,
        audit: AuditLog,
        spool_dir: Path,
        cases: CaseStore | None = None,
        today: Callable[[], date] = china_today,
        refused: str | None = None,
    ) -> None:
        self._department = department
        self._catalogue = catalogue
        self._store = store
        self._rules = rules
        self._audit = audit
        self._spool_dir = spool_dir
        self._cases = cases
        self._today = today
        # why live imports are off (the record store is open read-only), None when they are on
        self._refused = refused
        if refused is None and store.read_only:
            self._refused = store.read_only_reason or "its record store is open read-only"
        # the rows are read and checked in a worker process of lower priority, started on
        # the first import: the node's own threads keep answering queries meanwhile
        self._worker = StagingWorker()

    @property
    def store(self) -> RecordStore:
        return self._store

    def close(self) -> None:
        """Stop the import worker (after the import it runs, if any)."""
        self._worker.close()

    @property
    def refused(self) -> str | None:
        """Why this node refuses live imports, None when it takes them."""
        return self._refused

    def _require_live(self) -> None:
        if self._refused is not None:
            raise FailedPrecondition(
                f"department {self._department.id}: this node takes no live imports: "
                f"{self._refused}"
            )

    def _require_operator(self, caller: PeerIdentity) -> None:
        dept = self._department.id
        if caller.role is not PeerRole.OPERATOR or caller.name != dept:
            raise PermissionDenied(
                f"records of {dept} are loaded by its operator only: an operator certificate "
                f"named {dept!r} (osmanthus certs issue --role operator --name {dept}); the "
                f"caller's certificate names {caller.role.value} {caller.name!r}"
            )

    def upload(
        self, header: UploadHeader, data: Iterable[bytes], *, caller: PeerIdentity
    ) -> ImportOutcome:
        """IngestService.ImportRecords: spool the file, check its size and digest, import it."""
        record = self._record(f"operator:{caller.name}" if caller.role is PeerRole.OPERATOR
                              else f"{caller.role.value}:{caller.name}", header.sha256,
                              source=header.file_name)  # fmt: skip
        with _ImportAudit(self._audit, record) as audit:
            self._require_operator(caller)
            self._require_live()
            before = self._store.applied(header.sha256)
            if before is not None:
                # the stream is left unread: a retry of an applied file costs no upload
                return audit.done(before)
            with self._spooled(header, data) as path:
                report = self._import(path, audit, actor=record.requester, sha256=header.sha256,
                                      source=header.file_name)  # fmt: skip
            return audit.done(report)

    def import_path(self, path: Path, *, actor: str) -> ImportOutcome:
        """Import a regular file on the node's disk (the inbox), audited as `actor`.

        The file is opened without following a symbolic link and copied into the node's spool
        (its SHA-256 taken on the way), and the copy is imported: what was checked is what is
        read, whatever happens to the name meanwhile. A link or anything but a regular file is
        refused (InvalidArgument) without reading what it points to.
        """
        self._require_live()
        with self._copied(path) as (copy, sha256):
            record = self._record(actor, sha256, source=path.name)
            with _ImportAudit(self._audit, record) as audit:
                report = self._import(copy, audit, actor=actor, sha256=sha256, source=path.name)
                return audit.done(report)

    def _record(self, requester: str, sha256: str, *, source: str) -> AuditedRequest:
        return AuditedRequest(
            query_id=f"imp_{secrets.token_hex(8)}",
            requester=requester[:64],
            purpose="record_import",
            extra={"sha256": sha256[:64], "file": _audited_name(source)},
        )

    def _import(
        self, path: Path, audit: _ImportAudit, *, actor: str, sha256: str, source: str
    ) -> ImportReport:
        dept = self._department.id
        metrics.ingest_started(dept)
        loaded = False
        try:
            report = self._store.import_file(
                path, rules=self._rules, catalogue=self._catalogue, today=self._today(),
                actor=actor, sha256=sha256, source=source, check_change=self._case_about,
                progress=self._progress, before_commit=audit.before_commit, worker=self._worker,
            )  # fmt: skip
            loaded = not report.duplicate
        finally:
            metrics.ingest_finished(dept, loaded=loaded)
        if loaded:
            # counted by kind from what committed: a refused file's rows were never loaded
            for n, kind in ((report.rows, "new"), (report.corrected, "correction"),
                            (report.withdrawn, "withdrawal")):  # fmt: skip
                if n:
                    metrics.ingest_rows(n, department=dept, kind=kind)
        return report

    def _progress(self, rows_read: int) -> None:
        metrics.ingest_progress(rows_read, department=self._department.id)

    def _case_about(self, record_id: str) -> str | None:
        """Why a record may not be corrected or withdrawn by an import: a case is about it (an
        open objection disputes it, or an upheld case changed it, and the case's change would
        still apply over the import's: node.caseoverlay). None when it may."""
        if self._cases is None or self._cases.overlay.change(record_id) is None:
            return None
        return (
            f"record {record_id!r} has an objection or repair case that changed or disputes "
            "it; decide it in the case office (osmanthus cases) instead of importing a change"
        )

    @contextlib.contextmanager
    def _spooled(self, header: UploadHeader, data: Iterable[bytes]) -> Iterator[Path]:
        """The upload in a private file next to the node's state, checked against its header
        (size and SHA-256); removed whatever happens."""
        self._spool_dir.mkdir(mode=0o700, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="upload-", suffix=header.suffix, dir=self._spool_dir)
        path = Path(name)
        try:
            digest, size = hashlib.sha256(), 0
            with os.fdopen(fd, "wb") as f:
                for block in data:
                    size += len(block)
                    if size > header.size:
                        raise InvalidArgument(
                            f"the upload is longer than the {header.size} bytes its header says",
                            field="header.size",
                        )
                    digest.update(block)
                    f.write(block)
            if size != header.size:
                raise InvalidArgument(
                    f"the upload ended after {size} of the {header.size} bytes its header says",
                    field="header.size",
                )
            if digest.hexdigest() != header.sha256:
                raise InvalidArgument(
                    "the upload's SHA-256 is not the one its header says (damaged in transit?)",
                    field="header.sha256",
                )
            yield path
        finally:
            path.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _copied(self, path: Path) -> Iterator[tuple[Path, str]]:
        """A private copy of the regular file at `path` in the spool, and its SHA-256; removed
        whatever happens. The name is opened with O_NOFOLLOW: a symbolic link is refused, never
        read."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise InvalidArgument(
                f"{path.name}: cannot be opened as a regular file ({exc.strerror}); a symbolic "
                "link is never followed",
                field="path",
            ) from None
        with os.fdopen(fd, "rb") as source:
            info = os.fstat(source.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise InvalidArgument(f"{path.name}: is not a regular file", field="path")
            if info.st_size > MAX_IMPORT_BYTES:
                raise InvalidArgument(
                    f"{path.name}: {info.st_size} bytes, more than the {MAX_IMPORT_BYTES} an "
                    "import file may have; split it",
                    field="path",
                )
            self._spool_dir.mkdir(mode=0o700, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix="inbox-", suffix=path.suffix.lower(),
                                        dir=self._spool_dir)  # fmt: skip
            copy = Path(name)
            try:
                digest = hashlib.sha256()
                with os.fdopen(fd, "wb") as target:
                    while block := source.read(1 << 20):
                        digest.update(block)
                        target.write(block)
                yield copy, digest.hexdigest()
            finally:
                copy.unlink(missing_ok=True)


def _describe(record: AuditedRequest, report: ImportReport) -> None:
    record.allow(
        "file applied before; nothing done" if report.duplicate else "file imported",
        added=report.rows,
        corrected=report.corrected,
        withdrawn=report.withdrawn,
        duplicate=int(report.duplicate),
    )


def _outcome(report: ImportReport) -> ImportOutcome:
    assert report.at is not None
    return ImportOutcome(
        sha256=report.sha256, duplicate=report.duplicate, added=report.rows,
        corrected=report.corrected, withdrawn=report.withdrawn, applied_at=report.at,
        applied_by=report.actor,
    )  # fmt: skip


class _ImportAudit:
    """One import's one audit entry, written before its rows can be read.

    A file loaded is allowed inside the import's transaction, just before its commit
    (RecordStore.import_file's `before_commit`): an entry the log cannot take (a full disk:
    Unavailable) rolls the import back, so that no row goes live without its entry, and a retry
    applies the file rather than finding it "applied before". A file applied before is allowed
    when the block ends; a refusal or a fault is denied as osmanthus.core.audited denies. Should
    the commit itself fail after the entry, a second entry denies the import ("nothing was
    imported"): the log may say more than happened, never less.
    """

    def __init__(self, log: AuditLog, record: AuditedRequest) -> None:
        self._log = log
        self._record = record
        self._written = False

    def __enter__(self) -> _ImportAudit:
        return self

    def _append(self, decision: str, reason: str) -> None:
        self._log.append(self._record.entry(decision, reason, time=datetime.now(UTC)))

    def before_commit(self, report: ImportReport) -> None:
        _describe(self._record, report)
        self._append("allow", self._record.reason)
        self._written = True

    def done(self, report: ImportReport) -> ImportOutcome:
        """The outcome to answer, once the import's entry is durable."""
        if not self._written:
            _describe(self._record, report)
            self._append("allow", self._record.reason)
            self._written = True
        return _outcome(report)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            if not self._written:
                self._append("deny", INTERNAL_ERROR)
                raise AssertionError(f"import {self._record.query_id}: answered unaudited")
            return
        if isinstance(exc, OsmanthusError):
            reason = _audit_reason(exc)
        elif isinstance(exc, Exception):
            reason = INTERNAL_ERROR
        else:
            return
        if self._written:
            reason = f"the commit failed after the entry; nothing was imported ({reason})"
        if self._record.on_refusal is not None:
            self._record.on_refusal(self._record)
        self._append("deny", reason)


def _audited_name(name: str) -> str:
    # a file name is the operator's to choose: one holding a resident id is not logged
    text = Path(name).name[:80]
    return "(withheld: holds a resident id)" if holds_resident_id(text) else text


def _owner(path: Path) -> str:
    try:
        return pwd.getpwuid(os.lstat(path).st_uid).pw_name
    except (KeyError, OSError):
        return "unknown"


class Inbox:
    """A folder the node watches: each import file moved into it is applied, in name order,
    then moved to `done/`, or to `rejected/` beside a `<name>.reason.txt`.

    A file stays in the inbox until it is moved out, and the move comes after the import's
    commit: a node that dies mid-file finds it again at start and applies it (the
    transaction it died in never committed), and one that died between the commit and the
    move finds it applied (its SHA-256) and only moves it. Files should arrive whole:
    write them elsewhere (or as `.name` or `name.tmp`) and rename them in. A file copied in
    place is read only once its size and modification time have not changed between two looks
    at the folder. Only regular files are read: a symbolic link (or a device, a pipe) is moved
    to `rejected/` unread. A file the node fails to apply for a fault of its own (Unavailable:
    a full disk) stays in the inbox and is tried again; only a file at fault (ImportRejected,
    InvalidArgument) is rejected.
    """

    def __init__(
        self,
        directory: Path,
        *,
        office: IngestOffice,
        poll_s: float = DEFAULT_INBOX_POLL_S,
        retry_s: float = DEFAULT_INBOX_RETRY_S,
    ) -> None:
        self.directory = Path(directory)
        self._office = office
        self._poll_s = poll_s
        self._retry_s = retry_s
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        # each regular file's (size, mtime, inode) at the last look: read when unchanged
        self._seen: dict[str, tuple[int, int, int]] = {}
        # files that failed for a fault of the node's: their mark, and when to try again
        self._failed: dict[str, tuple[tuple[int, int, int], float]] = {}
        self._refusal_logged = False
        for sub in (self.directory, self.directory / DONE, self.directory / REJECTED):
            sub.mkdir(mode=0o700, parents=True, exist_ok=True)

    def pending(self) -> list[Path]:
        """The entries ready to handle, in the order they will be: each regular file whose
        size and modification time are those the previous call saw (so a file still being
        copied waits), and anything that is no regular file or folder (rejected unread)."""
        ready: list[Path] = []
        seen: dict[str, tuple[int, int, int]] = {}
        now = time.monotonic()
        for name in sorted(os.listdir(self.directory)):
            if name.startswith(".") or name.lower().endswith(_IN_PROGRESS_SUFFIXES):
                continue
            path = self.directory / name
            try:
                info = os.lstat(path)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(info.st_mode):
                continue
            if not stat.S_ISREG(info.st_mode):
                ready.append(path)
                continue
            mark = (info.st_size, info.st_mtime_ns, info.st_ino)
            seen[name] = mark
            failed = self._failed.get(name)
            if failed is not None and failed[0] == mark and now < failed[1]:
                continue
            if self._seen.get(name) == mark:
                ready.append(path)
        self._seen = seen
        self._failed = {n: f for n, f in self._failed.items() if n in seen}
        return ready

    def run_once(self) -> int:
        """Apply every waiting file; returns how many were handled."""
        refused = self._office.refused
        if refused is not None:
            if not self._refusal_logged:
                _log.warning(
                    "inbox %s: not read; this node takes no live imports: %s",
                    self.directory, refused,
                )  # fmt: skip
                self._refusal_logged = True
            return 0
        handled = 0
        for path in self.pending():
            if self._stop.is_set():
                break
            self._handle(path)
            handled += 1
        return handled

    def _handle(self, path: Path) -> None:
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return
        if not stat.S_ISREG(info.st_mode):
            # never opened: a link's target is not read, nor named in the reason
            self._reject(path, "not a regular file (a symbolic link, a device or a pipe is "
                               "never read); move the file itself into the inbox")  # fmt: skip
            return
        if path.suffix.lower() not in IMPORT_SUFFIXES:
            self._reject(path, f"not an import file: the name must end in "
                               f"{' or '.join(IMPORT_SUFFIXES)}")  # fmt: skip
            return
        try:
            outcome = self._office.import_path(path, actor=f"inbox:{_owner(path)}")
        except ImportRejected as exc:
            every = "\n".join(
                f"{line}\t{field}\t{problem}" for line, field, problem in exc.problems
            )
            listed = (
                "every problem (line, field, problem)"
                if exc.problem_count == len(exc.problems)
                else f"the first {len(exc.problems)} of {exc.problem_count} problems "
                "(line, field, problem)"
            )
            self._reject(path, f"{exc.message}\n\n{listed}:\n{every}")
            return
        except InvalidArgument as exc:
            self._reject(path, str(exc))
            return
        except Exception as exc:
            # a fault of the node's, not the file's (Unavailable: the audit log or the disk):
            # the file stays in the inbox and is tried again once it changes or in a while
            self._failed[path.name] = (
                (info.st_size, info.st_mtime_ns, info.st_ino),
                time.monotonic() + self._retry_s,
            )
            if isinstance(exc, OsmanthusError):
                _log.warning("inbox %s: %s not applied (%s); it stays in the inbox and is "
                             "tried again in %.0f s", self.directory, path.name, exc,
                             self._retry_s)  # fmt: skip
            else:
                _log.exception("inbox %s: importing %s failed; it stays in the inbox and is "
                               "tried again", self.directory, path.name)  # fmt: skip
            return
        _log.info(
            "inbox %s: %s %s (%d added, %d corrected, %d withdrawn)",
            self.directory, path.name, "was applied before" if outcome.duplicate else "imported",
            outcome.added, outcome.corrected, outcome.withdrawn,
        )  # fmt: skip
        os.replace(path, _free_name(self.directory / DONE, path.name))

    def _reject(self, path: Path, reason: str) -> None:
        target = _free_name(self.directory / REJECTED, path.name)
        why = target.with_name(target.name + REASON_SUFFIX)
        why.write_text(reason + "\n", encoding="utf-8")
        os.replace(path, target)
        _log.warning("inbox %s: %s rejected: %s", self.directory, path.name, reason[:300])

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="osmanthus-inbox", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:
                _log.exception("inbox %s: scan failed", self.directory)
            self._wake.wait(self._poll_s)
            self._wake.clear()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()


def _free_name(directory: Path, name: str) -> Path:
    """`directory/name`, or `name.1`, `name.2`, ... when taken (the same name sent twice)."""
    target = directory / name
    n = 0
    while target.exists() or target.with_name(target.name + REASON_SUFFIX).exists():
        n += 1
        target = directory / f"{name}.{n}"
    return target

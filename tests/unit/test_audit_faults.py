"""The audit log on a disk that fills up or a file that turns read-only: real faults, no mocks.

A full disk is a small tmpfs the test mounts and fills (tests/smalldisk.py); a read-only file
is `chattr +i` on ext4. Every append that cannot be written raises Unavailable naming no path;
the log, its Merkle tree and its checkpoints stay consistent; the log takes writes again by
itself once the disk does, and a reopened log (a restart) still verifies.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from osmanthus.core import merkle
from osmanthus.core.audit import TREE_SUFFIX, AuditEntry, AuditLog, load_or_create_salt
from osmanthus.core.checkpoints import Checkpointer, history_path, verify_log
from osmanthus.core.errors import ConfigError, Unavailable
from osmanthus.core.files import append_durably
from osmanthus.core.signednote import NoteSigner, NoteVerifier
from tests.smalldisk import fill, immutable, small_disk

ORIGIN = "node.osmanthus/psb"
SIGNER = NoteSigner(name=ORIGIN, private_key=Ed25519PrivateKey.generate())
VERIFIER = NoteVerifier(name=ORIGIN, public_key=SIGNER.public_key)
#: a full disk still takes entries into the last page of the log: at most this many fit there
PAGE_SLACK_ENTRIES = 64
REFUSAL = "this server cannot write its audit log: No space left on device; it answers nothing"


def _entry(log: AuditLog, query_id: str) -> AuditEntry:
    return AuditEntry(
        time=datetime(2026, 11, 26, 10, 0, tzinfo=UTC),
        query_id=query_id,
        requester="agency-1",
        purpose="loan_underwriting",
        consent_id="cns_abcdefghijklmnopqrstuv",
        policy_hash="ab" * 32,
        decision="allow",
        reason="permitted",
        shape="breakdown",
        subject_hash=log.subject_hash("110101199003074578"),
    )


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with small_disk(tmp_path / "disk", size_bytes=256 * 1024) as mounted:
        yield mounted


def _open(directory: Path) -> AuditLog:
    path = directory / "audit.jsonl"
    return AuditLog(path=path, salt=load_or_create_salt(directory / "audit.salt"))


def _append_until_refused(log: AuditLog, prefix: str) -> tuple[list[str], Unavailable]:
    """Append until the disk refuses; (the ids written, the refusal)."""
    written: list[str] = []
    for n in range(PAGE_SLACK_ENTRIES):
        query_id = f"{prefix}_{n}"
        try:
            log.append(_entry(log, query_id))
        except Unavailable as refused:
            return written, refused
        written.append(query_id)
    raise AssertionError(f"{PAGE_SLACK_ENTRIES} entries fitted on a full disk")


def _assert_whole_lines(log: AuditLog, count: int) -> None:
    """While the disk is full: `count` whole lines, nothing of a refused entry. (The tree may
    be behind the log: its files need pages the log's last one did not.)"""
    data = log.path.read_bytes()
    assert data.endswith(b"\n")
    assert data.count(b"\n") == count


def _assert_consistent(log: AuditLog) -> None:
    """Whole lines only, one leaf each, and the tree's root is the lines' root."""
    data = log.path.read_bytes()
    assert data.endswith(b"\n")
    lines = data.split(b"\n")[:-1]
    assert log.tree_size == len(lines)
    assert log.root() == merkle.root_of(lines)


def test_a_full_disk_refuses_entries_and_the_log_recovers_when_space_is_freed(
    disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = _open(disk)
    checkpointer = Checkpointer(log=log, signer=SIGNER, origin=ORIGIN, every_entries=1)
    for n in range(5):
        log.append(_entry(log, f"before_{n}"))
    checkpointer.issue()
    filler = fill(disk)
    with caplog.at_level(logging.ERROR, logger="osmanthus.core.audit"):
        written, refused = _append_until_refused(log, "full")
    assert str(refused) == REFUSAL + " until it can"
    assert str(disk) not in str(refused)  # the caller learns no path
    assert str(log.path) in caplog.text  # the operator's log has it
    assert log.failure == "No space left on device"
    # a refused entry is nowhere: no torn line
    _assert_whole_lines(log, 5 + len(written))
    assert [e.query_id for e in log.entries()][-1] == (written or ["before_4"])[-1]
    # still full: still refused, and the checkpoint cannot be stored either
    with pytest.raises(Unavailable):
        log.append(_entry(log, "still_full"))
    with pytest.raises(ConfigError, match="No space left on device"):
        checkpointer.issue()
    filler.unlink()
    log.append(_entry(log, "after"))
    assert log.failure is None
    _assert_consistent(log)
    ids = [e.query_id for e in log.entries()]
    assert ids == [*(f"before_{n}" for n in range(5)), *written, "after"]
    checkpointer.issue()
    log.close()
    # a restart: the reopened log's tree is the one kept, not rebuilt, and everything verifies
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="osmanthus.core.audit"):
        reopened = _open(disk)
    assert "rebuilding" not in caplog.text and "lacks" not in caplog.text
    _assert_consistent(reopened)
    reopened.close()
    report = verify_log(log.path, [VERIFIER])
    assert report.ok, report.problem
    assert report.entries == len(ids)
    assert not report.warnings


def test_concurrent_appends_on_a_full_disk_all_fail_and_none_hangs(disk: Path) -> None:
    log = _open(disk)
    log.append(_entry(log, "first"))
    filler = fill(disk)
    written, _ = _append_until_refused(log, "slack")
    outcomes: list[str] = []
    guard = threading.Lock()

    def writer(n: int) -> None:
        try:
            log.append(_entry(log, f"t_{n}"))
            result = "written"
        except Unavailable:
            result = "refused"
        with guard:
            outcomes.append(result)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes == ["refused"] * 16
    _assert_whole_lines(log, 1 + len(written))
    filler.unlink()
    threads = [threading.Thread(target=writer, args=(n,)) for n in range(16, 32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes[16:] == ["written"] * 16
    _assert_consistent(log)
    log.close()


def test_a_log_file_made_read_only_refuses_entries_until_it_is_writable(tmp_path: Path) -> None:
    log = _open(tmp_path)
    log.append(_entry(log, "before"))
    with (
        immutable(log.path),
        pytest.raises(Unavailable, match="Operation not permitted; it answers nothing"),
    ):
        log.append(_entry(log, "read_only"))
    log.append(_entry(log, "after"))
    assert [e.query_id for e in log.entries()] == ["before", "after"]
    _assert_consistent(log)
    log.close()


def test_a_tree_that_cannot_be_written_catches_up_without_a_restart(tmp_path: Path) -> None:
    log = _open(tmp_path)
    log.append(_entry(log, "before"))
    leaves = tmp_path / ("audit.jsonl" + TREE_SUFFIX + ".0")
    with immutable(leaves):
        # the entry is durable, so it is recorded; the tree falls behind and says so
        log.append(_entry(log, "tree_read_only_1"))
        log.append(_entry(log, "tree_read_only_2"))
        with pytest.raises(ConfigError, match="Merkle tree failed"):
            log.root()
    log.append(_entry(log, "after"))
    _assert_consistent(log)
    assert log.tree_size == 4
    log.close()
    reopened = _open(tmp_path)
    _assert_consistent(reopened)
    reopened.close()


def test_an_append_to_a_full_disk_leaves_no_torn_line(disk: Path) -> None:
    history = disk / "audit.jsonl.checkpoints"
    append_durably(history, b'{"size":1}\n', field="checkpoint")
    before = history.read_bytes()
    filler = fill(disk)
    # more than the last page can take: part of it is written before the disk refuses
    with pytest.raises(ConfigError, match="No space left on device"):
        append_durably(history, b"x" * 10_000 + b"\n", field="checkpoint")
    assert history.read_bytes() == before
    filler.unlink()
    append_durably(history, b'{"size":2}\n', field="checkpoint")
    assert history.read_bytes() == before + b'{"size":2}\n'


def test_checkpoints_resume_after_a_full_disk_and_the_history_verifies(disk: Path) -> None:
    log = _open(disk)
    checkpointer = Checkpointer(log=log, signer=SIGNER, origin=ORIGIN, every_entries=1)
    log.append(_entry(log, "one"))
    checkpointer.issue()
    filler = fill(disk)
    for _ in range(PAGE_SLACK_ENTRIES):
        # the history's page takes a few records; the latest file (a new file) none
        with pytest.raises(ConfigError, match="No space left on device"):
            checkpointer.issue()
        if not history_path(log.path).read_bytes().endswith(b"\n"):
            raise AssertionError("a torn checkpoint record was left")
    filler.unlink()
    log.append(_entry(log, "two"))
    checkpointer.issue()
    log.close()
    report = verify_log(log.path, [VERIFIER])
    assert report.ok, report.problem
    assert report.entries == 2

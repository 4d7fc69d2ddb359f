"""The audit log's RFC 6962 Merkle tree: kept beside the log, repaired from it, never over it."""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from osmanthus.core import merkle
from osmanthus.core.audit import AuditEntry, AuditLog, load_or_create_salt
from osmanthus.core.errors import ConfigError, InvalidArgument

SUBJECT = "320505199001010018"


@pytest.fixture
def salt(tmp_path: Path) -> bytes:
    return load_or_create_salt(tmp_path / "audit.salt")


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


def entry(log: AuditLog, query_id: str, *, subject: str = SUBJECT) -> AuditEntry:
    return AuditEntry(
        time=datetime(2026, 11, 26, 10, 0, 0, 123456, tzinfo=UTC),
        query_id=query_id,
        requester="bank-of-suzhou",
        purpose="loan_underwriting",
        consent_id="cns_abcdefghijklmnopqrstuv",
        policy_hash="ab" * 32,
        decision="allow",
        reason="permitted by central-loan-underwriting",
        shape="breakdown",
        subject_hash=log.subject_hash(subject),
        extra={"ciphertexts_received": 22},
    )


def fill(path: Path, salt: bytes, count: int, *, first: int = 0, tree: bool = True) -> None:
    with AuditLog(path=path, salt=salt, tree=tree) as log:
        for i in range(first, first + count):
            log.append(entry(log, f"q_{i}"))


def lines(path: Path) -> list[bytes]:
    data = path.read_bytes()
    assert data.endswith(b"\n")
    return data.split(b"\n")[:-1]


def tree_file(path: Path, level: int) -> Path:
    return path.parent / f"{path.name}.tree.{level}"


def check_tree(log: AuditLog) -> None:
    """The log's tree is the RFC 6962 tree of its file's lines."""
    written = lines(log.path)
    assert log.tree_size == len(written)
    assert log.root() == merkle.root_of(written)


class Spy:
    """Counts leaf hashes computed and leaves appended to a HashStore."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.hashed = 0
        self.appended = 0
        real_hash, real_append = merkle.leaf_hash, merkle.HashStore.append

        def counting_hash(data: bytes) -> bytes:
            self.hashed += 1
            return real_hash(data)

        def counting_append(store: merkle.HashStore, leaf: bytes, *, sync: bool = True) -> int:
            self.appended += 1
            return real_append(store, leaf, sync=sync)

        monkeypatch.setattr(merkle, "leaf_hash", counting_hash)
        monkeypatch.setattr(merkle.HashStore, "append", counting_append)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Iterator[Spy]:
    yield Spy(monkeypatch)


def test_root_is_the_rfc6962_root_of_the_lines_after_concurrent_appends(
    path: Path, salt: bytes
) -> None:
    threads_n, per_thread = 6, 20
    with AuditLog(path=path, salt=salt) as log:
        start = threading.Barrier(threads_n)

        def writer(n: int) -> None:
            start.wait()
            for i in range(per_thread):
                log.append(entry(log, f"q_{n}_{i}"))

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(threads_n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        check_tree(log)
        assert log.tree_size == threads_n * per_thread
        # leaf i is line i + 1 as written, without its newline
        for index, item in log.indexed_entries():
            assert log.leaf(index) == merkle.leaf_hash(item.to_json().encode("ascii"))
    for level in range(7):  # 120 leaves: levels 0..6
        info = tree_file(path, level).stat()
        assert stat.S_IMODE(info.st_mode) == 0o600
    assert not tree_file(path, 7).exists()


def test_an_empty_log_has_the_empty_root(path: Path, salt: bytes) -> None:
    with AuditLog(path=path, salt=salt) as log:
        assert log.tree_size == 0
        assert log.root() == merkle.EMPTY_ROOT


def test_a_clean_reopen_hashes_one_line_and_continues(
    path: Path, salt: bytes, spy: Spy, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(path, salt, 11)
    before = {level: tree_file(path, level).stat() for level in range(4)}
    spy.hashed = spy.appended = 0
    with AuditLog(path=path, salt=salt) as log:
        # the last leaf is checked against the last line: one hash, nothing appended
        assert (spy.hashed, spy.appended) == (1, 0)
        for level, info in before.items():
            after = tree_file(path, level).stat()
            assert (after.st_size, after.st_mtime_ns) == (info.st_size, info.st_mtime_ns)
        assert log.tree_size == 11
        log.append(entry(log, "q_11"))
        check_tree(log)


def test_a_tree_one_leaf_behind_catches_up(
    path: Path, salt: bytes, spy: Spy, caplog: pytest.LogCaptureFixture
) -> None:
    fill(path, salt, 5)  # 5 leaves: dropping the last one leaves levels 1 and 2 in step
    leaves = tree_file(path, 0)
    os.truncate(leaves, leaves.stat().st_size - merkle.HASH_BYTES)
    spy.hashed = spy.appended = 0
    with caplog.at_level(logging.WARNING), AuditLog(path=path, salt=salt) as log:
        # one hash to check line 4 against leaf 3, one for the missing line 5
        assert (spy.hashed, spy.appended) == (2, 1)
        check_tree(log)
    assert "lacks the last 1 line(s) of the log" in caplog.text


def test_lines_written_after_the_tree_stopped_are_hashed_only(
    path: Path, salt: bytes, spy: Spy
) -> None:
    # a stop after the log's fsync, before the tree: the log has lines the tree lacks
    fill(path, salt, 6)
    fill(path, salt, 3, first=6, tree=False)
    spy.hashed = spy.appended = 0
    with AuditLog(path=path, salt=salt) as log:
        assert (spy.hashed, spy.appended) == (1 + 3, 3)
        check_tree(log)
        assert log.tree_size == 9


def test_a_log_truncated_below_its_tree_is_refused(path: Path, salt: bytes) -> None:
    fill(path, salt, 5)
    kept = b"".join(line + b"\n" for line in lines(path)[:3])
    path.write_bytes(kept)
    before = tree_file(path, 0).read_bytes()
    with pytest.raises(ConfigError, match=r"the log has 3 complete lines .* holds 5 leaves"):
        AuditLog(path=path, salt=salt)
    # never rebuilt over the shorter log: the tree stays as evidence
    assert tree_file(path, 0).read_bytes() == before


def test_an_emptied_log_is_refused_too(path: Path, salt: bytes) -> None:
    fill(path, salt, 2)
    path.write_bytes(b"")
    with pytest.raises(ConfigError, match=r"the log has 0 complete lines .* holds 2 leaves"):
        AuditLog(path=path, salt=salt)


@pytest.mark.parametrize("level", [0, 1])
def test_a_torn_tree_file_is_rebuilt_with_a_warning(
    path: Path, salt: bytes, level: int, caplog: pytest.LogCaptureFixture
) -> None:
    fill(path, salt, 6)
    with tree_file(path, level).open("ab") as handle:
        handle.write(b"\x01" * 7)
    with caplog.at_level(logging.WARNING), AuditLog(path=path, salt=salt) as log:
        check_tree(log)
        log.append(entry(log, "q_6"))
        check_tree(log)
    assert f"rebuilding the audit log's Merkle tree from its 6 lines: audit.jsonl.tree.{level}" in (
        caplog.text
    )
    assert tree_file(path, 0).stat().st_size == 7 * merkle.HASH_BYTES


def test_tree_files_out_of_step_are_rebuilt(
    path: Path, salt: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    fill(path, salt, 6)
    # the leaf of line 6 is lost but the node it completed on level 1 is not
    leaves = tree_file(path, 0)
    os.truncate(leaves, leaves.stat().st_size - merkle.HASH_BYTES)
    with caplog.at_level(logging.WARNING), AuditLog(path=path, salt=salt) as log:
        check_tree(log)
    assert "out of step" in caplog.text


def test_a_missing_level_is_rebuilt(
    path: Path, salt: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    fill(path, salt, 9)
    tree_file(path, 2).unlink()
    with caplog.at_level(logging.WARNING), AuditLog(path=path, salt=salt) as log:
        check_tree(log)
    assert "audit.jsonl.tree.2 is missing" in caplog.text


def test_a_log_without_a_tree_gets_one_with_a_warning(
    path: Path, salt: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    fill(path, salt, 7, tree=False)
    assert not tree_file(path, 0).exists()
    with caplog.at_level(logging.WARNING), AuditLog(path=path, salt=salt) as log:
        check_tree(log)
    assert "from its 7 lines: there is none" in caplog.text


def test_a_zeroed_last_leaf_is_rebuilt(
    path: Path, salt: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    # the size of an unsynced write reached the disk but not its data
    fill(path, salt, 3)
    leaves = tree_file(path, 0)
    data = leaves.read_bytes()
    leaves.write_bytes(data[: -merkle.HASH_BYTES] + bytes(merkle.HASH_BYTES))
    with caplog.at_level(logging.WARNING), AuditLog(path=path, salt=salt) as log:
        check_tree(log)
    assert "is zeros" in caplog.text


def test_an_edited_last_line_is_refused_naming_it(path: Path, salt: bytes) -> None:
    fill(path, salt, 4)
    data = path.read_bytes()
    path.write_bytes(data.replace(b'"q_3"', b'"q_9"'))
    with pytest.raises(ConfigError, match=r"line 4: the line does not hash to leaf 3"):
        AuditLog(path=path, salt=salt)


def test_a_torn_line_later_completed_is_one_leaf(path: Path, salt: bytes, spy: Spy) -> None:
    fill(path, salt, 2)
    with path.open("ab") as handle:
        handle.write(b'{"time":"2026-11-26T10:00:0')  # a crash in the middle of a write
    with AuditLog(path=path, salt=salt) as log:
        # reopening ends the torn line; it is a leaf like any other line, hashed as written
        assert log.tree_size == 3
        assert log.leaf(2) == merkle.leaf_hash(b'{"time":"2026-11-26T10:00:0')
        log.append(entry(log, "q_2"))
        check_tree(log)
        assert log.tree_size == 4
    spy.hashed = spy.appended = 0
    with AuditLog(path=path, salt=salt) as log:
        assert (spy.hashed, spy.appended) == (1, 0)
        assert log.tree_size == 4
        # entries are numbered by their leaf: the torn line keeps index 2
        assert [i for i, _, _ in log.indexed_entries_about(log.subject_hash(SUBJECT))] == [0, 1, 3]


def test_proofs_from_the_log_verify(path: Path, salt: bytes) -> None:
    fill(path, salt, 13)
    written = lines(path)
    with AuditLog(path=path, salt=salt) as log:
        for size in range(1, 14):
            root = log.root(size)
            assert root == merkle.root_of(written[:size])
            for index in range(size):
                proof = log.inclusion_proof(index, size)
                merkle.verify_inclusion(index, size, merkle.leaf_hash(written[index]), proof, root)
            for old in range(1, size + 1):
                proof = log.consistency_proof(old, size)
                merkle.verify_consistency(old, size, log.root(old), root, proof)
        # defaults: the whole tree
        assert log.inclusion_proof(12) == log.inclusion_proof(12, 13)
        assert log.consistency_proof(5) == log.consistency_proof(5, 13)
        with pytest.raises(merkle.ProofError):
            proof = log.inclusion_proof(3, 13)
            merkle.verify_inclusion(3, 13, merkle.leaf_hash(written[4]), proof, log.root())
        with pytest.raises(InvalidArgument, match="14 is not a size"):
            log.root(14)
        with pytest.raises(InvalidArgument):
            log.inclusion_proof(13, 13)


def test_indexed_entries_number_entries_by_their_leaf(path: Path, salt: bytes) -> None:
    with AuditLog(path=path, salt=salt) as log:
        log.append(entry(log, "q_0"))
        log.append(entry(log, "q_1", subject="320505199001010026"))
        log.append(entry(log, "q_2"))
        indexed = list(log.indexed_entries())
        assert [(i, e.query_id) for i, e in indexed] == [(0, "q_0"), (1, "q_1"), (2, "q_2")]
        assert [e for _, e in indexed] == list(log.entries())
        about = list(log.indexed_entries_about(log.subject_hash(SUBJECT)))
        assert [(i, e.query_id, batch) for i, e, batch in about] == [
            (0, "q_0", False),
            (2, "q_2", False),
        ]


def test_a_log_opened_without_its_tree_keeps_none(path: Path, salt: bytes) -> None:
    with AuditLog(path=path, salt=salt, tree=False) as log:
        log.append(entry(log, "q_0"))
        with pytest.raises(ConfigError, match="without its Merkle tree"):
            log.root()
    assert not tree_file(path, 0).exists()


def test_a_failing_tree_stops_the_tree_not_the_log(
    path: Path, salt: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(path, salt, 2)

    def failing_append(store: merkle.HashStore, leaf: bytes, *, sync: bool = True) -> int:
        raise OSError(28, "No space left on device")

    with AuditLog(path=path, salt=salt) as log:
        monkeypatch.setattr(merkle.HashStore, "append", failing_append)
        log.append(entry(log, "q_2"))  # durable in the log all the same
        log.append(entry(log, "q_3"))
        with pytest.raises(ConfigError, match=r"Merkle tree failed \(No space left on device\)"):
            log.root()
        monkeypatch.undo()
        assert [e.query_id for e in log.entries()] == ["q_0", "q_1", "q_2", "q_3"]
    with AuditLog(path=path, salt=salt) as log:
        check_tree(log)


def test_a_tree_file_others_can_read_is_refused(path: Path, salt: bytes) -> None:
    fill(path, salt, 2)
    tree_file(path, 0).chmod(0o644)
    with pytest.raises(ConfigError, match="mode 0644"):
        AuditLog(path=path, salt=salt)


def test_close_waits_for_tree_readers(path: Path, salt: bytes) -> None:
    fill(path, salt, 3)
    log = AuditLog(path=path, salt=salt)
    reading = log._reading_tree()
    tree, size = reading.__enter__()
    closer = threading.Thread(target=log.close)
    closer.start()
    closer.join(0.05)
    assert closer.is_alive()  # the reader's file descriptors stay open
    assert tree.root(size) == merkle.root_of(lines(path))
    reading.__exit__(None, None, None)
    closer.join(5)
    assert not closer.is_alive()
    with pytest.raises(ConfigError, match="closed"):
        log.root()

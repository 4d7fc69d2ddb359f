"""Signed checkpoints beside an audit log, attacked: every rewrite of the log is found and named."""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from osmanthus.core import merkle
from osmanthus.core.audit import TREE_SUFFIX, AuditEntry, AuditLog, load_or_create_salt
from osmanthus.core.checkpoints import (
    Checkpointer,
    SignedCheckpoint,
    history_path,
    latest_path,
    verify_log,
)
from osmanthus.core.errors import ConfigError, InvalidArgument
from osmanthus.core.signednote import Checkpoint, NoteSigner, NoteVerifier

SUBJECT = "320505199001010018"
ORIGIN = "osmanthus.example/node-1/audit"
KEY = Ed25519PrivateKey.generate()
SIGNER = NoteSigner(name="osmanthus.example/node-1", private_key=KEY)
VERIFIER = NoteVerifier(name=SIGNER.name, public_key=SIGNER.public_key)
ENTRIES = 300
EVERY = 50


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def salt(tmp_path: Path) -> bytes:
    return load_or_create_salt(tmp_path / "audit.salt")


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


def entry(log: AuditLog, query_id: str) -> AuditEntry:
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
        subject_hash=log.subject_hash(SUBJECT),
        extra={"ciphertexts_received": 22},
    )


def checkpointer(log: AuditLog, **kwargs: object) -> Checkpointer:
    options: dict[str, object] = {"every_entries": EVERY, "every_s": 3600.0, "now": Clock()}
    options.update(kwargs)
    return Checkpointer(log=log, signer=SIGNER, origin=ORIGIN, **options)  # type: ignore[arg-type]


def fill(
    log: AuditLog, cp: Checkpointer | None, count: int, *, first: int = 0, tag: str = "q"
) -> list[SignedCheckpoint]:
    issued = []
    for i in range(first, first + count):
        log.append(entry(log, f"{tag}_{i}"))
        if cp is not None and (signed := cp.issue_if_due()) is not None:
            issued.append(signed)
    return issued


@pytest.fixture
def checkpointed(path: Path, salt: bytes) -> Path:
    """A log of 300 entries with checkpoints at 50, 100, ..., 300."""
    with AuditLog(path=path, salt=salt) as log:
        issued = fill(log, checkpointer(log), ENTRIES)
    assert [signed.size for signed in issued] == list(range(EVERY, ENTRIES + 1, EVERY))
    return path


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def write_lines(path: Path, content: list[bytes]) -> None:
    path.write_bytes(b"".join(content))


def drop_tree(path: Path) -> None:
    for tree_file in path.parent.glob(path.name + TREE_SUFFIX + ".*"):
        tree_file.unlink()


def history(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in history_path(path).read_text().splitlines()]


def failed(path: Path, *, verifiers: list[NoteVerifier] | None = None) -> str:
    report = verify_log(path, verifiers or [VERIFIER])
    assert not report.ok
    assert report.problem is not None
    return report.problem


# --- a clean log ---------------------------------------------------------------------------------


def test_a_clean_log_verifies_against_every_checkpoint(checkpointed: Path, salt: bytes) -> None:
    report = verify_log(checkpointed, [VERIFIER])
    assert report.ok, report.problem
    assert (report.entries, report.checkpoints, report.warnings) == (ENTRIES, 6, ())
    records = history(checkpointed)
    assert [r["size"] for r in records] == [50, 100, 150, 200, 250, 300]
    with AuditLog(path=checkpointed, salt=salt) as log:
        assert records[-1]["root"] == log.root().hex()
        assert records[2]["root"] == log.root(150).hex()
    assert latest_path(checkpointed).read_text() == records[-1]["note"]
    for stored in (latest_path(checkpointed), history_path(checkpointed)):
        assert stat.S_IMODE(stored.stat().st_mode) == 0o600


def test_the_note_is_a_c2sp_checkpoint(checkpointed: Path) -> None:
    note = latest_path(checkpointed).read_text()
    body, _, signatures = note.partition("\n\n")
    origin, size, _root = body.split("\n")
    assert (origin, size) == (ORIGIN, "300")
    assert signatures.startswith(f"— {SIGNER.name} ")


def test_a_log_without_checkpoints_verifies_with_nothing_checked(path: Path, salt: bytes) -> None:
    with AuditLog(path=path, salt=salt) as log:
        fill(log, None, 3)
    report = verify_log(path, [VERIFIER])
    assert report.ok and (report.entries, report.checkpoints) == (3, 0)


# --- attacks on the log --------------------------------------------------------------------------


def test_one_changed_byte_is_found_between_two_checkpoints(checkpointed: Path) -> None:
    content = lines(checkpointed)
    content[122] = content[122].replace(b"bank-of-suzhou", b"bank-of-suzhoU")
    write_lines(checkpointed, content)
    problem = failed(checkpointed)
    assert "line 3 (checkpoint 150)" in problem
    assert "an entry among lines 101..150 differs from what checkpoint 150 signed" in problem


def test_a_deleted_entry_is_found(checkpointed: Path) -> None:
    content = lines(checkpointed)
    del content[122]
    write_lines(checkpointed, content)
    report = verify_log(checkpointed, [VERIFIER])
    assert report.entries == ENTRIES - 1
    assert "lines 101..150" in (report.problem or "")


def test_a_truncated_log_is_named_truncated(checkpointed: Path) -> None:
    write_lines(checkpointed, lines(checkpointed)[:280])
    problem = failed(checkpointed)
    assert "the log was truncated: it holds 280 lines but checkpoint 300 signed 300" in problem
    assert "lines 251..300" in problem


def test_a_log_emptied_is_truncated_too(checkpointed: Path) -> None:
    checkpointed.write_bytes(b"")
    assert "it holds 0 lines but checkpoint 50 signed 50" in failed(checkpointed)


def test_two_reordered_entries_are_found(checkpointed: Path) -> None:
    content = lines(checkpointed)
    content[122], content[176] = content[176], content[122]
    write_lines(checkpointed, content)
    assert "lines 101..150" in failed(checkpointed)


def test_an_inserted_entry_is_found(checkpointed: Path) -> None:
    content = lines(checkpointed)
    content.insert(260, content[10])
    write_lines(checkpointed, content)
    assert "lines 251..300" in failed(checkpointed)


def test_a_fork_sharing_the_first_half_is_found(
    checkpointed: Path, salt: bytes, tmp_path: Path
) -> None:
    fork = tmp_path / "fork" / "audit.jsonl"
    fork.parent.mkdir()
    with AuditLog(path=fork, salt=salt) as log:
        fill(log, None, 150)
        fill(log, None, 150, first=150, tag="forked")
    assert lines(fork)[:150] == lines(checkpointed)[:150]
    assert lines(fork)[150] != lines(checkpointed)[150]
    shutil.copyfile(fork, checkpointed)
    assert "an entry among lines 151..200 differs from what checkpoint 200 signed" in failed(
        checkpointed
    )


def test_a_torn_last_line_is_a_warning_not_a_problem(checkpointed: Path) -> None:
    with checkpointed.open("ab") as handle:
        handle.write(b'{"time":"2026-')
    report = verify_log(checkpointed, [VERIFIER])
    assert report.ok and report.entries == ENTRIES + 1
    assert "line 301 is torn" in report.warnings[0]


# --- attacks on the checkpoints ------------------------------------------------------------------


def test_an_old_checkpoint_replayed_as_the_latest(checkpointed: Path, salt: bytes) -> None:
    records = history(checkpointed)
    latest_path(checkpointed).write_text(str(records[1]["note"]))
    # the history still proves the whole log: it passes, and says the latest file is behind
    report = verify_log(checkpointed, [VERIFIER])
    assert report.ok, report.problem
    assert "holds checkpoint 100, behind the history's last (300)" in report.warnings[0]
    # a checkpointer never goes back to it: it starts from the history's 300 and repairs the file
    with AuditLog(path=checkpointed, salt=salt) as log:
        cp = checkpointer(log)
        assert cp.last is not None and cp.last.size == ENTRIES
        assert latest_path(checkpointed).read_text() == records[-1]["note"]
        assert cp.issue_if_due() is None
        fill(log, cp, EVERY, first=ENTRIES)
        assert cp.last.size == ENTRIES + EVERY
    assert verify_log(checkpointed, [VERIFIER]).ok


def test_an_old_checkpoint_replayed_into_the_history(checkpointed: Path) -> None:
    old = history_path(checkpointed).read_text().splitlines(keepends=True)[1]
    with history_path(checkpointed).open("a") as handle:
        handle.write(old)
    problem = failed(checkpointed)
    assert "line 7: checkpoint 100 follows checkpoint 300: the history goes backwards" in problem


def test_a_history_cut_short_behind_the_latest_is_found(checkpointed: Path) -> None:
    kept = history_path(checkpointed).read_text().splitlines(keepends=True)[:4]
    history_path(checkpointed).write_text("".join(kept))
    problem = failed(checkpointed)
    assert "signed 300 entries but the history ends at 200" in problem


def test_a_history_cut_short_does_not_let_the_checkpointer_go_back(
    checkpointed: Path, salt: bytes
) -> None:
    kept = history_path(checkpointed).read_text().splitlines(keepends=True)[:2]
    history_path(checkpointed).write_text("".join(kept))
    with AuditLog(path=checkpointed, salt=salt) as log:
        assert checkpointer(log).last.size == ENTRIES  # type: ignore[union-attr]


def test_checkpoints_signed_with_another_key_are_unverified(checkpointed: Path) -> None:
    other = NoteVerifier(name=SIGNER.name, public_key=Ed25519PrivateKey.generate().public_key())
    problem = failed(checkpointed, verifiers=[other])
    assert "line 1 (" not in problem
    assert "checkpoints line 1: the checkpoint's signature is not from a trusted key" in problem


def test_a_forged_checkpoint_in_the_history_is_unverified(checkpointed: Path) -> None:
    forger = NoteSigner(name=SIGNER.name, private_key=Ed25519PrivateKey.generate())
    content = lines(checkpointed)
    forged = Checkpoint(
        origin=ORIGIN, size=ENTRIES, root_hash=merkle.root_of([c[:-1] for c in content])
    )
    note = forger.sign(forged.body())
    with history_path(checkpointed).open("a") as handle:
        record = {"size": ENTRIES, "root": forged.root_hash.hex(), "note": note.decode()}
        handle.write(json.dumps(record) + "\n")
    problem = failed(checkpointed)
    assert "line 7: the checkpoint's signature is not from a trusted key" in problem


def test_a_checkpoint_of_another_origin_is_refused(checkpointed: Path) -> None:
    other = Checkpoint(origin="osmanthus.example/node-2/audit", size=ENTRIES, root_hash=bytes(32))
    with history_path(checkpointed).open("a") as handle:
        record = {
            "size": ENTRIES,
            "root": bytes(32).hex(),
            "note": SIGNER.sign(other.body()).decode(),
        }
        handle.write(json.dumps(record) + "\n")
    problem = failed(checkpointed)
    assert "line 7: checkpoint 300 is for origin 'osmanthus.example/node-2/audit'" in problem
    report = verify_log(checkpointed, [VERIFIER], origin="osmanthus.example/node-2/audit")
    assert "line 1: checkpoint 50 is for origin" in (report.problem or "")


def test_an_edited_record_is_found(checkpointed: Path) -> None:
    content = history_path(checkpointed).read_text().splitlines(keepends=True)
    record = json.loads(content[2])
    record["size"] = 149
    content[2] = json.dumps(record) + "\n"
    history_path(checkpointed).write_text("".join(content))
    assert "line 3: the record's size 149 and root do not match" in failed(checkpointed)


# --- the checkpointer refuses to sign over a rewritten log ---------------------------------------


def test_a_tree_that_no_longer_extends_the_last_checkpoint_is_not_signed(
    checkpointed: Path, salt: bytes
) -> None:
    content = lines(checkpointed)
    content[9] = content[9].replace(b"bank-of-suzhou", b"bank-of-suzhoU")
    write_lines(checkpointed, content)
    drop_tree(checkpointed)  # the operator rebuilds the tree over the edited log
    before = history_path(checkpointed).read_bytes()
    with AuditLog(path=checkpointed, salt=salt) as log:
        cp = checkpointer(log)
        fill(log, None, 1, first=ENTRIES)
        with pytest.raises(ConfigError) as refused:
            cp.issue()
        message = str(refused.value)
        assert "refusing to sign a checkpoint of 301 entries" in message
        assert "does not extend the last checkpoint of 300" in message
        fill(log, None, EVERY, first=ENTRIES + 1)
        with pytest.raises(ConfigError, match="of 351 entries"):
            cp.issue_if_due()
    assert history_path(checkpointed).read_bytes() == before


def test_a_fork_of_the_same_size_is_not_signed(
    checkpointed: Path, salt: bytes, tmp_path: Path
) -> None:
    fork = tmp_path / "fork" / "audit.jsonl"
    fork.parent.mkdir()
    with AuditLog(path=fork, salt=salt) as log:
        fill(log, None, 150)
        fill(log, None, 150, first=150, tag="forked")
    shutil.copyfile(fork, checkpointed)
    drop_tree(checkpointed)
    with AuditLog(path=checkpointed, salt=salt) as log, pytest.raises(ConfigError) as refused:
        checkpointer(log).issue()
    assert "checkpoint of 300 entries" in str(refused.value)
    assert "last checkpoint of 300" in str(refused.value)


def test_a_truncated_tree_is_not_signed(checkpointed: Path, salt: bytes) -> None:
    write_lines(checkpointed, lines(checkpointed)[:280])
    drop_tree(checkpointed)
    with AuditLog(path=checkpointed, salt=salt) as log:
        cp = checkpointer(log)
        for issue in (cp.issue, cp.issue_if_due):
            with pytest.raises(ConfigError) as refused:
                issue()
            message = str(refused.value)
            assert "of 280 entries" in message and "last checkpoint signed 300" in message


def test_a_stored_checkpoint_from_another_key_stops_the_checkpointer(
    checkpointed: Path, salt: bytes
) -> None:
    other = NoteSigner(name=SIGNER.name, private_key=Ed25519PrivateKey.generate())
    with AuditLog(path=checkpointed, salt=salt) as log:
        with pytest.raises(ConfigError, match="not one this key"):
            Checkpointer(log=log, signer=other, origin=ORIGIN)
        with pytest.raises(ConfigError, match="for origin"):
            Checkpointer(log=log, signer=SIGNER, origin="elsewhere")


# --- when checkpoints are issued -----------------------------------------------------------------


def test_issue_if_due_by_entries(path: Path, salt: bytes) -> None:
    with AuditLog(path=path, salt=salt) as log:
        cp = checkpointer(log, every_entries=10)
        assert cp.issue_if_due() is None  # an empty log: nothing to sign
        assert fill(log, cp, 9) == []
        (signed,) = fill(log, cp, 1, first=9)
        assert (signed.size, signed.root) == (10, log.root(10))
        assert cp.issue_if_due() is None
        assert [s.size for s in fill(log, cp, 25, first=10)] == [20, 30]


def test_issue_if_due_by_time_only_when_the_log_grew(path: Path, salt: bytes) -> None:
    clock = Clock()
    with AuditLog(path=path, salt=salt) as log:
        cp = checkpointer(log, every_entries=1000, every_s=60.0, now=clock)
        fill(log, None, 3)
        clock.t += 59.9
        assert cp.issue_if_due() is None
        clock.t += 0.1
        signed = cp.issue_if_due()
        assert signed is not None and signed.size == 3
        clock.t += 600
        assert cp.issue_if_due() is None  # time passed, but nothing new to sign
        fill(log, None, 1, first=3)
        # more than every_s since the last checkpoint, and the log grew: signed at once
        assert cp.issue_if_due().size == 4  # type: ignore[union-attr]
        fill(log, None, 1, first=4)
        clock.t += 59
        assert cp.issue_if_due() is None  # the clock restarted at the last checkpoint
        clock.t += 1
        assert cp.issue_if_due().size == 5  # type: ignore[union-attr]


def test_issue_forces_one_even_with_nothing_new(path: Path, salt: bytes) -> None:
    with AuditLog(path=path, salt=salt) as log:
        cp = checkpointer(log)
        empty = cp.issue()
        assert (empty.size, empty.root) == (0, merkle.EMPTY_ROOT)
        fill(log, None, 2)
        assert cp.issue().size == 2
        assert cp.issue().size == 2
    assert verify_log(path, [VERIFIER]).checkpoints == 3
    assert verify_log(path, [VERIFIER]).ok


def test_bad_settings_are_refused(path: Path, salt: bytes) -> None:
    with AuditLog(path=path, salt=salt) as log:
        for bad in ({"every_entries": 0}, {"every_s": 0.0}, {"poll_s": -1.0}):
            with pytest.raises(InvalidArgument):
                checkpointer(log, **bad)
        with pytest.raises(InvalidArgument):
            Checkpointer(log=log, signer=SIGNER, origin="two\nlines")


def test_a_history_readable_by_others_is_refused(path: Path, salt: bytes) -> None:
    history_path(path).touch(mode=0o644)
    os.chmod(history_path(path), 0o644)
    with AuditLog(path=path, salt=salt) as log, pytest.raises(ConfigError, match="0644"):
        checkpointer(log).issue()


def test_the_streaming_root_is_the_rfc9162_root() -> None:
    from osmanthus.core.checkpoints import _CompactRange

    leaves = [merkle.leaf_hash(bytes([i])) for i in range(70)]
    compact = _CompactRange()
    assert compact.root() == merkle.EMPTY_ROOT
    for n, leaf in enumerate(leaves, 1):
        compact.append(leaf)
        assert compact.root() == merkle.MemoryTree(leaves[:n]).root()


def test_a_latest_forking_the_history_stops_the_checkpointer(
    checkpointed: Path, salt: bytes
) -> None:
    forked = Checkpoint(origin=ORIGIN, size=ENTRIES, root_hash=bytes(32))
    latest_path(checkpointed).write_bytes(SIGNER.sign(forked.body()))
    assert "with different roots: the log forked" in failed(checkpointed)
    with (
        AuditLog(path=checkpointed, salt=salt) as log,
        pytest.raises(ConfigError, match="this key signed two different logs"),
    ):
        checkpointer(log)


# --- the background thread -----------------------------------------------------------------------


def wait_for(condition: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        pause.wait(0.01)
    return False


def test_the_thread_issues_checkpoints_and_stops_promptly(path: Path, salt: bytes) -> None:
    with AuditLog(path=path, salt=salt) as log:
        cp = checkpointer(log, every_entries=5, poll_s=0.01)
        cp.start()
        try:
            with pytest.raises(ConfigError, match="already running"):
                cp.start()
            fill(log, None, 5)
            assert wait_for(lambda: cp.last is not None and cp.last.size == 5)
        finally:
            cp.close()
        cp.close()  # idempotent
    assert verify_log(path, [VERIFIER]).ok


def test_close_does_not_wait_for_the_next_poll(path: Path, salt: bytes) -> None:
    with AuditLog(path=path, salt=salt) as log:
        cp = checkpointer(log, poll_s=3600.0, every_s=3600.0)
        cp.start()
        started = time.monotonic()
        cp.close()
        assert time.monotonic() - started < 1.0


def test_the_thread_logs_a_refusal_once_and_keeps_running(
    checkpointed: Path, salt: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    write_lines(checkpointed, lines(checkpointed)[:280])
    drop_tree(checkpointed)
    with AuditLog(path=checkpointed, salt=salt) as log:
        cp = checkpointer(log, poll_s=0.01)
        with caplog.at_level(logging.ERROR, logger="osmanthus.core.checkpoints"):
            cp.start()
            try:
                assert wait_for(lambda: caplog.records)
                pause = threading.Event()
                pause.wait(0.1)
            finally:
                cp.close()
    refusals = [r for r in caplog.records if "last checkpoint signed 300" in r.getMessage()]
    assert len(refusals) == 1

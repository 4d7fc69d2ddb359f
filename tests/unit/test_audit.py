"""The audit log: durable JSON Lines, private files, salted subject hashes, no raw identifiers."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from osmanthus.core.audit import SALT_BYTES, AuditEntry, AuditLog, load_or_create_salt
from osmanthus.core.errors import ConfigError, InvalidArgument, Unavailable
from tests.waiting import EVENT_TIMEOUT_S

SUBJECT = "320505199001010018"


@pytest.fixture
def salt(tmp_path: Path) -> bytes:
    return load_or_create_salt(tmp_path / "audit.salt")


@pytest.fixture
def log(tmp_path: Path, salt: bytes) -> Iterator[AuditLog]:
    with AuditLog(path=tmp_path / "audit.jsonl", salt=salt) as audit_log:
        yield audit_log


def entry(log: AuditLog, *, query_id: str = "q_1", decision: str = "allow") -> AuditEntry:
    return AuditEntry(
        time=datetime(2026, 11, 26, 10, 0, 0, 123456, tzinfo=UTC),
        query_id=query_id,
        requester="bank-of-suzhou",
        purpose="loan_underwriting",
        consent_id="cns_abcdefghijklmnopqrstuv",
        policy_hash="ab" * 32,
        decision=decision,
        reason="permitted by central-loan-underwriting",
        shape="breakdown",
        subject_hash=log.subject_hash(SUBJECT),
        extra={"ciphertexts_received": 22, "ciphertext_bytes": 11264, "note": "sum forwarded"},
    )


def test_entries_round_trip(log: AuditLog) -> None:
    written = [entry(log, query_id=f"q_{i}", decision=("allow", "deny")[i % 2]) for i in range(3)]
    for item in written:
        log.append(item)
    assert list(log.entries()) == written


def test_one_json_line_per_entry_with_every_field(log: AuditLog) -> None:
    log.append(entry(log))
    log.append(entry(log, query_id="q_2"))
    lines = log.path.read_text().splitlines(keepends=True)
    assert len(lines) == 2
    assert all(line.endswith("\n") for line in lines)
    record = json.loads(lines[0])
    assert record["time"] == "2026-11-26T10:00:00.123456Z"
    assert record["decision"] == "allow"
    assert record["extra"] == {
        "ciphertexts_received": 22,
        "ciphertext_bytes": 11264,
        "note": "sum forwarded",
    }
    assert set(record) == {
        "time",
        "query_id",
        "requester",
        "purpose",
        "consent_id",
        "policy_hash",
        "decision",
        "reason",
        "shape",
        "subject_hash",
        "extra",
    }


def test_raw_subject_id_never_reaches_the_file(log: AuditLog) -> None:
    log.append(entry(log))
    data = log.path.read_bytes()
    assert SUBJECT.encode() not in data
    assert log.subject_hash(SUBJECT).encode() in data


def test_subject_hash_is_hmac_sha256_and_stable_for_a_salt(tmp_path: Path, salt: bytes) -> None:
    expected = hmac.new(salt, SUBJECT.encode(), hashlib.sha256).hexdigest()
    with AuditLog(path=tmp_path / "a.jsonl", salt=salt) as first:
        assert first.subject_hash(SUBJECT) == expected
    # the same salt file gives the same hash after a restart
    with AuditLog(
        path=tmp_path / "a.jsonl", salt=load_or_create_salt(tmp_path / "audit.salt")
    ) as b:
        assert b.subject_hash(SUBJECT) == expected
    with AuditLog(path=tmp_path / "b.jsonl", salt=os.urandom(SALT_BYTES)) as other:
        assert other.subject_hash(SUBJECT) != expected
    assert len(expected) == 64


def test_every_append_is_fsynced(log: AuditLog, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    for i in range(3):
        log.append(entry(log, query_id=f"q_{i}"))
        # the line is on disk (and visible to a fresh reader) when append returns
        assert log.path.read_text().count("\n") == i + 1
    assert len(synced) == 3


def test_files_are_private(tmp_path: Path, log: AuditLog) -> None:
    log.append(entry(log))
    assert stat.S_IMODE(log.path.stat().st_mode) == 0o600
    salt_file = tmp_path / "audit.salt"
    assert stat.S_IMODE(salt_file.stat().st_mode) == 0o600
    assert len(salt_file.read_bytes()) == SALT_BYTES


def test_salt_is_created_once_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "s"
    first = load_or_create_salt(path)
    assert load_or_create_salt(path) == first
    assert load_or_create_salt(tmp_path / "t") != first


def test_readable_log_or_salt_is_refused(tmp_path: Path, salt: bytes) -> None:
    exposed = tmp_path / "exposed.jsonl"
    exposed.write_text("")
    exposed.chmod(0o644)
    with pytest.raises(ConfigError, match=r"mode 0644 lets other users read it"):
        AuditLog(path=exposed, salt=salt)
    salt_file = tmp_path / "audit.salt"
    salt_file.chmod(0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_or_create_salt(salt_file)


def test_truncated_salt_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "short.salt"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"x" * 10)
    os.close(fd)
    with pytest.raises(ConfigError, match="holds 10 bytes, expected 32"):
        load_or_create_salt(path)


def test_short_salt_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="at least 16"):
        AuditLog(path=tmp_path / "a.jsonl", salt=b"short")


def test_log_survives_reopen_and_appends(tmp_path: Path, salt: bytes) -> None:
    path = tmp_path / "a.jsonl"
    with AuditLog(path=path, salt=salt) as first:
        first.append(entry(first, query_id="q_1"))
    with AuditLog(path=path, salt=salt) as second:
        second.append(entry(second, query_id="q_2"))
        assert [e.query_id for e in second.entries()] == ["q_1", "q_2"]


def test_torn_line_is_kept_and_reported(tmp_path: Path, salt: bytes) -> None:
    path = tmp_path / "a.jsonl"
    with AuditLog(path=path, salt=salt) as first:
        first.append(entry(first, query_id="q_1"))
    with path.open("a") as handle:
        handle.write('{"time":"2026-11-26T10:0')  # what a crash mid-write leaves
    with AuditLog(path=path, salt=salt) as second:
        second.append(entry(second, query_id="q_2"))
        lines = path.read_text().splitlines()
        assert len(lines) == 3
        assert lines[1] == '{"time":"2026-11-26T10:0'
        assert json.loads(lines[2])["query_id"] == "q_2"
        with pytest.raises(ConfigError, match=r"a\.jsonl, line 2: not a valid audit entry"):
            list(second.entries())


def test_concurrent_appends_keep_lines_whole(log: AuditLog) -> None:
    def writer(n: int) -> None:
        for i in range(25):
            log.append(entry(log, query_id=f"q_{n}_{i}"))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = [e.query_id for e in log.entries()]
    assert sorted(ids) == sorted(f"q_{n}_{i}" for n in range(4) for i in range(25))


def test_closed_log_refuses_appends(tmp_path: Path, salt: bytes) -> None:
    audit_log = AuditLog(path=tmp_path / "a.jsonl", salt=salt)
    audit_log.close()
    audit_log.close()
    with pytest.raises(ConfigError, match="closed"):
        audit_log.append(entry(audit_log))


def test_time_is_stored_in_utc(log: AuditLog) -> None:
    local = datetime(2026, 11, 26, 18, 0, tzinfo=timezone(timedelta(hours=8)))
    item = AuditEntry(
        time=local,
        query_id="q",
        requester="r",
        purpose="p",
        consent_id="",
        policy_hash="h",
        decision="deny",
        reason="denied",
        shape="",
        subject_hash="",
        extra={},
    )
    log.append(item)
    assert json.loads(log.path.read_text())["time"] == "2026-11-26T10:00:00Z"
    assert next(log.entries()).time == local


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"time": datetime(2026, 1, 1)}, "time"),
        ({"decision": "maybe"}, "decision"),
        ({"subject_hash": SUBJECT}, "subject_hash"),
        ({"extra": {"flag": True}}, "extra"),
        ({"extra": {"ratio": 0.5}}, "extra"),
    ],
)
def test_malformed_entries_are_refused(change: dict[str, object], field: str) -> None:
    values: dict[str, object] = {
        "time": datetime(2026, 1, 1, tzinfo=UTC),
        "query_id": "q",
        "requester": "r",
        "purpose": "p",
        "consent_id": "",
        "policy_hash": "h",
        "decision": "allow",
        "reason": "ok",
        "shape": "total",
        "subject_hash": "",
        "extra": {},
    }
    values.update(change)
    with pytest.raises(InvalidArgument) as caught:
        AuditEntry(**values)  # type: ignore[arg-type]
    assert caught.value.field == field


# -- batch entries ------------------------------------------------------------------------------

BATCH = [f"32050519900101{n:03d}8" for n in range(5)]


def batch_entry(log: AuditLog, subjects: list[str] = BATCH) -> AuditEntry:
    return AuditEntry(
        time=datetime(2026, 11, 26, 10, 0, tzinfo=UTC),
        query_id="b_1",
        requester="bank-of-suzhou",
        purpose="portfolio_review",
        consent_id="",
        policy_hash="ab" * 32,
        decision="allow",
        reason="batch chunk sums forwarded",
        shape="total",
        subject_hash="",
        subject_hashes=tuple(log.subject_hashes(subjects)),
        extra={"chunk": 0, "subjects": len(subjects)},
    )


def test_subject_hashes_are_the_subject_hash_of_each_id(log: AuditLog, salt: bytes) -> None:
    hashes = log.subject_hashes(BATCH)
    assert hashes == [log.subject_hash(s) for s in BATCH]
    assert hashes == [hmac.new(salt, s.encode(), hashlib.sha256).hexdigest() for s in BATCH]
    assert len(set(hashes)) == len(BATCH)
    assert log.subject_hashes([]) == []
    # the shared keyed state is copied, never changed: a later single hash is unaffected
    assert log.subject_hash(SUBJECT) == hmac.new(salt, SUBJECT.encode(), "sha256").hexdigest()


def test_batch_entries_round_trip_and_keep_single_lines_unchanged(log: AuditLog) -> None:
    written = [batch_entry(log), entry(log, query_id="q_2"), batch_entry(log, BATCH[:1])]
    for item in written:
        log.append(item)
    assert list(log.entries()) == written
    first, second, _ = (json.loads(line) for line in log.path.read_text().splitlines())
    assert first["subject_hash"] == ""
    assert first["subject_hashes"] == log.subject_hashes(BATCH)
    assert "subject_hashes" not in second  # a single-subject line looks as it always did
    assert not any(s.encode() in log.path.read_bytes() for s in BATCH)
    assert AuditEntry.from_json(written[0].to_json()).subject_hashes == tuple(
        log.subject_hashes(BATCH)
    )


def test_an_entry_about_no_subject_is_accepted(log: AuditLog) -> None:
    opened = replace(batch_entry(log), subject_hashes=(), reason="batch opened")
    log.append(opened)
    assert list(log.entries()) == [opened]


def test_subject_and_subjects_are_never_both_set(log: AuditLog) -> None:
    with pytest.raises(InvalidArgument, match="not in both") as caught:
        replace(batch_entry(log), subject_hash=log.subject_hash(SUBJECT))
    assert caught.value.field == "subject_hashes"


@pytest.mark.parametrize(
    "hashes",
    [
        (SUBJECT,),  # a raw identifier where its hash belongs
        ("ab" * 32, "AB" * 32),
        ("ab" * 32, 7),
        "ab" * 32,  # one string, not a sequence of them
    ],
)
def test_malformed_subject_hashes_are_refused(log: AuditLog, hashes: object) -> None:
    with pytest.raises(InvalidArgument) as caught:
        replace(batch_entry(log), subject_hashes=hashes)  # type: ignore[arg-type]
    assert caught.value.field == "subject_hashes"
    assert SUBJECT not in str(caught.value)  # the refusal does not repeat the identifier


def test_a_line_with_malformed_subject_hashes_is_reported(log: AuditLog) -> None:
    record = json.loads(batch_entry(log).to_json())
    record["subject_hashes"] = "not a list"
    with log.path.open("a") as handle:
        handle.write(json.dumps(record) + "\n")
    reopened = AuditLog(path=log.path, salt=os.urandom(SALT_BYTES))
    with reopened, pytest.raises(ConfigError, match="line 1: not a valid audit entry"):
        list(reopened.entries())


# -- group commit ---------------------------------------------------------------------------------


def test_concurrent_appends_share_fsyncs_and_each_returns_durable(
    log: AuditLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads_n, per_thread = 8, 15
    synced_ids: set[str] = set()
    fsyncs: list[int] = []
    guard = threading.Lock()
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        # a slow disk: appends from other threads pile up behind this one
        time.sleep(0.004)
        real_fsync(fd)
        content = log.path.read_text()
        with guard:
            fsyncs.append(fd)
            synced_ids.update(json.loads(line)["query_id"] for line in content.splitlines())

    monkeypatch.setattr(os, "fsync", slow_fsync)
    not_durable: list[str] = []
    start = threading.Barrier(threads_n)

    def writer(n: int) -> None:
        start.wait()
        for i in range(per_thread):
            query_id = f"q_{n}_{i}"
            log.append(entry(log, query_id=query_id))
            with guard:
                if query_id not in synced_ids:
                    not_durable.append(query_id)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not_durable == []
    lines = log.path.read_bytes().split(b"\n")
    assert lines.pop() == b""  # the file ends with a whole line
    ids = [json.loads(line)["query_id"] for line in lines]
    assert sorted(ids) == sorted(f"q_{n}_{i}" for n in range(threads_n) for i in range(per_thread))
    assert len(fsyncs) < threads_n * per_thread / 2
    assert [e.query_id for e in log.entries()] == ids


def test_a_failed_fsync_refuses_the_entry_and_the_next_append_recovers(
    log: AuditLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    log.append(entry(log, query_id="q_1"))

    def failing_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(Unavailable, match="cannot write its audit log: Input/output error") as e:
        log.append(entry(log, query_id="q_2"))
    assert str(log.path) not in str(e.value)  # the caller learns no path
    assert log.failure == "Input/output error"
    monkeypatch.undo()
    # q_2 was written but never confirmed durable: it is cut off, never counted on after a
    # failed fsync; the next append writes after the last durable line
    log.append(entry(log, query_id="q_3"))
    assert log.failure is None
    assert [e.query_id for e in log.entries()] == ["q_1", "q_3"]
    assert log.path.read_bytes().count(b"\n") == 2


def test_close_waits_for_the_write_in_flight(
    log: AuditLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    in_fsync = threading.Event()
    real_fsync = os.fsync

    def blocking_fsync(fd: int) -> None:
        in_fsync.set()
        assert release.wait(EVENT_TIMEOUT_S)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", blocking_fsync)
    writer = threading.Thread(target=log.append, args=(entry(log, query_id="q_1"),))
    writer.start()
    assert in_fsync.wait(EVENT_TIMEOUT_S)
    closer = threading.Thread(target=log.close)
    closer.start()
    closer.join(0.05)
    assert closer.is_alive()  # still waiting for the fsync
    release.set()
    writer.join(5)
    closer.join(5)
    assert not closer.is_alive()
    assert json.loads(log.path.read_text())["query_id"] == "q_1"
    with pytest.raises(ConfigError, match="closed"):
        log.append(entry(log, query_id="q_2"))

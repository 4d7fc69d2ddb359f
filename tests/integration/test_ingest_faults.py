"""Live imports under faults: a read-only database, an audit log that cannot be written, a
symbolic link or a half-copied file in the inbox, a file of many bad rows, the ingest metrics.

The read-only database is a real tmpfs remounted read-only (tests.smalldisk; skipped without
root unless CI is set); the full audit disk is a real tmpfs filled to the last byte. Every
component is real: the node over mutual TLS, DuckDB, the audit log with its Merkle tree.
"""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.importer import RecordImporter
from node.ingest import DONE, REASON_SUFFIX, REJECTED, SPOOL_DIR, Inbox, IngestOffice
from node.server import start_node, store_unwritable
from node.store import FILE_COLUMNS, RecordStore, file_sha256
from osmanthus.core import metrics
from osmanthus.core.audit import AuditLog, load_or_create_salt
from osmanthus.core.errors import FailedPrecondition, ImportRejected, Unavailable
from osmanthus.core.tls import TlsFiles
from osmanthus.core.types import DepartmentId
from tests.conftest import IssuerKeyPaths
from tests.integration.conftest import restricted_catalogue
from tests.integration.test_ingest_live import (
    DEPARTMENT,
    _filler,
    _node_config,
    _seed_db,
    _write,
)
from tests.smalldisk import fill, small_disk
from tests.unit.test_store import CATALOGUE, TAX, TAX_RULES, TODAY, good_row, write_csv
from tests.waiting import wait_until


@pytest.fixture
def read_only_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs holding a seeded tax database, remounted read-only (as a `:ro` volume is)."""
    with small_disk(tmp_path / "data", size_bytes=8 * 1024 * 1024) as disk:
        _seed_db(disk / "tax.duckdb")
        done = subprocess.run(["mount", "-o", "remount,ro", str(disk)], capture_output=True,
                              text=True, check=False)  # fmt: skip
        if done.returncode != 0:
            pytest.fail(f"cannot remount {disk} read-only: {done.stderr.strip()}")
        yield disk


def test_a_node_on_a_read_only_mount_serves_and_refuses_imports_with_the_reason(
    tmp_path: Path,
    read_only_disk: Path,
    platform_certs: Path,
    issuer_keys: IssuerKeyPaths,
    list_officers: dict[str, TlsFiles],
    caplog: pytest.LogCaptureFixture,
) -> None:
    db = read_only_disk / "tax.duckdb"
    assert "read-only file system" in (store_unwritable(db) or "")
    config = _node_config(tmp_path, platform_certs, issuer_keys, db)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    waiting = _write(inbox / "waiting.csv", _filler("R", 3))
    with caplog.at_level(logging.WARNING):
        # before the fix: the node opened the file read-write and failed to start
        running = start_node(config, catalogue=restricted_catalogue([DEPARTMENT]))
        try:
            warnings = [r.getMessage() for r in caplog.records if "opened read-only" in r.message]
            assert len(warnings) == 1 and "read-only file system" in warnings[0]
            assert "imports" in warnings[0] and "refused" in warnings[0]
            importer = RecordImporter(f"127.0.0.1:{running.port}", department=DEPARTMENT,
                                      tls=list_officers[DEPARTMENT])  # fmt: skip
            with importer, pytest.raises(FailedPrecondition, match="read-only file system"):
                importer.upload(_write(tmp_path / "up.csv", _filler("U", 2)))
            wait_until(
                lambda: any("not read" in r.getMessage() for r in caplog.records),
                what="the inbox to say it is not read",
            )
            # the file waits in the inbox for a writable node: not rejected
            assert waiting.exists() and not list((inbox / REJECTED).iterdir())
        finally:
            running.stop(grace=0.5)
    entries = [json.loads(x) for x in (config.state_dir / "audit.jsonl").read_text().splitlines()]
    [refusal] = [e for e in entries if e["purpose"] == "record_import"]
    assert refusal["decision"] == "deny"
    with RecordStore(db, department=DepartmentId(DEPARTMENT), read_only=True) as store:
        assert store.count() == 1


def _office(tmp_path: Path, audit: AuditLog) -> tuple[IngestOffice, RecordStore]:
    spool = tmp_path / "state" / SPOOL_DIR
    spool.mkdir(parents=True, exist_ok=True)
    store = RecordStore(tmp_path / "tax.duckdb", department=TAX, staging_dir=spool)
    office = IngestOffice(
        department=CATALOGUE.department(TAX), catalogue=CATALOGUE, store=store, rules=TAX_RULES,
        audit=audit, spool_dir=spool, today=lambda: TODAY,
    )  # fmt: skip
    return office, store


def test_an_import_whose_audit_entry_cannot_be_written_is_rolled_back_and_retried(
    tmp_path: Path,
) -> None:
    with small_disk(tmp_path / "audit-disk", size_bytes=512 * 1024) as disk:
        audit = AuditLog(path=disk / "audit.jsonl", salt=load_or_create_salt(disk / "salt"))
        office, store = _office(tmp_path, audit)
        inbox = Inbox(tmp_path / "inbox", office=office, retry_s=0)
        file = write_csv(tmp_path / "inbox" / "a.csv", [good_row(i) for i in range(1, 51)])
        try:
            filler = fill(disk)
            with pytest.raises(Unavailable):
                office.import_path(file, actor="inbox:test")
            # before the fix: the rows were live, unaudited, and a retry said "applied before"
            assert store.count() == 0 and store.applied(file_sha256(file)) is None
            inbox.run_once()  # the first look: the file is new
            assert inbox.run_once() == 1  # tried, failed for the node's fault
            assert file.exists() and not list((inbox.directory / REJECTED).iterdir())
            assert store.count() == 0
            filler.unlink()
            assert inbox.run_once() == 1
            assert (inbox.directory / DONE / "a.csv").exists() and store.count() == 50
        finally:
            store.close()
            audit.close()
        entries = [json.loads(x) for x in (disk / "audit.jsonl").read_text().splitlines()]
    assert [(e["decision"], e["reason"]) for e in entries] == [("allow", "file imported")]


def test_the_inbox_rejects_a_symbolic_link_unread_and_waits_for_a_growing_file(
    tmp_path: Path,
) -> None:
    audit = AuditLog(path=tmp_path / "audit.jsonl", salt=load_or_create_salt(tmp_path / "salt"))
    office, store = _office(tmp_path, audit)
    inbox = Inbox(tmp_path / "inbox", office=office)
    secret = tmp_path / "secret.csv"
    secret.write_text("record_id\nTHE-SECRET-CONTENT\n")
    link = inbox.directory / "planted.csv"
    link.symlink_to(secret)
    growing = inbox.directory / "growing.csv"
    rows = [good_row(i) for i in range(1, 41)]
    write_csv(growing, rows[:20])
    try:
        inbox.run_once()
        # the link is rejected at the first look, unread; the growing file is only noted
        moved = inbox.directory / REJECTED / "planted.csv"
        assert moved.is_symlink() and not link.exists()
        reason = (inbox.directory / REJECTED / ("planted.csv" + REASON_SUFFIX)).read_text()
        assert "regular file" in reason and "SECRET" not in reason and str(secret) not in reason
        assert secret.read_text().startswith("record_id")
        # more rows arrive between two looks: still not read
        with growing.open("a", encoding="utf-8") as f:
            f.writelines(",".join(r) + "\n" for r in rows[20:])
        assert inbox.run_once() == 0 and store.count() == 0
        # unchanged since the last look: applied whole
        assert inbox.run_once() == 1
        assert (inbox.directory / DONE / "growing.csv").exists() and store.count() == 40
    finally:
        store.close()
        audit.close()


def test_a_file_of_many_bad_rows_keeps_the_first_thousand_problems_and_counts_the_rest(
    tmp_path: Path,
) -> None:
    with RecordStore(tmp_path / "tax.duckdb", department=TAX) as store:
        bad = [[f"B-{i}", "person", "not-an-id", "tax_arrears", "1", "2024-03-01", "", "active"]
               for i in range(1500)]  # fmt: skip
        # and ids repeated in the file, found in SQL on the staged rows
        dupes = [good_row(1), good_row(1)]
        file = write_csv(tmp_path / "bad.csv", [*bad, *dupes])
        with pytest.raises(ImportRejected) as caught:
            store.import_file(file, rules=TAX_RULES, catalogue=CATALOGUE, today=TODAY)
        assert len(caught.value.problems) == 1000
        assert caught.value.problem_count == 1501
        assert "501 more were only counted" in caught.value.message
        assert store.count() == 0
        file = write_csv(tmp_path / "dupes.csv", dupes)
        with pytest.raises(ImportRejected) as caught:
            store.import_file(file, rules=TAX_RULES, catalogue=CATALOGUE, today=TODAY)
        assert caught.value.problems == [(3, "record_id", "duplicate record id 'T-1' (first on "
                                          "line 2)")]  # fmt: skip


def _rows(kind: str) -> float:
    sample = metrics.REGISTRY.get_sample_value(
        f"{metrics.PREFIX}_ingest_rows_total", {"department": DEPARTMENT, "kind": kind}
    )
    return sample or 0.0


def test_ingest_metrics_count_rows_by_kind_once_committed(tmp_path: Path) -> None:
    audit = AuditLog(path=tmp_path / "audit.jsonl", salt=load_or_create_salt(tmp_path / "salt"))
    office, store = _office(tmp_path, audit)
    try:
        before = {k: _rows(k) for k in ("new", "correction", "withdrawal")}
        bad = write_csv(tmp_path / "bad.csv", [*[good_row(i) for i in range(1, 30)],
                                               ["X", "person", "bad", "tax_arrears", "1",
                                                "2024-03-01", "", "active"]])  # fmt: skip
        with pytest.raises(ImportRejected):
            office.import_path(bad, actor="inbox:test")
        # before the fix: every row read of the refused file counted as "new"
        assert {k: _rows(k) for k in before} == before
        office.import_path(write_csv(tmp_path / "good.csv", [good_row(i) for i in range(1, 6)]),
                           actor="inbox:test")  # fmt: skip
        changes = write_csv(
            tmp_path / "changes.csv",
            [[*good_row(1)[:4], "2", *good_row(1)[5:], "correct", "quantity was wrong"],
             ["T-2", "", "", "", "", "", "", "", "withdraw", "entered twice"]],
            header=list(FILE_COLUMNS),
        )  # fmt: skip
        office.import_path(changes, actor="inbox:test")
        # before the fix: corrections and withdrawals counted twice (as new, then by kind)
        assert {k: _rows(k) - before[k] for k in before} == {
            "new": 5, "correction": 1, "withdrawal": 1,
        }  # fmt: skip
        gauge = metrics.REGISTRY.get_sample_value(
            f"{metrics.PREFIX}_ingest_rows_read", {"department": DEPARTMENT}
        )
        assert gauge == 0  # no import in progress
    finally:
        store.close()
        audit.close()

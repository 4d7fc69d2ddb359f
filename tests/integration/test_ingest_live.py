"""Records loaded into a running node over mutual TLS, and through its inbox folder.

One taxation-bureau node of its own with a coordinator (start_federation), and a firm whose
score a file changes. While the operator uploads the file (IngestService, the operator
certificate named "tax"), a credit agency asks for the firm's score again and again through the
coordinator: every answer is the score before the file or the score after it. A bad file
changes nothing, a retried upload is a duplicate, a caller that is not the department's
operator is refused and audited; the inbox applies good files, rejects bad ones with a reason,
and a node killed in the middle of a file applies it whole at its next start.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pytest

from certs import PeerRole, cert_paths
from node.importer import RecordImporter
from node.ingest import DONE, REASON_SUFFIX, REJECTED, SPOOL_DIR
from node.server import NodeConfig, start_node
from node.store import FILE_COLUMNS, RecordStore
from osmanthus.core.clock import china_today
from osmanthus.core.errors import ImportRejected, InvalidArgument, PermissionDenied
from osmanthus.core.ids import make_uscc, organisation_code_check_char
from osmanthus.core.receipts import CONSENT_PUBLIC_KEY_FILE
from osmanthus.core.rules import Record
from osmanthus.core.tls import TlsFiles
from osmanthus.core.types import DepartmentId, Role, SubjectId, SubjectKind
from osmanthus.demo.launcher import osmanthus_command
from osmanthus.demo.seed import SeedReport
from sdk import Client, RequesterKeys
from tests.conftest import IssuerKeyPaths
from tests.integration.conftest import (
    Federation,
    restricted_catalogue,
    start_federation,
    stop_federation,
)
from tests.waiting import wait_until

DEPARTMENT = "tax"
DEPARTMENTS = [DEPARTMENT, "samr", "customs"]
ENTERPRISE = SubjectKind.ENTERPRISE
TODAY = china_today()
#: rows of other firms that make the file take a while to import while the queries run
FILLER_ROWS = 30_000


def _firm(n: int) -> SubjectId:
    first8 = f"L{n:07d}"
    return make_uscc(
        authority="9", category="1", region="320505",
        organisation=first8 + organisation_code_check_char(first8),
    )  # fmt: skip


FIRM = _firm(1)


def _record(rid: str, firm: SubjectId, kind: str, days_ago: int = 30) -> Record:
    return Record(
        record_id=rid, subject_kind=ENTERPRISE, subject_id=firm, kind=kind, quantity=1,
        event_start=TODAY - timedelta(days=days_ago), event_end=None, status="active",
    )  # fmt: skip


def _row(record: Record, action: str = "", reason: str = "") -> list[str]:
    return [
        record.record_id, record.subject_kind.value, record.subject_id, record.kind,
        str(record.quantity), record.event_start.isoformat(),
        record.event_end.isoformat() if record.event_end else "", record.status, action, reason,
    ]  # fmt: skip


def _write(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(FILE_COLUMNS)
        writer.writerows(rows)
    return path


def _filler(prefix: str, count: int, start: int = 1000) -> list[list[str]]:
    return [
        _row(_record(f"{prefix}-{i}", _firm(start + i % 5000), "tax_arrears", 10 + i % 300))
        for i in range(count)
    ]


def _seed_db(path: Path, department: str = DEPARTMENT) -> Path:
    with RecordStore(path, department=DepartmentId(department)) as store:
        if department == DEPARTMENT:
            store.insert_records([_record("ARREARS-1", FIRM, "tax_arrears")])
    return path


@dataclass
class Live:
    federation: Federation
    operator: TlsFiles

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.federation.nodes[DEPARTMENT].port}"

    @property
    def audit(self) -> Path:
        return self.federation.node_configs[DEPARTMENT].state_dir / "audit.jsonl"

    def imports(self) -> list[dict[str, object]]:
        entries = [json.loads(line) for line in self.audit.read_text().splitlines() if line]
        return [e for e in entries if e["purpose"] == "record_import"]

    def count(self) -> int:
        db = self.federation.node_configs[DEPARTMENT].db
        with RecordStore(db, department=DepartmentId(DEPARTMENT)) as store:
            return store.count()


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory,
    seeded: SeedReport,
    platform_certs: Path,
    issuer_keys: IssuerKeyPaths,
    requester_keys: dict[str, RequesterKeys],
    list_officers: dict[str, TlsFiles],
) -> Iterator[Live]:
    base = tmp_path_factory.mktemp("ingest-live")
    # two more departments, with empty stores of their own: the policy answers an enterprise
    # score from at least three
    databases = {DepartmentId(d): _seed_db(base / f"{d}.duckdb", department=d) for d in DEPARTMENTS}
    data = dataclasses.replace(seeded, databases=databases)
    federation = start_federation(
        base, catalogue=restricted_catalogue(DEPARTMENTS), data=data, certs=platform_certs,
        issuer_keys=issuer_keys, keys=requester_keys, departments=DEPARTMENTS,
    )  # fmt: skip
    try:
        yield Live(federation=federation, operator=list_officers[DEPARTMENT])
    finally:
        stop_federation(federation)


@pytest.fixture(scope="module")
def agency(live: Live) -> Iterator[Client]:
    client = live.federation.client("agency-1", role=Role.CREDIT_AGENCY, purposes=["credit_report"])
    client.register_key()
    yield client
    client.close()


def _score(agency: Client) -> int:
    return agency.enterprise_score(FIRM, purpose="credit_report").score


def test_queries_during_an_import_see_the_records_before_or_after_it(
    live: Live, agency: Client, tmp_path: Path
) -> None:
    before = _score(agency)
    # the firm's arrears are withdrawn and an A-level rating added: two changes, so an answer
    # that saw one without the other would be a third score
    file = _write(
        tmp_path / "day-1.csv",
        [
            _row(_record("ARREARS-1", FIRM, "tax_arrears"), "withdraw", "paid in full"),
            _row(_record("ALEVEL-1", FIRM, "a_level_taxpayer")),
            *_filler("F1", FILLER_ROWS),
        ],
    )
    scores: list[int] = []
    done = threading.Event()

    def ask() -> None:
        while not done.is_set():
            scores.append(_score(agency))

    asking = threading.Thread(target=ask)
    asking.start()
    try:
        wait_until(lambda: len(scores) >= 2, what="queries before the upload")
        with RecordImporter(live.target, department=DEPARTMENT, tls=live.operator) as importer:
            outcome = importer.upload(file)
        seen = len(scores)
        wait_until(lambda: len(scores) >= seen + 2, what="queries after the upload")
    finally:
        done.set()
        asking.join()
    after = _score(agency)
    assert after != before
    assert (outcome.added, outcome.withdrawn, outcome.duplicate) == (FILLER_ROWS + 1, 1, False)
    assert set(scores) <= {before, after}, f"a mixed answer: {sorted(set(scores))}"
    assert scores[0] == before and scores[-1] == after
    # the withdrawal keeps its history: who, when, why, and the record as it was
    db = live.federation.node_configs[DEPARTMENT].db
    with RecordStore(db, department=DepartmentId(DEPARTMENT)) as store:
        (line,) = store.history("ARREARS-1")
    assert (line.action, line.reason, line.actor) == ("withdraw", "paid in full", "operator:tax")
    assert line.before["kind"] == "tax_arrears" and line.import_sha256 == outcome.sha256
    entry = live.imports()[-1]
    assert entry["decision"] == "allow" and entry["requester"] == "operator:tax"
    assert entry["extra"] == {
        "sha256": outcome.sha256, "file": "day-1.csv", "added": FILLER_ROWS + 1,
        "corrected": 0, "withdrawn": 1, "duplicate": 0,
    }  # fmt: skip


def test_a_retried_upload_is_a_duplicate_and_a_bad_file_changes_nothing(
    live: Live, tmp_path: Path
) -> None:
    good = _write(tmp_path / "day-2.csv", _filler("F2", 10))
    with RecordImporter(live.target, department=DEPARTMENT, tls=live.operator) as importer:
        first = importer.upload(good)
        held = live.count()
        again = importer.upload(good)
        assert (first.duplicate, again.duplicate) == (False, True)
        assert (again.added, again.sha256, again.applied_at) == (10, first.sha256, first.applied_at)
        assert live.count() == held
        # one bad row among good ones, a correction of a record that does not exist
        bad = _write(
            tmp_path / "day-3.csv",
            [
                *_filler("F3", 50),
                _row(_record("F3-x", FIRM, "tax_arrears", days_ago=-5)),
                _row(_record("NOPE", FIRM, "tax_arrears"), "correct", "typo"),
            ],
        )
        with pytest.raises(InvalidArgument) as refused:
            importer.upload(bad)
    assert "line 52, event_start" in refused.value.message
    assert "line 53, record_id: no stored record 'NOPE' to correct" in refused.value.message
    assert live.count() == held
    last = live.imports()[-1]
    assert last["decision"] == "deny"
    assert last["reason"] == "ImportRejected: 2 problem(s); nothing was imported"
    assert FIRM not in json.dumps(last)


def test_a_caller_other_than_the_departments_operator_is_refused_and_audited(
    live: Live, tmp_path: Path
) -> None:
    file = _write(tmp_path / "day-4.csv", _filler("F4", 5))
    held = live.count()
    agency_tls = live.federation.tls("agency-1")
    court_operator = TlsFiles.from_cert_paths(
        cert_paths(live.federation.certs, role=PeerRole.COORDINATOR, name="coordinator")
    )
    for tls, who in ((agency_tls, "requester:agency-1"), (court_operator, "coordinator:")):
        with (
            RecordImporter(live.target, department=DEPARTMENT, tls=tls) as importer,
            pytest.raises(PermissionDenied, match="operator certificate named 'tax'"),
        ):
            importer.upload(file)
        entry = live.imports()[-1]
        assert entry["decision"] == "deny" and str(entry["requester"]).startswith(who)
    assert live.count() == held


# --- the inbox ---------------------------------------------------------------------------------


def _node_config(base: Path, certs: Path, issuer: IssuerKeyPaths, db: Path) -> NodeConfig:
    return NodeConfig(
        department=DEPARTMENT, db=db,
        tls=TlsFiles.from_cert_paths(cert_paths(certs, role=PeerRole.NODE, name=DEPARTMENT)),
        issuer_public_key=issuer.public, state_dir=base / "state", table_window_bits=6,
        consent_public_key=certs / "coordinator" / CONSENT_PUBLIC_KEY_FILE,
        inbox=base / "inbox", inbox_poll_s=0.05,
    )  # fmt: skip


def _move_in(inbox: Path, file: Path) -> None:
    # written beside, renamed in: the inbox never sees half a file
    os.replace(file, inbox / file.name)


def test_the_inbox_imports_good_files_and_rejects_bad_ones(
    tmp_path: Path, platform_certs: Path, issuer_keys: IssuerKeyPaths
) -> None:
    config = _node_config(tmp_path, platform_certs, issuer_keys, _seed_db(tmp_path / "tax.duckdb"))
    running = start_node(config, catalogue=restricted_catalogue([DEPARTMENT]))
    inbox = tmp_path / "inbox"
    try:
        _move_in(inbox, _write(tmp_path / "a-good.csv", _filler("I1", 20)))
        bad_rows = [*_filler("I2", 5), ["I2-bad", "enterprise", FIRM, "no_such_kind", "1",
                                        "2020-01-01", "", "active", "", ""]]  # fmt: skip
        _move_in(inbox, _write(tmp_path / "b-bad.csv", bad_rows))
        wait_until(
            lambda: (
                (inbox / DONE / "a-good.csv").exists() and (inbox / REJECTED / "b-bad.csv").exists()
            ),
            what="the inbox to handle both files",
        )
        reason = (inbox / REJECTED / ("b-bad.csv" + REASON_SUFFIX)).read_text()
        assert "line 7, kind" in reason and "nothing was imported" in reason
        assert not [p for p in inbox.iterdir() if p.is_file()]
    finally:
        running.stop(grace=0.5)
    with RecordStore(config.db, department=DepartmentId(DEPARTMENT)) as store:
        assert store.count() == 21
    entries = [json.loads(x) for x in (config.state_dir / "audit.jsonl").read_text().splitlines()]
    imports = [e for e in entries if e["purpose"] == "record_import"]
    assert [e["decision"] for e in imports] == ["allow", "deny"]
    assert str(imports[0]["requester"]).startswith("inbox:")


def test_a_node_killed_mid_file_applies_it_whole_at_its_next_start(
    tmp_path: Path, platform_certs: Path, issuer_keys: IssuerKeyPaths
) -> None:
    db = _seed_db(tmp_path / "tax.duckdb")
    config = _node_config(tmp_path, platform_certs, issuer_keys, db)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    rows = 200_000
    _move_in(inbox, _write(tmp_path / "big.csv", _filler("K", rows)))
    argv = osmanthus_command(
        "node", "serve", "--department", DEPARTMENT, "--db", str(db),
        "--certs-dir", str(platform_certs), "--issuer-public-key", str(issuer_keys.public),
        "--state-dir", str(config.state_dir), "--listen", "127.0.0.1:0",
        "--inbox", str(inbox), "--table-cache-mb", "0",
    )  # fmt: skip
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # the import has begun once its staging file is in the node's spool (never beside the
        # database)
        spool = config.state_dir / SPOOL_DIR
        wait_until(
            lambda: (
                (spool.is_dir() and any(p.name.startswith(".import-") for p in spool.iterdir()))
                or process.poll() is not None
            ),
            what="the node to start importing",
        )
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        # the rows are read in the node's import worker, a process of its own
        wait_until(lambda: _children(process.pid), what="the node's import worker to start")
        workers = _children(process.pid)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    # no worker reads on for a node that is gone
    wait_until(
        lambda: all(_ended(pid) for pid in workers),
        what=lambda: f"the import worker to end: {_describe(workers)}",
    )
    assert (inbox / "big.csv").exists()
    assert not list(tmp_path.glob(".import-*"))
    # a killed process cannot remove its staging file: the node empties its spool at start
    assert any(p.name.startswith(".import-") for p in (config.state_dir / SPOOL_DIR).iterdir())
    running = start_node(config, catalogue=restricted_catalogue([DEPARTMENT]))
    try:
        wait_until(lambda: (inbox / DONE / "big.csv").exists(), what="the file applied at restart")
    finally:
        running.stop(grace=0.5)
    with RecordStore(db, department=DepartmentId(DEPARTMENT)) as store:
        assert store.count() == rows + 1
        last = store.last_import()
    assert last is not None and last.rows == rows


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(FileNotFoundError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _describe(pids: list[int]) -> str:
    described = []
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().split()
            cmdline = Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")[:200]
        except FileNotFoundError:
            continue
        described.append(f"{pid} state {stat[2]} parent {stat[3]}: {cmdline}")
    return "; ".join(described) or "none left"


def _ended(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except FileNotFoundError:
        return True


def test_a_file_applied_just_before_the_node_died_is_only_moved(
    tmp_path: Path, platform_certs: Path, issuer_keys: IssuerKeyPaths
) -> None:
    db = _seed_db(tmp_path / "tax.duckdb")
    config = _node_config(tmp_path, platform_certs, issuer_keys, db)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    file = _write(inbox / "applied.csv", _filler("A", 7))
    catalogue = restricted_catalogue([DEPARTMENT])
    from osmanthus.core.rules import load_default_rules

    # the commit happened, the move did not (the node died between them)
    with RecordStore(db, department=DepartmentId(DEPARTMENT)) as store:
        store.import_file(file, rules=load_default_rules(DEPARTMENT, catalogue=catalogue),
                          catalogue=catalogue, actor="inbox:test")  # fmt: skip
    running = start_node(config, catalogue=catalogue)
    try:
        wait_until(lambda: (inbox / DONE / "applied.csv").exists(), what="the file moved")
    finally:
        running.stop(grace=0.5)
    with RecordStore(db, department=DepartmentId(DEPARTMENT)) as store:
        assert store.count() == 8


def test_the_offline_import_still_refuses_a_running_nodes_database(
    live: Live, tmp_path: Path
) -> None:
    # another process cannot open the file the node holds: stop the node or use --node
    file = _write(tmp_path / "offline.csv", _filler("O", 3))
    db = live.federation.node_configs[DEPARTMENT].db
    done = subprocess.run(
        osmanthus_command("node", "import", "--department", DEPARTMENT, "--db", str(db), str(file)),
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "another process" in done.stderr


def test_import_cli_uploads_to_the_running_node(live: Live, tmp_path: Path) -> None:
    file = _write(tmp_path / "cli.csv", _filler("C", 4))
    tls = live.operator
    argv = osmanthus_command(
        "node", "import", "--department", DEPARTMENT, "--node", live.target, "--ca", str(tls.ca),
        "--cert", str(tls.cert), "--key", str(tls.key), "--json", str(file),
    )  # fmt: skip
    first = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["added"] == 4
    again = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert json.loads(again.stdout)["duplicate"] is True


_ = (date, ImportRejected)

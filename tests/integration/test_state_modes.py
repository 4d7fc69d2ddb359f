"""Every service's state is its user's alone: directories 0700, files 0600, whatever the umask.

Each service is started for real with the process umask at 0o022 (what most systems give), made
to write its state (a key registration, a consent, a person query and a statistic at the
coordinator; a list entry at a node; a delivery at the provincial receiver; a run of the sync
job), and its state directory is walked while it runs (DuckDB's `.wal` and SQLite's `-wal` and
`-shm` exist only then) and again after it stopped. A directory left open by an earlier version
is repaired at start, with a log line naming each path and its old mode.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import secrets
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from certs import PeerRole, cert_paths, issue_certificate
from coordinator.server import CONSENTS_FILE, CoordinatorConfig, start_coordinator
from node.lists import LISTS_FILE
from node.officer import ListOfficer
from node.server import start_node
from osmanthus.core import signing
from osmanthus.core.lists import EntryId, NewEntry
from osmanthus.core.tls import TlsFiles
from osmanthus.core.types import Role, SubjectKind
from osmanthus.demo.launcher import Process, osmanthus_command, spawn
from osmanthus.demo.seed import SeedReport
from province.store import STORE_FILE
from sdk import RequesterKeys
from syncjob.state import STATE_FILE
from tests.conftest import PLATFORM_DEPARTMENTS, IssuerKeyPaths
from tests.integration.conftest import (
    Federation,
    consent_for,
    restricted_catalogue,
    restricted_catalogue_toml,
    start_federation,
    stop_federation,
)
from tests.integration.test_import_cli import _good_rows, _import_args, _write_csv
from tests.integration.test_scores_match_plaintext import subjects

#: the platform's: the sync job's catalogue file must hold every department a category names
DEPARTMENTS = PLATFORM_DEPARTMENTS
#: the umask most systems give a process: files 0644, directories 0755 unless a service narrows it
OPEN_UMASK = 0o022
SENDER = "suzhou"
RUN_TIMEOUT_S = 120
REPAIRED = "was open to other users (mode {mode:o}); made it owner-only"


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def assert_private(root: Path) -> set[str]:
    """Assert `root` and every directory under it are 0700 and every file 0600; the names of
    the files (relative to `root`) that were there."""
    assert _mode(root) == 0o700, root
    files: set[str] = set()
    for directory, dirnames, filenames in os.walk(root):
        for name in dirnames:
            path = Path(directory, name)
            assert _mode(path) == 0o700, f"{path}: {_mode(path):o}"
        for name in filenames:
            path = Path(directory, name)
            assert stat.S_ISREG(os.lstat(path).st_mode), path
            assert _mode(path) == 0o600, f"{path}: {_mode(path):o}"
            files.add(str(path.relative_to(root)))
    return files


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The umask at 0o022 for the test, so that only the services' own narrowing protects."""
    previous = os.umask(OPEN_UMASK)
    try:
        yield
    finally:
        os.umask(previous)


def _umask_now() -> int:
    current = os.umask(0o077)
    os.umask(current)
    return current


@pytest.fixture(scope="module")
def modes_federation(
    tmp_path_factory: pytest.TempPathFactory,
    seeded: SeedReport,
    platform_certs: Path,
    issuer_keys: IssuerKeyPaths,
    requester_keys: dict[str, RequesterKeys],
) -> Iterator[Federation]:
    """The platform's nodes and a coordinator of this module's own, started with the umask at
    0o022."""
    previous = os.umask(OPEN_UMASK)
    try:
        fed = start_federation(
            tmp_path_factory.mktemp("modes-federation"),
            catalogue=restricted_catalogue(DEPARTMENTS),
            data=seeded,
            certs=platform_certs,
            issuer_keys=issuer_keys,
            keys=requester_keys,
            departments=DEPARTMENTS,
        )
        # a service narrows the umask of the process it runs in, for good
        assert _umask_now() == 0o077
    finally:
        os.umask(previous)
    yield fed
    stop_federation(fed)


def _entry(number: int, subject: str) -> NewEntry:
    return NewEntry(
        entry_id=EntryId(f"modes-court-{number:05d}"),
        list="judgement_defaulters",
        subject_kind=SubjectKind.ENTERPRISE,
        subject_id=subject,  # type: ignore[arg-type]
        subject_name=f"测试企业{number}",
        legal_basis="",
        reason="synthetic entry for the state modes test",
        window_start=datetime.date(2026, 1, 1),
        window_end=datetime.date(2028, 6, 30),
    )


def test_the_coordinators_and_nodes_state_is_owner_only_while_they_run(
    modes_federation: Federation, list_officers: dict[str, TlsFiles], open_umask: None
) -> None:
    fed = modes_federation
    registrar = fed.client("registrar", role=Role.PLATFORM_SERVICE, purposes=["consent_management"])
    agency = fed.client("agency-1", role=Role.CREDIT_AGENCY, purposes=["loan_underwriting"])
    office = fed.client("sync-1", role=Role.SYNC_JOB, purposes=["statistics"])
    court = f"127.0.0.1:{fed.nodes['court'].port}"
    try:
        for client in (registrar, agency, office):
            client.register_key()
        persons = subjects(fed, "person")
        consent = consent_for(registrar, persons[0])
        agency.person_score(persons[0], purpose="loan_underwriting", consent_id=consent)
        office.stats(persons[:20], kind=SubjectKind.PERSON, purpose="statistics", epsilon="0.1")
        with ListOfficer(court, department="court", tls=list_officers["court"]) as officer:
            officer.publish([_entry(1, subjects(fed, "enterprise")[0])])
        coordinator = fed.state_dir / "coordinator"
        running = assert_private(coordinator)
        # the files that hold resident ids and exist only while it runs were among them
        assert {
            CONSENTS_FILE + ".wal",
            "keys.duckdb.wal",
            "disclosures.sqlite-wal",
            "epsilon.sqlite-wal",
            "audit.jsonl",
            "audit.salt",
        } <= running, running
        assert {LISTS_FILE, LISTS_FILE + ".wal", "audit.salt"} <= assert_private(
            fed.state_dir / "court"
        )
        for department in DEPARTMENTS:
            assert_private(fed.state_dir / department)
    finally:
        for client in (registrar, agency, office):
            client.close()


def _open_state(state: Path, *, files: dict[str, bytes]) -> None:
    """A state directory as an earlier version left it: 0755, its files 0644, a subdirectory."""
    state.mkdir(parents=True)
    os.chmod(state, 0o755)
    for name, data in files.items():
        (state / name).write_bytes(data)
        os.chmod(state / name, 0o644)
    (state / "old").mkdir()
    os.chmod(state / "old", 0o755)
    (state / "old" / "notes.txt").write_text("kept by an operator\n")
    os.chmod(state / "old" / "notes.txt", 0o644)


def _assert_repair_logged(text: str, state: Path, names: list[str]) -> None:
    assert f"{state} {REPAIRED.format(mode=0o755)}" in text
    assert f"{state / 'old'} {REPAIRED.format(mode=0o755)}" in text
    for name in [*names, "old/notes.txt"]:
        assert f"{state / name} {REPAIRED.format(mode=0o644)}" in text


def test_an_open_coordinator_and_node_state_is_repaired_at_start_and_logged(
    modes_federation: Federation,
    tmp_path: Path,
    open_umask: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fed = modes_federation
    # an audit salt others could read: repaired (and logged), not refused
    coordinator_state = tmp_path / "coordinator"
    _open_state(coordinator_state, files={"audit.salt": secrets.token_bytes(32)})
    node_state = tmp_path / "court"
    _open_state(node_state, files={"audit.salt": secrets.token_bytes(32)})
    base = fed.state_dir.parent
    with caplog.at_level(logging.WARNING, logger="osmanthus.core.files"):
        node = start_node(
            dataclasses.replace(fed.node_configs["court"], state_dir=node_state),
            catalogue=fed.catalogue,
        )
        try:
            coordinator = start_coordinator(
                CoordinatorConfig(
                    nodes=base / "nodes.toml",
                    tls=TlsFiles.from_cert_paths(
                        cert_paths(fed.certs, role=PeerRole.COORDINATOR, name="coordinator")
                    ),
                    issuer_public_key=fed.issuer_keys.public,
                    state_dir=coordinator_state,
                ),
                catalogue=fed.catalogue,
            )
            coordinator.stop()
        finally:
            node.stop(grace=0.5)
    _assert_repair_logged(caplog.text, coordinator_state, ["audit.salt"])
    _assert_repair_logged(caplog.text, node_state, ["audit.salt"])
    assert "audit.salt" in assert_private(coordinator_state)
    assert LISTS_FILE in assert_private(node_state)
    # once repaired, a start says nothing
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="osmanthus.core.files"):
        node = start_node(
            dataclasses.replace(fed.node_configs["court"], state_dir=node_state),
            catalogue=fed.catalogue,
        )
        node.stop(grace=0.5)
    assert REPAIRED.split(" (")[0] not in caplog.text


# --- the provincial receiver and the sync job, as operators run them -----------------------------


@dataclasses.dataclass
class SyncRig:
    root: Path
    receiver_certs: Path
    senders: Path
    config: Path
    sync_state: Path


def _sync_rig(root: Path, fed: Federation) -> SyncRig:
    """A receiver's certificates and senders.toml, and a lists-only sync.toml for sync-1."""
    receiver_certs = root / "receiver-certs"
    issue_certificate(fed.certs, role=PeerRole.NODE, name="province",
                      out_dir=receiver_certs / "nodes" / "province")  # fmt: skip
    # the CRL too: a server refuses to start on a --certs-dir without one
    for part in ("ca.pem", "crl.pem"):
        (receiver_certs / part).write_bytes((fed.certs / part).read_bytes())
    (root / "keys").mkdir()
    private, public, _ = signing.write_key_pair(root / "keys", "suzhou-sync", what="sender key")
    senders = root / "senders.toml"
    senders.write_text(
        f'[[sender]]\nid = "{SENDER}"\npublic_keys = ["{public}"]\ncertificates = ["sync-1"]\n'
    )
    catalogue = root / "catalogue.toml"
    catalogue.write_text(restricted_catalogue_toml(DEPARTMENTS), encoding="utf-8")
    paillier = root / "sync-1.paillier"
    with os.fdopen(os.open(paillier, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(fed.keys["sync-1"].private.to_json())
    token = root / "sync-1.jwt"
    token.write_text(
        fed.token("sync-1", role=Role.SYNC_JOB, purposes=["credit_rescoring", "statistics"])
    )
    sync_state = root / "sync-state"
    config = root / "sync.toml"
    config.write_text(
        f'sender = "{SENDER}"\nsigning_key = "{private}"\nstate_dir = "{sync_state}"\n'
        f'catalogue = "{catalogue}"\n\n'
        f'[coordinator]\ntarget = "{fed.target}"\nrequester = "sync-1"\n'
        f'token_file = "{token}"\npaillier_keys = "{paillier}"\ncerts_dir = "{fed.certs}"\n\n'
        '[province]\ntarget = "127.0.0.1:{port}"\n\n[delivery]\nretry_for = "60s"\n',
        encoding="utf-8",
    )
    return SyncRig(root, receiver_certs, senders, config, sync_state)


def _start_receiver(rig: SyncRig, state: Path) -> tuple[Process, int]:
    receiver = spawn(
        "receiver",
        osmanthus_command(
            "province", "serve", "--senders", str(rig.senders), "--state-dir", str(state),
            "--certs-dir", str(rig.receiver_certs), "--listen", "127.0.0.1:0",
        ),
        run_dir=rig.root / "run",
    )  # fmt: skip
    return receiver, receiver.wait_ready()


def test_the_receivers_and_sync_jobs_state_is_owner_only_and_an_open_one_is_repaired(
    modes_federation: Federation,
    list_officers: dict[str, TlsFiles],
    tmp_path: Path,
    open_umask: None,
) -> None:
    fed = modes_federation
    rig = _sync_rig(tmp_path, fed)
    court = f"127.0.0.1:{fed.nodes['court'].port}"
    with ListOfficer(court, department="court", tls=list_officers["court"]) as officer:
        officer.publish([_entry(2, subjects(fed, "enterprise")[1])])
    # the job's state as an earlier version could have left it, open to others
    _open_state(rig.sync_state, files={})
    receiver_state = tmp_path / "receiver-state"
    receiver, port = _start_receiver(rig, receiver_state)
    try:
        rig.config.write_text(rig.config.read_text().replace("{port}", str(port)))
        done = subprocess.run(
            osmanthus_command("sync", "run", "--config", str(rig.config), "--quiet"),
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
        )
        assert done.returncode == 0, done.stderr
        assert "run " in done.stdout, done.stdout
        # the receiver stored the delivery: its store and the store's log are private
        assert {STORE_FILE, STORE_FILE + ".wal"} <= assert_private(receiver_state)
    finally:
        assert receiver.stop() == 0
    assert STORE_FILE in assert_private(receiver_state)
    _assert_repair_logged(done.stderr, rig.sync_state, [])
    assert STATE_FILE in assert_private(rig.sync_state)
    # a receiver state left open is repaired at the next start, with a line in its log
    os.chmod(receiver_state, 0o755)
    os.chmod(receiver_state / STORE_FILE, 0o644)
    receiver, _ = _start_receiver(rig, receiver_state)
    assert receiver.stop() == 0
    log = receiver.log_path.read_text()
    assert f"{receiver_state} {REPAIRED.format(mode=0o755)}" in log
    assert f"{receiver_state / STORE_FILE} {REPAIRED.format(mode=0o644)}" in log
    assert_private(receiver_state)


def test_a_record_database_node_import_creates_is_its_users_only(
    tmp_path: Path, open_umask: None
) -> None:
    db = tmp_path / "psb.duckdb"
    done = subprocess.run(
        osmanthus_command(
            *_import_args(db, _write_csv(tmp_path / "records.csv", _good_rows("m", 5)))
        ),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr
    assert {p.name for p in tmp_path.iterdir()} >= {"psb.duckdb", "records.csv"}
    assert _mode(db) == 0o600
    # the CSV the operator wrote keeps the umask's mode: nothing but the database is changed
    assert _mode(tmp_path / "records.csv") == 0o644


def test_the_coordinators_and_nodes_state_stays_owner_only_after_they_stopped(
    modes_federation: Federation,
) -> None:
    """Last in the module: it stops the module's federation (DuckDB checkpoints at close)."""
    fed = modes_federation
    stop_federation(fed)
    assert CONSENTS_FILE in assert_private(fed.state_dir / "coordinator")
    for department in DEPARTMENTS:
        assert_private(fed.state_dir / department)

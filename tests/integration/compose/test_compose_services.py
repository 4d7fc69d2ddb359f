"""Every compose service run here as the process its container would run: every node, the
coordinator and the provincial receiver as real `osmanthus` processes on 127.0.0.1, then the sync
job once and as its service, then each service's own health-check command, then SIGTERM."""

from __future__ import annotations

import csv
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from certs import DEFAULT_OPERATOR_NAME, PeerRole, cert_paths
from coordinator.config import NodeEndpoint, load_nodes, render_nodes
from osmanthus.core import signing
from osmanthus.core.catalogue import Catalogue, load_catalogue
from osmanthus.core.lists import holds_resident_id
from osmanthus.core.logkeys import LogRoster
from osmanthus.core.syncbatch import BatchKind, sender_key_id
from osmanthus.core.tls import TlsFiles
from osmanthus.core.tokens import TokenIssuer
from osmanthus.core.types import DepartmentId, Role, SubjectKind
from osmanthus.core.wire.province import BatchSummary
from osmanthus.demo.launcher import Process, osmanthus_command, spawn, wait_all_ready
from sdk import Client, RequesterKeys, verify_consent_receipt
from sdk.batchjob import read_ids
from sdk.province import ProvinceClient
from syncjob.config import load_config
from tests.integration.compose.conftest import (
    _METRICS_URL,
    REPO,
    Compose,
    Host,
    Service,
    _metrics_health_allowance,
    _sync_config,
)

#: after SIGTERM a process that has used no CPU time for this long is hung, not slow: a busy
#: machine slows a shutdown down but the process keeps running; a hung one waits on something
STOP_IDLE_S = 10.0
#: and none may still run this long after SIGTERM, however busy it keeps (compose would have
#: killed it after its stop_grace_period, 15 s, on a machine with cores to spare)
STOP_LIMIT_S = 120.0
HEALTH_TIMEOUT_S = 60.0
SYNC_TIMEOUT_S = 180.0


@dataclass
class Running:
    compose: Compose
    host: Host
    processes: dict[str, Process]
    #: the loopback port of the receiver's witness metrics (its --metrics-listen)
    province_metrics_port: int

    @property
    def coordinator_target(self) -> str:
        return self.target(self.compose.coordinator.name)

    def target(self, service: str) -> str:
        return f"127.0.0.1:{self.processes[service].port}"


def _start(service: Service, host: Host, *, metrics_port: int | None = None) -> Process:
    argv = host.mapper(service).argv(service.argv)
    assert argv[0] == "osmanthus", f"{service.name} must run the osmanthus entrypoint"
    at = argv.index("--listen") + 1
    argv[at] = "127.0.0.1:0"
    if "--metrics-listen" in argv:
        assert metrics_port is not None, f"{service.name} serves metrics: give it a port"
        argv[argv.index("--metrics-listen") + 1] = f"127.0.0.1:{metrics_port}"
    return spawn(service.name, osmanthus_command(*argv[1:]), run_dir=host.root / "run")


@pytest.fixture(scope="module")
def running(compose: Compose, initialised: Host) -> Iterator[Running]:
    processes: dict[str, Process] = {}
    province_metrics = _free_port()
    try:
        for node in compose.nodes.values():
            processes[node.name] = _start(node, initialised)
        # the receiver needs nothing else running; the sync job starts in its own fixtures
        processes[compose.province.name] = _start(
            compose.province, initialised, metrics_port=province_metrics
        )
        ports = wait_all_ready(processes.values())
        compose_registry = (
            REPO / compose.coordinator.mounts()[compose.coordinator.option("--nodes")]
        )
        endpoints = load_nodes(compose_registry, catalogue=load_catalogue())
        loopback = []
        for e in endpoints:
            service = e.address.rsplit(":", 1)[0]
            loopback.append(NodeEndpoint(DepartmentId(e.department), f"127.0.0.1:{ports[service]}"))
        initialised.registry.write_text(render_nodes(loopback))
        coordinator = compose.coordinator
        processes[coordinator.name] = _start(coordinator, initialised)
        processes[coordinator.name].wait_ready()
        yield Running(compose, initialised, processes, province_metrics)
    finally:
        for process in processes.values():
            process.stop()


@pytest.fixture(scope="module")
def synced(running: Running) -> subprocess.CompletedProcess[str]:
    """`osmanthus sync run --once` with the sync service's configuration, on loopback."""
    compose, host = running.compose, running.host
    ports = {name: process.port for name, process in running.processes.items()}
    _sync_config(compose, host, out=host.sync_config, ports=ports)
    sync = compose.sync
    argv = host.mapper(sync).argv(sync.argv)
    for flag in ("--every", "--metrics-listen"):
        at = argv.index(flag)
        del argv[at : at + 2]
    return subprocess.run(
        osmanthus_command(*argv[1:], "--once"),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=SYNC_TIMEOUT_S,
    )


def _receiver(running: Running) -> ProvinceClient:
    """A client of the running receiver with the operator certificate of its health check."""
    province = running.compose.province
    certs_dir = Path(running.host.mounted(province).map(province.option("--certs-dir")))
    operator = cert_paths(certs_dir, role=PeerRole.OPERATOR, name=DEFAULT_OPERATOR_NAME)
    return ProvinceClient(running.target(province.name), tls=TlsFiles.from_cert_paths(operator))


@pytest.mark.slow
def test_the_sync_job_delivers_grades_and_statistics_to_the_receiver(
    running: Running, synced: subprocess.CompletedProcess[str]
) -> None:
    assert synced.returncode == 0, synced.stdout + synced.stderr
    config = load_config(running.host.sync_config)
    assert config.enterprises is not None
    firms = set(read_ids(config.enterprises))
    key_id = sender_key_id(signing.load_private_key(config.signing_key).public_key())
    with _receiver(running) as receiver:
        stored = receiver.batches(page_size=100)
        refused = receiver.rejections(page_size=100)
    assert not refused.rejections, refused.rejections
    by_kind: dict[BatchKind, list[BatchSummary]] = {}
    for batch in stored.batches:
        assert batch.sender == config.sender
        assert batch.peer == f"requester/{config.requester}"
        assert batch.key_id == key_id
        by_kind.setdefault(batch.kind, []).append(batch)
    assert {BatchKind.GRADES, BatchKind.STATISTICS} <= by_kind.keys(), synced.stdout
    # a first run grades every enterprise of the roster, all but any credit code that also
    # reads as a resident id (no batch may carry one)
    graded = [firm for firm in firms if not holds_resident_id(firm)]
    assert graded
    assert sum(b.records for b in by_kind[BatchKind.GRADES]) == len(graded)
    [statistics] = by_kind[BatchKind.STATISTICS]
    [cohort] = config.statistics
    assert statistics.records == len(cohort.statistics)
    assert not statistics.partial

    # and the job's own account agrees: each stream acknowledged to its last batch, none waiting
    status = subprocess.run(
        osmanthus_command("sync", "status", "--config", str(running.host.sync_config), "--json"),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=HEALTH_TIMEOUT_S,
    )
    assert status.returncode == 0, status.stdout + status.stderr
    report = json.loads(status.stdout)
    assert report["backlog"]["batches"] == 0
    assert report["last_error"] is None
    for kind, batches in by_kind.items():
        assert report["streams"][kind.value]["sequence"] == max(b.sequence for b in batches)


_COSIGNED = re.compile(r'^osmanthus_witness_cosigned_total\{origin="([^"]+)"\} ([0-9.e+]+)$', re.M)
_ALARMS = re.compile(r"^osmanthus_witness_alarms_total\{[^}]*\} ([0-9.e+]+)$", re.MULTILINE)


@pytest.mark.slow
def test_the_sync_job_carries_every_logs_checkpoint_to_the_receivers_witness(
    running: Running, synced: subprocess.CompletedProcess[str]
) -> None:
    # every node signed a checkpoint at start with the log key init made, the coordinator too;
    # the job read each through the coordinator and the receiver cosigned it
    assert synced.returncode == 0, synced.stdout + synced.stderr
    config = load_config(running.host.sync_config)
    assert config.logs is not None
    origins = set(LogRoster.load(config.logs).origins())
    assert len(origins) == len(running.compose.nodes) + 1
    metrics = _metrics(running.province_metrics_port)
    cosigned = {origin for origin, n in _COSIGNED.findall(metrics) if float(n) >= 1}
    assert cosigned == origins, metrics
    assert all(float(n) == 0 for n in _ALARMS.findall(metrics)), metrics


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _metrics(port: int) -> str:
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=30) as response:
        return str(response.read().decode("utf-8"))


_LAST_RUN = re.compile(r"^osmanthus_sync_last_run_timestamp_seconds ([0-9.e+]+)$", re.MULTILINE)


@pytest.fixture(scope="module")
def sync_service(running: Running, synced: subprocess.CompletedProcess[str]) -> Process:
    """The sync service as compose runs it (on its schedule, serving metrics), started after the
    one-off run so that the two never contend for the state's lock; ready once its first run
    has ended, since a SIGTERM during a run stops the run and the job exits 130."""
    sync = running.compose.sync
    argv = running.host.mapper(sync).argv(sync.argv)
    port = _free_port()
    argv[argv.index("--metrics-listen") + 1] = f"127.0.0.1:{port}"
    run_dir = running.host.root / "run"
    log_path = run_dir / f"{sync.name}.log"
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            osmanthus_command(*argv[1:]),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
        )
    # the job binds no gRPC port and writes no ready file; `port` is its metrics port
    process = Process(sync.name, popen, run_dir / f"{sync.name}.port", log_path, port=port)
    running.processes[sync.name] = process
    deadline = time.monotonic() + SYNC_TIMEOUT_S
    while True:
        if popen.poll() is not None:
            pytest.fail(f"{sync.name} exited with {popen.returncode}:\n{log_path.read_text()}")
        try:
            ended = _LAST_RUN.search(_metrics(port))
        except OSError:
            ended = None
        if ended and float(ended.group(1)) > 0:
            return process
        if time.monotonic() > deadline:
            pytest.fail(f"{sync.name} did not finish its first run in {SYNC_TIMEOUT_S:g} s")
        time.sleep(0.2)


@pytest.mark.slow
def test_the_sync_service_runs_on_its_schedule_from_the_same_state(
    running: Running, sync_service: Process
) -> None:
    metrics = _metrics(sync_service.port)
    assert 'osmanthus_sync_runs_total{outcome="ok"} 1.0' in metrics, metrics
    # grades and statistics are daily and the one-off run delivered them: not due again
    for kind in (BatchKind.GRADES, BatchKind.STATISTICS):
        assert f'osmanthus_sync_batches_delivered_total{{kind="{kind.value}"}} 0.0' in metrics
    assert "osmanthus_sync_outbox_batches 0.0" in metrics


def _probe(service: Service, running: Running) -> list[str]:
    """The service's health check as it runs here: loopback port, mounts mapped."""
    test = running.host.mapper(service).argv(service.health_test)
    port = running.processes[service.name].port
    if test[0] == "python":
        # the sync job's: fetch its metrics
        return [sys.executable, "-c", _METRICS_URL.sub(f"http://127.0.0.1:{port}/metrics", test[2])]
    test[test.index("--target") + 1] = f"127.0.0.1:{port}"
    return osmanthus_command(*test[1:])


def test_the_sync_health_check_fails_once_no_run_has_succeeded_for_its_allowance(
    compose: Compose,
) -> None:
    # the job's endpoint answers whatever its runs do; the check must read when one last
    # succeeded. The same exposition as the job's, served by the same library.
    sync = compose.sync
    allowed = _metrics_health_allowance(sync).total_seconds()
    registry = CollectorRegistry()
    ended = Gauge("osmanthus_sync_last_run_timestamp_seconds", "last run", registry=registry)
    ended.set_to_current_time()  # runs go on, and fail
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    code = _METRICS_URL.sub(f"http://127.0.0.1:{server.server_port}/metrics", sync.health_test[2])

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=HEALTH_TIMEOUT_S
        )

    try:
        assert check().returncode != 0, "healthy with no last-success gauge"
        ok = Gauge("osmanthus_sync_last_ok_run_timestamp_seconds", "last ok", registry=registry)
        assert check().returncode != 0, "healthy before any run succeeded"
        ok.set(time.time() - allowed + 60)
        passed = check()
        assert passed.returncode == 0, passed.stderr
        ok.set(time.time() - allowed - 60)
        failed = check()
        assert failed.returncode == 1
        assert "no successful run in the last" in failed.stderr
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.slow
def test_every_service_health_check_reports_serving(
    running: Running, sync_service: Process
) -> None:
    probes = {
        service.name: _probe(service, running)
        for service in running.compose.services.values()
        if service.name in running.processes
    }
    assert len(probes) == len(running.compose.services) - 1, "every service but init"

    def probe(argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv, capture_output=True, text=True, cwd=REPO, timeout=HEALTH_TIMEOUT_S
        )

    # one probe per core: 27 interpreters starting at once only slow each other down
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        results = dict(zip(probes, pool.map(probe, probes.values()), strict=True))
    for name, done in results.items():
        assert done.returncode == 0, f"{name}: {done.stdout}{done.stderr}"
        if name != running.compose.sync.name:
            assert done.stdout.strip().endswith(": SERVING"), f"{name}: {done.stdout}"


@pytest.mark.slow
def test_coordinator_reaches_every_enterprise_department_through_the_compose_registry(
    running: Running, requester_keys: dict[str, RequesterKeys], catalogue: Catalogue
) -> None:
    secrets = running.host.volume("secrets")
    requester = running.compose.init.spec["environment"]["REQUESTERS"].split()[0]
    keys = requester_keys["agency-1"]
    token = TokenIssuer.from_file(secrets / "issuer.key").issue(
        requester=requester,
        role=Role.CREDIT_AGENCY,
        purposes=["credit_report"],
        key_fingerprint=keys.fingerprint,
        ttl=timedelta(minutes=5),
    )
    tls = TlsFiles.from_cert_paths(
        cert_paths(secrets / "ca", role=PeerRole.REQUESTER, name=requester)
    )
    with (running.host.volume("data") / "subjects.csv").open() as f:
        firm = next(r["subject_id"] for r in csv.DictReader(f) if r["subject_kind"] == "enterprise")
    with Client(running.coordinator_target, tls=tls, token=token, keys=keys) as client:
        report = client.enterprise_score(firm, purpose="credit_report")
    assert not report.partial
    expected = {d.id for d in catalogue.departments_for(SubjectKind.ENTERPRISE)}
    assert {s.department for s in report.answered} == expected


@pytest.mark.slow
def test_the_coordinators_receipts_verify_against_the_consent_pub_every_service_sees(
    running: Running, requester_keys: dict[str, RequesterKeys]
) -> None:
    secrets = running.host.volume("secrets")
    keys = requester_keys["registrar"]
    token = TokenIssuer.from_file(secrets / "issuer.key").issue(
        requester="registrar",
        role=Role.PLATFORM_SERVICE,
        purposes=["consent_management"],
        key_fingerprint=keys.fingerprint,
        ttl=timedelta(minutes=5),
    )
    tls = TlsFiles.from_cert_paths(
        cert_paths(secrets / "ca", role=PeerRole.REQUESTER, name="registrar")
    )
    with (running.host.volume("data") / "subjects.csv").open() as f:
        person = next(r["subject_id"] for r in csv.DictReader(f) if r["subject_kind"] == "person")
    with Client(running.coordinator_target, tls=tls, token=token, keys=keys) as registrar:
        registrar.register_key()
        record = registrar.grant_consent(
            subject_id=person,
            grantee="agency-1",
            purpose="loan_underwriting",
            expires_at=datetime.now(UTC) + timedelta(days=1),
        )
    published = running.host.volume("certs") / "coordinator" / "consent.pub"
    receipt = verify_consent_receipt(record.receipt, public_key=published, grantee="agency-1")
    assert receipt.consent_id == record.consent_id


@pytest.mark.slow
def test_every_service_exits_cleanly_on_sigterm(running: Running, sync_service: Process) -> None:
    coordinator = running.processes[running.compose.coordinator.name]
    # dependants first, as compose stops them before what they depend on: the sync job, then
    # the coordinator, then the nodes and the receiver
    first = [sync_service, coordinator]
    ordered = [*first, *(p for p in running.processes.values() if p not in first)]
    for process in ordered:
        process.terminate()
    # the exit is the event waited for: 27 processes shutting down at once on a busy machine
    # take a while, but each keeps using CPU until it is gone
    for process in ordered:
        code = process.wait_exit(idle_s=STOP_IDLE_S, limit_s=STOP_LIMIT_S)
        if code is None:
            pytest.fail(
                f"{process.name} still running after SIGTERM: it used no CPU time for "
                f"{STOP_IDLE_S:g} s, or ran on for {STOP_LIMIT_S:g} s"
            )
        log = process.log_path.read_text(errors="replace")[-2000:]
        assert code == 0, f"{process.name} exited with {code}:\n{log}"

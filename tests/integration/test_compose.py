"""docker-compose.yml and the Dockerfile: their structure, then every service's command run here.

The coordinator's private keys (TLS key.pem, consent.key) live in a volume that only init and the
coordinator mount; every node mounts the shared `certs` volume, which holds only their public half.

Docker does not run in the test environment, so the compose file is read with PyYAML and each
service is run as the process its container would run: the init script with its volumes mapped to
temporary directories, every node and the coordinator as real `osmanthus` processes on 127.0.0.1,
then each service's own health-check command, then SIGTERM. Container paths are mapped through
the service's declared mounts, so a command that uses a path its service does not mount fails.
"""

from __future__ import annotations

import csv
import json
import os
import re
import stat
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from certs import PeerRole, cert_paths
from coordinator.config import NodeEndpoint, load_nodes, render_nodes
from osmanthus.catalogue import Catalogue, load_catalogue
from osmanthus.launcher import START_TIMEOUT_S, Process, osmanthus_command, spawn
from osmanthus.tls import TlsFiles
from osmanthus.tokens import TokenIssuer
from osmanthus.types import DepartmentId, Role, SubjectKind
from sdk import Client, RequesterKeys, verify_consent_receipt

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
#: the compose init seeds 2000 persons and 300 enterprises; only these scale flags are overridden,
#: so that 27 processes start within seconds on two cores
TEST_SCALE = {"SEED_PERSONS": "200", "SEED_ENTERPRISES": "40"}
#: the image's copy of the default policies (Dockerfile) is this repository's policies/
IMAGE_POLICIES = "/etc/osmanthus/policies"
STOP_TIMEOUT_S = 10.0
HEALTH_TIMEOUT_S = 60.0
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


# --- reading the compose file and the Dockerfile --------------------------------------------------


def _interpolate(value: Any) -> Any:
    """Compose variable substitution with every variable unset, so the file's defaults apply."""
    if isinstance(value, str):
        return _VARIABLE.sub(lambda m: m.group(2) or "", value.replace("$$", "\0")).replace(
            "\0", "$"
        )
    if isinstance(value, list):
        return [_interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: _interpolate(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class Image:
    entrypoint: list[str]
    cmd: list[str]
    lines: list[str]


def _read_image() -> Image:
    # continuation lines joined, so each instruction is one line
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]

    def exec_form(instruction: str) -> list[str]:
        found = [ln for ln in lines if ln.startswith(instruction + " ")]
        assert len(found) == 1, f"the Dockerfile needs exactly one {instruction}"
        value = json.loads(found[0][len(instruction) :])
        assert isinstance(value, list), f"{instruction} must be in exec form"
        return [str(v) for v in value]

    return Image(entrypoint=exec_form("ENTRYPOINT"), cmd=exec_form("CMD"), lines=lines)


@dataclass(frozen=True)
class Service:
    name: str
    spec: dict[str, Any]
    argv: list[str]

    def option(self, flag: str) -> str:
        assert self.argv.count(flag) == 1, f"{self.name}: {flag} must appear once in {self.argv}"
        return self.argv[self.argv.index(flag) + 1]

    def mounts(self) -> dict[str, str]:
        """Container path → volume name or bind source, from the short volume syntax."""
        result = {}
        for entry in self.spec.get("volumes", []):
            assert isinstance(entry, str), f"{self.name}: use the short volume syntax"
            source, target, *_mode = entry.split(":")
            result[target] = source
        return result

    @property
    def health_test(self) -> list[str]:
        test = self.spec["healthcheck"]["test"]
        assert isinstance(test, list) and test[0] == "CMD", f"{self.name}: health check exec form"
        return [str(t) for t in test[1:]]


@dataclass(frozen=True)
class Compose:
    raw: dict[str, Any]
    services: dict[str, Service]

    @property
    def nodes(self) -> dict[str, Service]:
        """Node services by the department they serve."""
        return {
            s.option("--department"): s
            for s in self.services.values()
            if s.argv[:3] == ["osmanthus", "node", "serve"]
        }

    @property
    def coordinator(self) -> Service:
        found = [s for s in self.services.values() if s.argv[1:3] == ["coordinator", "serve"]]
        assert len(found) == 1, "exactly one service must run 'coordinator serve'"
        return found[0]

    @property
    def init(self) -> Service:
        return self.services["init"]


def _read_compose(image: Image) -> Compose:
    raw = _interpolate(yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8")))
    services = {}
    for name, spec in raw["services"].items():
        # Compose: an entrypoint set in the compose file drops the image's CMD
        if "entrypoint" in spec:
            argv = [*spec["entrypoint"], *spec.get("command", [])]
        else:
            argv = [*image.entrypoint, *spec.get("command", image.cmd)]
        assert all(isinstance(a, str) for a in argv), f"{name}: command and entrypoint as lists"
        services[name] = Service(name, spec, argv)
    return Compose(raw, services)


@pytest.fixture(scope="module")
def image() -> Image:
    return _read_image()


@pytest.fixture(scope="module")
def compose(image: Image) -> Compose:
    return _read_compose(image)


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return load_catalogue()


def _listen_port(service: Service) -> int:
    host, port = service.option("--listen").rsplit(":", 1)
    assert host == "0.0.0.0", f"{service.name} must listen on all interfaces of its container"
    return int(port)


def _health_option(service: Service, flag: str) -> str:
    test = service.health_test
    assert test[:2] == ["osmanthus", "health"], f"{service.name}: health check runs the CLI"
    assert test.count(flag) == 1, f"{service.name}: health check needs {flag} once"
    return test[test.index(flag) + 1]


# --- structure ------------------------------------------------------------------------------------


def test_image_is_one_non_root_python_311_image_with_the_cli_entrypoint(image: Image) -> None:
    froms = [ln for ln in image.lines if ln.startswith("FROM ")]
    assert froms[-1].split()[1] == "python:3.11-slim"
    users = [ln.split()[1] for ln in image.lines if ln.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert not [ln for ln in image.lines if ln.startswith("HEALTHCHECK")]
    assert image.entrypoint == ["osmanthus"]
    # the default policies the compose file passes to --policy are in the image
    copies = [ln for ln in image.lines if ln.startswith("COPY ") and IMAGE_POLICIES in ln]
    assert copies and "policies/node.cedar" in copies[0] and "policies/central.cedar" in copies[0]


def test_every_catalogue_department_has_exactly_one_node_service(
    compose: Compose, catalogue: Catalogue
) -> None:
    node_services = [
        s for s in compose.services.values() if s.argv[:3] == ["osmanthus", "node", "serve"]
    ]
    departments = [s.option("--department") for s in node_services]
    assert sorted(departments) == sorted(d.id for d in catalogue.departments)
    assert len(set(departments)) == len(departments)


def test_each_node_service_has_its_files_health_check_and_dependencies(
    compose: Compose,
) -> None:
    state_dirs = set()
    for dept, node in compose.nodes.items():
        assert node.name == f"node-{dept}"
        assert node.option("--db") == f"/data/{dept}.duckdb"
        assert node.option("--certs-dir") == "/certs"
        assert node.option("--issuer-public-key").startswith("/certs/")
        assert node.option("--policy") == f"{IMAGE_POLICIES}/node.cedar"
        state_dirs.add(node.option("--state-dir"))
        mounts = node.mounts()
        for target in ("/data", "/certs", "/state"):
            assert target in mounts, f"{node.name} does not mount {target}"
        # a node only reads its database and certificates
        assert "data:/data:ro" in node.spec["volumes"]
        assert "certs:/certs:ro" in node.spec["volumes"]
        assert node.spec["depends_on"]["init"]["condition"] == "service_completed_successfully"
        assert _health_option(node, "--server-name") == f"{dept}.node.osmanthus"
        assert _health_option(node, "--target") == f"127.0.0.1:{_listen_port(node)}"
        assert _health_option(node, "--certs-dir") == "/certs"
        assert "ports" not in node.spec, f"{node.name} must not publish a port"
    assert len(state_dirs) == len(compose.nodes), "each node needs its own state directory"


def test_only_the_coordinator_publishes_a_port_and_it_waits_for_every_node(
    compose: Compose,
) -> None:
    coordinator = compose.coordinator
    published = [s.name for s in compose.services.values() if s.spec.get("ports")]
    assert published == [coordinator.name]
    [mapping] = coordinator.spec["ports"]
    assert mapping.rsplit(":", 1)[1] == str(_listen_port(coordinator))
    depends = coordinator.spec["depends_on"]
    assert depends.pop("init") == {"condition": "service_completed_successfully"}
    assert depends == {n.name: {"condition": "service_healthy"} for n in compose.nodes.values()}
    assert _health_option(coordinator, "--server-name") == "coordinator.osmanthus"
    assert _health_option(coordinator, "--target") == f"127.0.0.1:{_listen_port(coordinator)}"
    assert coordinator.option("--policy") == f"{IMAGE_POLICIES}/central.cedar"


def test_every_named_volume_mount_point_belongs_to_the_service_user_in_the_image(
    compose: Compose, image: Image
) -> None:
    # Docker copies a mount point's owner into a new named volume; one the image does not make
    # would be root's, and the non-root services could not write it
    owned = [
        ln for ln in image.lines if ln.startswith("RUN ") and "chown osmanthus:osmanthus" in ln
    ]
    assert owned, "the image must make the volume mount points and give them to its user"
    for service in compose.services.values():
        for target, source in service.mounts().items():
            if not source.startswith(("./", "/")):
                assert any(f" {target} " in f"{ln} " for ln in owned), (
                    f"{service.name} mounts {source} at {target}, which the image does not make "
                    "and give to its user"
                )


def test_the_coordinators_private_keys_come_from_a_volume_only_it_and_init_mount(
    compose: Compose,
) -> None:
    coordinator = compose.coordinator
    mounts = coordinator.mounts()
    volumes = set()
    for flag in ("--key", "--consent-key"):
        path = coordinator.option(flag)
        target = max((t for t in mounts if path.startswith(t + "/")), key=len)
        volumes.add(mounts[target])
        assert f"{mounts[target]}:{target}:ro" in coordinator.spec["volumes"]
    [keys] = volumes
    users = sorted(s.name for s in compose.services.values() if keys in s.mounts().values())
    assert users == sorted([compose.init.name, coordinator.name])


def test_init_runs_once_and_every_named_volume_is_declared(compose: Compose) -> None:
    init = compose.init
    # `unless-stopped` would restart a finished init, and service_completed_successfully never fires
    assert init.spec["restart"] == "no"
    assert init.argv[0] == "sh"
    assert (REPO / init.mounts()[init.argv[1]]).is_file()
    declared = set(compose.raw["volumes"])
    for service in compose.services.values():
        for source in service.mounts().values():
            if not source.startswith(("./", "/")):
                assert source in declared, f"{service.name} mounts undeclared volume {source}"


def test_node_registry_lists_every_department_once_at_its_node_service(
    compose: Compose, catalogue: Catalogue
) -> None:
    coordinator = compose.coordinator
    registry = REPO / coordinator.mounts()[coordinator.option("--nodes")]
    endpoints = load_nodes(registry, catalogue=catalogue)  # refuses a department listed twice
    assert sorted(e.department for e in endpoints) == sorted(d.id for d in catalogue.departments)
    nodes = compose.nodes
    for endpoint in endpoints:
        node = nodes[endpoint.department]
        assert endpoint.address == f"{node.name}:{_listen_port(node)}"


# --- running the services on loopback -------------------------------------------------------------


@dataclass(frozen=True)
class Host:
    """Where this test keeps what the containers would keep in volumes and bind mounts."""

    root: Path
    bin_dir: Path
    registry: Path

    def volume(self, name: str) -> Path:
        return self.root / "volumes" / name

    def mapper(self, service: Service) -> PathMapper:
        table: dict[str, Path] = {IMAGE_POLICIES: REPO / "policies"}
        for target, source in service.mounts().items():
            if source.startswith(("./", "/")):
                table[target] = REPO / source
            else:
                table[target] = self.volume(source)
        if service.argv[1:3] == ["coordinator", "serve"]:
            # the registry names compose services; the loopback one names the same ports here
            table[service.option("--nodes")] = self.registry
        return PathMapper(table)

    def env(self, extra: Mapping[str, str]) -> dict[str, str]:
        return {**os.environ, "PATH": f"{self.bin_dir}{os.pathsep}{os.environ['PATH']}", **extra}


@dataclass(frozen=True)
class PathMapper:
    table: Mapping[str, Path]

    def map(self, value: str) -> str:
        if not value.startswith("/"):
            return value
        for target in sorted(self.table, key=len, reverse=True):
            if value == target or value.startswith(target + "/"):
                return str(self.table[target]) + value[len(target) :]
        raise AssertionError(f"{value} is neither mounted into the service nor in the image")

    def argv(self, argv: Sequence[str]) -> list[str]:
        return [self.map(a) for a in argv]


def _host(root: Path) -> Host:
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True)
    # stands in for the image's console script, so the init script runs unchanged
    shim = bin_dir / "osmanthus"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m osmanthus.cli "$@"\n')
    shim.chmod(0o755)
    return Host(root=root, bin_dir=bin_dir, registry=root / "nodes.loopback.toml")


def _run_init(compose: Compose, host: Host, **overrides: str) -> subprocess.CompletedProcess[str]:
    init = compose.init
    mapper = host.mapper(init)
    env = {k: mapper.map(str(v)) for k, v in init.spec.get("environment", {}).items()}
    return subprocess.run(
        mapper.argv(init.argv),
        env=host.env({**env, **TEST_SCALE, **overrides}),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def initialised(compose: Compose, tmp_path_factory: pytest.TempPathFactory) -> Host:
    host = _host(tmp_path_factory.mktemp("compose"))
    done = _run_init(compose, host)
    assert done.returncode == 0, done.stdout + done.stderr
    return host


def _coordinator_files(host: Host) -> dict[str, bytes]:
    """The coordinator's files as init made them in the secrets volume."""
    made = host.volume("secrets") / "ca" / "coordinator"
    return {name: (made / name).read_bytes() for name in _COORDINATOR_FILES}


_COORDINATOR_FILES = ("cert.pem", "key.pem", "consent.key", "consent.pub")
_COORDINATOR_PRIVATE = ("key.pem", "consent.key")


def test_init_makes_certificates_issuer_key_and_data_and_a_second_run_keeps_them(
    compose: Compose, initialised: Host, catalogue: Catalogue
) -> None:
    certs, secrets, data = (initialised.volume(v) for v in ("certs", "secrets", "data"))
    keys = initialised.volume("coordinator-keys")
    for dept in catalogue.departments:
        assert (data / f"{dept.id}.duckdb").is_file()
        cert_paths(certs, role=PeerRole.NODE, name=dept.id)  # raises if any file is missing
    cert_paths(certs, role=PeerRole.OPERATOR, name="operator")
    # the services' volume carries no CA key, no issuer key and no requester keys, and of the
    # coordinator only what is public
    assert not (certs / "ca.key").exists()
    assert not list(certs.rglob("issuer.key"))
    assert not (certs / "requesters").exists()
    assert sorted(p.name for p in (certs / "coordinator").iterdir()) == ["cert.pem", "consent.pub"]
    for requester in compose.init.spec["environment"]["REQUESTERS"].split():
        cert_paths(secrets / "ca", role=PeerRole.REQUESTER, name=requester)
    # the coordinator's own volume has its whole identity, private files owner-only
    made = _coordinator_files(initialised)
    assert {p.name: p.read_bytes() for p in keys.iterdir()} == made
    for name in _COORDINATOR_PRIVATE:
        assert stat.S_IMODE((keys / name).stat().st_mode) == 0o600
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700

    kept = [certs / "ca.pem", certs / "issuer.pub", secrets / "issuer.key", data / "psb.duckdb"]
    kept += [keys / name for name in _COORDINATOR_FILES]
    before = {p: p.read_bytes() for p in kept}
    again = _run_init(compose, initialised)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already exists: kept" in again.stdout
    assert {p: p.read_bytes() for p in kept} == before


def test_no_node_mounts_a_volume_holding_a_coordinator_private_key(
    compose: Compose, initialised: Host
) -> None:
    # by content, so that a renamed or relocated copy is found too
    secret = {_coordinator_files(initialised)[name] for name in _COORDINATOR_PRIVATE}
    holding = set()
    for volume in (initialised.root / "volumes").iterdir():
        for path in volume.rglob("*"):
            if path.is_file() and (path.name == "consent.key" or path.read_bytes() in secret):
                holding.add(volume.name)
    assert holding == {"secrets", "coordinator-keys"}
    for service in compose.services.values():
        mounted = holding & set(service.mounts().values())
        if service.name not in (compose.init.name, compose.coordinator.name):
            assert not mounted, f"{service.name} mounts {mounted}, which hold coordinator keys"


def test_init_removes_coordinator_keys_an_earlier_version_put_in_the_shared_volume(
    compose: Compose, initialised: Host
) -> None:
    shared = initialised.volume("certs") / "coordinator"
    made = _coordinator_files(initialised)
    for name in _COORDINATOR_PRIVATE:
        (shared / name).write_bytes(made[name])
    done = _run_init(compose, initialised)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in shared.iterdir()) == ["cert.pem", "consent.pub"]


def test_init_writes_a_lost_consent_pub_from_the_key_and_never_replaces_a_lost_key(
    compose: Compose, tmp_path: Path
) -> None:
    host = _host(tmp_path)
    first = _run_init(compose, host, SEED_SYNTHETIC="0")
    assert first.returncode == 0, first.stdout + first.stderr
    made = _coordinator_files(host)
    coordinator_dir = host.volume("secrets") / "ca" / "coordinator"

    (coordinator_dir / "consent.pub").unlink()
    again = _run_init(compose, host, SEED_SYNTHETIC="0")
    assert again.returncode == 0, again.stdout + again.stderr
    assert _coordinator_files(host) == made
    assert (host.volume("certs") / "coordinator" / "consent.pub").read_bytes() == made[
        "consent.pub"
    ]

    (coordinator_dir / "consent.key").unlink()
    lost = _run_init(compose, host, SEED_SYNTHETIC="0")
    assert lost.returncode == 3, lost.stdout + lost.stderr
    assert "restore the consent signing key from backup" in lost.stderr
    assert not (coordinator_dir / "consent.key").exists()
    assert (coordinator_dir / "consent.pub").read_bytes() == made["consent.pub"]
    # the copy the coordinator used is untouched
    assert (host.volume("coordinator-keys") / "consent.key").read_bytes() == made["consent.key"]


def test_init_refuses_to_seed_over_department_data_it_did_not_make(
    compose: Compose, tmp_path: Path
) -> None:
    host = _host(tmp_path)
    foreign = host.volume("data") / "psb.duckdb"
    foreign.parent.mkdir(parents=True)
    foreign.write_bytes(b"records imported by the department")
    done = _run_init(compose, host)
    assert done.returncode == 3
    assert f"{host.volume('data')} holds {foreign}" in done.stderr
    assert "SEED_SYNTHETIC=0" in done.stderr
    assert foreign.read_bytes() == b"records imported by the department"
    assert not (host.volume("data") / "court.duckdb").exists()


@dataclass
class Running:
    compose: Compose
    host: Host
    processes: dict[str, Process]

    @property
    def coordinator_target(self) -> str:
        return f"127.0.0.1:{self.processes[self.compose.coordinator.name].port}"


def _start(service: Service, host: Host) -> Process:
    argv = host.mapper(service).argv(service.argv)
    assert argv[0] == "osmanthus", f"{service.name} must run the osmanthus entrypoint"
    at = argv.index("--listen") + 1
    argv[at] = "127.0.0.1:0"
    return spawn(service.name, osmanthus_command(*argv[1:]), run_dir=host.root / "run")


@pytest.fixture(scope="module")
def running(compose: Compose, initialised: Host) -> Iterator[Running]:
    processes: dict[str, Process] = {}
    try:
        for node in compose.nodes.values():
            processes[node.name] = _start(node, initialised)
        deadline = time.monotonic() + START_TIMEOUT_S
        ports = {name: p.wait_ready(deadline) for name, p in processes.items()}
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
        processes[coordinator.name].wait_ready(time.monotonic() + START_TIMEOUT_S)
        yield Running(compose, initialised, processes)
    finally:
        for process in processes.values():
            process.stop()


def test_every_service_health_check_reports_serving(running: Running) -> None:
    probes = {}
    for service in running.compose.services.values():
        if service.name not in running.processes:
            continue
        test = running.host.mapper(service).argv(service.health_test)
        at = test.index("--target") + 1
        test[at] = f"127.0.0.1:{running.processes[service.name].port}"
        probes[service.name] = osmanthus_command(*test[1:])
    assert len(probes) == len(running.compose.nodes) + 1

    def probe(argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv, capture_output=True, text=True, cwd=REPO, timeout=HEALTH_TIMEOUT_S
        )

    # one probe per core: 27 interpreters starting at once only slow each other down
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        results = dict(zip(probes, pool.map(probe, probes.values()), strict=True))
    for name, done in results.items():
        assert done.returncode == 0, f"{name}: {done.stdout}{done.stderr}"
        assert done.stdout.strip().endswith(": SERVING"), f"{name}: {done.stdout}"


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


def test_every_service_exits_cleanly_on_sigterm(running: Running) -> None:
    coordinator = running.processes[running.compose.coordinator.name]
    # coordinator first, as compose stops dependants before what they depend on
    ordered = [coordinator, *(p for p in running.processes.values() if p is not coordinator)]
    for process in ordered:
        process.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for process in ordered:
        try:
            code = process.popen.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pytest.fail(f"{process.name} still running {STOP_TIMEOUT_S:g} s after SIGTERM")
        log = process.log_path.read_text(errors="replace")[-2000:]
        assert code == 0, f"{process.name} exited with {code}:\n{log}"

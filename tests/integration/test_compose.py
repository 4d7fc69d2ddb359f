"""docker-compose.yml and the Dockerfile: their structure, then every service's command run here.

The coordinator's private keys (TLS key.pem, consent.key) live in a volume that only init and the
coordinator mount; every node mounts the shared `certs` volume, which holds only their public half.
Likewise the sync job's keys and token are in a volume only init and the sync job mount, and the
provincial receiver's key in one only init and the receiver mount.

Docker does not run in the test environment, so the compose file is read with PyYAML and each
service is run as the process its container would run: the init script with its volumes mapped to
temporary directories, every node, the coordinator and the provincial receiver as real `osmanthus`
processes on 127.0.0.1, then the sync job once and as its service, then each service's own
health-check command, then SIGTERM. Container paths are mapped through the service's declared
mounts, so a command that uses a path its service does not mount fails. The files that name
compose hosts (nodes.toml, the sync.toml init writes) get loopback copies naming the same
services' ports here, with every container path in them mapped the same way.
"""

from __future__ import annotations

import csv
import json
import os
import re
import socket
import stat
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from certs import DEFAULT_OPERATOR_NAME, PeerRole, cert_paths
from coordinator.config import NodeEndpoint, load_nodes, render_nodes
from osmanthus.core import signing
from osmanthus.core.catalogue import Catalogue, load_catalogue
from osmanthus.core.durations import parse_duration
from osmanthus.core.lists import holds_resident_id
from osmanthus.core.syncbatch import BatchKind, sender_key_id
from osmanthus.core.tls import TlsFiles
from osmanthus.core.tokens import ReplayCache, TokenIssuer, TokenVerifier
from osmanthus.core.types import DepartmentId, Role, SubjectKind
from osmanthus.core.wire.province import BatchSummary
from osmanthus.demo.launcher import Process, osmanthus_command, spawn, wait_all_ready
from province.senders import load_senders
from sdk import Client, RequesterKeys, verify_consent_receipt
from sdk.batchjob import read_ids
from sdk.keys import load_or_create_keys
from sdk.province import ProvinceClient
from syncjob.config import SyncConfig, load_config

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
PYPROJECT = REPO / "pyproject.toml"
#: the compose init seeds 2000 persons and 300 enterprises; only these scale flags are overridden,
#: so that 27 processes start within seconds on two cores
TEST_SCALE = {"SEED_PERSONS": "200", "SEED_ENTERPRISES": "40"}
#: the image's copy of the default policies (Dockerfile) is this repository's policies/
IMAGE_POLICIES = "/etc/osmanthus/policies"
#: after SIGTERM a process that has used no CPU time for this long is hung, not slow: a busy
#: machine slows a shutdown down but the process keeps running; a hung one waits on something
STOP_IDLE_S = 10.0
#: and none may still run this long after SIGTERM, however busy it keeps (compose would have
#: killed it after its stop_grace_period, 15 s, on a machine with cores to spare)
STOP_LIMIT_S = 120.0
HEALTH_TIMEOUT_S = 60.0
SYNC_TIMEOUT_S = 180.0
COMPLETED = {"condition": "service_completed_successfully"}
HEALTHY = {"condition": "service_healthy"}
#: the purposes init grants the sync job's token
SYNC_PURPOSES = ("credit_rescoring", "statistics")
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

    def mount_of(self, path: str) -> str:
        """The mount point `path` lies under (the longest that matches)."""
        found = [t for t in self.mounts() if path == t or path.startswith(t + "/")]
        assert found, f"{self.name}: {path} is under none of its mounts {sorted(self.mounts())}"
        return max(found, key=len)

    def read_only(self, target: str) -> bool:
        [entry] = [e for e in self.spec["volumes"] if e.split(":")[1] == target]
        return str(entry).endswith(":ro")

    @property
    def networks(self) -> set[str]:
        return set(self.spec.get("networks", []))

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

    def _running(self, *command: str) -> Service:
        found = [s for s in self.services.values() if s.argv[1:3] == list(command)]
        assert len(found) == 1, f"exactly one service must run '{' '.join(command)}'"
        return found[0]

    @property
    def coordinator(self) -> Service:
        return self._running("coordinator", "serve")

    @property
    def province(self) -> Service:
        return self._running("province", "serve")

    @property
    def sync(self) -> Service:
        return self._running("sync", "run")

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


_METRICS_URL = re.compile(r"http://127\.0\.0\.1:(\d+)/metrics")


def _metrics_health_port(service: Service) -> int:
    """The port the sync job's health check fetches its metrics from."""
    test = service.health_test
    assert test[:2] == ["python", "-c"] and len(test) == 3, f"{service.name}: python -c CODE"
    [port] = _METRICS_URL.findall(test[2])
    return int(port)


_ALLOWED = re.compile(r"\ballowed_s = (\d+);")


def _metrics_health_allowance(service: Service) -> timedelta:
    """How long after the last successful run the sync job's health check still passes."""
    [seconds] = _ALLOWED.findall(service.health_test[2])
    return timedelta(seconds=int(seconds))


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


def test_the_image_installs_every_extra_its_services_need(image: Image) -> None:
    # the base distribution is the requester's SDK alone: nodes, the coordinator, the receiver
    # and the sync job need their extras, and one image runs them all
    installs = [line for line in image.lines if "pip install" in line]
    assert installs and all("[all]" in line for line in installs), installs


def test_the_image_holds_every_package_the_project_builds(image: Image) -> None:
    # a package left out of the build context installs a console script that fails on import
    setuptools = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["setuptools"]
    top_level = {
        name.rstrip("*").split(".")[0] for name in setuptools["packages"]["find"]["include"]
    }
    copied: set[str] = set()
    for line in image.lines:
        if line.startswith("COPY ") and "--from" not in line:
            copied.update(source.rstrip("/") for source in line.split()[1:-1])
    admitted = {
        ln.strip()[1:].rstrip("/")
        for ln in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if ln.startswith("!")
    }
    for package in sorted(top_level):
        assert package in copied, f"the Dockerfile does not COPY {package}/"
        assert package in admitted, f".dockerignore does not admit {package}/"


def test_every_service_keeps_the_shared_hardening(compose: Compose) -> None:
    for service in compose.services.values():
        assert service.spec["cap_drop"] == ["ALL"], service.name
        assert "no-new-privileges:true" in service.spec["security_opt"], service.name
        assert service.spec["init"] is True, f"{service.name} needs an init to forward SIGTERM"
        for key in ("user", "privileged", "cap_add"):
            assert key not in service.spec, f"{service.name} sets {key}"


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


def test_the_provincial_receiver_has_its_files_health_check_and_dependencies(
    compose: Compose,
) -> None:
    province = compose.province
    assert province.name == "province"
    config = province.mount_of(province.option("--senders"))
    assert province.mount_of(province.option("--certs-dir")) == config
    assert province.read_only(config)
    state = province.mount_of(province.option("--state-dir"))
    assert not province.read_only(state)
    mounts = province.mounts()
    assert {mounts[config], mounts[state]}.isdisjoint({"certs", "secrets", "coordinator-keys"})
    assert _health_option(province, "--server-name") == "province.node.osmanthus"
    assert _health_option(province, "--target") == f"127.0.0.1:{_listen_port(province)}"
    assert _health_option(province, "--certs-dir") == province.option("--certs-dir")
    assert province.spec["depends_on"] == {compose.init.name: COMPLETED}
    assert "ports" not in province.spec


def test_the_sync_job_has_its_files_schedule_health_check_and_dependencies(
    compose: Compose,
) -> None:
    sync = compose.sync
    assert sync.name == "sync"
    config = sync.mount_of(sync.option("--config"))
    assert sync.read_only(config)
    assert sync.mounts()[config] not in {"certs", "secrets", "coordinator-keys"}
    assert parse_duration(sync.option("--every"), field="--every") == timedelta(hours=1)
    host, port = sync.option("--metrics-listen").rsplit(":", 1)
    assert host == "0.0.0.0", "the metrics must be reachable from the scraper's network"
    assert _metrics_health_port(sync) == int(port)
    # unhealthy once two scheduled runs in a row did not succeed; the first run, which must
    # succeed before the check can pass, gets more than the shared start period
    every = parse_duration(sync.option("--every"), field="--every")
    assert _metrics_health_allowance(sync) == 2 * every
    health = compose.raw["x-health"]
    start = parse_duration(sync.spec["healthcheck"]["start_period"], field="start_period")
    assert start > parse_duration(health["start_period"], field="start_period")
    assert sync.spec["depends_on"] == {
        compose.init.name: COMPLETED,
        compose.coordinator.name: HEALTHY,
        compose.province.name: HEALTHY,
    }
    assert "ports" not in sync.spec


def test_the_sync_job_reaches_the_coordinator_and_the_province_and_only_it_reaches_the_province(
    compose: Compose,
) -> None:
    sync, province, coordinator = compose.sync, compose.province, compose.coordinator
    assert sync.networks & coordinator.networks
    assert sync.networks & province.networks
    for network in province.networks:
        on_it = {s.name for s in compose.services.values() if network in s.networks}
        assert on_it == {province.name, sync.name}, f"{network} carries {sorted(on_it)}"
        assert compose.raw["networks"][network]["internal"] is True
    # a requester talks to the coordinator, never to a department's node directly
    for node in compose.nodes.values():
        assert not sync.networks & node.networks, f"the sync job can reach {node.name}"


# --- running the services on loopback -------------------------------------------------------------


@dataclass(frozen=True)
class Host:
    """Where this test keeps what the containers would keep in volumes and bind mounts."""

    root: Path
    bin_dir: Path
    registry: Path
    sync_config: Path

    def volume(self, name: str) -> Path:
        return self.root / "volumes" / name

    def mounted(self, service: Service) -> PathMapper:
        """Container paths as the service's mounts and the image place them, nothing else."""
        table: dict[str, Path] = {IMAGE_POLICIES: REPO / "policies"}
        for target, source in service.mounts().items():
            if source.startswith(("./", "/")):
                table[target] = REPO / source
            else:
                table[target] = self.volume(source)
        return PathMapper(table)

    def mapper(self, service: Service) -> PathMapper:
        table = dict(self.mounted(service).table)
        # these files name compose services; the loopback copies name the same ports here
        if service.argv[1:3] == ["coordinator", "serve"]:
            table[service.option("--nodes")] = self.registry
        if service.argv[1:3] == ["sync", "run"]:
            table[service.option("--config")] = self.sync_config
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
    # and for the image's python, which has the package installed
    python = bin_dir / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    return Host(
        root=root,
        bin_dir=bin_dir,
        registry=root / "nodes.loopback.toml",
        sync_config=root / "sync.loopback.toml",
    )


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


def _sync_toml(compose: Compose, host: Host) -> str:
    """sync.toml as init wrote it into the sync job's volume."""
    sync = compose.sync
    return Path(host.mounted(sync).map(sync.option("--config"))).read_text(encoding="utf-8")


def _sync_config(
    compose: Compose, host: Host, *, out: Path, ports: Mapping[str, int] | None = None
) -> SyncConfig:
    """The sync.toml init wrote, with every container path in it mapped through the sync
    service's mounts (a path it does not mount fails) and, given `ports`, each target
    `service:port` replaced by that service's loopback port: written to `out` and loaded."""
    text = _sync_toml(compose, host)
    if ports is not None:
        document = tomllib.loads(text)
        for table in ("coordinator", "province"):
            target = document[table]["target"]
            service = target.rsplit(":", 1)[0]
            text = text.replace(f'"{target}"', f'"127.0.0.1:{ports[service]}"')
    mapper = host.mounted(compose.sync)
    text = re.sub(r'"(/[^"]*)"', lambda m: json.dumps(mapper.map(m.group(1))), text)
    out.write_text(text, encoding="utf-8")
    return load_config(out)


def _host_sync_config(compose: Compose, host: Host) -> SyncConfig:
    return _sync_config(compose, host, out=host.root / "sync.host.toml")


def _issuer(host: Host) -> TokenVerifier:
    return TokenVerifier.from_file(
        host.volume("secrets") / "issuer.pub", replay_cache=ReplayCache()
    )


def test_init_makes_certificates_issuer_key_and_data_and_a_second_run_keeps_them(
    compose: Compose, initialised: Host, catalogue: Catalogue
) -> None:
    certs, secrets, data = (initialised.volume(v) for v in ("certs", "secrets", "data"))
    keys = initialised.volume("coordinator-keys")
    for dept in catalogue.departments:
        assert (data / f"{dept.id}.duckdb").is_file()
        cert_paths(certs, role=PeerRole.NODE, name=dept.id)  # raises if any file is missing
    cert_paths(certs, role=PeerRole.OPERATOR, name="operator")
    # the departments' nodes and no other: the provincial receiver's key is not for them
    assert sorted(p.name for p in (certs / "nodes").iterdir()) == sorted(
        d.id for d in catalogue.departments
    )
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
    sync = _host_sync_config(compose, initialised)
    assert sync.enterprises is not None
    kept += [sync.paillier_keys, sync.token_file, sync.signing_key, sync.enterprises]
    kept += [sync.signing_key.with_suffix(".pub"), sync.coordinator.tls.key]
    before = {p: p.read_bytes() for p in kept}
    again = _run_init(compose, initialised)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already exists: kept" in again.stdout
    assert {p: p.read_bytes() for p in kept} == before


def test_init_prepares_the_sync_job_and_the_receiver_each_in_a_volume_of_its_own(
    compose: Compose, initialised: Host
) -> None:
    sync, province = compose.sync, compose.province
    raw = tomllib.loads(_sync_toml(compose, initialised))
    # the targets are the compose services, as nodes.toml names the nodes
    assert raw["coordinator"]["target"] == (
        f"{compose.coordinator.name}:{_listen_port(compose.coordinator)}"
    )
    assert raw["province"]["target"] == f"{province.name}:{_listen_port(province)}"
    assert not sync.read_only(sync.mount_of(raw["state_dir"])), "the job's state must be writable"
    config = _host_sync_config(compose, initialised)  # maps every path through sync's mounts
    environment = compose.init.spec["environment"]
    assert config.requester == environment["SYNC_REQUESTER"]
    assert config.sender == environment["SYNC_SENDER"]
    certified = cert_paths(
        initialised.volume("secrets") / "ca", role=PeerRole.REQUESTER, name=config.requester
    )
    assert config.coordinator.tls.cert.read_bytes() == certified.cert.read_bytes()
    assert config.province.tls == config.coordinator.tls

    # an unattended job's token: role sync_job, its two purposes, bound to its own Paillier key
    claims = _issuer(initialised).verify(config.token_file.read_text(encoding="utf-8").strip())
    assert claims.requester == config.requester
    assert claims.role is Role.SYNC_JOB
    assert claims.purposes == set(SYNC_PURPOSES)
    assert claims.key_fingerprint == load_or_create_keys(config.paillier_keys).fingerprint
    days = int(environment["SYNC_TOKEN_DAYS"])
    assert claims.expires_at - claims.issued_at == timedelta(days=days)

    # grades and statistics over every enterprise of the seeded records, ε small and daily
    with (initialised.volume("data") / "subjects.csv").open(newline="") as f:
        firms = [r["subject_id"] for r in csv.DictReader(f) if r["subject_kind"] == "enterprise"]
    assert config.enterprises is not None
    assert list(read_ids(config.enterprises)) == firms
    assert config.lists_enabled
    assert config.grades_every == timedelta(days=1)
    [cohort] = config.statistics
    assert cohort.subject_kind is SubjectKind.ENTERPRISE
    assert cohort.subjects == config.enterprises
    assert 0 < cohort.epsilon <= Decimal("0.01")
    assert cohort.every == timedelta(days=1)

    # the receiver knows the city by the job's certificate and public key, and serves with the
    # node certificate `province` from its own volume
    senders = load_senders(Path(initialised.mounted(province).map(province.option("--senders"))))
    [sender] = senders.senders
    assert sender.id == config.sender
    assert sender.certificates == {config.requester}
    public = signing.load_private_key(config.signing_key).public_key()
    assert list(sender.keys) == [sender_key_id(public)]
    certs_dir = Path(initialised.mounted(province).map(province.option("--certs-dir")))
    cert_paths(certs_dir, role=PeerRole.NODE, name="province")
    # the operator certificate its health check probes with
    cert_paths(certs_dir, role=PeerRole.OPERATOR, name=DEFAULT_OPERATOR_NAME)

    # both volumes and every private file in them owner-only
    for service, flag in ((sync, "--config"), (province, "--senders")):
        volume = initialised.volume(service.mounts()[service.mount_of(service.option(flag))])
        assert stat.S_IMODE(volume.stat().st_mode) == 0o700, volume
    for private in (
        config.token_file,
        config.paillier_keys,
        config.signing_key,
        config.coordinator.tls.key,
        cert_paths(certs_dir, role=PeerRole.NODE, name="province").key,
    ):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600, private


def _plant_token(host: Host, config: SyncConfig, *, issued_ago: timedelta, days: int) -> bytes:
    """A token as init would have issued it `issued_ago`, written as the job's token now."""
    then = datetime.now(UTC) - issued_ago
    token = TokenIssuer.from_file(host.volume("secrets") / "issuer.key", clock=lambda: then).issue(
        requester=config.requester,
        role=Role.SYNC_JOB,
        purposes=SYNC_PURPOSES,
        key_fingerprint=load_or_create_keys(config.paillier_keys).fingerprint,
        ttl=timedelta(days=days),
    )
    config.token_file.write_text(token + "\n", encoding="ascii")
    return config.token_file.read_bytes()


def _check_fresh_token(host: Host, config: SyncConfig, *, days: int) -> None:
    token = config.token_file
    claims = _issuer(host).verify(token.read_text(encoding="utf-8").strip())
    assert datetime.now(UTC) - claims.issued_at < timedelta(minutes=1)
    assert claims.expires_at - claims.issued_at == timedelta(days=days)
    assert claims.key_fingerprint == load_or_create_keys(config.paillier_keys).fingerprint
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert not token.with_name(token.name + ".tmp").exists()


def test_init_renews_the_sync_token_two_thirds_through_the_life_the_token_itself_states(
    compose: Compose, initialised: Host
) -> None:
    config = _host_sync_config(compose, initialised)
    key = config.paillier_keys.read_bytes()
    # a day's lifetime: 'find -mtime' counts whole days and would keep this token to its expiry
    two_thirds = timedelta(days=1) * 2 / 3

    young = _plant_token(initialised, config, issued_ago=two_thirds - timedelta(hours=1), days=1)
    # the file's time says nothing: a restored volume may give any token any
    month_ago = time.time() - timedelta(days=30).total_seconds()
    os.utime(config.token_file, (month_ago, month_ago))
    kept = _run_init(compose, initialised, SYNC_TOKEN_DAYS="1")
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert config.token_file.read_bytes() == young
    assert f"token {config.token_file} kept" in kept.stdout

    old = _plant_token(initialised, config, issued_ago=two_thirds + timedelta(hours=1), days=1)
    renewed = _run_init(compose, initialised, SYNC_TOKEN_DAYS="1")
    assert renewed.returncode == 0, renewed.stdout + renewed.stderr
    assert config.token_file.read_bytes() != old
    assert "two thirds through its life" in renewed.stdout
    _check_fresh_token(initialised, config, days=1)
    assert config.paillier_keys.read_bytes() == key

    # a young token of another lifetime than the setting's is renewed with the setting's
    default = _run_init(compose, initialised)
    assert default.returncode == 0, default.stdout + default.stderr
    days = int(compose.init.spec["environment"]["SYNC_TOKEN_DAYS"])
    _check_fresh_token(initialised, config, days=days)


def test_init_renews_a_young_sync_token_the_current_issuer_key_does_not_verify(
    compose: Compose, initialised: Host
) -> None:
    # the secrets volume made anew (a new issuer key) while sync-config, and its token, survive
    config = _host_sync_config(compose, initialised)
    before = config.token_file.read_bytes()
    for name in ("issuer.key", "issuer.pub"):
        (initialised.volume("secrets") / name).unlink()
    done = _run_init(compose, initialised)
    assert done.returncode == 0, done.stdout + done.stderr
    assert config.token_file.read_bytes() != before
    assert "does not verify" in done.stdout
    days = int(compose.init.spec["environment"]["SYNC_TOKEN_DAYS"])
    _check_fresh_token(initialised, config, days=days)  # against the new issuer.pub
    issued = initialised.volume("secrets") / "issuer.pub"
    assert (initialised.volume("certs") / "issuer.pub").read_bytes() == issued.read_bytes()


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("SYNC_TOKEN_DAYS", "08"),  # sh arithmetic would read it as octal, and fail
        ("SYNC_TOKEN_DAYS", "0"),
        ("SYNC_TOKEN_DAYS", "366"),
        ("SYNC_TOKEN_DAYS", "99999999999999999999"),
        ("SYNC_TOKEN_DAYS", "1d"),
        ("SYNC_SENDER", 'suzhou"\nsigning_key = "/tmp/k'),
        ("SYNC_SENDER", "../suzhou"),
        ("SYNC_SENDER", "Suzhou"),
        ("SYNC_SENDER", "s" * 64),
        ("SYNC_REQUESTER", "sync 1"),
    ],
)
def test_init_refuses_a_bad_sync_setting_before_it_writes_anything(
    compose: Compose, tmp_path: Path, setting: str, value: str
) -> None:
    host = _host(tmp_path)
    done = _run_init(compose, host, **{setting: value})
    assert done.returncode == 3, done.stdout + done.stderr
    assert f"init: error: {setting}={value}:" in done.stderr
    assert not (host.root / "volumes").exists(), "init wrote before it checked its settings"


def test_each_private_key_is_only_in_volumes_that_init_and_its_own_service_mount(
    compose: Compose, initialised: Host
) -> None:
    ca = initialised.volume("secrets") / "ca"
    init, coordinator = compose.init.name, compose.coordinator.name
    sync, province = compose.sync, compose.province
    config = _host_sync_config(compose, initialised)
    province_certs = Path(initialised.mounted(province).map(province.option("--certs-dir")))
    owners: dict[str, tuple[Path, set[str]]] = {
        "the CA key": (ca / "ca.key", {init}),
        "the token issuer key": (initialised.volume("secrets") / "issuer.key", {init}),
        "the coordinator's TLS key": (ca / "coordinator" / "key.pem", {init, coordinator}),
        "the consent-receipt key": (ca / "coordinator" / "consent.key", {init, coordinator}),
        "the sync job's TLS key": (config.coordinator.tls.key, {init, sync.name}),
        "the sync job's Paillier key": (config.paillier_keys, {init, sync.name}),
        "the sync job's token": (config.token_file, {init, sync.name}),
        "the sync signing key": (config.signing_key, {init, sync.name}),
        "the receiver's TLS key": (
            cert_paths(province_certs, role=PeerRole.NODE, name="province").key,
            {init, province.name},
        ),
    }
    for requester in compose.init.spec["environment"]["REQUESTERS"].split():
        owners[f"{requester}'s TLS key"] = (ca / "requesters" / requester / "key.pem", {init})
    # by content, so that a renamed or relocated copy is found too
    secrets = {path.read_bytes(): label for label, (path, _) in owners.items()}
    holding: dict[str, set[str]] = {label: set() for label in owners}
    for volume in (initialised.root / "volumes").iterdir():
        for path in volume.rglob("*"):
            # keys are small; the department databases need not be read
            if path.is_file() and path.stat().st_size < 64 * 1024:
                label = secrets.get(path.read_bytes())
                if label is not None:
                    holding[label].add(volume.name)
    for label, (_, allowed) in owners.items():
        users = {
            s.name for s in compose.services.values() if holding[label] & set(s.mounts().values())
        }
        assert users == allowed, f"{label} is in {sorted(holding[label])}, mounted by {users}"


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


def test_init_removes_private_keys_an_earlier_version_put_in_the_shared_volume(
    compose: Compose, initialised: Host
) -> None:
    shared = initialised.volume("certs") / "coordinator"
    made = _coordinator_files(initialised)
    for name in _COORDINATOR_PRIVATE:
        (shared / name).write_bytes(made[name])
    # a receiver certificate issued by hand into the CA directory, which init copied whole
    receiver = initialised.volume("certs") / "nodes" / "province"
    receiver.mkdir()
    for name in ("cert.pem", "key.pem"):
        source = initialised.volume("secrets") / "ca" / "nodes" / "province" / name
        (receiver / name).write_bytes(source.read_bytes())
    done = _run_init(compose, initialised)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in shared.iterdir()) == ["cert.pem", "consent.pub"]
    assert not receiver.exists()


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
        return self.target(self.compose.coordinator.name)

    def target(self, service: str) -> str:
        return f"127.0.0.1:{self.processes[service].port}"


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
        # the receiver needs nothing else running; the sync job starts in its own fixtures
        processes[compose.province.name] = _start(compose.province, initialised)
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
        yield Running(compose, initialised, processes)
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

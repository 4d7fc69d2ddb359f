"""docker-compose.replicas.yml over docker-compose.yml, read as Docker merges them: PostgreSQL and
a second coordinator replica whose commands parse, which share one state URL, and which each
keep a transparency log of their own (origin, key, state volume, keys volume); init run here
makes the replica's key, lists it where the witness and the sync job read the roster, and puts
no private key where a service that should not hold it could read it."""

from __future__ import annotations

import argparse
import csv
import os
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from certs import PeerRole, cert_paths
from coordinator.config import NodeEndpoint, load_nodes, render_nodes
from osmanthus.cli import build_parser
from osmanthus.core.catalogue import Catalogue, load_catalogue
from osmanthus.core.logkeyfiles import read_signer
from osmanthus.core.logkeys import LogRoster, coordinator_log_origin
from osmanthus.core.signednote import NoteSigner
from osmanthus.core.tls import TlsFiles
from osmanthus.core.tokens import TokenIssuer
from osmanthus.core.types import DepartmentId, Role, SubjectKind
from osmanthus.demo.launcher import Process, osmanthus_command, wait_all_ready
from sdk import Client, RequesterKeys
from tests.integration.compose.conftest import (
    REPLICAS_ENV,
    REPO,
    Compose,
    Host,
    Image,
    Service,
    _host,
    _listen_port,
    _run_init,
    _sync_config,
)
from tests.integration.compose.test_compose_services import (
    _ALARMS,
    _COSIGNED,
    SYNC_TIMEOUT_S,
    _free_port,
    _metrics,
    _start,
)
from tests.postgres import Postgres, postgres  # noqa: F401 - the session fixture

REPLICA = "coordinator-2"
HEALTHY = {"condition": "service_healthy"}
COMPLETED = {"condition": "service_completed_successfully"}
#: what init puts in a replica's keys volume: the coordinator's shared identity and its own log
#: key pair, not the witness key
REPLICA_FILES = ("cert.pem", "consent.key", "consent.pub", "key.pem", "log.key", "log.pub")


def _parsed(service: Service, argv: list[str]) -> argparse.Namespace:
    assert argv[0] == "osmanthus", f"{service.name}: runs the osmanthus entrypoint"
    try:
        return build_parser().parse_args(argv[1:])
    except SystemExit as exc:
        pytest.fail(f"{service.name}: the CLI refuses {argv[1:]} (exit {exc.code})")


@pytest.fixture(autouse=True)
def _no_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    # the parser reads OSMANTHUS_* settings: none of the test environment's may fill a gap
    for name in [n for n in os.environ if n.startswith("OSMANTHUS_")]:
        monkeypatch.delenv(name)


def test_every_command_of_the_merged_files_parses_with_the_cli_parser(
    replicas_compose: Compose,
) -> None:
    for service in replicas_compose.services.values():
        if service is replicas_compose.init or service.name == "postgres":
            continue
        _parsed(service, service.argv)
        test = service.spec["healthcheck"]["test"]
        if test[:2] == ["CMD", "osmanthus"]:
            _parsed(service, service.health_test)
    assert [s.name for s in replicas_compose.coordinators] == ["coordinator", REPLICA]


def test_both_coordinators_share_one_state_url_at_the_postgres_service(
    replicas_compose: Compose, compose: Compose, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = replicas_compose.services["postgres"]
    urls = {c.spec["environment"]["OSMANTHUS_STATE_URL"] for c in replicas_compose.coordinators}
    [url] = urls
    parts = urlsplit(url)
    env = database.spec["environment"]
    assert parts.scheme == "postgresql" and parts.hostname == database.name
    assert parts.port == 5432 and parts.path == "/" + env["POSTGRES_DB"]
    assert parts.username == env["POSTGRES_USER"]
    # the one password the operator sets in .env, given to the server and both coordinators
    assert parts.password == env["POSTGRES_PASSWORD"] == REPLICAS_ENV["OSMANTHUS_PG_PASSWORD"]
    for coordinator in replicas_compose.coordinators:
        # the CLI reads the variable as --state-url
        monkeypatch.setenv("OSMANTHUS_STATE_URL", url)
        assert _parsed(coordinator, coordinator.argv).state_url == url
        monkeypatch.delenv("OSMANTHUS_STATE_URL")
        assert coordinator.networks & database.networks, f"{coordinator.name} reaches postgres"
        assert coordinator.spec["depends_on"]["postgres"] == HEALTHY
    # its data in a volume of its own that nothing else mounts
    [data] = database.mounts().values()
    assert [s.name for s in replicas_compose.services.values() if data in s.mounts().values()] == [
        "postgres"
    ]
    # without the override: one coordinator on embedded files, with the log it always had
    [alone] = compose.coordinators
    assert "OSMANTHUS_STATE_URL" not in alone.spec.get("environment", {})
    assert "--replica" not in alone.argv


def test_the_second_coordinator_is_a_replica_with_its_own_log_state_and_keys(
    replicas_compose: Compose, image: Image
) -> None:
    coordinator, replica = replicas_compose.coordinator, replicas_compose.replicas[REPLICA]
    # the replica's name is its service name: the sync job reaches its log there
    assert replica.name == REPLICA
    args = _parsed(replica, replica.argv)
    assert args.replica == REPLICA
    # the same federation, certificate and policy as the coordinator
    for flag in ("--nodes", "--ca", "--issuer-public-key", "--policy", "--crl", "--logs",
                 "--token-deny-list", "--listen"):  # fmt: skip
        assert replica.option(flag) == coordinator.option(flag), flag
    assert replica.networks == coordinator.networks
    # its log key and its TLS and consent keys from its own keys volume, mounted read-only
    mounts = replica.mounts()
    keys = replica.mount_of(replica.option("--key"))
    for flag in ("--log-key", "--consent-key", "--cert"):
        assert replica.mount_of(replica.option(flag)) == keys, flag
    assert replica.read_only(keys)
    own_keys = mounts[keys]
    assert own_keys != coordinator.mounts()[coordinator.mount_of(coordinator.option("--key"))]
    users = {s.name for s in replicas_compose.services.values() if own_keys in s.mounts().values()}
    assert users == {replicas_compose.init.name, REPLICA}
    # no witness key: only the coordinator cosigns the nodes' logs
    assert "--witness-key" not in replica.argv and "--certs-dir" not in replica.argv
    assert args.witness_key is None
    # init writes the replica's keys into that volume
    init = replicas_compose.init
    environment = init.spec["environment"]
    assert REPLICA in environment["COORDINATOR_REPLICAS"].split()
    assert init.mounts()[f"{environment['REPLICA_KEYS_DIR']}/{REPLICA}"] == own_keys
    # its own audit log, checkpoints and witness state: a state volume only it mounts
    state = mounts[replica.mount_of(replica.option("--state-dir"))]
    assert state != coordinator.mounts()[coordinator.mount_of(coordinator.option("--state-dir"))]
    users = {s.name for s in replicas_compose.services.values() if state in s.mounts().values()}
    assert users == {REPLICA}
    # a port of its own on the host, its listen port in the container
    [published] = replica.spec["ports"]
    [first] = coordinator.spec["ports"]
    assert published.rsplit(":", 1)[1] == str(_listen_port(replica))
    assert published.split(":")[0] != first.split(":")[0]
    # never inherited through extends, so its own: what the first coordinator waits for and the
    # database; never the first coordinator, or the replica could not start while it is down
    assert replica.spec["depends_on"] == {**coordinator.spec["depends_on"], "postgres": HEALTHY}
    assert "coordinator" not in replica.spec["depends_on"]
    # every volume declared, and made by the image for its user where a service mounts it
    declared = set(replicas_compose.raw["volumes"])
    owned = [ln for ln in image.lines if ln.startswith("RUN ") and "chown osmanthus:" in ln]
    for service in replicas_compose.services.values():
        for target, source in service.mounts().items():
            if source.startswith(("./", "/")):
                continue
            assert source in declared, f"{service.name} mounts undeclared volume {source}"
            if service.name != "postgres":
                assert any(f" {target} " in f"{ln} " for ln in owned), (service.name, target)


# --- init, run here -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def replicas_initialised(
    replicas_compose: Compose, tmp_path_factory: pytest.TempPathFactory
) -> Host:
    host = _host(tmp_path_factory.mktemp("compose-replicas"))
    done = _run_init(replicas_compose, host)
    assert done.returncode == 0, done.stdout + done.stderr
    return host


def _replica_keys(compose: Compose, host: Host) -> Path:
    replica = compose.replicas[REPLICA]
    return Path(host.mounted(replica).map(replica.option("--log-key"))).parent


def test_init_makes_the_replica_its_own_log_key_listed_wherever_the_roster_is_read(
    replicas_compose: Compose, replicas_initialised: Host
) -> None:
    compose, host = replicas_compose, replicas_initialised
    replica, coordinator = compose.replicas[REPLICA], compose.coordinator
    keys = _replica_keys(compose, host)
    assert sorted(p.name for p in keys.iterdir()) == sorted(REPLICA_FILES)
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    for name in ("key.pem", "consent.key", "log.key"):
        assert stat.S_IMODE((keys / name).stat().st_mode) == 0o600, name
    # the key the replica's command reads, named after its own origin
    origin = coordinator_log_origin(REPLICA)
    own = read_signer(
        NoteSigner,
        Path(host.mounted(replica).map(replica.option("--log-key"))),
        expected_name=origin,
        field="log_key",
    )
    first = read_signer(
        NoteSigner,
        Path(host.mounted(coordinator).map(coordinator.option("--log-key"))),
        expected_name=coordinator_log_origin(None),
        field="log_key",
    )
    assert own.public_key.public_bytes_raw() != first.public_key.public_bytes_raw()
    # the shared identity is the coordinator's: one certificate, one consent key
    first_keys = Path(host.mounted(coordinator).map(coordinator.option("--key"))).parent
    for name in ("cert.pem", "key.pem", "consent.key", "consent.pub"):
        assert (keys / name).read_bytes() == (first_keys / name).read_bytes(), name
    # every roster a service reads lists both coordinators' logs, each with its own key: the
    # replicas' (--logs), the provincial witness's and the sync job's
    sync = _sync_config(compose, host, out=host.root / "sync.replicas.toml")
    assert sync.logs is not None
    province = compose.province
    copies = [
        Path(host.mounted(replica).map(replica.option("--logs"))),
        Path(host.mounted(coordinator).map(coordinator.option("--logs"))),
        Path(host.mounted(province).map(province.option("--logs"))),
        sync.logs,
    ]
    for path in copies:
        roster = LogRoster.load(path)
        assert roster.log_verifier(origin).verifier_key == own.verifier_key, path
        assert roster.log_verifier(coordinator_log_origin(None)).verifier_key == (
            first.verifier_key
        ), path
        assert roster.origins_with_key(roster.log_verifier(origin)) == [origin]
    # the sync job reads the replica's log at the replica's service and port
    assert sync.replicas == {REPLICA: f"{REPLICA}:{_listen_port(replica)}"}
    # a second run keeps the key and the roster as they are
    before = {p: p.read_bytes() for p in [*keys.iterdir(), *copies]}
    again = _run_init(compose, host)
    assert again.returncode == 0, again.stdout + again.stderr
    assert {p: p.read_bytes() for p in before} == before


def test_each_coordinators_log_key_is_only_in_volumes_that_init_and_its_own_service_mount(
    replicas_compose: Compose, replicas_initialised: Host
) -> None:
    compose, host = replicas_compose, replicas_initialised
    ca = host.volume("secrets") / "ca" / "coordinator"
    init, first = compose.init.name, compose.coordinator.name
    owners = {
        "the coordinator's log key": (ca / "log.key", {init, first}),
        "the coordinator's witness key": (ca / "witness.key", {init, first}),
        "the replica's log key": (ca / "replicas" / REPLICA / "log.key", {init, REPLICA}),
        # one party under one certificate: both replicas serve and sign receipts with these
        "the coordinators' TLS key": (ca / "key.pem", {init, first, REPLICA}),
        "the consent-receipt key": (ca / "consent.key", {init, first, REPLICA}),
    }
    secrets = {path.read_bytes(): label for label, (path, _) in owners.items()}
    holding: dict[str, set[str]] = {label: set() for label in owners}
    for volume in (host.root / "volumes").iterdir():
        for path in volume.rglob("*"):
            if path.is_file() and path.stat().st_size < 64 * 1024:
                label = secrets.get(path.read_bytes())
                if label is not None:
                    holding[label].add(volume.name)
    for label, (_, allowed) in owners.items():
        users = {
            s.name for s in compose.services.values() if holding[label] & set(s.mounts().values())
        }
        assert users == allowed, f"{label} is in {sorted(holding[label])}, mounted by {users}"


# --- both coordinators running, on a real PostgreSQL ----------------------------------------------


@dataclass
class Replicas:
    compose: Compose
    host: Host
    processes: dict[str, Process]
    province_metrics_port: int

    def target(self, service: str) -> str:
        return f"127.0.0.1:{self.processes[service].port}"


@pytest.fixture(scope="module")
def running_replicas(
    replicas_compose: Compose,
    replicas_initialised: Host,
    postgres: Postgres,  # noqa: F811
) -> Iterator[Replicas]:
    """Every node, the receiver and both coordinators as their containers would run them; the
    coordinators' OSMANTHUS_STATE_URL names the compose's postgres service, here a real
    PostgreSQL started from the installed binaries."""
    compose, host = replicas_compose, replicas_initialised
    state_url = postgres.new_database()
    processes: dict[str, Process] = {}
    metrics_port = _free_port()
    try:
        for node in compose.nodes.values():
            processes[node.name] = _start(node, host)
        processes[compose.province.name] = _start(compose.province, host, metrics_port=metrics_port)
        ports = wait_all_ready(processes.values())
        registry = REPO / compose.coordinator.mounts()[compose.coordinator.option("--nodes")]
        loopback = [
            NodeEndpoint(
                DepartmentId(e.department), f"127.0.0.1:{ports[e.address.rsplit(':', 1)[0]]}"
            )
            for e in load_nodes(registry, catalogue=load_catalogue())
        ]
        host.registry.write_text(render_nodes(loopback))
        # in the order compose starts them: coordinator-2 waits for the coordinator's health
        for coordinator in compose.coordinators:
            assert "OSMANTHUS_STATE_URL" in coordinator.spec["environment"]
            with pytest.MonkeyPatch.context() as env:
                env.setenv("OSMANTHUS_STATE_URL", state_url)
                processes[coordinator.name] = _start(coordinator, host)
            processes[coordinator.name].wait_ready()
        yield Replicas(compose, host, processes, metrics_port)
    finally:
        for process in processes.values():
            process.stop()


@pytest.mark.slow
def test_both_coordinators_answer_and_the_witness_cosigns_each_ones_own_log(
    running_replicas: Replicas, requester_keys: dict[str, RequesterKeys], catalogue: Catalogue
) -> None:
    compose, host = running_replicas.compose, running_replicas.host
    # a query through each coordinator, answered by every enterprise department
    secrets = host.volume("secrets")
    requester = compose.init.spec["environment"]["REQUESTERS"].split()[0]
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
    with (host.volume("data") / "subjects.csv").open() as f:
        firm = next(r["subject_id"] for r in csv.DictReader(f) if r["subject_kind"] == "enterprise")
    expected = {d.id for d in catalogue.departments_for(SubjectKind.ENTERPRISE)}
    for coordinator in compose.coordinators:
        target = running_replicas.target(coordinator.name)
        with Client(target, tls=tls, token=token, keys=keys) as client:
            report = client.enterprise_score(firm, purpose="credit_report")
        assert not report.partial, coordinator.name
        assert {s.department for s in report.answered} == expected, coordinator.name
    # the sync job as its service runs it, once: every log's checkpoint to the provincial
    # witness, each coordinator's read at that coordinator
    ports = {name: p.port for name, p in running_replicas.processes.items()}
    config = _sync_config(compose, host, out=host.sync_config, ports=ports)
    assert config.replicas == {REPLICA: running_replicas.target(REPLICA)}
    sync = compose.sync
    argv = host.mapper(sync).argv(sync.argv)
    for flag in ("--every", "--metrics-listen"):
        at = argv.index(flag)
        del argv[at : at + 2]
    done = subprocess.run(
        osmanthus_command(*argv[1:], "--once"),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=SYNC_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert config.logs is not None
    origins = set(LogRoster.load(config.logs).origins())
    assert {coordinator_log_origin(None), coordinator_log_origin(REPLICA)} <= origins
    metrics = _metrics(running_replicas.province_metrics_port)
    cosigned = {origin for origin, n in _COSIGNED.findall(metrics) if float(n) >= 1}
    # both coordinators' logs, apart, and no alarm: before, the second replica's log under the
    # coordinator's origin was a fork to this witness
    assert cosigned == origins, metrics
    assert all(float(n) == 0 for n in _ALARMS.findall(metrics)), metrics

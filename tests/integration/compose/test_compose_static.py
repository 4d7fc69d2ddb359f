"""docker-compose.yml and the Dockerfile as written: one non-root image, every service's command,
mounts, health check and dependencies, and which services may reach which."""

from __future__ import annotations

import argparse
import os
import tomllib
from datetime import timedelta

import pytest

from coordinator.config import load_nodes
from osmanthus.cli import build_parser
from osmanthus.core.catalogue import Catalogue
from osmanthus.core.durations import parse_duration
from tests.integration.compose.conftest import (
    _METRICS_URL,
    IMAGE_POLICIES,
    REPO,
    Compose,
    Image,
    Service,
    _listen_port,
    _metrics_health_allowance,
)

DOCKERIGNORE = REPO / ".dockerignore"
PYPROJECT = REPO / "pyproject.toml"
COMPLETED = {"condition": "service_completed_successfully"}
HEALTHY = {"condition": "service_healthy"}


def _health_option(service: Service, flag: str) -> str:
    test = service.health_test
    assert test[:2] == ["osmanthus", "health"], f"{service.name}: health check runs the CLI"
    assert test.count(flag) == 1, f"{service.name}: health check needs {flag} once"
    return test[test.index(flag) + 1]


def _metrics_health_port(service: Service) -> int:
    """The port the sync job's health check fetches its metrics from."""
    test = service.health_test
    assert test[:2] == ["python", "-c"] and len(test) == 3, f"{service.name}: python -c CODE"
    [port] = _METRICS_URL.findall(test[2])
    return int(port)


def _parsed(service: Service, argv: list[str]) -> argparse.Namespace:
    """`argv` (after the `osmanthus` entrypoint) as the CLI itself parses it: an unknown flag, a
    misspelt one or a missing required one fails here as it would fail the container."""
    assert argv[0] == "osmanthus", f"{service.name}: runs the osmanthus entrypoint"
    try:
        return build_parser().parse_args(argv[1:])
    except SystemExit as exc:  # argparse's usage error
        pytest.fail(f"{service.name}: the CLI refuses {argv[1:]} (exit {exc.code})")


def test_every_server_command_and_health_check_parses_with_the_cli_parser(
    compose: Compose, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the parser reads OSMANTHUS_* settings: none of the test environment's may fill a gap
    for name in [n for n in os.environ if n.startswith("OSMANTHUS_")]:
        monkeypatch.delenv(name)
    for service in compose.services.values():
        if service is compose.init:
            continue
        _parsed(service, service.argv)
        if service.health_test[0] == "osmanthus":
            _parsed(service, service.health_test)


def test_every_log_signs_its_checkpoints_and_every_witness_has_its_key_and_roster(
    compose: Compose,
) -> None:
    # nodes: each its own log key beside its TLS key in the shared certs volume (the known
    # caveat), and the roster that decides whose cosignatures it keeps
    for dept, node in compose.nodes.items():
        args = _parsed(node, node.argv)
        assert str(args.log_key) == f"/certs/nodes/{dept}/log.key"
        assert str(args.logs) == "/certs/logs.toml"
        assert node.mount_of(str(args.log_key)) == node.mount_of(str(args.logs)) == "/certs"
    # the coordinator: log and witness keys from the volume only it mounts, the roster public
    coordinator = compose.coordinator
    args = _parsed(coordinator, coordinator.argv)
    keys = coordinator.mount_of(coordinator.option("--key"))
    assert coordinator.mount_of(str(args.log_key)) == keys
    assert coordinator.mount_of(str(args.witness_key)) == keys
    assert coordinator.mounts()[coordinator.mount_of(str(args.logs))] == "certs"
    assert args.witness_interval > 0, "the coordinator must witness the nodes' logs"
    # the receiver: its witness key and roster in its own volume, metrics on its network
    province = compose.province
    args = _parsed(province, province.argv)
    config = province.mount_of(province.option("--senders"))
    assert province.mount_of(str(args.witness_key)) == config
    assert province.mount_of(str(args.logs)) == config
    host, port = args.metrics_listen.rsplit(":", 1)
    assert host == "0.0.0.0", "the witness's metrics must be reachable from its network"
    assert int(port) != _listen_port(province)


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
        # a node writes its database (live imports) and only reads its certificates
        assert "data:/data" in node.spec["volumes"] and not node.read_only("/data")
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
    for flag in ("--key", "--consent-key", "--log-key", "--witness-key"):
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

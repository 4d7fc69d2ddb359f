"""The deployment tests' shared ground: docker-compose.yml and the Dockerfile read as Docker would
read them, and compose's init run here with its volumes mapped to temporary directories.

Docker does not run in the test environment, so the compose file is read with PyYAML and each
service is run as the process its container would run. Container paths are mapped through the
service's declared mounts, so a command that uses a path its service does not mount fails. The
files that name compose hosts (nodes.toml, the sync.toml init writes) get loopback copies naming
the same services' ports here, with every container path in them mapped the same way.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from osmanthus.core.catalogue import Catalogue, load_catalogue
from syncjob.config import SyncConfig, load_config

REPO = Path(__file__).resolve().parents[3]
COMPOSE_FILE = REPO / "docker-compose.yml"
#: the override that adds PostgreSQL and a second coordinator replica
REPLICAS_FILE = REPO / "docker-compose.replicas.yml"
#: the settings the override requires (`${VAR:?...}`), as an operator's .env gives them
REPLICAS_ENV = {"OSMANTHUS_PG_PASSWORD": "compose-test-password"}
DOCKERFILE = REPO / "Dockerfile"
#: the compose init seeds 2000 persons and 300 enterprises; only these scale flags are overridden,
#: so that 27 processes start within seconds on two cores
TEST_SCALE = {"SEED_PERSONS": "200", "SEED_ENTERPRISES": "40"}
#: the image's copy of the default policies (Dockerfile) is this repository's policies/
IMAGE_POLICIES = "/etc/osmanthus/policies"
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


# --- reading the compose file and the Dockerfile --------------------------------------------------


def _interpolate(value: Any, env: Mapping[str, str] | None = None) -> Any:
    """Compose variable substitution with only `env` set (default: nothing), so the file's
    defaults apply; a required variable (`${VAR:?message}`) that `env` lacks fails."""
    given = env or {}

    def substitute(m: re.Match[str]) -> str:
        name, operator, argument = m.group(1), m.group(2) or "", m.group(3) or ""
        value = given.get(name)
        if value is not None and (value or not operator.startswith(":")):
            return value
        assert not operator.endswith("?"), f"${{{name}}} is required: {argument}"
        return argument if operator.endswith("-") else ""

    if isinstance(value, str):
        return _VARIABLE.sub(substitute, value.replace("$$", "\0")).replace("\0", "$")
    if isinstance(value, list):
        return [_interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: _interpolate(v, env) for k, v in value.items()}
    return value


class _Override(list[Any]):
    """A sequence tagged `!override` in an override file: it replaces, never merges."""


class _Reset:
    """A value tagged `!reset`: the merged service has no such attribute."""


class _ComposeLoader(yaml.SafeLoader):
    """PyYAML's safe loader with Compose's merge tags (`!override`, `!reset`)."""


def _override(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.SequenceNode):
        return _Override(loader.construct_sequence(node, deep=True))
    assert isinstance(node, yaml.MappingNode), "!override on a sequence or a mapping"
    return {"\0override": loader.construct_mapping(node, deep=True)}


_ComposeLoader.add_constructor("!override", _override)
_ComposeLoader.add_constructor("!reset", lambda loader, node: _Reset())


def _load_yaml(path: Path) -> dict[str, Any]:
    loaded = yaml.load(path.read_text(encoding="utf-8"), Loader=_ComposeLoader)
    assert isinstance(loaded, dict), f"{path.name}: a mapping at the top"
    return loaded


#: attributes whose sequences merge by a key (Compose's merge rules), not by appending
_MERGED_BY = {"volumes": lambda v: str(v).split(":")[1], "ports": lambda v: str(v)}


def _merge(base: Any, override: Any, *, key: str = "") -> Any:
    """`override` merged over `base` as Compose merges files and `extends`: mappings by key,
    `command` and `entrypoint` replaced, `volumes` by container path, other sequences appended
    without repeats; `!override` replaces, `!reset` removes."""
    if base is None:
        # nothing to merge with (yet): the tags stay for an `extends` still to come
        return override
    if isinstance(override, _Override):
        return list(override)
    if isinstance(override, dict) and set(override) == {"\0override"}:
        return override["\0override"]
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for name, value in override.items():
            if isinstance(value, _Reset):
                merged.pop(name, None)
            else:
                merged[name] = _merge(merged.get(name), value, key=name)
        return merged
    if (
        isinstance(base, list)
        and isinstance(override, list)
        and key not in ("command", "entrypoint")
    ):
        by = _MERGED_BY.get(key)
        if by is None:
            return [*base, *[v for v in override if v not in base]]
        replaced = {by(v) for v in override}
        return [*[v for v in base if by(v) not in replaced], *override]
    return override


def _plain(value: Any) -> Any:
    """`value` with the merge tags that nothing was merged with applied on their own."""
    if isinstance(value, _Override):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {"\0override"}:
            return _plain(value["\0override"])
        return {k: _plain(v) for k, v in value.items() if not isinstance(v, _Reset)}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _resolve_extends(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A service with its `extends` applied (from another file only, as ours are). Compose
    never shares `depends_on` or `volumes_from` through `extends`."""
    extends = spec.get("extends")
    if extends is None:
        return spec
    assert set(extends) == {"file", "service"}, f"{name}: extends names a file and a service"
    source = _load_yaml(REPO / extends["file"])
    base = _plain(source["services"][extends["service"]])
    assert "extends" not in base, f"{name}: one level of extends"
    for unshared in ("depends_on", "volumes_from"):
        base.pop(unshared, None)
    # the anchors' merge keys (<<) are already resolved by the loader
    local = {k: v for k, v in spec.items() if k != "extends"}
    return dict(_merge(base, local))


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
        found = self.running_all(*command)
        assert len(found) == 1, f"exactly one service must run '{' '.join(command)}'"
        return found[0]

    def running_all(self, *command: str) -> list[Service]:
        """Every service that runs `osmanthus COMMAND ...`, by service name."""
        return sorted(
            (s for s in self.services.values() if s.argv[1:3] == list(command)),
            key=lambda s: s.name,
        )

    @property
    def coordinator(self) -> Service:
        """The coordinator without a replica name (exactly one, with replicas or without)."""
        found = [s for s in self.coordinators if "--replica" not in s.argv]
        assert len(found) == 1, "exactly one coordinator service must run without --replica"
        return found[0]

    @property
    def coordinators(self) -> list[Service]:
        """Every coordinator service: the coordinator and its replicas, by service name."""
        found = self.running_all("coordinator", "serve")
        assert found, "a service must run 'coordinator serve'"
        return found

    @property
    def replicas(self) -> dict[str, Service]:
        """The coordinator replicas by replica name (--replica)."""
        return {s.option("--replica"): s for s in self.coordinators if "--replica" in s.argv}

    @property
    def province(self) -> Service:
        return self._running("province", "serve")

    @property
    def sync(self) -> Service:
        return self._running("sync", "run")

    @property
    def init(self) -> Service:
        return self.services["init"]


def _read_compose(
    image: Image, files: Sequence[Path] = (COMPOSE_FILE,), env: Mapping[str, str] | None = None
) -> Compose:
    """The compose files merged in order (`docker compose -f A -f B`), as Docker reads them."""
    merged: dict[str, Any] = {}
    for path in files:
        merged = _merge(merged, _load_yaml(path))
    merged["services"] = {
        name: _resolve_extends(name, spec) for name, spec in merged["services"].items()
    }
    raw = _interpolate(_plain(merged), env)
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


# session-scoped because `initialised`, which needs them, is
@pytest.fixture(scope="session")
def image() -> Image:
    return _read_image()


@pytest.fixture(scope="session")
def compose(image: Image) -> Compose:
    return _read_compose(image)


@pytest.fixture(scope="session")
def replicas_compose(image: Image) -> Compose:
    """docker-compose.yml with docker-compose.replicas.yml over it."""
    return _read_compose(image, (COMPOSE_FILE, REPLICAS_FILE), REPLICAS_ENV)


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return load_catalogue()


def _listen_port(service: Service) -> int:
    host, port = service.option("--listen").rsplit(":", 1)
    assert host == "0.0.0.0", f"{service.name} must listen on all interfaces of its container"
    return int(port)


_METRICS_URL = re.compile(r"http://127\.0\.0\.1:(\d+)/metrics")
_ALLOWED = re.compile(r"\ballowed_s = (\d+);")


def _metrics_health_allowance(service: Service) -> timedelta:
    """How long after the last successful run the sync job's health check still passes."""
    [seconds] = _ALLOWED.findall(service.health_test[2])
    return timedelta(seconds=int(seconds))


# --- init on loopback: volumes and bind mounts as directories here --------------------------------


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
        volumes = []
        for target, source in service.mounts().items():
            if source.startswith(("./", "/")):
                table[target] = REPO / source
            else:
                table[target] = self.volume(source)
                volumes.append(target)
        mounted = set(table)
        for target in volumes:
            self._above(target, table, mounted)
        return PathMapper(table)

    def _above(self, target: str, table: dict[str, Path], mounted: set[str]) -> None:
        """A directory that only holds volume mounts (init's REPLICA_KEYS_DIR above each
        coordinator replica's keys volume), as the container sees it: a directory here whose
        entries are links to the volumes mounted in it."""
        parent = str(PurePosixPath(target).parent)
        if parent == "/" or any(parent == t or parent.startswith(t + "/") for t in mounted):
            return
        above = self.root / "above" / parent.lstrip("/")
        link = above / PurePosixPath(target).name
        if not link.is_symlink():
            above.mkdir(parents=True, exist_ok=True)
            table[target].mkdir(parents=True, exist_ok=True)
            link.symlink_to(table[target], target_is_directory=True)
        table[parent] = above

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


# one init for the init tests and the running services, as when they were one module: it takes
# seconds, and the services run on what init and its tests' later runs left in the volumes
@pytest.fixture(scope="session")
def initialised(compose: Compose, tmp_path_factory: pytest.TempPathFactory) -> Host:
    host = _host(tmp_path_factory.mktemp("compose"))
    done = _run_init(compose, host)
    assert done.returncode == 0, done.stdout + done.stderr
    return host


def _sync_toml(compose: Compose, host: Host) -> str:
    """sync.toml as init wrote it into the sync job's volume."""
    sync = compose.sync
    return Path(host.mounted(sync).map(sync.option("--config"))).read_text(encoding="utf-8")


def _sync_config(
    compose: Compose, host: Host, *, out: Path, ports: Mapping[str, int] | None = None
) -> SyncConfig:
    """The sync.toml init wrote, with every container path in it mapped through the sync
    service's mounts (a path it does not mount fails) and, given `ports`, each target
    `service:port` (the coordinator, the province, each coordinator replica) replaced by that
    service's loopback port: written to `out` and loaded."""
    text = _sync_toml(compose, host)
    if ports is not None:
        document = tomllib.loads(text)
        targets = [document[table]["target"] for table in ("coordinator", "province")]
        # each coordinator replica's own log is read at that replica's service
        targets += document.get("checkpoints", {}).get("replicas", {}).values()
        for target in targets:
            service = target.rsplit(":", 1)[0]
            text = text.replace(f'"{target}"', f'"127.0.0.1:{ports[service]}"')
    mapper = host.mounted(compose.sync)
    text = re.sub(r'"(/[^"]*)"', lambda m: json.dumps(mapper.map(m.group(1))), text)
    out.write_text(text, encoding="utf-8")
    return load_config(out)

"""The coordinator's node registry file (nodes.toml): which department answers at which address."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from osmanthus.core.catalogue import Catalogue
from osmanthus.core.errors import ConfigError
from osmanthus.core.types import DepartmentId

_ADDRESS = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.\-]+):\d{1,5}$")


@dataclass(frozen=True)
class NodeEndpoint:
    department: DepartmentId
    address: str


def load_nodes(path: Path, *, catalogue: Catalogue) -> tuple[NodeEndpoint, ...]:
    """Parse and validate nodes.toml:

    [[node]]
    department = "psb"
    address = "127.0.0.1:50101"
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"node registry {path} does not exist", field="nodes") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}", field="nodes") from exc
    unknown = set(data) - {"node"}
    if unknown:
        raise ConfigError(f"{path}: unknown top-level keys {sorted(unknown)}", field="nodes")
    endpoints: list[NodeEndpoint] = []
    seen: set[str] = set()
    for i, entry in enumerate(data.get("node", []), start=1):
        where = f"{path}: node {i}"
        if not isinstance(entry, dict) or set(entry) != {"department", "address"}:
            raise ConfigError(
                f"{where}: needs exactly the keys 'department' and 'address'", field="nodes"
            )
        dept, address = entry["department"], entry["address"]
        if not isinstance(dept, str) or not isinstance(address, str):
            raise ConfigError(f"{where}: department and address must be strings", field="nodes")
        catalogue.department(dept)  # raises naming the unknown id
        if dept in seen:
            raise ConfigError(f"{where}: department {dept!r} is listed twice", field="nodes")
        if not _ADDRESS.match(address):
            raise ConfigError(f"{where}: address {address!r} is not host:port", field="nodes")
        seen.add(dept)
        endpoints.append(NodeEndpoint(DepartmentId(dept), address))
    if not endpoints:
        raise ConfigError(f"{path}: lists no [[node]] entries", field="nodes")
    return tuple(endpoints)


def render_nodes(endpoints: list[NodeEndpoint]) -> str:
    """The nodes.toml text for `endpoints` (used by the demo and deployment tooling)."""
    lines = ["# Osmanthus node registry: one [[node]] per department node.", ""]
    for e in endpoints:
        lines += ["[[node]]", f'department = "{e.department}"', f'address = "{e.address}"', ""]
    return "\n".join(lines)

"""The coordinator's node registry file (nodes.toml): which department answers at which address.

    [[node]]
    department = "psb"                       # a department of the catalogue, listed once
    address = "psb-node.gov.example:50051"   # host:port, [IPv6]:port

Unknown keys are refused; a problem is named by its path in the file, e.g. node[3].address.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Final, Self

from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from osmanthus.core.catalogue import Catalogue
from osmanthus.core.errors import OsmanthusError
from osmanthus.core.settings import Settings, load_settings, problem
from osmanthus.core.types import DepartmentId

_ADDRESS: Final = re.compile(r"(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.\-]+):(\d{1,5})")


@dataclass(frozen=True)
class NodeEndpoint:
    department: DepartmentId
    address: str


def _address(value: str) -> str:
    match = _ADDRESS.fullmatch(value)
    if match is None:
        raise ValueError(f"{value!r} is not host:port (or [IPv6 address]:port)")
    if not 1 <= int(match.group(2)) <= 65535:
        raise ValueError(f"{value!r}: the port must be 1 to 65535")
    return value


class _Node(Settings):
    department: str
    address: Annotated[str, AfterValidator(_address)]

    @field_validator("department")
    @classmethod
    def _in_the_catalogue(cls, value: str, info: ValidationInfo) -> str:
        catalogue: Catalogue = (info.context or {})["catalogue"]
        try:
            catalogue.department(value)  # names the unknown id and the known ones
        except OsmanthusError as exc:
            raise ValueError(exc.message) from None
        return value


class _NodesFile(Settings):
    node: list[_Node] = Field(min_length=1, description="one [[node]] table per department node")

    @model_validator(mode="after")
    def _each_department_once(self) -> Self:
        seen: set[str] = set()
        for i, entry in enumerate(self.node):
            if entry.department in seen:
                raise problem(
                    f"department {entry.department!r} is listed twice", "node", i, "department"
                )
            seen.add(entry.department)
        return self


def load_nodes(path: Path, *, catalogue: Catalogue) -> tuple[NodeEndpoint, ...]:
    """The endpoints nodes.toml lists; ConfigError naming the file and each problem's path."""
    registry = load_settings(
        path, _NodesFile, what="node registry", field="nodes", context={"catalogue": catalogue}
    )
    return tuple(NodeEndpoint(DepartmentId(n.department), n.address) for n in registry.node)


def render_nodes(endpoints: list[NodeEndpoint]) -> str:
    """The nodes.toml text for `endpoints` (used by the demo and deployment tooling)."""
    lines = ["# Osmanthus node registry: one [[node]] per department node.", ""]
    for e in endpoints:
        lines += ["[[node]]", f'department = "{e.department}"', f'address = "{e.address}"', ""]
    return "\n".join(lines)

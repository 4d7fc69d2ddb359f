"""How platform peers are named: roles, SPIFFE ids, DNS names and where their certificates live.

Every mutual-TLS certificate names one peer (coordinator, department node, requester or operator)
by a SPIFFE URI; servers read the caller's role and name from it (osmanthus.core.tls). The CA
that issues the certificates (certs/) writes them in the layout `peer_dir` describes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from osmanthus.core.errors import ConfigError, InvalidArgument
from osmanthus.core.names import PEER_NAME_PATTERN


class PeerRole(enum.Enum):
    """What a certificate holder is on the platform; the SPIFFE path segment after the domain."""

    COORDINATOR = "coordinator"
    NODE = "node"
    REQUESTER = "requester"
    OPERATOR = "operator"


@dataclass(frozen=True)
class CertPaths:
    """Where one peer's certificate, private key and the CA certificate that signed it live."""

    cert: Path
    key: Path
    ca: Path


TRUST_DOMAIN = "osmanthus"
SPIFFE_PREFIX = f"spiffe://{TRUST_DOMAIN}/"
COORDINATOR_DNS_NAME = f"coordinator.{TRUST_DOMAIN}"
NODE_DNS_SUFFIX = f".node.{TRUST_DOMAIN}"
#: the coordinator is a singleton, so its identity name is fixed
COORDINATOR_NAME = "coordinator"
#: the platform CA has no role for the province: the reference receiver serves with a node
#: certificate of this name ("certs issue --role node --name province")
DEFAULT_RECEIVER_NAME = "province"
#: the name a client checks the receiver's certificate for
PROVINCE_SERVER_NAME = f"{DEFAULT_RECEIVER_NAME}{NODE_DNS_SUFFIX}"
#: name of the operator certificate that init_platform issues for health probes and the admin CLI
DEFAULT_OPERATOR_NAME = "operator"

CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"
CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"

_NAME_RE = PEER_NAME_PATTERN
FIELD_OF_ROLE = {
    PeerRole.COORDINATOR: "coordinator",
    PeerRole.NODE: "department",
    PeerRole.REQUESTER: "requester",
    PeerRole.OPERATOR: "operator",
}


def validate_name(name: str, *, field: str) -> str:
    """Return `name` if it is a valid peer name (department, requester or operator id)."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise InvalidArgument(
            f"{name!r} is not a valid name: use 1 to 63 lower-case letters, digits, '-' or '_'",
            field=field,
        )
    return name


def node_dns_name(department: str) -> str:
    """The DNS name a department node's certificate carries, e.g. "psb.node.osmanthus"."""
    return validate_name(department, field="department") + NODE_DNS_SUFFIX


def spiffe_uri(role: PeerRole, name: str) -> str:
    """The URI SAN that names a peer; the coordinator's carries no name segment."""
    validate_name(name, field=FIELD_OF_ROLE[role])
    if role is PeerRole.COORDINATOR:
        return f"{SPIFFE_PREFIX}{PeerRole.COORDINATOR.value}"
    return f"{SPIFFE_PREFIX}{role.value}/{name}"


def parse_spiffe_uri(uri: str) -> tuple[PeerRole, str] | None:
    """(role, name) of a platform SPIFFE URI, or None if `uri` is not one."""
    if not uri.startswith(SPIFFE_PREFIX):
        return None
    parts = uri[len(SPIFFE_PREFIX) :].split("/")
    if parts == [PeerRole.COORDINATOR.value]:
        return PeerRole.COORDINATOR, COORDINATOR_NAME
    if len(parts) != 2 or not _NAME_RE.fullmatch(parts[1]):
        return None
    role = next((r for r in PeerRole if r.value == parts[0]), None)
    if role is None or role is PeerRole.COORDINATOR:
        return None
    return role, parts[1]


def peer_dir(certs_dir: Path, *, role: PeerRole, name: str) -> Path:
    """The directory under `certs_dir` that holds a peer's cert.pem and key.pem."""
    validate_name(name, field=FIELD_OF_ROLE[role])
    if role is PeerRole.COORDINATOR:
        check_coordinator_name(name)
        return certs_dir / "coordinator"
    if role is PeerRole.NODE:
        return certs_dir / "nodes" / name
    if role is PeerRole.REQUESTER:
        return certs_dir / "requesters" / name
    if name == DEFAULT_OPERATOR_NAME:
        return certs_dir / "operator"
    return certs_dir / "operators" / name


def cert_paths(certs_dir: Path, *, role: PeerRole, name: str) -> CertPaths:
    """Paths of a peer's files in the layout init_platform writes; ConfigError if any is missing."""
    directory = peer_dir(certs_dir, role=role, name=name)
    paths = CertPaths(
        cert=directory / CERT_FILE, key=directory / KEY_FILE, ca=certs_dir / CA_CERT_FILE
    )
    for path in (paths.ca, paths.cert, paths.key):
        if not path.is_file():
            raise ConfigError(
                f"{path} does not exist: no {role.value} certificate for {name!r} has been issued"
                f" under {certs_dir} (run init_platform or issue_certificate)"
            )
    return paths


def check_coordinator_name(name: str) -> None:
    if name != COORDINATOR_NAME:
        raise InvalidArgument(
            f"the coordinator is a singleton, always named {COORDINATOR_NAME!r}, not {name!r}",
            field="coordinator",
        )

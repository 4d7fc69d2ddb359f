"""Assembling the coordinator from its configuration and serving it over mutual TLS."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack, closing
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import grpc

from certs import PeerRole
from coordinator.config import load_nodes
from coordinator.consent import ConsentRegistry
from coordinator.disclosure import DisclosureLedger
from coordinator.keys import KeyRegistry
from coordinator.nodes import NodePool
from coordinator.service import DEFAULT_DEADLINE_S, CoordinatorService
from coordinator.servicer import CoordinatorServicer
from osmanthus.audit import AuditLog, load_or_create_salt
from osmanthus.catalogue import Catalogue, load_catalogue
from osmanthus.crypto import DEFAULT_TABLE_CACHE_BYTES, EncryptorCache
from osmanthus.errors import ConfigError
from osmanthus.policy import ReloadablePolicy
from osmanthus.server import RunningServer, start_server
from osmanthus.tls import TlsFiles, check_files, identity_of_certificate
from osmanthus.tokens import DEFAULT_AUDIENCE, DEFAULT_ISSUER, ReplayCache, TokenVerifier
from osmanthus.v1 import coordinator_pb2, coordinator_pb2_grpc

COORDINATOR_SERVICE_NAME = coordinator_pb2.DESCRIPTOR.services_by_name[
    "CoordinatorService"
].full_name
DEFAULT_CENTRAL_POLICY = Path(str(files("policies") / "central.cedar"))


@dataclass(frozen=True)
class CoordinatorConfig:
    nodes: Path
    tls: TlsFiles
    issuer_public_key: Path
    state_dir: Path
    listen: str = "127.0.0.1:0"
    policy: Path = DEFAULT_CENTRAL_POLICY
    catalogue: Path | None = None
    deadline_s: float = DEFAULT_DEADLINE_S
    #: memory for per-requester-key tables used to re-randomise sums (0 = plain path)
    table_cache_bytes: int = DEFAULT_TABLE_CACHE_BYTES
    token_issuer: str = DEFAULT_ISSUER
    token_audience: str = DEFAULT_AUDIENCE


@dataclass
class RunningCoordinator:
    server: RunningServer
    service: CoordinatorService

    @property
    def port(self) -> int:
        return self.server.port

    def stop(self) -> None:
        self.server.stop()


def start_coordinator(
    config: CoordinatorConfig,
    *,
    node_interceptors: Sequence[grpc.UnaryUnaryClientInterceptor] = (),
    server_interceptors: Sequence[grpc.ServerInterceptor] = (),
    catalogue: Catalogue | None = None,
) -> RunningCoordinator:
    catalogue = catalogue or load_catalogue(config.catalogue)
    check_files(config.tls)
    identity = identity_of_certificate(config.tls.cert)
    if identity.role is not PeerRole.COORDINATOR:
        raise ConfigError(
            f"{config.tls.cert} names {identity.role.value} {identity.name!r}, not the coordinator",
            field="tls.cert",
        )
    if config.deadline_s <= 0:
        raise ConfigError("the node deadline must be positive", field="deadline")
    endpoints = load_nodes(config.nodes, catalogue=catalogue)
    policy = ReloadablePolicy.from_file(config.policy)
    verifier = TokenVerifier.from_file(
        config.issuer_public_key,
        issuer=config.token_issuer,
        audience=config.token_audience,
        replay_cache=ReplayCache(),
    )
    config.state_dir.mkdir(parents=True, exist_ok=True)
    salt_path = config.state_dir / "audit.salt"
    ledger_path = config.state_dir / "disclosures.sqlite"
    if ledger_path.exists() and not salt_path.exists():
        # a new salt would silently unpin every subject in the ledger
        raise ConfigError(
            f"{salt_path} is missing but {ledger_path} exists: restore the salt from backup; "
            "a new one would make every pinned disclosure set unreachable",
            field="state_dir",
        )
    salt = load_or_create_salt(salt_path)
    with ExitStack() as opened:
        # each resource is closed again if a later one fails to open
        pool = opened.enter_context(
            closing(NodePool(endpoints, tls=config.tls, interceptors=node_interceptors))
        )
        service = CoordinatorService(
            catalogue=catalogue,
            nodes=pool,
            policy=policy,
            verifier=verifier,
            consents=opened.enter_context(
                closing(ConsentRegistry(config.state_dir / "consents.duckdb"))
            ),
            keys=opened.enter_context(closing(KeyRegistry(config.state_dir / "keys.duckdb"))),
            ledger=opened.enter_context(closing(DisclosureLedger(ledger_path))),
            audit=opened.enter_context(
                closing(AuditLog(path=config.state_dir / "audit.jsonl", salt=salt))
            ),
            deadline_s=config.deadline_s,
            encryptors=EncryptorCache(max_bytes=config.table_cache_bytes),
        )
        servicer = CoordinatorServicer(service)
        server = start_server(
            register=[
                lambda s: coordinator_pb2_grpc.add_CoordinatorServiceServicer_to_server(servicer, s)
            ],
            service_names=[COORDINATOR_SERVICE_NAME],
            listen=config.listen,
            tls=config.tls,
            interceptors=server_interceptors,
        )
        opened.pop_all()  # the running server owns them now
    server.on_stop.append(service.close)
    return RunningCoordinator(server, service)

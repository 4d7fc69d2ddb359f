"""Assembling a department node from its configuration and serving it over mutual TLS."""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Final

from node.lists import LISTS_FILE, ListStore
from node.service import NodeService
from node.servicer import ListOfficeServicer, NodeServicer
from node.store import RecordStore
from osmanthus.core.audit import AuditLog, load_or_create_salt
from osmanthus.core.bundle import DEFAULT_POLL_S, node_scope
from osmanthus.core.bundle_watch import load_policy
from osmanthus.core.catalogue import Catalogue, load_catalogue
from osmanthus.core.crypto import DEFAULT_TABLE_CACHE_BYTES, FAST_WINDOW_BITS, EncryptorCache
from osmanthus.core.errors import ConfigError
from osmanthus.core.peers import PeerRole
from osmanthus.core.policy import ReloadablePolicy
from osmanthus.core.rules import load_default_rules, load_rules
from osmanthus.core.server import RunningServer, start_server
from osmanthus.core.tls import TlsFiles, check_files, identity_of_certificate
from osmanthus.core.tokens import DEFAULT_AUDIENCE, DEFAULT_ISSUER, ReplayCache, TokenVerifier
from osmanthus.v1 import lists_pb2, lists_pb2_grpc, node_pb2, node_pb2_grpc

NODE_SERVICE_NAME = node_pb2.DESCRIPTOR.services_by_name["NodeService"].full_name
LIST_OFFICE_SERVICE_NAME = lists_pb2.DESCRIPTOR.services_by_name["ListOfficeService"].full_name
DEFAULT_NODE_POLICY = Path(str(files("policies") / "node.cedar"))
#: the node's state directory is its user's alone: the list store and its WAL hold full ids
STATE_DIR_MODE: Final = 0o700

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeConfig:
    department: str
    db: Path
    tls: TlsFiles
    issuer_public_key: Path
    state_dir: Path
    listen: str = "127.0.0.1:0"
    rules: Path | None = None
    policy: Path = DEFAULT_NODE_POLICY
    catalogue: Path | None = None
    token_issuer: str = DEFAULT_ISSUER
    token_audience: str = DEFAULT_AUDIENCE
    #: memory for per-requester-key encryption tables (0 turns the fast path off)
    table_cache_bytes: int = DEFAULT_TABLE_CACHE_BYTES
    table_window_bits: int = FAST_WINDOW_BITS
    #: a signed policy bundle (scope "node" or "node:<department>") to use instead of `policy`,
    #: reloaded on change
    policy_bundle: Path | None = None
    #: public keys of the publishers whose bundles are trusted
    policy_trust: tuple[Path, ...] = ()
    policy_poll_s: float = DEFAULT_POLL_S


def prepare_state_dir(path: Path) -> None:
    """Create the node's state directory owner-only, or tighten one that others may open."""
    path.mkdir(mode=STATE_DIR_MODE, parents=True, exist_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if not mode & 0o077:
        return
    try:
        os.chmod(path, STATE_DIR_MODE)
    except OSError as exc:
        raise ConfigError(
            f"{path} is open to other users (mode {mode:o}) and cannot be made owner-only "
            f"({exc.strerror}); it holds the list store with full resident ids: give the node's "
            "user a state directory of its own",
            field="state_dir",
        ) from None
    _log.warning(
        "state directory %s was open to other users (mode %o); made it owner-only (%o): it "
        "holds the list store, with full resident ids of listed persons",
        path,
        mode,
        STATE_DIR_MODE,
    )


def build_service(
    config: NodeConfig,
    *,
    catalogue: Catalogue | None = None,
    policy: ReloadablePolicy | None = None,
) -> NodeService:
    """Load and cross-check everything a node needs; any mismatch is a ConfigError at start-up."""
    catalogue = catalogue or load_catalogue(config.catalogue)
    department = catalogue.department(config.department)
    check_files(config.tls)
    identity = identity_of_certificate(config.tls.cert)
    if identity.role is not PeerRole.NODE or identity.name != department.id:
        raise ConfigError(
            f"{config.tls.cert} names {identity.role.value} {identity.name!r}, "
            f"not the node of department {department.id!r}",
            field="tls.cert",
        )
    rules = (
        load_rules(config.rules, catalogue=catalogue)
        if config.rules
        else load_default_rules(department.id, catalogue=catalogue)
    )
    if rules.department != department.id:
        raise ConfigError(
            f"rules file is for department {rules.department!r}, not {department.id!r}",
            field="rules",
        )
    if not config.db.exists():
        raise ConfigError(
            f"database {config.db} does not exist (run 'osmanthus seed' or import)", field="db"
        )
    # everything that can fail without holding a resource comes first
    verifier = TokenVerifier.from_file(
        config.issuer_public_key,
        issuer=config.token_issuer,
        audience=config.token_audience,
        replay_cache=ReplayCache(),
    )
    policy = ReloadablePolicy.from_file(config.policy) if policy is None else policy
    prepare_state_dir(config.state_dir)
    salt = load_or_create_salt(config.state_dir / "audit.salt")
    # closed in reverse order if a later step fails; on success the service owns them all
    opened: list[RecordStore | ListStore | AuditLog] = []
    try:
        store = RecordStore(config.db, department=department.id, read_only=True)
        opened.append(store)
        # the record store is read-only while the node runs: lists need a file of their own
        lists = ListStore(
            config.state_dir / LISTS_FILE, department=department.id, catalogue=catalogue
        )
        opened.append(lists)
        audit = AuditLog(path=config.state_dir / "audit.jsonl", salt=salt)
        opened.append(audit)
        return NodeService(
            department=department,
            catalogue=catalogue,
            store=store,
            rules=rules,
            policy=policy,
            verifier=verifier,
            audit=audit,
            encryptors=EncryptorCache(
                max_bytes=config.table_cache_bytes, window_bits=config.table_window_bits
            ),
            lists=lists,
        )
    except BaseException:
        for resource in reversed(opened):
            resource.close()
        raise


def start_node(config: NodeConfig, *, catalogue: Catalogue | None = None) -> RunningServer:
    policy, watcher = load_policy(
        policy_file=config.policy, bundle=config.policy_bundle, trust=config.policy_trust,
        scope=node_scope(config.department), state_dir=config.state_dir,
        interval_s=config.policy_poll_s,
    )  # fmt: skip
    service = build_service(config, catalogue=catalogue, policy=policy)
    servicer = NodeServicer(service)
    office = ListOfficeServicer(service.list_office())
    try:
        running = start_server(
            register=[
                lambda s: node_pb2_grpc.add_NodeServiceServicer_to_server(servicer, s),
                lambda s: lists_pb2_grpc.add_ListOfficeServiceServicer_to_server(office, s),
            ],
            service_names=[NODE_SERVICE_NAME, LIST_OFFICE_SERVICE_NAME],
            listen=config.listen,
            tls=config.tls,
        )
    except BaseException:
        service.close()
        raise
    running.on_stop.append(service.close)
    if watcher is not None:
        running.on_stop.append(watcher.close)
        watcher.start()
    return running

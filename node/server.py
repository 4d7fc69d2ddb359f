"""Assembling a department node from its configuration and serving it over mutual TLS."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from importlib.resources import files
from pathlib import Path
from typing import Final

import grpc

from node.casekeys import case_seal_key
from node.cases import CaseStore
from node.consent import (
    REVOCATIONS_FILE,
    ConsentCheck,
    ReceiptConsentCheck,
    UnsafeTrustCoordinatorConsent,
)
from node.ingest import DEFAULT_INBOX_POLL_S, SPOOL_DIR, Inbox
from node.lists import LISTS_FILE, ListStore
from node.service import NodeService
from node.servicer import CaseOfficeServicer, IngestServicer, ListOfficeServicer, NodeServicer
from node.store import RecordStore
from node.transparency import node_log_readers
from osmanthus.core.audit import AuditLog, load_or_create_salt
from osmanthus.core.bundle import DEFAULT_POLL_S, node_scope
from osmanthus.core.bundle_watch import load_policy
from osmanthus.core.catalogue import Catalogue, load_catalogue
from osmanthus.core.clock import china_today
from osmanthus.core.consent_feed import DEFAULT_MAX_STALENESS, RevocationView
from osmanthus.core.crl import REVOCATION_POLL_S, open_revocation
from osmanthus.core.crypto import DEFAULT_TABLE_CACHE_BYTES, FAST_WINDOW_BITS, EncryptorCache
from osmanthus.core.denylist import TokenDenial, open_token_denial
from osmanthus.core.errors import ConfigError
from osmanthus.core.files import PRIVATE_DIR_MODE, narrow_umask, private_directory
from osmanthus.core.logkeyfiles import read_signer
from osmanthus.core.logkeys import LogRoster, log_origin
from osmanthus.core.logserver import (
    DEFAULT_CHECKPOINT_EVERY,
    DEFAULT_CHECKPOINT_INTERVAL_S,
    TRANSPARENCY_SERVICE_NAME,
    LocalLog,
    TransparencyServicer,
    open_local_log,
)
from osmanthus.core.peers import PeerRole
from osmanthus.core.policy import ReloadablePolicy
from osmanthus.core.receipts import RECEIPT_ISSUER, load_consent_public_key
from osmanthus.core.rules import load_default_rules, load_rules
from osmanthus.core.server import RunningServer, start_server
from osmanthus.core.signednote import NoteSigner
from osmanthus.core.subjectpart import PartSigner
from osmanthus.core.tls import TlsFiles, check_files, identity_of_certificate
from osmanthus.core.tokens import DEFAULT_AUDIENCE, DEFAULT_ISSUER, ReplayCache, TokenVerifier
from osmanthus.core.workdays import CaseSettings
from osmanthus.v1 import (
    cases_pb2,
    cases_pb2_grpc,
    ingest_pb2,
    ingest_pb2_grpc,
    lists_pb2,
    lists_pb2_grpc,
    node_pb2,
    node_pb2_grpc,
    transparency_pb2_grpc,
)

NODE_SERVICE_NAME = node_pb2.DESCRIPTOR.services_by_name["NodeService"].full_name
LIST_OFFICE_SERVICE_NAME = lists_pb2.DESCRIPTOR.services_by_name["ListOfficeService"].full_name
CASE_OFFICE_SERVICE_NAME = cases_pb2.DESCRIPTOR.services_by_name["CaseOfficeService"].full_name
INGEST_SERVICE_NAME = ingest_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name
DEFAULT_NODE_POLICY = Path(str(files("policies") / "node.cedar"))
#: the node's state directory is its user's alone: the list store and its WAL hold full ids
STATE_DIR_MODE: Final = PRIVATE_DIR_MODE
#: what the state directory holds, for the log lines and errors about its modes
STATE_WHAT: Final = (
    "the node's state (the list store, with full resident ids of listed persons, the case "
    "store and its keys, and the audit log and salt)"
)

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
    #: the consent registry's public key (the coordinator's consent.pub): the node verifies
    #: every consent it answers under with it (node.consent). Required unless
    #: `unsafe_trust_coordinator_consent`
    consent_public_key: Path | None = None
    #: the `iss` the registry signs receipts and revocation heads as
    consent_issuer: str = RECEIPT_ISSUER
    #: how old the newest verified revocation head may be when a consent is answered under
    max_revocation_staleness: timedelta = DEFAULT_MAX_STALENESS
    #: take the coordinator's word that a consent exists, as before receipts travelled
    unsafe_trust_coordinator_consent: bool = False
    #: the platform CA's CRL, followed without a restart: a caller (the coordinator, a list
    #: officer) whose certificate it revokes is refused (None: none is ever revoked)
    crl: Path | None = None
    #: the token issuer's signed deny list, followed without a restart (None: none)
    token_deny_list: Path | None = None
    revocation_poll_s: float = REVOCATION_POLL_S
    #: the case settings file (osmanthus.core.workdays.CaseSettings.load: deadlines in working
    #: days, retention, per-subject limits, the calendar); None: the defaults
    case_settings: Path | None = None
    #: the key that signs the audit log's checkpoints (log.key, named after the log's origin
    #: `<department>.node.osmanthus/audit`); None: no checkpoints, no TransparencyService
    log_key: Path | None = None
    #: the roster of logs and witnesses (logs.toml): the witness keys whose cosignatures the
    #: log keeps; None: none are kept
    log_roster: Path | None = None
    #: a checkpoint every this many new entries, or every `checkpoint_interval_s` seconds
    #: when the log grew
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY
    checkpoint_interval_s: float = DEFAULT_CHECKPOINT_INTERVAL_S
    #: a folder the node watches for import files (node.ingest.Inbox); None: no inbox
    inbox: Path | None = None
    inbox_poll_s: float = DEFAULT_INBOX_POLL_S
    #: HOST:PORT to serve the node's Prometheus metrics on (None: not served)
    metrics_listen: str | None = None


def store_unwritable(db: Path) -> str | None:
    """Why the node cannot open its record store `db` read-write, None when it can: the file or
    its directory (DuckDB writes its write-ahead log beside the file) is on a read-only file
    system or not writable by this process."""
    for path, what in ((db, "the file"), (db.parent, "its directory")):
        if not path.exists():
            continue
        try:
            read_only_mount = bool(os.statvfs(path).f_flag & os.ST_RDONLY)
        except OSError:
            read_only_mount = False
        if read_only_mount:
            return f"{what} {path} is on a read-only file system (a read-only mount?)"
        if not os.access(path, os.W_OK):
            return f"{what} {path} is not writable by the node's user (uid {os.geteuid()})"
    return None


def prepare_spool(path: Path) -> Path:
    """The node's private folder for uploads and import staging files, emptied of what a
    killed node left (its files hold rows of personal data)."""
    path.mkdir(mode=PRIVATE_DIR_MODE, exist_ok=True)
    for leftover in path.iterdir():
        if leftover.is_file() or leftover.is_symlink():
            leftover.unlink(missing_ok=True)
    return path


def prepare_state_dir(path: Path) -> None:
    """Make this process create its files owner-only from now on (osmanthus.core.files.
    narrow_umask), and create the node's state directory owner-only, or repair one that
    others may open (0700, files in it 0600; each repair logged)."""
    narrow_umask()
    private_directory(path, what=STATE_WHAT)


def build_service(
    config: NodeConfig,
    *,
    catalogue: Catalogue | None = None,
    policy: ReloadablePolicy | None = None,
    token_denial: TokenDenial | None = None,
    today: Callable[[], date] = china_today,
) -> NodeService:
    """Load and cross-check everything a node needs; any mismatch is a ConfigError at start-up.

    `today`: the node's calendar (China Standard Time), which record validity, list windows
    and case deadlines count on; tests that need a case to fall overdue pass their own."""
    return _build(
        config, catalogue=catalogue, policy=policy, token_denial=token_denial, today=today
    )[0]


def _build(
    config: NodeConfig,
    *,
    catalogue: Catalogue | None,
    policy: ReloadablePolicy | None,
    token_denial: TokenDenial | None,
    today: Callable[[], date],
) -> tuple[NodeService, LocalLog | None]:
    """build_service, and the audit log as a transparency log when the node has a log key
    (its checkpointer not started yet: start_node starts it once the server serves)."""
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
    settings = CaseSettings.load(config.case_settings) if config.case_settings else CaseSettings()
    verifier = TokenVerifier.from_file(
        config.issuer_public_key,
        issuer=config.token_issuer,
        audience=config.token_audience,
        replay_cache=ReplayCache(),
        deny_list=token_denial,
    )
    policy = ReloadablePolicy.from_file(config.policy) if policy is None else policy
    prepare_state_dir(config.state_dir)
    consent = consent_check(config)
    # signs each part of a subject's file: the portal checks it was made by this node
    part_signer = PartSigner.from_tls_files(config.tls)
    log_signer = (
        read_signer(NoteSigner, config.log_key, expected_name=None, field="log_key")
        if config.log_key is not None
        else None
    )
    roster = LogRoster.load(config.log_roster) if config.log_roster is not None else None
    salt = load_or_create_salt(config.state_dir / "audit.salt")
    # closed in reverse order if a later step fails; on success the service owns them all
    opened: list[RecordStore | ListStore | CaseStore | AuditLog] = []
    try:
        # the node owns the record store's one read-write connection: imports run inside it
        # while queries read committed snapshots (node.store, node.ingest). A store it cannot
        # write (a read-only mount, another owner) is served read-only, without live imports.
        if not config.db.exists():
            # opening read-write would create an empty store, and a mistyped --db would serve
            # every subject as having no records: refuse, as before live imports
            raise ConfigError(
                f"{config.db}: no record store there; create it with an offline import first "
                "(osmanthus node import --db FILE ...)",
                field="db",
            )
        unwritable = store_unwritable(config.db)
        if unwritable is not None:
            _log.warning(
                "record store %s opened read-only (%s): live imports (osmanthus node import "
                "--node, the inbox) are refused; make the file and its directory writable by "
                "the node and restart it to take them",
                config.db, unwritable,
            )  # fmt: skip
        staging = prepare_spool(config.state_dir / SPOOL_DIR)
        store = RecordStore(
            config.db, department=department.id, read_only=unwritable is not None,
            read_only_reason=unwritable, staging_dir=staging,
        )  # fmt: skip
        opened.append(store)
        lists = ListStore(
            config.state_dir / LISTS_FILE, department=department.id, catalogue=catalogue
        )
        opened.append(lists)
        # objections and credit repair: the cases, their attachments (encrypted under
        # cases.key) and the record history; the case key the portal seals cases to
        cases = CaseStore.open(
            config.state_dir, department=department.id, settings=settings, today=today
        )
        opened.append(cases)
        seal_key = case_seal_key(config.state_dir)
        # the retention period is checked at start, and on every call to the case office
        cases.purge()
        # a request it cannot audit is refused: "the node cannot write its audit log"
        audit = AuditLog(path=config.state_dir / "audit.jsonl", salt=salt, service="the node")
        opened.append(audit)
        local = (
            open_local_log(
                log=audit,
                signer=log_signer,
                origin=log_origin(PeerRole.NODE, department.id),
                roster=roster,
                every_entries=config.checkpoint_every,
                every_s=config.checkpoint_interval_s,
            )
            if log_signer is not None
            else None
        )
        service = NodeService(
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
            consent=consent,
            part_signer=part_signer,
            cases=cases,
            case_seal_key=seal_key,
            today=today,
            transparency=local,
        )
        return service, local
    except BaseException:
        for resource in reversed(opened):
            resource.close()
        raise


def consent_check(config: NodeConfig) -> ConsentCheck:
    """How the node verifies consents: the registry's receipts and revocation feed against
    `consent_public_key`; ConfigError if there is none and the unsafe option is not named."""
    if config.unsafe_trust_coordinator_consent:
        if config.consent_public_key is not None:
            raise ConfigError(
                "give either a consent public key or --unsafe-trust-coordinator-consent, not both",
                field="consent_public_key",
            )
        _log.warning(
            "department %s: UNSAFE: this node answers every query the coordinator says has "
            "consent without checking the consent itself (--unsafe-trust-coordinator-consent); "
            "a compromised coordinator can make it answer about anyone",
            config.department,
        )
        return UnsafeTrustCoordinatorConsent()
    if config.consent_public_key is None:
        raise ConfigError(
            "no consent public key: give the coordinator's consent.pub (--consent-public-key; "
            "with --certs-dir, CERTS_DIR/coordinator/consent.pub is used when present), so that "
            "this node verifies every consent itself",
            field="consent_public_key",
        )
    public_key = load_consent_public_key(config.consent_public_key)
    view = RevocationView(
        config.state_dir / REVOCATIONS_FILE,
        public_key=public_key,
        issuer=config.consent_issuer,
        max_staleness=config.max_revocation_staleness,
    )
    return ReceiptConsentCheck(public_key=public_key, issuer=config.consent_issuer, view=view)


def start_node(
    config: NodeConfig,
    *,
    catalogue: Catalogue | None = None,
    today: Callable[[], date] = china_today,
) -> RunningServer:
    policy, watcher = load_policy(
        policy_file=config.policy, bundle=config.policy_bundle, trust=config.policy_trust,
        scope=node_scope(config.department), state_dir=config.state_dir,
        interval_s=config.policy_poll_s,
    )  # fmt: skip
    revocation = open_revocation(
        config.crl, ca_path=config.tls.ca, interval_s=config.revocation_poll_s
    )
    token_denial = open_token_denial(
        config.token_deny_list,
        public_key_path=config.issuer_public_key,
        issuer=config.token_issuer,
        interval_s=config.revocation_poll_s,
    )
    service, local = _build(
        config, catalogue=catalogue, policy=policy, token_denial=token_denial, today=today
    )
    servicer = NodeServicer(service)
    office = ListOfficeServicer(service.list_office())
    case_office = CaseOfficeServicer(service.case_office())
    ingest_office = service.ingest_office(spool_dir=config.state_dir / SPOOL_DIR)
    ingest = IngestServicer(ingest_office)
    try:
        inbox = (
            Inbox(config.inbox, office=ingest_office, poll_s=config.inbox_poll_s)
            if config.inbox is not None
            else None
        )
    except OSError as exc:
        service.close()
        raise ConfigError(f"inbox {config.inbox}: {exc.strerror}", field="inbox") from None
    register: list[Callable[[grpc.Server], None]] = [
        lambda s: node_pb2_grpc.add_NodeServiceServicer_to_server(servicer, s),
        lambda s: lists_pb2_grpc.add_ListOfficeServiceServicer_to_server(office, s),
        lambda s: cases_pb2_grpc.add_CaseOfficeServiceServicer_to_server(case_office, s),
        lambda s: ingest_pb2_grpc.add_IngestServiceServicer_to_server(ingest, s),
    ]
    names = [
        NODE_SERVICE_NAME,
        LIST_OFFICE_SERVICE_NAME,
        CASE_OFFICE_SERVICE_NAME,
        INGEST_SERVICE_NAME,
    ]
    if local is not None:
        transparency = TransparencyServicer(
            local=local,
            authorize=node_log_readers(department=service.department_id, audit=local.log),
        )
        register.append(
            lambda s: transparency_pb2_grpc.add_TransparencyServiceServicer_to_server(
                transparency, s
            )
        )
        names.append(TRANSPARENCY_SERVICE_NAME)
    try:
        running = start_server(
            register=register,
            service_names=names,
            listen=config.listen,
            tls=config.tls,
            revocation=revocation,
            token_denial=token_denial,
            metrics_listen=config.metrics_listen,
        )
    except BaseException:
        service.close()
        raise
    # a node that cannot write its audit log refuses every query: its health says so
    running.follow_audit(service.audit_log)
    if local is not None:
        local.start()
        # stopped before the service closes the audit log its checkpointer reads
        running.on_stop.append(local.close)
    if inbox is not None:
        inbox.start()
        # stopped (its import finished) before the service closes the store it writes
        running.on_stop.append(inbox.close)
    # after the inbox (whose import it may run), before the service closes the store
    running.on_stop.append(ingest_office.close)
    running.on_stop.append(service.close)
    if watcher is not None:
        running.on_stop.append(watcher.close)
        watcher.start()
    return running

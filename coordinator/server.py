"""Assembling the coordinator from its configuration and serving it over mutual TLS."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import ExitStack, closing
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from coordinator.config import NodeEndpoint, load_nodes
from coordinator.context import DEFAULT_DEADLINE_S
from coordinator.nodes import NodePool
from coordinator.service import CoordinatorService, new_query_id
from coordinator.servicer import CoordinatorServicer
from coordinator.status import STATUS_SERVICE_NAME, CoordinatorStatus, StatusServicer
from coordinator.storage import CONSENTS_FILE, DISCLOSURES_FILE, close_stores, open_backend
from coordinator.transparency import AuditLogReaders
from coordinator.witnessing import DEFAULT_WITNESS_INTERVAL_S, NodeWitnessing
from osmanthus.core import metrics
from osmanthus.core.audit import AuditLog, load_or_create_salt
from osmanthus.core.bundle import CENTRAL_SCOPE, DEFAULT_POLL_S
from osmanthus.core.bundle_watch import load_policy
from osmanthus.core.catalogue import Catalogue, load_catalogue
from osmanthus.core.crl import REVOCATION_POLL_S, open_revocation
from osmanthus.core.crypto import DEFAULT_TABLE_CACHE_BYTES, EncryptorCache
from osmanthus.core.denylist import open_token_denial
from osmanthus.core.errors import ConfigError, InvalidArgument
from osmanthus.core.files import PRIVATE_FILE_MODE, narrow_umask, private_directory
from osmanthus.core.logkeyfiles import read_signer
from osmanthus.core.logkeys import (
    WITNESSING_REPLICA,
    LogRoster,
    coordinator_log_origin,
    coordinator_witness_name,
)
from osmanthus.core.logserver import (
    DEFAULT_CHECKPOINT_EVERY,
    DEFAULT_CHECKPOINT_INTERVAL_S,
    TRANSPARENCY_SERVICE_NAME,
    TransparencyServicer,
    open_local_log,
)
from osmanthus.core.peers import PeerRole, validate_name
from osmanthus.core.receipts import (
    CONSENT_KEY_FILE,
    CONSENT_PUBLIC_KEY_FILE,
    RECEIPT_ISSUER,
    check_issuer,
    consent_key_id,
    load_consent_key_pair,
    load_or_create_consent_key,
)
from osmanthus.core.server import RunningServer, start_server
from osmanthus.core.signednote import CosignatureSigner, NoteSigner
from osmanthus.core.subjectpart import PartSigner
from osmanthus.core.tls import TlsFiles, check_files, identity_of_certificate
from osmanthus.core.tokens import DEFAULT_AUDIENCE, DEFAULT_ISSUER, TokenVerifier
from osmanthus.core.witness import FileAlarmSink, Witness
from osmanthus.v1 import (
    coordinator_pb2,
    coordinator_pb2_grpc,
    status_pb2_grpc,
    transparency_pb2_grpc,
)

COORDINATOR_SERVICE_NAME = coordinator_pb2.DESCRIPTOR.services_by_name[
    "CoordinatorService"
].full_name
DEFAULT_CENTRAL_POLICY = Path(str(files("policies") / "central.cedar"))
#: what the coordinator's witness last cosigned for each node's log, and the alarms it raised
WITNESS_STATE_FILE = "witness.json"
WITNESS_ALARMS_FILE = "witness-alarms.jsonl"
#: what the state directory holds, for the log lines and errors about its modes
STATE_WHAT = (
    "the coordinator's state (consents with resident ids, the disclosure, ε and key "
    "registries, the audit log and salt, the consent signing key)"
)

_log = logging.getLogger(__name__)


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
    #: a signed policy bundle (scope "central") to use instead of `policy`, reloaded on change
    policy_bundle: Path | None = None
    #: public keys of the publishers whose bundles are trusted
    policy_trust: tuple[Path, ...] = ()
    policy_poll_s: float = DEFAULT_POLL_S
    #: Ed25519 key that signs consent receipts (osmanthus.core.receipts), checked against the
    #: consent.pub beside it if there is one; None: STATE_DIR/consent.key, created with
    #: consent.pub beside it on first start, and refused if lost once consents were recorded
    consent_key: Path | None = None
    #: the `iss` of every receipt; verifiers pin it (sdk.verify_consent_receipt(issuer=...))
    consent_issuer: str = RECEIPT_ISSUER
    #: the platform CA's CRL, followed without a restart: revoked requesters are refused, and so
    #: are nodes that present a revoked certificate (None: no certificate is ever revoked)
    crl: Path | None = None
    #: the token issuer's signed deny list, followed without a restart (None: none)
    token_deny_list: Path | None = None
    revocation_poll_s: float = REVOCATION_POLL_S
    #: the key that signs the audit log's checkpoints (log.key, named after the log's origin,
    #: "coordinator.osmanthus/audit" or a replica's); None: no checkpoints of its own log
    #: (nodes' logs are still relayed)
    log_key: Path | None = None
    #: this replica's name when several coordinators share `state_url`: each replica writes a
    #: log of its own, so each signs it as an origin of its own ("NAME.coordinator.osmanthus/
    #: audit", osmanthus.core.logkeys) with a key of its own; None: "coordinator.osmanthus/audit"
    replica: str | None = None
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY
    checkpoint_interval_s: float = DEFAULT_CHECKPOINT_INTERVAL_S
    #: the coordinator's witness key (witness.key, named coordinator.osmanthus/witness, or a
    #: replica's own, NAME.coordinator.osmanthus/witness: never the one another replica with
    #: a witness state of its own cosigns with, or a split view could be cosigned twice); with
    #: `logs`, it witnesses every node log the roster lists (coordinator.witnessing)
    witness_key: Path | None = None
    #: the roster of logs and witnesses (logs.toml at the root of the certs directory); also
    #: the witness keys whose cosignatures the coordinator's own log keeps, and the node keys a
    #: relayed checkpoint must be signed with
    logs: Path | None = None
    witness_interval_s: float = DEFAULT_WITNESS_INTERVAL_S
    #: HOST:PORT to serve the coordinator's Prometheus metrics on (None: not served)
    metrics_listen: str | None = None
    #: where the registries and ledgers live: None for files in `state_dir`, or a
    #: postgresql:// URL that several replicas share (coordinator.storage)
    state_url: str | None = None


@dataclass
class RunningCoordinator:
    server: RunningServer
    service: CoordinatorService
    #: the witness of the nodes' logs (None: not configured)
    witnessing: NodeWitnessing | None = None

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
    if config.replica is not None:
        try:
            validate_name(config.replica, field="replica")
        except InvalidArgument as exc:
            raise ConfigError(exc.message, field="replica") from None
        if config.witness_key is not None:
            raise ConfigError(WITNESSING_REPLICA, field="witness_key")
    own_origin = coordinator_log_origin(config.replica)
    # read before the state is opened: a replica given another log's key stops here
    log_signer = (
        read_signer(NoteSigner, config.log_key, expected_name=own_origin, field="log_key")
        if config.log_key is not None
        else None
    )
    endpoints = load_nodes(config.nodes, catalogue=catalogue)
    policy, watcher = load_policy(
        policy_file=config.policy, bundle=config.policy_bundle, trust=config.policy_trust,
        scope=CENTRAL_SCOPE, state_dir=config.state_dir, interval_s=config.policy_poll_s,
    )  # fmt: skip
    # purposes are metric labels only as far as the policy in force names them
    metrics.bind_purposes(lambda: policy.current().source)
    revocation = open_revocation(
        config.crl, ca_path=config.tls.ca, interval_s=config.revocation_poll_s
    )
    token_denial = open_token_denial(
        config.token_deny_list,
        public_key_path=config.issuer_public_key,
        issuer=config.token_issuer,
        interval_s=config.revocation_poll_s,
    )
    # for good, before anything is created: DuckDB makes the logs of the consents (resident
    # ids) with the process umask, at the first write after every checkpoint
    narrow_umask()
    private_directory(config.state_dir, what=STATE_WHAT)
    salt_path = config.state_dir / "audit.salt"
    ledger_path = config.state_dir / DISCLOSURES_FILE
    if ledger_path.exists() and not salt_path.exists():
        # a new salt would silently unpin every subject in the ledger
        raise ConfigError(
            f"{salt_path} is missing but {ledger_path} exists: restore the salt from backup; "
            "a new one would make every pinned disclosure set unreachable",
            field="state_dir",
        )
    backend = open_backend(config.state_url)
    try:
        # replicas on one database hash subjects with one salt and sign with one key
        backend.adopt_salt(salt_path)
        salt = backend.share_salt(load_or_create_salt(salt_path))
        consent_key = _consent_key(config)
        backend.check_consent_key(consent_key)
        verifier = TokenVerifier.from_file(
            config.issuer_public_key,
            issuer=config.token_issuer,
            audience=config.token_audience,
            # with replicas, in the shared database: a single-use token is answered once
            replay_cache=backend.replay_cache(),
            deny_list=token_denial,
        )
        roster = LogRoster.load(config.logs) if config.logs is not None else None
        # signs the coordinator's own part of a subject's file, as each node signs its part
        part_signer = PartSigner.from_tls_files(config.tls)
        # before anything is served: a witness key or roster that cannot be used stops the start
        witnessing = _node_witnessing(config, endpoints)
    except BaseException:
        backend.close()
        raise
    with ExitStack() as opened:
        # each resource is closed again if a later one fails to open
        opened.callback(backend.close)
        if witnessing is not None:
            opened.callback(witnessing.close)
        stores = backend.open(
            config.state_dir, receipt_key=consent_key, receipt_issuer=config.consent_issuer
        )
        opened.callback(close_stores, stores)
        keys = stores.keys
        pool = opened.enter_context(
            closing(
                NodePool(
                    endpoints,
                    tls=config.tls,
                    interceptors=node_interceptors,
                    revocation=revocation,
                    # nodes verify each requester key's proof once: the pool sends it to them
                    key_proofs=keys.modulus_proof,
                )
            )
        )
        audit = opened.enter_context(
            closing(
                AuditLog(
                    path=config.state_dir / "audit.jsonl", salt=salt, service="the coordinator"
                )
            )
        )
        local = (
            open_local_log(
                log=audit,
                signer=log_signer,
                origin=own_origin,
                roster=roster,
                every_entries=config.checkpoint_every,
                every_s=config.checkpoint_interval_s,
            )
            if log_signer is not None
            else None
        )
        service = CoordinatorService(
            catalogue=catalogue,
            nodes=pool,
            policy=policy,
            verifier=verifier,
            consents=stores.consents,
            keys=keys,
            ledger=stores.disclosures,
            epsilon_ledger=stores.epsilon,
            rate_limiter=stores.rate_limiter,
            audit=audit,
            deadline_s=config.deadline_s,
            encryptors=EncryptorCache(max_bytes=config.table_cache_bytes),
            part_signer=part_signer,
            # the coordinator's part of a subject's file proves its lines to this log's checkpoints
            transparency=local,
        )
        servicer = CoordinatorServicer(service)
        readers = AuditLogReaders(
            context=service.context,
            authenticate=service.authenticate,
            new_query_id=new_query_id,
            departments=pool.departments,
            own_origin=own_origin,
        )
        transparency = TransparencyServicer(
            local=local, authorize=readers.authorize, relay=readers.relay, roster=roster
        )
        # the operator's `osmanthus status`
        status = StatusServicer(
            CoordinatorStatus(context=service.context, endpoints=endpoints, witnessing=witnessing)
        )
        server = start_server(
            register=[
                lambda s: coordinator_pb2_grpc.add_CoordinatorServiceServicer_to_server(
                    servicer, s
                ),
                lambda s: transparency_pb2_grpc.add_TransparencyServiceServicer_to_server(
                    transparency, s
                ),
                lambda s: status_pb2_grpc.add_StatusServiceServicer_to_server(status, s),
            ],
            service_names=[
                COORDINATOR_SERVICE_NAME,
                TRANSPARENCY_SERVICE_NAME,
                STATUS_SERVICE_NAME,
            ],
            listen=config.listen,
            tls=config.tls,
            interceptors=server_interceptors,
            revocation=revocation,
            token_denial=token_denial,
            metrics_listen=config.metrics_listen,
        )
        opened.pop_all()  # the running server owns them now
    # a coordinator that cannot write its audit log refuses every query: its health says so
    server.follow_audit(audit)
    if local is not None:
        local.start()
        # stopped before the service closes the audit log its checkpointer reads
        server.on_stop.append(local.close)
    server.on_stop.append(service.close)
    if watcher is not None:
        server.on_stop.append(watcher.close)
        watcher.start()
    if witnessing is not None:
        # stopped first: a round in flight ends before the channels it uses close
        server.on_stop.insert(0, witnessing.close)
        witnessing.start()
    return RunningCoordinator(server, service, witnessing)


def _node_witnessing(
    config: CoordinatorConfig, endpoints: Sequence[NodeEndpoint]
) -> NodeWitnessing | None:
    """The witness of the nodes' logs, if the coordinator has a witness key and the roster."""
    if config.witness_key is None or config.logs is None:
        _log.warning(
            "no witness key and roster of logs (--witness-key, --logs): the nodes' audit logs "
            "are not witnessed by the coordinator"
        )
        return None
    witness = Witness(
        signer=read_signer(
            CosignatureSigner,
            config.witness_key,
            expected_name=coordinator_witness_name(config.replica),
            field="witness_key",
        ),
        roster=LogRoster.load(config.logs),
        state_path=config.state_dir / WITNESS_STATE_FILE,
        alarms=FileAlarmSink(config.state_dir / WITNESS_ALARMS_FILE),
    )
    return NodeWitnessing(
        witness=witness,
        endpoints=endpoints,
        tls=config.tls,
        interval_s=config.witness_interval_s,
    )


def _consent_key(config: CoordinatorConfig) -> Ed25519PrivateKey:
    """The receipt-signing key, refusing every way in which it could change without notice."""
    try:
        check_issuer(config.consent_issuer, field="consent_issuer")
    except InvalidArgument as exc:
        raise ConfigError(exc.message, field="consent_issuer") from exc
    if config.consent_key is not None:
        path = config.consent_key
        key = load_consent_key_pair(path, path.with_name(CONSENT_PUBLIC_KEY_FILE))
    else:
        path = config.state_dir / CONSENT_KEY_FILE
        public = config.state_dir / CONSENT_PUBLIC_KEY_FILE
        consents = config.state_dir / CONSENTS_FILE
        if not path.exists() and consents.exists():
            # a new key would sign new receipts that the consent.pub handed out does not verify
            raise ConfigError(
                f"{path} is missing but {consents} exists: restore the consent signing key from "
                "backup (with consent.pub beside it). To sign with a new key knowingly, make "
                "one with 'osmanthus certs consent-key' and pass it with --consent-key; the "
                "receipts already handed out verify only against the old consent.pub",
                field="state_dir",
            )
        # the copy in the state directory is private like the rest; hand out a copy of it
        key = load_or_create_consent_key(path, public, public_mode=PRIVATE_FILE_MODE)
    _log.info(
        "consent receipts are signed as %r with key %s (%s)",
        config.consent_issuer,
        consent_key_id(key.public_key()),
        path,
    )
    return key

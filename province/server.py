"""Assembling the reference provincial receiver from its configuration and serving it over mTLS."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from osmanthus.core.crl import REVOCATION_POLL_S, open_revocation
from osmanthus.core.errors import ConfigError
from osmanthus.core.files import PRIVATE_DIR_MODE, narrow_umask, private_directory
from osmanthus.core.logkeys import witness_name
from osmanthus.core.peers import DEFAULT_RECEIVER_NAME, PeerRole, validate_name
from osmanthus.core.server import RunningServer, start_server
from osmanthus.core.tls import TlsFiles, check_files, identity_of_certificate
from osmanthus.v1 import province_pb2, province_pb2_grpc, transparency_pb2_grpc
from province.senders import load_senders
from province.service import ProvinceService
from province.servicer import ProvinceServicer
from province.store import STORE_FILE, BatchStore
from province.witness import (
    WITNESS_SERVICE_NAME,
    WitnessHost,
    WitnessMetrics,
    WitnessServicer,
    load_witness,
)

PROVINCE_SERVICE_NAME: Final = province_pb2.DESCRIPTOR.services_by_name["ProvinceService"].full_name
DEFAULT_OPERATORS: Final = ("operator",)
STATE_DIR_MODE: Final = PRIVATE_DIR_MODE
#: what the state directory holds, for the log lines and errors about its modes
STATE_WHAT: Final = "the provincial receiver's state (the batches received, and rejections)"

_log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ProvinceConfig:
    senders: Path
    state_dir: Path
    tls: TlsFiles
    listen: str = "127.0.0.1:0"
    #: the node certificate name the receiver serves as
    name: str = DEFAULT_RECEIVER_NAME
    #: operator certificates that may list every batch and rejection
    operators: tuple[str, ...] = DEFAULT_OPERATORS
    #: the platform CA's CRL, followed without a restart: a sender whose certificate it revokes
    #: is refused (None: none is ever revoked)
    crl: Path | None = None
    revocation_poll_s: float = REVOCATION_POLL_S
    #: the receiver's witness key (CosignatureSigner key text, named
    #: "<name>.node.osmanthus/witness"); with `logs`, the receiver also serves WitnessService
    witness_key: Path | None = None
    #: the roster of logs and witnesses (logs.toml): the logs the witness cosigns
    logs: Path | None = None
    #: HOST:PORT to serve the receiver's Prometheus metrics on, its witness's with its RPCs'
    #: (None: not served)
    metrics_listen: str | None = None


def prepare_state_dir(path: Path) -> None:
    """Make this process create its files owner-only from now on (osmanthus.core.files.
    narrow_umask), and create the state directory owner-only, or repair one that others may
    open (0700, files in it 0600; each repair logged)."""
    narrow_umask()
    private_directory(path, what=STATE_WHAT)


def build_service(config: ProvinceConfig) -> ProvinceService:
    """Load and cross-check everything the receiver needs; a mismatch is a ConfigError."""
    validate_name(config.name, field="name")
    check_files(config.tls)
    identity = identity_of_certificate(config.tls.cert)
    if identity.role is not PeerRole.NODE or identity.name != config.name:
        raise ConfigError(
            f"{config.tls.cert} names {identity.role.value} {identity.name!r}; the receiver "
            f"serves with the node certificate {config.name!r} (issue it with 'osmanthus certs "
            f"issue --role node --name {config.name}')",
            field="tls.cert",
        )
    for operator in config.operators:
        validate_name(operator, field="operators")
    registry = load_senders(config.senders)
    prepare_state_dir(config.state_dir)
    store = BatchStore(config.state_dir / STORE_FILE)
    return ProvinceService(registry=registry, store=store, operators=frozenset(config.operators))


def build_witness(config: ProvinceConfig, service: ProvinceService) -> WitnessHost | None:
    """The receiver's witness, if it is given a key and a roster (both, or neither)."""
    if config.witness_key is None and config.logs is None:
        return None
    if config.witness_key is None or config.logs is None:
        missing = "witness_key" if config.witness_key is None else "logs"
        raise ConfigError(
            "the receiver witnesses logs with both a witness key and the roster of logs "
            f"(logs.toml); {missing} is missing",
            field=missing,
        )
    witness = load_witness(
        key=config.witness_key,
        roster=config.logs,
        state_dir=config.state_dir,
        expected_name=witness_name(PeerRole.NODE, config.name),
    )
    return WitnessHost(
        witness=witness, registry=service.registry, operators=frozenset(config.operators)
    )


def start_province(
    config: ProvinceConfig, *, metrics: WitnessMetrics | None = None
) -> RunningServer:
    """Serve ProvinceService (and health), and WitnessService if configured, over mutual TLS
    until stopped. `metrics`: the registry the witness's metrics go to (made here when
    `config.metrics_listen` asks for them and none is given); the process's one endpoint
    (osmanthus.core.metrics) serves it with the RPCs' metrics."""
    revocation = open_revocation(
        config.crl, ca_path=config.tls.ca, interval_s=config.revocation_poll_s
    )
    service = build_service(config)
    servicer = ProvinceServicer(service)
    try:
        witness = build_witness(config, service)
        register = [lambda s: province_pb2_grpc.add_ProvinceServiceServicer_to_server(servicer, s)]
        names = [PROVINCE_SERVICE_NAME]
        if witness is not None:
            witness_servicer = WitnessServicer(witness)
            register.append(
                lambda s: transparency_pb2_grpc.add_WitnessServiceServicer_to_server(
                    witness_servicer, s
                )
            )
            names.append(WITNESS_SERVICE_NAME)
            if metrics is None and config.metrics_listen is not None:
                metrics = WitnessMetrics()
            if metrics is not None:
                metrics.watch(witness.witness)
        running = start_server(
            register=register,
            service_names=names,
            listen=config.listen,
            tls=config.tls,
            revocation=revocation,
            metrics_listen=config.metrics_listen,
            metrics_collectors=(metrics.registry,) if metrics is not None else (),
        )
    except BaseException:
        service.close()
        raise
    running.on_stop.append(service.close)
    if metrics is not None and running.metrics is not None:
        metrics.port = running.metrics.port
    if witness is not None:
        _log.info(
            "witnessing %d logs as %s", len(witness.witness.origins()), witness.witness.signer.name
        )
    return running

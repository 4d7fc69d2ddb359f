"""Consent receipts over real mTLS: a receipt proves a grant; the registry decides every query."""

from __future__ import annotations

import csv
import logging
import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

import sdk
from certs import PeerRole, cert_paths
from coordinator.config import NodeEndpoint, render_nodes
from coordinator.consent import ConsentRegistry
from coordinator.server import CoordinatorConfig, start_coordinator
from osmanthus.core.errors import ConfigError
from osmanthus.core.grpc_errors import FIELD_METADATA_KEY
from osmanthus.core.receipts import (
    CONSENT_KEY_FILE,
    CONSENT_PUBLIC_KEY_FILE,
    consent_key_id,
    generate_consent_keypair,
    load_consent_private_key,
    load_consent_public_key,
)
from osmanthus.core.tls import COORDINATOR_SERVER_NAME, TlsFiles, secure_channel
from osmanthus.core.types import DepartmentId, Role
from osmanthus.v1 import common_pb2, coordinator_pb2, coordinator_pb2_grpc
from sdk import Client, RequesterKeys
from tests.conftest import IssuerKeyPaths
from tests.integration.conftest import Federation, consent_for, restricted_catalogue

BANK = "bank-1"
PURPOSE = "loan_underwriting"
#: a deployment's own receipt issuer (coordinator serve --consent-issuer)
CITY_ISSUER = "https://credit.suzhou.example/consents"
#: an RPC's deadline: only a hung call reaches it, however busy the machine
TIMEOUT_S = 30.0


def _persons(federation: Federation) -> list[str]:
    with federation.data.subjects_file.open() as f:
        return [r["subject_id"] for r in csv.DictReader(f) if r["subject_kind"] == "person"]


def _consent_pub(federation: Federation) -> Path:
    # the session federation's coordinator signs with the key 'certs init' made, whose
    # consent.pub its nodes verify consents with
    return federation.certs / "coordinator" / CONSENT_PUBLIC_KEY_FILE


@pytest.fixture(scope="module")
def bank(federation: Federation) -> Iterator[Client]:
    client = federation.client(BANK, role=Role.BANK, purposes=[PURPOSE])
    client.register_key()
    yield client
    client.close()


def _grant(registrar: Client, person: str, **kw: object) -> sdk.ConsentRecord:
    expires = kw.pop("expires_at", datetime.now(UTC) + timedelta(days=1))
    return registrar.grant_consent(
        subject_id=person,
        grantee=str(kw.pop("grantee", BANK)),
        purpose=str(kw.pop("purpose", PURPOSE)),
        expires_at=expires,  # type: ignore[arg-type]
    )


def test_a_receipt_proves_the_grant_but_only_the_registry_says_it_still_stands(
    federation: Federation, registrar: Client, bank: Client
) -> None:
    person = _persons(federation)[40]
    record = _grant(registrar, person)

    # the bank, holding the receipt and the platform's consent.pub, checks what it attests
    receipt = sdk.verify_consent_receipt(
        record.receipt,
        public_key=_consent_pub(federation),
        grantee=BANK,
        purpose=PURPOSE,
        subject_id=person,
    )
    assert receipt.consent_id == record.consent_id
    assert receipt.expires_at == record.expires_at.replace(microsecond=0)
    assert [c.receipt for c in bank.list_consents(subject_id=person)] == [record.receipt]

    card = bank.person_score(person, purpose=PURPOSE, consent_id=receipt.consent_id)
    assert card.subject_id == person and not card.partial

    revoked = registrar.revoke_consent(record.consent_id)
    assert revoked.revoked_at is not None
    assert revoked.receipt == record.receipt
    # the receipt is as genuine as before: it proves the grant, which did happen...
    sdk.verify_consent_receipt(revoked.receipt, public_key=_consent_pub(federation), grantee=BANK)
    # ...but the very next query is refused, naming the revoked consent
    with pytest.raises(sdk.PermissionDenied) as caught:
        bank.person_score(person, purpose=PURPOSE, consent_id=receipt.consent_id)
    assert caught.value.field == "consent_id"
    assert f"consent {record.consent_id} was revoked at" in caught.value.message


def test_a_receipt_granted_to_someone_else_is_refused_by_the_bank(
    federation: Federation, registrar: Client
) -> None:
    record = _grant(registrar, _persons(federation)[41], grantee="agency-1")
    with pytest.raises(sdk.ReceiptMismatch) as caught:
        sdk.verify_consent_receipt(
            record.receipt, public_key=_consent_pub(federation), grantee=BANK
        )
    assert "is for grantee 'agency-1', not 'bank-1'" in caught.value.message


# --- every consent refusal on the wire ----------------------------------------------------------


@pytest.fixture(scope="module")
def raw_bank(
    federation: Federation, bank: Client
) -> Iterator[coordinator_pb2_grpc.CoordinatorServiceStub]:
    """A raw stub with bank-1's certificate; `bank` has registered bank-1's key."""
    tls = TlsFiles.from_cert_paths(cert_paths(federation.certs, role=PeerRole.REQUESTER, name=BANK))
    with secure_channel(federation.target, tls, server_name=COORDINATOR_SERVER_NAME) as channel:
        yield coordinator_pb2_grpc.CoordinatorServiceStub(channel)


def _unknown(registrar: Client, person: str) -> tuple[str, str]:
    consent_id = "cns_" + "Z" * 22
    return consent_id, f"consent {consent_id} does not exist"


def _revoked(registrar: Client, person: str) -> tuple[str, str]:
    consent_id = consent_for(registrar, person, grantee=BANK)
    registrar.revoke_consent(consent_id)
    return consent_id, f"consent {consent_id} was revoked at "


def _expired(registrar: Client, person: str) -> tuple[str, str]:
    expires = datetime.now(UTC) + timedelta(seconds=1)
    consent_id = _grant(registrar, person, expires_at=expires).consent_id
    time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.2)
    return consent_id, f"consent {consent_id} expired at "


def _other_purpose(registrar: Client, person: str) -> tuple[str, str]:
    consent_id = consent_for(registrar, person, grantee=BANK, purpose="credit_report")
    return consent_id, f"consent {consent_id} is for purpose 'credit_report', not '{PURPOSE}'"


def _other_grantee(registrar: Client, person: str) -> tuple[str, str]:
    consent_id = consent_for(registrar, person, grantee="agency-1")
    return consent_id, f"consent {consent_id} was granted to 'agency-1', not '{BANK}'"


@pytest.mark.parametrize(
    "make", [_unknown, _revoked, _expired, _other_purpose, _other_grantee], ids=lambda f: f.__name__
)
def test_each_consent_refusal_is_permission_denied_naming_the_consent_and_the_problem(
    federation: Federation,
    registrar: Client,
    raw_bank: coordinator_pb2_grpc.CoordinatorServiceStub,
    make: Callable[[Client, str], tuple[str, str]],
) -> None:
    person = _persons(federation)[42]
    consent_id, problem = make(registrar, person)
    request = coordinator_pb2.PersonQueryRequest(
        resident_id=person,
        shape=common_pb2.SHAPE_TOTAL,
        purpose=PURPOSE,
        consent_id=consent_id,
        public_key=common_pb2.PaillierPublicKey(n=federation.keys[BANK].public.to_bytes()),
    )
    token = federation.token(BANK, role=Role.BANK, purposes=[PURPOSE])
    with pytest.raises(grpc.RpcError) as caught:
        raw_bank.PersonQuery(
            request, timeout=TIMEOUT_S, metadata=(("authorization", f"Bearer {token}"),)
        )
    error = caught.value
    assert isinstance(error, grpc.Call)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error.details()
    details = error.details() or ""
    assert details.startswith("consent_id: no valid consent: ")
    assert problem in details
    assert person not in details
    fields = [v for k, v in error.trailing_metadata() or () if k == FIELD_METADATA_KEY]
    assert fields == ["consent_id"]


# --- the consent key made by the platform tooling -------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(
    tmp_path: Path, platform_certs: Path, issuer_keys: IssuerKeyPaths, **kw: Any
) -> CoordinatorConfig:
    """A coordinator of its own; consents need no department node, so one registered at a
    closed port is enough to start."""
    nodes = tmp_path / "nodes.toml"
    nodes.write_text(
        render_nodes([NodeEndpoint(DepartmentId("psb"), f"127.0.0.1:{_closed_port()}")])
    )
    return CoordinatorConfig(
        nodes=nodes,
        tls=TlsFiles.from_cert_paths(
            cert_paths(platform_certs, role=PeerRole.COORDINATOR, name="coordinator")
        ),
        issuer_public_key=issuer_keys.public,
        state_dir=tmp_path / "state",
        **kw,
    )


def test_a_coordinator_signs_with_the_consent_key_the_certs_tooling_made(
    federation: Federation,
    tmp_path: Path,
    platform_certs: Path,
    issuer_keys: IssuerKeyPaths,
    requester_keys: dict[str, RequesterKeys],
    caplog: pytest.LogCaptureFixture,
) -> None:
    coordinator_dir = platform_certs / "coordinator"
    config = _config(
        tmp_path,
        platform_certs,
        issuer_keys,
        consent_key=coordinator_dir / CONSENT_KEY_FILE,
        consent_issuer=CITY_ISSUER,
    )
    catalogue = restricted_catalogue(("psb",))
    person = _persons(federation)[43]

    def registrar_on(port: int) -> Client:
        token = federation.token(
            "registrar", role=Role.PLATFORM_SERVICE, purposes=["consent_management"]
        )
        return Client(
            f"127.0.0.1:{port}",
            tls=federation.tls("registrar"),
            token=token,
            keys=requester_keys["registrar"],
            catalogue=catalogue,
        )

    with caplog.at_level(logging.INFO, logger="coordinator.server"):
        running = start_coordinator(config, catalogue=catalogue)
    try:
        with registrar_on(running.port) as registrar:
            registrar.register_key()
            record = _grant(registrar, person)
    finally:
        running.stop()
    public = coordinator_dir / CONSENT_PUBLIC_KEY_FILE
    key_id = consent_key_id(load_consent_public_key(public))
    started = [r.getMessage() for r in caplog.records if r.name == "coordinator.server"]
    assert f"consent receipts are signed as '{CITY_ISSUER}' with key {key_id}" in started[0]
    receipt = sdk.verify_consent_receipt(
        record.receipt, public_key=public, subject_id=person, issuer=CITY_ISSUER
    )
    assert receipt.consent_id == record.consent_id and receipt.key_id == key_id
    # a verifier that pins the default issuer refuses this deployment's receipts
    with pytest.raises(sdk.UntrustedReceipt, match=f"issuer '{CITY_ISSUER}' is not"):
        sdk.verify_consent_receipt(record.receipt, public_key=public)
    # the key given was used: none was made in the state directory
    assert not (tmp_path / "state" / CONSENT_KEY_FILE).exists()

    # after a restart the registry returns the receipt it gave
    running = start_coordinator(config, catalogue=catalogue)
    try:
        with registrar_on(running.port) as registrar:
            assert [c.receipt for c in registrar.list_consents(subject_id=person)] == [
                record.receipt
            ]
    finally:
        running.stop()


def test_a_consent_key_that_is_not_there_stops_the_coordinator_naming_it(
    tmp_path: Path, platform_certs: Path, issuer_keys: IssuerKeyPaths
) -> None:
    missing = tmp_path / "consent.key"
    config = _config(tmp_path, platform_certs, issuer_keys, consent_key=missing)
    with pytest.raises(ConfigError, match=f"consent private key file {missing} does not exist"):
        start_coordinator(config, catalogue=restricted_catalogue(("psb",)))


@pytest.mark.parametrize("left", [CONSENT_PUBLIC_KEY_FILE, "consents.duckdb"])
def test_a_lost_state_dir_key_is_not_replaced_once_it_was_used(
    tmp_path: Path, platform_certs: Path, issuer_keys: IssuerKeyPaths, left: str
) -> None:
    config = _config(tmp_path, platform_certs, issuer_keys)
    state = config.state_dir
    # what a first start leaves: the key pair and the consents file
    state.mkdir()
    generate_consent_keypair(state / CONSENT_KEY_FILE, state / CONSENT_PUBLIC_KEY_FILE)
    ConsentRegistry(
        state / "consents.duckdb", receipt_key=load_consent_private_key(state / CONSENT_KEY_FILE)
    ).close()
    for name in (CONSENT_KEY_FILE, CONSENT_PUBLIC_KEY_FILE, "consents.duckdb"):
        if name != left:
            (state / name).unlink()
    kept = (state / left).read_bytes()
    with pytest.raises(ConfigError) as caught:
        start_coordinator(config, catalogue=restricted_catalogue(("psb",)))
    assert f"{state / CONSENT_KEY_FILE} is missing but {state / left} exists" in (
        caught.value.message
    )
    assert "restore the consent signing key from backup" in caught.value.message
    assert not (state / CONSENT_KEY_FILE).exists() and (state / left).read_bytes() == kept


def test_a_consent_key_beside_another_keys_public_half_stops_the_coordinator(
    tmp_path: Path, platform_certs: Path, issuer_keys: IssuerKeyPaths
) -> None:
    keys = tmp_path / "keys"
    generate_consent_keypair(keys / CONSENT_KEY_FILE, keys / CONSENT_PUBLIC_KEY_FILE)
    generate_consent_keypair(keys / "other.key", keys / "other.pub")
    (keys / CONSENT_PUBLIC_KEY_FILE).write_bytes((keys / "other.pub").read_bytes())
    config = _config(tmp_path, platform_certs, issuer_keys, consent_key=keys / CONSENT_KEY_FILE)
    with pytest.raises(ConfigError, match="is not the public half of"):
        start_coordinator(config, catalogue=restricted_catalogue(("psb",)))


def test_an_issuer_name_no_receipt_can_carry_stops_the_coordinator(
    tmp_path: Path, platform_certs: Path, issuer_keys: IssuerKeyPaths
) -> None:
    config = _config(tmp_path, platform_certs, issuer_keys, consent_issuer="Suzhou credit")
    with pytest.raises(ConfigError, match="not an issuer name") as caught:
        start_coordinator(config, catalogue=restricted_catalogue(("psb",)))
    assert caught.value.field == "consent_issuer"
    assert not (tmp_path / "state" / CONSENT_KEY_FILE).exists()

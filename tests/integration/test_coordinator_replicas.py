"""Two coordinator replicas on one real PostgreSQL serve one federation of real nodes over mTLS:
a consent through one counts at the other, a revocation through one refuses at once at the
other, the SDK fails over when one stops, and a PostgreSQL outage is a clear UNAVAILABLE that
passes without restarting a replica."""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from certs import PeerRole, cert_paths
from coordinator.server import CoordinatorConfig, RunningCoordinator, start_coordinator
from osmanthus.core.errors import PermissionDenied, Unauthenticated, Unavailable
from osmanthus.core.receipts import CONSENT_KEY_FILE
from osmanthus.core.tls import TlsFiles
from osmanthus.core.types import Role
from sdk import Client
from tests.integration.conftest import Federation
from tests.postgres import Postgres, postgres  # noqa: F401 - the session fixture


@dataclasses.dataclass
class Replicas:
    a: RunningCoordinator
    b: RunningCoordinator
    federation: Federation

    def target(self, *which: RunningCoordinator) -> list[str]:
        return [f"127.0.0.1:{r.port}" for r in which]

    def client(self, requester: str, *, role: Role, purposes: list[str], at: list[str]) -> Client:
        fed = self.federation
        token = fed.token(requester, role=role, purposes=purposes)
        keys = fed.keys[requester]
        return Client(at, tls=fed.tls(requester), token=token, keys=keys, catalogue=fed.catalogue)


@pytest.fixture
def replicas(
    federation: Federation,
    postgres: Postgres,  # noqa: F811
    tmp_path: Path,
) -> Iterator[Replicas]:
    url = postgres.new_database()
    config = dataclasses.replace(_config_of(federation), state_url=url)
    a = start_coordinator(
        dataclasses.replace(config, state_dir=tmp_path / "a"), catalogue=federation.catalogue
    )
    b = start_coordinator(
        dataclasses.replace(config, state_dir=tmp_path / "b"), catalogue=federation.catalogue
    )
    yield Replicas(a, b, federation)
    a.stop()
    b.stop()


def _config_of(federation: Federation) -> CoordinatorConfig:
    return CoordinatorConfig(
        nodes=federation.state_dir.parent / "nodes.toml",
        tls=TlsFiles.from_cert_paths(
            cert_paths(federation.certs, role=PeerRole.COORDINATOR, name="coordinator")
        ),
        issuer_public_key=federation.issuer_keys.public,
        state_dir=federation.state_dir / "unused",
        deadline_s=3.0,
        # the key whose consent.pub the nodes were given: every replica signs with it
        consent_key=federation.certs / "coordinator" / CONSENT_KEY_FILE,
    )


def _person(federation: Federation, index: int) -> str:
    with federation.data.subjects_file.open() as f:
        rows = [r["subject_id"] for r in csv.DictReader(f) if r["subject_kind"] == "person"]
    return rows[index]


def test_consent_and_revocation_through_one_replica_hold_at_the_other(
    replicas: Replicas,
) -> None:
    registrar = replicas.client(
        "registrar", role=Role.PLATFORM_SERVICE,
        purposes=["court_enforcement", "consent_management"], at=replicas.target(replicas.a),
    )  # fmt: skip
    at_b = replicas.client(
        "agency-1", role=Role.CREDIT_AGENCY, purposes=["loan_underwriting"],
        at=replicas.target(replicas.b),
    )  # fmt: skip
    at_a = replicas.client(
        "agency-1", role=Role.CREDIT_AGENCY, purposes=["loan_underwriting"],
        at=replicas.target(replicas.a),
    )  # fmt: skip
    person = _person(replicas.federation, 31)
    try:
        consent = registrar.grant_consent(
            subject_id=person, grantee="agency-1", purpose="loan_underwriting",
            expires_at=datetime.now(UTC) + timedelta(days=1),
        ).consent_id  # fmt: skip
        # granted through A, answered through B (its key registered through B, found at A)
        assert at_b.person_score(person, purpose="loan_underwriting", consent_id=consent)
        assert at_a.person_score(person, purpose="loan_underwriting", consent_id=consent)
        # revoked through B: A, which has just checked it, refuses at the very next query
        revoker = replicas.client(
            "registrar", role=Role.PLATFORM_SERVICE,
            purposes=["court_enforcement", "consent_management"], at=replicas.target(replicas.b),
        )  # fmt: skip
        revoker.revoke_consent(consent)
        revoker.close()
        with pytest.raises(PermissionDenied, match="revoked"):
            at_a.person_score(person, purpose="loan_underwriting", consent_id=consent)
    finally:
        registrar.close()
        at_a.close()
        at_b.close()


def test_the_sdk_fails_over_when_a_replica_stops(replicas: Replicas) -> None:
    client = replicas.client(
        "registrar", role=Role.PLATFORM_SERVICE, purposes=["consent_management"],
        at=replicas.target(replicas.a, replicas.b),
    )  # fmt: skip
    try:
        client.list_consents(grantee="agency-1")
        replicas.a.stop()
        # every call after the stop is answered by B; none needs a new client
        for _ in range(6):
            client.list_consents(grantee="agency-1")
    finally:
        client.close()


def test_postgres_down_is_unavailable_and_the_replica_recovers_without_a_restart(
    replicas: Replicas,
    postgres: Postgres,  # noqa: F811
) -> None:
    client = replicas.client(
        "registrar", role=Role.PLATFORM_SERVICE, purposes=["consent_management"],
        at=replicas.target(replicas.a),
    )  # fmt: skip
    try:
        client.list_consents(grantee="agency-1")
        postgres.stop()
        try:
            with pytest.raises(Unavailable, match="state database is unavailable"):
                client.list_consents(grantee="agency-1")
        finally:
            postgres.start()
        # the same replica, not restarted: the next call reconnects (the first after the
        # restart may still meet a connection of before it)
        try:
            client.list_consents(grantee="agency-1")
        except Unavailable:
            client.list_consents(grantee="agency-1")
    finally:
        client.close()


def test_a_single_use_token_is_answered_once_across_the_replicas(replicas: Replicas) -> None:
    fed = replicas.federation
    token = fed.token(
        "registrar", role=Role.PLATFORM_SERVICE, purposes=["consent_management"], single_use=True
    )
    clients = [
        Client(replicas.target(r), tls=fed.tls("registrar"), token=token,
               keys=fed.keys["registrar"], catalogue=fed.catalogue)
        for r in (replicas.a, replicas.b)
    ]  # fmt: skip
    try:
        clients[0].list_consents(grantee="agency-1")
        # the same token at the other replica is a replay, not a first use there
        with pytest.raises(Unauthenticated, match="already used"):
            clients[1].list_consents(grantee="agency-1")
        with pytest.raises(Unauthenticated, match="already used"):
            clients[0].list_consents(grantee="agency-1")
    finally:
        for client in clients:
            client.close()

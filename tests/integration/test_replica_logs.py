"""Two real coordinator servers on one real PostgreSQL, each serving its own audit log as a
transparency log of its own: the coordinator as `coordinator.osmanthus/audit`, the replica
`east` as `east.coordinator.osmanthus/audit`, each signed with its own key from the roster; a
replica started with another log's key, as it is or renamed, does not start."""

from __future__ import annotations

import dataclasses
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from certs import DEFAULT_OPERATOR_NAME, PeerRole, cert_paths
from certs.logkeys import create_log_key, roster_path
from coordinator.server import RunningCoordinator, start_coordinator
from osmanthus.core.errors import ConfigError, PermissionDenied
from osmanthus.core.logkeyfiles import read_signer
from osmanthus.core.logkeys import LOG_KEY_FILE, ROSTER_FILE, LogRoster, coordinator_log_origin
from osmanthus.core.peers import COORDINATOR_DNS_NAME
from osmanthus.core.signednote import NoteSigner, open_note, parse_checkpoint
from osmanthus.core.tls import TlsFiles
from osmanthus.core.types import Role
from sdk import Client
from sdk.transparency import TransparencyClient
from tests.integration.conftest import Federation
from tests.integration.test_coordinator_replicas import _config_of
from tests.postgres import Postgres, postgres  # noqa: F401 - the session fixture

COORDINATOR = coordinator_log_origin(None)
EAST = coordinator_log_origin("east")


@dataclasses.dataclass
class Pair:
    a: RunningCoordinator
    b: RunningCoordinator
    roster: LogRoster
    operator: TlsFiles


@pytest.fixture
def ca(federation: Federation, tmp_path: Path) -> Path:
    """The platform's roster with replica east's own log key added, as 'certs log-key
    --role coordinator --replica east' adds it (a copy: the federation's stays as it is)."""
    ca = tmp_path / "ca"
    (ca / "coordinator").mkdir(parents=True)
    shutil.copy(federation.certs / ROSTER_FILE, ca / ROSTER_FILE)
    create_log_key(ca, role=PeerRole.COORDINATOR, name="coordinator", replica="east")
    return ca


@pytest.fixture
def pair(
    federation: Federation,
    postgres: Postgres,  # noqa: F811
    ca: Path,
    tmp_path: Path,
) -> Iterator[Pair]:
    config = dataclasses.replace(
        _config_of(federation), state_url=postgres.new_database(), logs=roster_path(ca)
    )
    a = start_coordinator(
        dataclasses.replace(
            config,
            state_dir=tmp_path / "a",
            log_key=federation.certs / "coordinator" / LOG_KEY_FILE,
        ),
        catalogue=federation.catalogue,
    )
    try:
        b = start_coordinator(
            dataclasses.replace(
                config,
                state_dir=tmp_path / "b",
                replica="east",
                log_key=ca / "coordinator" / "replicas" / "east" / LOG_KEY_FILE,
            ),
            catalogue=federation.catalogue,
        )
    except BaseException:
        a.stop()
        raise
    operator = TlsFiles.from_cert_paths(
        cert_paths(federation.certs, role=PeerRole.OPERATOR, name=DEFAULT_OPERATOR_NAME)
    )
    yield Pair(a, b, LogRoster.load(roster_path(ca)), operator)
    a.stop()
    b.stop()


def _logs(pair: Pair, at: RunningCoordinator) -> TransparencyClient:
    # every replica serves the coordinator's certificate
    return TransparencyClient.connect(
        f"127.0.0.1:{at.port}", tls=pair.operator, server_name=COORDINATOR_DNS_NAME
    )


def test_each_replica_serves_its_own_log_signed_with_its_own_key(
    pair: Pair, federation: Federation
) -> None:
    # a decision at each replica, each in that replica's log only
    token = federation.token(
        "registrar", role=Role.PLATFORM_SERVICE, purposes=["consent_management"]
    )
    for replica in (pair.a, pair.b):
        with Client(
            f"127.0.0.1:{replica.port}",
            tls=federation.tls("registrar"),
            token=token,
            keys=federation.keys["registrar"],
            catalogue=federation.catalogue,
        ) as client:
            client.list_consents(grantee="agency-1")
    notes = {}
    for replica, origin, other in ((pair.a, COORDINATOR, EAST), (pair.b, EAST, COORDINATOR)):
        with _logs(pair, replica) as logs:
            note = logs.get_checkpoint_note(origin)
            # the other replica's log is not this one's own: each is read where it is written
            with pytest.raises(PermissionDenied, match="its own log"):
                logs.get_checkpoint_note(other)
        opened = open_note(note, [pair.roster.log_verifier(origin)])
        assert parse_checkpoint(opened.text).origin == origin
        notes[origin] = note
    # signed by different keys: neither log's note passes for the other's
    with pytest.raises(Exception, match="trusted"):
        open_note(notes[EAST], [pair.roster.log_verifier(COORDINATOR)])


def test_a_replica_given_another_logs_key_does_not_start(
    federation: Federation,
    postgres: Postgres,  # noqa: F811
    ca: Path,
    tmp_path: Path,
) -> None:
    config = dataclasses.replace(
        _config_of(federation),
        state_url=postgres.new_database(),
        logs=roster_path(ca),
        state_dir=tmp_path / "west",
        replica="west",
    )
    shared = federation.certs / "coordinator" / LOG_KEY_FILE
    # a replica with a witness key: refused before anything is opened (a witness state per
    # replica would let a department have two histories cosigned)
    with pytest.raises(ConfigError, match="does not witness") as e:
        start_coordinator(
            dataclasses.replace(config, witness_key=federation.certs / "coordinator" / "x.key")
        )
    assert e.value.field == "witness_key"
    # the coordinator's log.key as it is: named for the coordinator's log
    with pytest.raises(
        ConfigError, match=re.escape("not of 'west.coordinator.osmanthus/audit'")
    ) as e:
        start_coordinator(dataclasses.replace(config, log_key=shared))
    assert e.value.field == "log_key"
    # renamed for the replica: its public half is the one the roster lists for the coordinator
    key = read_signer(NoteSigner, shared, expected_name=None, field="log_key")
    renamed = tmp_path / "renamed.key"
    renamed.write_text(
        NoteSigner(
            name=coordinator_log_origin("west"), private_key=key._private_key
        ).signer_key_text()
    )
    renamed.chmod(0o600)
    with pytest.raises(
        ConfigError, match=re.escape("for coordinator.osmanthus/audit, not for")
    ) as e:
        start_coordinator(dataclasses.replace(config, log_key=renamed))
    assert e.value.field == "log_key"

"""The sync job carries every log's checkpoint to the provincial witness, and reports refusals.

A real federation (nodes and coordinator over mutual TLS, each signing its audit log's
checkpoints with the log.key of its own certificates directory), a real receiver serving
WitnessService with its witness.key, and the job run in-process (`open_job`, as `sync run` runs
it) with `[checkpoints]` in its sync.toml. The receiver's roster is the platform's with one
log's key replaced (a log signing with a key the province does not trust) and one log left out:
each is an alarm in the run's summary and metrics, and every other log is cosigned all the same.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import generate_latest

from certs import DEFAULT_OPERATOR_NAME, PeerRole, cert_paths, init_platform, issue_certificate
from certs.logkeys import create_log_key
from osmanthus.core import signing
from osmanthus.core.carrier import peek_checkpoint
from osmanthus.core.logkeys import LogRoster, log_origin, witness_name
from osmanthus.core.peers import COORDINATOR_DNS_NAME, PROVINCE_SERVER_NAME
from osmanthus.core.server import RunningServer
from osmanthus.core.signednote import NoteSigner, NoteVerifier
from osmanthus.core.tls import TlsFiles, node_server_name
from osmanthus.core.types import Role
from osmanthus.demo.seed import SeedReport
from province.server import ProvinceConfig, start_province
from sdk import RequesterKeys
from sdk.transparency import TransparencyClient, WitnessClient, verify_checkpoint
from syncjob.config import load_config
from syncjob.job import RunSummary
from syncjob.metrics import SyncMetrics
from syncjob.runner import open_job
from tests.conftest import IssuerKeyPaths
from tests.integration.conftest import (
    Federation,
    restricted_catalogue,
    start_federation,
    stop_federation,
)
from tests.waiting import wait_until

DEPARTMENTS = ("psb", "court", "tax")
COORDINATOR_LOG = log_origin(PeerRole.COORDINATOR, "coordinator")
PROVINCE_WITNESS = witness_name(PeerRole.NODE, "province")
#: the province trusts another key for tax's log, and does not know court's
WRONG_KEY = log_origin(PeerRole.NODE, "tax")
UNKNOWN = log_origin(PeerRole.NODE, "court")
HONEST = log_origin(PeerRole.NODE, "psb")


@dataclasses.dataclass
class Rig:
    root: Path
    certs: Path
    federation: Federation
    receiver: RunningServer
    config: Path

    def run(self) -> tuple[RunSummary, str]:
        metrics = SyncMetrics()
        with open_job(
            load_config(self.config),
            stop=threading.Event(),
            metrics=metrics,
            progress=lambda _: None,
            grade_progress=lambda done, total: None,
        ) as job:
            summary = job.run_once()
        return summary, generate_latest(metrics.registry).decode("utf-8")

    def coordinator_size(self) -> int:
        tls = TlsFiles.from_cert_paths(
            cert_paths(self.certs, role=PeerRole.OPERATOR, name=DEFAULT_OPERATOR_NAME)
        )
        with TransparencyClient.connect(
            self.federation.target, tls=tls, server_name=COORDINATOR_DNS_NAME
        ) as client:
            return peek_checkpoint(client.get_checkpoint_note()).size

    def node_note(self, department: str) -> bytes:
        tls = TlsFiles.from_cert_paths(
            cert_paths(self.certs, role=PeerRole.COORDINATOR, name="coordinator")
        )
        with TransparencyClient.connect(
            f"127.0.0.1:{self.federation.nodes[department].port}",
            tls=tls,
            server_name=node_server_name(department),
        ) as client:
            return client.get_checkpoint_note(log_origin(PeerRole.NODE, department))


@pytest.fixture(scope="module")
def rig(
    tmp_path_factory: pytest.TempPathFactory,
    seeded: SeedReport,
    issuer_keys: IssuerKeyPaths,
    requester_keys: dict[str, RequesterKeys],
) -> Iterator[Rig]:
    root = tmp_path_factory.mktemp("sync-checkpoints")
    # a platform of its own: the province's witness key must be in the roster the logs trust
    certs = root / "certs"
    init_platform(certs, departments=DEPARTMENTS, requesters=("sync-1",))
    witness = create_log_key(certs, role=PeerRole.NODE, name="province", witness=True)
    receiver_tls = TlsFiles.from_cert_paths(
        issue_certificate(
            certs, role=PeerRole.NODE, name="province", out_dir=root / "receiver-cert"
        )
    )
    federation = start_federation(
        root / "federation",
        catalogue=restricted_catalogue(DEPARTMENTS),
        data=seeded,
        certs=certs,
        issuer_keys=issuer_keys,
        keys=requester_keys,
        departments=DEPARTMENTS,
        transparency=True,
        checkpoint_every=1,
    )
    full = LogRoster.load(certs / "logs.toml")
    impostor = NoteSigner(name=WRONG_KEY, private_key=Ed25519PrivateKey.generate())
    province_roster = LogRoster(
        logs={
            **{o: k for o, k in full.logs.items() if o != UNKNOWN},
            WRONG_KEY: NoteVerifier.from_key_text(impostor.verifier_key),
        },
        witnesses=full.witnesses,
    )
    province_roster.dump(root / "province-logs.toml")
    (root / "keys").mkdir()
    private, public, _ = signing.write_key_pair(root / "keys", "suzhou-sync", what="sender key")
    senders = root / "senders.toml"
    senders.write_text(
        f'[[sender]]\nid = "suzhou"\npublic_keys = ["{public}"]\ncertificates = ["sync-1"]\n'
    )
    receiver = start_province(
        ProvinceConfig(
            senders=senders,
            state_dir=root / "province",
            tls=receiver_tls,
            witness_key=witness.private,
            logs=root / "province-logs.toml",
        )
    )
    paillier = root / "sync-1.paillier"
    fd = os.open(paillier, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(federation.keys["sync-1"].private.to_json())
    token = root / "sync-1.jwt"
    token.write_text(
        federation.token(
            "sync-1",
            role=Role.SYNC_JOB,
            purposes=["credit_rescoring", "statistics"],
            ttl=datetime.timedelta(hours=2),
        )
    )
    config = root / "sync.toml"
    config.write_text(
        f"""
sender = "suzhou"
signing_key = "{private}"
state_dir = "{root / "sync-state"}"

[coordinator]
target = "{federation.target}"
requester = "sync-1"
token_file = "{token}"
paillier_keys = "{paillier}"
certs_dir = "{certs}"

[province]
target = "127.0.0.1:{receiver.port}"

[lists]
enabled = false

[checkpoints]
logs = "{certs / "logs.toml"}"
""",
        encoding="utf-8",
    )
    made = Rig(root=root, certs=certs, federation=federation, receiver=receiver, config=config)
    yield made
    receiver.stop(grace=0.5)
    stop_federation(federation)


def _sample(text: str, name: str, **labels: str) -> float:
    wanted = "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
    for line in text.splitlines():
        if line.startswith(name + wanted + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _alarms(summary: RunSummary) -> dict[str, str]:
    return {a.split(": ", 2)[0]: a.split(": ", 2)[1] for a in summary.alarms}


def test_each_run_carries_every_log_and_reports_each_refusal(rig: Rig) -> None:
    summary, metrics = rig.run()
    # the coordinator's log and psb's are cosigned by the province and hold its cosignature
    assert set(summary.checkpoints) == {COORDINATOR_LOG, HONEST}
    roster = LogRoster.load(rig.certs / "logs.toml")
    checked = verify_checkpoint(
        rig.node_note("psb"),
        log_key=roster.log_verifier(HONEST),
        witnesses=roster.witness_verifiers(),
    )
    assert PROVINCE_WITNESS in checked.cosigned_at
    assert checked.size == summary.checkpoints[HONEST]
    # tax signs with the key the province does not trust; court's log it does not know: each
    # an alarm in the summary, the run's errors and exit code, and the metrics
    assert _alarms(summary) == {WRONG_KEY: "bad_signature", UNKNOWN: "unknown_origin"}
    assert any(UNKNOWN in e and "knows no log" in e for e in summary.errors)
    assert summary.exit_code != 0
    assert "WITNESS ALARMS" in summary.line()
    for origin, reason in _alarms(summary).items():
        assert _sample(metrics, "osmanthus_sync_checkpoint_alarms_total", origin=origin,
                       reason=reason) == 1  # fmt: skip
    assert _sample(metrics, "osmanthus_sync_checkpoints_cosigned_total", origin=HONEST) == 1
    # nothing changed: the next run sends nothing new for the logs already cosigned, and
    # reports the refusals again (they are not remembered away)
    again, _ = rig.run()
    assert set(_alarms(again)) == {WRONG_KEY, UNKNOWN}
    assert HONEST not in again.checkpoints or again.checkpoints[HONEST] > checked.size


def test_a_grown_log_is_cosigned_again_from_the_size_the_witness_holds(rig: Rig) -> None:
    rig.run()
    with WitnessClient.connect(
        f"127.0.0.1:{rig.receiver.port}",
        tls=TlsFiles.from_cert_paths(cert_paths(rig.certs, role=PeerRole.REQUESTER, name="sync-1")),
        server_name=PROVINCE_SERVER_NAME,
    ) as witness:
        held = peek_checkpoint(witness.get_witnessed_note(COORDINATOR_LOG)).size
    # the job's reads through the coordinator are audited decisions in the coordinator's own
    # log: it grew, and its checkpointer signs a checkpoint per entry here
    wait_until(
        lambda: rig.coordinator_size() > held, what="a new checkpoint of the coordinator's log"
    )
    summary, metrics = rig.run()
    assert summary.checkpoints[COORDINATOR_LOG] > held
    assert COORDINATOR_LOG not in _alarms(summary)
    assert (
        _sample(metrics, "osmanthus_sync_checkpoints_cosigned_total", origin=COORDINATOR_LOG) == 1
    )

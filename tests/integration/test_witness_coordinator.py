"""The coordinator witnesses the nodes' logs: real coordinator, real node logs, over mutual TLS.

Each node log here is a real AuditLog with its real checkpointer (osmanthus.core.logserver, as
`node serve` runs it) and TransparencyService on 127.0.0.1 with the department's certificate
from the session's platform CA, signing with the department's log.key from `certs init`. The
coordinator is started by `start_coordinator` with its witness.key and logs.toml. A node
operator then rewrites the history in each way a log can be rewritten (an entry changed and
the tree rebuilt, entries removed, a fork at the same size, another key), restarts the node's
log so that it signs a fresh checkpoint with its real key, and the coordinator's witness refuses
it: an alarm in the coordinator's log at ERROR, counted, and no cosignature handed back.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from certs import PeerRole, cert_paths
from coordinator.config import NodeEndpoint, render_nodes
from coordinator.server import CoordinatorConfig, RunningCoordinator, start_coordinator
from osmanthus.core.audit import AuditEntry, AuditLog
from osmanthus.core.checkpoints import history_path, latest_path
from osmanthus.core.logkeyfiles import read_signer
from osmanthus.core.logkeys import LogRoster, log_origin, witness_name
from osmanthus.core.logserver import LocalLog, TransparencyServicer, open_local_log
from osmanthus.core.peers import COORDINATOR_NAME
from osmanthus.core.server import Caller, RunningServer, start_server
from osmanthus.core.signednote import NoteSigner
from osmanthus.core.tls import TlsFiles, node_server_name
from osmanthus.core.types import DepartmentId
from osmanthus.v1 import transparency_pb2, transparency_pb2_grpc
from sdk.transparency import TransparencyClient, verify_checkpoint
from tests.conftest import IssuerKeyPaths

TRANSPARENCY_SERVICE = transparency_pb2.DESCRIPTOR.services_by_name["TransparencyService"].full_name
COORDINATOR_WITNESS = witness_name(PeerRole.COORDINATOR, COORDINATOR_NAME)
T0 = datetime.datetime(2026, 11, 26, 2, 0, tzinfo=datetime.UTC)


def coordinator_only(caller: Caller, method: str, origin: str) -> None:
    """The node's rule: its log is read and cosigned by the coordinator (and nobody here)."""
    from osmanthus.core.errors import PermissionDenied

    if caller.peer.role is not PeerRole.COORDINATOR:
        raise PermissionDenied(f"{caller.peer.role.value} may not call {method}")


def entry(n: int) -> AuditEntry:
    return AuditEntry(
        time=T0 + datetime.timedelta(seconds=n),
        query_id=f"q{n:04d}",
        requester="bank-1",
        purpose="loan_underwriting",
        consent_id="",
        policy_hash="0" * 64,
        decision="allow",
        reason="",
        shape="TOTAL",
        subject_hash="",
    )


class NodeLog:
    """A department's audit log served as a transparency log, as its operator runs it."""

    def __init__(self, directory: Path, department: str, certs: Path, roster: Path) -> None:
        self.department = department
        self.origin = log_origin(PeerRole.NODE, department)
        self.path = directory / "audit.jsonl"
        self.key = read_signer(
            NoteSigner,
            certs / "nodes" / department / "log.key",
            expected_name=self.origin,
            field="log_key",
        )
        self.roster = LogRoster.load(roster)
        self.tls = TlsFiles.from_cert_paths(cert_paths(certs, role=PeerRole.NODE, name=department))
        self.port = 0
        self.written = 0
        self.local: LocalLog | None = None
        self.server: RunningServer | None = None

    def start(self, *, signer: NoteSigner | None = None) -> None:
        log = AuditLog(path=self.path, salt=b"s" * 32)
        # only what this test asks for is signed: no timer, no count
        self.local = open_local_log(
            log=log,
            signer=signer or self.key,
            origin=self.origin,
            roster=None if signer else self.roster,
            every_entries=10**9,
            every_s=10**9,
        )
        servicer = TransparencyServicer(local=self.local, authorize=coordinator_only)
        self.server = start_server(
            register=[
                lambda s: transparency_pb2_grpc.add_TransparencyServiceServicer_to_server(
                    servicer, s
                )
            ],
            service_names=[TRANSPARENCY_SERVICE],
            listen=f"127.0.0.1:{self.port}",
            tls=self.tls,
        )
        self.port = self.server.port

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(grace=0.5)
            self.server = None
        if self.local is not None:
            self.local.close()
            self.local.log.close()
            self.local = None

    def append(self, n: int) -> None:
        assert self.local is not None
        for _ in range(n):
            self.local.log.append(entry(self.written))
            self.written += 1
        self.local.checkpointer.issue()

    def rewrite(
        self, change: Callable[[list[bytes]], list[bytes]], *, signer: NoteSigner | None = None
    ) -> None:
        """The operator rewrites the log file and everything that would betray it (its tree,
        its checkpoint history), then restarts: the checkpointer signs the new history."""
        self.stop()
        lines = self.path.read_bytes().splitlines(keepends=True)
        self.path.write_bytes(b"".join(change(lines)))
        for tree in self.path.parent.glob(self.path.name + ".tree.*"):
            tree.unlink()
        for gone in (latest_path(self.path), history_path(self.path)):
            gone.unlink(missing_ok=True)
        self.start(signer=signer)

    def served_note(self, coordinator_tls: TlsFiles) -> bytes:
        with TransparencyClient.connect(
            f"127.0.0.1:{self.port}",
            tls=coordinator_tls,
            server_name=node_server_name(self.department),
        ) as client:
            return client.get_checkpoint_note(self.origin)


@dataclasses.dataclass
class Federation:
    coordinator: RunningCoordinator
    config: CoordinatorConfig
    psb: NodeLog
    tax: NodeLog
    roster: LogRoster
    tls: TlsFiles

    def round(self) -> dict[str, int]:
        assert self.coordinator.witnessing is not None
        return self.coordinator.witnessing.witness_once().cosigned

    def alarms(self) -> dict[tuple[str, str], int]:
        assert self.coordinator.witnessing is not None
        return dict(self.coordinator.witnessing.alarm_counts())

    def cosigned_by_coordinator(self, node: NodeLog) -> bool:
        checked = verify_checkpoint(
            node.served_note(self.tls),
            log_key=self.roster.log_verifier(node.origin),
            witnesses=self.roster.witness_verifiers(),
        )
        return COORDINATOR_WITNESS in checked.cosigned_at


@pytest.fixture
def federation(
    tmp_path: Path, platform_certs: Path, issuer_keys: IssuerKeyPaths
) -> Iterator[Federation]:
    # the roster lists psb's log, not tax's: tax is not witnessed
    full = LogRoster.load(platform_certs / "logs.toml")
    roster = LogRoster(
        logs={o: k for o, k in full.logs.items() if o.startswith("psb.")},
        witnesses=full.witnesses,
    )
    roster.dump(tmp_path / "logs.toml")
    psb = NodeLog(tmp_path / "psb", "psb", platform_certs, tmp_path / "logs.toml")
    tax = NodeLog(tmp_path / "tax", "tax", platform_certs, platform_certs / "logs.toml")
    for node in (psb, tax):
        node.path.parent.mkdir()
        node.start()
    nodes = tmp_path / "nodes.toml"
    nodes.write_text(
        render_nodes(
            [
                NodeEndpoint(DepartmentId("psb"), f"127.0.0.1:{psb.port}"),
                NodeEndpoint(DepartmentId("tax"), f"127.0.0.1:{tax.port}"),
            ]
        ),
        encoding="utf-8",
    )
    tls = TlsFiles.from_cert_paths(
        cert_paths(platform_certs, role=PeerRole.COORDINATOR, name=COORDINATOR_NAME)
    )
    config = CoordinatorConfig(
        nodes=nodes,
        tls=tls,
        issuer_public_key=issuer_keys.public,
        state_dir=tmp_path / "coordinator",
        witness_key=platform_certs / "coordinator" / "witness.key",
        logs=tmp_path / "logs.toml",
        # no background rounds: the tests drive every round
        witness_interval_s=0,
    )
    coordinator = start_coordinator(config)
    federation = Federation(coordinator, config, psb, tax, roster, tls)
    yield federation
    coordinator.stop()
    psb.stop()
    tax.stop()


def test_an_honest_node_log_is_cosigned_as_it_grows(federation: Federation) -> None:
    psb = federation.psb
    # a node that has answered nothing yet: its checkpoint of the empty tree is cosigned, and
    # every tree extends the empty one
    assert federation.round() == {psb.origin: 0}
    for grow in (3, 1, 40):
        psb.append(grow)
        assert federation.round() == {psb.origin: psb.written}
        # the node serves the coordinator's cosignature with its checkpoint, and it verifies
        # with the witness key the roster lists
        assert federation.cosigned_by_coordinator(psb)
    assert federation.coordinator.witnessing is not None
    again = federation.coordinator.witnessing.witness_once()
    assert again.cosigned == {} and again.unchanged == [psb.origin]
    # tax's log is not in this roster: the coordinator never asks for it
    assert psb.origin in federation.coordinator.witnessing.origins
    assert federation.tax.origin not in federation.coordinator.witnessing.origins
    assert federation.alarms() == {}


def _expect_alarm(
    federation: Federation, caplog: pytest.LogCaptureFixture, reason: str, message: str
) -> None:
    assert federation.coordinator.witnessing is not None
    with caplog.at_level(logging.ERROR):
        report = federation.coordinator.witnessing.witness_once()
    psb = federation.psb
    assert report.cosigned == {}
    assert report.alarms == {psb.origin: reason}
    assert message in str(report.refused[psb.origin])
    assert federation.alarms() == {(psb.origin, reason): 1}
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(psb.origin in e and reason in e for e in errors), errors
    assert not federation.cosigned_by_coordinator(psb)


def test_a_changed_entry_is_an_alarm(
    federation: Federation, caplog: pytest.LogCaptureFixture
) -> None:
    psb = federation.psb
    psb.append(10)
    assert federation.round() == {psb.origin: 10}

    def change(lines: list[bytes]) -> list[bytes]:
        lines[4] = lines[4].replace(b'"allow"', b'"deny"')
        return lines

    psb.rewrite(change)
    psb.append(2)  # a new checkpoint of 12, signed with the node's real key
    _expect_alarm(federation, caplog, "inconsistent", "from size 10 to 12 does not verify")


def test_a_rollback_is_an_alarm(federation: Federation, caplog: pytest.LogCaptureFixture) -> None:
    psb = federation.psb
    psb.append(10)
    assert federation.round() == {psb.origin: 10}
    psb.rewrite(lambda lines: lines[:6])  # entries removed; the log signs a checkpoint of 6
    _expect_alarm(federation, caplog, "rollback", "size 6 after size 10")


def test_a_fork_at_the_same_size_is_an_alarm(
    federation: Federation, caplog: pytest.LogCaptureFixture
) -> None:
    psb = federation.psb
    psb.append(10)
    assert federation.round() == {psb.origin: 10}
    psb.rewrite(lambda lines: [*lines[:3], lines[4], lines[3], *lines[5:]])  # two reordered
    _expect_alarm(federation, caplog, "fork", "forked: checkpoint at size 10")


def test_a_checkpoint_signed_with_another_key_is_an_alarm(
    federation: Federation, caplog: pytest.LogCaptureFixture
) -> None:
    psb = federation.psb
    psb.append(4)
    assert federation.round() == {psb.origin: 4}
    # the operator signs with a key of its own under the log's name
    psb.rewrite(
        lambda lines: lines,
        signer=NoteSigner(name=psb.origin, private_key=Ed25519PrivateKey.generate()),
    )
    psb.append(1)
    assert federation.coordinator.witnessing is not None
    with caplog.at_level(logging.ERROR):
        report = federation.coordinator.witnessing.witness_once()
    assert report.alarms == {psb.origin: "bad_signature"}
    assert "no valid signature by the log's key" in str(report.refused[psb.origin])
    assert federation.alarms() == {(psb.origin, "bad_signature"): 1}


def test_the_witness_remembers_across_a_coordinator_restart(
    federation: Federation, caplog: pytest.LogCaptureFixture
) -> None:
    psb = federation.psb
    psb.append(10)
    assert federation.round() == {psb.origin: 10}
    federation.coordinator.stop()
    federation.coordinator = start_coordinator(federation.config)
    psb.rewrite(lambda lines: lines[:6])
    _expect_alarm(federation, caplog, "rollback", "size 6 after size 10")

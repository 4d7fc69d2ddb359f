"""`osmanthus audit --live` against a real TransparencyService over mutual TLS.

Real components: the tax node's LocalLog (an AuditLog, its Checkpointer signing with the log key
named after its origin, a witness cosignature it keeps) served by the node's own
TransparencyServicer and authorization on 127.0.0.1 with a certificate from the session's
platform CA; the auditor is the tax department's operator certificate. An entry edited on disk
under the running server is named exactly: the log's own consistency proofs find it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from certs import PeerRole, issue_certificate
from node.transparency import node_log_readers
from osmanthus.cli import main
from osmanthus.cli.exit_codes import ExitCode
from osmanthus.core import merkle
from osmanthus.core.audit import AuditEntry, AuditLog, load_or_create_salt
from osmanthus.core.checkpoints import Checkpointer
from osmanthus.core.logkeys import LogRoster, log_origin
from osmanthus.core.logserver import TRANSPARENCY_SERVICE_NAME, LocalLog, TransparencyServicer
from osmanthus.core.server import RunningServer, start_server
from osmanthus.core.signednote import (
    CosignatureSigner,
    CosignatureVerifier,
    NoteSigner,
    NoteVerifier,
)
from osmanthus.core.tls import TlsFiles
from osmanthus.core.types import DepartmentId
from osmanthus.v1 import transparency_pb2_grpc

DEPARTMENT = "tax"
ORIGIN = log_origin(PeerRole.NODE, DEPARTMENT)
ENTRIES = 2500  # more than two pages of GetEntries
SIGNER = NoteSigner(name=ORIGIN, private_key=Ed25519PrivateKey.generate())
WITNESS = CosignatureSigner(
    name="coordinator.osmanthus/witness", private_key=Ed25519PrivateKey.generate()
)
FAILED = int(ExitCode.LOG_FAILED_VERIFICATION)


@dataclass
class Served:
    log_path: Path
    server: RunningServer
    local: LocalLog
    operator: TlsFiles
    roster: Path

    def args(self) -> list[str]:
        return [
            "--live",
            f"127.0.0.1:{self.server.port}",
            "--origin",
            ORIGIN,
            "--ca",
            str(self.operator.ca),
            "--cert",
            str(self.operator.cert),
            "--key",
            str(self.operator.key),
            "--logs",
            str(self.roster),
        ]


def _entry(log: AuditLog, n: int) -> AuditEntry:
    return AuditEntry(
        time=datetime(2026, 11, 26, 10, 0, n % 60, tzinfo=UTC),
        query_id=f"q_{n:06d}",
        requester="bank-of-suzhou",
        purpose="tax_bank_loan",
        consent_id="cns_abcdefghijklmnopqrstuv",
        policy_hash="cd" * 32,
        decision="allow",
        reason="permitted by central-tax-bank-loan",
        shape="flags",
        subject_hash=log.subject_hash(f"91320505MA1{n:07d}"),
        extra={},
    )


@pytest.fixture
def served(tmp_path: Path, platform_certs: Path) -> Iterator[Served]:
    certs = tmp_path / "certs"
    node_tls = TlsFiles.from_cert_paths(
        issue_certificate(platform_certs, role=PeerRole.NODE, name=DEPARTMENT, out_dir=certs)
    )
    operator = TlsFiles.from_cert_paths(
        issue_certificate(
            platform_certs, role=PeerRole.OPERATOR, name=DEPARTMENT, out_dir=tmp_path / "op"
        )
    )
    roster = tmp_path / "logs.toml"
    witness_key = CosignatureVerifier(name=WITNESS.name, public_key=WITNESS.public_key)
    LogRoster(
        logs={ORIGIN: NoteVerifier(name=ORIGIN, public_key=SIGNER.public_key)},
        witnesses={WITNESS.name: witness_key},
    ).dump(roster)
    path = tmp_path / "state" / "audit.jsonl"
    path.parent.mkdir()
    log = AuditLog(path=path, salt=load_or_create_salt(path.parent / "audit.salt"))
    checkpointer = Checkpointer(log=log, signer=SIGNER, origin=ORIGIN, every_entries=1000)
    for n in range(ENTRIES):
        log.append(_entry(log, n))
    first = checkpointer.issue()
    local = LocalLog(log=log, checkpointer=checkpointer, witnesses=[witness_key])
    local.add_cosignatures(WITNESS.countersign(first.note))
    servicer = TransparencyServicer(
        local=local, authorize=node_log_readers(department=DepartmentId(DEPARTMENT), audit=log)
    )
    server = start_server(
        register=[
            lambda s: transparency_pb2_grpc.add_TransparencyServiceServicer_to_server(servicer, s)
        ],
        service_names=[TRANSPARENCY_SERVICE_NAME],
        listen="127.0.0.1:0",
        tls=node_tls,
    )
    try:
        yield Served(path, server, local, operator, roster)
    finally:
        server.stop(grace=0.5)
        checkpointer.close()
        log.close()


def test_a_live_log_verifies_and_its_proofs_verify(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "verify", *served.args(), "--quorum", "1", "--json"]) == 0
    (report,) = json.loads(capsys.readouterr().out)["logs"]
    assert report["ok"] and report["entries"] == ENTRIES
    assert report["cosigned"] == {WITNESS.name: [ENTRIES]}

    saved = tmp_path / "saved.note"
    assert main(["audit", "checkpoint", *served.args(), "--save", str(saved), "--json"]) == 0
    head = json.loads(capsys.readouterr().out)
    assert head["verified"] and head["size"] == ENTRIES and saved.read_bytes().startswith(b"tax.")

    assert main(["audit", "prove", *served.args(), "--index", "1234", "--json"]) == 0
    proof = json.loads(capsys.readouterr().out)
    line = served.log_path.read_bytes().splitlines()[1234]
    assert proof["entry"].encode() == line
    merkle.verify_inclusion(
        1234,
        ENTRIES,
        merkle.leaf_hash(line),
        [base64.b64decode(h) for h in proof["hashes"]],
        base64.b64decode(head["root"]),
    )

    # the log grows and signs again: the new checkpoint extends the saved one
    for n in range(ENTRIES, ENTRIES + 100):
        served.local.log.append(_entry(served.local.log, n))
    served.local.issue()
    args = ["audit", "prove", *served.args(), "--previous", str(saved), "--json"]
    assert main(args) == 0
    consistency = json.loads(capsys.readouterr().out)
    assert (consistency["from"], consistency["to"]) == (ENTRIES, ENTRIES + 100)
    assert main(["audit", "verify", *served.args(), "--previous", str(saved)]) == 0
    assert "OK" in capsys.readouterr().out
    # the latest checkpoint is not cosigned yet: a quorum of one is not met
    assert main(["audit", "verify", *served.args(), "--quorum", "1"]) == FAILED
    assert "fewer than --quorum 1" in capsys.readouterr().out


def test_an_entry_edited_under_a_live_log_is_named(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    data = served.log_path.read_bytes()
    # the same length: the server's line offsets stay right, only the content changed
    served.log_path.write_bytes(data.replace(b"q_001777", b"q_001778", 1))
    assert main(["audit", "verify", *served.args()]) == FAILED
    text = capsys.readouterr().out
    assert "entry 1777 (line 1778) is not what checkpoint 2500 signed" in text
    assert main(["audit", "verify", *served.args(), "--json"]) == FAILED
    (report,) = json.loads(capsys.readouterr().out)["logs"]
    assert not report["ok"] and "entry 1777 (line 1778)" in report["problem"]


def test_another_key_and_an_unreachable_log_exit_distinctly(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    other = NoteSigner(name=ORIGIN, private_key=Ed25519PrivateKey.generate())
    key = NoteVerifier(name=ORIGIN, public_key=other.public_key).verifier_key
    args = served.args()
    args[args.index("--logs") : args.index("--logs") + 2] = ["--log-key", key]
    assert main(["audit", "verify", *args]) == FAILED
    assert "the served checkpoint" in capsys.readouterr().out
    # a server that is not there: unavailable, not "failed verification"
    down = served.args()
    down[1] = "127.0.0.1:1"
    assert main(["audit", "checkpoint", *down]) == ExitCode.UNAVAILABLE

"""The provincial receiver as a witness over mutual TLS: it cosigns only what extends its past.

Real components: the receiver on 127.0.0.1 with a certificate from the session's platform CA,
its witness key on disk, a roster (logs.toml) with real Ed25519 log keys, and logs whose trees
are real RFC 9162 trees (merkle.MemoryTree) signed as C2SP checkpoints by their log keys. The
sync job's side is played by sdk.transparency.WitnessClient with its requester certificate.
Each attack is refused with the status C2SP tlog-witness gives it, a message naming the sizes or
the origin, and (when the log misbehaved) an alarm in the log and in the metrics served over HTTP.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from certs import DEFAULT_OPERATOR_NAME, PeerRole, cert_paths, issue_certificate
from osmanthus.core import merkle, signing
from osmanthus.core.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    WitnessConflict,
    WitnessInconsistent,
)
from osmanthus.core.logkeys import LogRoster, log_origin, witness_name
from osmanthus.core.peers import PROVINCE_SERVER_NAME
from osmanthus.core.server import RunningServer
from osmanthus.core.signednote import (
    Checkpoint,
    CosignatureSigner,
    CosignatureVerifier,
    NoteSigner,
    NoteVerifier,
)
from osmanthus.core.tls import TlsFiles
from osmanthus.core.witness import encode_add_checkpoint
from province.server import ProvinceConfig, start_province
from province.witness import WITNESS_ALARMS_FILE, WITNESS_STATE_FILE, WitnessMetrics
from sdk.transparency import WitnessClient, verify_checkpoint

HOUSING = log_origin(PeerRole.NODE, "housing")
COORDINATOR = log_origin(PeerRole.COORDINATOR, "coordinator")
PROVINCE_WITNESS = witness_name(PeerRole.NODE, "province")


class Log:
    """A log as its operator holds it: entries, their RFC 9162 tree, and its signing key."""

    def __init__(self, signer: NoteSigner, entries: list[bytes] | None = None) -> None:
        self.signer = signer
        self.entries = list(entries or [])

    def grow(self, n: int) -> Log:
        start = len(self.entries)
        self.entries += [f'{{"entry":{i}}}'.encode() for i in range(start, start + n)]
        return self

    @property
    def tree(self) -> merkle.MemoryTree:
        return merkle.MemoryTree(merkle.leaf_hash(e) for e in self.entries)

    def note(self, size: int | None = None, *, signer: NoteSigner | None = None) -> bytes:
        size = len(self.entries) if size is None else size
        body = Checkpoint(origin=self.signer.name, size=size, root_hash=self.tree.root(size)).body()
        return (signer or self.signer).sign(body)

    def proof(self, old: int, new: int | None = None) -> list[bytes]:
        new = len(self.entries) if new is None else new
        return [] if old == 0 else merkle.consistency_proof(self.tree, old, new)

    def body(self, old: int, size: int | None = None) -> bytes:
        return encode_add_checkpoint(
            old_size=old, proof=self.proof(old, size), note=self.note(size)
        )

    def fork(self, at: int) -> Log:
        """The same log with entry `at` edited and everything rehashed (the log's own key)."""
        forked = Log(self.signer, self.entries)
        forked.entries[at] = b'{"entry":"edited"}'
        return forked


@dataclasses.dataclass
class Witnessing:
    config: ProvinceConfig
    server: RunningServer
    certs: Path
    metrics: WitnessMetrics
    roster: LogRoster
    housing: NoteSigner

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def client(self, name: str = "sync-1", role: PeerRole = PeerRole.REQUESTER) -> WitnessClient:
        tls = TlsFiles.from_cert_paths(cert_paths(self.certs, role=role, name=name))
        return WitnessClient.connect(
            self.target, tls=tls, server_name=PROVINCE_SERVER_NAME, timeout_s=10
        )

    def scrape(self) -> str:
        assert self.metrics.port is not None
        url = f"http://127.0.0.1:{self.metrics.port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as answer:
            return str(answer.read().decode("utf-8"))

    def sample(self, name: str, **labels: str) -> float:
        """The value of one series in the served metrics (0 if absent)."""
        wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in self.scrape().splitlines():
            if line.startswith("#"):
                continue
            series, _, value = line.rpartition(" ")
            metric, _, label_text = series.partition("{")
            got = ",".join(sorted(label_text.rstrip("}").split(","))) if label_text else ""
            if metric == name and got == wanted:
                return float(value)
        return 0.0

    def restart(self) -> None:
        self.server.stop(grace=0.5)
        self.metrics = WitnessMetrics()
        self.server = start_province(self.config, metrics=self.metrics)


@pytest.fixture(scope="module")
def receiver_tls(tmp_path_factory: pytest.TempPathFactory, platform_certs: Path) -> TlsFiles:
    out = tmp_path_factory.mktemp("province-cert")
    return TlsFiles.from_cert_paths(
        issue_certificate(platform_certs, role=PeerRole.NODE, name="province", out_dir=out)
    )


@pytest.fixture
def witnessing(
    tmp_path: Path, receiver_tls: TlsFiles, platform_certs: Path
) -> Iterator[Witnessing]:
    keys = tmp_path / "keys"
    keys.mkdir()
    signing.write_key_pair(keys, "suzhou-sync", what="sender key")
    senders = tmp_path / "senders.toml"
    senders.write_text(
        '[[sender]]\nid = "suzhou"\npublic_keys = ["keys/suzhou-sync.pub"]\n'
        'certificates = ["sync-1"]\n',
        encoding="utf-8",
    )
    housing = NoteSigner(name=HOUSING, private_key=Ed25519PrivateKey.generate())
    coordinator = NoteSigner(name=COORDINATOR, private_key=Ed25519PrivateKey.generate())
    witness = CosignatureSigner(name=PROVINCE_WITNESS, private_key=Ed25519PrivateKey.generate())
    witness_key = keys / "witness.key"
    witness_key.write_text(witness.signer_key_text() + "\n", encoding="ascii")
    witness_key.chmod(0o600)
    roster = LogRoster(
        logs={
            HOUSING: NoteVerifier.from_key_text(housing.verifier_key),
            COORDINATOR: NoteVerifier.from_key_text(coordinator.verifier_key),
        },
        witnesses={PROVINCE_WITNESS: CosignatureVerifier.from_key_text(witness.verifier_key)},
    )
    roster.dump(tmp_path / "logs.toml")
    config = ProvinceConfig(
        senders=senders,
        state_dir=tmp_path / "state",
        tls=receiver_tls,
        witness_key=witness_key,
        logs=tmp_path / "logs.toml",
        metrics_listen="127.0.0.1:0",
    )
    metrics = WitnessMetrics()
    running = Witnessing(
        config=config,
        server=start_province(config, metrics=metrics),
        certs=platform_certs,
        metrics=metrics,
        roster=roster,
        housing=housing,
    )
    yield running
    running.server.stop(grace=0.5)


def cosigned_note(note: bytes, signatures: bytes) -> bytes:
    """The log's note with the witness's cosignature line(s) appended (C2SP tlog-witness)."""
    return note + signatures


def test_an_honest_log_is_cosigned_as_it_grows(witnessing: Witnessing) -> None:
    log = Log(witnessing.housing).grow(3)
    with witnessing.client() as witness:
        old = 0
        for grow in (0, 2, 0, 7, 100):
            log.grow(grow)
            note = log.note()
            signatures = witness.add_checkpoint(
                encode_add_checkpoint(old_size=old, proof=log.proof(old), note=note)
            )
            # the cosignature verifies with the witness's key from the roster, over this note
            checked = verify_checkpoint(
                cosigned_note(note, signatures),
                log_key=witnessing.roster.log_verifier(HOUSING),
                witnesses=witnessing.roster.witness_verifiers(),
            )
            assert set(checked.cosigned_at) == {PROVINCE_WITNESS}
            assert checked.size == len(log.entries)
            old = len(log.entries)
        latest = witness.get_witnessed(HOUSING, log_key=witnessing.roster.log_verifier(HOUSING))
        assert latest.size == len(log.entries) == 112
        assert latest.root == log.tree.root()
        # a log never cosigned: no note yet, so its first submission has old size 0
        with pytest.raises(NotFound, match="cosigned nothing for log 'coordinator"):
            witness.get_witnessed_note(COORDINATOR)
    assert witnessing.sample("osmanthus_witness_cosigned_total", origin=HOUSING) == 5
    assert witnessing.sample("osmanthus_witness_tree_size", origin=HOUSING) == 112
    assert witnessing.sample("osmanthus_witness_cosigned_total", origin=COORDINATOR) == 0
    assert "osmanthus_witness_alarms_total{" not in witnessing.scrape()
    # what it cosigned survives a restart
    witnessing.restart()
    assert (witnessing.config.state_dir / WITNESS_STATE_FILE).stat().st_mode & 0o077 == 0
    with witnessing.client() as witness:
        log.grow(1)
        witness.add_checkpoint(log.body(112))
    assert witnessing.sample("osmanthus_witness_tree_size", origin=HOUSING) == 113


def _cosign(witnessing: Witnessing, log: Log, old: int = 0) -> None:
    with witnessing.client() as witness:
        witness.add_checkpoint(log.body(old))


def test_a_rollback_is_refused_as_a_conflict_and_an_alarm(
    witnessing: Witnessing, caplog: pytest.LogCaptureFixture
) -> None:
    log = Log(witnessing.housing).grow(12)
    _cosign(witnessing, log)
    short = Log(witnessing.housing, log.entries[:5])
    with witnessing.client() as witness, caplog.at_level(logging.ERROR):
        with pytest.raises(WitnessConflict, match=r"size 5 after size 12") as refused:
            witness.add_checkpoint(short.body(0))
        # the same after a restart: the witness remembers what it cosigned
        witnessing.restart()
    assert refused.value.latest_size == 12
    assert any("rollback" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
    with witnessing.client() as witness, pytest.raises(WitnessConflict):
        witness.add_checkpoint(short.body(5))
    # counted by the restarted witness (counts are per process, as Prometheus counters are)
    assert (
        witnessing.sample("osmanthus_witness_alarms_total", origin=HOUSING, reason="rollback") == 1
    )


def test_a_fork_at_the_same_size_is_refused(
    witnessing: Witnessing, caplog: pytest.LogCaptureFixture
) -> None:
    log = Log(witnessing.housing).grow(12)
    _cosign(witnessing, log)
    forked = log.fork(7)
    with (
        witnessing.client() as witness,
        caplog.at_level(logging.ERROR),
        pytest.raises(WitnessConflict, match="forked: checkpoint at size 12") as refused,
    ):
        witness.add_checkpoint(forked.body(12))
    assert refused.value.latest_size == 12
    assert any("fork" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    assert witnessing.sample("osmanthus_witness_alarms_total", origin=HOUSING, reason="fork") == 1


def test_a_fork_alarm_outlives_a_restart_of_the_receiver(witnessing: Witnessing) -> None:
    """The attack: a log shows the witness a fork, and the evidence is gone once the receiver
    restarts (metrics and logs rotate). The alarm is a line in the state directory."""
    log = Log(witnessing.housing).grow(12)
    _cosign(witnessing, log)
    with witnessing.client() as witness, pytest.raises(WitnessConflict):
        witness.add_checkpoint(log.fork(7).body(12))
    witnessing.restart()
    assert witnessing.sample("osmanthus_witness_alarms_total", origin=HOUSING, reason="fork") == 0
    [line] = (witnessing.config.state_dir / WITNESS_ALARMS_FILE).read_text().splitlines()
    alarm = json.loads(line)
    assert (alarm["origin"], alarm["reason"]) == (HOUSING, "fork")
    assert "12" in alarm["detail"]
    # a stale old size is no alarm: nothing more is written
    with witnessing.client() as witness, pytest.raises(WitnessConflict):
        witness.add_checkpoint(log.grow(3).body(0))
    assert len((witnessing.config.state_dir / WITNESS_ALARMS_FILE).read_text().splitlines()) == 1


def test_a_rewritten_log_cannot_prove_consistency(witnessing: Witnessing) -> None:
    log = Log(witnessing.housing).grow(12)
    _cosign(witnessing, log)
    # entry 3 changed, the tree rebuilt, the log grown and signed with the log's real key: its
    # own consistency proof from 12 is honest about the rewritten tree, and fails against the
    # root the witness cosigned
    rewritten = log.fork(3).grow(5)
    with witnessing.client() as witness:
        with pytest.raises(WitnessInconsistent, match="from size 12 to 17 does not verify"):
            witness.add_checkpoint(rewritten.body(12))
        # the honest log still goes on
        witness.add_checkpoint(log.grow(5).body(12))
    assert (
        witnessing.sample("osmanthus_witness_alarms_total", origin=HOUSING, reason="inconsistent")
        == 1
    )


def test_a_proof_for_the_wrong_sizes_is_refused(witnessing: Witnessing) -> None:
    log = Log(witnessing.housing).grow(12)
    _cosign(witnessing, log)
    log.grow(8)
    wrong = encode_add_checkpoint(old_size=12, proof=log.proof(10), note=log.note())
    with (
        witnessing.client() as witness,
        pytest.raises(WitnessInconsistent, match="from size 12 to 20") as refused,
    ):
        witness.add_checkpoint(wrong)
    assert isinstance(refused.value, FailedPrecondition)


def test_a_checkpoint_signed_with_another_key_is_refused(witnessing: Witnessing) -> None:
    impostor = NoteSigner(name=HOUSING, private_key=Ed25519PrivateKey.generate())
    log = Log(witnessing.housing).grow(4)
    body = encode_add_checkpoint(old_size=0, proof=[], note=log.note(signer=impostor))
    with (
        witnessing.client() as witness,
        pytest.raises(PermissionDenied, match=f"{HOUSING}.*size 4.*no valid signature"),
    ):
        witness.add_checkpoint(body)
    assert (
        witnessing.sample("osmanthus_witness_alarms_total", origin=HOUSING, reason="bad_signature")
        == 1
    )
    assert witnessing.sample("osmanthus_witness_tree_size", origin=HOUSING) == 0


def test_an_unknown_origin_is_not_found(witnessing: Witnessing) -> None:
    stranger = NoteSigner(
        name="evil.node.osmanthus/audit", private_key=Ed25519PrivateKey.generate()
    )
    with (
        witnessing.client() as witness,
        pytest.raises(NotFound, match=r"evil\.node\.osmanthus/audit"),
    ):
        witness.add_checkpoint(Log(stranger).grow(2).body(0))
    # an origin the roster does not list is no label of its own
    assert (
        witnessing.sample(
            "osmanthus_witness_refusals_total", origin="unknown", reason="unknown_origin"
        )
        == 1
    )
    assert "evil" not in witnessing.scrape()


def test_an_old_size_ahead_of_the_checkpoint_is_a_bad_request(witnessing: Witnessing) -> None:
    log = Log(witnessing.housing).grow(6)
    body = encode_add_checkpoint(old_size=9, proof=[], note=log.note())
    with (
        witnessing.client() as witness,
        pytest.raises(InvalidArgument, match="old size 9 is ahead of the checkpoint's size 6"),
    ):
        witness.add_checkpoint(body)


def test_a_stale_old_size_is_a_conflict_without_alarm(
    witnessing: Witnessing, caplog: pytest.LogCaptureFixture
) -> None:
    log = Log(witnessing.housing).grow(12)
    _cosign(witnessing, log)
    log.grow(3)
    with witnessing.client() as witness, caplog.at_level(logging.ERROR):
        # a submitter that last saw size 5 (another sync job got 12 cosigned since)
        with pytest.raises(WitnessConflict, match=r"\(12\)") as refused:
            witness.add_checkpoint(log.body(5))
        assert refused.value.latest_size == 12
        # it retries from the size the conflict carries
        witness.add_checkpoint(log.body(refused.value.latest_size))
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert (
        witnessing.sample(
            "osmanthus_witness_refusals_total", origin=HOUSING, reason="stale_old_size"
        )
        == 1
    )
    assert "osmanthus_witness_alarms_total{" not in witnessing.scrape()
    assert witnessing.sample("osmanthus_witness_tree_size", origin=HOUSING) == 15


def test_only_registered_senders_and_operators_may_call(witnessing: Witnessing) -> None:
    log = Log(witnessing.housing).grow(2)
    with witnessing.client("bank-1") as stranger:
        with pytest.raises(PermissionDenied, match="requester/bank-1 may not submit"):
            stranger.add_checkpoint(log.body(0))
        with pytest.raises(PermissionDenied, match="requester/bank-1 may not read"):
            stranger.get_witnessed_note(HOUSING)
    with witnessing.client(DEFAULT_OPERATOR_NAME, PeerRole.OPERATOR) as operator:
        operator.add_checkpoint(log.body(0))
        assert (
            operator.get_witnessed(HOUSING, log_key=witnessing.roster.log_verifier(HOUSING)).size
            == 2
        )
        with pytest.raises(NotFound, match="no log 'nowhere"):
            operator.get_witnessed_note("nowhere.node.osmanthus/audit")
    assert witnessing.sample("osmanthus_witness_cosigned_total", origin=HOUSING) == 1

"""Coordinator replicas each keep a transparency log of their own: its own origin and Ed25519
key, listed in the roster, witnessed apart from the coordinator's; a replica given another
log's key (even renamed) is refused, and a subject's file from a replica proves its lines to
the replica's log. Before, every replica signed its own log as `coordinator.osmanthus/audit`
with one key, which a witness rightly refuses as a fork."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from certs.logkeys import create_log_key, replica_dir, roster_path
from osmanthus.cli import build_parser
from osmanthus.core.audit import AuditEntry, AuditLog, load_or_create_salt
from osmanthus.core.auditproofs import EntryStatus, proven_audit, verify_part
from osmanthus.core.carrier import Witnessed, carry
from osmanthus.core.checkpoints import Checkpointer
from osmanthus.core.errors import (
    ConfigError,
    InvalidArgument,
    WitnessConflict,
    WitnessInconsistent,
)
from osmanthus.core.logkeyfiles import read_signer
from osmanthus.core.logkeys import (
    LOG_KEY_FILE,
    LogRoster,
    coordinator_log_origin,
    coordinator_witness_name,
    is_coordinator_origin,
    party_host,
    replica_of,
    witness_name,
)
from osmanthus.core.logserver import LocalLog, open_local_log
from osmanthus.core.peers import PeerRole
from osmanthus.core.signednote import (
    CosignatureSigner,
    CosignatureVerifier,
    NoteSigner,
    NoteVerifier,
    open_note,
)
from osmanthus.core.subjectfile import COORDINATOR_SOURCE, SubjectFile, decode, encode
from osmanthus.core.subjectseal import nonce_text
from osmanthus.core.witness import Witness

COORDINATOR = coordinator_log_origin(None)
EAST = coordinator_log_origin("east")
SUBJECT = "320505199001010018"
NONCE = b"\x07" * 32


def test_a_replica_has_an_origin_and_witness_name_of_its_own_on_the_coordinators_host() -> None:
    assert COORDINATOR == "coordinator.osmanthus/audit"
    assert EAST == "east.coordinator.osmanthus/audit"
    assert coordinator_witness_name("east") == "east.coordinator.osmanthus/witness"
    assert coordinator_witness_name(None) == witness_name(PeerRole.COORDINATOR, "coordinator")
    assert replica_of(EAST) == "east"
    others = (COORDINATOR, "housing.node.osmanthus/audit", "east.coordinator.osmanthus/x",
              "East.coordinator.osmanthus/audit", "a.b.coordinator.osmanthus/audit")  # fmt: skip
    for other in others:
        assert replica_of(other) is None, other
    assert is_coordinator_origin(EAST) and is_coordinator_origin(COORDINATOR)
    assert not is_coordinator_origin("housing.node.osmanthus/audit")
    # one party: served under the coordinator's certificate, never its own witness
    assert party_host(EAST) == party_host(COORDINATOR) == "coordinator.osmanthus"
    assert party_host(coordinator_witness_name(None)) == "coordinator.osmanthus"
    assert party_host("housing.node.osmanthus/audit") == "housing.node.osmanthus"
    with pytest.raises(InvalidArgument) as raised:
        coordinator_log_origin("East/1")
    assert raised.value.field == "replica"


def _ca(tmp_path: Path) -> Path:
    """A CA directory with the coordinator's log key listed, as 'certs init' leaves it."""
    ca = tmp_path / "ca"
    (ca / "coordinator").mkdir(parents=True)
    create_log_key(ca, role=PeerRole.COORDINATOR, name="coordinator")
    return ca


def test_certs_log_key_makes_a_replicas_own_key_and_lists_it(tmp_path: Path) -> None:
    ca = _ca(tmp_path)
    args = build_parser().parse_args(
        ["certs", "log-key", "--ca-dir", str(ca), "--role", "coordinator",
         "--name", "coordinator", "--replica", "east"]
    )  # fmt: skip
    assert args.replica == "east"
    made = create_log_key(ca, role=PeerRole.COORDINATOR, name="coordinator", replica="east")
    assert made.created and made.name == EAST
    assert made.private == replica_dir(ca, "east") / LOG_KEY_FILE
    assert made.private.stat().st_mode & 0o077 == 0
    roster = LogRoster.load(roster_path(ca))
    assert roster.origins() == [COORDINATOR, EAST]
    own = roster.log_verifier(EAST)
    assert own.public_key.public_bytes_raw() != (
        roster.log_verifier(COORDINATOR).public_key.public_bytes_raw()
    )
    # kept on a second run: checkpoints it signed verify only against it
    again = create_log_key(ca, role=PeerRole.COORDINATOR, name="coordinator", replica="east")
    assert not again.created
    assert LogRoster.load(roster_path(ca)).log_verifier(EAST).verifier_key == own.verifier_key
    # replicas are the coordinator's only
    with pytest.raises(InvalidArgument) as raised:
        create_log_key(ca, role=PeerRole.NODE, name="housing", replica="east")
    assert raised.value.field == "replica"
    # and witness nothing: each would keep a witness state a department could split
    with pytest.raises(InvalidArgument, match="does not witness") as raised:
        create_log_key(
            ca, role=PeerRole.COORDINATOR, name="coordinator", replica="east", witness=True
        )
    assert raised.value.field == "replica"


def test_certs_log_key_refuses_a_replica_key_copied_from_the_coordinator(tmp_path: Path) -> None:
    """The operator's shortcut of copying coordinator/log.key into the replica's directory:
    one key would sign two logs."""
    ca = _ca(tmp_path)
    coordinator = read_signer(
        NoteSigner, ca / "coordinator" / LOG_KEY_FILE, expected_name=None, field="log_key"
    )
    # the coordinator's private key, named as the replica (its key id differs, its key not)
    _write_key(replica_dir(ca, "east"), NoteSigner(name=EAST, private_key=coordinator._private_key))
    before = roster_path(ca).read_bytes()
    with pytest.raises(
        ConfigError, match=re.escape("coordinator.osmanthus/audit already")
    ) as raised:
        create_log_key(ca, role=PeerRole.COORDINATOR, name="coordinator", replica="east")
    assert raised.value.field == "log_key"
    assert roster_path(ca).read_bytes() == before


def _write_key(directory: Path, signer: NoteSigner) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOG_KEY_FILE
    path.write_text(signer.signer_key_text() + "\n")
    path.chmod(0o600)
    (directory / "log.pub").write_text(signer.verifier_key + "\n")
    return path


@pytest.fixture
def salt(tmp_path: Path) -> bytes:
    return load_or_create_salt(tmp_path / "audit.salt")


def _entry(log: AuditLog, n: int) -> AuditEntry:
    from datetime import UTC, datetime, timedelta

    return AuditEntry(
        time=datetime(2026, 12, 1, tzinfo=UTC) + timedelta(seconds=n),
        query_id=f"q-{n}",
        requester="agency-1",
        purpose="loan_underwriting",
        consent_id="cns_1",
        policy_hash="ab" * 32,
        decision="allow",
        reason="permitted",
        shape="total",
        subject_hash=log.subject_hash(SUBJECT),
    )


def _log(tmp_path: Path, name: str, salt: bytes, entries: int) -> AuditLog:
    (tmp_path / name).mkdir()
    log = AuditLog(path=tmp_path / name / "audit.jsonl", salt=salt)
    for n in range(entries):
        log.append(_entry(log, n + 100 * len(name)))
    return log


def test_a_replica_whose_key_the_roster_lists_for_another_log_does_not_start(
    tmp_path: Path, salt: bytes
) -> None:
    coordinator_key = Ed25519PrivateKey.generate()
    roster = LogRoster(
        logs={COORDINATOR: NoteVerifier(name=COORDINATOR, public_key=coordinator_key.public_key())}
    )
    with _log(tmp_path, "east", salt, 2) as log:
        # the coordinator's key renamed for the replica: its note names east, its key is the
        # coordinator's, so either log could pass for the other
        renamed = NoteSigner(name=EAST, private_key=coordinator_key)
        with pytest.raises(
            ConfigError, match=re.escape("for coordinator.osmanthus/audit, not for")
        ) as e:
            open_local_log(log=log, signer=renamed, origin=EAST, roster=roster)
        assert e.value.field == "log_key"
        # the coordinator's key as it is: named for another origin
        with pytest.raises(ConfigError, match="must be named after its origin"):
            open_local_log(
                log=log,
                signer=NoteSigner(name=COORDINATOR, private_key=coordinator_key),
                origin=EAST,
                roster=roster,
            )
        # a key of its own starts, and signs as the replica
        own = NoteSigner(name=EAST, private_key=Ed25519PrivateKey.generate())
        local = open_local_log(
            log=log, signer=own, origin=EAST, roster=roster.with_log(_verifier(own))
        )
        try:
            note = local.checkpointer.last
            assert note is not None
            assert note.note.startswith(EAST.encode() + b"\n")
        finally:
            local.close()


def _verifier(signer: NoteSigner) -> NoteVerifier:
    return NoteVerifier.from_key_text(signer.verifier_key)


def _carry(witness: Witness, local: LocalLog, origin: str) -> bytes:
    """The log's latest checkpoint to the witness, as the sync job carries it."""
    signed = local.issue()
    latest = witness.latest(origin)
    held = Witnessed(size=0, root=None) if latest is None else Witnessed(latest.size, latest.root)
    carried = carry(
        origin=origin,
        note=signed.note,
        witnessed=held,
        witness_name=witness.signer.name,
        proof=lambda old, new: local.log.consistency_proof(old, new),
        submit=witness.add_checkpoint,
    )
    return carried.cosigned_note


def test_the_witness_cosigns_each_replicas_log_apart_where_one_shared_identity_was_a_fork(
    tmp_path: Path, salt: bytes
) -> None:
    coordinator = NoteSigner(name=COORDINATOR, private_key=Ed25519PrivateKey.generate())
    east = NoteSigner(name=EAST, private_key=Ed25519PrivateKey.generate())
    roster = LogRoster(logs={COORDINATOR: _verifier(coordinator), EAST: _verifier(east)})
    province = CosignatureSigner(
        name=witness_name(PeerRole.NODE, "province"), private_key=Ed25519PrivateKey.generate()
    )
    witness = Witness(signer=province, roster=roster, state_path=tmp_path / "witness.json")
    with (
        _log(tmp_path, "a", salt, 3) as log_a,
        _log(tmp_path, "b", salt, 5) as log_b,
    ):
        a = LocalLog(log=log_a, checkpointer=Checkpointer(log=log_a, signer=coordinator,
                                                          origin=COORDINATOR))  # fmt: skip
        b = LocalLog(log=log_b, checkpointer=Checkpointer(log=log_b, signer=east, origin=EAST))
        try:
            for local, origin in ((a, COORDINATOR), (b, EAST)):
                cosigned = _carry(witness, local, origin)
                assert province.name in open_note(cosigned, [_verifier_of(province)]).signatures
            log_b.append(_entry(log_b, 9))
            _carry(witness, b, EAST)  # grows on its own, consistently
            assert witness.alarm_counts() == {}
            assert {o: witness.latest(o).size for o in (COORDINATOR, EAST)} == {
                COORDINATOR: 3, EAST: 6
            }  # fmt: skip
            # the attack this prevents: another replica's log under the coordinator's identity,
            # as every replica signed before, is another tree at a size the witness holds a
            # root for: a fork, and the witness's alarm
            with _log(tmp_path, "ab", salt, 3) as log_c:
                shared = LocalLog(
                    log=log_c,
                    checkpointer=Checkpointer(log=log_c, signer=coordinator, origin=COORDINATOR),
                )
                try:
                    with pytest.raises((WitnessConflict, WitnessInconsistent)):
                        _carry(witness, shared, COORDINATOR)
                finally:
                    shared.close()
            assert sum(witness.alarm_counts().values()) == 1
        finally:
            a.close()
            b.close()


def _verifier_of(signer: CosignatureSigner) -> CosignatureVerifier:
    return CosignatureVerifier.from_key_text(signer.verifier_key)


def _coordinator_part(checkpoint: str, proven_lines: object, subject_hash: str) -> SubjectFile:
    built = SubjectFile(
        source=COORDINATOR_SOURCE,
        query_id="sf-1",
        subject_kind="person",
        subject_id=SUBJECT,
        as_of="2026-12-01",
        generated_at="2026-12-01T10:00:00Z",
        nonce=nonce_text(NONCE),
        audit=proven_lines,  # type: ignore[arg-type]
        checkpoint=checkpoint,
        subject_hash=subject_hash,
    )
    return decode(
        encode(built),
        source=COORDINATOR_SOURCE,
        query_id="sf-1",
        subject_kind="person",
        subject_id=SUBJECT,
        nonce=NONCE,
    )


def test_a_subjects_file_from_a_replica_proves_its_lines_to_the_replicas_own_log(
    tmp_path: Path, salt: bytes
) -> None:
    coordinator = NoteSigner(name=COORDINATOR, private_key=Ed25519PrivateKey.generate())
    east = NoteSigner(name=EAST, private_key=Ed25519PrivateKey.generate())
    own_witness = CosignatureSigner(
        name=coordinator_witness_name(None), private_key=Ed25519PrivateKey.generate()
    )
    province = CosignatureSigner(
        name=witness_name(PeerRole.NODE, "province"), private_key=Ed25519PrivateKey.generate()
    )
    roster = LogRoster(
        logs={COORDINATOR: _verifier(coordinator), EAST: _verifier(east)},
        witnesses={w.name: _verifier_of(w) for w in (own_witness, province)},
    )
    with _log(tmp_path, "east", salt, 4) as log:
        local = LocalLog(log=log, checkpointer=Checkpointer(log=log, signer=east, origin=EAST))
        try:
            local.issue()
            proven = proven_audit(log, log.subject_hash(SUBJECT), checkpoints=local)
        finally:
            local.close()
    part = _coordinator_part(proven.checkpoint, proven.lines, proven.subject_hash)
    check = verify_part(part, roster=roster, min_witnesses=1)
    assert check.origin == EAST and check.problem is None
    assert set(check.statuses) == {EntryStatus.SIGNED}
    # the coordinator's witness is the same party as the replica: not counted; the province is
    by_both = province.countersign(own_witness.countersign(proven.checkpoint.encode())).decode()
    check = verify_part(
        _coordinator_part(by_both, proven.lines, proven.subject_hash), roster=roster
    )
    assert check.witnesses == (province.name,)
    assert set(check.statuses) == {EntryStatus.VERIFIED}
    # a note that names the replica but is signed with the coordinator's key fails every line
    forged = NoteSigner(name=EAST, private_key=coordinator._private_key)
    text = proven.checkpoint.split("\n\n")[0] + "\n"
    check = verify_part(
        _coordinator_part(forged.sign(text).decode(), proven.lines, proven.subject_hash),
        roster=roster,
    )
    assert set(check.statuses) == {EntryStatus.FAILED} and check.problem is not None


def _sync_toml(tmp_path: Path, replicas: str) -> Path:
    from tests.unit.test_syncjob import FULL, _platform

    if not (tmp_path / "certs").exists():
        _platform(tmp_path)
    roster = LogRoster(
        logs={
            origin: _verifier(NoteSigner(name=origin, private_key=Ed25519PrivateKey.generate()))
            for origin in (COORDINATOR, EAST)
        }
    )
    roster.dump(tmp_path / "logs.toml")
    path = tmp_path / "sync.toml"
    path.write_text(FULL + '\n[checkpoints]\nlogs = "logs.toml"\n' + replicas)
    return path


def test_the_sync_job_reads_each_replicas_log_at_that_replica(tmp_path: Path) -> None:
    from syncjob.config import load_config
    from syncjob.runner import _carrier

    config = load_config(
        _sync_toml(tmp_path, '\n[checkpoints.replicas]\neast = "127.0.0.1:50052"\n')
    )
    assert config.replicas == {"east": "127.0.0.1:50052"}
    # a roster listing a replica whose address the job lacks: the run does not start, rather
    # than leave that log uncarried run after run
    config = load_config(_sync_toml(tmp_path, ""))
    with (
        pytest.raises(ConfigError, match=re.escape("east.coordinator.osmanthus/audit")) as raised,
        _carrier(config, "token"),
    ):
        pass
    assert raised.value.field == "checkpoints.replicas"
    with pytest.raises(ConfigError, match=re.escape("checkpoints.replicas")):
        load_config(_sync_toml(tmp_path, '\n[checkpoints.replicas]\n"East 2" = "h:1"\n'))


def test_replicas_witnessing_a_nodes_log_count_as_one_witness(tmp_path: Path, salt: bytes) -> None:
    """Two coordinator replicas, each cosigning with a witness key of its own, are one party:
    a portal asking for two witnesses does not get them from the coordinator alone."""
    origin = "housing.node.osmanthus/audit"
    node = NoteSigner(name=origin, private_key=Ed25519PrivateKey.generate())
    witnesses = [
        CosignatureSigner(
            name=coordinator_witness_name(r), private_key=Ed25519PrivateKey.generate()
        )
        for r in (None, "east")
    ]
    province = CosignatureSigner(
        name=witness_name(PeerRole.NODE, "province"), private_key=Ed25519PrivateKey.generate()
    )
    roster = LogRoster(
        logs={origin: _verifier(node)},
        witnesses={w.name: _verifier_of(w) for w in (*witnesses, province)},
    )
    with _log(tmp_path, "housing", salt, 3) as log:
        local = LocalLog(log=log, checkpointer=Checkpointer(log=log, signer=node, origin=origin))
        try:
            local.issue()
            proven = proven_audit(log, log.subject_hash(SUBJECT), checkpoints=local)
        finally:
            local.close()

    def part(note: bytes) -> SubjectFile:
        built = _coordinator_part(note.decode(), proven.lines, proven.subject_hash)
        return decode(
            encode(dataclasses.replace(built, source="housing")),
            source="housing",
            query_id="sf-1",
            subject_kind="person",
            subject_id=SUBJECT,
            nonce=NONCE,
        )

    by_replicas = proven.checkpoint.encode()
    for witness in witnesses:
        by_replicas = witness.countersign(by_replicas)
    check = verify_part(part(by_replicas), roster=roster, min_witnesses=2)
    assert len(check.witnesses) == 2 and set(check.statuses) == {EntryStatus.SIGNED}
    check = verify_part(part(province.countersign(by_replicas)), roster=roster, min_witnesses=2)
    assert set(check.statuses) == {EntryStatus.VERIFIED}

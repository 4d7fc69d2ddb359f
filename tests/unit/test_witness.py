"""The witness, attacked: it cosigns a log that only grows and refuses, with an alarm, the rest."""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from osmanthus.core import merkle
from osmanthus.core.errors import (
    ConfigError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    WitnessConflict,
    WitnessInconsistent,
)
from osmanthus.core.logkeys import LogRoster, log_origin, witness_name
from osmanthus.core.peers import PeerRole
from osmanthus.core.signednote import (
    Checkpoint,
    CosignatureSigner,
    CosignatureVerifier,
    NoteSigner,
    NoteVerifier,
    open_note,
)
from osmanthus.core.witness import (
    REASON_BAD_SIGNATURE,
    REASON_FORK,
    REASON_INCONSISTENT,
    REASON_ROLLBACK,
    REASON_STALE,
    FileAlarmSink,
    Witness,
    encode_add_checkpoint,
    parse_add_checkpoint,
)

ORIGIN = log_origin(PeerRole.NODE, "housing")
LOG_SIGNER = NoteSigner(name=ORIGIN, private_key=Ed25519PrivateKey.generate())
WITNESS_SIGNER = CosignatureSigner(
    name=witness_name(PeerRole.NODE, "province"), private_key=Ed25519PrivateKey.generate()
)
ROSTER = LogRoster(
    logs={ORIGIN: NoteVerifier(name=ORIGIN, public_key=LOG_SIGNER.public_key)},
    witnesses={
        WITNESS_SIGNER.name: CosignatureVerifier(
            name=WITNESS_SIGNER.name, public_key=WITNESS_SIGNER.public_key
        )
    },
)


def leaves(n: int, prefix: str = "entry") -> list[bytes]:
    return [f'{{"{prefix}":{i}}}'.encode() for i in range(n)]


def note(tree: merkle.MemoryTree, size: int, signer: NoteSigner = LOG_SIGNER) -> bytes:
    return signer.sign(Checkpoint(origin=signer.name, size=size, root_hash=tree.root(size)).body())


def body(tree: merkle.MemoryTree, old: int, new: int, signer: NoteSigner = LOG_SIGNER) -> bytes:
    proof = merkle.consistency_proof(tree, old, new) if 0 < old < new else []
    return encode_add_checkpoint(old_size=old, proof=proof, note=note(tree, new, signer))


class Alarms:
    def __init__(self) -> None:
        self.raised: list[tuple[str, str, str]] = []

    def alarm(self, origin: str, reason: str, detail: str) -> None:
        self.raised.append((origin, reason, detail))


@pytest.fixture
def alarms() -> Alarms:
    return Alarms()


@pytest.fixture
def witness(tmp_path: Path, alarms: Alarms) -> Witness:
    return Witness(
        signer=WITNESS_SIGNER,
        roster=ROSTER,
        state_path=tmp_path / "witness.json",
        alarms=alarms,
        now=lambda: 1_700_000_000.0,
    )


def tree_of(items: list[bytes]) -> merkle.MemoryTree:
    return merkle.MemoryTree(merkle.leaf_hash(item) for item in items)


def test_an_honest_log_is_cosigned_as_it_grows_and_the_cosignature_verifies(
    witness: Witness, alarms: Alarms
) -> None:
    items = leaves(40)
    tree = tree_of(items)
    old = 0
    for size in (0, 1, 7, 7, 16, 40):
        lines = witness.add_checkpoint(body(tree, old, size))
        cosigned = note(tree, size) + lines
        opened = open_note(cosigned, ROSTER.witness_verifiers())
        assert opened.signatures == (WITNESS_SIGNER.name,)
        assert opened.cosigned_at[WITNESS_SIGNER.name] == 1_700_000_000
        old = size
    latest = witness.latest(ORIGIN)
    assert latest is not None and (latest.size, latest.root) == (40, tree.root(40))
    assert alarms.raised == []
    assert witness.cosigned_counts() == {ORIGIN: 6}


def test_the_state_survives_a_restart_and_a_damaged_state_is_refused(
    tmp_path: Path, witness: Witness
) -> None:
    tree = tree_of(leaves(10))
    witness.add_checkpoint(body(tree, 0, 10))
    again = Witness(signer=WITNESS_SIGNER, roster=ROSTER, state_path=witness.state_path)
    with pytest.raises(WitnessConflict) as refused:
        again.add_checkpoint(body(tree, 0, 10))
    assert refused.value.latest_size == 10
    witness.state_path.write_text("{not json")
    with pytest.raises(ConfigError, match="restore it from backup"):
        Witness(signer=WITNESS_SIGNER, roster=ROSTER, state_path=witness.state_path)


def test_a_stale_old_size_is_a_conflict_with_the_latest_size_and_no_alarm(
    witness: Witness, alarms: Alarms
) -> None:
    tree = tree_of(leaves(30))
    witness.add_checkpoint(body(tree, 0, 10))
    with pytest.raises(WitnessConflict, match=r"last cosigned .* \(10\)") as refused:
        witness.add_checkpoint(body(tree, 5, 30))
    assert refused.value.latest_size == 10
    assert alarms.raised == []
    assert witness.refusal_counts() == {(ORIGIN, REASON_STALE): 1}
    witness.add_checkpoint(body(tree, 10, 30))


def test_a_rollback_is_refused_with_an_alarm(witness: Witness, alarms: Alarms) -> None:
    tree = tree_of(leaves(30))
    witness.add_checkpoint(body(tree, 0, 30))
    with pytest.raises(WitnessConflict, match="rolled back: checkpoint at size 20 after size 30"):
        witness.add_checkpoint(body(tree, 0, 20))
    assert [a[:2] for a in alarms.raised] == [(ORIGIN, REASON_ROLLBACK)]
    assert witness.alarm_counts() == {(ORIGIN, REASON_ROLLBACK): 1}


def test_a_replayed_checkpoint_it_cosigned_before_is_stale_not_an_alarm(
    witness: Witness, alarms: Alarms
) -> None:
    tree = tree_of(leaves(30))
    witness.add_checkpoint(body(tree, 0, 10))
    witness.add_checkpoint(body(tree, 10, 30))
    # anyone holding the old cosigned checkpoint may send it again: the log did nothing wrong
    with pytest.raises(WitnessConflict, match="was cosigned before") as refused:
        witness.add_checkpoint(body(tree, 0, 10))
    assert refused.value.latest_size == 30
    assert alarms.raised == []


def test_the_signed_text_is_what_is_checked_and_cosigned(witness: Witness) -> None:
    tree = tree_of(leaves(4))
    signed = note(tree, 4)
    cosignature = witness.add_checkpoint(encode_add_checkpoint(old_size=0, proof=[], note=signed))
    opened = open_note(signed + cosignature, ROSTER.witness_verifiers())
    assert opened.text == Checkpoint(origin=ORIGIN, size=4, root_hash=tree.root(4)).body()


def test_a_fork_at_a_cosigned_size_is_refused_with_an_alarm(
    witness: Witness, alarms: Alarms
) -> None:
    tree = tree_of(leaves(12))
    witness.add_checkpoint(body(tree, 0, 12))
    fork = tree_of(leaves(12, prefix="forged"))
    with pytest.raises(WitnessConflict, match="forked"):
        witness.add_checkpoint(body(fork, 12, 12))
    assert [a[1] for a in alarms.raised] == [REASON_FORK]


@pytest.mark.parametrize("where", ["changed entry", "fork after", "reordered"])
def test_a_rewritten_history_fails_the_consistency_proof(
    witness: Witness, alarms: Alarms, where: str
) -> None:
    items = leaves(50)
    witness.add_checkpoint(body(tree_of(items), 0, 20))
    rewritten = list(items)
    if where == "changed entry":
        rewritten[3] = b'{"entry":3,"edited":true}'
    elif where == "fork after":
        rewritten[10:] = leaves(40, prefix="fork")
    else:
        rewritten[4], rewritten[5] = rewritten[5], rewritten[4]
    # the log signs its rewritten tree with its real key and proves from its own old tree
    with pytest.raises(WitnessInconsistent, match="from size 20 to 50 does not verify"):
        witness.add_checkpoint(body(tree_of(rewritten), 20, 50))
    assert [a[1] for a in alarms.raised] == [REASON_INCONSISTENT]
    latest = witness.latest(ORIGIN)
    assert latest is not None and latest.size == 20


def test_a_proof_for_other_sizes_is_inconsistent(witness: Witness) -> None:
    tree = tree_of(leaves(64))
    witness.add_checkpoint(body(tree, 0, 20))
    wrong = encode_add_checkpoint(
        old_size=20, proof=merkle.consistency_proof(tree, 21, 64), note=note(tree, 64)
    )
    with pytest.raises(WitnessInconsistent, match="from size 20 to 64"):
        witness.add_checkpoint(wrong)


def test_a_checkpoint_signed_by_another_key_is_forbidden_with_an_alarm(
    witness: Witness, alarms: Alarms
) -> None:
    forger = NoteSigner(name=ORIGIN, private_key=Ed25519PrivateKey.generate())
    tree = tree_of(leaves(5))
    with pytest.raises(PermissionDenied, match="no valid signature by the log's key"):
        witness.add_checkpoint(body(tree, 0, 5, forger))
    assert [a[1] for a in alarms.raised] == [REASON_BAD_SIGNATURE]
    assert witness.latest(ORIGIN) is None


def test_an_unknown_origin_is_not_found(witness: Witness, alarms: Alarms) -> None:
    stranger = NoteSigner(name="elsewhere.example/log", private_key=Ed25519PrivateKey.generate())
    tree = tree_of(leaves(3))
    with pytest.raises(NotFound, match=r"knows no log 'elsewhere\.example/log'"):
        witness.add_checkpoint(body(tree, 0, 3, stranger))
    assert alarms.raised == []


def test_an_old_size_ahead_of_the_checkpoint_is_a_bad_request(witness: Witness) -> None:
    tree = tree_of(leaves(9))
    with pytest.raises(InvalidArgument, match="old size 12 is ahead of the checkpoint's size 9"):
        witness.add_checkpoint(encode_add_checkpoint(old_size=12, proof=[], note=note(tree, 9)))


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b"old 01\n\nx", "body.old_size"),
        (b"new 1\n\nx", "body.old_size"),
        (b"old 1\n", "body"),
        (b"old 1\nnot base64!\n\nx", "body.proof"),
        (b"old 1\n" + base64.b64encode(b"short") + b"\n\nx", "body.proof"),
    ],
)
def test_malformed_bodies_are_refused_naming_the_part(raw: bytes, field: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        parse_add_checkpoint(raw)
    assert refused.value.field == field


def test_the_body_round_trips() -> None:
    tree = tree_of(leaves(20))
    proof = merkle.consistency_proof(tree, 6, 20)
    parsed = parse_add_checkpoint(
        encode_add_checkpoint(old_size=6, proof=proof, note=note(tree, 20))
    )
    assert (parsed.old_size, list(parsed.proof), parsed.note) == (6, proof, note(tree, 20))


def test_racing_submitters_get_one_cosignature_and_one_conflict(witness: Witness) -> None:
    tree = tree_of(leaves(30))
    witness.add_checkpoint(body(tree, 0, 10))
    results: list[str] = []
    start = threading.Barrier(2)

    def submit(size: int) -> None:
        start.wait()
        try:
            witness.add_checkpoint(body(tree, 10, size))
            results.append("cosigned")
        except WitnessConflict:
            results.append("conflict")

    threads = [threading.Thread(target=submit, args=(n,)) for n in (20, 30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["conflict", "cosigned"]


def test_alarms_are_kept_in_a_file(tmp_path: Path) -> None:
    sink = FileAlarmSink(tmp_path / "alarms.jsonl", now=lambda: 5.0)
    witness = Witness(
        signer=WITNESS_SIGNER, roster=ROSTER, state_path=tmp_path / "w.json", alarms=sink
    )
    tree = tree_of(leaves(10))
    witness.add_checkpoint(body(tree, 0, 10))
    with pytest.raises(WitnessConflict):
        witness.add_checkpoint(body(tree, 0, 4))
    [line] = (tmp_path / "alarms.jsonl").read_text().splitlines()
    assert json.loads(line)["reason"] == REASON_ROLLBACK
    assert json.loads(line)["origin"] == ORIGIN


def test_the_roster_round_trips_and_refuses_mismatched_keys(tmp_path: Path) -> None:
    ROSTER.dump(tmp_path / "logs.toml")
    again = LogRoster.load(tmp_path / "logs.toml")
    assert again.log_verifier(ORIGIN).verifier_key == ROSTER.log_verifier(ORIGIN).verifier_key
    assert [w.verifier_key for w in again.witness_verifiers()] == [
        w.verifier_key for w in ROSTER.witness_verifiers()
    ]
    other = NoteSigner(name="x.node.osmanthus/audit", private_key=Ed25519PrivateKey.generate())
    bad = f'[[log]]\norigin = "{ORIGIN}"\nkey = "{other.verifier_key}"\n'
    with pytest.raises(ConfigError, match="named after its origin"):
        LogRoster.loads(bad)
    with pytest.raises(ConfigError, match=r"log\[0\]: key"):
        LogRoster.loads(f'[[log]]\norigin = "{ORIGIN}"\nkey = "junk"\n')
    with pytest.raises(ConfigError, match="unknown table"):
        LogRoster.loads("[[logs]]\n")
    with pytest.raises(NotFound, match="no log"):
        ROSTER.log_verifier("nobody/audit")


def test_names_follow_the_peers_dns_names() -> None:
    assert log_origin(PeerRole.NODE, "housing") == "housing.node.osmanthus/audit"
    assert log_origin(PeerRole.COORDINATOR, "coordinator") == "coordinator.osmanthus/audit"
    assert witness_name(PeerRole.NODE, "province") == "province.node.osmanthus/witness"
    with pytest.raises(InvalidArgument, match="only the coordinator and department nodes"):
        log_origin(PeerRole.REQUESTER, "bank")

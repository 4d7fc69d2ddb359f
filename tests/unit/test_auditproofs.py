"""Who asked about me, proven: audit lines with inclusion proofs built from a real log, its
checkpointer and the cosignatures its log server holds (osmanthus.core.logserver.LocalLog),
decoded strictly, and every lie about them caught by the portal's check: only a checkpoint a
witness cosigned makes a line "verified"; the log's own signature alone makes it "signed"."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from osmanthus.core.audit import AuditEntry, AuditLog, load_or_create_salt
from osmanthus.core.auditproofs import (
    EntryStatus,
    ProvenAudit,
    origin_of,
    proven_audit,
    required_witnesses,
    verify_part,
)
from osmanthus.core.catalogue import load_catalogue
from osmanthus.core.checkpoints import Checkpointer, SignedCheckpoint, history_path
from osmanthus.core.errors import InvalidArgument
from osmanthus.core.logkeys import LogRoster, log_origin, witness_name
from osmanthus.core.logserver import LocalLog
from osmanthus.core.peers import PeerRole
from osmanthus.core.signednote import (
    CosignatureSigner,
    CosignatureVerifier,
    NoteSigner,
    NoteVerifier,
)
from osmanthus.core.subjectfile import (
    COORDINATOR_SOURCE,
    MAX_LEAF_CHARS,
    SCHEMA_VERSION,
    SubjectFile,
    decode,
    encode,
    fit,
)
from osmanthus.core.subjectseal import nonce_text
from portal.views import log_problems_view, queries_view
from portal.whoasked import check_parts

SUBJECT = "320505199001010018"
OTHER = "320505199001010026"
SOURCE = "housing"
ORIGIN = log_origin(PeerRole.NODE, SOURCE)
SIGNER = NoteSigner(name=ORIGIN, private_key=Ed25519PrivateKey.generate())
WITNESS = CosignatureSigner(
    name=witness_name(PeerRole.COORDINATOR, "coordinator"),
    private_key=Ed25519PrivateKey.generate(),
)
ROSTER = LogRoster(
    logs={ORIGIN: NoteVerifier.from_key_text(SIGNER.verifier_key)},
    witnesses={WITNESS.name: CosignatureVerifier.from_key_text(WITNESS.verifier_key)},
)
NONCE = b"\x07" * 32
T0 = datetime(2026, 11, 26, 10, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture
def log(tmp_path: Path) -> AuditLog:
    with AuditLog(path=tmp_path / "audit.jsonl", salt=load_or_create_salt(tmp_path / "s")) as log:
        yield log  # type: ignore[misc]


def _entry(log: AuditLog, n: int, *, subject: str = SUBJECT, batch: bool = False) -> AuditEntry:
    hashes = tuple(log.subject_hashes([subject, *[f"{i:018d}" for i in range(200)]]))
    return AuditEntry(
        time=T0 + timedelta(seconds=n),
        query_id=f"q-{n}",
        requester="bank-of-suzhou",
        purpose="loan_underwriting",
        consent_id="cns_abc",
        policy_hash="ab" * 32,
        decision="allow",
        reason="permitted by central-loan-underwriting",
        shape="breakdown",
        subject_hash="" if batch else log.subject_hash(subject),
        subject_hashes=hashes if batch else (),
        extra={"ciphertexts_received": 22},
    )


def _fill(log: AuditLog, count: int, *, first: int = 0) -> None:
    """`count` entries, every third about another subject."""
    for n in range(first, first + count):
        log.append(_entry(log, n, subject=OTHER if n % 3 == 2 else SUBJECT))


def _checkpointer(log: AuditLog, signer: NoteSigner = SIGNER) -> Checkpointer:
    return Checkpointer(log=log, signer=signer, origin=ORIGIN, every_entries=10_000)


def _local(log: AuditLog, signer: NoteSigner = SIGNER) -> LocalLog:
    """The log as its node serves it: its checkpointer and the witness cosignatures it keeps."""
    return LocalLog(
        log=log,
        checkpointer=_checkpointer(log, signer),
        witnesses=[CosignatureVerifier.from_key_text(WITNESS.verifier_key)],
    )


def _witnessed(local: LocalLog) -> SignedCheckpoint:
    """Sign a checkpoint of the whole log, and have the roster's witness cosign it (as the
    coordinator's witness hands its cosignature back)."""
    signed = local.issue()
    local.add_cosignatures(WITNESS.countersign(signed.note))
    return signed


def _history(log: AuditLog) -> int:
    path = history_path(log.path)
    return len(path.read_bytes().splitlines()) if path.exists() else 0


def _part(proven: ProvenAudit, *, source: str = SOURCE) -> SubjectFile:
    """The part as the portal decodes it (a round trip through the strict schema)."""
    built = SubjectFile(
        source=source,
        query_id="sf-1",
        subject_kind="person",
        subject_id=SUBJECT,
        as_of="2026-11-26",
        generated_at="2026-11-26T10:00:00Z",
        nonce=nonce_text(NONCE),
        audit=proven.lines,
        audit_truncated=proven.truncated,
        checkpoint=proven.checkpoint,
        subject_hash=proven.subject_hash,
    )
    return decode(
        encode(built),
        source=source,
        query_id="sf-1",
        subject_kind="person",
        subject_id=SUBJECT,
        nonce=NONCE,
    )


def test_lines_are_proven_to_the_newest_witnessed_checkpoint_and_none_is_issued(
    log: AuditLog,
) -> None:
    local = _local(log)
    _fill(log, 30)
    _witnessed(local)
    _fill(log, 5, first=30)
    local.issue()  # the log's latest, 35 entries: no witness has cosigned it yet
    before = _history(log)
    proven = proven_audit(log, log.subject_hash(SUBJECT), checkpoints=local)
    assert _history(log) == before  # proving a part signs nothing
    part = _part(proven)
    assert len(part.audit) == 24
    assert part.audit[0].leaf_index == 0 and part.audit[1].leaf_index == 1
    assert json.loads(part.audit[0].leaf)["query_id"] == part.audit[0].query_id
    check = verify_part(part, roster=ROSTER)
    assert check.problem is None
    assert check.checkpoint is not None and check.checkpoint.size == 30
    assert check.witnesses == (WITNESS.name,) and check.witnessed
    # the 20 entries up to the witnessed checkpoint are verified, the 4 after it pending
    assert check.statuses == (EntryStatus.VERIFIED,) * 20 + (EntryStatus.PENDING,) * 4
    assert all(line.proof is None for line in part.audit[20:])


def test_many_subject_file_requests_sign_no_checkpoint(log: AuditLog) -> None:
    """Regression: a part used to sign a checkpoint on request (an Ed25519 signature and two
    fsyncs per request per department). Now N parts add no checkpoint record."""
    local = _local(log)
    _fill(log, 6)
    local.issue()
    before = _history(log)
    for n in range(20):
        log.append(_entry(log, 100 + n))  # each request is audited before its part is built
        proven_audit(log, log.subject_hash(SUBJECT), checkpoints=local)
    assert _history(log) == before == 1
    assert local.last is not None and local.last.size == 6


def test_without_a_witnessed_checkpoint_the_latest_proves_lines_as_signed_only(
    log: AuditLog,
) -> None:
    local = _local(log)
    _fill(log, 9)
    first = local.issue()
    proven = proven_audit(log, log.subject_hash(SUBJECT), checkpoints=local)
    assert proven.checkpoint == first.note.decode()
    check = verify_part(_part(proven), roster=ROSTER)
    assert check.problem is None and not check.witnessed and check.witnesses == ()
    assert set(check.statuses) == {EntryStatus.SIGNED}


def test_a_department_that_rewrites_its_log_and_signs_again_is_not_verified(
    log: AuditLog, tmp_path: Path
) -> None:
    """The attack: the department rewrites who asked (another requester) in a copy of its log,
    builds the tree anew and signs a fresh checkpoint with its real log key. No witness
    cosigned that history (a witness would refuse it: it contradicts what they cosigned), so
    the portal shows its lines as the department's word, never as verified."""
    local = _local(log)
    _fill(log, 6)
    _witnessed(local)
    forged_dir = tmp_path / "forged"
    forged_dir.mkdir()
    with AuditLog(
        path=forged_dir / "audit.jsonl", salt=load_or_create_salt(tmp_path / "s")
    ) as forged:
        for n in range(6):
            entry = _entry(forged, n, subject=OTHER if n % 3 == 2 else SUBJECT)
            forged.append(dataclasses.replace(entry, requester="bank-of-ningbo"))
        rewritten = _local(forged)
        rewritten.issue()
        part = _part(proven_audit(forged, forged.subject_hash(SUBJECT), checkpoints=rewritten))
    assert {line.requester for line in part.audit} == {"bank-of-ningbo"}
    check = verify_part(part, roster=ROSTER)
    assert set(check.statuses) == {EntryStatus.SIGNED}
    assert EntryStatus.VERIFIED not in check.statuses
    # what it signed is served as the log's checkpoint: the witnessed one still proves the truth
    honest = verify_part(
        _part(proven_audit(log, log.subject_hash(SUBJECT), checkpoints=local)), roster=ROSTER
    )
    assert set(honest.statuses) == {EntryStatus.VERIFIED}


def test_an_edited_line_after_signing_is_caught(log: AuditLog) -> None:
    """The attack: the log's holder rewrites what was answered (another requester) in the log
    itself, after the checkpoint: the line's leaf no longer leads to the signed root."""
    local = _local(log)
    _fill(log, 12)
    _witnessed(local)
    text = log.path.read_bytes()
    edited = text.replace(b'"bank-of-suzhou"', b'"bank-of-ningbo"', 1)
    assert len(edited) == len(text)
    log.path.write_bytes(edited)
    part = _part(proven_audit(log, log.subject_hash(SUBJECT), checkpoints=local))
    assert part.audit[0].requester == "bank-of-ningbo"  # what the log says now
    check = verify_part(part, roster=ROSTER)
    assert check.statuses[0] is EntryStatus.FAILED
    assert set(check.statuses[1:]) == {EntryStatus.VERIFIED}
    assert check.problem is not None and "leaf 0" in check.problem
    assert SUBJECT not in check.problem


def test_a_shown_field_that_differs_from_the_proven_line_is_caught(log: AuditLog) -> None:
    """A node that proves one line and shows another: the proof holds, the line does not."""
    local = _local(log)
    _fill(log, 4)
    _witnessed(local)
    proven = proven_audit(log, log.subject_hash(SUBJECT), checkpoints=local)
    lines = list(proven.lines)
    lines[1] = dataclasses.replace(lines[1], requester="court-of-suzhou")
    check = verify_part(_part(dataclasses.replace(proven, lines=tuple(lines))), roster=ROSTER)
    assert check.statuses[1] is EntryStatus.FAILED and check.failed == 1
    assert check.problem is not None and "differs from its logged line" in check.problem
    lines[1] = dataclasses.replace(proven.lines[1], in_batch=True)
    check = verify_part(_part(dataclasses.replace(proven, lines=tuple(lines))), roster=ROSTER)
    assert check.statuses[1] is EntryStatus.FAILED


def test_real_proven_entries_about_another_subject_are_refused(
    log: AuditLog, caplog: pytest.LogCaptureFixture
) -> None:
    """The attack: a department pads the subject's "who asked" with real, verifiable entries of
    its log about someone else. Each proof holds; the logged lines name another hash than the
    one the part states, so the part's log fails and none of its proven lines is shown."""
    local = _local(log)
    _fill(log, 9)
    _witnessed(local)
    mine = proven_audit(log, log.subject_hash(SUBJECT), checkpoints=local)
    theirs = proven_audit(log, log.subject_hash(OTHER), checkpoints=local)
    assert theirs.lines and all(line.proof is not None for line in theirs.lines)
    padded = dataclasses.replace(mine, lines=(*mine.lines, *theirs.lines))
    with caplog.at_level("WARNING", logger="portal.whoasked"):
        (check,) = check_parts([_part(padded)], roster=ROSTER, min_witnesses=0)
    assert set(check.statuses) == {EntryStatus.FAILED}
    assert check.problem is not None and "another subject" in check.problem
    # the alarm names the log, never the subject nor the subject's hash
    for text in (check.problem, caplog.text):
        assert SUBJECT not in text and OTHER not in text
        assert mine.subject_hash not in text and theirs.subject_hash not in text
    assert "housing.node.osmanthus/audit" in caplog.text
    # the part must state a hash for its logged lines to be matched against
    check = verify_part(_part(dataclasses.replace(mine, subject_hash="")), roster=ROSTER)
    assert set(check.statuses) == {EntryStatus.FAILED}
    assert check.problem is not None and "no subject hash" in check.problem
    # a batch entry naming the subject among others is the subject's
    log.append(_entry(log, 50, batch=True))
    assert verify_part(_part(mine), roster=ROSTER).problem is None


def test_one_leaf_shown_twice_is_refused(log: AuditLog) -> None:
    """A department that repeats one proven entry (to make a question look asked twice)."""
    local = _local(log)
    _fill(log, 6)
    _witnessed(local)
    proven = proven_audit(log, log.subject_hash(SUBJECT), checkpoints=local)
    twice = dataclasses.replace(proven, lines=(*proven.lines, proven.lines[0]))
    check = verify_part(_part(twice), roster=ROSTER)
    assert set(check.statuses) == {EntryStatus.FAILED}
    assert check.problem is not None and "more than once" in check.problem


def test_a_checkpoint_signed_with_another_key_fails_every_line(log: AuditLog) -> None:
    impostor = NoteSigner(name=ORIGIN, private_key=Ed25519PrivateKey.generate())
    local = _local(log, impostor)
    _fill(log, 6)
    local.issue()
    part = _part(proven_audit(log, log.subject_hash(SUBJECT), checkpoints=local))
    check = verify_part(part, roster=ROSTER)
    assert set(check.statuses) == {EntryStatus.FAILED}
    assert check.problem is not None and "checkpoint does not verify" in check.problem


def test_another_logs_checkpoint_does_not_prove_this_part(log: AuditLog) -> None:
    """housing's proven lines presented as psb's part: the roster has no psb key; with one
    for psb, housing's note is signed by the wrong key."""
    local = _local(log)
    _fill(log, 6)
    _witnessed(local)
    part = _part(proven_audit(log, log.subject_hash(SUBJECT), checkpoints=local), source="psb")
    check = verify_part(part, roster=ROSTER)
    assert check.origin == "psb.node.osmanthus/audit"
    assert set(check.statuses) == {EntryStatus.FAILED}
    psb = NoteSigner(name=check.origin, private_key=Ed25519PrivateKey.generate())
    roster = ROSTER.with_log(NoteVerifier.from_key_text(psb.verifier_key))
    assert set(verify_part(part, roster=roster).statuses) == {EntryStatus.FAILED}


def test_entries_beyond_the_checkpoint_are_pending(log: AuditLog) -> None:
    local = _local(log)
    _fill(log, 6)
    _witnessed(local)
    _fill(log, 3, first=6)
    part = _part(proven_audit(log, log.subject_hash(SUBJECT), checkpoints=local))
    check = verify_part(part, roster=ROSTER)
    assert check.problem is None
    assert check.statuses == (EntryStatus.VERIFIED,) * 4 + (EntryStatus.PENDING,) * 2
    assert part.audit[-1].proof is None and part.audit[-1].leaf


def test_without_a_checkpointer_every_line_is_pending_and_without_a_roster_unverified(
    log: AuditLog,
) -> None:
    _fill(log, 3)
    part = _part(proven_audit(log, log.subject_hash(SUBJECT), checkpoints=None))
    assert part.checkpoint == ""
    assert set(verify_part(part, roster=ROSTER).statuses) == {EntryStatus.PENDING}
    assert set(verify_part(part, roster=None).statuses) == {EntryStatus.UNVERIFIED}


def test_a_proof_to_a_checkpoint_that_lacks_the_entry_fails(log: AuditLog) -> None:
    local = _local(log)
    _fill(log, 6)
    _witnessed(local)
    proven = proven_audit(log, log.subject_hash(SUBJECT), checkpoints=local)
    last = proven.lines[-1]
    moved = dataclasses.replace(last, leaf_index=40)  # said to be later than it is
    part = _part(dataclasses.replace(proven, lines=(*proven.lines[:-1], moved)))
    assert verify_part(part, roster=ROSTER).statuses[-1] is EntryStatus.FAILED
    bare = dataclasses.replace(last, proof=None)  # covered, yet sent without its proof
    part = _part(dataclasses.replace(proven, lines=(*proven.lines[:-1], bare)))
    assert verify_part(part, roster=ROSTER).statuses[-1] is EntryStatus.FAILED
    bent = dataclasses.replace(last, proof=("A" * 43 + "=",) * len(last.proof or ()))
    part = _part(dataclasses.replace(proven, lines=(*proven.lines[:-1], bent)))
    assert verify_part(part, roster=ROSTER).statuses[-1] is EntryStatus.FAILED


def test_witness_cosignatures_are_counted_against_min_witnesses(log: AuditLog) -> None:
    assert required_witnesses(0) == required_witnesses(1) == 1 and required_witnesses(3) == 3
    local = _local(log)
    _fill(log, 6)
    local.issue()
    proven = proven_audit(log, log.subject_hash(SUBJECT), checkpoints=local)
    plain = _part(proven)
    for minimum in (0, 1):
        check = verify_part(plain, roster=ROSTER, min_witnesses=minimum)
        assert check.witnesses == () and check.problem is None
        assert set(check.statuses) == {EntryStatus.SIGNED}  # shown, as the department's word
    cosigned = WITNESS.countersign(proven.checkpoint.encode()).decode()
    part = _part(dataclasses.replace(proven, checkpoint=cosigned))
    for minimum in (0, 1):
        check = verify_part(part, roster=ROSTER, min_witnesses=minimum)
        assert check.witnesses == (WITNESS.name,)
        assert set(check.statuses) == {EntryStatus.VERIFIED}
    # a portal that asks for two witnesses: one is not enough to verify
    check = verify_part(part, roster=ROSTER, min_witnesses=2)
    assert set(check.statuses) == {EntryStatus.SIGNED} and check.problem is None
    # a note signed only by the witness is not the log's
    only_witness = WITNESS.sign(proven.checkpoint.split("\n\n")[0] + "\n").decode()
    check = verify_part(_part(dataclasses.replace(proven, checkpoint=only_witness)), roster=ROSTER)
    assert set(check.statuses) == {EntryStatus.FAILED}


def test_a_witness_of_the_logs_own_party_is_not_counted(log: AuditLog) -> None:
    """housing cosigning housing's own log proves nothing more than housing's signature."""
    own = CosignatureSigner(
        name=witness_name(PeerRole.NODE, SOURCE), private_key=Ed25519PrivateKey.generate()
    )
    roster = ROSTER.with_witness(CosignatureVerifier.from_key_text(own.verifier_key))
    local = _local(log)
    _fill(log, 3)
    local.issue()
    proven = proven_audit(log, log.subject_hash(SUBJECT), checkpoints=local)
    self_cosigned = own.countersign(proven.checkpoint.encode()).decode()
    check = verify_part(_part(dataclasses.replace(proven, checkpoint=self_cosigned)), roster=roster)
    assert check.witnesses == () and set(check.statuses) == {EntryStatus.SIGNED}


def test_a_bad_cosignature_by_a_rostered_witness_refuses_the_checkpoint(log: AuditLog) -> None:
    local = _local(log)
    _fill(log, 3)
    local.issue()
    proven = proven_audit(log, log.subject_hash(SUBJECT), checkpoints=local)
    cosigned = WITNESS.countersign(proven.checkpoint.encode()).decode()
    # flip one character of the cosignature's base64 (past the key id)
    head, line = cosigned.rsplit("\n", 2)[0], cosigned.rsplit("\n", 2)[1]
    name, sig = line.rsplit(" ", 1)
    flipped = sig[:20] + ("A" if sig[20] != "A" else "B") + sig[21:]
    tampered = f"{head}\n{name} {flipped}\n"
    check = verify_part(_part(dataclasses.replace(proven, checkpoint=tampered)), roster=ROSTER)
    assert set(check.statuses) == {EntryStatus.FAILED}
    assert check.problem is not None and "does not verify" in check.problem


def test_the_newest_cosigned_checkpoint_is_kept_across_a_restart(log: AuditLog) -> None:
    local = _local(log)
    _fill(log, 6)
    witnessed = _witnessed(local)
    _fill(log, 3, first=6)
    local.issue()
    again = _local(log)  # the node restarted: read back from <log>.cosignatures
    found = again.latest_cosigned()
    assert found is not None and found.checkpoint == witnessed.checkpoint
    assert WITNESS.name.encode() in found.note
    assert again.last is not None and again.last.size == 9


def test_a_batch_line_too_long_to_send_goes_unproven(log: AuditLog) -> None:
    local = _local(log)
    log.append(_entry(log, 0))
    log.append(_entry(log, 1, batch=True))  # 201 hashes: over MAX_LEAF_CHARS
    _witnessed(local)
    proven = proven_audit(log, log.subject_hash(SUBJECT), checkpoints=local)
    assert len(proven.lines) == 2 and proven.lines[1].in_batch
    assert proven.lines[1].leaf == "" and proven.lines[1].leaf_index is None
    check = verify_part(_part(proven), roster=ROSTER)
    assert check.statuses == (EntryStatus.VERIFIED, EntryStatus.PENDING)


def test_origins() -> None:
    assert origin_of("housing") == "housing.node.osmanthus/audit"
    assert origin_of(COORDINATOR_SOURCE) == "coordinator.osmanthus/audit"


# --- the schema ------------------------------------------------------------------------------


def _raw(log: AuditLog) -> dict[str, Any]:
    _fill(log, 3)
    local = _local(log)
    local.issue()
    proven = proven_audit(log, log.subject_hash(SUBJECT), checkpoints=local)
    raw: dict[str, Any] = json.loads(encode(_part(proven)))
    return raw


def _decode(raw: dict[str, Any]) -> SubjectFile:
    return decode(
        json.dumps(raw).encode(),
        source=SOURCE,
        query_id="sf-1",
        subject_kind="person",
        subject_id=SUBJECT,
        nonce=NONCE,
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda a: a.update(leaf_index=None), "audit[0].leaf_index"),
        (lambda a: a.update(leaf=""), "audit[0].leaf_index"),
        (lambda a: a.update(leaf_index=True), "audit[0].leaf_index"),
        (lambda a: a.update(leaf_index="0"), "audit[0].leaf_index"),
        (lambda a: a.update(leaf_index=-1), "audit[0].leaf_index"),
        (lambda a: a.update(proof="AAAA"), "audit[0].proof"),
        (lambda a: a.update(proof=[1]), "audit[0].proof"),
        (lambda a: a.update(proof=["A" * 44] * 65), "audit[0].proof"),
        (lambda a: a.update(leaf="x" * (MAX_LEAF_CHARS + 1)), "audit[0].leaf"),
        (lambda a: a.update(leaf="", leaf_index=None), "audit[0].proof"),
        (lambda a: a.pop("proof"), "audit[0]"),
    ],
)
def test_decode_refuses_a_malformed_proven_line(log: AuditLog, change: Any, field: str) -> None:
    raw = _raw(log)
    change(raw["audit"][0])
    with pytest.raises(InvalidArgument) as refused:
        _decode(raw)
    assert refused.value.field == field


def test_decode_refuses_the_old_schema_and_a_huge_checkpoint(log: AuditLog) -> None:
    raw = _raw(log)
    assert raw["version"] == SCHEMA_VERSION == 4
    assert raw["subject_hash"] == log.subject_hash(SUBJECT)
    assert _decode(raw).audit[0].proof is not None
    with pytest.raises(InvalidArgument) as refused:
        _decode({**raw, "version": 3})
    assert refused.value.field == "version"
    for bad in ("AB" * 32, "ab" * 31, SUBJECT):
        with pytest.raises(InvalidArgument) as refused:
            _decode({**raw, "subject_hash": bad})
        assert refused.value.field == "subject_hash"
    with pytest.raises(InvalidArgument) as refused:
        _decode({**raw, "subject_hash": 7})
    assert refused.value.field == "file.subject_hash"
    with pytest.raises(InvalidArgument) as refused:
        _decode({k: v for k, v in raw.items() if k != "subject_hash"})
    assert refused.value.field == "file"
    with pytest.raises(InvalidArgument) as refused:
        _decode({**raw, "checkpoint": "x" * (64 * 1024 + 1)})
    assert refused.value.field == "checkpoint"
    with pytest.raises(InvalidArgument) as refused:
        _decode({k: v for k, v in raw.items() if k != "checkpoint"})
    assert refused.value.field == "file"


def test_fit_drops_the_oldest_proven_lines_and_keeps_the_checkpoint(log: AuditLog) -> None:
    local = _local(log)
    _fill(log, 600)
    _witnessed(local)
    proven = proven_audit(log, log.subject_hash(SUBJECT), checkpoints=local)
    part = _part(proven)
    whole = len(encode(part))
    fitted, data = fit(part, max_bytes=whole // 2)
    assert len(data) <= whole // 2 and fitted.audit_truncated
    assert fitted.checkpoint == part.checkpoint
    assert fitted.audit[-1] == part.audit[-1]
    check = verify_part(fitted, roster=ROSTER)
    assert set(check.statuses) == {EntryStatus.VERIFIED}


# --- what the portal shows ---------------------------------------------------------------------


def test_the_portal_hides_failed_lines_and_names_the_log(
    log: AuditLog, caplog: pytest.LogCaptureFixture
) -> None:
    local = _local(log)
    _fill(log, 6)
    _witnessed(local)
    proven = proven_audit(log, log.subject_hash(SUBJECT), checkpoints=local)
    lied = dataclasses.replace(proven.lines[0], requester="court-of-suzhou")
    part = _part(dataclasses.replace(proven, lines=(lied, *proven.lines[1:])))
    catalogue = load_catalogue()
    with caplog.at_level("WARNING", logger="portal.whoasked"):
        checks = check_parts([part], roster=ROSTER, min_witnesses=0)
    assert "housing.node.osmanthus/audit" in caplog.text and SUBJECT not in caplog.text
    rows = queries_view(catalogue, [part], checks)
    assert len(rows) == len(part.audit) - 1
    assert "court-of-suzhou" not in {r.requester for r in rows}
    assert {r.status for r in rows} == {"verified"}
    assert rows[0].status_label.zh == "已核验"
    (problem,) = log_problems_view(catalogue, checks)
    assert problem.hidden == 1 and problem.source.en
    unchecked = queries_view(catalogue, [part], check_parts([part], roster=None, min_witnesses=0))
    assert len(unchecked) == len(part.audit) and {r.status for r in unchecked} == {"unverified"}


def test_the_portal_marks_signed_only_lines_in_words(log: AuditLog, tmp_path: Path) -> None:
    local = _local(log)
    _fill(log, 3)
    local.issue()
    catalogue = load_catalogue()
    part = _part(proven_audit(log, log.subject_hash(SUBJECT), checkpoints=local))
    rows = queries_view(catalogue, [part], check_parts([part], roster=ROSTER, min_witnesses=0))
    assert {r.status for r in rows} == {"signed"}
    assert rows[0].status_label.en == "Signed by the department only · not yet witnessed"
    assert "未经见证" in rows[0].status_label.zh and "已核验" not in rows[0].status_label.zh
    # the coordinator's own lines say whose word they are
    signer = NoteSigner(
        name=origin_of(COORDINATOR_SOURCE), private_key=Ed25519PrivateKey.generate()
    )
    roster = ROSTER.with_log(NoteVerifier.from_key_text(signer.verifier_key))
    (tmp_path / "coordinator").mkdir()
    salt = load_or_create_salt(tmp_path / "coordinator-salt")
    with AuditLog(path=tmp_path / "coordinator" / "audit.jsonl", salt=salt) as own_log:
        _fill(own_log, 3)
        checkpointer = Checkpointer(log=own_log, signer=signer, origin=signer.name)
        own = LocalLog(log=own_log, checkpointer=checkpointer)
        own.issue()
        proven = proven_audit(own_log, own_log.subject_hash(SUBJECT), checkpoints=own)
    ours = _part(proven, source=COORDINATOR_SOURCE)
    rows = queries_view(catalogue, [ours], check_parts([ours], roster=roster, min_witnesses=0))
    assert {r.status for r in rows} == {"signed"}
    assert rows[0].status_label.en == "Signed by the coordinator only · not yet witnessed"

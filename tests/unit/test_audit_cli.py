"""`osmanthus audit` attacked: every rewrite of a log is found by `audit verify` and named.

Each attack edits the files of a real log (an AuditLog with a Checkpointer signing every 50
entries, a witness cosigning) as whoever holds them could, then runs the command as an auditor
would, in text and in --json: the exit code is LOG_FAILED_VERIFICATION and the message names the
lines or sizes. Search by subject finds its entries without ever printing the id; proofs verify.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from osmanthus.cli import main
from osmanthus.cli.auditing import Levels
from osmanthus.cli.exit_codes import ExitCode
from osmanthus.core import merkle
from osmanthus.core.audit import AuditEntry, AuditLog, load_or_create_salt
from osmanthus.core.checkpoints import Checkpointer, history_path, latest_path
from osmanthus.core.logkeys import LogRoster
from osmanthus.core.logserver import COSIGNATURES_SUFFIX, LocalLog
from osmanthus.core.signednote import (
    Checkpoint,
    CosignatureSigner,
    CosignatureVerifier,
    NoteSigner,
    NoteVerifier,
    open_note,
    parse_checkpoint,
)

ORIGIN = "housing.node.osmanthus/audit"
SUBJECT = "320505199001010018"
OTHER_SUBJECT = "11010519491231002X"
ENTRIES = 300
EVERY = 50
FAILED = int(ExitCode.LOG_FAILED_VERIFICATION)

SIGNER = NoteSigner(name=ORIGIN, private_key=Ed25519PrivateKey.generate())
WITNESS = CosignatureSigner(
    name="coordinator.osmanthus/witness", private_key=Ed25519PrivateKey.generate()
)


class Clock:
    def __call__(self) -> float:
        return 1000.0


def _entry(log: AuditLog, n: int, tag: str = "q") -> AuditEntry:
    subject = SUBJECT if n % 7 == 0 else OTHER_SUBJECT
    return AuditEntry(
        time=datetime(2026, 11, 1 + n // 20, 10, 0, n % 60, tzinfo=UTC),
        query_id=f"{tag}_{n:06d}",
        requester="bank-of-suzhou" if n % 2 else "suzhou-insurance",
        purpose="loan_underwriting",
        consent_id="cns_abcdefghijklmnopqrstuv",
        policy_hash="ab" * 32,
        decision="deny" if n % 5 == 0 else "allow",
        reason="permitted by central-loan-underwriting",
        shape="breakdown",
        subject_hash=log.subject_hash(subject),
        extra={"ciphertexts_received": 22},
    )


WITNESS_KEY = CosignatureVerifier(name=WITNESS.name, public_key=WITNESS.public_key)


def _build(
    directory: Path,
    entries: int = ENTRIES,
    *,
    signer: NoteSigner = SIGNER,
    witness: CosignatureSigner = WITNESS,
) -> Path:
    """A log of `entries` with a checkpoint every EVERY, the last cosigned by the witness and
    the cosignature kept beside the log by the log's own LocalLog."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "audit.jsonl"
    salt = load_or_create_salt(directory / "audit.salt")
    with AuditLog(path=path, salt=salt) as log:
        cp = Checkpointer(
            log=log, signer=signer, origin=ORIGIN, every_entries=EVERY, every_s=3600, now=Clock()
        )
        for n in range(entries):
            log.append(_entry(log, n))
            cp.issue_if_due()
        signed = cp.last if cp.last is not None and cp.last.size == entries else cp.issue()
        key = CosignatureVerifier(name=witness.name, public_key=witness.public_key)
        local = LocalLog(log=log, checkpointer=cp, witnesses=[key])
        local.add_cosignatures(witness.countersign(signed.note, timestamp=1_790_000_000))
    return path


@pytest.fixture
def roster(tmp_path: Path) -> Path:
    where = tmp_path / "logs.toml"
    LogRoster(
        logs={ORIGIN: NoteVerifier(name=ORIGIN, public_key=SIGNER.public_key)},
        witnesses={WITNESS.name: WITNESS_KEY},
    ).dump(where)
    return where


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return _build(tmp_path / "housing")


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _verify(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, dict[str, object]]:
    """(exit code, human output, --json document) of `audit verify` with `args`."""
    code = main(["audit", "verify", *args])
    human = capsys.readouterr()
    json_code = main(["audit", "verify", *args, "--json"])
    document = json.loads(capsys.readouterr().out)
    assert json_code == code
    return code, human.out + human.err, document


def _problem(document: dict[str, object]) -> str:
    logs = document["logs"]
    assert isinstance(logs, list)
    failed = [report for report in logs if not report["ok"]]
    assert failed, document
    return str(failed[0]["problem"])


def test_an_untouched_log_verifies_and_reports_its_witness(
    log: Path, roster: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text, document = _verify(capsys, str(log), "--logs", str(roster), "--quorum", "1")
    assert code == 0, text
    assert "OK" in text and f"cosigned by   {WITNESS.name}: 300" in text
    logs = document["logs"]
    assert isinstance(logs, list)
    (report,) = logs
    assert report["ok"] and report["entries"] == ENTRIES and report["checkpoints"] == 6
    assert report["cosigned"] == {WITNESS.name: [300]} and report["witnessed_size"] == 300


@pytest.mark.parametrize(
    ("attack", "named"),
    [
        ("byte", "lines 101..150"),
        ("delete", "lines 101..150"),
        ("reorder", "lines 101..150"),
        ("truncate", "holds 270 lines but checkpoint 300"),
        ("fork", "lines 151..200"),
    ],
)
def test_a_rewritten_log_fails_naming_the_lines(
    attack: str,
    named: str,
    log: Path,
    roster: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    lines = _lines(log)
    if attack == "byte":
        lines[119] = lines[119].replace(b"q_000119", b"q_000118")
    elif attack == "delete":
        del lines[119]
    elif attack == "reorder":
        lines[119], lines[120] = lines[120], lines[119]
    elif attack == "truncate":
        lines = lines[:270]
    elif attack == "fork":
        # another log that shares the first 150 entries, with its own (honest-looking) tree
        other = _build(tmp_path / "fork", 150)
        with AuditLog(path=other, salt=load_or_create_salt(other.parent / "audit.salt")) as f:
            for n in range(150, ENTRIES):
                f.append(_entry(f, n, tag="fork"))
        lines = lines[:150] + _lines(other)[150:]
    log.write_bytes(b"".join(lines))
    code, text, document = _verify(capsys, str(log), "--logs", str(roster))
    assert code == FAILED, text
    assert named in text and "FAILED" in text
    assert named in _problem(document) and document["ok"] is False
    if attack == "byte":
        # the unsigned tree beside the log still holds the old leaf: a pointer to line 120
        assert "line 120 is the first" in text


def test_an_old_checkpoint_replayed_into_the_history_fails(
    log: Path, roster: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    history = history_path(log)
    records = history.read_text().splitlines()
    history.write_text("\n".join([*records, records[1]]) + "\n")
    code, text, document = _verify(capsys, str(log), "--logs", str(roster))
    assert code == FAILED
    assert "checkpoint 100 follows checkpoint 300" in text
    assert "goes backwards" in _problem(document)


def test_a_log_rolled_back_with_its_checkpoints_fails_against_a_saved_checkpoint(
    log: Path, roster: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = tmp_path / "saved.note"
    assert main(["audit", "checkpoint", str(log), "--logs", str(roster), "--save", str(saved)]) == 0
    capsys.readouterr()
    # the holder rolls everything back to checkpoint 100: log, history, latest, cosignatures
    records = history_path(log).read_text().splitlines()[:2]
    history_path(log).write_text("\n".join(records) + "\n")
    latest_path(log).write_bytes(json.loads(records[-1])["note"].encode())
    log.write_bytes(b"".join(_lines(log)[:100]))
    log.with_name(log.name + COSIGNATURES_SUFFIX).unlink()
    for tree_file in log.parent.glob("audit.jsonl.tree.*"):
        tree_file.unlink()
    code, _, _ = _verify(capsys, str(log), "--logs", str(roster))
    assert code == 0  # on its own, a consistent older log
    code, text, document = _verify(
        capsys, str(log), "--logs", str(roster), "--previous", str(saved)
    )
    assert code == FAILED
    assert "history ends at checkpoint 100, behind checkpoint 300 you saved" in text
    assert "rolled back" in _problem(document)


def test_checkpoints_signed_with_another_key_fail(
    tmp_path: Path, roster: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    impostor = NoteSigner(name=ORIGIN, private_key=Ed25519PrivateKey.generate())
    path = _build(tmp_path / "impostor", signer=impostor)
    code, text, document = _verify(capsys, str(path), "--logs", str(roster))
    assert code == FAILED
    assert "audit.jsonl.checkpoints line 1" in text and "not from a trusted key" in text
    assert "not from a trusted key" in _problem(document)


def test_a_forged_cosignature_fails_and_a_missing_quorum_fails(
    log: Path, roster: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text, _ = _verify(capsys, str(log), "--logs", str(roster), "--quorum", "2")
    assert code == FAILED and "cosigned by witnesses of 2 parties other than the log's" in text
    cosignatures = log.with_name(log.name + COSIGNATURES_SUFFIX)
    record = json.loads(cosignatures.read_text())
    # another key's signature under the witness's name and key ID: a forged cosignature
    forger = CosignatureSigner(name=WITNESS.name, private_key=Ed25519PrivateKey.generate())
    forged = forger.countersign(latest_path(log).read_bytes(), timestamp=1_790_000_000)
    forged_raw = base64.b64decode(forged.decode().splitlines()[-1].rsplit(" ", 1)[1])
    (line,) = record["lines"]
    prefix, real = line.rstrip("\n").rsplit(" ", 1)
    spliced = base64.b64encode(base64.b64decode(real)[:4] + forged_raw[4:]).decode()
    record["lines"] = [f"{prefix} {spliced}\n"]
    cosignatures.write_text(json.dumps(record) + "\n")
    code, text, document = _verify(capsys, str(log), "--logs", str(roster))
    assert code == FAILED
    assert f"the cosignature of {WITNESS.name} on checkpoint 300 does not verify" in text
    assert "does not verify" in _problem(document)


def test_a_witness_of_the_logs_own_party_does_not_count_for_the_quorum(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    own = CosignatureSigner(
        name="housing.node.osmanthus/witness", private_key=Ed25519PrivateKey.generate()
    )
    log = _build(tmp_path / "housing", witness=own)
    roster = tmp_path / "logs.toml"
    LogRoster(
        logs={ORIGIN: NoteVerifier(name=ORIGIN, public_key=SIGNER.public_key)},
        witnesses={own.name: CosignatureVerifier(name=own.name, public_key=own.public_key)},
    ).dump(roster)
    code, _text, document = _verify(capsys, str(log), "--logs", str(roster), "--quorum", "1")
    assert code == FAILED
    assert "witnesses of 1 parties other than the log's" in _problem(document)


def test_a_cosignature_of_another_root_is_a_fork_shown_to_the_witness(
    log: Path, roster: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other_root = merkle.leaf_hash(b"another log")
    body = Checkpoint(origin=ORIGIN, size=ENTRIES, root_hash=other_root).body()
    line = WITNESS.signature_line(body, timestamp=1_790_000_100)
    record = {"size": ENTRIES, "root": other_root.hex(), "lines": [line]}
    with log.with_name(log.name + COSIGNATURES_SUFFIX).open("a") as handle:
        handle.write(json.dumps(record) + "\n")
    code, text, document = _verify(capsys, str(log), "--logs", str(roster))
    assert code == FAILED
    assert "audit.jsonl.cosignatures line 2" in text and "cosigned checkpoint 300" in text
    assert "fork" in _problem(document)


def test_a_directory_is_verified_log_by_log(
    tmp_path: Path, roster: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _build(tmp_path / "state")
    bad = good.with_name("copy.jsonl")
    shutil.copy(good, bad)
    for suffix in (".checkpoint", ".checkpoints"):
        shutil.copy(good.with_name(good.name + suffix), bad.with_name(bad.name + suffix))
    lines = _lines(bad)
    bad.write_bytes(b"".join([*lines[:10], lines[11], lines[10], *lines[12:]]))
    code, text, document = _verify(capsys, str(tmp_path / "state"), "--logs", str(roster))
    assert code == FAILED
    reports = {Path(r["log"]).name: r for r in document["logs"]}  # type: ignore[attr-defined]
    assert reports["audit.jsonl"]["ok"] and not reports["copy.jsonl"]["ok"]
    assert "lines 1..50" in reports["copy.jsonl"]["problem"]
    assert "1 of 2 log(s) failed verification" in text


def test_bad_input_exits_with_input_codes(
    tmp_path: Path, log: Path, roster: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "verify", str(log)]) == ExitCode.INVALID_INPUT  # no keys
    assert main(["audit", "verify", str(tmp_path / "none.jsonl"), "--logs", str(roster)]) == 3
    assert main(["audit", "verify", str(log), "--log-key", "not a key"]) == 3
    capsys.readouterr()
    assert main(["audit", "verify", str(log), "--json"]) == 3
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is False and "--logs" in document["error"]
    # another log's key: the log fails verification, it is not bad input
    other = NoteSigner(name="tax.node.osmanthus/audit", private_key=Ed25519PrivateKey.generate())
    key = NoteVerifier(name=other.name, public_key=other.public_key).verifier_key
    assert main(["audit", "verify", str(log), "--log-key", key]) == FAILED
    empty = roster.with_name("empty.toml")
    LogRoster().dump(empty)
    capsys.readouterr()
    assert main(["audit", "verify", str(log), "--logs", str(empty)]) == FAILED
    assert "it is not in the roster" in capsys.readouterr().out


def test_checkpoint_shows_signatures_verified_or_not(
    log: Path, roster: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "checkpoint", str(log), "--logs", str(roster), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["size"] == ENTRIES and document["verified"] is True
    assert list(document["cosigned_at"]) == [WITNESS.name]
    assert main(["audit", "checkpoint", str(log)]) == 0
    assert "NOT VERIFIED" in capsys.readouterr().out
    latest_path(log).write_bytes(latest_path(log).read_bytes().replace(b"300", b"301", 1))
    assert main(["audit", "checkpoint", str(log), "--logs", str(roster)]) == FAILED
    assert "FAILED" in capsys.readouterr().out


def test_inclusion_and_consistency_proofs_verify(
    log: Path, roster: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["audit", "prove", str(log), "--index", "123", "--logs", str(roster), "--json"]) == 0
    )
    proof = json.loads(capsys.readouterr().out)
    checkpoint = parse_checkpoint(
        open_note(
            latest_path(log).read_bytes(),
            [NoteVerifier(name=ORIGIN, public_key=SIGNER.public_key)],
        ).text
    )
    assert proof["size"] == checkpoint.size and proof["root_signed"] is True
    hashes = [base64.b64decode(h) for h in proof["hashes"]]
    line = _lines(log)[123].rstrip(b"\n")
    assert proof["entry"].encode() == line
    merkle.verify_inclusion(123, ENTRIES, merkle.leaf_hash(line), hashes, checkpoint.root_hash)
    with pytest.raises(merkle.ProofError):
        merkle.verify_inclusion(124, ENTRIES, merkle.leaf_hash(line), hashes, checkpoint.root_hash)

    args = ["audit", "prove", str(log), "--from", "100", "--to", "300", "--logs", str(roster)]
    assert main([*args, "--json"]) == 0
    consistency = json.loads(capsys.readouterr().out)
    assert consistency["roots_signed"] == [True, True]
    old_root = base64.b64decode(consistency["from_root"])
    merkle.verify_consistency(
        100,
        300,
        old_root,
        checkpoint.root_hash,
        [base64.b64decode(h) for h in consistency["hashes"]],
    )
    assert main(args) == 0
    assert "verified: True" in capsys.readouterr().out


def test_levels_give_the_reference_roots_and_proofs() -> None:
    leaves = [merkle.leaf_hash(bytes([n])) for n in range(37)]
    levels, reference = Levels(), merkle.MemoryTree(leaves)
    for leaf in leaves:
        levels.append(leaf)
    for size in range(1, 38):
        assert levels.root(size) == reference.root(size)
        assert merkle.inclusion_proof(levels, size // 2, size) == merkle.inclusion_proof(
            reference, size // 2, size
        )


def test_search_by_subject_finds_its_entries_and_never_prints_the_id(
    log: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    args = ["audit", "search", str(log), "--subject", SUBJECT, "--kind", "person"]
    assert main([*args, "--json"]) == 0
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    indices = [entry["index"] for entry in document["entries"]]
    assert indices == [n for n in range(ENTRIES) if n % 7 == 0]
    assert main([*args, "--decision", "deny", "--limit", "3"]) == 0
    text = capsys.readouterr()
    assert "0  2026-11-01" in text.out and "3 entries" in text.out
    for output in (captured.out, captured.err, text.out, text.err, caplog.text):
        assert SUBJECT not in output and SUBJECT[:10] not in output
    # the hash the command computed is the log's own
    with AuditLog(path=log, salt=load_or_create_salt(log.parent / "audit.salt")) as audit:
        assert document["entries"][0]["subject_hash"] == audit.subject_hash(SUBJECT)


def test_search_filters_by_time_requester_and_purpose(
    log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["audit", "search", str(log), "--json", "--requester", "bank-of-suzhou"]
    assert main([*args, "--since", "2026-11-02", "--until", "2026-11-02"]) == 0
    entries = json.loads(capsys.readouterr().out)["entries"]
    assert [e["index"] for e in entries] == [n for n in range(20, 40) if n % 2]
    assert main(["audit", "search", str(log), "--json", "--purpose", "other"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 0
    with pytest.raises(SystemExit) as usage:  # a time without a zone is ambiguous
        main(["audit", "search", str(log), "--since", "2026-11-02T10:00:00"])
    assert usage.value.code == ExitCode.USAGE


def test_search_refuses_to_create_a_salt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _build(tmp_path / "nosalt", 10)
    (path.parent / "audit.salt").unlink()
    code = main(["audit", "search", str(path), "--subject", SUBJECT, "--kind", "person"])
    assert code == ExitCode.INVALID_INPUT
    assert not (path.parent / "audit.salt").exists()
    assert SUBJECT not in capsys.readouterr().err


def test_search_reads_the_subject_from_stdin_or_a_file_not_the_command_line(
    log: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The attack: `--subject ID` puts a resident id where every local user reads it
    (/proc/<pid>/cmdline, ps) and into shell history. With `--subject -` or `--subject-file`
    the id is on no command line, and the search finds the same entries."""
    expected = [n for n in range(ENTRIES) if n % 7 == 0]
    monkeypatch.setattr("sys.stdin", io.StringIO(SUBJECT + "\n"))
    argv = ["audit", "search", str(log), "--subject", "-", "--kind", "person", "--json"]
    assert SUBJECT not in argv
    assert main(argv) == 0
    assert [e["index"] for e in json.loads(capsys.readouterr().out)["entries"]] == expected
    secret = tmp_path / "subject.txt"
    secret.write_text(SUBJECT + "\n", encoding="utf-8")
    argv = ["audit", "search", str(log), "--subject-file", str(secret), "--kind", "person"]
    assert main([*argv, "--json"]) == 0
    assert [e["index"] for e in json.loads(capsys.readouterr().out)["entries"]] == expected
    # bad input names the source, never the content
    secret.write_text("\n", encoding="utf-8")
    assert main(argv) == ExitCode.INVALID_INPUT
    assert f"{secret} must hold the subject id" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO(SUBJECT + "x" * 300))
    assert main(["audit", "search", str(log), "--subject", "-", "--kind", "person"]) == (
        ExitCode.INVALID_INPUT
    )
    err = capsys.readouterr().err
    assert "standard input must hold the subject id" in err and SUBJECT not in err
    assert main(["audit", "search", str(log), "--subject-file", str(tmp_path / "none")]) == (
        ExitCode.INVALID_INPUT
    )
    assert "--kind go together" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:  # one source of the id
        main([*argv, "--subject", "-"])
    assert usage.value.code == ExitCode.USAGE
    # the help says so
    with pytest.raises(SystemExit):
        main(["audit", "search", "--help"])
    assert "--subject -" in capsys.readouterr().out

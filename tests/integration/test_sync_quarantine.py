"""A batch changed in the sync job's outbox after it was signed: the job refuses to sign it anew
or send it (plain resend, `sync rebase`, a key change), quarantines it, says so in `sync status`,
and `sync quarantine drop|rebuild` get the stream going again with the real records.

The attack: one digit of a stored batch's payload changed in the state file. The receiver
refuses the changed payload as it stands; before the fix, `sync rebase` or a key change had the
job sign it anew, and the province stored the forged grade in place of the real one.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from certs import PeerRole, cert_paths
from osmanthus.core import signing
from osmanthus.core.syncbatch import BatchKind, read_batch
from osmanthus.core.tls import TlsFiles
from osmanthus.demo.launcher import osmanthus_command
from sdk.province import ProvinceClient
from syncjob.state import SyncState
from tests.integration import test_sync
from tests.integration.test_sync import SENDER, Rig, _by_kind, _expected_grades, _free_port

#: test_sync's fixtures: a federation and a rig of this module's own
sync_federation = test_sync.sync_federation
rig = test_sync.rig

#: ExitCode.QUARANTINED
QUARANTINED = 7


def _sync(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        osmanthus_command("sync", *args), capture_output=True, text=True, timeout=120
    )


def _status(config: Path) -> tuple[int, dict[str, Any]]:
    done = _sync("status", "--config", str(config), "--json")
    return done.returncode, dict(json.loads(done.stdout))


def _built_while_the_receiver_was_down(rig: Rig, name: str) -> Path:
    config = rig.config(name, port=_free_port(), lists=False, statistics=False, retry_for="1s")
    assert rig.run(config).returncode == 5
    return config


def _forge(state_dir: Path) -> tuple[str, str, int, bytes]:
    """Change one digit of the first grade in the first waiting grades batch, in the state file
    itself; (batch id, credit code, forged score, the signature left as it was)."""
    with sqlite3.connect(state_dir / "sync.sqlite") as db:
        batch_id, payload, signature = db.execute(
            "SELECT batch_id, payload, signature FROM outbox WHERE kind = 'grades' "
            "ORDER BY sequence LIMIT 1"
        ).fetchone()
        payload = bytes(payload)
        record = json.loads(payload)["records"][0]
        real = record["score"]
        forged = real + 1 if real % 10 != 9 else real - 1
        at = payload.index(record["credit_code"].encode())
        at = payload.index(b'"score":%d' % real, at)
        changed = payload[:at] + b'"score":%d' % forged + payload[at + len(b'"score":%d' % real) :]
        read_batch(changed)  # well formed: only the signature tells it from the real one
        db.execute("UPDATE outbox SET payload = ? WHERE batch_id = ?", (changed, batch_id))
    return batch_id, record["credit_code"], forged, bytes(signature)


def _signatures(state_dir: Path) -> list[bytes]:
    with sqlite3.connect(state_dir / "sync.sqlite") as db:
        return [bytes(r[0]) for r in db.execute("SELECT signature FROM outbox ORDER BY rowid")]


def _assert_real_grades_only(rig: Rig, receiver: str, code: str, forged: int) -> None:
    grades = _by_kind(rig.stored(receiver), BatchKind.GRADES)
    expected = _expected_grades(rig)
    assert {r["credit_code"]: (r["grade"], r["score"]) for r in grades} == expected
    assert len(grades) == len(expected)
    assert all(r["score"] != forged for r in grades if r["credit_code"] == code)


def test_a_batch_changed_on_disk_is_neither_sent_nor_rebased_and_rebuild_sends_the_real_one(
    rig: Rig,
) -> None:
    config = _built_while_the_receiver_was_down(rig, "forged")
    state_dir = rig.root / "forged"
    batch_id, code, forged, signature = _forge(state_dir)
    before = _signatures(state_dir)
    port = rig.start_receiver(state="forged")
    config = rig.config("forged", port=port, lists=False, statistics=False)
    # a plain resend: checked first, quarantined, never sent (the job says why)
    sent = rig.run(config)
    assert sent.returncode == QUARANTINED, sent.stdout + sent.stderr
    assert "quarantined" in sent.stdout and "changed after it was signed" in sent.stdout
    assert "QUARANTINED grades batch #1" in sent.stderr  # the log's alarm, at ERROR
    tls = TlsFiles.from_cert_paths(cert_paths(rig.certs, role=PeerRole.REQUESTER, name="sync-1"))
    with ProvinceClient(f"127.0.0.1:{port}", tls=tls) as province:
        assert not province.rejections().rejections  # nothing reached the receiver
    # `sync rebase` would sign every waiting batch anew: refused, nothing signed anew
    rebased = _sync("rebase", "--config", str(config), "--kind", "grades")
    assert rebased.returncode == QUARANTINED, rebased.stderr
    assert "quarantined" in rebased.stderr and batch_id in rebased.stderr
    assert _signatures(state_dir) == before and signature in before
    code_, status = _status(config)
    assert code_ == QUARANTINED
    (held,) = status["quarantine"]
    assert (held["kind"], held["sequence"], held["batch_id"]) == ("grades", 1, batch_id)
    assert "changed after it was signed" in held["reason"]
    shown = _sync("status", "--config", str(config))
    assert shown.returncode == QUARANTINED and "QUARANTINED: grades batch #1" in shown.stdout
    listed = _sync("quarantine", "show", "--config", str(config), "--json")
    assert listed.returncode == QUARANTINED
    assert [q["batch_id"] for q in json.loads(listed.stdout)["quarantine"]] == [batch_id]
    # the way out: drop the changed batch and score the enterprises again from the nodes
    rebuilt = _sync("quarantine", "rebuild", "--config", str(config), "--kind", "grades")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert f"dropped #1 {batch_id}" in rebuilt.stdout and "grade again" in rebuilt.stdout
    done = rig.run(config)
    assert done.returncode == 0, done.stdout + done.stderr
    code_, status = _status(config)
    assert code_ == 0 and status["quarantine"] == [] and status["backlog"]["batches"] == 0
    assert _sync("quarantine", "show", "--config", str(config)).returncode == 0
    rig.stop_receiver()
    _assert_real_grades_only(rig, "forged", code, forged)


def test_after_a_key_change_a_changed_batch_is_not_signed_with_the_new_key(rig: Rig) -> None:
    _built_while_the_receiver_was_down(rig, "forged-rotated")
    state_dir = rig.root / "forged-rotated"
    batch_id, code, forged, _ = _forge(state_dir)
    # the city changes keys; the province knows only the new one
    new_key, new_public, _ = signing.write_key_pair(
        rig.root / "forged-rotated-key", "new", what="sender key"
    )
    senders = rig.root / "forged-rotated-senders.toml"
    senders.write_text(
        f'[[sender]]\nid = "{SENDER}"\npublic_keys = ["{new_public}"]\ncertificates = ["sync-1"]\n'
    )
    port = rig.start_receiver(state="forged-rotated", senders=senders)
    config = rig.config(
        "forged-rotated", port=port, lists=False, statistics=False, signing_key=new_key
    )
    before = _signatures(state_dir)
    again = rig.run(config)
    assert again.returncode == QUARANTINED, again.stdout + again.stderr
    assert _signatures(state_dir) == before  # not signed anew with the new key
    code_, status = _status(config)
    assert code_ == QUARANTINED and status["quarantine"][0]["batch_id"] == batch_id
    assert len(status["signing_keys"]) == 2  # the old key kept, to verify what it signed
    rebuilt = _sync("quarantine", "rebuild", "--config", str(config), "--kind", "grades")
    assert rebuilt.returncode == 0, rebuilt.stderr
    done = rig.run(config)
    assert done.returncode == 0, done.stdout + done.stderr
    rig.stop_receiver()
    _assert_real_grades_only(rig, "forged-rotated", code, forged)


def test_a_changed_batch_the_province_already_holds_is_acknowledged_by_drop(rig: Rig) -> None:
    _built_while_the_receiver_was_down(rig, "forged-held")
    state_dir = rig.root / "forged-held"
    with SyncState(state_dir, sender=SENDER, key_id=None) as state:
        (waiting,) = state.outbox(BatchKind.GRADES)
    port = rig.start_receiver(state="forged-held")
    # delivered as signed, but the answer never came back; then the state was changed
    tls = TlsFiles.from_cert_paths(cert_paths(rig.certs, role=PeerRole.REQUESTER, name="sync-1"))
    with ProvinceClient(f"127.0.0.1:{port}", tls=tls) as province:
        assert not province.deliver(waiting.signed).duplicate
    _, code, forged, _ = _forge(state_dir)
    config = rig.config("forged-held", port=port, lists=False, statistics=False)
    assert rig.run(config).returncode == QUARANTINED
    dropped = _sync("quarantine", "drop", "--config", str(config), "--kind", "grades")
    assert dropped.returncode == 0, dropped.stderr
    assert "held by the province" in dropped.stdout and "dropped" not in dropped.stdout
    # nothing quarantined now, nothing left to drop
    assert _sync("quarantine", "drop", "--config", str(config), "--kind", "grades").returncode == 4
    code_, status = _status(config)
    assert code_ == 0 and status["streams"]["grades"]["batch_id"] == waiting.batch_id
    assert rig.run(config).returncode == 0
    rig.stop_receiver()
    _assert_real_grades_only(rig, "forged-held", code, forged)

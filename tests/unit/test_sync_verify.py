"""The sync job's check of its stored batches: what was changed after signing is quarantined,
never signed anew; the keyring of the job's own keys; the state's quarantine records."""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from osmanthus.core.syncbatch import BatchKind, read_batch, sender_key_id
from syncjob.state import StagedGrade
from syncjob.verify import (
    LEGACY_SIGNING_CONTEXT,
    QUARANTINE_EXIT_CODE,
    Quarantined,
    check_and_read,
    check_stored,
    keyring,
    read_stored,
    remember_key,
    verify_stored,
)
from tests.unit.test_syncjob import KEY, NOW, _batch, _code, _state

SENDER = "suzhou"
RING = {sender_key_id(KEY.public_key()): KEY.public_key()}


def _one_digit_changed(payload: bytes) -> bytes:
    """The payload with the first record's score one digit off: still a batch in canonical
    form, so that only the signature tells it from the one signed."""
    document = json.loads(payload)
    score = document["records"][0]["score"]
    at = payload.index(b'"score":%d' % score)
    forged = payload[:at] + b'"score":%d' % (score + 1 if score % 10 != 9 else score - 1)
    forged += payload[at + len(b'"score":%d' % score) :]
    read_batch(forged)  # a well-formed batch: the receiver would store it if signed anew
    return forged


def test_a_batch_as_signed_verifies_and_one_digit_changed_does_not(tmp_path: Path) -> None:
    with _state(tmp_path) as state:
        batch = _batch(state, BatchKind.GRADES, "r1.1", records=3)
    verify_stored(batch, keyring=RING, sender=SENDER)
    made = read_stored(batch, keyring=RING, sender=SENDER)
    assert made.batch_id == batch.batch_id and len(made.records) == 3
    forged = dataclasses.replace(
        batch,
        signed=dataclasses.replace(batch.signed, payload=_one_digit_changed(batch.signed.payload)),
    )
    with pytest.raises(Quarantined) as info:
        verify_stored(forged, keyring=RING, sender=SENDER)
    assert info.value.field == "signature" and "changed after it was signed" in info.value.message
    assert info.value.exit_code == QUARANTINE_EXIT_CODE == 7


def test_a_batch_signed_by_a_key_the_job_never_held_is_refused_naming_the_job_keys(
    tmp_path: Path,
) -> None:
    with _state(tmp_path) as state:
        batch = _batch(state, BatchKind.GRADES, "r1.1")
    # an attacker re-signs the changed payload with a key of their own
    with pytest.raises(Quarantined) as info:
        verify_stored(batch, keyring={}, sender=SENDER)
    assert info.value.field == "key_id" and "never signed with" in info.value.message
    mangled = dataclasses.replace(batch, signed=dataclasses.replace(batch.signed, key_id="x"))
    with pytest.raises(Quarantined) as shape:
        verify_stored(mangled, keyring=RING, sender=SENDER)
    assert shape.value.field == "key_id"


def test_an_outbox_row_that_disagrees_with_its_signed_payload_is_refused(tmp_path: Path) -> None:
    with _state(tmp_path) as state:
        batch = _batch(state, BatchKind.GRADES, "r1.1", records=2)
    for change in ({"sequence": 5}, {"records": 1}, {"watermark_to": "r1.9"}, {"partial": True}):
        with pytest.raises(Quarantined) as info:
            verify_stored(dataclasses.replace(batch, **change), keyring=RING, sender=SENDER)  # type: ignore[arg-type]
        assert info.value.field == "outbox" and next(iter(change)) in info.value.message
    with pytest.raises(Quarantined) as other:
        verify_stored(batch, keyring=RING, sender="wuxi")
    assert other.value.field == "sender"


def test_a_batch_of_the_earlier_signature_format_is_verified_too(tmp_path: Path) -> None:
    with _state(tmp_path) as state:
        batch = _batch(state, BatchKind.GRADES, "r1.1")
    payload = batch.signed.payload
    legacy = dataclasses.replace(
        batch,
        signed=dataclasses.replace(
            batch.signed, signature=KEY.sign(LEGACY_SIGNING_CONTEXT + payload)
        ),
    )
    assert read_stored(legacy, keyring=RING, sender=SENDER).payload == payload
    forged = dataclasses.replace(
        legacy, signed=dataclasses.replace(legacy.signed, payload=_one_digit_changed(payload))
    )
    with pytest.raises(Quarantined) as info:
        verify_stored(forged, keyring=RING, sender=SENDER)
    assert info.value.field == "signature" and "earlier format" in info.value.message


def test_a_failed_check_quarantines_the_batch_once_and_logs_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with _state(tmp_path) as state:
        run = state.begin_run(NOW)
        batch = _batch(state, BatchKind.GRADES, "r1.1")
        state.commit_grades(run, batches=[batch], sent=[])
        forged = dataclasses.replace(
            batch,
            signed=dataclasses.replace(
                batch.signed, payload=_one_digit_changed(batch.signed.payload)
            ),
        )
        with caplog.at_level(logging.ERROR, logger="syncjob.verify"):
            for _ in range(2):
                with pytest.raises(Quarantined) as info:
                    check_stored(state, forged, keyring=RING, sender=SENDER, at=NOW)
        assert (
            "quarantine show" in info.value.message
            and "nothing was signed anew" in info.value.message
        )
        assert "QUARANTINED grades batch #1" in caplog.text
        (held,) = state.quarantined()
        assert (held.batch_id, held.kind, held.sequence) == (batch.batch_id, BatchKind.GRADES, 1)
        assert held.reason.startswith("signature:") and held.resolved_at is None
        assert state.quarantined(BatchKind.LIST_CHANGES) == []
        # the batch as it was signed passes, and is read in full to be signed anew
        check_stored(state, batch, keyring=RING, sender=SENDER, at=NOW)
        made = check_and_read(state, batch, keyring=RING, sender=SENDER, at=NOW)
        assert made.batch_id == batch.batch_id
        assert len(state.quarantined()) == 1


def test_the_job_keeps_every_key_it_signed_with_and_only_real_ones(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with _state(tmp_path) as state:
        first = remember_key(state, KEY.public_key(), at=NOW)
        assert list(first) == [sender_key_id(KEY.public_key())]
        new = Ed25519PrivateKey.generate()
        with caplog.at_level(logging.WARNING, logger="syncjob.verify"):
            ring = remember_key(state, new.public_key(), at=NOW + datetime.timedelta(days=1))
        assert set(ring) == {sender_key_id(KEY.public_key()), sender_key_id(new.public_key())}
        assert "new key" in caplog.text
        # a row whose id is not its key's thumbprint is no key of ours
        stranger = (
            Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        )
        with state.transaction() as db:
            db.execute(
                "INSERT INTO signing_keys VALUES (?, ?, ?, ?)",
                ["A" * 43, stranger, "2026-01-01T00:00:00+00:00", "2026-01-01T00:00:00+00:00"],
            )
        assert set(keyring(state)) == set(ring)


def test_a_state_made_before_the_quarantine_opens_with_its_tables_added(tmp_path: Path) -> None:
    with _state(tmp_path):
        pass
    with sqlite3.connect(tmp_path / "state" / "sync.sqlite") as db:
        db.execute("DROP TABLE quarantine")
        db.execute("DROP TABLE signing_keys")
    with _state(tmp_path) as state:
        assert state.quarantined() == [] and state.signing_keys() == []


@pytest.mark.parametrize("kind", list(BatchKind))
def test_settling_a_quarantine_releases_it_and_a_rebuild_reads_the_source_again(
    tmp_path: Path, kind: BatchKind
) -> None:
    with _state(tmp_path) as state:
        run = state.begin_run(NOW)
        state.commit_list_changes(
            run, batches=[], cursors={"court": ("f1", "7")}, opened=[], closed=[], complete=True
        )
        state.stage_grades(
            run, [StagedGrade(0, _code(0), "A", 150, 17, "2026-11-26", None)], roster="v1"
        )
        state.commit_grades(run, batches=[], sent=list(state.changed_grades(run)))
        state.stage_statistic(run, "all", [], complete=True)
        state.commit_statistics(run, batches=[], completed=["all"])
        # a grades batch, or one of no records (the helper makes grade records)
        batch = _batch(state, kind, "r1.1", records=int(kind is BatchKind.GRADES))
        state.commit_grades(run, batches=[batch], sent=[])
        state.quarantine(batch, payload_sha256="0" * 64, reason="signature: changed", at=NOW)
        state.settle_quarantine(
            kind,
            batches=[],
            stream=None,
            resolutions={batch.batch_id: "rebuilt"},
            regather=True,
            at=NOW,
        )
        assert state.outbox() == [] and state.quarantined() == []
        (done,) = state.quarantined(resolved=True)
        assert done.resolution == "rebuilt" and done.resolved_at == NOW
        assert (state.list_cursor("court") == ("", "")) is (kind is BatchKind.LIST_CHANGES)
        assert (state.last_done("lists") is None) is (kind is BatchKind.LIST_CHANGES)
        regraded = state.begin_run(NOW)
        state.stage_grades(
            regraded, [StagedGrade(0, _code(0), "A", 150, 17, "2026-11-26", None)], roster="v1"
        )
        assert bool(list(state.changed_grades(regraded))) is (kind is BatchKind.GRADES)
        assert (state.last_done("statistic:all") is None) is (kind is BatchKind.STATISTICS)

"""The receiver's files: the DuckDB batch store (once only, continuity, paging, reopening) and
the sender registry (senders.toml)."""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import threading
from pathlib import Path
from typing import Any

import duckdb
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from certs import PeerRole
from osmanthus.core import signing
from osmanthus.core.errors import (
    ConfigError,
    FailedPrecondition,
    InvalidArgument,
    OsmanthusError,
    PermissionDenied,
)
from osmanthus.core.ids import make_resident_id, make_uscc, organisation_code_check_char
from osmanthus.core.syncbatch import (
    Batch,
    BatchKind,
    SignedBatch,
    build_batch,
    grade_record,
    open_batch,
    sender_key_id,
    sign_batch,
)
from osmanthus.core.tls import PeerIdentity
from osmanthus.core.wire.province import BatchQuery, Delivery, RejectionQuery
from province.senders import Sender, SenderRegistry, load_senders
from province.service import ProvinceService
from province.store import STORE_FILE, BatchStore
from tests.forge import forged_signature, loose_json

KEY = Ed25519PrivateKey.generate()
T0 = datetime.datetime(2026, 11, 26, 2, 0, tzinfo=datetime.UTC)
PEER = "requester/sync-1"


def credit_code(number: int) -> str:
    organisation = f"MB{number:06d}"
    return make_uscc(
        authority="9",
        category="1",
        region="320505",
        organisation=organisation + organisation_code_check_char(organisation),
    )


def grade_batch(
    sequence: int,
    *,
    sender: str = "suzhou",
    kind: BatchKind = BatchKind.GRADES,
    start: str | None = None,
    end: str | None = None,
    records: int = 3,
    score: int = 100,
    created_at: datetime.datetime = T0,
) -> tuple[Batch, SignedBatch]:
    """The batch of `sequence` in a stream whose watermarks are w0, w1, …"""
    made = build_batch(
        sender=sender,
        kind=kind,
        sequence=sequence,
        watermark_from=start or f"w{sequence - 1}",
        watermark_to=end or f"w{sequence}",
        records=[
            grade_record(
                credit_code=credit_code(sequence * 100 + i),
                grade="B",
                score=score,
                as_of=datetime.date(2026, 11, 26),
                departments_answered=17,
            )
            for i in range(records)
        ]
        if kind is BatchKind.GRADES
        else [],
        created_at=created_at,
    )
    return made, sign_batch(made, private_key=KEY)


@pytest.fixture
def store(tmp_path: Path) -> Any:
    opened = BatchStore(tmp_path / STORE_FILE)
    yield opened
    opened.close()


def accept(
    store: BatchStore, pair: tuple[Batch, SignedBatch], *, at: datetime.datetime = T0
) -> Delivery:
    return store.accept(pair[0], pair[1], peer=PEER, now=at)


# --- storing once -------------------------------------------------------------------------------


def test_a_batch_is_stored_with_its_records_in_order(store: BatchStore) -> None:
    made, signed = grade_batch(1, records=4)
    delivery = store.accept(made, signed, peer=PEER, now=T0 + datetime.timedelta(seconds=5))
    assert not delivery.duplicate and delivery.records == 4 and delivery.sequence == 1
    assert delivery.watermark_to == "w1"
    assert delivery.received_at == T0 + datetime.timedelta(seconds=5)
    assert store.records(made.batch_id) == made.record_json()
    page = store.batches(BatchQuery())
    (summary,) = page.batches
    assert summary.batch_id == made.batch_id and summary.kind is BatchKind.GRADES
    assert (summary.watermark_from, summary.watermark_to) == ("w0", "w1")
    assert summary.peer == PEER and summary.key_id == sender_key_id(KEY.public_key())
    assert summary.payload_sha256 == made.payload_sha256 and not summary.partial
    # what is stored still verifies: the province can prove what it received and from whom
    kept = store.signed_batch(made.batch_id)
    assert kept == signed
    assert open_batch(kept, public_key=KEY.public_key()) == made


def test_a_duplicate_is_acknowledged_with_the_first_receipt_and_stored_once(
    store: BatchStore,
) -> None:
    first = accept(store, grade_batch(1))
    # a rerun after a crash: same range and content, built later
    rebuilt = grade_batch(1, created_at=T0 + datetime.timedelta(hours=1))
    again = accept(store, rebuilt, at=T0 + datetime.timedelta(hours=2))
    assert again.duplicate and again.batch_id == first.batch_id
    assert again.received_at == first.received_at and again.records == 3
    assert len(store.batches(BatchQuery()).batches) == 1
    assert len(store.records(first.batch_id)) == 3
    # the batch kept is the first one delivered
    assert store.signed_batch(first.batch_id) == grade_batch(1)[1]


def test_the_same_id_with_other_content_is_a_conflict_and_changes_nothing(
    store: BatchStore,
) -> None:
    accept(store, grade_batch(1))
    with pytest.raises(FailedPrecondition) as info:
        accept(store, grade_batch(1, score=101))
    assert "conflict" in info.value.message and info.value.field == "batch_id"
    (kept,) = store.batches(BatchQuery()).batches
    assert store.signed_batch(kept.batch_id) == grade_batch(1)[1]


def test_a_stream_starts_at_sequence_1_and_continues_without_gaps(store: BatchStore) -> None:
    with pytest.raises(FailedPrecondition) as info:
        accept(store, grade_batch(2))
    assert info.value.message.startswith("gap:") and info.value.field == "sequence"
    accept(store, grade_batch(1))
    accept(store, grade_batch(2))
    with pytest.raises(FailedPrecondition) as info:
        accept(store, grade_batch(4))  # sequence 3 is missing
    assert info.value.message.startswith("gap:") and "sequence 3" in info.value.message
    with pytest.raises(FailedPrecondition) as info:
        accept(store, grade_batch(3, start="w9"))  # changes from w2 to w9 would be lost
    assert info.value.message.startswith("gap:") and info.value.field == "watermark_from"
    assert "w2" in info.value.message
    with pytest.raises(FailedPrecondition) as info:
        accept(store, grade_batch(2, start="w1", end="w2b"))  # sequence 2 again, another range
    assert info.value.message.startswith("overlap:") and "sequence 3" in info.value.message
    assert accept(store, grade_batch(3)).sequence == 3
    assert [b.sequence for b in store.batches(BatchQuery()).batches] == [3, 2, 1]


def test_senders_and_kinds_are_separate_streams(store: BatchStore) -> None:
    accept(store, grade_batch(1))
    accept(store, grade_batch(1, sender="wuxi"))
    accept(store, grade_batch(1, kind=BatchKind.STATISTICS))
    accept(store, grade_batch(2, kind=BatchKind.STATISTICS))
    assert len(store.batches(BatchQuery(sender="suzhou")).batches) == 3
    statistics = store.batches(BatchQuery(kind=BatchKind.STATISTICS)).batches
    assert [b.sequence for b in statistics] == [2, 1]
    visible = store.batches(BatchQuery(), senders=frozenset({"wuxi"})).batches
    assert [b.sender for b in visible] == ["wuxi"]


def test_concurrent_deliveries_of_one_batch_store_it_once(store: BatchStore) -> None:
    pair = grade_batch(1, records=50)
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def deliver() -> None:
        barrier.wait()
        results.append(accept(store, pair).duplicate)

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] + [True] * 7
    assert len(store.records(pair[0].batch_id)) == 50


# --- rejections, paging, reopening --------------------------------------------------------------


def test_rejections_are_kept_newest_first_and_by_certificate(store: BatchStore) -> None:
    for minute, peer in enumerate(("requester/agency-1", PEER, PEER)):
        store.reject(
            at=T0 + datetime.timedelta(minutes=minute),
            peer=peer,
            sender="suzhou",
            batch_id="",
            code="UNAUTHENTICATED",
            reason=f"reason {minute} " + "x" * 2_000,
        )
    page = store.rejections(RejectionQuery())
    assert [r.reason[:8] for r in page.rejections] == ["reason 2", "reason 1", "reason 0"]
    assert all(len(r.reason) == 1_000 for r in page.rejections)
    assert page.rejections[0].at == T0 + datetime.timedelta(minutes=2)
    own = store.rejections(RejectionQuery(), peer="requester/agency-1").rejections
    assert [r.peer for r in own] == ["requester/agency-1"]


def test_listings_page_through_every_row_once(store: BatchStore) -> None:
    for sequence in range(1, 6):
        accept(store, grade_batch(sequence, records=1))
    seen: list[int] = []
    token = ""
    while True:
        page = store.batches(BatchQuery(page_size=2, page_token=token))
        seen += [b.sequence for b in page.batches]
        token = page.next_page_token
        if not token:
            break
    assert seen == [5, 4, 3, 2, 1]
    for bad in ("garbage!", "MTp4", "x" * 100):
        with pytest.raises(InvalidArgument) as info:
            store.batches(BatchQuery(page_token=bad))
        assert info.value.field == "page_token"
    with pytest.raises(InvalidArgument):
        store.batches(BatchQuery(page_size=101))


def test_a_reopened_store_keeps_batches_rejections_and_the_stream_position(
    tmp_path: Path,
) -> None:
    path = tmp_path / STORE_FILE
    first = BatchStore(path)
    accept(first, grade_batch(1))
    first.reject(at=T0, peer=PEER, sender="", batch_id="", code="X", reason="r")
    first.close()
    assert path.stat().st_mode & 0o077 == 0
    reopened = BatchStore(path)
    try:
        assert len(reopened.batches(BatchQuery()).batches) == 1
        assert len(reopened.rejections(RejectionQuery()).rejections) == 1
        assert accept(reopened, grade_batch(1)).duplicate
        with pytest.raises(FailedPrecondition):
            accept(reopened, grade_batch(3))
        assert not accept(reopened, grade_batch(2)).duplicate
    finally:
        reopened.close()


def test_a_foreign_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.duckdb"
    with duckdb.connect(str(path)) as conn:
        conn.execute("CREATE TABLE t (x INTEGER)")
    with pytest.raises(ConfigError) as info:
        BatchStore(path)
    assert "foreign" in info.value.message


# --- senders.toml -------------------------------------------------------------------------------


def write_senders(directory: Path, text: str) -> Path:
    path = directory / "senders.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_registry_maps_keys_to_senders_and_certificates_to_what_they_deliver(
    tmp_path: Path,
) -> None:
    private, _, _ = signing.write_key_pair(tmp_path / "keys", "suzhou", what="sender key")
    _, rotated, _ = signing.write_key_pair(tmp_path / "keys", "suzhou-next", what="sender key")
    _, wuxi, _ = signing.write_key_pair(tmp_path / "keys", "wuxi", what="sender key")
    path = write_senders(
        tmp_path,
        '[[sender]]\nid = "suzhou"\npublic_keys = ["keys/suzhou.pub", "keys/suzhou-next.pub"]\n'
        'certificates = ["sync-1"]\n\n'
        f'[[sender]]\nid = "wuxi"\npublic_keys = ["{wuxi}"]\ncertificates = ["sync-2", "sync-1"]\n',
    )
    registry = load_senders(path)
    key_id = sender_key_id(signing.load_private_key(private).public_key())
    found = registry.key(key_id)
    assert found is not None and found[0].id == "suzhou" and len(found[0].keys) == 2
    assert registry.key("A" * 43) is None
    assert rotated.exists()
    sync1 = PeerIdentity(role=PeerRole.REQUESTER, name="sync-1")
    assert registry.senders_for(sync1) == {"suzhou", "wuxi"}
    assert registry.senders_for(PeerIdentity(role=PeerRole.REQUESTER, name="sync-2")) == {"wuxi"}
    # deny by default: another role with a registered name delivers for nobody
    assert registry.senders_for(PeerIdentity(role=PeerRole.OPERATOR, name="sync-1")) == set()
    assert registry.senders_for(PeerIdentity(role=PeerRole.REQUESTER, name="bank-1")) == set()


@pytest.mark.parametrize(
    ("text", "problem", "field"),
    [
        ("", "sender: is required (one [[sender]] table per city)", "sender"),
        ('[[node]]\nid = "x"\n', "node: unknown setting (known: sender)", "node"),
        (
            '[[sender]]\nid = "suzhou"\npublic_keys = ["k.pub"]\n',
            "sender[0].certificates: is required",
            "sender[0].certificates",
        ),
        (
            '[[sender]]\nid = "Su Zhou"\npublic_keys = ["k.pub"]\ncertificates = ["sync-1"]\n',
            "not a sender id",
            "sender[0].id",
        ),
        (
            '[[sender]]\nid = "suzhou"\npublic_keys = []\ncertificates = ["sync-1"]\n',
            "must not be empty",
            "sender[0].public_keys",
        ),
        (
            '[[sender]]\nid = "suzhou"\npublic_keys = ["missing.pub"]\ncertificates = ["s"]\n',
            "cannot read the public key",
            "sender[0].public_keys[0]",
        ),
        (
            '[[sender]]\nid = "suzhou"\npublic_keys = ["k.pub"]\ncertificates = ["Sync 1"]\n',
            "not a certificate name",
            "sender[0].certificates[0]",
        ),
        (
            '[[sender]]\nid = "suzhou"\npublic_keys = ["k.pub"]\ncertificates = ["s"]\n'
            '[[sender]]\nid = "suzhou"\npublic_keys = ["k2.pub"]\ncertificates = ["s"]\n',
            "registered twice",
            "sender[1].id",
        ),
        (
            '[[sender]]\nid = "suzhou"\npublic_keys = ["k.pub"]\ncertificates = ["s"]\n'
            '[[sender]]\nid = "wuxi"\npublic_keys = ["k.pub"]\ncertificates = ["t"]\n',
            "keys of its own",
            "sender[1].public_keys[0]",
        ),
        (
            '[[sender]]\nid = "suzhou"\npublic_keys = ["k.pub", "k.pub"]\ncertificates = ["s"]\n',
            "the same key as public_keys[0]",
            "sender[0].public_keys[1]",
        ),
        (
            '[[sender]]\nid = "suzhou"\npublic_keys = ["k.key"]\ncertificates = ["s"]\n',
            "not a PEM public key",
            "sender[0].public_keys[0]",
        ),
        ("[[sender]\n", "not valid TOML", "senders"),
    ],
)
def test_a_bad_registry_is_refused_naming_the_problem(
    tmp_path: Path, text: str, problem: str, field: str
) -> None:
    signing.write_key_pair(tmp_path, "k", what="sender key")
    signing.write_key_pair(tmp_path, "k2", what="sender key")
    path = write_senders(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_senders(path)
    assert problem in info.value.message and str(path) in info.value.message
    # a problem in the file is named by its path there; the unreadable file by its option
    assert info.value.field == field


def test_a_missing_registry_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_senders(tmp_path / "nowhere.toml")
    assert "does not exist" in info.value.message


# --- the service: what a refusal may repeat, and what a stranger costs ---------------------------

#: all digits, so that it reads as a resident id as an integer and as a JSON key too
RESIDENT_DIGITS = make_resident_id(region="320505", birth=datetime.date(1980, 4, 1), sequence=1)
SYNC = PeerIdentity(role=PeerRole.REQUESTER, name="sync-1")


def service(store: BatchStore) -> ProvinceService:
    suzhou = Sender(
        id="suzhou",
        keys={sender_key_id(KEY.public_key()): KEY.public_key()},
        certificates=frozenset({"sync-1"}),
    )
    return ProvinceService(
        registry=SenderRegistry(senders=[suzhou]),
        store=store,
        operators=frozenset({"operator"}),
        clock=lambda: T0,
    )


def signed_payload(payload: bytes) -> SignedBatch:
    return SignedBatch(
        payload=payload,
        signature=forged_signature(payload, KEY),
        key_id=sender_key_id(KEY.public_key()),
    )


def _with_score(payload: bytes) -> bytes:
    document = json.loads(payload)
    document["records"][0]["score"] = int(RESIDENT_DIGITS)
    return loose_json(document)


@pytest.mark.parametrize(
    ("delivery", "field"),
    [
        (lambda s: signed_payload(_with_score(s.payload)), "records[0].score"),
        (
            lambda s: signed_payload(s.payload.replace(b'"score":100', b'"score":1.5', 1)
                .replace(b"1.5", f"{RESIDENT_DIGITS}.5".encode(), 1)),
            "payload",
        ),
        (
            lambda s: signed_payload(
                b'{"%s":1,"%s":2,' % ((RESIDENT_DIGITS.encode(),) * 2) + s.payload[1:]
            ),
            "payload",
        ),
        (lambda s: dataclasses.replace(s, key_id="A" * 25 + RESIDENT_DIGITS), "key_id"),
        (lambda s: dataclasses.replace(s, key_id=RESIDENT_DIGITS), "key_id"),
        (
            lambda s: signed_payload(
                s.payload.replace(b'"grade":"B"', b'"grade":"Zh\\ud800ang"', 1)
            ),
            "records[0].grade",
        ),
    ],
)  # fmt: skip
def test_a_refusal_repeats_no_resident_id_in_its_error_record_or_log(
    store: BatchStore, caplog: pytest.LogCaptureFixture, delivery: Any, field: str
) -> None:
    assert RESIDENT_DIGITS.isdigit()
    _, signed = grade_batch(1)
    with caplog.at_level(logging.DEBUG), pytest.raises(OsmanthusError) as info:
        service(store).deliver(delivery(signed), caller=SYNC)
    assert info.value.field == field
    (rejection,) = store.rejections(RejectionQuery()).rejections
    assert rejection.peer == "requester/sync-1" and field in rejection.reason
    for text in (str(info.value), rejection.reason, caplog.text):
        assert RESIDENT_DIGITS not in text and RESIDENT_DIGITS[:17] not in text


def test_a_stranger_certificate_is_refused_unread_and_counted_in_one_row(
    store: BatchStore,
) -> None:
    receiver = service(store)
    stranger = PeerIdentity(role=PeerRole.REQUESTER, name="agency-1")
    _, signed = grade_batch(1)
    for payload in (signed.payload, b"\xff" * 100, b"[" * 10_000):
        for _ in range(20):
            with pytest.raises(PermissionDenied):
                receiver.deliver(dataclasses.replace(signed, payload=payload), caller=stranger)
    with pytest.raises(FailedPrecondition):
        receiver.deliver(grade_batch(2)[1], caller=SYNC)
    rows = store.rejections(RejectionQuery()).rejections
    assert [(r.peer, r.sender, r.batch_id) for r in rows] == [
        ("requester/sync-1", "suzhou", grade_batch(2)[0].batch_id),
        ("requester/agency-1", "", ""),
    ]
    assert "refused 60 times since 2026-11-26T02:00:00Z" in rows[1].reason


def test_numbering_and_tallies_continue_after_reopening(tmp_path: Path) -> None:
    path = tmp_path / STORE_FILE
    first = BatchStore(path)
    first.reject(at=T0, peer=PEER, sender="", batch_id="", code="X", reason="one")
    first.count_rejection(at=T0, peer="requester/agency-1", code="PERMISSION_DENIED", reason="r")
    first.close()
    again = BatchStore(path)
    try:
        assert (
            again.count_rejection(
                at=T0, peer="requester/agency-1", code="PERMISSION_DENIED", reason="r"
            )
            == 2
        )
        again.reject(at=T0, peer=PEER, sender="", batch_id="", code="X", reason="two")
        rows = again.rejections(RejectionQuery()).rejections
        assert [r.reason[:3] for r in rows] == ["two", "r [", "one"]
    finally:
        again.close()

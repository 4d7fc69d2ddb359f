"""The reference provincial receiver over mutual TLS: exactly once, signed, and every refusal kept.

Real components throughout: the receiver on 127.0.0.1 with a certificate from the session's
platform CA, real Ed25519 sender keys, a real DuckDB store, and the sync job's side played by
ProvinceClient with requester certificates.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from grpc_health.v1 import health_pb2, health_pb2_grpc

from certs import DEFAULT_OPERATOR_NAME, PeerRole, cert_paths, issue_certificate
from osmanthus.cli import main
from osmanthus.core import signing
from osmanthus.core.catalogue import ListColour
from osmanthus.core.errors import (
    ConfigError,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from osmanthus.core.ids import (
    make_resident_id,
    make_uscc,
    mask_subject,
    organisation_code_check_char,
)
from osmanthus.core.lists import EntryId, PublicEntry
from osmanthus.core.peers import PROVINCE_SERVER_NAME
from osmanthus.core.server import RunningServer
from osmanthus.core.syncbatch import (
    BatchKind,
    ListChange,
    SignedBatch,
    batch_id_for,
    build_batch,
    canonical_json,
    grade_record,
    list_change_record,
    sender_key_id,
    sign_batch,
)
from osmanthus.core.tls import TlsFiles, secure_channel
from osmanthus.core.types import DepartmentId, SubjectKind
from osmanthus.demo.launcher import osmanthus_command, spawn
from province.server import PROVINCE_SERVICE_NAME, ProvinceConfig, start_province
from province.store import STORE_FILE
from sdk.province import ProvinceClient

T0 = datetime.datetime(2026, 11, 26, 2, 0, tzinfo=datetime.UTC)
RESIDENT = make_resident_id(region="320505", birth=datetime.date(1980, 4, 1), sequence=17)


@dataclasses.dataclass(frozen=True)
class Senders:
    """senders.toml: suzhou delivers with sync-1, wuxi with bank-1; each signs with its key."""

    path: Path
    suzhou: Ed25519PrivateKey
    wuxi: Ed25519PrivateKey


@pytest.fixture(scope="module")
def receiver_tls(tmp_path_factory: pytest.TempPathFactory, platform_certs: Path) -> TlsFiles:
    out = tmp_path_factory.mktemp("province-cert")
    return TlsFiles.from_cert_paths(
        issue_certificate(platform_certs, role=PeerRole.NODE, name="province", out_dir=out)
    )


@pytest.fixture(scope="module")
def senders(tmp_path_factory: pytest.TempPathFactory) -> Senders:
    directory = tmp_path_factory.mktemp("senders")
    suzhou, _, _ = signing.write_key_pair(directory / "keys", "suzhou-sync", what="sender key")
    wuxi, _, _ = signing.write_key_pair(directory / "keys", "wuxi-sync", what="sender key")
    path = directory / "senders.toml"
    path.write_text(
        '[[sender]]\nid = "suzhou"\npublic_keys = ["keys/suzhou-sync.pub"]\n'
        'certificates = ["sync-1"]\n\n'
        '[[sender]]\nid = "wuxi"\npublic_keys = ["keys/wuxi-sync.pub"]\n'
        'certificates = ["bank-1"]\n',
        encoding="utf-8",
    )
    return Senders(path, signing.load_private_key(suzhou), signing.load_private_key(wuxi))


@dataclasses.dataclass
class Receiver:
    config: ProvinceConfig
    server: RunningServer
    certs: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def client(self, name: str, role: PeerRole = PeerRole.REQUESTER) -> ProvinceClient:
        tls = TlsFiles.from_cert_paths(cert_paths(self.certs, role=role, name=name))
        return ProvinceClient(self.target, tls=tls, timeout_s=10)

    def operator(self) -> ProvinceClient:
        return self.client(DEFAULT_OPERATOR_NAME, PeerRole.OPERATOR)

    def restart(self) -> None:
        self.server.stop(grace=0.5)
        self.server = start_province(self.config)


@pytest.fixture
def receiver(
    tmp_path: Path, receiver_tls: TlsFiles, senders: Senders, platform_certs: Path
) -> Iterator[Receiver]:
    config = ProvinceConfig(senders=senders.path, state_dir=tmp_path / "state", tls=receiver_tls)
    running = Receiver(config, start_province(config), platform_certs)
    yield running
    running.server.stop(grace=0.5)


def credit_code(number: int) -> str:
    organisation = f"MC{number:06d}"
    return make_uscc(
        authority="9",
        category="1",
        region="320505",
        organisation=organisation + organisation_code_check_char(organisation),
    )


def grades_batch(
    sequence: int,
    *,
    key: Ed25519PrivateKey,
    sender: str = "suzhou",
    start: str | None = None,
    end: str | None = None,
    score: int = 95,
    created_at: datetime.datetime = T0,
    records: int = 3,
) -> SignedBatch:
    """Sequence `sequence` of `sender`'s grades, for watermarks w<sequence-1> to w<sequence>."""
    made = build_batch(
        sender=sender,
        kind=BatchKind.GRADES,
        sequence=sequence,
        watermark_from=start or f"w{sequence - 1}",
        watermark_to=end or f"w{sequence}",
        records=[
            grade_record(
                credit_code=credit_code(sequence * 100 + i),
                grade="B",
                score=score,
                as_of=datetime.date(2026, 11, 26),
                departments_answered=16,
                missing_departments=["customs"],
            )
            for i in range(records)
        ],
        created_at=created_at,
    )
    return sign_batch(made, private_key=key)


def list_changes_batch(key: Ed25519PrivateKey) -> SignedBatch:
    entry = PublicEntry(
        entry_id=EntryId("2026-su05-zhi-0123"),
        department=DepartmentId("court"),
        list="judgement_defaulters",
        colour=ListColour.BLACK,
        subject_kind=SubjectKind.PERSON,
        subject_id=mask_subject(RESIDENT),
        subject_name="张三",
        legal_basis="最高人民法院关于公布失信被执行人名单信息的若干规定",
        reason="拒不履行生效判决确定的给付义务",
        window_start=datetime.date(2026, 1, 1),
        window_end=datetime.date(2028, 12, 31),
    )
    made = build_batch(
        sender="suzhou",
        kind=BatchKind.LIST_CHANGES,
        sequence=1,
        watermark_from="change-0",
        watermark_to="change-1",
        records=[list_change_record(entry, event=ListChange.PUBLISHED, at=T0)],
        created_at=T0,
    )
    return sign_batch(made, private_key=key)


def resigned(signed: SignedBatch, key: Ed25519PrivateKey, change: object) -> SignedBatch:
    """`signed` with its payload edited by `change` and signed again by `key` (a forgery the
    builder would have refused, or a batch signed by the wrong sender's key)."""
    document = json.loads(signed.payload)
    change(document)  # type: ignore[operator]
    payload = canonical_json(document)
    return SignedBatch(
        payload=payload,
        signature=signing.sign(
            payload, payload_type=signing.SYNC_BATCH_TYPE, private_key=key
        ).encode(),
        key_id=sender_key_id(key.public_key()),
    )


def stored_rows(state_dir: Path) -> tuple[int, int]:
    """(batches, records) in the store file; the receiver must be stopped."""
    with duckdb.connect(str(state_dir / STORE_FILE), read_only=True) as conn:
        batches = conn.execute("SELECT count(*) FROM batches").fetchone()
        records = conn.execute("SELECT count(*) FROM records").fetchone()
    assert batches is not None and records is not None
    return int(batches[0]), int(records[0])


# --- delivery -----------------------------------------------------------------------------------


def test_a_delivered_batch_is_stored_and_the_operator_lists_it(
    receiver: Receiver, senders: Senders
) -> None:
    with receiver.client("sync-1") as sync:
        delivery = sync.deliver(grades_batch(1, key=senders.suzhou))
        listed = sync.deliver(list_changes_batch(senders.suzhou))
    assert not delivery.duplicate and delivery.records == 3 and delivery.sequence == 1
    assert delivery.watermark_to == "w1" and not listed.duplicate
    with receiver.operator() as operator:
        page = operator.batches()
        grades = operator.batches(kind=BatchKind.GRADES).batches
    assert [b.kind for b in page.batches] == [BatchKind.LIST_CHANGES, BatchKind.GRADES]
    (summary,) = grades
    assert summary.batch_id == delivery.batch_id and summary.sender == "suzhou"
    assert summary.peer == "requester/sync-1"
    assert summary.key_id == sender_key_id(senders.suzhou.public_key())
    assert summary.partial and summary.missing_departments == ("customs",)
    assert summary.received_at == delivery.received_at and summary.created_at == T0
    # the receiver answers the standard health check
    tls = TlsFiles.from_cert_paths(
        cert_paths(receiver.certs, role=PeerRole.OPERATOR, name=DEFAULT_OPERATOR_NAME)
    )
    with secure_channel(receiver.target, tls, server_name=PROVINCE_SERVER_NAME) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=PROVINCE_SERVICE_NAME), timeout=5
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_a_duplicate_delivery_is_acknowledged_and_not_stored_twice(
    receiver: Receiver, senders: Senders
) -> None:
    with receiver.client("sync-1") as sync:
        first = sync.deliver(grades_batch(1, key=senders.suzhou, records=5))
        # the same bytes again (an answer that was lost), then the same range rebuilt later
        again = sync.deliver(grades_batch(1, key=senders.suzhou, records=5))
        rebuilt = sync.deliver(
            grades_batch(
                1, key=senders.suzhou, records=5, created_at=T0 + datetime.timedelta(hours=6)
            )
        )
    assert not first.duplicate and again.duplicate and rebuilt.duplicate
    assert first.batch_id == again.batch_id == rebuilt.batch_id
    assert again.received_at == first.received_at and rebuilt.records == 5
    with receiver.operator() as operator:
        assert len(operator.batches().batches) == 1
        assert operator.rejections().rejections == ()
    receiver.server.stop(grace=0.5)
    assert stored_rows(receiver.config.state_dir) == (1, 5)
    receiver.server = start_province(receiver.config)


def test_the_same_id_with_another_payload_is_refused_as_a_conflict_and_reported(
    receiver: Receiver, senders: Senders
) -> None:
    with receiver.client("sync-1") as sync:
        first = sync.deliver(grades_batch(1, key=senders.suzhou))
        with pytest.raises(FailedPrecondition) as info:
            sync.deliver(grades_batch(1, key=senders.suzhou, score=96))
    assert "conflict" in info.value.message and info.value.field == "batch_id"
    with receiver.operator() as operator:
        (rejection,) = operator.rejections().rejections
        (kept,) = operator.batches().batches
    assert rejection.code == "FAILED_PRECONDITION" and "conflict" in rejection.reason
    assert rejection.batch_id == first.batch_id and rejection.sender == "suzhou"
    assert rejection.peer == "requester/sync-1"
    assert kept.payload_sha256 != "" and kept.received_at == first.received_at


def test_a_bad_signature_is_refused_and_reported(receiver: Receiver, senders: Senders) -> None:
    signed = grades_batch(1, key=senders.suzhou)
    tampered = dataclasses.replace(
        signed, payload=signed.payload.replace(b'"score":95', b'"score":99')
    )
    with receiver.client("sync-1") as sync, pytest.raises(Unauthenticated) as info:
        sync.deliver(tampered)
    assert info.value.field == "signature" and "does not verify" in info.value.message
    with receiver.operator() as operator:
        (rejection,) = operator.rejections().rejections
        assert operator.batches().batches == ()
    assert rejection.code == "UNAUTHENTICATED" and rejection.sender == "suzhou"
    assert rejection.batch_id.startswith("sb-") and "signature" in rejection.reason


def test_an_unknown_sender_is_refused_and_reported(receiver: Receiver, senders: Senders) -> None:
    signed = grades_batch(1, key=senders.suzhou)
    # a platform certificate that senders.toml does not register
    with receiver.client("agency-1") as agency, pytest.raises(PermissionDenied) as info:
        agency.deliver(signed)
    assert "unknown sender" in info.value.message and "requester/agency-1" in info.value.message
    # a key no sender registered, though the certificate is registered
    stranger = Ed25519PrivateKey.generate()
    with receiver.client("sync-1") as sync, pytest.raises(Unauthenticated) as unknown_key:
        sync.deliver(grades_batch(1, key=stranger))
    assert "unknown sender" in unknown_key.value.message
    assert unknown_key.value.field == "key_id"
    # a certificate registered for wuxi delivering a batch signed with suzhou's key
    with receiver.client("bank-1") as bank, pytest.raises(PermissionDenied) as info:
        bank.deliver(signed)
    assert "'suzhou'" in info.value.message
    # suzhou's key signing a batch that claims to come from wuxi
    wuxi_id = batch_id_for(
        sender="wuxi", kind=BatchKind.GRADES, watermark_from="w0", watermark_to="w1"
    )
    claimed = resigned(signed, senders.suzhou, lambda d: d.update(sender="wuxi", batch_id=wuxi_id))
    with receiver.client("sync-1") as sync, pytest.raises(PermissionDenied) as info:
        sync.deliver(claimed)
    assert info.value.field == "sender"
    with receiver.operator() as operator:
        rejections = operator.rejections().rejections
        assert operator.batches().batches == ()
    assert [(r.peer, r.code) for r in rejections] == [
        ("requester/sync-1", "PERMISSION_DENIED"),
        ("requester/bank-1", "PERMISSION_DENIED"),
        ("requester/sync-1", "UNAUTHENTICATED"),
        ("requester/agency-1", "PERMISSION_DENIED"),
    ]
    assert all("unknown sender" in r.reason for r in rejections[1:])
    # the sender is recorded once its key is found, and only then the batch id claimed; of an
    # unregistered certificate's delivery nothing is read
    assert [r.sender for r in rejections] == ["suzhou", "suzhou", "", ""]
    assert rejections[1].batch_id == signed_id(signed) and rejections[0].batch_id == wuxi_id
    assert rejections[2].batch_id == rejections[3].batch_id == ""


def signed_id(signed: SignedBatch) -> str:
    return str(json.loads(signed.payload)["batch_id"])


def test_a_flood_from_an_unregistered_certificate_takes_one_row(
    receiver: Receiver, senders: Senders
) -> None:
    with receiver.client("agency-1") as agency:
        for _ in range(30):
            with pytest.raises(PermissionDenied):
                agency.deliver(grades_batch(1, key=senders.suzhou))
    with receiver.client("sync-1") as sync, pytest.raises(FailedPrecondition):
        sync.deliver(grades_batch(2, key=senders.suzhou))
    with receiver.client("agency-1") as agency, pytest.raises(PermissionDenied):
        agency.deliver(SignedBatch(payload=b"{" * 1000, signature=b"x", key_id="k"))
    with receiver.operator() as operator:
        rejections = operator.rejections().rejections
    # the tally moves to the top with each refusal; a registered certificate's rows stay apart
    assert [(r.peer, r.code) for r in rejections] == [
        ("requester/agency-1", "PERMISSION_DENIED"),
        ("requester/sync-1", "FAILED_PRECONDITION"),
    ]
    assert "refused 31 times since" in rejections[0].reason
    assert (rejections[0].sender, rejections[0].batch_id) == ("", "")
    receiver.server.stop(grace=0.5)
    with duckdb.connect(str(receiver.config.state_dir / STORE_FILE), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM rejections").fetchone() == (2,)
    receiver.server = start_province(receiver.config)


def test_a_malformed_payload_with_a_bad_signature_is_refused_for_the_signature(
    receiver: Receiver, senders: Senders
) -> None:
    # the signature is checked before the payload is read: garbage under a bad signature is
    # an authentication failure, never a format error that would describe the payload
    signed = grades_batch(1, key=senders.suzhou)
    garbage = dataclasses.replace(signed, payload=b'{"sender": 320505198004010178')
    with receiver.client("sync-1") as sync, pytest.raises(Unauthenticated) as info:
        sync.deliver(garbage)
    assert info.value.field == "signature"


def test_two_batches_racing_for_the_next_sequence_store_one(
    receiver: Receiver, senders: Senders
) -> None:
    with receiver.client("sync-1") as sync:
        sync.deliver(grades_batch(1, key=senders.suzhou))
        rivals = [
            grades_batch(2, key=senders.suzhou),
            grades_batch(2, key=senders.suzhou, end="w2b"),
        ]
        with ThreadPoolExecutor(max_workers=2) as pool:
            outcomes = list(pool.map(lambda s: _outcome(sync, s), rivals))
    assert sorted(outcomes) == ["overlap", "stored"]
    with receiver.operator() as operator:
        assert [b.sequence for b in operator.batches().batches] == [2, 1]


def _outcome(client: ProvinceClient, signed: SignedBatch) -> str:
    try:
        client.deliver(signed)
    except FailedPrecondition as exc:
        return exc.message.split(":")[0]
    return "stored"


def test_a_payload_outside_the_format_is_refused_naming_the_field(
    receiver: Receiver, senders: Senders
) -> None:
    # signed by the right key, but carrying a full resident id the builder would have refused
    smuggled = resigned(
        list_changes_batch(senders.suzhou),
        senders.suzhou,
        lambda d: d["records"][0].update(subject_name=f"张三 {RESIDENT}"),
    )
    with receiver.client("sync-1") as sync, pytest.raises(InvalidArgument) as info:
        sync.deliver(smuggled)
    assert info.value.field == "records[0].subject_name"
    with receiver.operator() as operator:
        (rejection,) = operator.rejections().rejections
    assert rejection.code == "INVALID_ARGUMENT" and RESIDENT not in rejection.reason


def test_a_gap_is_refused_and_reported(receiver: Receiver, senders: Senders) -> None:
    with receiver.client("sync-1") as sync:
        sync.deliver(grades_batch(1, key=senders.suzhou))
        with pytest.raises(FailedPrecondition) as info:
            sync.deliver(grades_batch(3, key=senders.suzhou))
        assert info.value.message.startswith("gap:")
        with pytest.raises(FailedPrecondition) as info:
            sync.deliver(grades_batch(2, key=senders.suzhou, start="w1b"))
        assert info.value.message.startswith("gap:") and "w1" in info.value.message
        # the sync job reads where its stream stands, and continues from there
        last = sync.last_batch(sender="suzhou", kind=BatchKind.GRADES)
        assert last is not None and (last.sequence, last.watermark_to) == (1, "w1")
        assert not sync.deliver(grades_batch(2, key=senders.suzhou)).duplicate
    with receiver.operator() as operator:
        codes = [r.code for r in operator.rejections().rejections]
    assert codes == ["FAILED_PRECONDITION", "FAILED_PRECONDITION"]


def test_a_restarted_receiver_keeps_batches_rejections_and_positions(
    receiver: Receiver, senders: Senders
) -> None:
    with receiver.client("sync-1") as sync:
        first = sync.deliver(grades_batch(1, key=senders.suzhou))
        with pytest.raises(FailedPrecondition):
            sync.deliver(grades_batch(5, key=senders.suzhou))
    receiver.restart()
    with receiver.client("sync-1") as sync:
        again = sync.deliver(grades_batch(1, key=senders.suzhou))
        assert again.duplicate and again.received_at == first.received_at
        with pytest.raises(FailedPrecondition):
            sync.deliver(grades_batch(3, key=senders.suzhou))
        assert sync.deliver(grades_batch(2, key=senders.suzhou)).sequence == 2
    with receiver.operator() as operator:
        assert [b.sequence for b in operator.batches().batches] == [2, 1]
        assert len(operator.rejections().rejections) == 2


def test_concurrent_duplicate_deliveries_store_the_batch_once(
    receiver: Receiver, senders: Senders
) -> None:
    signed = grades_batch(1, key=senders.suzhou, records=40)
    with receiver.client("sync-1") as sync, ThreadPoolExecutor(max_workers=8) as pool:
        deliveries = list(pool.map(lambda _: sync.deliver(signed), range(8)))
    assert sorted(d.duplicate for d in deliveries) == [False] + [True] * 7
    assert len({d.received_at for d in deliveries}) == 1
    receiver.server.stop(grace=0.5)
    assert stored_rows(receiver.config.state_dir) == (1, 40)
    receiver.server = start_province(receiver.config)


def test_a_sender_lists_only_its_own_batches_and_rejections(
    receiver: Receiver, senders: Senders
) -> None:
    with receiver.client("sync-1") as sync, receiver.client("bank-1") as bank:
        sync.deliver(grades_batch(1, key=senders.suzhou))
        bank.deliver(grades_batch(1, key=senders.wuxi, sender="wuxi"))
        with pytest.raises(FailedPrecondition):
            bank.deliver(grades_batch(4, key=senders.wuxi, sender="wuxi"))
        assert [b.sender for b in sync.batches().batches] == ["suzhou"]
        assert sync.batches(sender="wuxi").batches == ()
        assert sync.rejections().rejections == ()
        assert [r.peer for r in bank.rejections().rejections] == ["requester/bank-1"]
    with receiver.operator() as operator:
        assert {b.sender for b in operator.batches().batches} == {"suzhou", "wuxi"}
    with receiver.client("agency-1") as agency, pytest.raises(PermissionDenied):
        agency.batches()
    with receiver.client("psb", PeerRole.NODE) as node, pytest.raises(PermissionDenied):
        node.rejections()


def test_the_receiver_refuses_a_certificate_that_is_not_its_own(
    tmp_path: Path, senders: Senders, platform_certs: Path
) -> None:
    tls = TlsFiles.from_cert_paths(cert_paths(platform_certs, role=PeerRole.NODE, name="psb"))
    config = ProvinceConfig(senders=senders.path, state_dir=tmp_path / "state", tls=tls)
    with pytest.raises(ConfigError) as info:
        start_province(config)
    assert "--role node --name province" in info.value.message
    assert not (tmp_path / "state").exists()


def test_a_client_refuses_a_server_that_is_not_the_receiver(
    receiver: Receiver, senders: Senders, platform_certs: Path
) -> None:
    tls = TlsFiles.from_cert_paths(
        cert_paths(platform_certs, role=PeerRole.REQUESTER, name="sync-1")
    )
    with (
        ProvinceClient(
            receiver.target, tls=tls, server_name="coordinator.osmanthus", timeout_s=3
        ) as wrong,
        pytest.raises(Unavailable),
    ):
        wrong.deliver(grades_batch(1, key=senders.suzhou))


# --- the command line ---------------------------------------------------------------------------


def test_province_keygen_serve_and_batches_from_the_command_line(
    tmp_path: Path,
    receiver_tls: TlsFiles,
    platform_certs: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    keys = tmp_path / "keys"
    assert main(["province", "keygen", "--out-dir", str(keys), "--name", "suzhou-sync"]) == 0
    assert "suzhou-sync.key" in capsys.readouterr().out
    assert (keys / "suzhou-sync.key").stat().st_mode & 0o077 == 0
    senders_toml = tmp_path / "senders.toml"
    senders_toml.write_text(
        '[[sender]]\nid = "suzhou"\npublic_keys = ["keys/suzhou-sync.pub"]\n'
        'certificates = ["sync-1"]\n',
        encoding="utf-8",
    )
    process = spawn(
        "province",
        osmanthus_command(
            "province", "serve", "--senders", str(senders_toml),
            "--state-dir", str(tmp_path / "state"), "--listen", "127.0.0.1:0",
            "--ca", str(receiver_tls.ca), "--cert", str(receiver_tls.cert),
            "--key", str(receiver_tls.key),
        ),
        run_dir=tmp_path / "run",
    )  # fmt: skip
    try:
        port = process.wait_ready()
        key = signing.load_private_key(keys / "suzhou-sync.key")
        tls = TlsFiles.from_cert_paths(
            cert_paths(platform_certs, role=PeerRole.REQUESTER, name="sync-1")
        )
        with ProvinceClient(f"127.0.0.1:{port}", tls=tls) as sync:
            delivered = sync.deliver(grades_batch(1, key=key))
            with pytest.raises(FailedPrecondition):
                sync.deliver(grades_batch(3, key=key))
        listing = [
            "province", "batches", "--target", f"127.0.0.1:{port}",
            "--certs-dir", str(platform_certs),
        ]  # fmt: skip
        assert main(listing) == 0
        out = capsys.readouterr().out
        assert delivered.batch_id in out and "suzhou grades #1" in out
        assert "partial: missing customs" in out
        assert "requester/sync-1  FAILED_PRECONDITION" in out and "gap:" in out
        # a sender's certificate lists too, its own only; another is refused (exit 4)
        assert main([*listing, "--requester", "sync-1", "--kind", "grades"]) == 0
        assert delivered.batch_id in capsys.readouterr().out
        assert main([*listing, "--requester", "agency-1"]) == 4
        assert "may not list batches" in capsys.readouterr().err
    finally:
        assert process.stop() == 0

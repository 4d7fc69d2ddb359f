"""A subject's file at a real department node over mutual TLS: built from its records, lists and
audit log, sealed to the portal's key, and refused to everyone the design does not name.

One taxation-bureau node of its own, with records seeded here in every state a record can be in
today (China Standard Time): counting, expired, disputed, not yet in force. The node is called
as the coordinator calls it, with the coordinator's certificate and the portal's token; every
part is checked as the portal checks it: signed with the tax node's certificate key, for this
call's nonce (osmanthus.core.subjectpart.open_part).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from certs import PeerRole, cert_paths
from node.officer import ListOfficer
from node.server import NodeConfig, start_node
from node.store import RecordStore
from osmanthus.core.audited import UNAUTHENTICATED
from osmanthus.core.clock import china_today
from osmanthus.core.encoding import SlotLayout
from osmanthus.core.errors import Unauthenticated
from osmanthus.core.grpc_errors import FIELD_METADATA_KEY
from osmanthus.core.ids import make_resident_id, make_uscc, organisation_code_check_char
from osmanthus.core.lists import EntryId, NewEntry, WithdrawReason
from osmanthus.core.receipts import CONSENT_PUBLIC_KEY_FILE
from osmanthus.core.rules import Record, RuleSet, load_default_rules
from osmanthus.core.server import RunningServer
from osmanthus.core.subjectfile import AUDIT_SHAPE, SubjectFile
from osmanthus.core.subjectpart import load_trusted_cas, open_part
from osmanthus.core.subjectseal import (
    SealContext,
    new_nonce,
    open_file,
    public_bytes,
    seal_fingerprint,
)
from osmanthus.core.tls import TlsFiles, node_server_name, secure_channel
from osmanthus.core.tokens import TokenIssuer
from osmanthus.core.types import DepartmentId, Role, Shape, SubjectId, SubjectKind
from osmanthus.core.wire.node import sealed_part_from_proto
from osmanthus.v1 import common_pb2, node_pb2, node_pb2_grpc
from sdk import RequesterKeys
from tests.conftest import IssuerKeyPaths
from tests.forge import unsafe_forge_token
from tests.integration.conftest import restricted_catalogue

DEPARTMENT = "tax"
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED
UNAUTHENTICATED_CODE = grpc.StatusCode.UNAUTHENTICATED
TIMEOUT_S = 30.0
TODAY = china_today()
PERSON = SubjectKind.PERSON
ENTERPRISE = SubjectKind.ENTERPRISE
#: the subject whose file is read, another person, and an enterprise
ALICE = make_resident_id(region="320505", birth=date(1981, 3, 4), sequence=151)
BOB = make_resident_id(region="320505", birth=date(1979, 7, 8), sequence=262)
_ORG = "T0000151"
FIRM = make_uscc(
    authority="9",
    category="1",
    region="320505",
    organisation=_ORG + organisation_code_check_char(_ORG),
)


def _record(record_id: str, subject: SubjectId, kind: str, **fields: object) -> Record:
    values: dict[str, object] = {
        "quantity": 1,
        "event_start": TODAY - timedelta(days=100),
        "event_end": None,
        "status": "active",
        **fields,
    }
    return Record(
        record_id=record_id,
        subject_kind=ENTERPRISE if subject == FIRM else PERSON,
        subject_id=subject,
        kind=kind,
        **values,  # type: ignore[arg-type]
    )


#: record id → the state the file must give it today
ALICE_RECORDS = {
    _record("A-counts", ALICE, "tax_arrears", quantity=2, event_start=TODAY - timedelta(400)): (
        "counts"
    ),
    _record("A-counts-2", ALICE, "major_tax_violation", event_start=TODAY - timedelta(10)): (
        "counts"
    ),
    _record(
        "A-expired",
        ALICE,
        "tax_arrears",
        event_start=TODAY - timedelta(days=8 * 365),
        event_end=TODAY - timedelta(days=7 * 365),
    ): "expired",
    _record("A-disputed", ALICE, "major_tax_violation", status="disputed"): "disputed",
    _record("A-ahead", ALICE, "tax_arrears", event_start=TODAY + timedelta(days=30)): (
        "not_yet_in_force"
    ),
}
OTHER_RECORDS = (
    _record("B-counts", BOB, "tax_arrears"),
    _record("F-counts", FIRM, "a_level_taxpayer", event_start=TODAY - timedelta(days=30)),
    _record(
        "F-expired",
        FIRM,
        "a_level_taxpayer",
        event_start=TODAY - timedelta(days=4 * 365),
        event_end=TODAY - timedelta(days=3 * 365),
    ),
)


@dataclass(frozen=True)
class TaxNode:
    server: RunningServer
    config: NodeConfig
    rules: RuleSet
    layout: SlotLayout

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    @property
    def audit_path(self) -> Path:
        return self.config.state_dir / "audit.jsonl"


@dataclass(frozen=True)
class Portal:
    """The online portal device: its sealing key and a token binding that key."""

    sealing_key: X25519PrivateKey
    token: str

    @property
    def recipient_key(self) -> bytes:
        return public_bytes(self.sealing_key)


@pytest.fixture(scope="module")
def tax_node(
    tmp_path_factory: pytest.TempPathFactory,
    platform_certs: Path,
    issuer_keys: IssuerKeyPaths,
    list_officers: dict[str, TlsFiles],
) -> Iterator[TaxNode]:
    base = tmp_path_factory.mktemp("subject-file-node")
    catalogue = restricted_catalogue([DEPARTMENT, "court", "psb", "civility", "blood"])
    db = base / "tax.duckdb"
    with RecordStore(db, department=DepartmentId(DEPARTMENT)) as store:
        store.insert_records([*ALICE_RECORDS, *OTHER_RECORDS])
    config = NodeConfig(
        department=DEPARTMENT,
        db=db,
        tls=TlsFiles.from_cert_paths(
            cert_paths(platform_certs, role=PeerRole.NODE, name=DEPARTMENT)
        ),
        issuer_public_key=issuer_keys.public,
        state_dir=base / "state",
        table_window_bits=6,
        consent_public_key=platform_certs / "coordinator" / CONSENT_PUBLIC_KEY_FILE,
    )
    server = start_node(config, catalogue=catalogue)
    node = TaxNode(
        server=server,
        config=config,
        rules=load_default_rules(DEPARTMENT, catalogue=catalogue),
        layout=SlotLayout.for_catalogue(catalogue, PERSON, Shape.BREAKDOWN),
    )
    try:
        with ListOfficer(
            node.target, department=DEPARTMENT, tls=list_officers[DEPARTMENT]
        ) as officer:
            officer.publish(
                [
                    _entry("SF-in-view", ALICE, start=TODAY - timedelta(days=1), days=365),
                    _entry("SF-scheduled", ALICE, start=TODAY + timedelta(days=10), days=90),
                    _entry("SF-withdrawn", ALICE, start=TODAY - timedelta(days=2), days=30),
                    _entry("SF-bob", BOB, start=TODAY - timedelta(days=1), days=30),
                ]
            )
            officer.withdraw(
                "SF-withdrawn", reason=WithdrawReason.ERROR, reference="published in error"
            )
        yield node
    finally:
        server.stop(grace=0.5)


def _entry(entry_id: str, subject: SubjectId, *, start: date, days: int) -> NewEntry:
    return NewEntry(
        entry_id=EntryId(entry_id),
        list="major_tax_violators",
        subject_kind=PERSON,
        subject_id=subject,
        subject_name="Test subject",
        legal_basis="",
        reason="a major tax violation",
        window_start=start,
        window_end=start + timedelta(days=days),
    )


def _issuer(issuer_keys: IssuerKeyPaths) -> TokenIssuer:
    return TokenIssuer.from_file(issuer_keys.private)


def _token(
    issuer_keys: IssuerKeyPaths,
    keys: dict[str, RequesterKeys],
    requester: str,
    *,
    role: Role,
    purposes: tuple[str, ...] = ("self_query",),
    seal: bytes | None = None,
) -> str:
    return _issuer(issuer_keys).issue(
        requester=requester,
        role=role,
        purposes=purposes,
        key_fingerprint=keys[requester].fingerprint,
        ttl=timedelta(minutes=30),
        seal_fingerprint=seal_fingerprint(seal) if seal is not None else None,
    )


def _forged(
    issuer_keys: IssuerKeyPaths,
    keys: dict[str, RequesterKeys],
    requester: str,
    *,
    role: Role,
    purposes: tuple[str, ...] = ("self_query",),
    seal: bytes | None = None,
) -> str:
    """A token the issuer refuses to sign (a device token for another purpose, or naming no
    sealing key), signed with its key all the same: what a subverted issuing path hands out."""
    return unsafe_forge_token(
        issuer_keys.private,
        requester=requester,
        role=role.value,
        purposes=purposes,
        key_fingerprint=keys[requester].fingerprint,
        seal_fingerprint=seal_fingerprint(seal) if seal is not None else None,
    )


@pytest.fixture(scope="module")
def ca(platform_certs: Path) -> Path:
    """The platform CA the portal trusts: the tax node's parts must be signed under it."""
    return platform_certs / "ca.pem"


@pytest.fixture(scope="module")
def portal(issuer_keys: IssuerKeyPaths, requester_keys: dict[str, RequesterKeys]) -> Portal:
    key = X25519PrivateKey.generate()
    token = _token(
        issuer_keys, requester_keys, "portal-1", role=Role.PORTAL, seal=public_bytes(key)
    )
    return Portal(sealing_key=key, token=token)


@pytest.fixture(scope="module")
def kiosk(issuer_keys: IssuerKeyPaths, requester_keys: dict[str, RequesterKeys]) -> Portal:
    key = X25519PrivateKey.generate()
    token = _token(issuer_keys, requester_keys, "kiosk-1", role=Role.KIOSK, seal=public_bytes(key))
    return Portal(sealing_key=key, token=token)


def _stub(
    node: TaxNode, platform_certs: Path, *, role: PeerRole = PeerRole.COORDINATOR, name: str = ""
) -> tuple[grpc.Channel, node_pb2_grpc.NodeServiceStub]:
    tls = TlsFiles.from_cert_paths(
        cert_paths(platform_certs, role=role, name=name or "coordinator")
    )
    channel = secure_channel(node.target, tls, server_name=node_server_name(DEPARTMENT))
    return channel, node_pb2_grpc.NodeServiceStub(channel)


@pytest.fixture(scope="module")
def as_coordinator(
    tax_node: TaxNode, platform_certs: Path
) -> Iterator[node_pb2_grpc.NodeServiceStub]:
    channel, stub = _stub(tax_node, platform_certs)
    with channel:
        yield stub


def _metadata(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def _ask(
    stub: node_pb2_grpc.NodeServiceStub,
    token: str,
    *,
    subject: str = ALICE,
    kind: int = common_pb2.SUBJECT_KIND_PERSON,
    purpose: str = "self_query",
    recipient_key: bytes,
    query_id: str | None = None,
    nonce: bytes | None = None,
) -> tuple[str, node_pb2.SealedSubjectFile, bytes]:
    """(query id, part, the nonce it was asked with: what the portal remembers to check it)."""
    query_id = query_id or "sf-" + secrets.token_hex(8)
    request = node_pb2.NodeSubjectFileRequest(
        query_id=query_id,
        subject_kind=kind,  # type: ignore[arg-type]
        subject_id=subject,
        purpose=purpose,
        recipient_key=recipient_key,
        nonce=new_nonce() if nonce is None else nonce,
    )
    part = stub.SubjectFile(request, timeout=TIMEOUT_S, metadata=_metadata(token))
    return query_id, part, request.nonce


def _refused(
    stub: node_pb2_grpc.NodeServiceStub, token: str, code: grpc.StatusCode, **fields: object
) -> grpc.Call:
    with pytest.raises(grpc.RpcError) as caught:
        _ask(stub, token, **fields)  # type: ignore[arg-type]
    error = caught.value
    assert isinstance(error, grpc.Call)
    assert error.code() == code, error.details()
    # whatever was refused, no part of the subject's id comes back
    assert ALICE not in (error.details() or "") and ALICE[6:14] not in (error.details() or "")
    return error


def _open(
    portal: Portal,
    query_id: str,
    part: node_pb2.SealedSubjectFile,
    nonce: bytes,
    *,
    subject: str = ALICE,
    kind: SubjectKind = PERSON,
    ca: Path,
) -> SubjectFile:
    """The part as the portal opens it: signed by the tax node, for this call, then opened."""
    context = SealContext(
        query_id=query_id,
        source=DEPARTMENT,
        subject_kind=kind.value,
        subject_id=subject,
        nonce=nonce,
    )
    return open_part(
        part=sealed_part_from_proto(part),
        expected=context,
        sealing_key=portal.sealing_key,
        trusted_cas=load_trusted_cas(ca),
        now=datetime.now(UTC),
    )


def _audit(node: TaxNode) -> list[dict[str, object]]:
    return [
        json.loads(line)
        for line in node.audit_path.read_text(encoding="ascii").splitlines()
        if line.strip()
    ]


def _field(error: grpc.Call) -> str | None:
    for key, value in error.trailing_metadata() or ():
        if key == FIELD_METADATA_KEY:
            return str(value)
    return None


def _rescoring_chunk(
    stub: node_pb2_grpc.NodeServiceStub,
    node: TaxNode,
    issuer_keys: IssuerKeyPaths,
    keys: dict[str, RequesterKeys],
) -> str:
    """A batch chunk naming Alice among others, as the sync job's rescoring sends it."""
    sync = keys["sync-1"]
    catalogue = restricted_catalogue([DEPARTMENT, "court", "psb", "civility", "blood"])
    layout = SlotLayout.for_catalogue(catalogue, PERSON, Shape.TOTAL)
    query_id = "sf-chunk-" + secrets.token_hex(8)
    request = node_pb2.ContributeChunkRequest(
        query_id=query_id,
        chunk=0,
        subject_kind=common_pb2.SUBJECT_KIND_PERSON,
        subject_ids=[BOB, ALICE],
        shape=common_pb2.SHAPE_TOTAL,
        purpose="credit_rescoring",
        public_key=common_pb2.PaillierPublicKey(
            n=sync.public.to_bytes(), modulus_proof=sync.modulus_proof
        ),
        slots=list(layout.names),
        slot_widths=list(layout.widths),
        subjects_per_ciphertext=layout.capacity(2048),
    )
    token = _token(issuer_keys, keys, "sync-1", role=Role.SYNC_JOB, purposes=("credit_rescoring",))
    stub.ContributeChunk(request, timeout=TIMEOUT_S, metadata=_metadata(token))
    return query_id


# --- what the subject sees ----------------------------------------------------------------------


def test_the_portal_opens_the_file_with_every_record_in_its_state(
    ca: Path,
    tax_node: TaxNode,
    as_coordinator: node_pb2_grpc.NodeServiceStub,
    portal: Portal,
    issuer_keys: IssuerKeyPaths,
    requester_keys: dict[str, RequesterKeys],
) -> None:
    # other decisions about Alice (and one about Bob) this node logged before she asks
    chunk_query = _rescoring_chunk(as_coordinator, tax_node, issuer_keys, requester_keys)
    bank = _token(issuer_keys, requester_keys, "bank-1", role=Role.BANK, seal=portal.recipient_key)
    refused_query = "sf-bank-" + secrets.token_hex(8)
    _refused(
        as_coordinator, bank, grpc.StatusCode.PERMISSION_DENIED,
        recipient_key=portal.recipient_key, query_id=refused_query,
    )  # fmt: skip
    bob_query, _, _ = _ask(
        as_coordinator, portal.token, subject=BOB, recipient_key=portal.recipient_key
    )

    query_id, part, nonce = _ask(as_coordinator, portal.token, recipient_key=portal.recipient_key)

    assert part.source == DEPARTMENT
    assert part.rules_version == tax_node.rules.version and len(part.policy_hash) == 64
    opened = _open(portal, query_id, part, nonce, ca=ca)
    assert opened.as_of == TODAY.isoformat()
    states = {line.record_id: line.state for line in opened.records}
    assert states == {record.record_id: state for record, state in ALICE_RECORDS.items()}
    counting = next(line for line in opened.records if line.record_id == "A-counts")
    assert counting.category == "deduction" and counting.quantity == 2
    assert counting.description == "Tax arrears" and counting.validity == "5y"
    # the default validity, five years from the event: its last day is the day before
    start = TODAY - timedelta(days=400)
    assert (
        counting.counts_until
        == (start.replace(year=start.year + 5) - timedelta(days=1)).isoformat()
    )

    # the totals are the department's part of the score, as it encrypts it for any query
    contribution = tax_node.rules.contribution(PERSON, list(ALICE_RECORDS), as_of=TODAY)
    assert opened.deductions == contribution.deductions == 10 * 2 + 40
    assert dict(opened.bonuses) == dict(contribution.bonuses)
    totals = {t.kind: (t.category, t.points) for t in opened.kind_totals}
    assert totals == {"tax_arrears": ("deduction", 20), "major_tax_violation": ("deduction", 40)}
    assert sum(points for _, points in totals.values()) == contribution.deductions

    # her entries in view and scheduled, with their windows; not the withdrawn one, not Bob's
    entries = {e.entry_id: e for e in opened.list_entries}
    assert set(entries) == {"SF-in-view", "SF-scheduled"}
    assert entries["SF-in-view"].status == "in_view"
    assert entries["SF-scheduled"].status == "scheduled"
    assert entries["SF-scheduled"].window_start == (TODAY + timedelta(days=10)).isoformat()
    assert entries["SF-in-view"].colour == "black"

    # who asked: the batch she was in, the bank refused, and this very question, newest last
    by_query = {line.query_id: line for line in opened.audit}
    assert by_query[chunk_query].in_batch and by_query[chunk_query].decision == "allow"
    assert by_query[refused_query].decision == "deny"
    assert by_query[refused_query].requester == "bank-1"
    own = opened.audit[-1]
    assert own.query_id == query_id and own.decision == "allow" and not own.in_batch
    assert own.requester == "portal-1" and own.shape == AUDIT_SHAPE
    assert own.purpose == "self_query"
    # none about anyone else
    assert bob_query not in by_query
    assert not opened.audit_truncated and not opened.records_truncated


def test_an_enterprise_file_holds_its_bonus_for_the_online_portal(
    ca: Path, tax_node: TaxNode, as_coordinator: node_pb2_grpc.NodeServiceStub, portal: Portal
) -> None:
    query_id, part, nonce = _ask(
        as_coordinator,
        portal.token,
        subject=FIRM,
        kind=common_pb2.SUBJECT_KIND_ENTERPRISE,
        recipient_key=portal.recipient_key,
    )
    opened = _open(portal, query_id, part, nonce, subject=FIRM, kind=ENTERPRISE, ca=ca)
    assert {line.record_id: line.state for line in opened.records} == {
        "F-counts": "counts",
        "F-expired": "expired",
    }
    firm_records = [r for r in OTHER_RECORDS if r.subject_id == FIRM]
    contribution = tax_node.rules.contribution(ENTERPRISE, firm_records, as_of=TODAY)
    assert dict(opened.bonuses) == dict(contribution.bonuses) == {"tax_credit": 30}
    assert opened.deductions == 0
    assert [(t.kind, t.points) for t in opened.kind_totals] == [("a_level_taxpayer", 30)]


def test_a_kiosk_gets_a_persons_file_but_no_enterprises(
    ca: Path, tax_node: TaxNode, as_coordinator: node_pb2_grpc.NodeServiceStub, kiosk: Portal
) -> None:
    query_id, part, nonce = _ask(as_coordinator, kiosk.token, recipient_key=kiosk.recipient_key)
    assert _open(kiosk, query_id, part, nonce, ca=ca).records
    error = _refused(
        as_coordinator, kiosk.token, grpc.StatusCode.PERMISSION_DENIED,
        subject=FIRM, kind=common_pb2.SUBJECT_KIND_ENTERPRISE, recipient_key=kiosk.recipient_key,
    )  # fmt: skip
    assert "node-kiosk-persons-only" in (error.details() or "")


# --- who may ask ----------------------------------------------------------------------------------


def test_only_the_coordinators_certificate_may_ask(
    tax_node: TaxNode, platform_certs: Path, portal: Portal
) -> None:
    # the portal itself, with its own requester certificate, straight to the node
    for role, name in ((PeerRole.REQUESTER, "portal-1"), (PeerRole.NODE, "court")):
        channel, stub = _stub(tax_node, platform_certs, role=role, name=name)
        with channel:
            error = _refused(
                stub, portal.token, grpc.StatusCode.PERMISSION_DENIED,
                recipient_key=portal.recipient_key,
            )  # fmt: skip
        assert "only the platform coordinator" in (error.details() or "")


def test_a_coordinator_that_puts_its_own_key_in_gets_nothing(
    tax_node: TaxNode, as_coordinator: node_pb2_grpc.NodeServiceStub, portal: Portal
) -> None:
    # the curious coordinator: the portal's token, but a key whose private half it holds
    own = X25519PrivateKey.generate()
    query_id = "sf-curious-" + secrets.token_hex(8)
    error = _refused(
        as_coordinator, portal.token, grpc.StatusCode.PERMISSION_DENIED,
        recipient_key=public_bytes(own), query_id=query_id,
    )  # fmt: skip
    assert _field(error) == "recipient_key"
    assert "not the key bound to the token" in (error.details() or "")
    (entry,) = [e for e in _audit(tax_node) if e["query_id"] == query_id]
    assert entry["decision"] == "deny" and entry["requester"] == "portal-1"
    assert entry["shape"] == AUDIT_SHAPE


def test_a_token_without_a_sealing_key_gets_nothing(
    tax_node: TaxNode,
    as_coordinator: node_pb2_grpc.NodeServiceStub,
    portal: Portal,
    issuer_keys: IssuerKeyPaths,
    requester_keys: dict[str, RequesterKeys],
) -> None:
    # never issued (test_tokens_device.py); forged, the node's own token check refuses it
    unbound = _forged(issuer_keys, requester_keys, "portal-1", role=Role.PORTAL)
    query_id = "sf-unbound-" + secrets.token_hex(8)
    error = _refused(
        as_coordinator, unbound, grpc.StatusCode.UNAUTHENTICATED,
        recipient_key=portal.recipient_key, query_id=query_id,
    )  # fmt: skip
    assert "token claim 'seal_fp'" in (error.details() or "")
    (entry,) = [e for e in _audit(tax_node) if e["query_id"] == query_id]
    assert entry["decision"] == "deny" and entry["requester"] == UNAUTHENTICATED


@pytest.mark.parametrize(
    ("requester", "role", "purposes", "asked", "says"),
    [
        ("bank-1", Role.BANK, ("self_query",), "self_query", "role"),
        ("agency-1", Role.DATA_SUBJECT, ("self_query",), "self_query", "role"),
    ],
)
def test_only_a_portal_device_for_self_query_gets_a_file(
    tax_node: TaxNode,
    as_coordinator: node_pb2_grpc.NodeServiceStub,
    portal: Portal,
    issuer_keys: IssuerKeyPaths,
    requester_keys: dict[str, RequesterKeys],
    requester: str,
    role: Role,
    purposes: tuple[str, ...],
    asked: str,
    says: str,
) -> None:
    token = _token(
        issuer_keys, requester_keys, requester, role=role, purposes=purposes,
        seal=portal.recipient_key,
    )  # fmt: skip
    query_id = "sf-who-" + secrets.token_hex(8)
    error = _refused(
        as_coordinator, token, grpc.StatusCode.PERMISSION_DENIED,
        purpose=asked, recipient_key=portal.recipient_key, query_id=query_id,
    )  # fmt: skip
    assert says in (error.details() or "")
    (entry,) = [e for e in _audit(tax_node) if e["query_id"] == query_id]
    assert entry["decision"] == "deny" and entry["requester"] == requester


@pytest.mark.parametrize(
    ("purposes", "asked"),
    [(("self_query", "credit_report"), "credit_report"), (("credit_report",), "self_query")],
)
def test_a_forged_portal_token_for_another_purpose_is_refused_by_the_nodes_token_check(
    tax_node: TaxNode,
    as_coordinator: node_pb2_grpc.NodeServiceStub,
    portal: Portal,
    issuer_keys: IssuerKeyPaths,
    requester_keys: dict[str, RequesterKeys],
    purposes: tuple[str, ...],
    asked: str,
) -> None:
    # signed with the issuer's key past the issuer's check: the node verifies the token itself
    token = _forged(
        issuer_keys, requester_keys, "portal-1", role=Role.PORTAL, purposes=purposes,
        seal=portal.recipient_key,
    )  # fmt: skip
    query_id = "sf-forged-" + secrets.token_hex(8)
    error = _refused(
        as_coordinator, token, grpc.StatusCode.UNAUTHENTICATED,
        purpose=asked, recipient_key=portal.recipient_key, query_id=query_id,
    )  # fmt: skip
    assert "token claim 'purposes': role 'portal'" in (error.details() or "")
    (entry,) = [e for e in _audit(tax_node) if e["query_id"] == query_id]
    assert entry["decision"] == "deny" and entry["requester"] == UNAUTHENTICATED


def test_bad_input_is_refused_naming_the_field_and_never_the_id(
    tax_node: TaxNode, as_coordinator: node_pb2_grpc.NodeServiceStub, portal: Portal
) -> None:
    bad_check = ALICE[:17] + ("0" if ALICE[17] != "0" else "1")
    error = _refused(
        as_coordinator, portal.token, grpc.StatusCode.INVALID_ARGUMENT,
        subject=bad_check, recipient_key=portal.recipient_key,
    )  # fmt: skip
    assert _field(error) == "subject_id" and bad_check not in (error.details() or "")
    for key in (b"", b"\x01" * 31, bytes(32)):
        error = _refused(
            as_coordinator, portal.token, grpc.StatusCode.INVALID_ARGUMENT, recipient_key=key
        )
        assert _field(error) == "recipient_key"
    error = _refused(
        as_coordinator, portal.token, grpc.StatusCode.INVALID_ARGUMENT,
        kind=common_pb2.SUBJECT_KIND_UNSPECIFIED, recipient_key=portal.recipient_key,
    )  # fmt: skip
    assert _field(error) == "subject_kind"


# --- what nobody else can read --------------------------------------------------------------------


def test_nothing_sealed_is_readable_without_the_portals_key(
    tax_node: TaxNode, as_coordinator: node_pb2_grpc.NodeServiceStub, portal: Portal
) -> None:
    query_id, part, nonce = _ask(as_coordinator, portal.token, recipient_key=portal.recipient_key)
    # what the coordinator forwards holds no id, record or reason in the clear
    for clear in (ALICE, "A-counts", "Tax arrears", "SF-in-view", "portal-1"):
        assert clear.encode() not in part.sealed
    context = SealContext(
        query_id=query_id, source=DEPARTMENT, subject_kind="person", subject_id=ALICE, nonce=nonce
    )
    with pytest.raises(Unauthenticated):
        open_file(sealed=part.sealed, private_key=X25519PrivateKey.generate(), context=context)
    # nor under another query, department, subject or call: a coordinator cannot swap parts
    for other in (
        dataclasses.replace(context, query_id="sf-other"),
        dataclasses.replace(context, source="court"),
        dataclasses.replace(context, subject_id=BOB),
        dataclasses.replace(context, nonce=new_nonce()),
    ):
        with pytest.raises(Unauthenticated):
            open_file(sealed=part.sealed, private_key=portal.sealing_key, context=other)


def test_the_part_is_signed_by_this_departments_node_for_this_call(
    ca: Path,
    platform_certs: Path,
    as_coordinator: node_pb2_grpc.NodeServiceStub,
    portal: Portal,
) -> None:
    query_id, part, nonce = _ask(as_coordinator, portal.token, recipient_key=portal.recipient_key)
    # the node's own TLS certificate, the one its server presents
    node_cert = cert_paths(platform_certs, role=PeerRole.NODE, name=DEPARTMENT).cert
    assert part.certificate == node_cert.read_bytes()
    header = json.loads(base64.urlsafe_b64decode(part.signature.split(".")[0] + "=="))
    assert header["alg"] == "ES256" and header["typ"] == "osmanthus-subject-file+jws"
    assert header["b64"] is False and header["crit"] == ["b64"]
    assert _open(portal, query_id, part, nonce, ca=ca).source == DEPARTMENT
    # the same part offered for a later call (a new nonce, the same query id): refused
    with pytest.raises(Unauthenticated, match="does not verify"):
        _open(portal, query_id, part, new_nonce(), ca=ca)


@pytest.mark.parametrize(
    ("nonce", "size"), [(b"", "0 bytes"), (b"\x01" * 15, "15 bytes"), (b"\x01" * 65, "65 bytes")]
)
def test_a_missing_or_wrong_sized_nonce_is_refused_naming_it(
    tax_node: TaxNode,
    as_coordinator: node_pb2_grpc.NodeServiceStub,
    portal: Portal,
    nonce: bytes,
    size: str,
) -> None:
    query_id = "sf-nonce-" + secrets.token_hex(8)
    error = _refused(
        as_coordinator, portal.token, grpc.StatusCode.INVALID_ARGUMENT,
        recipient_key=portal.recipient_key, nonce=nonce, query_id=query_id,
    )  # fmt: skip
    assert _field(error) == "nonce"
    assert f"16 to 64 random bytes chosen by the portal for this call, got {size}" in (
        error.details() or ""
    )
    (entry,) = [e for e in _audit(tax_node) if e["query_id"] == query_id]
    assert entry["decision"] == "deny"


def test_a_small_order_key_is_refused_clearly_and_audited_as_a_refusal(
    tax_node: TaxNode,
    as_coordinator: node_pb2_grpc.NodeServiceStub,
    issuer_keys: IssuerKeyPaths,
    requester_keys: dict[str, RequesterKeys],
) -> None:
    # a point of order 8 (RFC 7748 §6.1): every exchange with it is all zeros. Before, the
    # node audited "allow" and then failed sealing with INTERNAL; the token cannot even be
    # bound to it now (seal_fingerprint refuses it), so the device's own key is used as
    # the fingerprint and the small-order key sent in its place
    small = bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")
    token = _token(
        issuer_keys, requester_keys, "portal-1", role=Role.PORTAL,
        seal=public_bytes(X25519PrivateKey.generate()),
    )  # fmt: skip
    query_id = "sf-small-" + secrets.token_hex(8)
    error = _refused(
        as_coordinator, token, grpc.StatusCode.INVALID_ARGUMENT,
        recipient_key=small, query_id=query_id,
    )  # fmt: skip
    assert _field(error) == "recipient_key" and "small order" in (error.details() or "")
    (entry,) = [e for e in _audit(tax_node) if e["query_id"] == query_id]
    assert entry["decision"] == "deny"


def test_the_audit_log_names_subjects_by_salted_hash_only(
    tax_node: TaxNode, as_coordinator: node_pb2_grpc.NodeServiceStub, portal: Portal
) -> None:
    _ask(as_coordinator, portal.token, recipient_key=portal.recipient_key)
    text = tax_node.audit_path.read_text(encoding="ascii")
    ours = [e for e in _audit(tax_node) if e["shape"] == AUDIT_SHAPE]
    assert ours and all(len(str(e["subject_hash"])) == 64 for e in ours)
    for subject in (ALICE, BOB, FIRM, ALICE[:17]):
        assert subject not in text


# --- the kiosk's score: self_query without a consent, and nothing else ----------------------------


def _contribute(
    stub: node_pb2_grpc.NodeServiceStub,
    node: TaxNode,
    keys: RequesterKeys,
    token: str,
    *,
    purpose: str = "self_query",
    shape: int = common_pb2.SHAPE_BREAKDOWN,
) -> node_pb2.ContributeResponse:
    request = node_pb2.ContributeRequest(
        query_id="sf-score-" + secrets.token_hex(8),
        subject_kind=common_pb2.SUBJECT_KIND_PERSON,
        subject_id=ALICE,
        shape=shape,  # type: ignore[arg-type]
        purpose=purpose,
        public_key=common_pb2.PaillierPublicKey(
            n=keys.public.to_bytes(), modulus_proof=keys.modulus_proof
        ),
        slots=list(node.layout.names),
        slot_widths=list(node.layout.widths),
    )
    response: node_pb2.ContributeResponse = stub.Contribute(
        request, timeout=TIMEOUT_S, metadata=_metadata(token)
    )
    return response


def test_a_kiosk_self_query_needs_no_consent_and_other_purposes_are_refused(
    tax_node: TaxNode,
    as_coordinator: node_pb2_grpc.NodeServiceStub,
    issuer_keys: IssuerKeyPaths,
    requester_keys: dict[str, RequesterKeys],
) -> None:
    keys = requester_keys["kiosk-1"]
    seal = public_bytes(X25519PrivateKey.generate())
    token = _token(issuer_keys, requester_keys, "kiosk-1", role=Role.KIOSK, seal=seal)
    response = _contribute(as_coordinator, tax_node, keys, token)
    plain = keys.private.decrypt(keys.public.ciphertext_from_bytes(response.ciphertext.value))
    (values,) = tax_node.layout.unpack(plain, subjects=1, contributors=1)
    assert values[tax_node.layout.names.index("deductions")] == 60
    consent = [e for e in _audit(tax_node) if e["requester"] == "kiosk-1"][-1]
    assert consent["decision"] == "allow" and consent["extra"]["consent_needed"] == 0  # type: ignore[index]

    # the token's purposes first (a kiosk token for a loan purpose is never issued, and one
    # forged with the issuer's key fails verification); then the node's own policy
    forged = _forged(
        issuer_keys, requester_keys, "kiosk-1", role=Role.KIOSK,
        purposes=("self_query", "loan_underwriting"), seal=seal,
    )  # fmt: skip
    loan, total = "loan_underwriting", common_pb2.SHAPE_TOTAL
    for sent, asked, shape, code, rule in (
        (token, loan, common_pb2.SHAPE_BREAKDOWN, PERMISSION_DENIED, "not among"),
        (forged, loan, common_pb2.SHAPE_BREAKDOWN, UNAUTHENTICATED_CODE, "claim 'purposes'"),
        (token, "self_query", total, PERMISSION_DENIED, "node-portal-breakdown-only"),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            _contribute(as_coordinator, tax_node, keys, sent, purpose=asked, shape=shape)
        error = caught.value
        assert isinstance(error, grpc.Call)
        assert error.code() == code, error.details()
        assert rule in (error.details() or "")


def test_the_file_names_every_field_the_portal_decodes(
    ca: Path, tax_node: TaxNode, as_coordinator: node_pb2_grpc.NodeServiceStub, portal: Portal
) -> None:
    # generated_at is the node's clock in UTC; the portal shows it as "as of"
    query_id, part, nonce = _ask(as_coordinator, portal.token, recipient_key=portal.recipient_key)
    opened = _open(portal, query_id, part, nonce, ca=ca)
    generated = datetime.fromisoformat(opened.generated_at)
    assert abs(generated - datetime.now(UTC)) < timedelta(minutes=5)
    assert opened.rules_version == tax_node.rules.version

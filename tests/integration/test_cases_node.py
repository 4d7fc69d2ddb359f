"""Objections and credit repair at a real department node over mutual TLS.

One taxation-bureau node of its own, with records and a black-list entry seeded here. Cases are
filed as the coordinator files them (NodeService.FileCase with the coordinator's certificate
and the portal's token), sealed with osmanthus.core.cases.seal_case to the case key the node
published in its subject-file part; the department's officer decides them through
CaseOfficeService with the operator certificate named "tax". Each scenario uses a subject of
its own, so the per-subject limits of one do not touch another.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import secrets
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import grpc
import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from certs import PeerRole, cert_paths
from node.officer import ListOfficer
from node.server import NodeConfig, build_service, start_node
from node.store import RecordStore
from osmanthus.core.cases import (
    DRAFT_MAGIC,
    DRAFT_VERSION,
    MAX_ATTACHMENT_BYTES,
    AttachmentFile,
    CaseCorrection,
    CaseDraft,
    CaseGround,
    CaseKind,
    CaseQuery,
    CaseReceipt,
    CaseRemedy,
    CaseStatus,
    CaseTarget,
    Decision,
    case_context,
    commitment_letter,
    seal_case,
    sender_proof,
)
from osmanthus.core.catalogue import load_catalogue
from osmanthus.core.clock import china_today
from osmanthus.core.encoding import SlotLayout
from osmanthus.core.errors import ConfigError
from osmanthus.core.grpc_errors import FIELD_METADATA_KEY
from osmanthus.core.ids import make_resident_id, make_uscc, organisation_code_check_char
from osmanthus.core.lists import EntryId, NewEntry
from osmanthus.core.receipts import CONSENT_PUBLIC_KEY_FILE
from osmanthus.core.rules import Record
from osmanthus.core.server import RunningServer
from osmanthus.core.subjectfile import SubjectFile
from osmanthus.core.subjectpart import load_trusted_cas, open_part
from osmanthus.core.subjectseal import (
    SealContext,
    new_nonce,
    public_bytes,
    seal_file,
    seal_fingerprint,
)
from osmanthus.core.tls import TlsFiles, node_server_name, secure_channel
from osmanthus.core.tokens import TokenIssuer
from osmanthus.core.types import DepartmentId, Role, Shape, SubjectId, SubjectKind
from osmanthus.core.wire import cases as cases_wire
from osmanthus.core.wire import lists as lists_wire
from osmanthus.core.wire.common import kind_to_pb
from osmanthus.core.wire.lists import ChangesQuery
from osmanthus.core.wire.node import sealed_part_from_proto
from osmanthus.v1 import cases_pb2, cases_pb2_grpc, common_pb2, node_pb2, node_pb2_grpc
from sdk import RequesterKeys
from tests.casefiles import tiny_jpeg, tiny_pdf, tiny_png
from tests.conftest import IssuerKeyPaths
from tests.integration.conftest import restricted_catalogue

DEPARTMENT = "tax"
TIMEOUT_S = 30.0
TODAY = china_today()
PERSON = SubjectKind.PERSON
ENTERPRISE = SubjectKind.ENTERPRISE
DEPARTMENTS = [DEPARTMENT, "court", "psb", "civility", "blood"]
#: filings a subject may make a day at this node (the case settings file below)
PER_DAY = 3


def _person(sequence: int) -> SubjectId:
    return make_resident_id(region="320505", birth=date(1975, 1, 1), sequence=sequence)


def _firm(n: int) -> SubjectId:
    org = f"C{n:07d}"
    return make_uscc(
        authority="9", category="1", region="320505",
        organisation=org + organisation_code_check_char(org),
    )  # fmt: skip


WITHDRAWN_P, CORRECTED_P, REJECTED_P, ABUSED_P, FLOOD_P, OTHER_P, REPAIR_P, FORGED_P = (
    _person(n) for n in (301, 302, 303, 304, 305, 306, 307, 308)
)
FIRM, OTHER_FIRM, BONUS_FIRM = _firm(1), _firm(2), _firm(3)
FIRMS = (FIRM, OTHER_FIRM, BONUS_FIRM)


def _record(record_id: str, subject: SubjectId, kind: str, **fields: object) -> Record:
    values: dict[str, object] = {
        "quantity": 1, "event_start": TODAY - timedelta(days=100), "event_end": None,
        "status": "active", **fields,
    }  # fmt: skip
    skind = ENTERPRISE if subject in FIRMS else PERSON
    return Record(record_id=record_id, subject_kind=skind, subject_id=subject, kind=kind, **values)  # type: ignore[arg-type]


RECORDS = [
    _record("W-arrears", WITHDRAWN_P, "tax_arrears", quantity=2),
    _record("W-violation", WITHDRAWN_P, "major_tax_violation"),
    _record("C-arrears", CORRECTED_P, "tax_arrears", quantity=3),
    _record("R-violation", REJECTED_P, "major_tax_violation"),
    _record("X-arrears", ABUSED_P, "tax_arrears"),
    *(_record(f"F-{n}", FLOOD_P, "tax_arrears") for n in range(PER_DAY + 1)),
    _record("O-arrears", OTHER_P, "tax_arrears"),
    _record("F-firm-arrears", FIRM, "tax_arrears"),
    _record("P-violation", REPAIR_P, "major_tax_violation"),
    _record("G-arrears", FORGED_P, "tax_arrears"),
    # bonus records (the A level counts for a year after the rating year): one counts, one expired
    _record("B-a-level", BONUS_FIRM, "a_level_taxpayer"),
    _record(
        "B-a-level-old",
        BONUS_FIRM,
        "a_level_taxpayer",
        event_start=TODAY - timedelta(days=1100),
        event_end=TODAY - timedelta(days=740),
    ),
]


@dataclass(frozen=True)
class TaxNode:
    server: RunningServer
    config: NodeConfig
    layout: SlotLayout

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    @property
    def audit_path(self) -> Path:
        return self.config.state_dir / "audit.jsonl"


@pytest.fixture(scope="module")
def tax_node(
    tmp_path_factory: pytest.TempPathFactory,
    platform_certs: Path,
    issuer_keys: IssuerKeyPaths,
    list_officers: dict[str, TlsFiles],
) -> Iterator[TaxNode]:
    base = tmp_path_factory.mktemp("cases-node")
    catalogue = restricted_catalogue(DEPARTMENTS)
    db = base / "tax.duckdb"
    with RecordStore(db, department=DepartmentId(DEPARTMENT)) as store:
        store.insert_records(RECORDS)
    settings = base / "cases.toml"
    settings.write_text(f"[limits]\nfilings_per_subject_per_day = {PER_DAY}\n")
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
        case_settings=settings,
    )
    server = start_node(config, catalogue=catalogue)
    node = TaxNode(
        server=server,
        config=config,
        layout=SlotLayout.for_catalogue(catalogue, PERSON, Shape.BREAKDOWN),
    )
    try:
        with ListOfficer(
            node.target, department=DEPARTMENT, tls=list_officers[DEPARTMENT]
        ) as officer:
            officer.publish([_entry("CE-firm", FIRM), _entry("CE-other", OTHER_FIRM)])
        yield node
    finally:
        server.stop(grace=0.5)


def _entry(entry_id: str, subject: SubjectId) -> NewEntry:
    return NewEntry(
        entry_id=EntryId(entry_id), list="major_tax_violators", subject_kind=ENTERPRISE,
        subject_id=subject, subject_name="Test firm", legal_basis="",
        reason="a major tax violation", window_start=TODAY - timedelta(days=1),
        window_end=TODAY + timedelta(days=300),
    )  # fmt: skip


@dataclass(frozen=True)
class Portal:
    sealing_key: X25519PrivateKey
    token: str


def _token(
    issuer_keys: IssuerKeyPaths, keys: dict[str, RequesterKeys], requester: str, *,
    role: Role, seal: bytes,
) -> str:  # fmt: skip
    return TokenIssuer.from_file(issuer_keys.private).issue(
        requester=requester, role=role, purposes=("self_query",),
        key_fingerprint=keys[requester].fingerprint, ttl=timedelta(minutes=30),
        seal_fingerprint=seal_fingerprint(seal),
    )  # fmt: skip


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


@pytest.fixture(scope="module")
def as_coordinator(
    tax_node: TaxNode, platform_certs: Path
) -> Iterator[node_pb2_grpc.NodeServiceStub]:
    tls = TlsFiles.from_cert_paths(
        cert_paths(platform_certs, role=PeerRole.COORDINATOR, name="coordinator")
    )
    with secure_channel(tax_node.target, tls, server_name=node_server_name(DEPARTMENT)) as channel:
        yield node_pb2_grpc.NodeServiceStub(channel)


def _office_stub(
    node: TaxNode, tls: TlsFiles
) -> tuple[grpc.Channel, cases_pb2_grpc.CaseOfficeServiceStub]:
    channel = secure_channel(node.target, tls, server_name=node_server_name(DEPARTMENT))
    return channel, cases_pb2_grpc.CaseOfficeServiceStub(channel)


@pytest.fixture(scope="module")
def officer(
    tax_node: TaxNode, list_officers: dict[str, TlsFiles]
) -> Iterator[cases_pb2_grpc.CaseOfficeServiceStub]:
    channel, stub = _office_stub(tax_node, list_officers[DEPARTMENT])
    with channel:
        yield stub


def _metadata(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def _field(error: grpc.Call) -> str | None:
    for key, value in error.trailing_metadata() or ():
        if key == FIELD_METADATA_KEY:
            return str(value)
    return None


def _audit(node: TaxNode) -> list[dict[str, object]]:
    return [json.loads(line) for line in node.audit_path.read_text().splitlines() if line.strip()]


# --- the portal's side: the subject's file, the case key, filing ---------------------------------


def _subject_file(
    stub: node_pb2_grpc.NodeServiceStub, portal: Portal, subject: SubjectId, kind: SubjectKind,
    ca: Path,
) -> SubjectFile:  # fmt: skip
    query_id = "cs-file-" + secrets.token_hex(8)
    nonce = new_nonce()
    part = stub.SubjectFile(
        node_pb2.NodeSubjectFileRequest(
            query_id=query_id,
            subject_kind=kind_to_pb(kind),
            subject_id=subject,
            purpose="self_query",
            recipient_key=public_bytes(portal.sealing_key),
            nonce=nonce,
        ),
        timeout=TIMEOUT_S,
        metadata=_metadata(portal.token),
    )
    context = SealContext(
        query_id=query_id, source=DEPARTMENT, subject_kind=kind.value, subject_id=subject,
        nonce=nonce,
    )  # fmt: skip
    return open_part(
        part=sealed_part_from_proto(part), expected=context, sealing_key=portal.sealing_key,
        trusted_cas=load_trusted_cas(ca), now=datetime.now(UTC),
    )  # fmt: skip


@pytest.fixture(scope="module")
def case_key(
    as_coordinator: node_pb2_grpc.NodeServiceStub, portal: Portal, platform_certs: Path
) -> bytes:
    """The case key as the portal learns it: from the node's signed subject-file part."""
    part = _subject_file(as_coordinator, portal, OTHER_P, PERSON, platform_certs / "ca.pem")
    assert part.case_key
    return base64.urlsafe_b64decode(part.case_key + "=" * (-len(part.case_key) % 4))


def _file_sealed(
    stub: node_pb2_grpc.NodeServiceStub, sender: Portal, case_key: bytes, subject: SubjectId,
    sealed: bytes, nonce: bytes, *, kind: SubjectKind = PERSON, query_id: str | None = None,
    sender_key: bytes | None = None, proof: bytes | None = None,
) -> CaseReceipt:  # fmt: skip
    """File `sealed` as the coordinator forwards it, with `sender`'s token and the sender's
    proof the portal makes with its sealing key (the one its token binds) for this filing:
    `sender_key` and `proof` replace them, for the tests that forge one."""
    context = case_context(
        department=DepartmentId(DEPARTMENT), subject_kind=kind, subject_id=subject, nonce=nonce
    )
    request = cases_wire.node_file_case_to_proto(
        cases_wire.FileCaseRequest(
            subject_kind=kind, subject_id=subject, purpose="self_query",
            department=DepartmentId(DEPARTMENT), case_nonce=nonce, sealed_case=sealed,
            query_id=query_id or "cs-" + secrets.token_hex(8),
            sender_key=public_bytes(sender.sealing_key) if sender_key is None else sender_key,
            sender_proof=sender_proof(
                sealed=sealed, sender_key=sender.sealing_key, case_key=case_key, context=context
            ) if proof is None else proof,
        )
    )  # fmt: skip
    reply = stub.FileCase(request, timeout=TIMEOUT_S, metadata=_metadata(sender.token))
    return cases_wire.receipt_from_proto(reply)


def _file(
    stub: node_pb2_grpc.NodeServiceStub, sender: Portal, case_key: bytes, subject: SubjectId,
    draft: CaseDraft, *, kind: SubjectKind = PERSON, nonce: bytes | None = None,
    query_id: str | None = None,
) -> CaseReceipt:  # fmt: skip
    nonce = nonce or new_nonce()
    sealed = seal_case(
        draft, case_key=case_key, department=DepartmentId(DEPARTMENT), subject_kind=kind,
        subject_id=subject, nonce=nonce,
    )  # fmt: skip
    return _file_sealed(stub, sender, case_key, subject, sealed, nonce, kind=kind,
                        query_id=query_id)  # fmt: skip


def _objection(target_id: str, *attachments: AttachmentFile) -> CaseDraft:
    return CaseDraft(
        kind=CaseKind.OBJECTION, ground=CaseGround.RECORD, target=CaseTarget.RECORD,
        target_id=target_id, statement="这条记录有误 The arrears were paid on time",
        attachments=attachments,
    )  # fmt: skip


def _repair(subject: SubjectId, entry_id: str, *attachments: AttachmentFile) -> CaseDraft:
    return CaseDraft(
        kind=CaseKind.REPAIR, ground=CaseGround.FULFILLED, target=CaseTarget.LIST_ENTRY,
        target_id=entry_id, statement="补缴税款及滞纳金 All taxes and late fees are paid",
        attachments=attachments,
        commitment_letter=commitment_letter(
            subject_kind=ENTERPRISE, subject_id=subject,
            department=load_catalogue().department(DepartmentId(DEPARTMENT)),
            target=CaseTarget.LIST_ENTRY, target_id=entry_id,
        ),
    )  # fmt: skip


def _pdf(text: str = "Payment receipt") -> AttachmentFile:
    return AttachmentFile(name="receipt.pdf", media_type="application/pdf", content=tiny_pdf(text))


def _unsafe_encode(draft: CaseDraft) -> bytes:
    """encode_draft without the draft's checks: what a portal that checked nothing would send."""
    header = rfc8785.dumps({
        "version": DRAFT_VERSION, "kind": draft.kind.value, "ground": draft.ground.value,
        "target": draft.target.value, "target_id": draft.target_id,
        "statement": draft.statement, "commitment_letter": draft.commitment_letter,
        "attachments": [
            {"name": a.name, "media_type": a.media_type, "size": len(a.content),
             "sha256": hashlib.sha256(a.content).hexdigest()}
            for a in draft.attachments
        ],
    })  # fmt: skip
    return b"".join(
        [DRAFT_MAGIC, struct.pack(">I", len(header)), header]
        + [a.content for a in draft.attachments]
    )


def _unsafe_seal(draft: CaseDraft, case_key: bytes, subject: SubjectId, nonce: bytes) -> bytes:
    context = case_context(
        department=DepartmentId(DEPARTMENT), subject_kind=PERSON, subject_id=subject, nonce=nonce
    )
    return seal_file(plaintext=_unsafe_encode(draft), recipient_key=case_key, context=context)


# --- the department's side -----------------------------------------------------------------------


def _cases(officer: cases_pb2_grpc.CaseOfficeServiceStub) -> list[str]:
    ids: list[str] = []
    token = ""
    while True:
        page = cases_wire.case_page_from_proto(
            officer.ListCases(
                cases_wire.case_query_to_proto(CaseQuery(page_size=100, page_token=token)),
                timeout=TIMEOUT_S,
            )
        )
        ids += [c.case_id for c in page.cases]
        token = page.next_page_token
        if not token:
            return ids


def _decide(officer: cases_pb2_grpc.CaseOfficeServiceStub, decision: Decision) -> cases_pb2.Case:
    decided: cases_pb2.Case = officer.DecideCase(
        cases_wire.decision_to_proto(decision), timeout=TIMEOUT_S
    )
    return decided


def _deductions(
    stub: node_pb2_grpc.NodeServiceStub, node: TaxNode, keys: dict[str, RequesterKeys],
    kiosk: Portal, subject: SubjectId,
) -> int:  # fmt: skip
    """This department's deductions for `subject`, as a kiosk's self-query gets them."""
    sync = keys["kiosk-1"]
    response = stub.Contribute(
        node_pb2.ContributeRequest(
            query_id="cs-score-" + secrets.token_hex(8),
            subject_kind=common_pb2.SUBJECT_KIND_PERSON, subject_id=subject,
            shape=common_pb2.SHAPE_BREAKDOWN, purpose="self_query",
            public_key=common_pb2.PaillierPublicKey(
                n=sync.public.to_bytes(), modulus_proof=sync.modulus_proof
            ),
            slots=list(node.layout.names), slot_widths=list(node.layout.widths),
        ),
        timeout=TIMEOUT_S,
        metadata=_metadata(kiosk.token),
    )  # fmt: skip
    plain = sync.private.decrypt(sync.public.ciphertext_from_bytes(response.ciphertext.value))
    (values,) = node.layout.unpack(plain, subjects=1, contributors=1)
    return int(values[node.layout.names.index("deductions")])


def _refused(code: grpc.StatusCode, call: object) -> grpc.Call:
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    error = caught.value
    assert isinstance(error, grpc.Call)
    assert error.code() == code, error.details()
    return error


# --- objections about records --------------------------------------------------------------------


def test_an_objection_disputes_the_record_at_once_and_an_upheld_withdrawal_drops_it(
    tax_node: TaxNode, as_coordinator: node_pb2_grpc.NodeServiceStub, portal: Portal,
    kiosk: Portal, case_key: bytes, officer: cases_pb2_grpc.CaseOfficeServiceStub,
    requester_keys: dict[str, RequesterKeys], platform_certs: Path,
) -> None:  # fmt: skip
    def score() -> int:
        return _deductions(as_coordinator, tax_node, requester_keys, kiosk, WITHDRAWN_P)

    assert score() == 20 + 40
    pdf = _pdf("Court ruling 2026-17 quashing the violation")
    query_id = "cs-obj-" + secrets.token_hex(8)
    receipt = _file(as_coordinator, portal, case_key, WITHDRAWN_P,
                    _objection("W-violation", pdf), query_id=query_id)  # fmt: skip
    assert receipt.department == DEPARTMENT and not receipt.duplicate
    # disputed at once: the record stops counting before anyone decides
    assert score() == 20
    ca = platform_certs / "ca.pem"
    part = _subject_file(as_coordinator, portal, WITHDRAWN_P, PERSON, ca)
    states = {r.record_id: (r.status, r.state) for r in part.records}
    assert states["W-violation"] == ("disputed", "disputed")
    assert states["W-arrears"] == ("active", "counts")
    (line,) = part.cases
    assert (line.case_id, line.status, line.kind, line.target_id) == (
        receipt.case_id, "open", "objection", "W-violation",
    )  # fmt: skip
    assert line.attachments == 1 and [s.event for s in line.steps] == ["filed"]
    assert line.decide_by == receipt.decide_by.isoformat() and not line.overdue
    # the department's queue
    assert receipt.case_id in _cases(officer)
    case = cases_wire.case_from_proto(
        officer.GetCase(cases_pb2.GetCaseRequest(case_id=receipt.case_id), timeout=TIMEOUT_S)
    )
    assert case.subject_id == WITHDRAWN_P and case.statement.startswith("这条记录有误")
    attachment = officer.GetAttachment(
        cases_pb2.GetAttachmentRequest(case_id=receipt.case_id, index=0), timeout=TIMEOUT_S
    )
    assert attachment.content == pdf.content and attachment.info.media_type == "application/pdf"
    # upheld, withdrawn: the record is gone for good
    decided = cases_wire.case_from_proto(_decide(officer, Decision(
        case_id=receipt.case_id, outcome=CaseStatus.UPHELD, reason="the ruling quashed it",
        remedy=CaseRemedy.WITHDRAW,
    )))  # fmt: skip
    assert decided.status is CaseStatus.UPHELD and decided.decided_at is not None
    assert [e.event for e in decided.events] == ["filed", "upheld"]
    assert decided.events[-1].actor == DEPARTMENT
    assert score() == 20
    part = _subject_file(as_coordinator, portal, WITHDRAWN_P, PERSON, ca)
    assert [r.record_id for r in part.records] == ["W-arrears"]
    (line,) = part.cases
    assert line.status == "upheld" and line.remedy == "withdraw"
    assert line.decision_reason == "the ruling quashed it"
    assert [(s.event, s.actor) for s in line.steps] == [
        ("filed", "subject"),
        ("upheld", DEPARTMENT),
    ]
    # a decision is final
    error = _refused(grpc.StatusCode.FAILED_PRECONDITION, lambda: _decide(officer, Decision(
        case_id=receipt.case_id, outcome=CaseStatus.REJECTED, reason="changed my mind",
    )))  # fmt: skip
    assert "decided already" in (error.details() or "")
    # audited, without the statement or the subject's id
    (entry,) = [e for e in _audit(tax_node) if e["query_id"] == query_id]
    assert entry["decision"] == "allow" and entry["shape"] == "case"
    assert entry["requester"] == "portal-1"
    assert entry["extra"]["case_id"] == receipt.case_id  # type: ignore[index]
    decisions = [e for e in _audit(tax_node) if e["purpose"] == "case_decision"]
    assert any(e["decision"] == "allow" and e["requester"] == "operator:tax" for e in decisions)
    text = tax_node.audit_path.read_text()
    for secret in (WITHDRAWN_P, "这条记录有误", "Court ruling"):
        assert secret not in text


def test_an_upheld_correction_changes_the_contribution_and_is_checked_as_an_import(
    as_coordinator: node_pb2_grpc.NodeServiceStub, tax_node: TaxNode, portal: Portal,
    kiosk: Portal, case_key: bytes, officer: cases_pb2_grpc.CaseOfficeServiceStub,
    requester_keys: dict[str, RequesterKeys],
) -> None:  # fmt: skip
    def score() -> int:
        return _deductions(as_coordinator, tax_node, requester_keys, kiosk, CORRECTED_P)

    assert score() == 30
    receipt = _file(as_coordinator, portal, case_key, CORRECTED_P, _objection("C-arrears"))
    assert score() == 0
    # a correction the import would refuse is refused, and the case stays open
    error = _refused(grpc.StatusCode.INVALID_ARGUMENT, lambda: _decide(officer, Decision(
        case_id=receipt.case_id, outcome=CaseStatus.UPHELD, reason="dates",
        remedy=CaseRemedy.CORRECT,
        correction=CaseCorrection(event_start=TODAY + timedelta(days=5)),
    )))  # fmt: skip
    assert _field(error) == "correction.event_start" and "in the future" in (error.details() or "")
    _decide(officer, Decision(
        case_id=receipt.case_id, outcome=CaseStatus.UPHELD, reason="only one month was late",
        remedy=CaseRemedy.CORRECT, correction=CaseCorrection(quantity=1),
    ))  # fmt: skip
    assert score() == 10


def test_a_rejected_objection_makes_the_record_count_again(
    as_coordinator: node_pb2_grpc.NodeServiceStub, tax_node: TaxNode, portal: Portal,
    kiosk: Portal, case_key: bytes, officer: cases_pb2_grpc.CaseOfficeServiceStub,
    requester_keys: dict[str, RequesterKeys], platform_certs: Path,
) -> None:  # fmt: skip
    def score() -> int:
        return _deductions(as_coordinator, tax_node, requester_keys, kiosk, REJECTED_P)

    assert score() == 40
    receipt = _file(as_coordinator, portal, case_key, REJECTED_P, _objection("R-violation"))
    assert score() == 0
    _decide(officer, Decision(
        case_id=receipt.case_id, outcome=CaseStatus.REJECTED,
        reason="the violation was confirmed by the inspection report",
    ))  # fmt: skip
    assert score() == 40
    part = _subject_file(as_coordinator, portal, REJECTED_P, PERSON, platform_certs / "ca.pem")
    (line,) = part.cases
    assert line.status == "rejected" and "inspection report" in line.decision_reason
    assert {r.record_id: r.state for r in part.records} == {"R-violation": "counts"}


def _record_repair(subject: SubjectId, record_id: str) -> CaseDraft:
    return CaseDraft(
        kind=CaseKind.REPAIR, ground=CaseGround.FULFILLED, target=CaseTarget.RECORD,
        target_id=record_id, statement="罚款已缴清 The fine is paid in full",
        commitment_letter=commitment_letter(
            subject_kind=PERSON if subject not in FIRMS else ENTERPRISE, subject_id=subject,
            department=load_catalogue().department(DepartmentId(DEPARTMENT)),
            target=CaseTarget.RECORD, target_id=record_id,
        ),
    )  # fmt: skip


def test_a_repair_or_a_repeated_objection_does_not_switch_a_penalty_off(
    as_coordinator: node_pb2_grpc.NodeServiceStub, tax_node: TaxNode, portal: Portal,
    kiosk: Portal, case_key: bytes, officer: cases_pb2_grpc.CaseOfficeServiceStub,
    requester_keys: dict[str, RequesterKeys], platform_certs: Path,
) -> None:  # fmt: skip
    def score() -> int:
        return _deductions(as_coordinator, tax_node, requester_keys, kiosk, REPAIR_P)

    def reject(case_id: str) -> None:
        _decide(officer, Decision(case_id=case_id, outcome=CaseStatus.REJECTED,
                                  reason="the penalty stands"))  # fmt: skip

    assert score() == 40
    # a repair application: the penalty counts until the department approves it
    repair = _file(as_coordinator, portal, case_key, REPAIR_P,
                   _record_repair(REPAIR_P, "P-violation"))  # fmt: skip
    assert score() == 40
    part = _subject_file(as_coordinator, portal, REPAIR_P, PERSON, platform_certs / "ca.pem")
    assert {r.record_id: r.state for r in part.records} == {"P-violation": "counts"}
    reject(repair.case_id)
    # a first objection disputes the record until it is decided
    first = _file(as_coordinator, portal, case_key, REPAIR_P, _objection("P-violation"))
    assert score() == 0
    reject(first.case_id)
    assert score() == 40
    # the same objection again: filed and queued, but the record counts meanwhile
    again = _file(as_coordinator, portal, case_key, REPAIR_P, _objection("P-violation"))
    assert not again.duplicate and again.case_id in _cases(officer)
    assert score() == 40
    part = _subject_file(as_coordinator, portal, REPAIR_P, PERSON, platform_certs / "ca.pem")
    assert {r.record_id: r.state for r in part.records} == {"P-violation": "counts"}
    (line,) = [c for c in part.cases if c.case_id == again.case_id]
    assert line.status == "open" and "counts until the department decides" in line.steps[0].detail
    # the decided ones carry their reason once, not in their steps too
    (rejected,) = [c for c in part.cases if c.case_id == first.case_id]
    assert rejected.decision_reason == "the penalty stands"
    assert [s.detail for s in rejected.steps if s.event == "rejected"] == [""]


def test_a_refused_repair_names_neither_the_record_nor_its_category_or_state(
    as_coordinator: node_pb2_grpc.NodeServiceStub, tax_node: TaxNode, portal: Portal,
    case_key: bytes, officer: cases_pb2_grpc.CaseOfficeServiceStub,
) -> None:  # fmt: skip
    before = _cases(officer)
    messages = set()
    # a bonus record that counts, and one that expired: refused in the same words
    for record_id in ("B-a-level", "B-a-level-old"):
        error = _refused(grpc.StatusCode.FAILED_PRECONDITION, lambda r=record_id: _file(
            as_coordinator, portal, case_key, BONUS_FIRM, _record_repair(BONUS_FIRM, r),
            kind=ENTERPRISE,
        ))  # fmt: skip
        details = error.details() or ""
        assert _field(error) == "target_id"
        for secret in (record_id, "tax_credit", "expired", "a_level"):
            assert secret not in details, details
        messages.add(details)
    assert messages == {
        "target_id: this record cannot be the subject of a repair: only deduction records "
        "that count, and black-list entries in view, can be repaired"
    }
    _nothing_stored(officer, before)


# --- credit repair of a black-list entry ---------------------------------------------------------


def test_an_approved_repair_withdraws_the_entry_as_repaired_into_the_change_feed(
    tax_node: TaxNode, as_coordinator: node_pb2_grpc.NodeServiceStub, portal: Portal,
    case_key: bytes, officer: cases_pb2_grpc.CaseOfficeServiceStub,
    list_officers: dict[str, TlsFiles],
) -> None:  # fmt: skip
    draft = _repair(FIRM, "CE-firm", _pdf("Tax payment certificate"))
    receipt = _file(as_coordinator, portal, case_key, FIRM, draft, kind=ENTERPRISE)
    case = cases_wire.case_from_proto(
        officer.GetCase(cases_pb2.GetCaseRequest(case_id=receipt.case_id), timeout=TIMEOUT_S)
    )
    assert case.kind is CaseKind.REPAIR and case.commitment_letter == draft.commitment_letter
    assert case.letter_sha256 == hashlib.sha256(draft.commitment_letter.encode()).hexdigest()
    # a list entry is never changed in place
    error = _refused(grpc.StatusCode.INVALID_ARGUMENT, lambda: _decide(officer, Decision(
        case_id=receipt.case_id, outcome=CaseStatus.UPHELD, reason="x",
        remedy=CaseRemedy.CORRECT, correction=CaseCorrection(window_end=TODAY),
    )))  # fmt: skip
    assert _field(error) == "remedy" and "never changed in place" in (error.details() or "")
    _decide(officer, Decision(
        case_id=receipt.case_id, outcome=CaseStatus.UPHELD,
        reason="taxes and late fees paid; commitment letter on file", remedy=CaseRemedy.WITHDRAW,
    ))  # fmt: skip
    page = lists_wire.list_changes_page_from_proto(
        as_coordinator.ListChanges(
            lists_wire.changes_query_to_proto(
                ChangesQuery(department=DEPARTMENT, after="", page_size=100, requester="sync-1")
            ),
            timeout=TIMEOUT_S,
        )
    )
    withdrawn = [e for e in page.events if e.entry_id == "CE-firm" and e.event.value == "withdrawn"]
    (event,) = withdrawn
    assert event.withdraw_reason is not None and event.withdraw_reason.value == "repaired"
    with ListOfficer(tax_node.target, department=DEPARTMENT,
                     tls=list_officers[DEPARTMENT]) as lists:  # fmt: skip
        (entry,) = [e for e in lists.history(ENTERPRISE, FIRM) if e.entry.entry_id == "CE-firm"]
    assert entry.withdraw_reference == receipt.case_id


# --- bad input and abuse: refused, nothing stored, audited ---------------------------------------


def _nothing_stored(officer: cases_pb2_grpc.CaseOfficeServiceStub, before: list[str]) -> None:
    assert _cases(officer) == before


def _denied_in_audit(node: TaxNode, query_id: str) -> dict[str, object]:
    (entry,) = [e for e in _audit(node) if e["query_id"] == query_id]
    assert entry["decision"] == "deny" and entry["shape"] == "case"
    return entry


def test_another_subjects_record_or_entry_is_not_found_as_a_missing_one_is(
    tax_node: TaxNode, as_coordinator: node_pb2_grpc.NodeServiceStub, portal: Portal,
    case_key: bytes, officer: cases_pb2_grpc.CaseOfficeServiceStub,
) -> None:  # fmt: skip
    before = _cases(officer)
    messages = []
    for target in ("O-arrears", "no-such-record"):
        query_id = "cs-other-" + secrets.token_hex(8)
        error = _refused(grpc.StatusCode.NOT_FOUND, lambda t=target, q=query_id: _file(
            as_coordinator, portal, case_key, ABUSED_P, _objection(t), query_id=q,
        ))  # fmt: skip
        assert _field(error) == "target_id"
        # the coordinator reads the message on its way back: it does not quote the id
        assert target not in (error.details() or "")
        messages.append(error.details())
        entry = _denied_in_audit(tax_node, query_id)
        assert target not in json.dumps(entry)
    assert messages[0] == messages[1]
    assert messages[0] == "target_id: no record with this id about this subject at tax"
    # a repair for another enterprise's black-list entry
    query_id = "cs-entry-" + secrets.token_hex(8)
    error = _refused(grpc.StatusCode.NOT_FOUND, lambda: _file(
        as_coordinator, portal, case_key, OTHER_FIRM, _repair(OTHER_FIRM, "CE-firm"),
        kind=ENTERPRISE, query_id=query_id,
    ))  # fmt: skip
    assert error.details() == "target_id: no list entry with this id about this subject at tax"
    _denied_in_audit(tax_node, query_id)
    _nothing_stored(officer, before)


@pytest.mark.parametrize(
    ("attachment", "field", "says"),
    [
        # a PNG declared a PDF: the content decides
        (AttachmentFile(name="scan.pdf", media_type="application/pdf", content=tiny_png()),
         "attachments[0].media_type", "not the type its content is"),
        # a text file named .pdf
        (AttachmentFile(name="proof.pdf", media_type="application/pdf",
                        content=b"I paid, honestly.\n"),
         "attachments[0]", "not a PDF, JPEG or PNG file by its content"),
        # a name that is no name (control characters)
        (AttachmentFile(name="receipt\u202egdp.pdf", media_type="application/pdf",
                        content=tiny_pdf()),
         "attachments[0].name", "holds control characters"),
        # a JPEG declared a PNG
        (AttachmentFile(name="photo.png", media_type="image/png", content=tiny_jpeg()),
         "attachments[0].media_type", "not the type its content is"),
        # over the size limit
        (AttachmentFile(name="huge.pdf", media_type="application/pdf",
                        content=tiny_pdf() + b"%" * (MAX_ATTACHMENT_BYTES + 1)),
         "attachments[0].size", f"1 to {MAX_ATTACHMENT_BYTES} bytes"),
    ],
)  # fmt: skip
def test_a_mislabelled_or_oversized_attachment_is_refused_by_its_content(
    tax_node: TaxNode, as_coordinator: node_pb2_grpc.NodeServiceStub, portal: Portal,
    case_key: bytes, officer: cases_pb2_grpc.CaseOfficeServiceStub,
    attachment: AttachmentFile, field: str, says: str,
) -> None:  # fmt: skip
    before = _cases(officer)
    nonce = new_nonce()
    sealed = _unsafe_seal(_objection("X-arrears", attachment), case_key, ABUSED_P, nonce)
    query_id = "cs-att-" + secrets.token_hex(8)
    error = _refused(grpc.StatusCode.INVALID_ARGUMENT, lambda: _file_sealed(
        as_coordinator, portal, case_key, ABUSED_P, sealed, nonce, query_id=query_id,
    ))  # fmt: skip
    assert _field(error) == field and says in (error.details() or ""), error.details()
    # the message goes back through the coordinator: no file name in it (the portal, which
    # checked the file before sending, shows the subject the detailed one)
    assert attachment.name not in (error.details() or "")
    assert attachment.name.rsplit(".", 1)[0] not in (error.details() or "")
    entry = _denied_in_audit(tax_node, query_id)
    assert attachment.name not in json.dumps(entry)
    _nothing_stored(officer, before)


def test_a_flood_of_filings_is_limited_per_subject_per_day(
    tax_node: TaxNode, as_coordinator: node_pb2_grpc.NodeServiceStub, portal: Portal,
    case_key: bytes, officer: cases_pb2_grpc.CaseOfficeServiceStub,
) -> None:  # fmt: skip
    nonces = [new_nonce() for _ in range(PER_DAY)]
    for n, nonce in enumerate(nonces):
        _file(as_coordinator, portal, case_key, FLOOD_P, _objection(f"F-{n}"), nonce=nonce)
    before = _cases(officer)
    query_id = "cs-flood-" + secrets.token_hex(8)
    error = _refused(grpc.StatusCode.RESOURCE_EXHAUSTED, lambda: _file(
        as_coordinator, portal, case_key, FLOOD_P, _objection(f"F-{PER_DAY}"),
        query_id=query_id,
    ))  # fmt: skip
    assert _field(error) == "limits.filings_per_subject_per_day"
    assert f"at most {PER_DAY} a day" in (error.details() or "")
    _denied_in_audit(tax_node, query_id)
    _nothing_stored(officer, before)
    # a retry of a filing already made is answered, limit or not: the same case
    again = _file(as_coordinator, portal, case_key, FLOOD_P, _objection("F-0"),
                  nonce=nonces[0])  # fmt: skip
    assert again.duplicate and again.case_id in before
    # the same nonce with another content is a conflict
    error = _refused(grpc.StatusCode.FAILED_PRECONDITION, lambda: _file(
        as_coordinator, portal, case_key, FLOOD_P, _objection("F-1"), nonce=nonces[0],
    ))  # fmt: skip
    assert _field(error) == "case_nonce"
    _nothing_stored(officer, before)


def test_a_kiosk_or_a_seal_for_another_subject_files_nothing(
    tax_node: TaxNode, as_coordinator: node_pb2_grpc.NodeServiceStub, portal: Portal,
    kiosk: Portal, case_key: bytes, officer: cases_pb2_grpc.CaseOfficeServiceStub,
) -> None:  # fmt: skip
    before = _cases(officer)
    query_id = "cs-kiosk-" + secrets.token_hex(8)
    error = _refused(grpc.StatusCode.PERMISSION_DENIED, lambda: _file(
        as_coordinator, kiosk, case_key, ABUSED_P, _objection("X-arrears"),
        query_id=query_id,
    ))  # fmt: skip
    assert "online portal only" in (error.details() or "")
    assert _denied_in_audit(tax_node, query_id)["requester"] == "kiosk-1"
    # sealed for another subject, filed as this one: it does not open
    nonce = new_nonce()
    sealed = seal_case(
        _objection("O-arrears"), case_key=case_key, department=DepartmentId(DEPARTMENT),
        subject_kind=PERSON, subject_id=OTHER_P, nonce=nonce,
    )  # fmt: skip
    query_id = "cs-swap-" + secrets.token_hex(8)
    error = _refused(grpc.StatusCode.UNAUTHENTICATED, lambda: _file_sealed(
        as_coordinator, portal, case_key, ABUSED_P, sealed, nonce, query_id=query_id,
    ))  # fmt: skip
    assert _field(error) == "sealed_case"
    _denied_in_audit(tax_node, query_id)
    # and the node's own key only: a case sealed to another key does not open either
    other_key = public_bytes(X25519PrivateKey.generate())
    _refused(grpc.StatusCode.UNAUTHENTICATED, lambda: _file(
        as_coordinator, portal, other_key, ABUSED_P, _objection("X-arrears"),
    ))  # fmt: skip
    # a repair whose letter is not the department's text
    draft = _repair(FIRM, "CE-other")
    changed = CaseDraft(**{**draft.__dict__, "commitment_letter": "I promise nothing."})
    error = _refused(grpc.StatusCode.INVALID_ARGUMENT, lambda: _file(
        as_coordinator, portal, case_key, OTHER_FIRM, changed, kind=ENTERPRISE,
    ))  # fmt: skip
    assert _field(error) == "commitment_letter"
    _nothing_stored(officer, before)


def test_a_coordinator_with_the_portals_token_cannot_file_a_case_of_its_own(
    tax_node: TaxNode, as_coordinator: node_pb2_grpc.NodeServiceStub, portal: Portal,
    case_key: bytes, officer: cases_pb2_grpc.CaseOfficeServiceStub,
) -> None:  # fmt: skip
    """The coordinator sees the portal's token on every call and the case key is public: it
    can seal a case, but not prove that the portal sealed it."""
    before = _cases(officer)
    forger = X25519PrivateKey.generate()
    nonce = new_nonce()
    sealed = seal_case(
        _objection("G-arrears"), case_key=case_key, department=DepartmentId(DEPARTMENT),
        subject_kind=PERSON, subject_id=FORGED_P, nonce=nonce,
    )  # fmt: skip
    # its own key, with a proof that verifies for that key: not the key the token binds
    query_id = "cs-forge-key-" + secrets.token_hex(8)
    error = _refused(grpc.StatusCode.PERMISSION_DENIED, lambda: _file_sealed(
        as_coordinator, Portal(sealing_key=forger, token=portal.token), case_key, FORGED_P,
        sealed, nonce, query_id=query_id,
    ))  # fmt: skip
    assert _field(error) == "sender_key" and "token binds" in (error.details() or "")
    _denied_in_audit(tax_node, query_id)
    # the portal's public key, with a proof made with another private key
    query_id = "cs-forge-proof-" + secrets.token_hex(8)
    forged = sender_proof(
        sealed=sealed, sender_key=forger, case_key=case_key,
        context=case_context(department=DepartmentId(DEPARTMENT), subject_kind=PERSON,
                             subject_id=FORGED_P, nonce=nonce),
    )  # fmt: skip
    error = _refused(grpc.StatusCode.UNAUTHENTICATED, lambda: _file_sealed(
        as_coordinator, portal, case_key, FORGED_P, sealed, nonce, query_id=query_id,
        proof=forged,
    ))  # fmt: skip
    assert _field(error) == "sender_proof"
    _denied_in_audit(tax_node, query_id)
    # the portal's real proof of another filing (a replay onto a case of its own)
    other_nonce = new_nonce()
    other = seal_case(
        _objection("G-arrears"), case_key=case_key, department=DepartmentId(DEPARTMENT),
        subject_kind=PERSON, subject_id=FORGED_P, nonce=other_nonce,
    )  # fmt: skip
    replayed = sender_proof(
        sealed=other, sender_key=portal.sealing_key, case_key=case_key,
        context=case_context(department=DepartmentId(DEPARTMENT), subject_kind=PERSON,
                             subject_id=FORGED_P, nonce=other_nonce),
    )  # fmt: skip
    _refused(grpc.StatusCode.UNAUTHENTICATED, lambda: _file_sealed(
        as_coordinator, portal, case_key, FORGED_P, sealed, nonce, proof=replayed,
    ))  # fmt: skip
    # without them, or of the wrong size: refused naming the field
    for sender_key, proof, field in (
        (b"", None, "sender_key"),
        (b"\x01" * 31, None, "sender_key"),
        (None, b"", "sender_proof"),
        (None, b"\x00" * 31, "sender_proof"),
    ):
        query_id = "cs-forge-missing-" + secrets.token_hex(8)
        error = _refused(grpc.StatusCode.INVALID_ARGUMENT,
                         lambda k=sender_key, p=proof, q=query_id: _file_sealed(
            as_coordinator, portal, case_key, FORGED_P, sealed, nonce, query_id=q,
            sender_key=k, proof=p,
        ))  # fmt: skip
        assert _field(error) == field, error.details()
        _denied_in_audit(tax_node, query_id)
    _nothing_stored(officer, before)
    # the portal itself files it
    assert not _file_sealed(as_coordinator, portal, case_key, FORGED_P, sealed, nonce).duplicate


def test_only_the_coordinator_files_and_only_the_departments_officer_decides(
    tax_node: TaxNode, platform_certs: Path, list_officers: dict[str, TlsFiles],
    portal: Portal, case_key: bytes, officer: cases_pb2_grpc.CaseOfficeServiceStub,
) -> None:  # fmt: skip
    portal_tls = TlsFiles.from_cert_paths(
        cert_paths(platform_certs, role=PeerRole.REQUESTER, name="portal-1")
    )
    with secure_channel(tax_node.target, portal_tls,
                        server_name=node_server_name(DEPARTMENT)) as channel:  # fmt: skip
        stub = node_pb2_grpc.NodeServiceStub(channel)
        error = _refused(grpc.StatusCode.PERMISSION_DENIED, lambda: _file(
            stub, portal, case_key, ABUSED_P, _objection("X-arrears"),
        ))  # fmt: skip
        assert "only the platform coordinator" in (error.details() or "")
    open_case = next(iter(_cases(officer)))
    channel, court = _office_stub(tax_node, list_officers["court"])
    with channel:
        for call in (
            lambda: court.ListCases(cases_pb2.ListCasesRequest(), timeout=TIMEOUT_S),
            lambda: court.GetCase(cases_pb2.GetCaseRequest(case_id=open_case), timeout=TIMEOUT_S),
            lambda: _decide(court, Decision(
                case_id=open_case, outcome=CaseStatus.REJECTED, reason="not yours",
            )),
        ):  # fmt: skip
            error = _refused(grpc.StatusCode.PERMISSION_DENIED, call)
            assert "serves its case officer only" in (error.details() or "")
    refused = [
        e for e in _audit(tax_node)
        if e["requester"] == "operator:court" and str(e["purpose"]).startswith("case_")
    ]  # fmt: skip
    assert len(refused) == 3 and all(e["decision"] == "deny" for e in refused)


def test_a_case_settings_file_with_a_mistake_stops_the_node_naming_the_key(
    tax_node: TaxNode, tmp_path: Path
) -> None:
    bad = tmp_path / "cases.toml"
    bad.write_text("[limits]\nopen_cases_per_subject = 0\n")
    config = dataclasses.replace(tax_node.config, case_settings=bad, state_dir=tmp_path / "state")
    with pytest.raises(ConfigError, match=r"limits\.open_cases_per_subject must be a whole number"):
        build_service(config, catalogue=restricted_catalogue(DEPARTMENTS))
    # refused before anything was created in the state directory
    assert not (tmp_path / "state").exists()

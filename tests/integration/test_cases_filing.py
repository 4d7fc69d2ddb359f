"""Objections and credit repair through the real federation: the portal files a case through the
coordinator (CoordinatorService.FileCase, SDK sdk.cases.file_case), the department's node takes
it, its officer reads and decides it (sdk.caseoffice.CaseOffice, `osmanthus disputes`), and the
subject's file shows every step while the score follows the decision.

Played here: an objection filed with an attachment goes sealed past the coordinator (whose audit
log keeps no word of it, no resident id and no record id), is filed once whatever the retries,
makes its record disputed at once, is seen in the department's queue, and upheld (the record
stops counting for good) or rejected (it counts again); the subject's file shows the case's steps.
Refused, each with the field named and audited at the coordinator: a kiosk, a requester that is
no portal device (the central policy's deny), another purpose, an unknown department, a
department that keeps nothing about the subject's kind, a malformed envelope (nonce, sealed
size); refused at the node and passed back as the node said it: another subject's record, a
second open case on the same record; refused filings count against the permit's rate limit.
A case the coordinator forges with the portal's token and the public case key (the proof made
with a key that is not the portal's sealing key) is refused by the node, and nothing is stored.
Another department's officer reads nothing. The CLI lists
the queue, shows a case, saves an attachment (never over a file without --force) and decides.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

import sdk
from certs import PeerRole, cert_paths, issue_certificate
from coordinator.cases import AUDIT_SHAPE, MAX_SEALED_CASE_BYTES
from coordinator.server import DEFAULT_CENTRAL_POLICY
from osmanthus import cli
from osmanthus.core.cases import (
    MEDIA_PDF,
    AttachmentFile,
    CaseDraft,
    CaseGround,
    CaseKind,
    CaseQuery,
    CaseRemedy,
    CaseStatus,
    CaseTarget,
    Decision,
    case_context,
    seal_case,
    sender_proof,
)
from osmanthus.core.subjectfile import RecordLine, SubjectFile
from osmanthus.core.subjectseal import public_bytes, seal_fingerprint
from osmanthus.core.tls import TlsFiles, node_server_name, secure_channel
from osmanthus.core.types import DepartmentId, Role, Shape, SubjectKind
from osmanthus.core.wire.cases import (
    FileCaseRequest,
    file_case_request_to_proto,
    node_file_case_to_proto,
)
from osmanthus.demo.seed import DEMO_CITIZEN, SeedReport
from osmanthus.v1 import node_pb2_grpc
from sdk import CaseOffice, Client
from sdk.cases import case_key_bytes, file_case
from tests.conftest import IssuerKeyPaths
from tests.integration.conftest import (
    Federation,
    restricted_catalogue,
    start_federation,
    stop_federation,
)

PORTAL = "portal-1"
KIOSK = "kiosk-1"
SELF = "self_query"
CITIZEN = DEMO_CITIZEN.subject_id
HOUSING = DepartmentId("housing")
TRANSPORT = DepartmentId("transport")
HRSS = DepartmentId("hrss")
#: the demo citizen's departments (her deductions at housing and transport), and customs, which
#: keeps nothing about persons
DEPARTMENTS = ("hrss", "civility", "blood", "volunteer", "housing", "transport", "customs")
#: the smallest file the content check takes as a PDF
PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"


@pytest.fixture(scope="module")
def fed(
    tmp_path_factory: pytest.TempPathFactory,
    seeded: SeedReport,
    platform_certs: Path,
    issuer_keys: IssuerKeyPaths,
    requester_keys: dict[str, sdk.RequesterKeys],
) -> Iterator[Federation]:
    """A federation of its own: the cases decided here change the demo citizen's score. Its
    certificates are the platform's, with nodes for housing and transport added (in a copy:
    the session's directory stays as it is)."""
    base = tmp_path_factory.mktemp("cases")
    certs = base / "certs"
    shutil.copytree(platform_certs, certs)
    for dept in (HOUSING, TRANSPORT):
        issue_certificate(certs, role=PeerRole.NODE, name=dept)
    federation = start_federation(
        base,
        catalogue=restricted_catalogue(DEPARTMENTS),
        data=seeded,
        certs=certs,
        issuer_keys=issuer_keys,
        keys=requester_keys,
        departments=DEPARTMENTS,
        deadline_s=10.0,
    )
    yield federation
    stop_federation(federation)


@pytest.fixture(scope="module")
def sealing_key() -> X25519PrivateKey:
    return X25519PrivateKey.generate()


@pytest.fixture(scope="module")
def portal(fed: Federation, sealing_key: X25519PrivateKey) -> Iterator[Client]:
    client = fed.client(
        PORTAL,
        role=Role.PORTAL,
        purposes=[SELF],
        seal_fingerprint=seal_fingerprint(public_bytes(sealing_key)),
    )
    yield client
    client.close()


@pytest.fixture(scope="module")
def officers(tmp_path_factory: pytest.TempPathFactory, platform_certs: Path) -> dict[str, TlsFiles]:
    """Operator certificates of the housing, transport and hrss departments' case officers."""
    out = tmp_path_factory.mktemp("case-officers")
    return {
        dept: TlsFiles.from_cert_paths(
            issue_certificate(platform_certs, role=PeerRole.OPERATOR, name=dept, out_dir=out / dept)
        )
        for dept in (HOUSING, TRANSPORT, HRSS)
    }


def _node(fed: Federation, department: str) -> str:
    return f"127.0.0.1:{fed.nodes[department].port}"


def _office(fed: Federation, officers: dict[str, TlsFiles], department: DepartmentId) -> CaseOffice:
    return CaseOffice(_node(fed, department), tls=officers[department], department=department)


def _part(portal: Client, sealing_key: X25519PrivateKey, department: str) -> SubjectFile:
    result = portal.subject_file(
        subject_kind=SubjectKind.PERSON, subject_id=CITIZEN, sealing_key=sealing_key
    )
    return next(p for p in result.departments if p.source == department)


def _deduction(part: SubjectFile) -> RecordLine:
    return next(r for r in part.records if r.category == "deduction" and r.state == "counts")


def _objection(record_id: str, statement: str, *, pdf: bool = False) -> CaseDraft:
    return CaseDraft(
        kind=CaseKind.OBJECTION,
        ground=CaseGround.RECORD,
        target=CaseTarget.RECORD,
        target_id=record_id,
        statement=statement,
        attachments=(
            (AttachmentFile(name="收据 receipt.pdf", media_type=MEDIA_PDF, content=PDF),)
            if pdf
            else ()
        ),
    )


def _score(portal: Client) -> int:
    return portal.person_score(CITIZEN, purpose=SELF, shape=Shape.BREAKDOWN).score


def _audit(fed: Federation) -> list[dict[str, object]]:
    path = fed.state_dir / "coordinator" / "audit.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _case_entries(fed: Federation) -> list[dict[str, object]]:
    return [e for e in _audit(fed) if e["shape"] == AUDIT_SHAPE]


# --- filed, queued, decided, seen ---------------------------------------------------------------


def test_an_upheld_objection_withdraws_the_record_and_the_subject_sees_every_step(
    fed: Federation,
    portal: Client,
    sealing_key: X25519PrivateKey,
    officers: dict[str, TlsFiles],
) -> None:
    before = _score(portal)
    part = _part(portal, sealing_key, HOUSING)
    assert part.case_key
    record = _deduction(part)
    statement = "该处罚已于复议中撤销 The penalty was annulled on review"
    nonce = secrets.token_bytes(32)
    receipt = file_case(
        portal,
        subject_kind=SubjectKind.PERSON,
        subject_id=CITIZEN,
        department=HOUSING,
        draft=_objection(record.record_id, statement, pdf=True),
        case_key=case_key_bytes(part.case_key),
        sender_key=sealing_key,
        nonce=nonce,
    )
    assert receipt.department == HOUSING and not receipt.duplicate
    assert receipt.filed_at.date() <= receipt.decide_by <= receipt.reply_by
    # the same filing again (a retry after a timeout): the same case, never a second one
    again = file_case(
        portal,
        subject_kind=SubjectKind.PERSON,
        subject_id=CITIZEN,
        department=HOUSING,
        draft=_objection(record.record_id, statement, pdf=True),
        case_key=case_key_bytes(part.case_key),
        sender_key=sealing_key,
        nonce=nonce,
    )
    assert again.duplicate and again.case_id == receipt.case_id
    # disputed at once: the deduction stops counting while the case is open
    disputed = _score(portal)
    assert disputed > before
    with _office(fed, officers, HOUSING) as office:
        queue = office.list_cases(CaseQuery(status=CaseStatus.OPEN))
        listed = [c for c in queue.cases if c.case_id == receipt.case_id]
        assert len(listed) == 1 and listed[0].subject_id == CITIZEN
        case = office.get_case(receipt.case_id)
        assert case.statement == statement and case.target_id == record.record_id
        assert [a.name for a in case.attachments] == ["收据 receipt.pdf"]
        info, content = office.attachment(receipt.case_id, 0)
        assert content == PDF and info.media_type == MEDIA_PDF
        decided = office.decide(
            Decision(
                case_id=receipt.case_id,
                outcome=CaseStatus.UPHELD,
                remedy=CaseRemedy.WITHDRAW,
                reason="复议撤销 Annulled on review",
            )
        )
        assert decided.status is CaseStatus.UPHELD and decided.remedy is CaseRemedy.WITHDRAW
        # a case is decided once
        with pytest.raises(sdk.FailedPrecondition):
            office.decide(
                Decision(
                    case_id=receipt.case_id,
                    outcome=CaseStatus.REJECTED,
                    reason="second thoughts",
                )
            )
    # withdrawn for good: the score keeps the deduction out
    assert _score(portal) == disputed
    seen = _part(portal, sealing_key, HOUSING)
    line = next(c for c in seen.cases if c.case_id == receipt.case_id)
    assert line.status == "upheld" and line.decision_reason == "复议撤销 Annulled on review"
    assert [s.event for s in line.steps][:2] == ["filed", "upheld"]
    assert all(r.record_id != record.record_id or r.state != "counts" for r in seen.records)
    # the coordinator's audit: one allow per filing, the subject by hash, no word of the case
    entries = [e for e in _case_entries(fed) if e["decision"] == "allow"]
    assert len(entries) >= 2 and all(e["requester"] == PORTAL for e in entries)
    assert {e["extra"]["case_id"] for e in entries} == {receipt.case_id}  # type: ignore[index]
    text = (fed.state_dir / "coordinator" / "audit.jsonl").read_text(encoding="utf-8")
    assert CITIZEN not in text and "annulled" not in text and record.record_id not in text


def test_a_rejected_objection_makes_the_record_count_again(
    fed: Federation,
    portal: Client,
    sealing_key: X25519PrivateKey,
    officers: dict[str, TlsFiles],
) -> None:
    before = _score(portal)
    part = _part(portal, sealing_key, TRANSPORT)
    record = _deduction(part)
    receipt = file_case(
        portal,
        subject_kind=SubjectKind.PERSON,
        subject_id=CITIZEN,
        department=TRANSPORT,
        draft=_objection(record.record_id, "I paid the fare"),
        case_key=case_key_bytes(part.case_key),
        sender_key=sealing_key,
    )
    assert _score(portal) > before
    # a second case on the same record while the first is open: the node's refusal, as it said
    with pytest.raises(sdk.FailedPrecondition):
        file_case(
            portal,
            subject_kind=SubjectKind.PERSON,
            subject_id=CITIZEN,
            department=TRANSPORT,
            draft=_objection(record.record_id, "and again"),
            case_key=case_key_bytes(part.case_key),
            sender_key=sealing_key,
        )
    with _office(fed, officers, TRANSPORT) as office:
        office.decide(
            Decision(
                case_id=receipt.case_id,
                outcome=CaseStatus.REJECTED,
                reason="检票记录无误 The ticket check record stands",
            )
        )
    assert _score(portal) == before
    line = next(
        c for c in _part(portal, sealing_key, TRANSPORT).cases if c.case_id == receipt.case_id
    )
    assert line.status == "rejected" and [s.event for s in line.steps][:2] == ["filed", "rejected"]


# --- refused at the coordinator -----------------------------------------------------------------


def _raw_file_case(client: Client, request: FileCaseRequest) -> object:
    """FileCase as a portal could send it, past the SDK's own checks."""
    return client.call_coordinator("FileCase", file_case_request_to_proto(request))


def _request(**changes: object) -> FileCaseRequest:
    fields: dict[str, object] = {
        "subject_kind": SubjectKind.PERSON,
        "subject_id": CITIZEN,
        "purpose": SELF,
        "department": HOUSING,
        "case_nonce": secrets.token_bytes(32),
        "sealed_case": secrets.token_bytes(2048),
        "sender_key": secrets.token_bytes(32),
        "sender_proof": secrets.token_bytes(32),
    }
    fields.update(changes)
    return FileCaseRequest(**fields)  # type: ignore[arg-type]


def test_a_kiosk_files_no_case_and_the_policy_deny_is_audited(
    fed: Federation, sealing_key: X25519PrivateKey
) -> None:
    fp = seal_fingerprint(public_bytes(sealing_key))
    with (
        fed.client(KIOSK, role=Role.KIOSK, purposes=[SELF], seal_fingerprint=fp) as kiosk,
        pytest.raises(sdk.PermissionDenied, match="central policy: ") as caught,
    ):
        _raw_file_case(kiosk, _request())
    assert 'Action::"FileCase"' in caught.value.message
    entry = _case_entries(fed)[-1]
    assert entry["requester"] == KIOSK and entry["decision"] == "deny"
    assert str(entry["reason"]).startswith("central policy: ") and entry["policy_hash"]
    assert entry["subject_hash"] and CITIZEN not in json.dumps(entry)


def test_a_requester_that_is_no_portal_device_is_denied_by_the_central_policy(
    fed: Federation,
) -> None:
    with (
        fed.client("agency-1", role=Role.CREDIT_AGENCY, purposes=[SELF]) as agency,
        pytest.raises(sdk.PermissionDenied, match="central policy: "),
    ):
        _raw_file_case(agency, _request())
    entry = _case_entries(fed)[-1]
    assert entry["requester"] == "agency-1" and entry["decision"] == "deny"


def test_another_purpose_is_refused(fed: Federation, portal: Client) -> None:
    with pytest.raises(sdk.PermissionDenied, match="not among the token's purposes"):
        _raw_file_case(portal, _request(purpose="loan_underwriting"))
    entry = _case_entries(fed)[-1]
    assert entry["purpose"] == "loan_underwriting" and entry["decision"] == "deny"


@pytest.mark.parametrize(
    ("department", "words"),
    [("nosuch", "is not in the catalogue"), ("customs", "keeps no records about persons")],
)
def test_a_department_that_cannot_have_the_case_is_not_found(
    fed: Federation, portal: Client, department: str, words: str
) -> None:
    with pytest.raises(sdk.NotFound, match=words) as caught:
        _raw_file_case(portal, _request(department=department))
    assert caught.value.field == "department"
    assert _case_entries(fed)[-1]["decision"] == "deny"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"case_nonce": b"short"}, "case_nonce"),
        ({"sealed_case": b"x"}, "sealed_case"),
        ({"sealed_case": bytes(MAX_SEALED_CASE_BYTES + 1)}, "sealed_case"),
        ({"subject_id": "110105194912310021"}, "resident_id"),
        ({"sender_key": b""}, "sender_key"),
        ({"sender_key": bytes(33)}, "sender_key"),
        ({"sender_proof": b""}, "sender_proof"),
        ({"sender_proof": bytes(31)}, "sender_proof"),
    ],
)
def test_a_malformed_envelope_is_refused_naming_the_field(
    portal: Client, changes: dict[str, object], field: str
) -> None:
    with pytest.raises(sdk.InvalidArgument) as caught:
        _raw_file_case(portal, _request(**changes))
    assert caught.value.field == field


def test_the_sdk_wants_the_portals_sealing_key(portal: Client) -> None:
    with pytest.raises(sdk.InvalidArgument) as caught:
        file_case(
            portal,
            subject_kind=SubjectKind.PERSON,
            subject_id=CITIZEN,
            department=HOUSING,
            draft=_objection("rec-any-0001", "no key"),
            case_key=bytes(32),
            sender_key=bytes(32),  # type: ignore[arg-type]
        )
    assert caught.value.field == "sender_key"


# --- refused at the node, passed back as it said -----------------------------------------------


def _someone_elses_record(
    fed: Federation, portal: Client, sealing_key: X25519PrivateKey
) -> tuple[str, str]:
    """A department and the id of one of its records about another person of the seed (read
    through that person's file, as the portal could)."""
    with fed.data.subjects_file.open(encoding="utf-8") as handle:
        persons = [row["subject_id"] for row in csv.DictReader(handle)
                   if row["subject_kind"] == "person" and row["subject_id"] != CITIZEN]  # fmt: skip
    for person in persons[:50]:
        result = portal.subject_file(
            subject_kind=SubjectKind.PERSON, subject_id=person, sealing_key=sealing_key
        )
        for part in result.departments:
            if part.records:
                return part.source, part.records[0].record_id
    raise AssertionError("no other person of the seed has a record")


def test_another_subjects_record_is_not_found_as_the_node_says(
    fed: Federation, portal: Client, sealing_key: X25519PrivateKey
) -> None:
    department, theirs = _someone_elses_record(fed, portal, sealing_key)
    part = _part(portal, sealing_key, department)
    refusals = []
    for record_id in (theirs, "rec-none-0001"):
        with pytest.raises(sdk.NotFound) as caught:
            file_case(
                portal,
                subject_kind=SubjectKind.PERSON,
                subject_id=CITIZEN,
                department=department,
                draft=_objection(record_id, "not mine"),
                case_key=case_key_bytes(part.case_key),
                sender_key=sealing_key,
            )
        refusals.append(caught.value.message.replace(record_id, "ID"))
        entry = _case_entries(fed)[-1]
        assert entry["decision"] == "deny"
        # the coordinator keeps the kind of refusal, not the node's words (they name the record)
        assert str(entry["reason"]).startswith("refused by the department's node: NotFound")
        assert record_id not in json.dumps(entry)
    # the same answer whether the record is someone else's or none at all
    assert refusals[0] == refusals[1]


def test_a_case_sealed_to_another_departments_key_does_not_open(
    portal: Client, sealing_key: X25519PrivateKey
) -> None:
    housing = _part(portal, sealing_key, HOUSING)
    transport = _part(portal, sealing_key, TRANSPORT)
    with pytest.raises(sdk.Unauthenticated):
        file_case(
            portal,
            subject_kind=SubjectKind.PERSON,
            subject_id=CITIZEN,
            department=TRANSPORT,
            draft=_objection("rec-any-0001", "sealed for housing"),
            case_key=case_key_bytes(housing.case_key),
            sender_key=sealing_key,
        )
    assert transport.case_key != housing.case_key


# --- a case the coordinator makes itself: it holds the portal's token and the public case key ---


def _forged(
    part: SubjectFile, *, sender: X25519PrivateKey, claimed: bytes, nonce: bytes
) -> FileCaseRequest:
    """An objection to the citizen's own transport record, sealed to transport's real case key
    for her under `nonce` (so it opens and names a record of hers), with the proof made with
    `sender`'s key and `claimed` as the portal's sealing key."""
    # a record that counts and has no open case (a rejected objection above leaves it so): but
    # for the proof, the node would file this case
    record = _deduction(part)
    draft = _objection(record.record_id, "forged by the coordinator")
    key = case_key_bytes(part.case_key)
    sealed = seal_case(
        draft,
        case_key=key,
        department=TRANSPORT,
        subject_kind=SubjectKind.PERSON,
        subject_id=CITIZEN,
        nonce=nonce,
    )
    context = case_context(
        department=TRANSPORT, subject_kind=SubjectKind.PERSON, subject_id=CITIZEN, nonce=nonce
    )
    return FileCaseRequest(
        subject_kind=SubjectKind.PERSON,
        subject_id=CITIZEN,
        purpose=SELF,
        department=TRANSPORT,
        case_nonce=nonce,
        sealed_case=sealed,
        sender_key=claimed,
        sender_proof=sender_proof(sealed=sealed, sender_key=sender, case_key=key, context=context),
        query_id="case-forged-" + secrets.token_hex(8),
    )


def _cases_of_transport(fed: Federation, officers: dict[str, TlsFiles]) -> list[str]:
    with _office(fed, officers, TRANSPORT) as office:
        return [c.case_id for c in office.list_cases(CaseQuery(status=None)).cases]


@pytest.mark.parametrize(
    ("claim", "code", "refusal"),
    [
        # the portal's key claimed: the proof, made with another key, does not verify
        ("portal-key", grpc.StatusCode.UNAUTHENTICATED, sdk.Unauthenticated),
        # its own key claimed (the proof verifies): not the key the token binds (seal_fp)
        ("own-key", grpc.StatusCode.PERMISSION_DENIED, sdk.PermissionDenied),
    ],
    ids=["the-portals-key-claimed", "its-own-key-claimed"],
)
def test_a_case_the_coordinator_forges_with_the_portals_token_is_refused_by_the_node(
    fed: Federation,
    portal: Client,
    sealing_key: X25519PrivateKey,
    officers: dict[str, TlsFiles],
    claim: str,
    code: grpc.StatusCode,
    refusal: type[sdk.OsmanthusError],
) -> None:
    """The coordinator sees the portal's token on every call and the case key is public: it
    seals a case of its own and calls the node as it forwards a filing. Without the portal's
    sealing key it can make no proof the node takes, whichever sealing key it claims."""
    part = _part(portal, sealing_key, TRANSPORT)
    before = _cases_of_transport(fed, officers)
    disputed = [r.record_id for r in part.records if r.status == "disputed"]
    token = fed.token(
        PORTAL,
        role=Role.PORTAL,
        purposes=[SELF],
        seal_fingerprint=seal_fingerprint(public_bytes(sealing_key)),
    )
    forger = X25519PrivateKey.generate()
    claimed = public_bytes(sealing_key) if claim == "portal-key" else public_bytes(forger)
    nonce = secrets.token_bytes(32)
    request = _forged(part, sender=forger, claimed=claimed, nonce=nonce)
    tls = TlsFiles.from_cert_paths(
        cert_paths(fed.certs, role=PeerRole.COORDINATOR, name="coordinator")
    )
    with secure_channel(
        _node(fed, TRANSPORT), tls, server_name=node_server_name(TRANSPORT)
    ) as channel, pytest.raises(grpc.RpcError) as caught:  # fmt: skip
        node_pb2_grpc.NodeServiceStub(channel).FileCase(
            node_file_case_to_proto(request),
            timeout=10.0,
            metadata=(("authorization", f"Bearer {token}"),),
        )
    error = caught.value
    assert isinstance(error, grpc.Call)
    assert error.code() == code, error.details()
    # through the coordinator's own service the same: forwarded unchanged, refused by the node
    with pytest.raises(refusal):
        _raw_file_case(portal, dataclasses.replace(request, query_id=""))
    entry = _case_entries(fed)[-1]
    assert entry["decision"] == "deny"
    assert str(entry["reason"]).startswith(f"refused by the department's node: {refusal.__name__}")
    # nothing stored: no case, no record disputed
    assert _cases_of_transport(fed, officers) == before
    after = _part(portal, sealing_key, TRANSPORT)
    assert [r.record_id for r in after.records if r.status == "disputed"] == disputed
    assert {c.case_id for c in after.cases} <= set(before)


def test_another_departments_officer_reads_nothing(
    fed: Federation, officers: dict[str, TlsFiles]
) -> None:
    with (
        CaseOffice(_node(fed, HOUSING), tls=officers[TRANSPORT], department=HOUSING) as stranger,
        pytest.raises(sdk.PermissionDenied),
    ):
        stranger.list_cases()


# --- the CLI ----------------------------------------------------------------------------------


def test_the_cli_lists_shows_saves_an_attachment_and_decides(
    fed: Federation,
    portal: Client,
    sealing_key: X25519PrivateKey,
    officers: dict[str, TlsFiles],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # her vocational certificate: an objection may contest any record of hers
    part = _part(portal, sealing_key, HRSS)
    record = part.records[0]
    receipt = file_case(
        portal,
        subject_kind=SubjectKind.PERSON,
        subject_id=CITIZEN,
        department=HRSS,
        draft=_objection(record.record_id, "CLI case", pdf=True),
        case_key=case_key_bytes(part.case_key),
        sender_key=sealing_key,
    )
    tls = officers[HRSS]
    connection = [
        "--node", _node(fed, HRSS), "--department", HRSS,
        "--ca", str(tls.ca), "--cert", str(tls.cert), "--key", str(tls.key),
    ]  # fmt: skip

    def disputes(*arguments: str) -> int:
        return cli.main(["disputes", *arguments, *connection])

    assert disputes("list") == 0
    out = capsys.readouterr().out
    assert receipt.case_id in out and "CASE" in out and "DECIDE BY" in out
    assert disputes("list", "--status", "all", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert receipt.case_id in {c["case_id"] for c in listed["cases"]}
    assert disputes("list", "--status", "upheld", "--overdue") == 3
    assert "--overdue goes with --status open or all" in capsys.readouterr().err
    assert disputes("show", receipt.case_id) == 0
    out = capsys.readouterr().out
    assert "CLI case" in out and "[0] 收据 receipt.pdf  application/pdf" in out
    assert disputes("show", receipt.case_id, "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["statement"] == "CLI case" and shown["events"][0]["event"] == "filed"
    assert disputes("show", "case-" + "A" * 22) == 3
    capsys.readouterr()
    target = tmp_path / "proof.pdf"
    target.write_bytes(b"keep me")
    assert disputes("attachment", receipt.case_id, "0", "-o", str(target)) == 3
    assert "add --force" in capsys.readouterr().err
    assert target.read_bytes() == b"keep me"
    assert disputes("attachment", receipt.case_id, "0", "-o", str(target), "--force") == 0
    assert target.read_bytes() == PDF and target.stat().st_mode & 0o777 == 0o600
    assert "(checked)" in capsys.readouterr().out
    fresh = tmp_path / "fresh.pdf"
    assert disputes("attachment", receipt.case_id, "0", "-o", str(fresh)) == 0
    assert fresh.read_bytes() == PDF
    capsys.readouterr()
    # a remedy is required, before anything is sent
    assert disputes("decide", receipt.case_id, "--uphold", "--reason", "x") == 3
    assert "needs a remedy" in capsys.readouterr().err
    assert (
        disputes("decide", receipt.case_id, "--reject", "--reason", "记录无误 stands", "--json")
        == 0
    )
    decided = json.loads(capsys.readouterr().out)
    assert decided["status"] == "rejected" and decided["decision_reason"] == "记录无误 stands"
    # decided once: exit 4
    assert disputes("decide", receipt.case_id, "--reject", "--reason", "again") == 4
    capsys.readouterr()
    # another department's officer: exit 4
    other = officers[TRANSPORT]
    stranger = [*connection[:4], "--ca", str(other.ca), "--cert", str(other.cert),
                "--key", str(other.key)]  # fmt: skip
    assert cli.main(["disputes", "list", *stranger]) == 4


# --- the rate limit ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def strict(
    fed: Federation,
    tmp_path_factory: pytest.TempPathFactory,
    issuer_keys: IssuerKeyPaths,
    requester_keys: dict[str, sdk.RequesterKeys],
) -> Iterator[Federation]:
    """Housing alone, under a central policy whose FileCase permit allows 2 filings a minute."""
    base = tmp_path_factory.mktemp("cases-strict")
    text = DEFAULT_CENTRAL_POLICY.read_text(encoding="utf-8")
    permit = '@id("central-portal-file-case")\n@rate_limit("600/minute")'
    assert permit in text
    policy = base / "central.cedar"
    policy.write_text(
        text.replace(permit, permit.replace("600/minute", "2/minute")), encoding="utf-8"
    )
    federation = start_federation(
        base,
        catalogue=restricted_catalogue((HOUSING,)),
        data=fed.data,
        certs=fed.certs,
        issuer_keys=issuer_keys,
        keys=requester_keys,
        departments=(HOUSING,),
        central_policy=policy,
    )
    yield federation
    stop_federation(federation)


def test_refused_filings_count_against_the_rate_limit(
    strict: Federation, sealing_key: X25519PrivateKey
) -> None:
    fp = seal_fingerprint(public_bytes(sealing_key))
    with strict.client(PORTAL, role=Role.PORTAL, purposes=[SELF], seal_fingerprint=fp) as portal:
        key = case_key_bytes(_part(portal, sealing_key, HOUSING).case_key)
        # a flood is made of refused filings: each had the node open a sealed case
        for _ in range(2):
            with pytest.raises(sdk.NotFound):
                file_case(
                    portal,
                    subject_kind=SubjectKind.PERSON,
                    subject_id=CITIZEN,
                    department=HOUSING,
                    draft=_objection("rec-none-0002", "probing"),
                    case_key=key,
                    sender_key=sealing_key,
                )
        with pytest.raises(sdk.RateLimited, match="2/minute") as caught:
            file_case(
                portal,
                subject_kind=SubjectKind.PERSON,
                subject_id=CITIZEN,
                department=HOUSING,
                draft=_objection("rec-none-0002", "probing"),
                case_key=key,
                sender_key=sealing_key,
            )
    assert caught.value.retryable
    entry = _case_entries(strict)[-1]
    assert entry["decision"] == "deny" and "2/minute" in str(entry["reason"])

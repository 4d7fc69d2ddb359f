"""A stand-in for the federation behind the portal's web app, for tests of the app's own logic
(sessions, CSRF, cookies, the card reader, sign-in). It answers like SubjectBackend does and
records who was asked about, so a test can prove the app never asks about anyone else.
tests/integration/test_portal_app.py runs the same app against a real federation.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from httpx import Response as TestClientResponse
from starlette.applications import Starlette
from starlette.testclient import TestClient

from osmanthus.core.cases import (
    AttachmentInfo,
    Case,
    CaseDraft,
    CaseEvent,
    CaseGround,
    CaseKind,
    CasePage,
    CaseQuery,
    CaseReceipt,
    CaseStatus,
    CaseTarget,
    Decision,
    commitment_letter,
)
from osmanthus.core.catalogue import Catalogue, load_catalogue
from osmanthus.core.errors import FailedPrecondition, NotFound, PermissionDenied
from osmanthus.core.ids import make_resident_id, make_uscc
from osmanthus.core.subjectfile import (
    COORDINATOR_SOURCE,
    AuditLine,
    CaseLine,
    CaseStepLine,
    ListLine,
    RecordLine,
    SubjectFile,
)
from osmanthus.core.subjectseal import public_bytes
from osmanthus.core.types import (
    ConsentId,
    DepartmentId,
    DepartmentStatus,
    Purpose,
    RequesterId,
    Shape,
    SubjectKind,
)
from osmanthus.core.wire.coordinator import Consent
from portal.app import create_app
from portal.cardreader import SimulatedCardReader
from portal.devidp import DevIdentityProvider
from portal.session import Subject
from portal.settings import PortalMode, PortalSettings
from portal.signin import OidcSettings
from sdk.results import ConsentRecord, EnterpriseScore, PersonScore
from sdk.subject import SubjectFileResult

ALICE = make_resident_id(region="320505", birth=datetime.date(1985, 3, 1), sequence=123)
BOB = make_resident_id(region="320506", birth=datetime.date(1990, 7, 9), sequence=456)
ACME = make_uscc(authority="9", category="1", region="320505", organisation="MA1XY3125")
NOW = datetime.datetime(2026, 1, 10, 8, 0, tzinfo=datetime.UTC)
#: the stub's cases at hrss: an open, overdue objection about r2, a rejected one about r1
OPEN_CASE = "case-" + "A" * 22
DECIDED_CASE = "case-" + "B" * 22
#: the stub case office's cases at hrss
OVERDUE_CASE = "case-" + "C" * 22
FRESH_CASE = "case-" + "D" * 22
REPAIR_CASE = "case-" + "E" * 22
#: the kiosk's own screen: it answers loopback Host names only
KIOSK_URL = "http://127.0.0.1"


def bad_check_digit(resident_id: str) -> str:
    """The same number with a wrong check character."""
    wrong = "0" if resident_id[-1] != "0" else "1"
    return resident_id[:17] + wrong


class FakeClock:
    """A monotonic clock tests move by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class StubBackend:
    """Answers for ALICE and ACME; anything else is refused (as the federation would not be
    asked by a correct portal at all)."""

    catalogue: Catalogue = field(default_factory=load_catalogue)
    asked: list[tuple[str, str]] = field(default_factory=list)
    consents_by_id: dict[str, ConsentRecord] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: the department's case key (hrss), whose public half its part offers
    case_private_key: X25519PrivateKey = field(default_factory=X25519PrivateKey.generate)
    #: the cases filed through the portal: (subject id, department, draft, case key)
    filed: list[tuple[str, str, CaseDraft, bytes]] = field(default_factory=list)
    #: tests: file_case raises this instead of filing
    file_case_error: Exception | None = None

    def __post_init__(self) -> None:
        for consent_id, subject in (("cns_alice1", ALICE), ("cns_bob1", BOB)):
            self.consents_by_id[consent_id] = Consent(
                consent_id=ConsentId(consent_id),
                subject_id=subject,
                grantee=RequesterId("agency-1"),
                purpose=Purpose("loan_underwriting"),
                granted_at=NOW - datetime.timedelta(days=1),
                expires_at=NOW + datetime.timedelta(days=30),
                revoked_at=None,
                receipt="eyJhbGciOiJFZERTQSJ9.e30.c2ln",
            )

    def _note(self, what: str, subject: Subject) -> None:
        with self.lock:
            self.asked.append((what, subject.id))

    def summary(self, subject: Subject) -> PersonScore | EnterpriseScore:
        self._note("summary", subject)
        answered = (DepartmentStatus(DepartmentId("hrss"), "ok"),)
        if subject.kind is SubjectKind.ENTERPRISE:
            return EnterpriseScore(
                subject_id=subject.id,
                score=112,
                base=100,
                deductions=8,
                bonuses={
                    "tax_credit": 10,
                    "customs_certification": 0,
                    "environmental_credit": 5,
                    "honours_awards": 5,
                },
                shape=Shape.BREAKDOWN,
                answered=answered,
                missing=(),
                query_id="q-ent",
                grade="A",
            )
        return PersonScore(
            subject_id=subject.id,
            score=106,
            base=100,
            deductions=10,
            bonuses={
                "qualifications": 5,
                "honours": 3,
                "blood_donation": 4,
                "volunteer_service": 4,
            },
            shape=Shape.BREAKDOWN,
            answered=answered,
            missing=(),
            query_id="q-person",
        )

    def subject_file(self, subject: Subject) -> SubjectFileResult:
        self._note("subject_file", subject)
        part = SubjectFile(
            source="hrss",
            query_id="q-file",
            subject_kind=subject.kind.value,
            subject_id=subject.id,
            as_of="2026-01-10",
            generated_at="2026-01-10T08:00:00Z",
            records=(
                RecordLine(
                    record_id="r1",
                    kind="professional_qualification",
                    description="专业技术资格 Professional qualification",
                    category="qualifications",
                    quantity=1,
                    event_start="2020-01-01",
                    event_end=None,
                    status="active",
                    state="counts",
                    validity="permanent",
                    points=5,
                    per_quantity=1,
                ),
                RecordLine(
                    record_id="r2",
                    kind="social_insurance_arrears",
                    description="社保欠缴 Social insurance arrears",
                    category="deduction",
                    quantity=1,
                    event_start="2015-01-01",
                    event_end="2015-06-01",
                    status="active",
                    state="expired",
                    validity="3y",
                    points=10,
                    per_quantity=1,
                    counts_until="2018-06-01",
                ),
                RecordLine(
                    record_id="r3",
                    kind="social_insurance_arrears",
                    description="社保欠缴 Social insurance arrears",
                    category="deduction",
                    quantity=1,
                    event_start="2025-03-01",
                    event_end="2025-05-01",
                    status="active",
                    state="counts",
                    validity="3y",
                    points=10,
                    per_quantity=1,
                    counts_until="2028-05-01",
                ),
            ),
            list_entries=(
                ListLine(
                    entry_id="e1",
                    list="social_insurance_defaulters",
                    colour="black",
                    status="in_view",
                    legal_basis="社会保险法 Social Insurance Law",
                    reason="欠缴社保 Unpaid social insurance",
                    window_start="2025-06-01",
                    window_end="2027-05-31",
                ),
                ListLine(
                    entry_id="e2",
                    list="model_employers",
                    colour="red",
                    status="in_view",
                    legal_basis="表彰决定 Award decision",
                    reason="模范 Model employer",
                    window_start="2025-06-01",
                    window_end="2026-05-31",
                ),
            ),
            cases=(
                CaseLine(
                    case_id=OPEN_CASE,
                    kind="objection",
                    ground="record",
                    target="record",
                    target_id="r2",
                    statement="这条记录不是我的。\nThis record is not mine.",
                    status="open",
                    filed_at="2026-01-02T02:00:00Z",
                    decide_by="2026-01-07",
                    reply_by="2026-01-16",
                    overdue=True,
                    decided_at=None,
                    decision_reason="",
                    remedy="",
                    attachments=1,
                    steps=(
                        CaseStepLine(
                            at="2026-01-02T02:00:00Z", event="filed", actor="subject", detail=""
                        ),
                    ),
                ),
                CaseLine(
                    case_id=DECIDED_CASE,
                    kind="objection",
                    ground="record",
                    target="record",
                    target_id="r1",
                    statement="日期有误 The date is wrong",
                    status="rejected",
                    filed_at="2025-12-01T02:00:00Z",
                    decide_by="2025-12-04",
                    reply_by="2025-12-15",
                    overdue=False,
                    decided_at="2025-12-03T06:00:00Z",
                    decision_reason="记录与原始凭证一致 The record matches the source documents",
                    remedy="",
                    attachments=0,
                    steps=(
                        CaseStepLine(
                            at="2025-12-01T02:00:00Z", event="filed", actor="subject", detail=""
                        ),
                        CaseStepLine(
                            at="2025-12-03T06:00:00Z",
                            event="rejected",
                            actor="hrss",
                            detail="记录与原始凭证一致",
                        ),
                    ),
                ),
            ),
            case_key=base64.urlsafe_b64encode(public_bytes(self.case_private_key))
            .rstrip(b"=")
            .decode(),
            bonuses={"qualifications": 5},
            audit=(
                AuditLine(
                    time="2026-01-09T02:00:00Z",
                    query_id="q-old",
                    requester="agency-1",
                    purpose="loan_underwriting",
                    shape="breakdown",
                    consent_id="cns_alice1",
                    decision="allow",
                    reason="policy node-loan",
                ),
            ),
        )
        coordinator = replace(
            part,
            source=COORDINATOR_SOURCE,
            records=(),
            list_entries=(),
            cases=(),
            case_key="",
            bonuses={},
            audit=(
                AuditLine(
                    time="2026-01-10T07:59:00Z",
                    query_id="q-file",
                    requester="kiosk-1",
                    purpose="self_query",
                    shape="",
                    consent_id="",
                    decision="allow",
                    reason="central-kiosk-subject-file",
                ),
            ),
        )
        return SubjectFileResult(
            query_id="q-file", parts=(part, coordinator), missing=(), partial=False
        )

    def consents(self, subject: Subject) -> list[ConsentRecord]:
        self._note("consents", subject)
        with self.lock:
            return [c for c in self.consents_by_id.values() if c.subject_id == subject.id]

    def revoke(self, subject: Subject, consent_id: str) -> ConsentRecord:
        self._note("revoke", subject)
        with self.lock:
            record = self.consents_by_id.get(consent_id)
            if record is None or record.subject_id != subject.id:
                # what the coordinator answers when RevokeConsentRequest.subject_id differs
                raise PermissionDenied(
                    f"consent {consent_id} is not the named subject's", field="consent_id"
                )
            revoked = replace(record, revoked_at=NOW)
            self.consents_by_id[consent_id] = revoked
            return revoked

    def file_case(
        self,
        subject: Subject,
        *,
        department: str,
        draft: CaseDraft,
        case_key: bytes,
        nonce: bytes | None = None,
    ) -> CaseReceipt:
        self._note("file_case", subject)
        if self.file_case_error is not None:
            raise self.file_case_error
        with self.lock:
            self.filed.append((subject.id, department, draft, case_key))
            number = len(self.filed)
        return CaseReceipt(
            case_id=f"case-{number:022d}",
            department=DepartmentId(department),
            filed_at=NOW,
            decide_by=datetime.date(2026, 1, 14),
            reply_by=datetime.date(2026, 1, 23),
        )


def kiosk_app(
    state_dir: Path, *, clock: FakeClock | None = None, simulator_secret: str | None = None
) -> tuple[Starlette, SimulatedCardReader, StubBackend]:
    """A kiosk app on a simulated reader and a stub backend (app, reader, backend)."""
    reader = SimulatedCardReader()
    backend = StubBackend()
    app = create_app(
        settings=PortalSettings(
            mode=PortalMode.KIOSK,
            device_id="kiosk-1",
            state_dir=state_dir,
            simulator_secret=simulator_secret,
        ),
        backend=backend,
        card_reader=reader,
        identity=None,
        clock=clock or FakeClock(),
        now=lambda: NOW,
    )
    return app, reader, backend


# --- online sign-in through a real local provider (the case pages, the department face) -----

PORTAL_URL = "http://localhost"


def choose_identity(authorize_url: str, index: int) -> str:
    """What a person does at the provider: open its page, press the identity's button. The
    redirect back to the portal."""
    import urllib.parse

    import httpx

    with httpx.Client(trust_env=False, follow_redirects=False) as browser:
        page = browser.get(authorize_url)
        assert page.status_code == 200, page.text
        params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(authorize_url).query))
        base = authorize_url.split("?", 1)[0]
        answer = browser.post(base, data={**params, "identity": str(index)})
    assert answer.status_code == 303
    return str(answer.headers["location"])


def sign_in(client: TestClient, identity: int = 0) -> TestClientResponse:
    """Sign in as the provider's `identity`-th demo identity; the callback's response."""
    start = client.get("/login")
    assert start.status_code == 303, start.text
    back = choose_identity(start.headers["location"], identity)
    response: TestClientResponse = client.get(back.removeprefix(PORTAL_URL))
    return response


def csrf_of(page: str) -> str:
    """The CSRF token of the first form on `page`."""
    return page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]


def oidc_settings(idp: DevIdentityProvider) -> OidcSettings:
    """The portal as the local provider's client, at PORTAL_URL."""
    from portal.oidc import IdTokenVerifier, ProviderKeys
    from portal.signin import CALLBACK_PATH

    redirect_uri = PORTAL_URL + CALLBACK_PATH
    idp.register_redirect_uri(redirect_uri)
    keys = ProviderKeys(issuer=idp.issuer, allow_loopback_http=True)
    return OidcSettings(
        issuer=idp.issuer,
        client_id=idp.client_id,
        redirect_uri=redirect_uri,
        verifier=IdTokenVerifier(issuer=idp.issuer, audience=idp.client_id, keys=keys),
        allow_loopback_http=True,
    )


def online_app(
    state_dir: Path, idp: DevIdentityProvider, *, clock: FakeClock | None = None
) -> tuple[TestClient, StubBackend]:
    """The online site on a stub backend, signed in through `idp` (client, backend)."""
    backend = StubBackend()
    app = create_app(
        settings=PortalSettings(
            mode=PortalMode.ONLINE,
            device_id="portal-1",
            state_dir=state_dir,
            public_url=PORTAL_URL,
        ),
        backend=backend,
        card_reader=None,
        identity=oidc_settings(idp),
        clock=clock or FakeClock(),
        now=lambda: NOW,
    )
    return TestClient(app, base_url=PORTAL_URL, follow_redirects=False), backend


# --- the department face: a stand-in for the department's case office at its node -----------


def stub_case(
    case_id: str,
    *,
    kind: CaseKind = CaseKind.OBJECTION,
    target: CaseTarget = CaseTarget.RECORD,
    target_id: str = "r3",
    overdue: bool = False,
    letter: str = "",
    attachments: tuple[AttachmentInfo, ...] = (),
) -> Case:
    """An open case at hrss about ALICE, filed on NOW's day."""
    return Case(
        case_id=case_id,
        department=DepartmentId("hrss"),
        kind=kind,
        ground=CaseGround.FULFILLED if kind is CaseKind.REPAIR else CaseGround.RECORD
        if target is CaseTarget.RECORD else CaseGround.ENTRY_CONTENT,
        target=target,
        target_id=target_id,
        subject_kind=SubjectKind.PERSON,
        subject_id=ALICE,
        statement="这条记录不是我的。\nThis record is not mine.",
        commitment_letter=letter,
        letter_sha256=hashlib.sha256(letter.encode()).hexdigest() if letter else "",
        filed_at=NOW - datetime.timedelta(days=8 if overdue else 0),
        decide_by=datetime.date(2026, 1, 7) if overdue else datetime.date(2026, 1, 14),
        reply_by=datetime.date(2026, 1, 16) if overdue else datetime.date(2026, 1, 23),
        overdue=overdue,
        status=CaseStatus.OPEN,
        attachments=attachments,
        events=(
            CaseEvent(
                at=NOW - datetime.timedelta(days=8 if overdue else 0), event="filed",
                actor="subject",
            ),
        ),
    )  # fmt: skip


@dataclass
class StubCaseOffice:
    """Answers as a node's CaseOfficeService does for hrss's officer: three cases (an overdue
    objection with a PDF attachment, a fresh objection, a repair of a black-list entry)."""

    cases: dict[str, Case] = field(default_factory=dict)
    contents: dict[tuple[str, int], bytes] = field(default_factory=dict)
    decisions: list[Decision] = field(default_factory=list)
    queries: list[CaseQuery] = field(default_factory=list)

    def __post_init__(self) -> None:
        from tests.casefiles import tiny_pdf

        pdf = tiny_pdf()
        overdue = stub_case(
            OVERDUE_CASE,
            overdue=True,
            attachments=(
                AttachmentInfo(
                    index=0,
                    media_type="application/pdf",
                    name="租房证明 tenancy.pdf",
                    size=len(pdf),
                    sha256=hashlib.sha256(pdf).hexdigest(),
                ),
            ),
        )
        self.contents[(OVERDUE_CASE, 0)] = pdf
        fresh = stub_case(FRESH_CASE, target_id="r1")
        letter = commitment_letter(
            subject_kind=SubjectKind.PERSON,
            subject_id=ALICE,
            department=load_catalogue().department(DepartmentId("hrss")),
            target=CaseTarget.LIST_ENTRY,
            target_id="e1",
        )
        repair = stub_case(
            REPAIR_CASE,
            kind=CaseKind.REPAIR,
            target=CaseTarget.LIST_ENTRY,
            target_id="e1",
            letter=letter,
        )
        for case in (fresh, repair, overdue):
            self.cases[case.case_id] = case

    def list_cases(self, query: CaseQuery) -> CasePage:
        self.queries.append(query)
        found = [
            c
            for c in self.cases.values()
            if (query.status is None or c.status is query.status)
            and (not query.overdue_only or c.overdue)
        ]
        return CasePage(cases=tuple(found))

    def get_case(self, case_id: str) -> Case:
        try:
            return self.cases[case_id]
        except KeyError:
            raise NotFound(f"no case {case_id} at hrss", field="case_id") from None

    def attachment(self, case_id: str, index: int) -> tuple[AttachmentInfo, bytes]:
        case = self.get_case(case_id)
        for info in case.attachments:
            if info.index == index:
                return info, self.contents[(case_id, index)]
        raise NotFound(f"case {case_id} has no attachment {index}", field="index")

    def decide(self, decision: Decision) -> Case:
        case = self.get_case(decision.case_id)
        if case.status is not CaseStatus.OPEN:
            raise FailedPrecondition(
                f"case {case.case_id} is {case.status.value}, not open", field="case_id"
            )
        self.decisions.append(decision)
        decided = replace(
            case,
            status=decision.outcome,
            decided_at=NOW,
            decision_reason=decision.reason,
            remedy=decision.remedy,
            correction=decision.correction,
            overdue=False,
            events=(*case.events, CaseEvent(at=NOW, event=decision.outcome.value, actor="hrss",
                                            detail=decision.reason)),
        )  # fmt: skip
        self.cases[case.case_id] = decided
        return decided


def department_app(
    state_dir: Path, idp: DevIdentityProvider, *, department: str = "hrss"
) -> tuple[TestClient, StubCaseOffice]:
    """The department face of `department` on a stub case office (client, office)."""
    from portal.department import create_department_app

    office = StubCaseOffice()
    app = create_department_app(
        settings=PortalSettings(
            mode=PortalMode.DEPARTMENT,
            device_id="dept-hrss",
            state_dir=state_dir,
            public_url=PORTAL_URL,
        ),
        office=office,
        department=department,
        identity=oidc_settings(idp),
        clock=FakeClock(),
        now=lambda: NOW,
    )
    return TestClient(app, base_url=PORTAL_URL, follow_redirects=False), office

"""A stand-in for the federation behind the portal's web app, for tests of the app's own logic
(sessions, CSRF, cookies, the card reader, sign-in). It answers like SubjectBackend does and
records who was asked about, so a test can prove the app never asks about anyone else.
tests/integration/test_portal_app.py runs the same app against a real federation.
"""

from __future__ import annotations

import datetime
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

from starlette.applications import Starlette

from osmanthus.core.catalogue import Catalogue, load_catalogue
from osmanthus.core.errors import PermissionDenied
from osmanthus.core.ids import make_resident_id, make_uscc
from osmanthus.core.subjectfile import COORDINATOR_SOURCE, AuditLine, RecordLine, SubjectFile
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
from portal.session import Subject
from portal.settings import PortalMode, PortalSettings
from sdk.results import ConsentRecord, EnterpriseScore, PersonScore
from sdk.subject import SubjectFileResult

ALICE = make_resident_id(region="320505", birth=datetime.date(1985, 3, 1), sequence=123)
BOB = make_resident_id(region="320506", birth=datetime.date(1990, 7, 9), sequence=456)
ACME = make_uscc(authority="9", category="1", region="320505", organisation="MA1XY3125")
NOW = datetime.datetime(2026, 1, 10, 8, 0, tzinfo=datetime.UTC)
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
            ),
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

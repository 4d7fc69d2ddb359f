"""What the objection and credit-repair browser tests run against: the portal's federation plus
the court (whose black list names the scene enterprise), a node calendar the tests move forward
(a case falls overdue), test subjects of their own with a housing record each, and the
department faces of housing and the court served next to the online site.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Final

from certs import PeerRole, cert_paths, init_platform, issue_certificate
from node.officer import ListOfficer
from node.store import RecordStore
from osmanthus.core.clock import china_today
from osmanthus.core.ids import make_resident_id
from osmanthus.core.lists import EntryId, NewEntry
from osmanthus.core.rules import Record
from osmanthus.core.tls import TlsFiles
from osmanthus.core.types import DepartmentId, SubjectId, SubjectKind
from osmanthus.demo.seed import DEMO_ENTERPRISE, seed
from sdk.keys import load_or_create_keys
from tests.browser.portal_fixtures import DEPARTMENTS, ENTERPRISES, PERSONS, REQUESTERS
from tests.conftest import IssuerKeyPaths
from tests.integration.conftest import AS_OF, Federation, restricted_catalogue, start_federation

#: the portal's seven departments and the court, whose black list names the scene enterprise
CASE_DEPARTMENTS: Final = (*DEPARTMENTS, "court")
#: the departments whose officers decide in the tests (an operator certificate each, and a
#: department face each)
HOUSING: Final = DepartmentId("housing")
COURT: Final = DepartmentId("court")
#: the housing record kind the test subjects' records are of (a deduction: it counts)
HOUSING_KIND: Final = "rental_market_violation"
#: the black-list entry about the scene enterprise the court publishes before the tests
REPAIR_ENTRY: Final = EntryId("2026-su05-zhi-0777")
REPAIR_LIST: Final = "judgement_defaulters"


def _person(sequence: int) -> SubjectId:
    return make_resident_id(region="320505", birth=date(1982, 5, 17), sequence=sequence)


#: persons of the tests' own (not in the seed), with one housing record each, so that each test
#: files about a subject no other test touches (the per-subject limits and open cases apart)
OVERDUE_PERSON: Final = _person(411)
MISLABEL_PERSON: Final = _person(412)
KEYBOARD_PERSON: Final = _person(413)
TEST_PERSONS: Final = (OVERDUE_PERSON, MISLABEL_PERSON, KEYBOARD_PERSON)


def housing_record_id(person: SubjectId) -> str:
    """The id of the housing record the tests give `person`."""
    return f"HS-T-{person[-6:]}"


class NodeCalendar:
    """Every node's "today" (China time), which a test moves forward to make a case overdue
    and puts back afterwards."""

    __test__ = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._days = 0

    def __call__(self) -> date:
        with self._lock:
            return china_today() + timedelta(days=self._days)

    def advance_to(self, day: date) -> None:
        """Make `day` the nodes' today."""
        with self._lock:
            self._days = (day - china_today()).days

    def reset(self) -> None:
        with self._lock:
            self._days = 0


def _add_test_records(db: Path) -> None:
    today = china_today()
    records = [
        Record(
            record_id=housing_record_id(person),
            subject_kind=SubjectKind.PERSON,
            subject_id=person,
            kind=HOUSING_KIND,
            quantity=1,
            event_start=today - timedelta(days=120),
            event_end=today - timedelta(days=110),
            status="active",
        )
        for person in TEST_PERSONS
    ]
    with RecordStore(db, department=HOUSING) as store:
        store.insert_records(records)


def start_cases_federation(
    base: Path, *, issuer_keys: IssuerKeyPaths, today: Callable[[], date]
) -> Federation:
    """The portal's seven departments and the court, over mTLS with their own platform CA,
    every node on the calendar `today`; operator certificates for housing and the court."""
    certs = base / "certs"
    init_platform(certs, departments=CASE_DEPARTMENTS, requesters=REQUESTERS)
    for department in (HOUSING, COURT):
        issue_certificate(certs, role=PeerRole.OPERATOR, name=department)
    keys = {name: load_or_create_keys(base / "keys" / f"{name}.key") for name in REQUESTERS}
    data = seed(base / "seed", persons=PERSONS, enterprises=ENTERPRISES, as_of=AS_OF)
    _add_test_records(data.databases[HOUSING])
    return start_federation(
        base / "federation",
        catalogue=restricted_catalogue(CASE_DEPARTMENTS),
        data=data,
        certs=certs,
        issuer_keys=issuer_keys,
        keys=keys,
        departments=CASE_DEPARTMENTS,
        today=today,
    )


def officer_tls(federation: Federation, department: str) -> TlsFiles:
    """The department's operator certificate (its officer's, and its department face's)."""
    return TlsFiles.from_cert_paths(
        cert_paths(federation.certs, role=PeerRole.OPERATOR, name=department)
    )


def node_target(federation: Federation, department: str) -> str:
    return f"127.0.0.1:{federation.nodes[department].port}"


def publish_repair_entry(federation: Federation) -> None:
    """The court's black-list entry about the scene enterprise, in view from yesterday, through
    its list office (the court's operator certificate), as `osmanthus lists publish` does."""
    today = china_today()
    entry = NewEntry(
        entry_id=REPAIR_ENTRY,
        list=REPAIR_LIST,
        subject_kind=SubjectKind.ENTERPRISE,
        subject_id=DEMO_ENTERPRISE.subject_id,
        subject_name="苏州桂园织造有限公司",
        legal_basis="《最高人民法院关于公布失信被执行人名单信息的若干规定》第一条",
        reason="有履行能力而拒不履行生效法律文书确定义务",
        window_start=today - timedelta(days=1),
        window_end=today + timedelta(days=700),
    )
    with ListOfficer(
        node_target(federation, COURT), department=COURT, tls=officer_tls(federation, COURT)
    ) as officer:
        officer.publish([entry])

"""Objections (异议) and credit repair (信用修复) in a real browser: headless Chromium drives the
online self-service site and the department faces of housing and the court, each served by
uvicorn, against a real federation (the portal's seven departments and the court over mTLS, a
node calendar the tests move) and a real local OpenID provider (citizens, a legal
representative and the departments' officers sign in on its page).

- An objection with a PDF: the citizen files it from "my records", gets the receipt, the record
  is disputed and her score changes; the housing officer finds it in the queue, downloads the
  PDF (bytes and headers), upholds it; the citizen's "my cases" shows the outcome, the reason
  and every step.
- A repair: the scene enterprise's legal representative applies for repair of the court's
  black-list entry (the commitment letter shown, the confirmation required: refused first
  without it), the court's officer approves, and the entry is gone from public view (the
  coordinator's list search, the enterprise's list page) and withdrawn as repaired at the node.
- Overdue: the nodes' calendar moved past the decision date, the queue and the subject's page
  both say 逾期 Overdue.
- Mislabelled attachments (a PNG named proof.pdf, text named .pdf) refused next to the field,
  nothing filed.
- The case form filled and sent with the keyboard alone.

With OSMANTHUS_SCREENSHOTS=1 the tests write docs/screenshots/cases-*.png.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Final

import pytest
from playwright.sync_api import Browser, BrowserContext, FilePayload, Locator, Page

from node.officer import ListOfficer
from osmanthus.core.cases import CaseQuery, CaseTarget, commitment_letter
from osmanthus.core.catalogue import load_catalogue
from osmanthus.core.ids import make_resident_id, mask_subject
from osmanthus.core.lists import EntryStatus, WithdrawReason
from osmanthus.core.types import DepartmentId, Role, SubjectKind
from osmanthus.demo.seed import DEMO_CITIZEN, DEMO_CITIZEN_SCORE, DEMO_ENTERPRISE
from portal.app import create_app
from portal.department import create_department_app
from portal.devidp import DemoIdentity, DevIdentityProvider
from portal.oidc import IdTokenVerifier, ProviderKeys
from portal.settings import PortalMode, PortalSettings
from portal.signin import CALLBACK_PATH, OidcSettings
from sdk.caseoffice import CaseOffice
from tests.browser.case_fixtures import (
    COURT,
    HOUSING,
    HOUSING_KIND,
    KEYBOARD_PERSON,
    MISLABEL_PERSON,
    OVERDUE_PERSON,
    REPAIR_ENTRY,
    NodeCalendar,
    housing_record_id,
    node_target,
    officer_tls,
    publish_repair_entry,
    start_cases_federation,
)
from tests.browser.portal_fixtures import (
    VIEWPORT,
    WAIT_MS,
    Served,
    check_accessibility,
    device_backend,
    free_socket,
    serve,
    tab_to,
)
from tests.casefiles import tiny_pdf, tiny_png
from tests.conftest import IssuerKeyPaths
from tests.integration.conftest import Federation, stop_federation

pytestmark = pytest.mark.slow

CITIZEN: Final = DEMO_CITIZEN.subject_id
FIRM: Final = DEMO_ENTERPRISE.subject_id
SCREENSHOTS: Final = Path(__file__).resolve().parents[2] / "docs" / "screenshots"

# the identities on the provider's demo page, in the order of its buttons (#idp-identity-N)
assert DEMO_ENTERPRISE.representative is not None
IDENTITIES: Final = (
    DemoIdentity(label="沈桂芳 Shen Guifang", subject="demo-citizen", resident_id=CITIZEN),
    DemoIdentity(
        label="顾建华 Gu Jianhua（法定代表人 legal representative）",
        subject="demo-representative",
        resident_id=DEMO_ENTERPRISE.representative.resident_id,
        credit_code=FIRM,
    ),
    DemoIdentity(label="逾期 test person", subject="t-overdue", resident_id=OVERDUE_PERSON),
    DemoIdentity(label="错标 test person", subject="t-mislabel", resident_id=MISLABEL_PERSON),
    DemoIdentity(label="键盘 test person", subject="t-keyboard", resident_id=KEYBOARD_PERSON),
    DemoIdentity(
        label="李敏 Li Min（市住建局 housing officer）",
        subject="officer-housing",
        resident_id=make_resident_id(region="320505", birth=date(1990, 4, 2), sequence=231),
        name="李敏 Li Min",
        department=HOUSING,
    ),
    DemoIdentity(
        label="王哲 Wang Zhe（市中级人民法院 court officer）",
        subject="officer-court",
        resident_id=make_resident_id(region="320505", birth=date(1986, 9, 9), sequence=233),
        name="王哲 Wang Zhe",
        department=COURT,
    ),
)
(AS_CITIZEN, AS_REPRESENTATIVE, AS_OVERDUE, AS_MISLABEL, AS_KEYBOARD, AS_HOUSING_OFFICER,
 AS_COURT_OFFICER) = range(len(IDENTITIES))  # fmt: skip
#: the housing record kind's points (the default rules): filing disputes it, so her score rises
RENTAL_VIOLATION_POINTS: Final = 10


def screenshot(page: Page, name: str, *, full_page: bool = False) -> None:
    """Save the page for docs/portal.md, only when asked (CI must not dirty the tree)."""
    if os.environ.get("OSMANTHUS_SCREENSHOTS") != "1":
        return
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name), full_page=full_page)


def payload(name: str, content: bytes, media_type: str = "application/pdf") -> FilePayload:
    """A file the browser sends as if chosen in the file dialog, with its name and type."""
    return {"name": name, "mimeType": media_type, "buffer": content}


def by_id(page: Page, element_id: str) -> Locator:
    """The element with this id (record and entry ids need not be CSS identifiers)."""
    return page.locator(f'[id="{element_id}"]')


# --- the federation, the sites, the provider --------------------------------------------------


@pytest.fixture(scope="module")
def calendar() -> NodeCalendar:
    return NodeCalendar()


@pytest.fixture(scope="module")
def federation(
    tmp_path_factory: pytest.TempPathFactory,
    issuer_keys: IssuerKeyPaths,
    calendar: NodeCalendar,
) -> Iterator[Federation]:
    fed = start_cases_federation(
        tmp_path_factory.mktemp("cases-federation"), issuer_keys=issuer_keys, today=calendar
    )
    try:
        publish_repair_entry(fed)
        yield fed
    finally:
        stop_federation(fed)


@dataclass(frozen=True)
class Sites:
    online: Served
    housing: Served
    court: Served
    online_state: Path


@pytest.fixture(scope="module")
def sites(federation: Federation, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sites]:
    """The online site and the department faces of housing and the court, one provider."""
    backend = device_backend(federation, "portal-1", Role.PORTAL)
    socks = {name: free_socket() for name in ("online", HOUSING, COURT)}
    urls = {name: f"http://127.0.0.1:{s.getsockname()[1]}" for name, s in socks.items()}
    provider = DevIdentityProvider(
        identities=list(IDENTITIES), redirect_uris=[u + CALLBACK_PATH for u in urls.values()]
    )
    offices = {
        dept: CaseOffice(
            node_target(federation, dept),
            tls=officer_tls(federation, dept),
            department=DepartmentId(dept),
        )
        for dept in (HOUSING, COURT)
    }
    online_state = tmp_path_factory.mktemp("cases-online-state")
    try:
        with provider:
            keys = ProviderKeys(issuer=provider.issuer, allow_loopback_http=True)

            def identity(name: str) -> OidcSettings:
                return OidcSettings(
                    issuer=provider.issuer,
                    client_id=provider.client_id,
                    redirect_uri=urls[name] + CALLBACK_PATH,
                    verifier=IdTokenVerifier(
                        issuer=provider.issuer, audience=provider.client_id, keys=keys
                    ),
                    allow_loopback_http=True,
                )

            online = create_app(
                settings=PortalSettings(
                    mode=PortalMode.ONLINE,
                    device_id="portal-1",
                    state_dir=online_state,
                    public_url=urls["online"],
                ),
                backend=backend,
                card_reader=None,
                identity=identity("online"),
            )
            desks = {
                dept: create_department_app(
                    settings=PortalSettings(
                        mode=PortalMode.DEPARTMENT,
                        device_id=f"{dept}-desk",
                        state_dir=tmp_path_factory.mktemp(f"{dept}-desk-state"),
                        public_url=urls[dept],
                    ),
                    office=offices[dept],
                    department=dept,
                    identity=identity(dept),
                    catalogue=federation.catalogue,
                )
                for dept in (HOUSING, COURT)
            }
            with (
                serve(online, socks["online"]) as served_online,
                serve(desks[HOUSING], socks[HOUSING]) as served_housing,
                serve(desks[COURT], socks[COURT]) as served_court,
            ):
                yield Sites(
                    online=served_online,
                    housing=served_housing,
                    court=served_court,
                    online_state=online_state,
                )
    finally:
        for office in offices.values():
            office.close()
        backend.close()


@pytest.fixture
def browser_contexts(browser: Browser) -> Iterator[list[BrowserContext]]:
    """Fresh browser profiles (no cookies shared) a test opens; all closed at its end."""
    contexts: list[BrowserContext] = []
    try:
        yield contexts
    finally:
        for context in contexts:
            context.close()


def open_page(browser: Browser, contexts: list[BrowserContext]) -> Page:
    context = browser.new_context(viewport=VIEWPORT, locale="zh-CN", accept_downloads=True)
    context.set_default_timeout(WAIT_MS)
    contexts.append(context)
    return context.new_page()


def sign_in(page: Page, site: Served, who: int, *, landing: str) -> None:
    """From the site's start page through the provider's demo page as identity `who`."""
    page.goto(site.url)
    page.click("#signin-button")
    page.click(f"#idp-identity-{who}")
    page.wait_for_selector(landing)


def case_office(federation: Federation, department: str) -> CaseOffice:
    return CaseOffice(
        node_target(federation, department),
        tls=officer_tls(federation, department),
        department=DepartmentId(department),
    )


def ask_again(page: Page, site: Served, path: str) -> None:
    """Open `path` and ask the federation again (the session keeps the subject's file)."""
    page.goto(site.url + path)
    page.click("#refresh-button")
    page.wait_for_url(site.url + path)


@dataclass(frozen=True)
class Filed:
    case_id: str
    decide_by: date
    reply_by: date


def read_receipt(page: Page) -> Filed:
    receipt = page.wait_for_selector("#case-receipt")
    assert receipt is not None
    case_id = page.locator("#receipt-case-id").inner_text().strip()
    assert case_id.startswith("case-") and receipt.get_attribute("data-case-id") == case_id
    decide_by = date.fromisoformat(page.locator("#receipt-decide-by").inner_text().strip())
    reply_by = date.fromisoformat(page.locator("#receipt-reply-by").inner_text().strip())
    # working days from today (China time): the decision comes before the reply
    today = date.today()
    assert today < decide_by <= reply_by, (decide_by, reply_by)
    assert "申请已提交" in page.locator("#case-receipt-heading").inner_text()
    return Filed(case_id=case_id, decide_by=decide_by, reply_by=reply_by)


def file_objection(page: Page, site: Served, record_id: str, statement: str) -> Filed:
    """From "my records": the record's object link, the statement, no attachment, submit."""
    page.click("#nav-records")
    page.wait_for_selector("#records-heading")
    by_id(page, f"object-{record_id}").click()
    page.wait_for_selector("#case-form")
    page.fill("#case-statement", statement)
    page.click("#case-submit")
    return read_receipt(page)


# --- 1. an objection with an attachment, upheld -----------------------------------------------


def test_objection_with_a_pdf_is_upheld_and_the_citizen_sees_the_outcome(
    browser: Browser,
    browser_contexts: list[BrowserContext],
    sites: Sites,
    federation: Federation,
) -> None:
    citizen = open_page(browser, browser_contexts)
    sign_in(citizen, sites.online, AS_CITIZEN, landing="#score-value")
    before = int(citizen.locator("#score-value").inner_text())
    assert before == DEMO_CITIZEN_SCORE

    citizen.click("#nav-records")
    citizen.wait_for_selector("#records-heading")
    row = citizen.locator(f"#dept-housing tr.record[data-kind={HOUSING_KIND}]")
    assert row.count() == 1 and row.get_attribute("data-state") == "counts"
    record_id = (row.get_attribute("id") or "").removeprefix("record-")
    assert record_id
    link = by_id(citizen, f"object-{record_id}")
    assert "提出异议" in link.inner_text() and "Object" in link.inner_text()
    link.click()

    citizen.wait_for_selector("#case-form")
    check_accessibility(citizen)
    assert citizen.locator("#case-target-id").inner_text() == record_id
    statement = (
        "该房屋租赁已在规定期限内办理登记备案，处罚认定与事实不符。"
        "The tenancy was registered in time; the finding is wrong."
    )
    citizen.fill("#case-statement", statement)
    pdf = tiny_pdf("Tenancy registration certificate")
    filename = "租赁登记备案证明.pdf"
    citizen.set_input_files(
        "#case-attachments",
        files=[payload(filename, pdf)],
    )
    screenshot(citizen, "cases-objection-form.png", full_page=True)
    citizen.click("#case-submit")
    filed = read_receipt(citizen)
    check_accessibility(citizen)
    assert citizen.locator("#receipt-department").inner_text().strip() == HOUSING
    screenshot(citizen, "cases-receipt.png")

    # the record is disputed at once, and no longer counts: her score rises by its points
    citizen.click("#nav-records")
    citizen.wait_for_selector("#records-heading")
    row = by_id(citizen, f"record-{record_id}")
    assert row.get_attribute("data-state") == "disputed"
    assert "申请处理中" in row.inner_text()
    assert by_id(citizen, f"object-{record_id}").count() == 0
    citizen.click("#nav-score")
    citizen.wait_for_selector("#score-value")
    during = int(citizen.locator("#score-value").inner_text())
    assert during == before + RENTAL_VIOLATION_POINTS

    # the housing bureau's officer: the queue, the case, the PDF, the decision
    officer = open_page(browser, browser_contexts)
    sign_in(officer, sites.housing, AS_HOUSING_OFFICER, landing="#dept-queue")
    check_accessibility(officer)
    assert "李敏" in officer.locator("#officer-name").inner_text()
    queued = by_id(officer, f"dept-case-{filed.case_id}")
    assert queued.get_attribute("data-status") == "open"
    assert queued.get_attribute("data-overdue") == "false"
    assert record_id in queued.inner_text()
    assert mask_subject(CITIZEN) in queued.inner_text()
    by_id(officer, f"dept-open-{filed.case_id}").click()
    officer.wait_for_selector("#dept-case")
    check_accessibility(officer)
    assert officer.locator("#dept-case").get_attribute("data-case-id") == filed.case_id
    assert officer.locator("#dept-case-subject").inner_text() == CITIZEN
    assert officer.locator("#dept-case-target").inner_text() == record_id
    assert officer.locator("#dept-case-statement").inner_text() == statement
    assert officer.locator("#dept-case-decide-by").inner_text() == filed.decide_by.isoformat()
    assert officer.locator("#dept-attachment-0").inner_text() == filename
    screenshot(officer, "cases-dept-case.png", full_page=True)

    with officer.expect_download() as download_info:
        officer.click("#dept-attachment-0")
    download = download_info.value
    assert Path(download.path()).read_bytes() == pdf
    assert download.suggested_filename == filename
    href = officer.locator("#dept-attachment-0").get_attribute("href")
    assert href is not None
    answer = officer.request.get(sites.housing.url + href)
    assert answer.status == 200 and answer.body() == pdf
    assert answer.headers["content-type"] == "application/pdf"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["cache-control"] == "no-store"
    disposition = answer.headers["content-disposition"]
    assert disposition.startswith("attachment;"), disposition
    assert f"filename*=UTF-8''{urllib.parse.quote(filename, safe='')}" in disposition

    reason = "租赁登记备案属实，撤销该记录 The tenancy was registered in time; withdrawn"
    officer.check("#decide-outcome-withdraw")
    officer.fill("#decide-reason", reason)
    officer.click("#decide-submit")
    officer.wait_for_selector("#decided-notice")
    assert officer.locator("#dept-case").get_attribute("data-status") == "upheld"
    assert "已支持" in officer.locator("#dept-case-status").inner_text()
    assert "撤销" in officer.locator("#dept-case-outcome").inner_text()
    assert officer.locator("#dept-case-reason").inner_text() == reason
    assert officer.locator("#decide-form").count() == 0

    # the citizen's "my cases": upheld, withdrawn, the reason and every step
    ask_again(citizen, sites.online, "/me/cases")
    case = by_id(citizen, f"case-{filed.case_id}")
    assert case.get_attribute("data-status") == "upheld"
    assert case.get_attribute("data-overdue") == "false"
    check_accessibility(citizen)
    outcome = by_id(citizen, f"case-{filed.case_id}-outcome").inner_text()
    assert "已支持" in outcome and "Upheld" in outcome and "撤销" in outcome
    assert by_id(citizen, f"case-{filed.case_id}-reason").inner_text() == reason
    steps = by_id(citizen, f"case-{filed.case_id}-steps").locator("li")
    assert steps.count() == 2
    assert "已提交" in steps.nth(0).inner_text() and "Filed" in steps.nth(0).inner_text()
    # the decision's step (its reason is the case's, shown once above)
    assert "已支持" in steps.nth(1).inner_text() and "Upheld" in steps.nth(1).inner_text()
    screenshot(citizen, "cases-my-cases.png", full_page=True)
    # upheld and withdrawn: the record counts no more, for good
    citizen.click("#nav-score")
    citizen.wait_for_selector("#score-value")
    assert int(citizen.locator("#score-value").inner_text()) == during


# --- 2. credit repair with the commitment letter, approved ------------------------------------


def test_repair_with_the_commitment_letter_takes_the_entry_out_of_public_view(
    browser: Browser,
    browser_contexts: list[BrowserContext],
    sites: Sites,
    federation: Federation,
) -> None:
    agency = federation.client("agency-1", role=Role.CREDIT_AGENCY, purposes=["credit_report"])
    try:
        shown = agency.search_lists(kind=SubjectKind.ENTERPRISE, subject=FIRM).entries
        assert REPAIR_ENTRY in [e.entry_id for e in shown]

        firm = open_page(browser, browser_contexts)
        sign_in(firm, sites.online, AS_REPRESENTATIVE, landing="#nav-lists")
        firm.click("#nav-lists")
        firm.wait_for_selector("#lists-table")
        row = by_id(firm, f"list-entry-{REPAIR_ENTRY}")
        assert row.get_attribute("data-colour") == "black"
        link = by_id(firm, f"repair-{REPAIR_ENTRY}")
        assert "申请信用修复" in link.inner_text()
        link.click()

        firm.wait_for_selector("#case-form")
        check_accessibility(firm)
        letter = commitment_letter(
            subject_kind=SubjectKind.ENTERPRISE,
            subject_id=FIRM,
            department=load_catalogue().department(COURT),
            target=CaseTarget.LIST_ENTRY,
            target_id=REPAIR_ENTRY,
        )
        assert firm.locator("#case-letter").inner_text().strip() == letter.strip()
        assert not firm.locator("#case-confirm").is_checked()
        screenshot(firm, "cases-repair-letter.png", full_page=True)

        statement = "本公司已全额履行判决义务，执行案件已结案。The judgement is paid in full."
        proof = tiny_pdf("Certificate of performance of judgement")
        files = [payload("performance.pdf", proof)]
        firm.fill("#case-statement", statement)
        firm.set_input_files("#case-attachments", files=files)
        # sent without the confirmation: refused, the error next to the box, nothing filed
        firm.click("#case-submit")
        error = firm.wait_for_selector("#case-confirm-error")
        assert error is not None
        assert "请阅读信用承诺书并勾选确认" in error.inner_text()
        assert firm.locator("#case-confirm").get_attribute("aria-invalid") == "true"
        assert firm.locator("#case-confirm").get_attribute("aria-describedby") == (
            "case-confirm-error"
        )
        assert firm.locator("#case-errors").is_visible()
        assert firm.locator("#case-statement").input_value() == statement
        assert firm.locator("#case-receipt").count() == 0
        check_accessibility(firm)
        with case_office(federation, COURT) as office:
            assert office.list_cases(CaseQuery()).cases == ()

        # confirmed (the browser does not keep the chosen file: choose it again)
        firm.check("#case-confirm")
        firm.set_input_files("#case-attachments", files=files)
        firm.click("#case-submit")
        filed = read_receipt(firm)
        assert firm.locator("#receipt-department").inner_text().strip() == COURT

        # the court's officer reads the letter and approves
        officer = open_page(browser, browser_contexts)
        sign_in(officer, sites.court, AS_COURT_OFFICER, landing="#dept-queue")
        by_id(officer, f"dept-open-{filed.case_id}").click()
        officer.wait_for_selector("#dept-case")
        assert officer.locator("#dept-case-letter").inner_text().strip() == letter.strip()
        assert officer.locator("#dept-case-target").inner_text() == REPAIR_ENTRY
        label = officer.locator("label[for=decide-outcome-withdraw]").inner_text()
        assert "批准修复" in label
        assert officer.locator("#decide-outcome-correct").count() == 0
        reason = "判决义务已履行完毕，准予信用修复 The judgement is performed; repair approved"
        officer.check("#decide-outcome-withdraw")
        officer.fill("#decide-reason", reason)
        officer.click("#decide-submit")
        officer.wait_for_selector("#decided-notice")
        assert "已批准修复" in officer.locator("#dept-case-status").inner_text()

        # gone from public view: the coordinator's list search, and the enterprise's page
        left = agency.search_lists(kind=SubjectKind.ENTERPRISE, subject=FIRM).entries
        assert REPAIR_ENTRY not in [e.entry_id for e in left]
        ask_again(firm, sites.online, "/me/cases")
        case = by_id(firm, f"case-{filed.case_id}")
        assert case.get_attribute("data-status") == "upheld"
        assert "已批准修复" in by_id(firm, f"case-{filed.case_id}-outcome").inner_text()
        assert by_id(firm, f"case-{filed.case_id}-reason").inner_text() == reason
        # the file asked again above: the entry is no longer among hers
        firm.click("#nav-lists")
        firm.wait_for_selector("#lists-heading")
        assert by_id(firm, f"list-entry-{REPAIR_ENTRY}").count() == 0
    finally:
        agency.close()

    # the court's list history: withdrawn, reason repaired, the case as the reference
    with ListOfficer(
        node_target(federation, COURT), department=COURT, tls=officer_tls(federation, COURT)
    ) as lists:
        (kept,) = [
            e for e in lists.history(SubjectKind.ENTERPRISE, FIRM)
            if e.entry.entry_id == REPAIR_ENTRY
        ]  # fmt: skip
    assert kept.status is EntryStatus.WITHDRAWN
    assert kept.withdraw_reason is WithdrawReason.REPAIRED
    assert kept.withdraw_reference == filed.case_id


# --- 3. an overdue case, with the nodes' calendar moved on ------------------------------------


def test_an_overdue_case_is_highlighted_for_the_officer_and_the_subject(
    browser: Browser,
    browser_contexts: list[BrowserContext],
    sites: Sites,
    calendar: NodeCalendar,
) -> None:
    person = open_page(browser, browser_contexts)
    sign_in(person, sites.online, AS_OVERDUE, landing="#score-value")
    filed = file_objection(
        person, sites.online, housing_record_id(OVERDUE_PERSON), "记录有误 The record is wrong."
    )
    officer = open_page(browser, browser_contexts)
    sign_in(officer, sites.housing, AS_HOUSING_OFFICER, landing="#dept-queue")
    row = by_id(officer, f"dept-case-{filed.case_id}")
    assert row.get_attribute("data-overdue") == "false"
    assert "逾期" not in row.inner_text()

    # the nodes' today: the day after the decision was due
    calendar.advance_to(filed.decide_by + timedelta(days=1))
    try:
        officer.goto(sites.housing.url + "/dept/cases?show=open")
        row = by_id(officer, f"dept-case-{filed.case_id}")
        assert row.get_attribute("data-overdue") == "true"
        assert "overdue" in (row.get_attribute("class") or "").split()
        flag = row.locator(".overdue-flag")
        assert "逾期" in flag.inner_text() and "Overdue" in flag.inner_text()
        assert flag.is_visible()
        check_accessibility(officer)
        # every case (the decided ones too, when the module's other tests ran first)
        officer.click("#dept-filter-all")
        officer.wait_for_selector("#dept-queue[data-show=all]")
        assert by_id(officer, f"dept-case-{filed.case_id}").get_attribute("data-overdue") == "true"
        screenshot(officer, "cases-dept-queue.png")
        # the overdue filter has it too
        officer.click("#dept-filter-overdue")
        officer.wait_for_selector("#dept-queue[data-show=overdue]")
        assert by_id(officer, f"dept-case-{filed.case_id}").count() == 1
        # and the case page
        by_id(officer, f"dept-open-{filed.case_id}").click()
        officer.wait_for_selector("#dept-case")
        assert "逾期" in officer.locator("#dept-case-overdue").inner_text()

        # the subject's "my cases" says so as well
        ask_again(person, sites.online, "/me/cases")
        case = by_id(person, f"case-{filed.case_id}")
        assert case.get_attribute("data-status") == "open"
        assert case.get_attribute("data-overdue") == "true"
        assert "overdue" in (case.get_attribute("class") or "").split()
        shown = by_id(person, f"case-{filed.case_id}-overdue").inner_text()
        assert "逾期" in shown and "Overdue" in shown
        check_accessibility(person)
    finally:
        calendar.reset()


# --- 4. mislabelled attachments are refused, nothing filed ------------------------------------


def test_mislabelled_attachments_are_refused_next_to_the_field_and_nothing_is_filed(
    browser: Browser,
    browser_contexts: list[BrowserContext],
    sites: Sites,
    federation: Federation,
) -> None:
    record_id = housing_record_id(MISLABEL_PERSON)
    page = open_page(browser, browser_contexts)
    sign_in(page, sites.online, AS_MISLABEL, landing="#score-value")
    page.click("#nav-records")
    page.wait_for_selector("#records-heading")
    by_id(page, f"object-{record_id}").click()
    page.wait_for_selector("#case-form")
    statement = "附件为证明 The proof is attached."
    forgeries = {
        # a PNG image named and declared a PDF
        "png as pdf": payload("proof.pdf", tiny_png()),
        # a text file named .pdf
        "text as pdf": payload("statement.pdf", b"This is not a PDF, whatever its name says.\n"),
    }
    for name, forged in forgeries.items():
        page.fill("#case-statement", statement)
        page.set_input_files("#case-attachments", files=[forged])
        page.click("#case-submit")
        error = page.wait_for_selector("#case-attachments-error")
        assert error is not None, name
        text = error.inner_text()
        assert "PDF" in text and ("文件类型不符" in text or "内容" in text), (name, text)
        field = page.locator("#case-attachments")
        assert field.get_attribute("aria-invalid") == "true", name
        assert "case-attachments-error" in (field.get_attribute("aria-describedby") or "")
        assert page.locator("#case-errors").is_visible(), name
        assert page.locator("#case-receipt").count() == 0, name
        # the statement is kept
        assert page.locator("#case-statement").input_value() == statement, name
        check_accessibility(page)

    # nothing filed: the department's queue has no case of hers, her record still counts
    with case_office(federation, HOUSING) as office:
        cases = office.list_cases(CaseQuery(status=None, page_size=100)).cases
    assert [c for c in cases if c.subject_id == MISLABEL_PERSON] == []
    ask_again(page, sites.online, "/me/records")
    assert by_id(page, f"record-{record_id}").get_attribute("data-state") == "counts"
    page.click("#nav-cases")
    page.wait_for_selector("#no-cases")


# --- 5. the form with the keyboard alone ------------------------------------------------------


def test_the_case_form_is_filled_and_sent_with_the_keyboard_alone(
    browser: Browser,
    browser_contexts: list[BrowserContext],
    sites: Sites,
) -> None:
    record_id = housing_record_id(KEYBOARD_PERSON)
    page = open_page(browser, browser_contexts)
    sign_in(page, sites.online, AS_KEYBOARD, landing="#score-value")
    page.goto(sites.online.url + "/me/records")
    page.wait_for_selector("#records-heading")
    check_accessibility(page)

    # Tab to the row's link (the focus visible at every step), Enter
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    tab_to(page, f"object-{record_id}", max_steps=80)
    page.keyboard.press("Enter")
    page.wait_for_selector("#case-form")
    check_accessibility(page)
    # every control of the form has its label
    for control in ("case-statement", "case-attachments"):
        assert page.locator(f"label[for={control}]").inner_text().strip(), control

    tab_to(page, "case-statement", max_steps=60)
    statement = "记录日期有误 The record's dates are wrong."
    page.keyboard.type(statement)
    assert page.locator("#case-statement").input_value() == statement
    tab_to(page, "case-submit")
    page.keyboard.press("Enter")
    filed = read_receipt(page)
    check_accessibility(page)

    # on to "my cases" with the keyboard too
    tab_to(page, "receipt-my-cases", max_steps=60)
    page.keyboard.press("Enter")
    page.wait_for_selector(f'[id="case-{filed.case_id}"][data-status=open]')

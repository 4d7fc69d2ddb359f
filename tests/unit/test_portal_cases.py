"""The portal's objection and credit-repair pages (issue 16) on a stub backend, signed in through
a real local OpenID provider: the forms and their checks (mislabelled, oversized, too many
files, the letter unconfirmed, CSRF), only the subject's own records and entries, the rate
limit, the receipt and "my cases"; and the department face: sign-in by department claim, the
queue, a case, its attachments as downloads, and the decision."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from osmanthus.core.cases import (
    MAX_ATTACHMENT_BYTES,
    CaseDraft,
    CaseKind,
    CaseReceipt,
    CaseRemedy,
    CaseStatus,
    encode_draft,
)
from osmanthus.core.errors import DeadlineExceeded, FailedPrecondition, Unavailable
from osmanthus.core.types import DepartmentId
from portal.auditlog import AUDIT_FILE
from portal.cases import FILING_WINDOW_S, FILINGS_PER_WINDOW, MAX_CASE_BODY_BYTES
from portal.devidp import DemoIdentity, DevIdentityProvider
from portal.session import DOWNLOAD_CSP, SECURITY_HEADERS, Subject
from tests.casefiles import tiny_jpeg, tiny_pdf, tiny_png
from tests.portal_stub import (
    ALICE,
    BOB,
    DECIDED_CASE,
    FRESH_CASE,
    KIOSK_URL,
    NOW,
    OPEN_CASE,
    OVERDUE_CASE,
    REPAIR_CASE,
    FakeClock,
    StubBackend,
    csrf_of,
    department_app,
    kiosk_app,
    online_app,
    sign_in,
)

OBJECT_R3 = "/me/cases/new/objection/hrss/record/r3"
REPAIR_E1 = "/me/cases/new/repair/hrss/list_entry/e1"
#: the provider's identities: the citizen, hrss's officer, court's officer
CITIZEN, HRSS_OFFICER, COURT_OFFICER = 0, 1, 2


@pytest.fixture
def idp() -> Iterator[DevIdentityProvider]:
    provider = DevIdentityProvider(
        identities=[
            DemoIdentity(label="张三 Zhang San", subject="demo-alice", resident_id=ALICE),
            DemoIdentity(
                label="人社局办理人员 HRSS officer",
                subject="officer-hrss-1",
                resident_id=BOB,
                name="李四",
                department="hrss",
            ),
            DemoIdentity(
                label="法院办理人员 Court officer",
                subject="officer-court-1",
                resident_id=BOB,
                department="court",
            ),
        ]
    )
    with provider:
        yield provider


def audit_events(state_dir: Path) -> list[dict[str, Any]]:
    text = (state_dir / AUDIT_FILE).read_text()
    return [json.loads(line) for line in text.splitlines() if line]


def signed_in(
    tmp_path: Path, idp: DevIdentityProvider, *, clock: FakeClock | None = None
) -> tuple[TestClient, StubBackend]:
    client, backend = online_app(tmp_path, idp, clock=clock)
    assert sign_in(client, CITIZEN).status_code == 200
    return client, backend


def open_form(client: TestClient, path: str) -> dict[str, str]:
    """The form's hidden fields (CSRF and form token), from its page."""
    page = client.get(path)
    assert page.status_code == 200, page.text
    token = page.text.split('name="form_token" value="', 1)[1].split('"', 1)[0]
    return {"csrf_token": csrf_of(page.text), "form_token": token}


def post_case(
    client: TestClient,
    path: str,
    fields: dict[str, str],
    files: list[tuple[str, bytes, str]] | None = None,
) -> Any:
    """POST the form as a browser does: multipart, with an empty file part when no file was
    chosen."""
    chosen = files or [("", b"", "application/octet-stream")]
    return client.post(
        path,
        data=fields,
        files=[("attachments", (name, content, media)) for name, content, media in chosen],
    )


# --- the subject's side -----------------------------------------------------------------------


def test_records_and_lists_offer_objection_and_repair_where_they_apply(
    tmp_path: Path, idp: DevIdentityProvider
) -> None:
    client, _ = signed_in(tmp_path, idp)
    records = client.get("/me/records").text
    # r3 is a deduction that counts: both; r1 (a bonus) objection only; r2 has an open case
    assert 'id="object-r3"' in records and 'id="repair-r3"' in records
    assert 'id="object-r1"' in records and 'id="repair-r1"' not in records
    assert 'id="object-r2"' not in records and f"#case-{OPEN_CASE}" in records
    lists = client.get("/me/lists").text
    # a black-list entry may be repaired; a red one (an honour) only objected to
    assert 'id="repair-e1"' in lists and 'id="object-e1"' in lists
    assert 'id="repair-e2"' not in lists and 'id="object-e2"' in lists


def test_an_objection_is_filed_and_its_receipt_shown(
    tmp_path: Path, idp: DevIdentityProvider
) -> None:
    client, backend = signed_in(tmp_path, idp)
    fields = open_form(client, OBJECT_R3)
    answer = post_case(
        client,
        OBJECT_R3,
        {**fields, "statement": "我已缴清。\r\nI paid in full."},
        [("receipt.png", tiny_png(), "image/png"), ("bank.pdf", tiny_pdf(), "application/pdf")],
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/me/cases/filed"
    [(subject_id, department, draft, case_key)] = backend.filed
    assert (subject_id, department, draft.kind, draft.target_id) == (
        ALICE,
        "hrss",
        CaseKind.OBJECTION,
        "r3",
    )
    # the key is the one in the department's signed part; the statement's line ends are \n
    assert case_key == backend.case_private_key.public_key().public_bytes_raw()
    assert draft.statement == "我已缴清。\nI paid in full."
    assert [a.name for a in draft.attachments] == ["receipt.png", "bank.pdf"]
    receipt = client.get("/me/cases/filed").text
    assert 'id="case-receipt"' in receipt and 'id="receipt-decide-by">2026-01-14<' in receipt
    assert 'id="receipt-reply-by">2026-01-23<' in receipt
    # the same form sent again files nothing more: the receipt again
    again = post_case(
        client, OBJECT_R3, {**fields, "statement": "again"}, [("r.png", tiny_png(), "image/png")]
    )
    assert again.status_code == 303 and len(backend.filed) == 1
    events = [e["extra"]["event"] for e in audit_events(tmp_path)]
    assert "file_case" in events


def test_a_repair_needs_the_letter_confirmed_and_sends_the_rendered_letter(
    tmp_path: Path, idp: DevIdentityProvider
) -> None:
    client, backend = signed_in(tmp_path, idp)
    page = client.get(REPAIR_E1).text
    assert 'id="case-letter"' in page and "信用承诺书" in page and ALICE in page
    fields = open_form(client, REPAIR_E1)
    proof = [("paid.pdf", tiny_pdf(), "application/pdf")]
    unconfirmed = post_case(client, REPAIR_E1, {**fields, "statement": "已履行"}, proof)
    assert unconfirmed.status_code == 400
    assert 'id="case-confirm-error"' in unconfirmed.text and "本人已阅读并承诺" in unconfirmed.text
    assert backend.filed == []
    # a letter in the form is ignored: the one filed is rendered from the case
    confirmed = post_case(
        client,
        REPAIR_E1,
        {**fields, "statement": "已履行", "confirm": "yes", "commitment_letter": "I promise x"},
        proof,
    )
    assert confirmed.status_code == 303
    draft = backend.filed[0][2]
    assert draft.kind is CaseKind.REPAIR and draft.commitment_letter.startswith("信用承诺书")


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        # a PDF named and declared as a PNG: checked by content, not by name
        ([("photo.png", tiny_pdf(), "image/png")], "its content is a PDF"),
        # neither PDF, JPEG nor PNG, whatever it is called
        ([("scan.pdf", b"MZ\x90\x00 not a pdf", "application/pdf")], "by its content"),
        ([("notes.txt", b"hello", "text/plain")], "only PDF, JPEG and PNG"),
        ([(f"p{i}.jpg", tiny_jpeg(), "image/jpeg") for i in range(5)], "At most 4 files"),
        (
            [
                (f"big{i}.pdf", tiny_pdf() + b"%" * (MAX_ATTACHMENT_BYTES // 2), "application/pdf")
                for i in range(2)
            ],
            "KiB",
        ),
    ],
    ids=["mislabelled", "not-a-document", "declared-text", "too-many", "too-large-together"],
)
def test_bad_attachments_are_refused_next_to_the_field(
    tmp_path: Path, idp: DevIdentityProvider, files: list[tuple[str, bytes, str]], expected: str
) -> None:
    client, backend = signed_in(tmp_path, idp)
    fields = open_form(client, OBJECT_R3)
    answer = post_case(client, OBJECT_R3, {**fields, "statement": "wrong"}, files)
    assert answer.status_code == 400, answer.text
    error = answer.text.split('id="case-attachments-error">', 1)[1].split("</p>", 1)[0]
    assert expected in error and 'lang="zh-CN"' in error
    assert 'aria-invalid="true"' in answer.text
    # the statement is kept; nothing was sent
    assert ">wrong</textarea>" in answer.text and backend.filed == []


def test_a_body_declared_too_large_is_refused_unread(
    tmp_path: Path, idp: DevIdentityProvider
) -> None:
    client, backend = signed_in(tmp_path, idp)
    client.get(OBJECT_R3)
    # the length says too much and the body is never sent: the answer comes before it is read
    answer = client.post(
        OBJECT_R3,
        content=b"",
        headers={
            "content-type": "multipart/form-data; boundary=x",
            "content-length": str(MAX_CASE_BODY_BYTES + 1),
        },
    )
    assert answer.status_code == 413
    assert 'id="case-attachments-error"' in answer.text and backend.filed == []


def test_an_empty_statement_and_a_missing_ground_are_named(
    tmp_path: Path, idp: DevIdentityProvider
) -> None:
    client, backend = signed_in(tmp_path, idp)
    path = "/me/cases/new/objection/hrss/list_entry/e1"
    fields = open_form(client, path)
    answer = post_case(client, path, {**fields, "statement": "  "})
    assert answer.status_code == 400
    assert 'id="case-statement-error"' in answer.text and 'id="case-ground-error"' in answer.text
    ok = post_case(client, path, {**fields, "statement": "期限有误", "ground": "entry_period"})
    assert ok.status_code == 303 and backend.filed[0][2].ground.value == "entry_period"


def test_a_filing_without_the_csrf_token_is_refused(
    tmp_path: Path, idp: DevIdentityProvider
) -> None:
    client, backend = signed_in(tmp_path, idp)
    fields = open_form(client, OBJECT_R3)
    answer = post_case(
        client, OBJECT_R3, {"form_token": fields["form_token"], "statement": "wrong"}
    )
    assert answer.status_code == 403 and 'id="error"' in answer.text
    # an urlencoded body (not multipart) is refused the same way
    plain = client.post(OBJECT_R3, data={**fields, "statement": "wrong"})
    assert plain.status_code == 403
    assert backend.filed == []
    assert [e["extra"]["event"] for e in audit_events(tmp_path)].count("csrf") == 2


@pytest.mark.parametrize(
    "path",
    [
        # a record that is not in the subject's file (another subject's, or none at all)
        "/me/cases/new/objection/hrss/record/someone-elses",
        # a department that holds nothing about the subject
        "/me/cases/new/objection/court/record/r3",
        # a list entry id passed off as a record
        "/me/cases/new/repair/hrss/record/e1",
    ],
)
def test_only_the_subjects_own_records_and_entries_can_be_picked(
    tmp_path: Path, idp: DevIdentityProvider, path: str
) -> None:
    client, backend = signed_in(tmp_path, idp)
    assert client.get(path).status_code == 404
    fields = open_form(client, OBJECT_R3)
    answer = post_case(client, path, {**fields, "statement": "not mine"})
    assert answer.status_code == 404 and "This is not in your file" in answer.text
    assert backend.filed == []
    denied = [e for e in audit_events(tmp_path) if e["extra"]["event"] == "file_case"]
    assert denied and all(e["decision"] == "deny" for e in denied)
    assert all(e["subject_hash"] for e in denied)


def test_repair_is_refused_where_it_does_not_apply_and_a_second_open_case_too(
    tmp_path: Path, idp: DevIdentityProvider
) -> None:
    client, _ = signed_in(tmp_path, idp)
    # r1 is a bonus record; e2 a red-list entry (an honour)
    assert client.get("/me/cases/new/repair/hrss/record/r1").status_code == 409
    assert client.get("/me/cases/new/repair/hrss/list_entry/e2").status_code == 409
    # r2 has an open case already
    assert client.get("/me/cases/new/objection/hrss/record/r2").status_code == 409


def test_filings_are_rate_limited_per_subject(tmp_path: Path, idp: DevIdentityProvider) -> None:
    clock = FakeClock()
    client, backend = signed_in(tmp_path, idp, clock=clock)
    for _ in range(FILINGS_PER_WINDOW):
        fields = open_form(client, OBJECT_R3)
        assert post_case(client, OBJECT_R3, {**fields, "statement": "x"}).status_code == 303
    fields = open_form(client, OBJECT_R3)
    limited = post_case(client, OBJECT_R3, {**fields, "statement": "x"})
    assert limited.status_code == 429 and 'id="case-form-error"' in limited.text
    assert "Too many filings" in limited.text and "提交过于频繁" in limited.text
    assert len(backend.filed) == FILINGS_PER_WINDOW
    # a new session is the same subject: still limited
    assert sign_in(client, CITIZEN).status_code == 200
    fields = open_form(client, OBJECT_R3)
    assert post_case(client, OBJECT_R3, {**fields, "statement": "x"}).status_code == 429
    clock.advance(FILING_WINDOW_S)
    assert sign_in(client, CITIZEN).status_code == 200
    fields = open_form(client, OBJECT_R3)
    assert post_case(client, OBJECT_R3, {**fields, "statement": "x"}).status_code == 303


def test_a_refusal_by_the_node_is_shown_on_the_form(
    tmp_path: Path, idp: DevIdentityProvider
) -> None:
    client, backend = signed_in(tmp_path, idp)
    backend.file_case_error = FailedPrecondition("record r3 has an open case already")
    fields = open_form(client, OBJECT_R3)
    answer = post_case(client, OBJECT_R3, {**fields, "statement": "x"})
    assert answer.status_code == 409
    assert "record r3 has an open case already" in answer.text
    # the form may be sent again once the refusal is gone
    backend.file_case_error = None
    assert post_case(client, OBJECT_R3, {**fields, "statement": "x"}).status_code == 303


class LosingNode:
    """The department's node as the backend reaches it, whose first answer is lost on the way
    back (after it stored the case): a filing is kept by its nonce, the same nonce with the same
    case answers the first receipt (duplicate), another nonce on the same target is refused
    ("a case is already open"), as node/casefiling.py does."""

    def __init__(self, lost: Exception) -> None:
        self.lost: Exception | None = lost
        self.nonces: list[bytes | None] = []
        self.by_nonce: dict[bytes, tuple[bytes, CaseReceipt]] = {}
        self.open_targets: set[str] = set()

    def file_case(
        self,
        subject: Subject,
        *,
        department: str,
        draft: CaseDraft,
        case_key: bytes,
        nonce: bytes | None = None,
    ) -> CaseReceipt:
        self.nonces.append(nonce)
        assert nonce is not None, "the portal names every filing by its nonce"
        body = encode_draft(draft)
        if nonce in self.by_nonce:
            first, receipt = self.by_nonce[nonce]
            if first != body:
                raise FailedPrecondition("this nonce was filed with another case")
            return CaseReceipt(**{**receipt.__dict__, "duplicate": True})
        if draft.target_id in self.open_targets:
            raise FailedPrecondition(f"a case is already open on record {draft.target_id}")
        receipt = CaseReceipt(
            case_id=f"case-{len(self.by_nonce) + 1:022d}",
            department=DepartmentId(department),
            filed_at=NOW,
            decide_by=datetime.date(2026, 1, 14),
            reply_by=datetime.date(2026, 1, 23),
        )
        self.by_nonce[nonce] = (body, receipt)
        self.open_targets.add(draft.target_id)
        if self.lost is not None:
            lost, self.lost = self.lost, None
            raise lost
        return receipt


def form_token_of(page: str) -> str:
    return page.split('name="form_token" value="', 1)[1].split('"', 1)[0]


@pytest.mark.parametrize(
    "lost",
    [
        Unavailable("hrss's node did not take the case: connection reset"),
        DeadlineExceeded("hrss's node did not answer in time"),
    ],
    ids=["unavailable", "deadline"],
)
def test_a_filing_whose_answer_was_lost_is_sent_again_under_its_nonce(
    tmp_path: Path, idp: DevIdentityProvider, lost: Exception
) -> None:
    client, backend = signed_in(tmp_path, idp)
    node = LosingNode(lost)
    backend.file_case = node.file_case  # type: ignore[method-assign]
    fields = open_form(client, OBJECT_R3)
    files = [("receipt.png", tiny_png(), "image/png")]
    statement = {**fields, "statement": "我已缴清。\r\nI paid in full."}
    first = post_case(client, OBJECT_R3, statement, files)
    # the node stored it, but nobody knows: the form again, under the same token, saying so
    assert first.status_code == 503, first.text
    assert 'id="case-form-error"' in first.text and "never filed twice" in first.text
    assert form_token_of(first.text) == fields["form_token"]
    assert "我已缴清" in first.text  # the statement is kept
    # sent again (the same files chosen again): the first receipt, not "a case is already open"
    again = post_case(client, OBJECT_R3, statement, files)
    assert again.status_code == 303 and again.headers["location"] == "/me/cases/filed"
    receipt = client.get("/me/cases/filed").text
    assert 'id="receipt-duplicate"' in receipt and "case-" + "0" * 21 + "1" in receipt
    assert len(node.nonces) == 2 and node.nonces[0] == node.nonces[1]
    assert len(node.by_nonce) == 1
    # the form is done now: sending it once more files nothing, asks nobody
    assert post_case(client, OBJECT_R3, statement, files).status_code == 303
    assert len(node.nonces) == 2


def test_a_form_changed_after_a_lost_answer_is_another_filing(
    tmp_path: Path, idp: DevIdentityProvider
) -> None:
    client, backend = signed_in(tmp_path, idp)
    node = LosingNode(Unavailable("hrss's node did not take the case"))
    backend.file_case = node.file_case  # type: ignore[method-assign]
    fields = open_form(client, OBJECT_R3)
    assert post_case(client, OBJECT_R3, {**fields, "statement": "one"}).status_code == 503
    # other content under the same form: a fresh nonce (the node would refuse the same nonce
    # with another case), and the node says what is true: the first one is open
    changed = post_case(client, OBJECT_R3, {**fields, "statement": "two"})
    assert changed.status_code == 409 and "a case is already open" in changed.text
    assert len(node.nonces) == 2 and node.nonces[0] != node.nonces[1]


def test_a_form_is_not_left_pending_by_an_unexpected_failure(
    tmp_path: Path, idp: DevIdentityProvider
) -> None:
    client, backend = signed_in(tmp_path, idp)
    node = LosingNode(RuntimeError("the portal failed after the node took the case"))
    backend.file_case = node.file_case  # type: ignore[method-assign]
    fields = open_form(client, OBJECT_R3)
    # the portal answers its plain error page (SecurityHeadersMiddleware)
    failed = post_case(client, OBJECT_R3, {**fields, "statement": "x"})
    assert failed.status_code == 500
    # not "being filed already" for good: sent again, under its nonce, the first receipt
    again = post_case(client, OBJECT_R3, {**fields, "statement": "x"})
    assert again.status_code == 303, again.text
    assert node.nonces[0] == node.nonces[1] and len(node.by_nonce) == 1


def test_my_cases_lists_every_case_with_its_steps_and_overdue_marked(
    tmp_path: Path, idp: DevIdentityProvider
) -> None:
    client, _ = signed_in(tmp_path, idp)
    page = client.get("/me/cases").text
    assert 'id="my-cases"' in page and 'id="nav-cases"' in page
    overdue = page.split(f'id="case-{OPEN_CASE}"', 1)[1].split("</article>", 1)[0]
    # overdue in words, not colour alone
    assert 'id="case-' + OPEN_CASE + '-overdue"' in overdue and "Overdue" in overdue
    decided = page.split(f'id="case-{DECIDED_CASE}"', 1)[1].split("</article>", 1)[0]
    assert "Rejected" in decided and "The record matches the source documents" in decided
    assert decided.count("<li") == 2  # filed, rejected


def test_the_kiosk_says_where_to_file_and_files_nothing(tmp_path: Path) -> None:
    app, reader, backend = kiosk_app(tmp_path)
    client = TestClient(
        app, client=("127.0.0.1", 50000), base_url=KIOSK_URL, follow_redirects=False
    )
    reader.place(ALICE)
    client.get("/")
    records = client.get("/me/records").text
    assert 'id="cases-online-only"' in records and 'id="object-r3"' not in records
    assert client.get(OBJECT_R3).status_code == 403
    assert 'id="my-cases"' in client.get("/me/cases").text
    assert backend.filed == []


# --- the department face ----------------------------------------------------------------------


@pytest.mark.parametrize("identity", [CITIZEN, COURT_OFFICER], ids=["no-claim", "other-dept"])
def test_only_officers_of_the_department_sign_in(
    tmp_path: Path, idp: DevIdentityProvider, identity: int
) -> None:
    client, office = department_app(tmp_path, idp)
    answer = sign_in(client, identity)
    assert answer.status_code == 403 and "Not an officer of this department" in answer.text
    assert "osmanthus_department" in answer.text
    assert client.get("/dept/cases").status_code == 303 and office.queries == []
    [entry] = audit_events(tmp_path)
    assert (entry["extra"]["event"], entry["decision"]) == ("sign_in", "deny")
    assert "osmanthus_department" in entry["reason"]


def page_csp(client: TestClient, path: str) -> str:
    answer = client.get(path)
    assert answer.status_code == 200
    return str(answer.headers["content-security-policy"])


def officer_client(tmp_path: Path, idp: DevIdentityProvider) -> tuple[TestClient, Any]:
    client, office = department_app(tmp_path, idp)
    answer = sign_in(client, HRSS_OFFICER)
    assert answer.status_code == 200 and 'href="/dept/cases"' in answer.text
    return client, office


def test_the_queue_filters_and_marks_overdue_cases(
    tmp_path: Path, idp: DevIdentityProvider
) -> None:
    client, office = officer_client(tmp_path, idp)
    queue = client.get("/dept/cases").text
    assert 'id="dept-queue"' in queue and "李四" in queue
    row = queue.split(f'id="dept-case-{OVERDUE_CASE}"', 1)[1].split("</tr>", 1)[0]
    assert "逾期" in row and "Overdue" in row
    assert f'id="dept-case-{OVERDUE_CASE}" class="dept-case overdue"' in queue
    # the subject is masked in the queue
    assert ALICE not in queue
    overdue = client.get("/dept/cases?show=overdue").text
    assert f"dept-case-{OVERDUE_CASE}" in overdue and f"dept-case-{FRESH_CASE}" not in overdue
    assert office.queries[-1].overdue_only and office.queries[-1].status is CaseStatus.OPEN
    client.get("/dept/cases?show=all")
    assert office.queries[-1].status is None


def test_a_case_page_shows_letter_and_attachments_as_downloads(
    tmp_path: Path, idp: DevIdentityProvider
) -> None:
    client, office = officer_client(tmp_path, idp)
    repair = client.get(f"/dept/cases/{REPAIR_CASE}").text
    assert 'id="dept-case-letter"' in repair and "信用承诺书" in repair
    # a list entry is never corrected in place
    assert 'id="decide-outcome-correct"' not in repair
    page = client.get(f"/dept/cases/{OVERDUE_CASE}").text
    assert 'id="dept-attachment-0"' in page and 'id="decide-form"' in page
    download = client.get(f"/dept/cases/{OVERDUE_CASE}/attachments/0")
    assert download.status_code == 200
    assert download.content == office.contents[(OVERDUE_CASE, 0)]
    assert download.headers["content-type"] == "application/pdf"
    disposition = download.headers["content-disposition"]
    assert disposition.startswith("attachment; filename=")
    assert "filename*=UTF-8''%E7%A7%9F%E6%88%BF" in disposition
    assert download.headers["x-content-type-options"] == "nosniff"
    assert download.headers["cache-control"] == "no-store"
    # a PDF that is HTML too, rendered anyway, runs nothing: sandboxed, loads nothing
    assert download.headers["content-security-policy"] == DOWNLOAD_CSP
    assert DOWNLOAD_CSP == "sandbox; default-src 'none'"
    assert download.headers["x-frame-options"] == "DENY"
    # the pages keep the site's policy
    assert (
        page_csp(client, f"/dept/cases/{OVERDUE_CASE}")
        == (SECURITY_HEADERS["content-security-policy"])
    )
    assert client.get(f"/dept/cases/{OVERDUE_CASE}/attachments/7").status_code == 404
    assert client.get("/dept/cases/not-a-case").status_code == 404


def test_deciding_upholds_corrects_and_rejects_with_a_reason(
    tmp_path: Path, idp: DevIdentityProvider
) -> None:
    client, office = officer_client(tmp_path, idp)
    path = f"/dept/cases/{FRESH_CASE}"
    token = csrf_of(client.get(path).text)
    # no reason, no outcome: named, nothing sent
    empty = client.post(path + "/decide", data={"csrf_token": token})
    assert empty.status_code == 400
    assert 'id="decide-reason-error"' in empty.text and 'id="decide-outcome-error"' in empty.text
    # a correction that changes nothing is refused
    nothing = client.post(
        path + "/decide", data={"csrf_token": token, "outcome": "correct", "reason": "x"}
    )
    assert nothing.status_code == 400 and 'id="decide-correction-error"' in nothing.text
    # without the CSRF token: refused
    assert (
        client.post(path + "/decide", data={"outcome": "reject", "reason": "x"}).status_code == 403
    )
    assert office.decisions == []
    done = client.post(
        path + "/decide",
        data={
            "csrf_token": token,
            "outcome": "correct",
            "reason": "数量有误 The quantity was wrong",
            "quantity": "2",
            "event_start": "2025-03-02",
        },
    )
    assert done.status_code == 303 and done.headers["location"] == path
    [decision] = office.decisions
    assert decision.remedy is CaseRemedy.CORRECT and decision.correction is not None
    assert (
        decision.correction.quantity == 2 and str(decision.correction.event_start) == "2025-03-02"
    )
    after = client.get(path).text
    assert 'id="decided-notice"' in after and 'id="decide-form"' not in after
    # deciding again: the node says it is not open any more
    again = client.post(path + "/decide", data={"csrf_token": token, "outcome": "reject",
                                                "reason": "x"})  # fmt: skip
    assert again.status_code == 409 and "not open" in again.text
    # a repair approved withdraws
    repair = f"/dept/cases/{REPAIR_CASE}/decide"
    ok = client.post(repair, data={"csrf_token": token, "outcome": "withdraw", "reason": "已履行"})
    assert ok.status_code == 303
    assert office.decisions[-1].outcome is CaseStatus.UPHELD
    assert office.decisions[-1].remedy is CaseRemedy.WITHDRAW
    decided = [e for e in audit_events(tmp_path) if e["extra"]["event"] == "decide"]
    assert [e["decision"] for e in decided] == ["allow", "deny", "allow"]
    assert all(e["extra"]["officer"] == "officer-hrss-1" and e["subject_hash"] for e in decided)

"""The demo's objection and credit-repair scenes: a citizen contests a record, an enterprise has a
black-list entry repaired, each department's officer decides at its own node.

They go on from the kiosk scene (osmanthus.demo.portal_scene). 沈桂芳 objects online to the
housing bureau's rental-market violation: the online self-service device (portal-web) asks for
her file as the portal does (Client.subject_file), takes the housing part's case key and the
record's id from it, and files the objection with a statement and a PDF (sdk.cases.file_case:
sealed to the housing node's case key, forwarded unread by the coordinator). The record is
disputed at once, so it stops counting: 106 becomes 116. The housing bureau's officer lists
and decides the case with `osmanthus disputes` (operator certificate "housing"); the kiosk shows
116 again and the outcome. Then the scene enterprise's legal representative applies for credit
repair of the court's black-list entry about it (proof of performance and the credit commitment
letter); the court's officer approves, the entry leaves public view, and the provincial sync job
reports the withdrawal, reason repaired, to the reference receiver.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Final

import duckdb

from certs import PeerRole, cert_paths, issue_certificate
from node.officer import ListOfficer
from osmanthus.core.cases import (
    DEFAULT_DECIDE_WORKING_DAYS,
    DEFAULT_REPLY_WORKING_DAYS,
    MEDIA_PDF,
    AttachmentFile,
    CaseDraft,
    CaseGround,
    CaseKind,
    CaseReceipt,
    CaseTarget,
    commitment_letter,
)
from osmanthus.core.catalogue import load_catalogue
from osmanthus.core.ids import make_resident_id
from osmanthus.core.lists import EntryId
from osmanthus.core.subjectfile import CaseLine, RecordLine, SubjectFile
from osmanthus.core.tls import TlsFiles
from osmanthus.core.types import SELF_QUERY, DepartmentId, Shape, SubjectKind
from osmanthus.demo.launcher import Process, osmanthus_command, spawn
from osmanthus.demo.portal_scene import (
    Device,
    KioskBrowser,
    KioskScene,
    framed,
    osmanthus_program,
    screen_text,
)
from osmanthus.demo.seed import DEMO_CITIZEN, DEMO_ENTERPRISE
from portal.backend import PAILLIER_FILE, SEALING_KEY_FILE, TOKEN_FILE, load_sealing_key
from portal.devidp import DemoIdentity, DevIdentityProvider
from province.store import STORE_FILE
from sdk import Client, load_or_create_keys
from sdk.cases import case_key_bytes, file_case

#: the department whose record the citizen contests, and the record's kind
HOUSING: Final = DepartmentId("housing")
CONTESTED_KIND: Final = "rental_market_violation"
#: the department whose black list names the scene enterprise, and the entry (run.py publishes
#: it in the lists scene, before the sync job's first run, so that the province holds it)
COURT: Final = DepartmentId("court")
REPAIR_ENTRY: Final = EntryId("2026-su05-zhi-0123")
REPAIR_LIST: Final = "judgement_defaulters"
#: the departments whose officers decide in the scenes (operator certificates of these names)
CASE_OFFICERS: Final = (HOUSING, COURT)
#: the CLI's longest honest wait: it connects to one node on loopback
CLI_TIMEOUT_S: Final = 300.0
#: China Standard Time, for the receipt's filing time
_CST: Final = timedelta(hours=8)
#: the housing bureau's case officer the demo's identity provider offers for the department
#: desk: the ID token carries osmanthus_department=housing (a made-up resident id, no records)
HOUSING_OFFICER: Final = DemoIdentity(
    label="李敏 Li Min（市住建局 案件办理 housing bureau case officer）",
    subject="demo-officer-housing",
    resident_id=make_resident_id(region="320505", birth=date(1990, 4, 2), sequence=231),
    name="李敏 Li Min",
    department=HOUSING,
)


def issue_case_officers(certs: Path) -> None:
    """Operator certificates named after the deciding departments in the platform's certificate
    directory, where `osmanthus disputes --certs-dir` finds them (as `osmanthus certs issue
    --role operator --name housing` puts them)."""
    for department in CASE_OFFICERS:
        issue_certificate(certs, role=PeerRole.OPERATOR, name=department)


@dataclass(frozen=True)
class CasesContext:
    """What the scenes use of the running demo."""

    certs: Path
    #: the coordinator's host:port
    target: str
    #: the online self-service site's device (portal-web: role portal)
    online: Device
    kiosk: KioskScene
    #: department id → its node's host:port
    nodes: dict[str, str]
    #: a requester that searches the public lists and asks about restrictions (agency-1)
    agency: Client
    #: the sync job's configuration (targets filled in) and the running reference receiver
    sync_config: Path
    receiver: Process
    province_state: Path


@dataclass(frozen=True)
class CasesScene:
    """What the scenes did (the --keep-running instructions name the objection's case)."""

    objection_case: str
    scores: tuple[int, int, int]  # before, while disputed, after the decision
    objection_outcome: str
    repair_case: str
    in_view_after: int
    province_withdrawal: str


# --- a small, valid PDF made in code -----------------------------------------------------------


def one_page_pdf(title: str, lines: Sequence[str]) -> bytes:
    """A one-page PDF (ISO 32000-1: header, five objects, a cross-reference table with each
    object's byte offset, trailer) showing `title` and `lines` in Helvetica; ASCII text only."""

    def escaped(text: str) -> str:
        text.encode("ascii")  # a standard 14 font has no CJK glyphs
        return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    shown = [f"BT /F1 18 Tf 72 770 Td ({escaped(title)}) Tj ET"] + [
        f"BT /F1 11 Tf 72 {740 - 18 * n} Td ({escaped(line)}) Tj ET" for n, line in enumerate(lines)
    ]
    content = "\n".join(shown).encode("ascii")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
        b"/Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


# --- the online device, as the portal uses it ---------------------------------------------------


def _device_client(device: Device, target: str) -> Client:
    token = (device.directory / TOKEN_FILE).read_text(encoding="utf-8").strip()
    keys = load_or_create_keys(device.directory / PAILLIER_FILE)
    return Client(target, tls=device.tls, token=token, keys=keys)


def _part(
    client: Client, device: Device, kind: SubjectKind, subject: str, source: str
) -> SubjectFile:
    """The subject's file as the portal reads it, and the part of department `source`."""
    result = client.subject_file(
        subject_kind=kind,
        subject_id=subject,
        sealing_key=load_sealing_key(device.directory / SEALING_KEY_FILE),
    )
    return next(p for p in result.departments if p.source == source)


def _cst(moment: datetime) -> str:
    return f"{(moment.astimezone(UTC) + _CST):%Y-%m-%d %H:%M} CST"


def _receipt(receipt: CaseReceipt, department: str) -> str:
    # the demo's nodes run with the default deadlines (osmanthus.core.workdays.CaseSettings)
    return (
        f"  receipt: case {receipt.case_id}, filed {_cst(receipt.filed_at)} at the {department} "
        f"node; the department decides by {receipt.decide_by} ({DEFAULT_DECIDE_WORKING_DAYS} "
        f"working days), the reply is due by {receipt.reply_by} ({DEFAULT_REPLY_WORKING_DAYS} "
        "working days)"
    )


def _record_line(record: RecordLine) -> str:
    end = f" – {record.event_end}" if record.event_end else ""
    return (
        f"{record.record_id} {record.kind} · {record.event_start}{end} · −{record.points} · "
        f"status {record.status} · {record.state}"
    )


def _case_line(case: CaseLine) -> str:
    decided = f", decided {case.decided_at[:10]}" if case.decided_at else ""
    remedy = f" ({case.remedy})" if case.remedy else ""
    reason = f": {case.decision_reason}" if case.decision_reason else ""
    steps = ", ".join(f"{s.event} {s.at[:16].replace('T', ' ')} UTC" for s in case.steps)
    return (
        f"{case.case_id} {case.kind} about {case.target} {case.target_id}: "
        f"{case.status}{remedy}{decided}{reason} [steps: {steps}]"
    )


# --- the department's officer, at the command line ----------------------------------------------


def _officer(
    ctx: CasesContext,
    department: str,
    *args: str,
    say: Callable[[str], None],
    lines: int | None = None,
) -> str:
    """Run `osmanthus disputes ARGS` as `department`'s officer; print the command and its
    output (its first `lines` lines, if given), as the officer sees them; its stdout."""
    connection = ("--node", ctx.nodes[department], "--department", department,
                  "--certs-dir", str(ctx.certs))  # fmt: skip
    argv = ("disputes", *args, *connection)
    shown = " ".join(f'"{a}"' if " " in a else a for a in argv)
    say(f"  $ {Path(osmanthus_program()).name} {shown}")
    done = subprocess.run(
        osmanthus_command(*argv), capture_output=True, text=True, timeout=CLI_TIMEOUT_S
    )
    output = (done.stdout.rstrip() or done.stderr.rstrip()).splitlines()
    for line in output[:lines]:
        say(f"    {line}")
    if lines is not None and len(output) > lines:
        say(f"    … {len(output) - lines} more lines: the whole case, as for the first decision")
    if done.returncode != 0:
        raise RuntimeError(
            f"osmanthus {' '.join(args[:1])} exited {done.returncode}: {done.stderr.strip()}"
        )
    return done.stdout


# --- the scenes ------------------------------------------------------------------------------


def objection_scene(
    ctx: CasesContext, *, step: Callable[[str], None], say: Callable[[str], None]
) -> tuple[str, tuple[int, int, int], str]:
    """沈桂芳 objects to the housing bureau's record online; its officer upholds the objection;
    the kiosk shows 116. (case id, scores, the outcome line)."""
    citizen = DEMO_CITIZEN.subject_id
    step(
        "Online, 沈桂芳 objects to one of her records (异议): the self-service site portal-web "
        "(role portal) reads her file, takes the housing bureau's case key and the record's id "
        "from its sealed part, and files her statement with a PDF, sealed to the housing node: "
        "the coordinator forwards it unread"
    )
    with _device_client(ctx.online, ctx.target) as client:
        before = client.person_score(citizen, purpose=SELF_QUERY, shape=Shape.BREAKDOWN).score
        housing = _part(client, ctx.online, SubjectKind.PERSON, citizen, HOUSING)
        record = next(r for r in housing.records if r.kind == CONTESTED_KIND)
        say(f"  the housing bureau's record: {_record_line(record)}")
        certificate = one_page_pdf(
            "Tenancy registration certificate",
            [
                "Suzhou Housing and Urban-Rural Development Bureau",
                "Certificate No. SZ-ZL-2026-0038121 (demo)",
                f"Landlord: Shen Guifang, resident id {citizen[:6]}********{citizen[-4:]}",
                f"Tenancy from {record.event_start} registered with the Gusu district office",
                "within the 30 days the rules allow.",
            ],
        )
        draft = CaseDraft(
            kind=CaseKind.OBJECTION,
            ground=CaseGround.RECORD,
            target=CaseTarget.RECORD,
            target_id=record.record_id,
            statement=(
                "该房屋租赁已在规定期限内办理登记备案，处罚认定的“未登记出租”与事实不符，"
                "附租赁登记备案证明。 The tenancy was registered within the period the rules "
                "allow, so the penalty's finding (an unregistered letting) is wrong; the "
                "registration certificate is attached."
            ),
            attachments=(
                AttachmentFile(
                    name="tenancy-registration-certificate.pdf",
                    media_type=MEDIA_PDF,
                    content=certificate,
                ),
            ),
        )
        receipt = file_case(
            client,
            subject_kind=SubjectKind.PERSON,
            subject_id=citizen,
            department=HOUSING,
            draft=draft,
            case_key=case_key_bytes(housing.case_key),
            sender_key=load_sealing_key(ctx.online.directory / SEALING_KEY_FILE),
        )
        say(_receipt(receipt, HOUSING))
        housing = _part(client, ctx.online, SubjectKind.PERSON, citizen, HOUSING)
        disputed = next(r for r in housing.records if r.record_id == record.record_id)
        say(f"  a fresh file at once: {_record_line(disputed)}")
        during = client.person_score(citizen, purpose=SELF_QUERY, shape=Shape.BREAKDOWN).score
        say(
            f"  her score: {before} → {during}: a disputed record does not count while its "
            f"case is open (the −{record.points} is gone)"
        )

        step(
            "The housing bureau's officer (operator certificate 'housing') finds the case in "
            "the department's queue and upholds it: the record is withdrawn for good, in the "
            "node's record history"
        )
        _officer(ctx, HOUSING, "list", say=say)
        _officer(
            ctx, HOUSING, "decide", receipt.case_id, "--uphold", "--withdraw",
            "--reason", "租赁登记备案属实，撤销该记录 The tenancy was registered in time; "
            "the record is withdrawn",
            say=say,
        )  # fmt: skip

        step("Back at the kiosk, she places her card again")
        browser = KioskBrowser(
            ctx.kiosk.url,
            simulator_secret=ctx.kiosk.simulator_secret_file.read_text(encoding="utf-8").strip(),
        )
        browser.card("place", citizen)
        try:
            screen = screen_text(browser.get("/"))
            cases_page = _kiosk_cases(browser)
        finally:
            browser.card("remove")
        shown = next((line for line in screen if "Osmanthus score" in line), " ".join(screen[:1]))
        after = int(shown.split()[-1]) if shown.split()[-1].isdigit() else -1
        say(f"  the kiosk's screen: {shown}")
        shown_case = [line for line in cases_page if receipt.case_id in line]
        if shown_case:
            # from her case on: the page's hint on where to file is the kiosk's, not hers
            start = cases_page.index(shown_case[0])
            end = next(
                (i for i, line in enumerate(cases_page) if i > start and "Ask again" in line),
                len(cases_page),
            )
            say(framed("我的异议与修复 My cases (the kiosk)", cases_page[start:end]))
            outcome = shown_case[0]
        else:  # a kiosk without the page: her file says the same
            housing = _part(client, ctx.online, SubjectKind.PERSON, citizen, HOUSING)
            case = next(c for c in housing.cases if c.case_id == receipt.case_id)
            outcome = _case_line(case)
            say(f"  her case, as her file shows it: {outcome}")
        say(
            f"  {before} while the record counted, {during} while it was disputed, {after} "
            "now: a disputed record already stops counting, so upholding the objection "
            "leaves the score as it was and makes it final (a rejection would have brought "
            f"the −{record.points} back)"
        )
    return receipt.case_id, (before, during, after), outcome


def _kiosk_cases(browser: KioskBrowser) -> list[str]:
    """The kiosk's "my cases" page, if the kiosk serves one (the online site always does)."""
    try:
        return screen_text(browser.get("/me/cases"))
    except OSError:
        return []


def repair_scene(
    ctx: CasesContext, *, step: Callable[[str], None], say: Callable[[str], None]
) -> tuple[str, int, str]:
    """The scene enterprise applies for credit repair of the court's black-list entry; the
    court's officer approves; the entry leaves public view and the province receives the
    withdrawal. (case id, entries in view after, the province's record)."""
    firm = DEMO_ENTERPRISE
    assert firm.representative is not None
    code = firm.subject_id
    step(
        f"Credit repair (信用修复): {firm.representative.name}, legal representative of "
        f"{firm.name}, has paid the judgement debt behind the court's black-list entry and "
        "applies online with proof and the credit commitment letter the portal renders"
    )
    with _device_client(ctx.online, ctx.target) as client:
        court = _part(client, ctx.online, SubjectKind.ENTERPRISE, code, COURT)
        entry = next(e for e in court.list_entries if e.entry_id == REPAIR_ENTRY)
        say(
            f"  his file shows the entry: {entry.colour} list {entry.list} {entry.entry_id}, "
            f"{entry.window_start} to {entry.window_end}, {entry.status}"
        )
        letter = commitment_letter(
            subject_kind=SubjectKind.ENTERPRISE,
            subject_id=code,
            department=load_catalogue().department(COURT),
            target=CaseTarget.LIST_ENTRY,
            target_id=entry.entry_id,
        )
        say(
            framed(
                "信用承诺书 Credit commitment letter (he ticks 'I confirm')", letter.splitlines()
            )
        )
        proof = one_page_pdf(
            "Certificate of performance of judgement",
            [
                "Suzhou Intermediate People's Court, enforcement division",
                f"Judgement debtor: Suzhou Guiyuan Weaving Co., Ltd. ({code})",
                "The sum the judgement ordered, with interest and costs, was paid in full.",
                "The enforcement case is closed. (demo document)",
            ],
        )
        draft = CaseDraft(
            kind=CaseKind.REPAIR,
            ground=CaseGround.FULFILLED,
            target=CaseTarget.LIST_ENTRY,
            target_id=entry.entry_id,
            statement=(
                "本公司已全额履行生效判决确定的义务，执行案件已结案，申请信用修复。 The company "
                "has paid in full what the judgement ordered and the enforcement case is "
                "closed; it applies for credit repair."
            ),
            attachments=(
                AttachmentFile(
                    name="performance-certificate.pdf", media_type=MEDIA_PDF, content=proof
                ),
            ),
            commitment_letter=letter,
        )
        receipt = file_case(
            client,
            subject_kind=SubjectKind.ENTERPRISE,
            subject_id=code,
            department=COURT,
            draft=draft,
            case_key=case_key_bytes(court.case_key),
            sender_key=load_sealing_key(ctx.online.directory / SEALING_KEY_FILE),
        )
        say(_receipt(receipt, COURT))

    step("The court's officer approves the repair: the entry is withdrawn, reason repaired")
    _officer(
        ctx, COURT, "decide", receipt.case_id, "--uphold", "--withdraw",
        "--reason", "判决义务已履行完毕，准予信用修复 The judgement is performed; repair approved",
        say=say, lines=2,
    )  # fmt: skip
    left = ctx.agency.search_lists(kind=SubjectKind.ENTERPRISE, subject=code).entries
    say(f"  the public list search for {code} finds {len(left)} entries in view")
    restricted = ctx.agency.check_restrictions(
        code, measures=("bank_loan", "government_procurement"), purpose="credit_report"
    )
    verdicts = ", ".join(
        f"{m} {'RESTRICTED' if v else 'no'}" for m, v in restricted.restricted.items()
    )
    say(f"  and the measures its flag triggered no longer apply: {verdicts}")
    court_tls = TlsFiles.from_cert_paths(cert_paths(ctx.certs, role=PeerRole.OPERATOR, name=COURT))
    with ListOfficer(ctx.nodes[COURT], department=COURT, tls=court_tls) as officer:
        kept = next(
            e for e in officer.history(SubjectKind.ENTERPRISE, code)
            if e.entry.entry_id == REPAIR_ENTRY
        )  # fmt: skip
    events = ", ".join(f"{e.event} {e.at:%Y-%m-%d %H:%M} UTC" for e in kept.events)
    reason = kept.withdraw_reason.value if kept.withdraw_reason else "none"
    say(
        f"  the court's history keeps {REPAIR_ENTRY}: {events}; now {kept.status.value} "
        f"({reason}, reference {kept.withdraw_reference})"
    )

    step("The provincial sync job runs again and reports the withdrawal upward")
    done = subprocess.run(
        osmanthus_command("sync", "run", "--config", str(ctx.sync_config), "--quiet"),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )
    line = (done.stdout.strip().splitlines() or [done.stderr.strip()])[-1]
    say(f"  third run (exit {done.returncode}): {line}")
    # the receiver's store is one DuckDB file its process holds open: read once it has stopped
    ctx.receiver.stop()
    received = _province_changes(ctx.province_state / STORE_FILE, REPAIR_ENTRY)
    for change in received:
        say(f"  the province received: {change}")
    withdrawal = next((c for c in received if "withdrawn" in c), "no withdrawal")
    return receipt.case_id, len(left), withdrawal


def _province_changes(store: Path, entry_id: str) -> list[str]:
    """The list changes about `entry_id` the reference receiver stored, oldest first."""
    with duckdb.connect(str(store), read_only=True) as conn:
        rows = conn.execute(
            "SELECT b.sequence, r.record FROM records r JOIN batches b USING (batch_id) "
            "WHERE b.kind = 'list_changes' ORDER BY b.sequence, r.record_no"
        ).fetchall()
    changes = []
    for sequence, raw in rows:
        record = json.loads(raw)
        if record.get("entry_id") != entry_id:
            continue
        reason = record.get("withdraw_reason")
        changes.append(
            f"list_changes #{sequence}: {record['entry_id']} {record['event']} "
            f"{str(record.get('event_at', ''))[:16].replace('T', ' ')} UTC"
            + (f", reason {reason}" if reason else "")
        )
    return changes


def cases_scenes(
    ctx: CasesContext, *, step: Callable[[str], None], say: Callable[[str], None]
) -> CasesScene:
    """Both scenes, the objection first."""
    objection, scores, outcome = objection_scene(ctx, step=step, say=say)
    repair, in_view, withdrawal = repair_scene(ctx, step=step, say=say)
    return CasesScene(
        objection_case=objection,
        scores=scores,
        objection_outcome=outcome,
        repair_case=repair,
        in_view_after=in_view,
        province_withdrawal=withdrawal,
    )


# --- the department desk, for --keep-running ----------------------------------------------


def start_desk(
    *,
    department: str,
    certs: Path,
    node: str,
    state_dir: Path,
    run_dir: Path,
    provider: DevIdentityProvider,
) -> tuple[Process, str]:
    """The portal's department face for `department` (`osmanthus portal serve --mode
    department`, its officer's operator certificate from `certs`), signing officers in at
    `provider`; (process, its URL)."""
    process = spawn(
        f"portal-{department}-desk",
        osmanthus_command(
            "portal", "serve", "--mode", "department", "--department", department,
            "--node", node, "--certs-dir", str(certs), "--state-dir", str(state_dir),
            "--listen", "127.0.0.1:0", "--issuer", provider.issuer,
            "--client-id", provider.client_id, "--allow-loopback-http",
        ),
        run_dir=run_dir,
        own_session=True,
    )  # fmt: skip
    port = process.wait_ready(report=None)
    url = f"http://127.0.0.1:{port}"
    provider.register_redirect_uri(f"{url}/auth/callback")
    return process, url


def desk_how_to(*, url: str, certs: Path, node: str, case_id: str) -> str:
    """How to try the housing bureau's desk and its officer's command line (for how_to_try)."""
    program = osmanthus_program()
    return f"""\
The housing bureau's desk for objections and credit repair (the portal's department face):
  {url}/
  click 登录 Sign in, then choose {HOUSING_OFFICER.label}
  (its ID token carries osmanthus_department={HOUSING}; anyone else is refused). The queue's
  "all" filter shows 沈桂芳's upheld objection {case_id}, with her PDF to download.
  The same at the command line, with the officer's operator certificate:
    {program} disputes list --status all --node {node} --department {HOUSING} \\
        --certs-dir {certs}
    {program} disputes show {case_id} --node {node} --department {HOUSING} \\
        --certs-dir {certs}
"""


__all__ = [
    "CASE_OFFICERS",
    "HOUSING_OFFICER",
    "CasesContext",
    "CasesScene",
    "cases_scenes",
    "desk_how_to",
    "issue_case_officers",
    "one_page_pdf",
    "start_desk",
]

"""`osmanthus disputes`: a department's officer reads and decides objections and repair cases."""

from __future__ import annotations

import argparse
import json
import unicodedata
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from osmanthus.cli.exit_codes import ExitCode
from osmanthus.cli.options import (
    Subcommands,
    command,
    command_group,
    iso_date,
    tls_files,
    tls_options,
)
from osmanthus.core.errors import InvalidArgument

if TYPE_CHECKING:
    from osmanthus.core.cases import Case, Decision
    from sdk.caseoffice import CaseOffice

#: how an overdue case is marked in text (not by colour alone): Chinese first, then English
OVERDUE_MARK: Final = "逾期 OVERDUE"
#: the statuses `list --status` takes; "all" asks for every status
_STATUSES: Final = ("open", "upheld", "rejected", "all")
#: cases asked for per page while `list` follows every page (the node's most)
_PAGE_SIZE: Final = 100

_OFFICE_NOTE = (
    "Every command connects to the department's own node with the officer's operator "
    "certificate, named after the department ('osmanthus certs issue --role operator --name "
    "housing'); the node refuses any other certificate, another department's included."
)


def register(subcommands: Subcommands) -> None:
    """Add `disputes list|show|attachment|decide`."""
    disputes = command_group(
        subcommands,
        "disputes",
        "a department's objections (异议) and credit-repair cases (信用修复)",
        "Read and decide the cases subjects filed through the online portal about the "
        "department's records and list entries: objections (the record, or a list entry's "
        "content or period, is wrong) and credit-repair applications (the obligation behind a "
        "black-list entry or a published penalty is fulfilled, with a signed commitment "
        "letter). The department decides each case within its deadline in working days "
        "(decide by; the reply to the subject is due by reply by); a case still open after "
        f"its deadline is marked {OVERDUE_MARK}. {_OFFICE_NOTE}\n\n"
        "A usual round: 'disputes list' (the open cases, overdue ones marked), 'disputes show "
        "CASE' (the statement, the letter, the attachments, every step), 'disputes attachment "
        "CASE 0 -o proof.pdf' (read the proof), then 'disputes decide CASE ... --reason TEXT'. "
        "The subject sees every step and the reason in their file at the portal.",
    )
    p = command(
        disputes,
        "list",
        "the department's cases, newest first (overdue ones marked)",
        "List the department's cases, newest first: case id, day filed (China time), kind, "
        "what it is about (record or list entry and its id), the subject, status and the "
        f"deadline. An open case past its deadline is marked {OVERDUE_MARK} (the node decides "
        "by its own calendar of working days). By default only the open cases are listed.\n\n"
        "example: osmanthus disputes list --overdue --node 10.0.0.7:50051 --department "
        "housing --certs-dir /etc/osmanthus/certs",
        _cmd_list,
        parents=[_office_options()],
    )
    p.add_argument(
        "--status",
        choices=_STATUSES,
        default="open",
        help="which cases: open (the queue), upheld, rejected, or all",
    )
    p.add_argument("--overdue", action="store_true", help="only open cases past their deadline")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p = command(
        disputes,
        "show",
        "one case in full: statement, letter, attachments and every step",
        "Print one case: the subject, what the case is about, the subject's statement, the "
        "commitment letter of a repair as the subject confirmed it (with its SHA-256), the "
        "attachments (index, name, type checked by content, size, SHA-256; fetch one with "
        "'disputes attachment'), the deadlines and every step with who took it and when (UTC). "
        "Exit 3 for an unknown case id.",
        _cmd_show,
        parents=[_office_options()],
    )
    p.add_argument("case_id", metavar="CASE_ID", help="the case id, e.g. case-3q2x…")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p = command(
        disputes,
        "attachment",
        "save one attachment of a case to a file",
        "Fetch attachment INDEX (from 0, as 'disputes show' lists them) of a case from the "
        "node, which keeps it encrypted, check it against the SHA-256 the subject filed, and "
        "write it to FILE (mode 0600: it is the subject's personal data; delete it when the "
        "case is decided). The file appears whole or not at all, and an existing file is "
        "kept unless --force. An attachment past the case's retention period is deleted at "
        "the node: exit 4.",
        _cmd_attachment,
        parents=[_office_options()],
    )
    p.add_argument("case_id", metavar="CASE_ID", help="the case id")
    p.add_argument("index", metavar="INDEX", type=int, help="the attachment's index, from 0")
    p.add_argument(
        "-o", "--output", metavar="FILE", type=Path, required=True, help="where to write it"
    )
    p.add_argument("--force", action="store_true", help="replace FILE if it exists")
    p = command(
        disputes,
        "decide",
        "uphold or reject an open case, with the reason the subject reads",
        "Decide an open case; the decision is final (a case is decided once: exit 4 if it is "
        "not open) and the subject reads the reason in their file.\n\n"
        "Objection about a record, upheld: --uphold --withdraw (the record stops counting for "
        "good) or --uphold --correct with the corrected --quantity, --event-start and/or "
        "--event-end (checked as an import checks them). Objection about a list entry, upheld: "
        "--uphold --withdraw (the entry leaves public view, reason 'error'; publish a "
        "corrected entry under a new id with 'osmanthus lists publish' if one is due: entries "
        "never change in place). Credit repair, approved: --uphold --withdraw (the entry "
        "leaves public view with reason 'repaired' and the sync job reports it to the "
        "province; a penalty record stops counting). --reject: the record or entry stands "
        "(a disputed record counts again).\n\n"
        "examples:\n"
        "  osmanthus disputes decide case-… --uphold --withdraw --reason '处罚已撤销 The "
        "penalty was annulled on review' --node … --department housing --certs-dir …\n"
        "  osmanthus disputes decide case-… --uphold --correct --quantity 2 --reason '…' …\n"
        "  osmanthus disputes decide case-… --reject --reason '记录与判决一致 The record "
        "matches the judgment' …",
        _cmd_decide,
        parents=[_office_options()],
    )
    p.add_argument("case_id", metavar="CASE_ID", help="the case id")
    outcome = p.add_mutually_exclusive_group(required=True)
    outcome.add_argument(
        "--uphold", action="store_true", help="uphold the objection or approve the repair"
    )
    outcome.add_argument("--reject", action="store_true", help="the record or entry stands")
    remedy = p.add_mutually_exclusive_group()
    remedy.add_argument(
        "--withdraw", action="store_true", help="with --uphold: withdraw the record or entry"
    )
    remedy.add_argument(
        "--correct", action="store_true", help="with --uphold: correct the record's fields"
    )
    p.add_argument("--quantity", type=int, help="with --correct: the record's right quantity")
    p.add_argument(
        "--event-start", type=iso_date, metavar="DATE", help="with --correct: the right start"
    )
    p.add_argument(
        "--event-end", type=iso_date, metavar="DATE", help="with --correct: the right end"
    )
    p.add_argument(
        "--reason", required=True, help="why, in words the subject reads (up to 2,000 chars)"
    )
    p.add_argument("--json", action="store_true", help="print the decided case as JSON")


def _office_options() -> argparse.ArgumentParser:
    """The node and the officer's certificate, as every `lists` office command takes them."""
    parent = argparse.ArgumentParser(add_help=False, parents=[tls_options(role_hint="operator")])
    parent.add_argument("--node", required=True, metavar="HOST:PORT", help="the department's node")
    parent.add_argument("--department", required=True, help="department id, e.g. housing")
    parent.add_argument(
        "--operator",
        help="name of your operator certificate in --certs-dir (default: the department id; "
        "issue it with 'osmanthus certs issue --role operator --name DEPARTMENT')",
    )
    return parent


def _office(args: argparse.Namespace) -> CaseOffice:
    from osmanthus.core.catalogue import DEPARTMENT_ID_PATTERN
    from osmanthus.core.types import DepartmentId
    from sdk.caseoffice import CaseOffice

    if not DEPARTMENT_ID_PATTERN.match(args.department):
        raise InvalidArgument(
            f"{args.department[:40]!r} is not a department id (lower-case letters, digits and "
            "'_', starting with a letter)",
            field="department",
        )
    tls = tls_files(args, role="operator", name=args.operator or args.department)
    return CaseOffice(args.node, tls=tls, department=DepartmentId(args.department))


# --- list ------------------------------------------------------------------------------------


def _cmd_list(args: argparse.Namespace) -> int:
    from osmanthus.core.cases import CaseQuery, CaseStatus

    status = None if args.status == "all" else CaseStatus(args.status)
    if args.overdue and status not in (None, CaseStatus.OPEN):
        raise InvalidArgument(
            "only open cases are overdue: --overdue goes with --status open or all",
            field="overdue",
        )
    cases: list[Case] = []
    token = ""
    with _office(args) as office:
        while True:
            page = office.list_cases(
                CaseQuery(
                    status=status,
                    overdue_only=args.overdue,
                    page_size=_PAGE_SIZE,
                    page_token=token,
                )
            )
            cases.extend(page.cases)
            token = page.next_page_token
            if not token or not page.cases:
                break
    if args.json:
        document = {
            "department": args.department,
            "status": args.status,
            "overdue_only": args.overdue,
            "cases": [_case_json(c) for c in cases],
        }
        print(json.dumps(document, ensure_ascii=False, indent=2))
        return ExitCode.SUCCESS
    asked = "every status" if status is None else status.value
    overdue = sum(1 for c in cases if c.overdue)
    print(
        f"{len(cases)} cases at {args.department} ({asked}"
        + (", overdue only" if args.overdue else "")
        + f"), newest first; {overdue} overdue"
    )
    if cases:
        _print_table(cases)
    return ExitCode.SUCCESS


def _print_table(cases: Sequence[Case]) -> None:
    header = ("CASE", "FILED (CST)", "KIND", "ABOUT", "SUBJECT", "STATUS", "DECIDE BY")
    rows = [
        (
            c.case_id,
            _china(c.filed_at),
            c.kind.value,
            f"{c.target.value} {c.target_id}",
            f"{c.subject_kind.value} {c.subject_id}",
            c.status.value + (f"  {OVERDUE_MARK}" if c.overdue else ""),
            c.decide_by.isoformat(),
        )
        for c in cases
    ]
    widths = [max(_width(r[i]) for r in (header, *rows)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = (c + " " * (w - _width(c)) for c, w in zip(cells, widths, strict=True))
        return "  ".join(padded).rstrip()

    print(line(header))
    for row in rows:
        print(line(row))


def _width(text: str) -> int:
    """Columns `text` takes in a terminal: Chinese characters take two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _china(moment: datetime) -> str:
    from osmanthus.core.clock import CHINA_STANDARD_TIME

    return moment.astimezone(CHINA_STANDARD_TIME).strftime("%Y-%m-%d %H:%M")


# --- show ------------------------------------------------------------------------------------


def _cmd_show(args: argparse.Namespace) -> int:
    with _office(args) as office:
        case = office.get_case(args.case_id)
    if args.json:
        print(json.dumps(_case_json(case), ensure_ascii=False, indent=2))
    else:
        _print_case(case)
    return ExitCode.SUCCESS


def _print_case(case: Case) -> None:
    overdue = f"  {OVERDUE_MARK}" if case.overdue else ""
    print(f"{case.case_id}  {case.kind.value} ({case.ground.value})  {case.status.value}{overdue}")
    print(f"  department   {case.department}")
    print(f"  subject      {case.subject_kind.value} {case.subject_id}")
    print(f"  about        {case.target.value} {case.target_id}")
    print(f"  filed        {_china(case.filed_at)} (China time)")
    print(f"  decide by    {case.decide_by} (the department's deadline, working days)")
    print(f"  reply by     {case.reply_by} (the reply to the subject)")
    if case.decided_at is not None:
        remedy = f", {case.remedy.value}" if case.remedy is not None else ""
        print(f"  decided      {_china(case.decided_at)} (China time): {case.status.value}{remedy}")
        if case.correction is not None:
            print(f"  corrected    {_correction_text(case)}")
        print(f"  reason       {_indented(case.decision_reason)}")
    print(f"  statement    {_indented(case.statement)}")
    if case.commitment_letter:
        print(f"  letter       sha256 {case.letter_sha256}")
        for text in case.commitment_letter.splitlines():
            print(f"    {text}")
    if case.attachments:
        print("  attachments")
        for a in case.attachments:
            state = "  deleted (retention period over)" if a.deleted else ""
            print(f"    [{a.index}] {a.name}  {a.media_type}  {a.size} bytes{state}")
            print(f"        sha256 {a.sha256}")
    else:
        print("  attachments  none")
    print("  steps (UTC)")
    for event in case.events:
        when = event.at.strftime("%Y-%m-%dT%H:%M:%SZ")
        detail = f": {event.detail}" if event.detail else ""
        print(f"    {when}  {event.event} by {event.actor}{detail}")


def _indented(text: str) -> str:
    return text.replace("\n", "\n" + " " * 15)


def _correction_text(case: Case) -> str:
    c = case.correction
    assert c is not None
    parts = [
        f"{name} {value}"
        for name, value in (
            ("quantity", c.quantity),
            ("event_start", c.event_start),
            ("event_end", c.event_end),
            ("window_end", c.window_end),
        )
        if value is not None
    ]
    return ", ".join(parts)


# --- attachment ------------------------------------------------------------------------------


def _cmd_attachment(args: argparse.Namespace) -> int:
    from osmanthus.core.errors import FailedPrecondition
    from osmanthus.core.files import PRIVATE_FILE_MODE, write_atomically

    output: Path = args.output
    if output.exists() and not args.force:
        # checked first so that nothing is fetched for nothing; the write refuses it again
        # should the file appear meanwhile
        raise InvalidArgument(f"{output} exists; add --force to replace it", field="output")
    with _office(args) as office:
        info, content = office.attachment(args.case_id, args.index)
    if info.deleted:
        raise FailedPrecondition(
            f"attachment {info.index} ({info.name}) of {args.case_id} was deleted at the end "
            "of the case's retention period",
            field="index",
        )
    write_atomically(output, content, mode=PRIVATE_FILE_MODE, overwrite=args.force, field="output")
    print(
        f"wrote {output}: attachment {info.index} of {args.case_id}, {info.name!r}, "
        f"{info.media_type}, {info.size} bytes, sha256 {info.sha256} (checked)"
    )
    return ExitCode.SUCCESS


# --- decide ----------------------------------------------------------------------------------


def _cmd_decide(args: argparse.Namespace) -> int:
    decision = _decision(args)
    with _office(args) as office:
        case = office.decide(decision)
    if args.json:
        print(json.dumps(_case_json(case), ensure_ascii=False, indent=2))
    else:
        print(f"decided: {case.case_id} {case.status.value}")
        _print_case(case)
    return ExitCode.SUCCESS


def _decision(args: argparse.Namespace) -> Decision:
    """The Decision the flags describe, checked (InvalidArgument naming the flag otherwise)."""
    from osmanthus.core.cases import CaseCorrection, CaseRemedy, CaseStatus, Decision
    from sdk.caseoffice import check_case_id

    correcting = (args.quantity, args.event_start, args.event_end)
    if any(v is not None for v in correcting) and not args.correct:
        raise InvalidArgument(
            "--quantity, --event-start and --event-end go with --uphold --correct",
            field="correct",
        )
    if args.reject and (args.withdraw or args.correct):
        raise InvalidArgument(
            "a rejection changes nothing: no --withdraw or --correct", field="reject"
        )
    if args.uphold and not (args.withdraw or args.correct):
        raise InvalidArgument(
            "an upheld case needs a remedy: --withdraw or --correct", field="uphold"
        )
    if args.correct and all(v is None for v in correcting):
        raise InvalidArgument(
            "say what --correct changes: --quantity, --event-start and/or --event-end",
            field="correct",
        )
    if args.quantity is not None and args.quantity < 1:
        raise InvalidArgument("must be at least 1", field="quantity")
    remedy = CaseRemedy.WITHDRAW if args.withdraw else CaseRemedy.CORRECT if args.correct else None
    return Decision(
        case_id=check_case_id(args.case_id),
        outcome=CaseStatus.UPHELD if args.uphold else CaseStatus.REJECTED,
        reason=args.reason,
        remedy=remedy,
        correction=(
            CaseCorrection(
                quantity=args.quantity, event_start=args.event_start, event_end=args.event_end
            )
            if args.correct
            else None
        ),
    ).checked()


# --- JSON ------------------------------------------------------------------------------------


def _iso(value: date | datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _case_json(case: Case) -> dict[str, Any]:
    """A case as `--json` prints it: every field, times in UTC (RFC 3339), dates ISO."""
    correction = case.correction
    return {
        "case_id": case.case_id,
        "department": case.department,
        "kind": case.kind.value,
        "ground": case.ground.value,
        "target": case.target.value,
        "target_id": case.target_id,
        "subject_kind": case.subject_kind.value,
        "subject_id": case.subject_id,
        "statement": case.statement,
        "commitment_letter": case.commitment_letter,
        "letter_sha256": case.letter_sha256,
        "filed_at": _iso(case.filed_at),
        "decide_by": _iso(case.decide_by),
        "reply_by": _iso(case.reply_by),
        "overdue": case.overdue,
        "status": case.status.value,
        "decided_at": _iso(case.decided_at),
        "decision_reason": case.decision_reason,
        "remedy": case.remedy.value if case.remedy is not None else None,
        "correction": None
        if correction is None
        else {
            "quantity": correction.quantity,
            "event_start": _iso(correction.event_start),
            "event_end": _iso(correction.event_end),
            "window_end": _iso(correction.window_end),
        },
        "attachments": [
            {
                "index": a.index,
                "name": a.name,
                "media_type": a.media_type,
                "size": a.size,
                "sha256": a.sha256,
                "deleted": a.deleted,
            }
            for a in case.attachments
        ],
        "events": [
            {"at": _iso(e.at), "event": e.event, "actor": e.actor, "detail": e.detail}
            for e in case.events
        ],
    }

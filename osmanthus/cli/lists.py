"""`osmanthus lists`: publish, withdraw and look up the entries of the red and black lists."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from osmanthus.cli.exit_codes import ExitCode
from osmanthus.cli.options import (
    Subcommands,
    catalogue_of,
    catalogue_options,
    command,
    command_group,
    requester_client,
    requester_options,
    requester_token,
    tls_files,
    tls_options,
)
from osmanthus.core.errors import InvalidArgument, OsmanthusError
from osmanthus.core.types import SubjectKind

if TYPE_CHECKING:
    from node.officer import ListOfficer
    from osmanthus.core.lists import ListEntry, PublicEntry


def register(subcommands: Subcommands) -> None:
    """Add `lists publish|withdraw|history|search`."""
    # one action per task; each talks to one department's node or, for search, the platform
    lists = command_group(
        subcommands,
        "lists",
        "red and black lists",
        "Publish, withdraw and look up the entries of a department's red and black lists. "
        "publish, withdraw and history are the department's list officer's: they connect to "
        "the department's own node with an operator certificate named after the department "
        "('osmanthus certs issue --role operator --name court'); the node refuses any other "
        "certificate. search reads the entries in public view through the coordinator, as any "
        "requester. An entry is in public view from the first to the last day of its window "
        "(China time) unless withdrawn; nothing is ever deleted from a node's history.",
    )
    p = command(
        lists,
        "publish",
        "publish the entries of a CSV or Parquet file (all or none)",
        "Check every row of FILE (columns entry_id, list, subject_kind, subject_id, "
        "subject_name, legal_basis, reason, window_start, window_end; legal_basis may be left "
        "empty for the list's own) against the catalogue, then publish the entries at the "
        "department's node. Any bad row stops the command before anything is sent, and every "
        "bad row is listed by line and column (exit 3). Publishing the same file again is "
        "harmless: entries already published with the same fields count as unchanged. An "
        "entry id already published with other fields is refused: withdraw that entry (reason "
        "error) and publish the corrected one under a new id. A file larger than one "
        "publication (10,000 entries, or about 1 MB) goes in several, each all or none.\n\n"
        "example: osmanthus lists publish defaulters.csv --node 10.0.0.5:50051 "
        "--department court --certs-dir /etc/osmanthus/certs",
        _cmd_lists_publish,
        parents=[catalogue_options(), _list_office_options()],
        extra="node",
    )
    p.add_argument("file", metavar="FILE", type=Path, help="the publication (.csv or .parquet)")
    p = command(
        lists,
        "withdraw",
        "take an entry out of public view before its window ends",
        "Withdraw one entry that is in view or not yet in view: 'repaired' when the subject "
        "completed credit repair (black lists), 'revoked' when an honour or certification was "
        "revoked (red lists), 'error' when it was published in error (either). The reference "
        "(e.g. the credit-repair decision number) is required and kept in the history. A "
        "withdrawn black-list entry stops setting its joint-punishment flag at once. Exit 3 "
        "for an unknown entry id or a reason the list's colour does not allow, 4 for an entry "
        "already withdrawn or whose window has ended (or a certificate the node refuses).",
        _cmd_lists_withdraw,
        parents=[_list_office_options()],
        extra="node",
    )
    p.add_argument("entry_id", metavar="ENTRY_ID", help="the entry's id, as published")
    p.add_argument(
        "--reason",
        required=True,
        choices=["repaired", "revoked", "error"],
        help="repaired: black lists; revoked: red lists; error: either",
    )
    p.add_argument("--reference", required=True, help="decision or case number behind it")
    p = command(
        lists,
        "history",
        "every entry of the department about one subject, with its events",
        "Print every entry the department's node holds about one subject, in view or not: its "
        "status today (scheduled, in_view, expired, withdrawn), window, reason, legal basis and "
        "each event (published, withdrawn) with who did it and when (UTC).",
        _cmd_lists_history,
        parents=[_list_office_options()],
        extra="node",
    )
    p.add_argument(
        "--kind", required=True, choices=["person", "enterprise"], help="the subject's kind"
    )
    p.add_argument(
        "subject", metavar="SUBJECT", help="resident id or unified social credit code, in full"
    )
    p = command(
        lists,
        "search",
        "the entries in public view today, through the coordinator (any requester)",
        "Read the red and black lists as the public sees them: only the published fields (list, "
        "colour, subject name, id, window, legal basis, reason, facilitation class), a "
        "person's resident id masked (first 6 and last 2 characters). With --subject, that "
        "subject's entries on every list, all at once; with --list, that list's entries a page "
        "at a time (--all-pages follows every page; --page-token resumes); with both, the "
        "subject's entries on that list. Departments that did not answer are named on stderr "
        "(their entries may be missing). No purpose or consent is needed, but the central "
        "policy limits how often you may ask (exit 4, saying when to retry).\n\n"
        "example: osmanthus lists search --kind enterprise --list judgement_defaulters "
        "--coordinator 10.0.0.2:50050 --requester agency-1 --token-file agency.jwt "
        "--keys agency.key --certs-dir certs",
        _cmd_lists_search,
        parents=[
            catalogue_options(),
            requester_options(
                keys_help="your Paillier key file, the one your token is bound to (the search "
                "uses no encryption, but the token must match it)"
            ),
            tls_options(role_hint="requester"),
        ],
    )
    p.add_argument(
        "--kind", required=True, choices=["person", "enterprise"], help="the subjects' kind"
    )
    p.add_argument("--subject", help="resident id or unified social credit code, in full")
    p.add_argument("--list", help="list id from the catalogue, e.g. judgement_defaulters")
    p.add_argument("--page-size", type=int, help="entries per page of a list (1 to 100; 20)")
    p.add_argument("--page-token", help="continue a list after an earlier page")
    p.add_argument("--all-pages", action="store_true", help="follow every page of the list")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _list_office_options() -> argparse.ArgumentParser:
    """Options of every `lists` command that talks to a department node's list office."""
    parent = argparse.ArgumentParser(add_help=False, parents=[tls_options(role_hint="operator")])
    parent.add_argument("--node", required=True, metavar="HOST:PORT", help="the department's node")
    parent.add_argument("--department", required=True, help="department id, e.g. court")
    parent.add_argument(
        "--operator",
        help="name of your operator certificate in --certs-dir (default: the department id; "
        "issue it with 'osmanthus certs issue --role operator --name DEPARTMENT')",
    )
    return parent


def _list_officer(args: argparse.Namespace) -> ListOfficer:
    from node.officer import ListOfficer

    tls = tls_files(args, role="operator", name=args.operator or args.department)
    return ListOfficer(args.node, department=args.department, tls=tls)


def _print_list_entry(entry: ListEntry) -> None:
    e = entry.entry
    print(f"{e.entry_id}  {e.list} ({e.colour.value})  {entry.status.value}")
    print(f"  subject      {e.subject_kind.value} {e.subject_id} {e.subject_name}")
    print(f"  window       {e.window_start} to {e.window_end} (both days in view)")
    print(f"  reason       {e.reason}")
    print(f"  legal basis  {e.legal_basis}")
    if e.facilitation_class:
        print(f"  grants       {e.facilitation_class}")
    if entry.withdraw_reason is not None:
        print(f"  withdrawn    {entry.withdraw_reason.value}, reference {entry.withdraw_reference}")
    for event in entry.events:
        when = event.at.strftime("%Y-%m-%dT%H:%M:%SZ")
        print(f"  {when}  {event.event} by {event.actor}: {event.detail}")


def _cmd_lists_publish(args: argparse.Namespace) -> int:
    from node.officer import read_publication

    publication = read_publication(
        args.file, catalogue=catalogue_of(args), department=args.department
    )
    with _list_officer(args) as officer:
        try:
            result = officer.publish(publication.entries)
        except OsmanthusError as exc:
            raise publication.locate(exc) from None
    print(
        f"{args.file}: {result.published} entries published, {result.unchanged} already "
        f"published unchanged, at the node of {args.department}"
    )
    return ExitCode.SUCCESS


def _cmd_lists_withdraw(args: argparse.Namespace) -> int:
    from osmanthus.core.lists import WithdrawReason

    with _list_officer(args) as officer:
        entry = officer.withdraw(
            args.entry_id, reason=WithdrawReason(args.reason), reference=args.reference
        )
    print(f"withdrawn from public view: {entry.entry.entry_id}")
    _print_list_entry(entry)
    return ExitCode.SUCCESS


def _cmd_lists_history(args: argparse.Namespace) -> int:
    with _list_officer(args) as officer:
        entries = officer.history(SubjectKind(args.kind), args.subject)
    print(f"{len(entries)} entries of {args.department} about this {args.kind}")
    for entry in entries:
        _print_list_entry(entry)
    return ExitCode.SUCCESS


def _cmd_lists_search(args: argparse.Namespace) -> int:
    import json

    if not args.subject and not args.list:
        raise InvalidArgument("give --subject, --list, or both", field="subject")
    if args.all_pages and not args.list:
        raise InvalidArgument(
            "--all-pages pages through a list: give --list (a subject's entries come in one "
            "answer)",
            field="all_pages",
        )
    token = requester_token(args)
    kind = SubjectKind(args.kind)
    with requester_client(args, token=token, catalogue=catalogue_of(args)) as client:
        if args.all_pages:
            pages = list(
                client.search_lists_pages(
                    kind=kind,
                    subject=args.subject,
                    list_id=args.list,
                    page_size=args.page_size,
                    page_token=args.page_token,
                )
            )
        else:
            pages = [
                client.search_lists(
                    kind=kind,
                    subject=args.subject,
                    list_id=args.list,
                    page_size=args.page_size,
                    page_token=args.page_token,
                )
            ]
    entries = [e for page in pages for e in page.entries]
    missing = list(dict.fromkeys((m.department, m.detail) for page in pages for m in page.missing))
    next_token = pages[-1].next_page_token
    if args.json:
        document = {
            "subject_kind": kind.value,
            "subject": args.subject,
            "list": args.list,
            "entries": [
                {
                    "entry_id": e.entry_id,
                    "department": e.department,
                    "list": e.list,
                    "colour": e.colour.value,
                    "subject_id": e.subject_id,
                    "subject_name": e.subject_name,
                    "legal_basis": e.legal_basis,
                    "reason": e.reason,
                    "window_start": e.window_start.isoformat(),
                    "window_end": e.window_end.isoformat(),
                    "facilitation_class": e.facilitation_class,
                }
                for e in entries
            ],
            "missing": [{"department": d, "detail": detail} for d, detail in missing],
            "next_page_token": next_token,
        }
        print(json.dumps(document, ensure_ascii=False, indent=2))
    else:
        asked = " on ".join(
            part
            for part in (f"{kind.value} {args.subject}" if args.subject else "", args.list or "")
            if part
        )
        print(f"{len(entries)} entries in public view today (China time): {asked}")
        if entries:
            _print_public_entries(entries)
        if next_token:
            print(f"more entries follow: add --page-token {next_token} (or use --all-pages)")
    for department, detail in missing:
        # the entries above may lack this department's: never a silent gap
        print(f"warning: not included: {department}: {detail}", file=sys.stderr)
    return ExitCode.SUCCESS


def _display_width(text: str) -> int:
    import unicodedata

    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _print_public_entries(entries: Sequence[PublicEntry]) -> None:
    """A table of the short fields, each row followed by its reason and legal basis."""
    header = ("ENTRY", "LIST", "COLOUR", "SUBJECT", "ID", "IN VIEW", "CLASS")
    rows = [
        (
            e.entry_id,
            e.list,
            e.colour.value,
            e.subject_name,
            e.subject_id,
            f"{e.window_start} to {e.window_end}",
            e.facilitation_class or "-",
        )
        for e in entries
    ]
    widths = [max(_display_width(r[i]) for r in (header, *rows)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = (c + " " * (w - _display_width(c)) for c, w in zip(cells, widths, strict=True))
        return "  ".join(padded).rstrip()

    print(line(header))
    for entry, row in zip(entries, rows, strict=True):
        print(line(row))
        print(f"    reason       {entry.reason}")
        print(f"    legal basis  {entry.legal_basis}")

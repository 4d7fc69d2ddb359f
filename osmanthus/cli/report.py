"""`osmanthus report`: signed enterprise credit reports, written and verified."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
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
    signing_key_options,
    tls_options,
    write_signing_key,
)
from osmanthus.core.errors import ConfigError

if TYPE_CHECKING:
    from sdk.report import EnterpriseReport

#: the report format each --out suffix stands for
_REPORT_SUFFIXES = {".pdf": "pdf", ".html": "html", ".htm": "html"}


def register(subcommands: Subcommands) -> None:
    """Add `report keygen|enterprise|verify`."""
    report = command_group(
        subcommands,
        "report",
        "signed enterprise credit reports",
        "Issue enterprise credit reports signed by the issuer, and verify them.",
    )
    p = command(
        report,
        "keygen",
        "create the Ed25519 key pair an issuer signs reports with",
        "Create OUT_DIR/NAME.key (private, mode 0600) and OUT_DIR/NAME.pub (public: publish it "
        "so that readers can verify your reports). Existing files are never replaced.",
        _cmd_report_keygen,
        parents=[signing_key_options(name="report-issuer")],
    )
    p = command(
        report,
        "enterprise",
        "write a signed credit report of one enterprise",
        "Search the public red and black lists for the enterprise, ask the federation for its "
        "score breakdown and for every joint-punishment measure of the catalogue, decrypt the "
        "answers, and write a printable report to --out (an A4 PDF or an HTML page): grade, "
        "score, facilitation classes, breakdown, restrictions in force, list entries in force "
        "(and the list departments that did not answer), data coverage, time of query, report "
        "id and verification code. A rate-limited list search stops the command before the "
        "score is asked (exit 4; run it again later). The report is signed with "
        "--signing-key and carries the signed content: the coordinator cannot read the answer, "
        "so the issuer (you) attests to it. Readers check it with 'osmanthus report verify'. "
        "Your token must allow --purpose.",
        _cmd_report_enterprise,
        parents=[
            catalogue_options(),
            requester_options(keys_help="your Paillier key file (created if absent)"),
            tls_options(role_hint="requester"),
        ],
        extra="reports",
    )
    p.set_defaults(report_parser=p)
    p.add_argument("code", metavar="CODE", help="the enterprise's unified social credit code")
    p.add_argument("--out", type=Path, required=True, help="the report file to write")
    p.add_argument(
        "--format",
        choices=["html", "pdf"],
        help="pdf (A4, the signed content attached) or html (a self-contained page); default: "
        "from --out's suffix (.pdf, .html), else html",
    )
    p.add_argument(
        "--signing-key", type=Path, required=True, help="your report key (from 'report keygen')"
    )
    p.add_argument("--issuer", help="issuer name printed and signed (default: --requester)")
    p.add_argument("--purpose", default="credit_report", help="purpose named in the token")
    p = command(
        report,
        "verify",
        "check a report's signature and print what it attests",
        "Check that the report (PDF or HTML, told apart by content) was signed by the holder "
        "of --key, that its verification code is its content's, and that the file is, byte "
        "for byte, what that signed report renders to (so it shows the signed values and "
        "nothing else); then print the report id, subject, grade, issuer and verification "
        "code (compare it with the one on a printout). Exit 3 if the file is not a report, a "
        "file is unusable, or the report was drawn by another Osmanthus version (verify it "
        "with that version); 4 if the report is not what the issuer signed.",
        _cmd_report_verify,
        extra="reports",
    )
    p.add_argument("report", metavar="FILE", type=Path, help="the report (PDF or HTML)")
    p.add_argument("--key", type=Path, required=True, help="the issuer's public key (NAME.pub)")


def _cmd_report_keygen(args: argparse.Namespace) -> int:
    return write_signing_key(
        args,
        what="report signing key",
        private="sign reports with it (--signing-key)",
        public="publish it; readers verify reports with it (--key)",
    )


def _report_format(args: argparse.Namespace) -> str:
    """--format, or the one --out's suffix names, or html; a usage error when they disagree."""
    implied = _REPORT_SUFFIXES.get(args.out.suffix.lower())
    if args.format is None:
        return implied or "html"
    if implied is not None and implied != args.format:
        args.report_parser.error(
            f"--format {args.format} does not match --out {args.out.name}: name the file "
            f".{args.format} or leave --format out"
        )
    return str(args.format)


def _cmd_report_enterprise(args: argparse.Namespace) -> int:
    from osmanthus.core.errors import RateLimited
    from osmanthus.core.files import write_atomically
    from osmanthus.core.signing import load_private_key
    from osmanthus.core.types import Shape, SubjectKind
    from sdk.report import build_enterprise_report, render_html, render_pdf, sign_report

    output_format = _report_format(args)
    token = requester_token(args)
    if not args.out.parent.is_dir():
        raise ConfigError(f"{args.out.parent}: the directory does not exist", field="out")
    # before the query: a report that cannot be signed must not spend one
    signing_key = load_private_key(args.signing_key, what="report signing key", field="signing_key")
    catalogue = catalogue_of(args)
    with requester_client(args, token=token, catalogue=catalogue) as client:
        issued_at = datetime.now(UTC)
        # the list search first: it is rate limited, and a refusal then spends no score query
        try:
            lists = client.search_lists(kind=SubjectKind.ENTERPRISE, subject=args.code)
        except RateLimited as exc:
            raise RateLimited(
                f"the red and black list search was refused ({exc.message}); no report was "
                "written and nothing else was asked: run the command again then",
                field="lists",
            ) from None
        card = client.enterprise_score(args.code, purpose=args.purpose, shape=Shape.BREAKDOWN)
        restrictions = client.check_restrictions(
            card.subject_id,
            measures=[m.id for m in catalogue.measures],
            purpose=args.purpose,
            kind=SubjectKind.ENTERPRISE,
        )
    report = build_enterprise_report(
        score=card,
        restrictions=restrictions,
        lists=lists,
        catalogue=catalogue,
        issuer=args.issuer or args.requester,
        issued_at=issued_at,
    )
    signed = sign_report(report, private_key=signing_key)
    rendered = render_pdf(signed) if output_format == "pdf" else render_html(signed).encode("utf-8")
    # a credit report is for the requester and the enterprise only
    write_atomically(args.out, rendered, mode=0o600)
    print(f"{args.out}: {output_format} report {report.report_id} for {report.subject_id}")
    print(f"  grade {report.grade}, score {report.score}; code {signed.verification_code}")
    print(f"  list entries  {_report_lists(report)}")
    return ExitCode.SUCCESS


def _report_lists(report: EnterpriseReport) -> str:
    """The report's list entries in one line: each list and colour, the classes, the gaps."""
    shown = ", ".join(f"{e.list} ({e.colour.value})" for e in report.list_entries) or "none"
    if report.facilitation:
        shown += "; facilitation " + "; ".join(report.facilitation)
    if report.lists_missing:
        missing = ", ".join(d.department for d in report.lists_missing)
        shown += f"; did not answer: {missing}"
    return shown


def _cmd_report_verify(args: argparse.Namespace) -> int:
    from osmanthus.core.signing import load_public_key
    from sdk.report import MAX_REPORT_BYTES, canonical_content, verification_code, verify_report

    public = load_public_key(args.key, what="issuer's public key", field="key")
    try:
        with args.report.open("rb") as handle:
            data = handle.read(MAX_REPORT_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {args.report}: {exc.strerror}", field="report") from None
    report = verify_report(data, public_key=public)
    in_force = ", ".join(r.measure for r in report.in_force) or "none"
    print(f"{args.report}: verified")
    print(f"  report id     {report.report_id}")
    print(f"  subject       {report.subject_id}")
    print(f"  grade         {report.grade} (score {report.score})")
    print(f"  restrictions  {in_force}")
    print(f"  list entries  {_report_lists(report)}")
    print(f"  issuer        {report.issuer}")
    print(f"  time of query {report.issued_at.strftime('%Y-%m-%dT%H:%M:%SZ')}")
    # verification refuses content that is not canonical: this is the signed bytes' code
    print(f"  code          {verification_code(canonical_content(report))}")
    return ExitCode.SUCCESS

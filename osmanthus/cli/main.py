"""The `osmanthus` command: one entry point with a subcommand for each operator task."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from osmanthus.core.durations import parse_duration
from osmanthus.core.errors import ConfigError, ImportRejected, InvalidArgument, OsmanthusError
from osmanthus.core.tls import TlsFiles
from osmanthus.core.types import SubjectKind

if TYPE_CHECKING:
    from node.officer import ListOfficer
    from osmanthus.core.bundle import VerifiedBundle
    from osmanthus.core.catalogue import Catalogue
    from osmanthus.core.lists import ListEntry, PublicEntry
    from sdk import Client
    from sdk.report import EnterpriseReport

EXIT_CODES = """\
exit codes:
  0  success
  1  unexpected internal error (see the log)
  2  bad command line (usage)
  3  invalid input or configuration (the message names the file, field and problem)
  4  refused: authentication, permission, consent or policy
  5  a server was unavailable or did not answer in time
  6  policy test cases failed (each failure is listed)
"""

_log = logging.getLogger("osmanthus")
#: osmanthus.core.receipts.RECEIPT_ISSUER, here so that building the parser imports no crypto
_DEFAULT_RECEIPT_ISSUER = "osmanthus-consent-registry"


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def _duration(text: str) -> timedelta:
    try:
        return parse_duration(text, field="duration")
    except InvalidArgument as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def _iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2026-11-26") from exc


def _add_tls(parser: argparse.ArgumentParser, *, role_hint: str) -> None:
    group = parser.add_argument_group(
        "mutual TLS",
        f"either --certs-dir (the directory 'osmanthus certs init' made; the {role_hint} "
        "certificate is found in it) or all of --ca, --cert and --key",
    )
    group.add_argument("--certs-dir", type=Path, help="platform certificate directory")
    group.add_argument("--ca", type=Path, help="platform CA certificate (PEM)")
    group.add_argument("--cert", type=Path, help="this process's certificate (PEM)")
    group.add_argument("--key", type=Path, help="this process's private key (PEM)")


def _tls_files(args: argparse.Namespace, *, role: str, name: str) -> TlsFiles:
    from certs import PeerRole, cert_paths

    if args.ca and args.cert and args.key:
        return TlsFiles(ca=args.ca, cert=args.cert, key=args.key)
    if args.certs_dir:
        return TlsFiles.from_cert_paths(cert_paths(args.certs_dir, role=PeerRole(role), name=name))
    raise InvalidArgument("give --certs-dir, or all of --ca, --cert and --key", field="tls")


def _catalogue(args: argparse.Namespace) -> Catalogue:
    from osmanthus.core.catalogue import load_catalogue

    return load_catalogue(args.catalogue)


def _add_catalogue(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--catalogue",
        type=Path,
        help="the platform's catalogue file (default: the one shipped with Osmanthus); every "
        "node, the coordinator and every requester must use the same one, because the "
        "encrypted slot widths are derived from it",
    )


# --- seed -------------------------------------------------------------------------------------


def _cmd_seed(args: argparse.Namespace) -> int:
    from osmanthus.demo.seed import seed

    report = seed(
        args.out,
        persons=args.persons,
        enterprises=args.enterprises,
        seed=args.seed,
        as_of=args.as_of or datetime.now(UTC).date(),
        progress=None if args.quiet else _progress_printer(),
    )
    print(f"wrote {len(report.databases)} department databases to {args.out}")
    return 0


def _progress_printer() -> Callable[[str], None]:
    from tqdm import tqdm

    bar = tqdm(desc="seeding", unit="dept", leave=False)

    def step(message: str) -> None:
        bar.set_postfix_str(message)
        bar.update(1)

    return step


# --- certs ------------------------------------------------------------------------------------


def _cmd_certs_init(args: argparse.Namespace) -> int:
    from certs import init_platform
    from osmanthus.core.catalogue import load_catalogue

    departments = args.departments or [d.id for d in load_catalogue().departments]
    made = init_platform(
        args.out,
        departments=departments,
        requesters=args.requesters,
        validity_days=args.days,
        overwrite=args.overwrite,
    )
    print(f"platform CA and {len(made)} certificates written to {args.out}")
    for name in sorted(made):
        print(f"  {name}")
    return 0


def _cmd_certs_issue(args: argparse.Namespace) -> int:
    from certs import PeerRole, issue_certificate

    paths = issue_certificate(
        args.ca_dir, role=PeerRole(args.role), name=args.name, validity_days=args.days
    )
    print(f"issued {args.role} certificate for {args.name!r}: {paths.cert}")
    return 0


def _cmd_certs_consent_key(args: argparse.Namespace) -> int:
    from certs import create_consent_key
    from certs.authority import restore_consent_public_key_file

    if args.restore_public:
        if args.overwrite:
            raise InvalidArgument(
                "--restore-public keeps the key; it cannot be combined with --overwrite",
                field="--restore-public",
            )
        paths = restore_consent_public_key_file(args.ca_dir)
        print(f"{paths.public} holds the public half of {paths.private}")
        return 0
    paths = create_consent_key(args.ca_dir, overwrite=args.overwrite)
    print(
        f"consent-receipt key pair written: {paths.private} (the coordinator's --consent-key), "
        f"{paths.public} (give to banks and citizens who verify receipts)"
    )
    return 0


# --- keys and tokens --------------------------------------------------------------------------


def _cmd_keys_create(args: argparse.Namespace) -> int:
    from sdk.keys import load_or_create_keys

    if args.out.exists():
        raise ConfigError(f"{args.out} already exists; refusing to replace a key", field="out")
    keys = load_or_create_keys(args.out, bits=args.bits)
    print(keys.fingerprint)
    return 0


def _cmd_keys_fingerprint(args: argparse.Namespace) -> int:
    from sdk.keys import load_or_create_keys

    if not args.key.exists():
        raise ConfigError(f"{args.key} does not exist", field="key")
    print(load_or_create_keys(args.key).fingerprint)
    return 0


def _cmd_token_keygen(args: argparse.Namespace) -> int:
    from osmanthus.core.tokens import generate_issuer_keypair

    generate_issuer_keypair(args.private, args.public, overwrite=args.overwrite)
    print(f"issuer key pair written: {args.private} (keep secret), {args.public} (give to servers)")
    return 0


def _cmd_token_issue(args: argparse.Namespace) -> int:
    from osmanthus.core.tokens import TokenIssuer
    from osmanthus.core.types import Role

    issuer = TokenIssuer.from_file(args.issuer_key, issuer=args.iss, audience=args.aud)
    token = issuer.issue(
        requester=args.requester,
        role=Role(args.role),
        purposes=args.purpose,
        key_fingerprint=args.key_fingerprint,
        ttl=args.ttl,
        single_use=args.single_use,
    )
    print(token)
    return 0


# --- node -------------------------------------------------------------------------------------


def _cmd_node_serve(args: argparse.Namespace) -> int:
    from node.server import DEFAULT_NODE_POLICY, NodeConfig, start_node
    from osmanthus.core.server import serve_until_signalled

    config = NodeConfig(
        department=args.department,
        db=args.db,
        tls=_tls_files(args, role="node", name=args.department),
        issuer_public_key=args.issuer_public_key,
        state_dir=args.state_dir,
        listen=args.listen,
        rules=args.rules,
        policy=args.policy or DEFAULT_NODE_POLICY,
        table_cache_bytes=args.table_cache_mb * 2**20,
        policy_bundle=_policy_bundle(args),
        policy_trust=tuple(args.policy_trust),
        policy_poll_s=args.policy_poll,
    )
    # before the server starts: until the handler is in place SIGHUP would end the process
    _check_bundle_on_sighup(args)
    running = start_node(config, catalogue=_catalogue(args))
    _log.info("node %s serving on port %d", args.department, running.port)
    serve_until_signalled(running, ready_file=args.ready_file)
    return 0


def _cmd_node_import(args: argparse.Namespace) -> int:
    from node.store import RecordStore
    from osmanthus.core.catalogue import load_catalogue
    from osmanthus.core.rules import load_default_rules, load_rules

    catalogue = load_catalogue()
    dept = catalogue.department(args.department)
    rules = (
        load_rules(args.rules, catalogue=catalogue)
        if args.rules
        else load_default_rules(dept.id, catalogue=catalogue)
    )
    with RecordStore(args.db, department=dept.id) as store:
        report = store.import_file(args.file, rules=rules, catalogue=catalogue)
    print(f"imported {report.rows} records from {args.file} into {args.db}")
    return 0


# --- lists ------------------------------------------------------------------------------------


def _add_list_office(parser: argparse.ArgumentParser) -> None:
    """Options of every `lists` command that talks to a department node's list office."""
    parser.add_argument("--node", required=True, metavar="HOST:PORT", help="the department's node")
    parser.add_argument("--department", required=True, help="department id, e.g. court")
    parser.add_argument(
        "--operator",
        help="name of your operator certificate in --certs-dir (default: the department id; "
        "issue it with 'osmanthus certs issue --role operator --name DEPARTMENT')",
    )
    _add_tls(parser, role_hint="operator")


def _list_officer(args: argparse.Namespace) -> ListOfficer:
    from node.officer import ListOfficer

    tls = _tls_files(args, role="operator", name=args.operator or args.department)
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
        args.file, catalogue=_catalogue(args), department=args.department
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
    return 0


def _cmd_lists_withdraw(args: argparse.Namespace) -> int:
    from osmanthus.core.lists import WithdrawReason

    with _list_officer(args) as officer:
        entry = officer.withdraw(
            args.entry_id, reason=WithdrawReason(args.reason), reference=args.reference
        )
    print(f"withdrawn from public view: {entry.entry.entry_id}")
    _print_list_entry(entry)
    return 0


def _cmd_lists_history(args: argparse.Namespace) -> int:

    with _list_officer(args) as officer:
        entries = officer.history(SubjectKind(args.kind), args.subject)
    print(f"{len(entries)} entries of {args.department} about this {args.kind}")
    for entry in entries:
        _print_list_entry(entry)
    return 0


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
    token = _requester_token(args)
    kind = SubjectKind(args.kind)
    with _requester_client(args, token=token, catalogue=_catalogue(args)) as client:
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
    return 0


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


# --- coordinator ------------------------------------------------------------------------------


def _cmd_coordinator_serve(args: argparse.Namespace) -> int:
    from coordinator.server import DEFAULT_CENTRAL_POLICY, CoordinatorConfig, start_coordinator
    from osmanthus.core.server import serve_until_signalled

    config = CoordinatorConfig(
        nodes=args.nodes,
        tls=_tls_files(args, role="coordinator", name="coordinator"),
        issuer_public_key=args.issuer_public_key,
        state_dir=args.state_dir,
        listen=args.listen,
        policy=args.policy or DEFAULT_CENTRAL_POLICY,
        deadline_s=args.deadline,
        table_cache_bytes=args.table_cache_mb * 2**20,
        policy_bundle=_policy_bundle(args),
        policy_trust=tuple(args.policy_trust),
        policy_poll_s=args.policy_poll,
        consent_key=_consent_key(args),
        consent_issuer=args.consent_issuer,
    )
    # before the server starts: until the handler is in place SIGHUP would end the process
    _check_bundle_on_sighup(args)
    running = start_coordinator(config, catalogue=_catalogue(args))
    _log.info("coordinator serving on port %d", running.port)
    try:
        serve_until_signalled(running.server, ready_file=args.ready_file)
    finally:
        running.stop()
    return 0


def _consent_key(args: argparse.Namespace) -> Path | None:
    from certs import COORDINATOR_NAME, PeerRole, peer_dir
    from osmanthus.core.receipts import CONSENT_KEY_FILE

    if args.consent_key is not None:
        return Path(args.consent_key)
    if args.certs_dir:
        # found in --certs-dir like the coordinator's certificate, where 'certs init' puts it
        candidate = (
            peer_dir(args.certs_dir, role=PeerRole.COORDINATOR, name=COORDINATOR_NAME)
            / CONSENT_KEY_FILE
        )
        own = Path(args.state_dir) / CONSENT_KEY_FILE
        if candidate.is_file():
            if own.exists():
                # which one signs would depend on which file happens to exist at this start
                raise ConfigError(
                    f"two consent signing keys: {candidate} and {own}; pass --consent-key "
                    "naming the one whose consent.pub was handed out (receipts signed with "
                    "the other stop verifying against it)",
                    field="--consent-key",
                )
            return candidate
    return None


# --- consent ----------------------------------------------------------------------------------


#: the option of `consent verify` behind each expected value that verify_receipt checks
_VERIFY_OPTIONS = {
    "expected_grantee": "--grantee",
    "expected_purpose": "--purpose",
    "expected_subject": "--subject",
    "expected_kind": "--kind",
    "issuer": "--issuer",
}


def _cmd_consent_verify(args: argparse.Namespace) -> int:
    from osmanthus.core.receipts import ReceiptError, load_consent_public_key, verify_receipt

    if args.receipt == "-":
        text = sys.stdin.read()
    else:
        try:
            text = Path(args.receipt).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"receipt file {args.receipt} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read receipt file {args.receipt}: {exc}") from exc
    public_key = load_consent_public_key(args.key)
    try:
        receipt = verify_receipt(
            text.strip(),
            public_key=public_key,
            now=datetime.now(UTC),
            expected_grantee=args.grantee,
            expected_purpose=args.purpose,
            expected_subject=args.subject,
            issuer=args.issuer,
            expected_kind=SubjectKind(args.kind) if args.kind else None,
        )
    except InvalidArgument as exc:
        # an option no receipt could match is a bad argument (exit 3), named as it was typed
        if isinstance(exc, ReceiptError) or exc.field not in _VERIFY_OPTIONS:
            raise
        raise InvalidArgument(exc.message, field=_VERIFY_OPTIONS[exc.field]) from exc
    print(f"receipt verifies: consent {receipt.consent_id}")
    print(f"  subject     {receipt.masked_subject} ({receipt.subject_kind.value})")
    print(f"  grantee     {receipt.grantee}")
    print(f"  purpose     {receipt.purpose}")
    print(f"  granted at  {receipt.granted_at.isoformat().replace('+00:00', 'Z')}")
    print(f"  expires at  {receipt.expires_at.isoformat().replace('+00:00', 'Z')}")
    print(f"  issuer      {receipt.issuer} (key {receipt.key_id})")
    print(
        "A receipt proves the consent was granted, not that it still stands: the coordinator "
        "checks revocation on every query."
    )
    return 0


# --- policy, health, demo ---------------------------------------------------------------------


def _cmd_policy_validate(args: argparse.Namespace) -> int:
    from osmanthus.core.policy import PolicyEngine

    for path in args.files:
        engine = PolicyEngine.from_file(path)
        print(f"{path}: valid ({len(engine.annotations())} policies, sha256 {engine.hash[:16]}…)")
    return 0


def _cmd_policy_test(args: argparse.Namespace) -> int:
    from osmanthus.core.policy import PolicyEngine
    from osmanthus.core.policy_cases import load_cases, run_cases

    engine = PolicyEngine.from_file(args.policy)
    failed = 0
    total = 0
    for path in args.cases:
        results = run_cases(engine, load_cases(path))
        print(f"{path}: {len(results)} cases against {args.policy} (sha256 {engine.hash[:16]}…)")
        for result in results:
            verdict = "allow" if result.decision.allowed else "deny"
            deciders = ", ".join(result.decision.policy_ids) or "no rule"
            if result.passed:
                print(f"  PASS  {result.case.name} ({verdict} by {deciders})")
            else:
                print(f"  FAIL  {result.case.name} [{result.case.origin}]")
                for problem in result.problems:
                    print(f"        {problem}")
        failed += sum(1 for r in results if not r.passed)
        total += len(results)
    print(f"{total - failed} passed, {failed} failed")
    return 6 if failed else 0


def _cmd_policy_diff(args: argparse.Namespace) -> int:
    from osmanthus.core.policy import PolicyEngine
    from osmanthus.core.policy_diff import diff, render

    old, new = PolicyEngine.from_file(args.old), PolicyEngine.from_file(args.new)
    result = diff(old, new)
    print(render(result, limit=args.limit, old_name=str(args.old), new_name=str(args.new)))
    return 1 if args.exit_code and result.changes else 0


def _cmd_policy_explain(args: argparse.Namespace) -> int:
    from osmanthus.core.policy import PolicyEngine
    from osmanthus.core.policy_cases import (
        explain,
        make_request,
        parse_context_value,
        parse_resource,
    )

    context: dict[str, str | int | bool] = {}
    for item in args.context:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"{item!r} is not key=value", field="context")
        context[key] = parse_context_value(value)
    request = make_request(
        requester=args.requester,
        role=args.role,
        action=args.action,
        resource=parse_resource(args.resource),
        context=context,
    )
    print(explain(PolicyEngine.from_file(args.policy), request))
    return 0


def _add_policy_bundle(parser: argparse.ArgumentParser, *, scope: str) -> None:
    group = parser.add_argument_group(
        "signed policy bundle",
        "instead of --policy, follow a bundle made with 'osmanthus policy publish' (scope "
        f"{scope}). It is checked at start: a bundle that fails any check stops the start "
        "(exit 3). The file is then checked every --policy-poll seconds and on SIGHUP: a bundle "
        "with a higher serial and a publication time no earlier than the bundle in force, "
        "signed by a trusted key, for this scope and with a valid policy is put in force "
        "without a restart; any other is logged and the policy in force stays.",
    )
    group.add_argument("--policy-bundle", type=Path, help="the bundle file to follow")
    group.add_argument(
        "--policy-trust",
        type=Path,
        action="append",
        default=[],
        metavar="KEY.pub",
        help="public key of a trusted publisher (repeatable; needed with --policy-bundle)",
    )
    group.add_argument(
        "--policy-poll",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="bundle check interval, from 0.05 to 3600 (default: 2)",
    )


def _policy_bundle(args: argparse.Namespace) -> Path | None:
    if args.policy_bundle is not None and args.policy is not None:
        raise InvalidArgument(
            "give --policy or --policy-bundle, not both: a bundle carries its own policy",
            field="policy_bundle",
        )
    if args.policy_bundle is None and args.policy_trust:
        raise InvalidArgument("--policy-trust needs --policy-bundle", field="policy_trust")
    bundle: Path | None = args.policy_bundle
    return bundle


def _check_bundle_on_sighup(args: argparse.Namespace) -> None:
    """SIGHUP: look at the policy bundle now instead of at the next poll."""
    if args.policy_bundle is None:
        return
    from osmanthus.core.bundle import install_sighup_handler

    install_sighup_handler()


def _write_signing_key(args: argparse.Namespace, *, what: str, private: str, public: str) -> int:
    """An Ed25519 key pair for signing bundles or reports, and what each half is for."""
    from osmanthus.core.bundle import generate_publisher_key, key_id_of, load_private_key

    private_path, public_path = generate_publisher_key(out_dir=args.out_dir, name=args.name)
    key_id = key_id_of(load_private_key(private_path).public_key())
    print(f"{what} {key_id} written:")
    print(f"  {private_path}  private: keep it secret, {private}")
    print(f"  {public_path}  public: {public}")
    return 0


def _cmd_policy_keygen(args: argparse.Namespace) -> int:
    return _write_signing_key(
        args,
        what="publisher key",
        private="sign bundles with it (--key)",
        public="give it to the coordinator and the nodes (--policy-trust)",
    )


def _cmd_policy_publish(args: argparse.Namespace) -> int:
    from osmanthus.core.bundle import (
        check_scope,
        key_id_of,
        load_private_key,
        read_bundle_file,
        read_claims,
        sign_bundle,
        verify_bundle,
        write_atomically,
    )
    from osmanthus.core.policy import PolicyEngine

    scope = check_scope(args.scope)
    engine = PolicyEngine.from_file(args.policy)
    key = load_private_key(args.key)
    previous: int | None = None
    if args.out.exists():
        try:
            previous_scope, previous = read_claims(
                read_bundle_file(args.out, field="out"), origin=str(args.out)
            )
        except ConfigError as exc:
            if args.serial is None:
                raise ConfigError(
                    f"cannot read the serial of the bundle already at {args.out} ({exc}); "
                    "give --serial, above the serial of the bundle in force",
                    field="serial",
                ) from exc
        else:
            if args.serial is None and previous_scope != scope:
                # a node reads 'node' and 'node:<its id>' bundles as one serial sequence, which
                # may have gone past this file's serial through bundles published elsewhere
                raise ConfigError(
                    f"the bundle already at {args.out} is for scope {previous_scope!r} (serial "
                    f"{previous}), not {scope!r}: give --serial, above {previous} and above "
                    "every serial the servers reading this file have had in force (see "
                    "'Publishing a policy' in policies/README.md)",
                    field="serial",
                )
    serial = args.serial if args.serial is not None else (previous or 0) + 1
    if previous is not None and serial <= previous:
        raise ConfigError(
            f"serial {serial} is not above serial {previous} of the bundle already at "
            f"{args.out}: every server would refuse it as a rollback",
            field="serial",
        )
    data = sign_bundle(
        policy_source=engine.source,
        scope=scope,
        serial=serial,
        publisher=args.publisher or args.key.stem,
        private_key=key,
        now=datetime.now(UTC),
        origin=str(args.policy),
    )
    # check the bytes about to be published the way every server will
    public = key.public_key()
    verified = verify_bundle(
        data, trusted_keys={key_id_of(public): public}, scope=None, origin=str(args.out)
    )
    write_atomically(args.out, data, mode=0o644)
    _print_bundle(f"published {args.out}", verified)
    return 0


def _cmd_policy_verify(args: argparse.Namespace) -> int:
    from osmanthus.core.bundle import (
        check_scope,
        load_trusted_keys,
        read_bundle_file,
        verify_bundle,
    )

    trusted = load_trusted_keys(args.trust)
    scope = check_scope(args.scope) if args.scope else None
    data = read_bundle_file(args.bundle, field="bundle")
    verified = verify_bundle(data, trusted_keys=trusted, scope=scope, origin=str(args.bundle))
    _print_bundle(f"{args.bundle}: valid", verified)
    return 0


def _print_bundle(title: str, bundle: VerifiedBundle) -> None:
    print(title)
    print(f"  scope      {bundle.scope}")
    print(f"  serial     {bundle.serial}")
    print(f"  hash       {bundle.hash}  (recorded as policy_hash in every audit entry)")
    print(f"  publisher  {bundle.publisher}")
    print(f"  created    {bundle.created_at.isoformat()}")
    print(f"  key        {bundle.key_id}")
    print(f"  policies   {len(bundle.engine.annotations())}")


def _cmd_health(args: argparse.Namespace) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from osmanthus.core.errors import Unavailable
    from osmanthus.core.grpc_errors import error_from_rpc
    from osmanthus.core.tls import secure_channel

    tls = _tls_files(args, role="operator", name=args.operator)
    with secure_channel(args.target, tls, server_name=args.server_name) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
        except grpc.RpcError as exc:
            raise Unavailable(f"{args.target}: {error_from_rpc(exc)}") from None
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{args.target}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 5


def _requester_token(args: argparse.Namespace) -> str:
    """The requester's platform token from --token or --token-file."""
    token = args.token_file.read_text(encoding="utf-8").strip() if args.token_file else args.token
    if not token:
        raise InvalidArgument("give --token or --token-file", field="token")
    return str(token)


def _requester_client(args: argparse.Namespace, *, token: str, catalogue: Catalogue) -> Client:
    """An SDK client for --coordinator as --requester, from the connection options."""
    from sdk import Client

    tls = _tls_files(args, role="requester", name=args.requester)
    return Client(args.coordinator, tls=tls, token=token, keys=args.keys, catalogue=catalogue)


def _cmd_batch_score(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from osmanthus.core.types import Shape, SubjectKind
    from sdk.batchjob import BatchJob, count_ids

    token = _requester_token(args)
    if not args.source.is_file():
        raise ConfigError(f"{args.source}: the input file does not exist", field="in")
    catalogue = _catalogue(args)
    kind = SubjectKind(args.kind)
    shape = Shape(args.shape)
    with _requester_client(args, token=token, catalogue=catalogue) as client:
        per = client.subjects_per_ciphertext(kind, shape)
        chunk_size = args.chunk_size or per * args.ciphertexts_per_chunk
        job = BatchJob(
            source=args.source,
            output=args.out,
            model=catalogue.model(kind),
            shape=shape,
            purpose=args.purpose,
            chunk_size=chunk_size,
        )
        total = count_ids(args.source)
        with tqdm(total=total, unit="subject", desc="scoring", disable=args.quiet or None) as bar:
            report = job.run(
                lambda ids: client.batch_scores(
                    ids,
                    purpose=args.purpose,
                    kind=kind,
                    shape=shape,
                    chunk_size=chunk_size,
                    decrypt_workers=args.decrypt_workers,
                ),
                progress=bar.update,
            )
    resumed = f" (resumed after {report.resumed_from})" if report.resumed_from else ""
    print(
        f"{report.output}: {report.rows} rows{resumed}, {report.scored} scored, "
        f"{report.refused} refused"
    )
    return 0


def _cmd_report_keygen(args: argparse.Namespace) -> int:
    return _write_signing_key(
        args,
        what="report signing key",
        private="sign reports with it (--signing-key)",
        public="publish it; readers verify reports with it (--key)",
    )


#: the report format each --out suffix stands for
_REPORT_SUFFIXES = {".pdf": "pdf", ".html": "html", ".htm": "html"}


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
    from osmanthus.core.bundle import load_private_key, write_atomically
    from osmanthus.core.errors import RateLimited
    from osmanthus.core.types import Shape, SubjectKind
    from sdk.report import build_enterprise_report, render_html, render_pdf, sign_report

    output_format = _report_format(args)
    token = _requester_token(args)
    if not args.out.parent.is_dir():
        raise ConfigError(f"{args.out.parent}: the directory does not exist", field="out")
    # before the query: a report that cannot be signed must not spend one
    signing_key = load_private_key(args.signing_key)
    catalogue = _catalogue(args)
    with _requester_client(args, token=token, catalogue=catalogue) as client:
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
    return 0


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
    from osmanthus.core.bundle import load_trusted_keys
    from sdk.report import MAX_REPORT_BYTES, canonical_content, verification_code, verify_report

    try:
        (public,) = load_trusted_keys([args.key]).values()
    except ConfigError as exc:
        raise ConfigError(exc.message, field="key") from None
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
    return 0


# --- province ---------------------------------------------------------------------------------


def _cmd_province_serve(args: argparse.Namespace) -> int:
    from osmanthus.core.server import serve_until_signalled
    from province.server import ProvinceConfig, start_province

    config = ProvinceConfig(
        senders=args.senders,
        state_dir=args.state_dir,
        tls=_tls_files(args, role="node", name=args.name),
        listen=args.listen,
        name=args.name,
        operators=tuple(args.operator or ["operator"]),
    )
    running = start_province(config)
    _log.info("provincial receiver serving on port %d", running.port)
    serve_until_signalled(running, ready_file=args.ready_file)
    return 0


def _cmd_province_keygen(args: argparse.Namespace) -> int:
    return _write_signing_key(
        args,
        what="sync signing key",
        private="the city's sync job signs its batches with it",
        public="register it for the city in the receiver's senders.toml (public_keys)",
    )


def _cmd_province_batches(args: argparse.Namespace) -> int:
    from osmanthus.core.syncbatch import BatchKind
    from sdk.province import ProvinceClient

    if args.requester:
        tls = _tls_files(args, role="requester", name=args.requester)
    else:
        tls = _tls_files(args, role="operator", name=args.operator)
    kind = BatchKind(args.kind) if args.kind else None
    with ProvinceClient(args.target, tls=tls, server_name=args.server_name) as province:
        page = province.batches(
            sender=args.sender, kind=kind, page_size=args.limit, page_token=args.page_token
        )
        rejected = province.rejections(page_size=args.limit)
    stamp = "%Y-%m-%dT%H:%M:%SZ"
    print(f"batches received, newest first ({len(page.batches)} shown):")
    for b in page.batches:
        print(
            f"  {b.received_at.strftime(stamp)}  {b.batch_id}  {b.sender} {b.kind.value} "
            f"#{b.sequence}  {b.records} records  watermarks {b.watermark_from} to "
            f"{b.watermark_to}  from {b.peer}"
        )
        if b.partial:
            print(f"      partial: missing {', '.join(b.missing_departments)}")
    if page.next_page_token:
        print(f"  more: add --page-token {page.next_page_token}")
    print(f"rejections, newest first ({len(rejected.rejections)} shown):")
    for r in rejected.rejections:
        # the sender owns the key the batch names; the batch id is only what the payload says
        claimed = " ".join(
            part
            for part in (r.sender and f"key of {r.sender}", r.batch_id and f"claims {r.batch_id}")
            if part
        )
        print(f"  {r.at.strftime(stamp)}  {r.peer}  {r.code}  {claimed or '(nothing readable)'}")
        print(f"      {r.reason}")
    return 0


def _cmd_sync_run(args: argparse.Namespace) -> int:
    from syncjob.config import load_config
    from syncjob.runner import run

    return run(
        load_config(args.config),
        every=args.every,
        metrics_listen=args.metrics_listen,
        metrics_file=args.metrics_file,
        quiet=args.quiet,
    )


def _cmd_sync_rebase(args: argparse.Namespace) -> int:
    from osmanthus.core.syncbatch import BatchKind
    from syncjob.config import load_config
    from syncjob.runner import rebase

    print(rebase(load_config(args.config), BatchKind(args.kind)))
    return 0


def _cmd_sync_status(args: argparse.Namespace) -> int:
    import json

    from syncjob.config import load_config
    from syncjob.runner import print_status, status

    report = status(load_config(args.config))
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print_status(report)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from osmanthus.demo.run import run_demo

    return run_demo(workdir=args.workdir, persons=args.persons, enterprises=args.enterprises)


# --- parser -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from osmanthus.core.types import Role

    parser = argparse.ArgumentParser(
        prog="osmanthus",
        description=(
            "Osmanthus: a federated credit-data gateway. Each department runs a node that keeps "
            "its records local and answers only encrypted, policy-checked contributions; the "
            "coordinator adds them up without being able to read them."
        ),
        epilog=EXIT_CODES,
        formatter_class=_Formatter,
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log detail",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        parent: argparse._SubParsersAction,  # type: ignore[type-arg]
        name: str,
        help_text: str,
        description: str,
        handler: Callable[[argparse.Namespace], int] | None = None,
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(
            name,
            help=help_text,
            description=description,
            epilog=EXIT_CODES,
            formatter_class=_Formatter,
        )
        if handler:
            p.set_defaults(handler=handler)
        return p

    # demo
    p = command(
        sub,
        "demo",
        "run the local federation demo end to end",
        "Seed synthetic data, create certificates and tokens, start every department node and the "
        "coordinator on 127.0.0.1, query persons and enterprises through the SDK, print score "
        "cards and what the coordinator saw, then shut everything down.",
        _cmd_demo,
    )
    p.add_argument(
        "--workdir", type=Path, default=Path(".osmanthus/demo"), help="where demo files go"
    )
    p.add_argument("--persons", type=int, default=2000, help="synthetic persons to seed")
    p.add_argument("--enterprises", type=int, default=300, help="synthetic enterprises to seed")

    # seed
    p = command(
        sub,
        "seed",
        "write deterministic synthetic records, one DuckDB file per department",
        "Write synthetic records for every department of the default catalogue into "
        "OUT/<department>.duckdb, plus OUT/subjects.csv listing the synthetic subjects. The same "
        "--seed and --as-of always give the same records.",
        _cmd_seed,
    )
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--persons", type=int, default=2000, help="number of synthetic persons")
    p.add_argument("--enterprises", type=int, default=300, help="number of synthetic enterprises")
    p.add_argument("--seed", type=int, default=20261126, help="random seed")
    p.add_argument("--as-of", type=_iso_date, help="reference date for record ages (default today)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    # certs
    certs = command(
        sub, "certs", "platform CA and mutual-TLS certificates", "Manage the platform CA."
    )
    certs_sub = certs.add_subparsers(dest="certs_command", required=True, metavar="ACTION")
    p = command(
        certs_sub,
        "init",
        "create the platform CA and every certificate",
        "Create OUT/ca.pem and ca.key, the coordinator certificate, one node certificate per "
        "department (the department is named in the certificate), one per requester and an "
        "operator certificate for health probes. Private keys are written mode 0600.",
        _cmd_certs_init,
    )
    p.add_argument("--out", type=Path, required=True, help="certificate directory to create")
    p.add_argument("--departments", nargs="*", help="department ids (default: the whole catalogue)")
    p.add_argument("--requesters", nargs="*", default=[], help="requester ids to certify")
    p.add_argument("--days", type=int, default=365, help="validity in days")
    p.add_argument("--overwrite", action="store_true", help="replace an existing CA (dangerous)")
    p = command(
        certs_sub,
        "issue",
        "issue one more certificate from an existing CA",
        "Issue a certificate for a new department node, requester or operator.",
        _cmd_certs_issue,
    )
    p.add_argument("--ca-dir", type=Path, required=True, help="the directory 'certs init' made")
    p.add_argument(
        "--role", required=True, choices=["node", "requester", "operator", "coordinator"]
    )
    p.add_argument("--name", required=True, help="department id, requester id or operator name")
    p.add_argument("--days", type=int, default=365, help="validity in days")
    p = command(
        certs_sub,
        "consent-key",
        "create the coordinator's consent-receipt signing key",
        "Create CA_DIR/coordinator/consent.key (mode 0600) and consent.pub: the Ed25519 key pair "
        "with which the coordinator signs a receipt for every consent it records. 'certs init' "
        "makes it too; use this for a CA made before receipts existed. Give consent.pub to "
        "banks and citizens who verify receipts. A consent.pub without its consent.key is "
        "refused: restore the key from backup. With --restore-public, write a lost consent.pub "
        "again from the existing consent.key instead.",
        _cmd_certs_consent_key,
    )
    p.add_argument("--ca-dir", type=Path, required=True, help="the directory 'certs init' made")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing key (receipts it signed stop verifying)",
    )
    p.add_argument(
        "--restore-public",
        action="store_true",
        help="never make a key: write coordinator/consent.pub from coordinator/consent.key "
        "(refused if an existing consent.pub is not its half)",
    )

    # keys
    keys = command(
        sub, "keys", "requester Paillier keys", "Manage a requester's Paillier key pair."
    )
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    p = command(
        keys_sub,
        "create",
        "generate a Paillier key pair and print its fingerprint",
        "Generate the requester's Paillier key pair (kept owner-only) and print the fingerprint "
        "to give to the platform when asking for a token.",
        _cmd_keys_create,
    )
    p.add_argument("--out", type=Path, required=True, help="key file to create")
    p.add_argument("--bits", type=int, default=2048, choices=[2048, 3072], help="modulus size")
    p = command(
        keys_sub,
        "fingerprint",
        "print a key file's fingerprint",
        "Print the fingerprint.",
        _cmd_keys_fingerprint,
    )
    p.add_argument("key", type=Path, help="key file")

    # token
    token = command(sub, "token", "platform access tokens (EdDSA JWT)", "Issue requester tokens.")
    token_sub = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    p = command(
        token_sub,
        "keygen",
        "create the platform's token-signing key pair",
        "Create the Ed25519 issuer key pair. Give the public key to the coordinator and every "
        "node.",
        _cmd_token_keygen,
    )
    p.add_argument("--private", type=Path, required=True, help="private key file (keep secret)")
    p.add_argument("--public", type=Path, required=True, help="public key file")
    p.add_argument("--overwrite", action="store_true", help="replace existing key files")
    p = command(
        token_sub,
        "issue",
        "issue a token to a requester",
        "Print a signed token binding a requester, its role, its purposes and its Paillier key "
        "fingerprint, valid for --ttl.",
        _cmd_token_issue,
    )
    p.add_argument("--issuer-key", type=Path, required=True, help="issuer private key")
    p.add_argument("--requester", required=True, help="requester id (as in its certificate)")
    p.add_argument("--role", required=True, choices=[r.value for r in Role], help="requester role")
    p.add_argument("--purpose", action="append", required=True, help="allowed purpose (repeatable)")
    p.add_argument("--key-fingerprint", required=True, help="from 'osmanthus keys create'")
    p.add_argument(
        "--ttl", type=_duration, default=timedelta(hours=1), help="lifetime, e.g. 15m, 12h"
    )
    p.add_argument("--single-use", action="store_true", help="the token may be used for one call")
    p.add_argument("--iss", default="osmanthus-platform", help="issuer claim")
    p.add_argument("--aud", default="osmanthus", help="audience claim")

    # node
    node = command(sub, "node", "run or load a department node", "Department node operations.")
    node_sub = node.add_subparsers(dest="node_command", required=True, metavar="ACTION")
    p = command(
        node_sub,
        "serve",
        "serve a department's contributions over mutual TLS",
        "Serve the department's records to the platform coordinator. Every request is checked: "
        "the coordinator's certificate, the requester's token and key binding, and this "
        "department's own Cedar policy (deny by default). Every decision is written to "
        "STATE_DIR/audit.jsonl without raw personal data. Stops cleanly on SIGTERM.",
        _cmd_node_serve,
    )
    p.add_argument("--department", required=True, help="department id, e.g. psb")
    p.add_argument("--db", type=Path, required=True, help="the department's DuckDB file")
    p.add_argument("--rules", type=Path, help="rule file (default: the embedded default rules)")
    _add_catalogue(p)
    p.add_argument("--policy", type=Path, help="Cedar policy (default: policies/node.cedar)")
    p.add_argument("--issuer-public-key", type=Path, required=True, help="token issuer public key")
    p.add_argument("--state-dir", type=Path, required=True, help="audit log and salt directory")
    p.add_argument("--listen", default="127.0.0.1:50051", help="host:port (port 0 = any free port)")
    p.add_argument("--ready-file", type=Path, help="write the bound port here once serving")
    p.add_argument(
        "--table-cache-mb",
        type=int,
        default=256,
        help="memory for fast-encryption tables (about 54 MB per 2048-bit requester key; "
        "0 = always use the slower plain path)",
    )
    _add_policy_bundle(p, scope="'node' or 'node:<department id>'")
    _add_tls(p, role_hint="node")
    p = command(
        node_sub,
        "import",
        "load records from CSV or Parquet (all rows or none)",
        "Validate every row of FILE (columns record_id, subject_kind, subject_id, kind, quantity, "
        "event_start, event_end, status) and insert all of them in one transaction. If any row is "
        "bad nothing is written and every bad row is reported by line and field. Stop the node "
        "first: DuckDB allows one writer.",
        _cmd_node_import,
    )
    p.add_argument("--department", required=True, help="department id")
    p.add_argument("--db", type=Path, required=True, help="the department's DuckDB file")
    p.add_argument("--rules", type=Path, help="rule file (default: embedded default rules)")
    p.add_argument("file", type=Path, help="CSV or Parquet file")

    # lists: one `lists_sub` action per task; each talks to one department's node or the platform
    lists = command(
        sub,
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
    lists_sub = lists.add_subparsers(dest="lists_command", required=True, metavar="ACTION")
    p = command(
        lists_sub,
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
    )
    p.add_argument("file", metavar="FILE", type=Path, help="the publication (.csv or .parquet)")
    _add_catalogue(p)
    _add_list_office(p)
    p = command(
        lists_sub,
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
    )
    p.add_argument("entry_id", metavar="ENTRY_ID", help="the entry's id, as published")
    p.add_argument(
        "--reason",
        required=True,
        choices=["repaired", "revoked", "error"],
        help="repaired: black lists; revoked: red lists; error: either",
    )
    p.add_argument("--reference", required=True, help="decision or case number behind it")
    _add_list_office(p)
    p = command(
        lists_sub,
        "history",
        "every entry of the department about one subject, with its events",
        "Print every entry the department's node holds about one subject, in view or not: its "
        "status today (scheduled, in_view, expired, withdrawn), window, reason, legal basis and "
        "each event (published, withdrawn) with who did it and when (UTC).",
        _cmd_lists_history,
    )
    p.add_argument(
        "--kind", required=True, choices=["person", "enterprise"], help="the subject's kind"
    )
    p.add_argument(
        "subject", metavar="SUBJECT", help="resident id or unified social credit code, in full"
    )
    _add_list_office(p)
    p = command(
        lists_sub,
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
    p.add_argument("--coordinator", required=True, help="coordinator host:port")
    p.add_argument("--requester", required=True, help="your requester id (certificate name)")
    p.add_argument("--token", help="your platform token (or --token-file)")
    p.add_argument("--token-file", type=Path, help="file holding your platform token")
    p.add_argument(
        "--keys",
        type=Path,
        required=True,
        help="your Paillier key file, the one your token is bound to (the search uses no "
        "encryption, but the token must match it)",
    )
    _add_catalogue(p)
    _add_tls(p, role_hint="requester")

    # coordinator
    coord = command(sub, "coordinator", "run the coordinator", "Coordinator operations.")
    coord_sub = coord.add_subparsers(dest="coordinator_command", required=True, metavar="ACTION")
    p = command(
        coord_sub,
        "serve",
        "serve requesters: policy, consent, fan-out and blind sums",
        "Serve requester queries: verify the token against the client certificate, evaluate the "
        "central Cedar policy, check consent, ask every relevant node at once within --deadline, "
        "validate and add the ciphertexts, and answer with the sum and its coverage. The "
        "coordinator never holds a decryption key.",
        _cmd_coordinator_serve,
    )
    p.add_argument("--nodes", type=Path, required=True, help="nodes.toml: department → address")
    _add_catalogue(p)
    p.add_argument(
        "--policy", type=Path, help="central Cedar policy (default policies/central.cedar)"
    )
    p.add_argument("--issuer-public-key", type=Path, required=True, help="token issuer public key")
    p.add_argument("--state-dir", type=Path, required=True, help="consents, keys and audit log")
    p.add_argument("--listen", default="127.0.0.1:50050", help="host:port (port 0 = any free port)")
    p.add_argument("--deadline", type=float, default=5.0, help="seconds to wait for the nodes")
    p.add_argument(
        "--table-cache-mb",
        type=int,
        default=256,
        help="memory for the tables that re-randomise forwarded sums (about 54 MB per 2048-bit "
        "requester key; 0 = always use the slower plain path)",
    )
    p.add_argument("--ready-file", type=Path, help="write the bound port here once serving")
    p.add_argument(
        "--consent-key",
        type=Path,
        help="Ed25519 key that signs consent receipts, checked against the consent.pub beside "
        "it (default: coordinator/consent.key in --certs-dir if there, else "
        "STATE_DIR/consent.key, created with consent.pub on first start; if both exist, "
        "the coordinator does not start until this option picks one)",
    )
    p.add_argument(
        "--consent-issuer",
        default=_DEFAULT_RECEIPT_ISSUER,
        help="the issuer name every consent receipt carries; verifiers pin it with "
        "'consent verify --issuer' or sdk.verify_consent_receipt(issuer=...)",
    )
    _add_policy_bundle(p, scope="'central'")
    _add_tls(p, role_hint="coordinator")

    # consent
    consent = command(
        sub, "consent", "consent receipts", "Work with the consents the coordinator records."
    )
    consent_sub = consent.add_subparsers(dest="consent_command", required=True, metavar="ACTION")
    p = command(
        consent_sub,
        "verify",
        "check a signed consent receipt and print what it attests",
        "Verify a consent receipt (the 'receipt' of a granted consent) against the coordinator's "
        "consent.pub and print the consent id, subject (all but the last 4 characters starred), "
        "grantee, purpose, and validity. With --grantee, --purpose, --subject or --kind the "
        "receipt must name that value; --issuer is the name the platform's coordinator signs "
        "as. Exit 3 if the input is not a receipt, a file is unusable or an option's value "
        "could never match, 4 if the signature, issuer, validity or an expected value does "
        "not match. A receipt proves the consent was granted, not that it is unrevoked.",
        _cmd_consent_verify,
    )
    p.add_argument("receipt", metavar="RECEIPT", help="file holding the receipt, or - for stdin")
    p.add_argument("--key", type=Path, required=True, help="the coordinator's consent.pub")
    p.add_argument("--grantee", help="requester the consent must be granted to")
    p.add_argument("--purpose", help="purpose the consent must be for")
    p.add_argument(
        "--subject", help="resident id or credit code of the subject that must have consented"
    )
    p.add_argument(
        "--kind",
        choices=[k.value for k in SubjectKind],
        help="the receipt must be a person's consent or an enterprise's (the tax-bank loan's)",
    )
    p.add_argument(
        "--issuer",
        default=_DEFAULT_RECEIPT_ISSUER,
        help="the issuer name the platform's coordinator signs as (its --consent-issuer)",
    )

    # policy
    policy = command(sub, "policy", "Cedar access policies", "Policy tools for privacy officers.")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True, metavar="ACTION")
    p = command(
        policy_sub,
        "validate",
        "check that policy files parse",
        "Parse each Cedar policy file and report errors with file and line.",
        _cmd_policy_validate,
    )
    p.add_argument("files", type=Path, nargs="+", help="policy files")
    p = command(
        policy_sub,
        "test",
        "check a policy against the decisions the privacy office expects",
        "Run every case of the case files (TOML: one [[case]] per request, with the decision "
        "expected and, optionally, the rules that must decide it and the minimum number of "
        "departments) against the policy file, and list each case as PASS or FAIL with what "
        "differs. policies/cases/ holds the cases of the default policies. Exit 6 if any case "
        "fails.",
        _cmd_policy_test,
    )
    p.add_argument("--policy", type=Path, required=True, help="the Cedar policy file to test")
    p.add_argument("cases", type=Path, nargs="+", help="case files (TOML)")
    p = command(
        policy_sub,
        "diff",
        "list the requests a policy change newly allows or denies",
        "Decide a generated set of requests with both policy files and list every request "
        "whose decision changes, with the rules that decided it before and after. The set "
        "covers every role and action, and for each fact the values that matter: every "
        "purpose, requester and department either file names plus one neither names, every "
        "consent state, both shapes, coverage around the 80 % line.",
        _cmd_policy_diff,
    )
    p.add_argument("old", type=Path, help="the policy in force")
    p.add_argument("new", type=Path, help="the proposed policy")
    p.add_argument("--limit", type=int, default=40, help="changes listed per direction")
    p.add_argument(
        "--exit-code", action="store_true", help="exit 1 when any decision changes (for scripts)"
    )
    p = command(
        policy_sub,
        "explain",
        "show how a policy decides one request, and why",
        "Evaluate one request against a policy file and print the decision, the rules (@id) "
        "that decided it, the reason the audit log would record and, for an allowed query, "
        "the minimum number of departments in any sum. Context values: whole numbers and "
        "true/false are typed, the rest is text.\n\n"
        "example: osmanthus policy explain --policy policies/central.cedar --requester bank-1 "
        "--role bank --action PersonQuery --resource Dataset::person "
        "--context purpose=loan_underwriting shape=total consent=valid",
        _cmd_policy_explain,
    )
    p.add_argument("--policy", type=Path, required=True, help="the Cedar policy file")
    p.add_argument("--requester", required=True, help="requester id, e.g. bank-1")
    p.add_argument(
        "--role",
        required=True,
        help="bank, credit_agency, library, sync_job, platform_service or data_subject",
    )
    p.add_argument("--action", required=True, help="e.g. PersonQuery, Contribute, BatchQuery")
    p.add_argument("--resource", required=True, help="Type::id, e.g. Dataset::person")
    p.add_argument(
        "--context", nargs="*", default=[], metavar="KEY=VALUE", help="facts of the request"
    )
    p = command(
        policy_sub,
        "keygen",
        "create a publisher key pair for signing policy bundles",
        "Create an Ed25519 key pair for publishing policies: OUT_DIR/NAME.key (private, mode "
        "0600: keep it on the privacy office's machine only) and OUT_DIR/NAME.pub (public: give "
        "it to the coordinator and every node, which trust bundles signed with it through "
        "--policy-trust). Existing files are never replaced.",
        _cmd_policy_keygen,
    )
    p.add_argument("--out-dir", type=Path, required=True, help="directory for the key pair")
    p.add_argument("--name", default="policy-publisher", help="file name of the pair")
    p = command(
        policy_sub,
        "publish",
        "sign a policy into a bundle the servers load without a restart",
        "Check the policy (a policy with a mistake is refused with its file and line, exit 3), "
        "then write a signed bundle to --out: the policy, its scope, a serial number, who "
        "published it and when, signed with --key. Copy the bundle over the file a server "
        "follows (--policy-bundle); the server checks it within seconds and puts it in force "
        "if it is signed by a key it trusts, is for its scope and has a higher serial than the "
        "bundle in force. Otherwise it logs why and keeps the policy it has. The bundle's hash "
        "(printed) is recorded in every audit entry made under it.\n\n"
        "scopes: 'central' (the coordinator), 'node' (every department node), "
        "'node:<department id>' (one department's node, e.g. node:tax)\n\n"
        "example: osmanthus policy publish --policy central.cedar --scope central "
        "--key keys/privacy-office.key --out /srv/osmanthus/central.bundle",
        _cmd_policy_publish,
    )
    p.add_argument("--policy", type=Path, required=True, help="the Cedar policy file to publish")
    p.add_argument("--scope", required=True, help="central, node or node:<department id>")
    p.add_argument("--key", type=Path, required=True, help="publisher private key (NAME.key)")
    p.add_argument("--out", type=Path, required=True, help="the bundle file to write")
    p.add_argument(
        "--serial",
        type=int,
        help="bundle serial number (default: the serial of the bundle at --out plus 1, or 1). "
        "A node reads 'node' and 'node:<its id>' bundles as one sequence: when you publish for "
        "both, each serial must be above every serial published before it for either",
    )
    p.add_argument("--publisher", help="who publishes, e.g. your name (default: the key's name)")
    p = command(
        policy_sub,
        "verify",
        "check a policy bundle as a server would",
        "Check a bundle's signature against the trusted publisher keys, its consistency and its "
        "policy, and, with --scope, that a server of that scope would accept it; print its "
        "scope, serial, hash and publisher. Exit 3 with the reason if any check fails.",
        _cmd_policy_verify,
    )
    p.add_argument("bundle", type=Path, help="the bundle file")
    p.add_argument(
        "--trust",
        type=Path,
        action="append",
        required=True,
        metavar="KEY.pub",
        help="public key of a trusted publisher (repeatable)",
    )
    p.add_argument(
        "--scope", help="the reader: central, node or node:<department id> (default: any)"
    )

    # batch
    batch = command(
        sub, "batch", "score many subjects at once", "Batch jobs for the platform's services."
    )
    batch_sub = batch.add_subparsers(dest="batch_command", required=True, metavar="ACTION")
    p = command(
        batch_sub,
        "score",
        "score every subject id of a CSV file into a Parquet file",
        "Stream the ids of --in (a CSV file with a 'subject_id' column) to the coordinator in "
        "chunks; every department scores each chunk under your key, the coordinator adds the "
        "parts up blindly, and this command decrypts them on all cores and writes one row per "
        "input line to --out (Parquet: line, subject_id, score, grade, and for --shape "
        "breakdown deductions and bonus_<category>; 'refused' says why a subject was not "
        "scored).\n\n"
        "Work is saved every few chunks. If the job stops (Ctrl-C, a department down), run the "
        "same command again: it resumes from the checkpoint kept next to --out, with no "
        "duplicate and no missing row. The central policy decides who may batch and for what "
        "purpose (by default the platform's services and the sync job, for credit_rescoring).",
        _cmd_batch_score,
    )
    p.add_argument("--in", dest="source", type=Path, required=True, help="CSV of subject ids")
    p.add_argument("--out", type=Path, required=True, help="Parquet file to write")
    p.add_argument("--coordinator", required=True, help="coordinator host:port")
    p.add_argument("--requester", required=True, help="your requester id (certificate name)")
    p.add_argument("--token", help="your platform token (or --token-file)")
    p.add_argument("--token-file", type=Path, help="file holding your platform token")
    p.add_argument(
        "--keys", type=Path, required=True, help="your Paillier key file (created if absent)"
    )
    p.add_argument("--purpose", default="credit_rescoring", help="purpose named in the token")
    p.add_argument("--kind", choices=["person", "enterprise"], default="person")
    p.add_argument(
        "--shape",
        choices=["total", "breakdown"],
        default="total",
        help="total: the score only; breakdown: deductions and each bonus category too",
    )
    p.add_argument(
        "--chunk-size",
        type=int,
        help="subjects per chunk (default: --ciphertexts-per-chunk full ciphertexts)",
    )
    p.add_argument("--ciphertexts-per-chunk", type=int, default=24, help=argparse.SUPPRESS)
    p.add_argument("--decrypt-workers", type=int, help="decryption processes (default: every core)")
    _add_catalogue(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_tls(p, role_hint="requester")

    # report
    report = command(
        sub,
        "report",
        "signed enterprise credit reports",
        "Issue enterprise credit reports signed by the issuer, and verify them.",
    )
    report_sub = report.add_subparsers(dest="report_command", required=True, metavar="ACTION")
    p = command(
        report_sub,
        "keygen",
        "create the Ed25519 key pair an issuer signs reports with",
        "Create OUT_DIR/NAME.key (private, mode 0600) and OUT_DIR/NAME.pub (public: publish it "
        "so that readers can verify your reports). Existing files are never replaced.",
        _cmd_report_keygen,
    )
    p.add_argument("--out-dir", type=Path, required=True, help="directory for the key pair")
    p.add_argument("--name", default="report-issuer", help="file name of the pair")
    p = command(
        report_sub,
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
    p.add_argument("--coordinator", required=True, help="coordinator host:port")
    p.add_argument("--requester", required=True, help="your requester id (certificate name)")
    p.add_argument("--token", help="your platform token (or --token-file)")
    p.add_argument("--token-file", type=Path, help="file holding your platform token")
    p.add_argument(
        "--keys", type=Path, required=True, help="your Paillier key file (created if absent)"
    )
    p.add_argument("--purpose", default="credit_report", help="purpose named in the token")
    _add_catalogue(p)
    _add_tls(p, role_hint="requester")
    p = command(
        report_sub,
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
    )
    p.add_argument("report", metavar="FILE", type=Path, help="the report (PDF or HTML)")
    p.add_argument("--key", type=Path, required=True, help="the issuer's public key (NAME.pub)")

    # province: the reference provincial receiver that cities' sync jobs deliver to
    province = command(
        sub,
        "province",
        "the reference provincial receiver of sync batches",
        "Run and inspect the reference provincial receiver: it stands in for the provincial "
        "credit information sharing platform in development and tests (docs/province.md).",
    )
    province_sub = province.add_subparsers(dest="province_command", required=True, metavar="ACTION")
    p = command(
        province_sub,
        "serve",
        "receive signed sync batches over mutual TLS",
        "Serve osmanthus.v1.ProvinceService. A batch is accepted only from a certificate that "
        "--senders registers for the batch's sender, signed with one of that sender's Ed25519 "
        "keys, in the batch format, and continuing that sender's stream of its kind (sequence "
        "and watermark follow on from the last batch). It is stored with its records in "
        "STATE_DIR/province.duckdb in one transaction; a batch delivered again is acknowledged "
        "and not stored twice. Every refusal is recorded and listed by 'province batches'. "
        "Serves with the node certificate named --name ('osmanthus certs issue --role node "
        "--name province'). Stops cleanly on SIGTERM.",
        _cmd_province_serve,
    )
    p.add_argument(
        "--senders",
        type=Path,
        required=True,
        help="senders.toml: each city's id, public keys and delivering certificates",
    )
    p.add_argument("--state-dir", type=Path, required=True, help="where the batch store lives")
    p.add_argument("--listen", default="127.0.0.1:50060", help="host:port (port 0 = any free port)")
    p.add_argument("--ready-file", type=Path, help="write the bound port here once serving")
    p.add_argument("--name", default="province", help="the receiver's node certificate name")
    p.add_argument(
        "--operator",
        action="append",
        metavar="NAME",
        help="operator certificate that may list everything (repeatable; default: operator)",
    )
    _add_tls(p, role_hint="receiver's node")
    p = command(
        province_sub,
        "keygen",
        "create the Ed25519 key pair a city's sync job signs batches with",
        "Create OUT_DIR/NAME.key (private, mode 0600: the sync job signs with it) and "
        "OUT_DIR/NAME.pub (register it for the city in the receiver's senders.toml). Existing "
        "files are never replaced.",
        _cmd_province_keygen,
    )
    p.add_argument("--out-dir", type=Path, required=True, help="directory for the key pair")
    p.add_argument("--name", default="sync", help="file name of the pair")
    p = command(
        province_sub,
        "batches",
        "list the batches a receiver stored and the deliveries it refused",
        "Ask a running receiver for the batches it stored (newest first: id, sender, kind, "
        "sequence, records, watermark range, partial flag, delivering certificate) and the "
        "deliveries it refused (time, certificate, sender and batch claimed, reason). With "
        "the receiver's operator certificate every sender is listed; with a sender's "
        "certificate (--requester), only that sender's batches and its own rejections.",
        _cmd_province_batches,
    )
    p.add_argument("--target", required=True, help="the receiver's host:port")
    p.add_argument(
        "--server-name",
        default="province.node.osmanthus",
        help="the name the receiver's certificate must carry",
    )
    p.add_argument("--sender", help="only this sender's batches")
    p.add_argument(
        "--kind", choices=["list_changes", "grades", "statistics"], help="only this kind"
    )
    p.add_argument("--limit", type=int, default=20, help="batches and rejections shown (1-100)")
    p.add_argument("--page-token", default="", help="continue a listing ('more:' gives it)")
    p.add_argument(
        "--operator", default="operator", help="operator certificate name in --certs-dir"
    )
    p.add_argument("--requester", help="list with this requester certificate instead")
    _add_tls(p, role_hint="operator (or --requester)")

    # sync: the provincial sync job
    sync = command(
        sub,
        "sync",
        "the provincial sync job: report list changes, grades and statistics upward",
        "Run and inspect the city's provincial sync job (docs/province.md). Everything it needs "
        "is in one config file, sync.toml: the sender id, the Ed25519 signing key, the state "
        "directory, the coordinator (as a sync_job requester: certificate, token, Paillier "
        "keys), the province's receiver, and what to report on which schedule.",
    )
    sync_sub = sync.add_subparsers(dest="sync_command", required=True, metavar="ACTION")
    p = command(
        sync_sub,
        "run",
        "gather what changed, sign it into batches and deliver them",
        "One run: deliver batches an earlier run left undelivered, then gather each kind of "
        "data that is due (list entries published and withdrawn since the job's cursor, and "
        "expiries; enterprise grades that changed; statistics through STATS), put them into "
        "signed batches, and deliver them in order, retrying an unreachable receiver with "
        "exponential backoff and jitter for [delivery] retry_for. Each batch is checkpointed "
        "when the receiver acknowledges it; a run stopped at any point (even kill -9) resumes "
        "with nothing lost or sent twice. Prints progress on stderr and a summary line "
        "(batches, records, duplicates, retries, duration). With --every it runs on that "
        "schedule until SIGTERM and then exits 0; a run that fails is reported (stderr, "
        "metrics, 'sync status') and the next one runs on schedule. Exit codes of a single "
        "run: 0 all delivered (a department that did not "
        "answer is reported as partial, not as a failure), 3 configuration or input error, "
        "4 refused by the receiver or the coordinator (see 'sync status'), 5 the receiver or "
        "coordinator unreachable for longer than retry_for (the batches wait in the outbox), "
        "130 stopped.\n\n"
        "example: osmanthus sync run --config /etc/osmanthus/sync.toml --every 1h "
        "--metrics-listen 127.0.0.1:9464",
        _cmd_sync_run,
    )
    p.add_argument("--config", type=Path, required=True, help="sync.toml")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--once", action="store_true", help="one run, then exit (the default)")
    when.add_argument(
        "--every", type=_duration, metavar="DURATION", help="run on this schedule, e.g. 1h"
    )
    p.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics while running",
    )
    p.add_argument(
        "--metrics-file",
        type=Path,
        help="write Prometheus metrics here after each run (node-exporter textfile collector)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress, only the summary line")
    p = command(
        sync_sub,
        "status",
        "show the job's watermarks, last success, backlog and last error",
        "Read the job's state (it may be running): for each stream (list_changes, grades, "
        "statistics) the last batch the receiver acknowledged and its watermark, when the last "
        "delivery succeeded, the batches waiting in the outbox, the last run, the last error, "
        "each department's list feed cursor and when each kind of data is next due.",
        _cmd_sync_status,
    )
    p.add_argument("--config", type=Path, required=True, help="sync.toml")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = command(
        sync_sub,
        "rebase",
        "renumber waiting batches to follow the receiver's stream (after a gap or overlap)",
        "When the receiver refuses the job's next batch as a gap or an overlap, the job's state "
        "and the receiver disagree on where the stream stands (a state restored from an old "
        "backup, a receiver reset). This asks the receiver for its last batch of --kind and "
        "renumbers every waiting batch of that kind to follow it: records and their order are "
        "kept, each batch gets the next sequence and is signed anew (its id changes). If the "
        "receiver may already hold some of these records (an old backup), ask the province "
        "first: they would be stored again. Needs the job to be stopped (it takes the state's "
        "lock).\n\n"
        "example: osmanthus sync rebase --config /etc/osmanthus/sync.toml --kind grades",
        _cmd_sync_rebase,
    )
    p.add_argument("--config", type=Path, required=True, help="sync.toml")
    p.add_argument(
        "--kind", required=True, choices=["list_changes", "grades", "statistics"], help="stream"
    )

    # health
    p = command(
        sub,
        "health",
        "probe a node or coordinator with the standard gRPC health check",
        "Ask a server for its health over mutual TLS with the operator certificate. Exit 0 when "
        "SERVING, 5 otherwise. Used by docker-compose health checks.",
        _cmd_health,
    )
    p.add_argument("--target", required=True, help="host:port")
    p.add_argument(
        "--server-name", required=True, help="e.g. coordinator.osmanthus or psb.node.osmanthus"
    )
    p.add_argument("--service", default="", help="service name ('' = the whole server)")
    p.add_argument(
        "--operator", default="operator", help="operator certificate name in --certs-dir"
    )
    p.add_argument("--timeout", type=float, default=3.0, help="seconds")
    _add_tls(p, role_hint="operator")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except ImportRejected as exc:
        print(f"error: {exc}", file=sys.stderr)
        for line, field, problem in exc.problems[:200]:
            print(f"  line {line}: {field}: {problem}", file=sys.stderr)
        if len(exc.problems) > 200:
            print(f"  … and {len(exc.problems) - 200} more", file=sys.stderr)
        return exc.exit_code
    except OsmanthusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception:
        _log.exception("internal error")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())

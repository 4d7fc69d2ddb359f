"""`osmanthus node`: serve a department's contributions, and load its records."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from osmanthus.cli.env import read_environment
from osmanthus.cli.exit_codes import ExitCode
from osmanthus.cli.options import (
    Subcommands,
    catalogue_of,
    catalogue_options,
    check_bundle_on_sighup,
    command,
    command_group,
    crl_file,
    duration,
    log_key_file,
    log_roster_file,
    policy_bundle,
    policy_bundle_options,
    revocation_options,
    server_options,
    tls_files,
    tls_options,
    transparency_log_options,
)

_log = logging.getLogger("osmanthus")


def register(subcommands: Subcommands) -> None:
    """Add `node serve|import`."""
    node = command_group(
        subcommands, "node", "run or load a department node", "Department node operations."
    )
    p = command(
        node,
        "serve",
        "serve a department's contributions over mutual TLS",
        "Serve the department's records to the platform coordinator. Every request is checked: "
        "the coordinator's certificate, the requester's token and key binding, this "
        "department's own Cedar policy (deny by default) and, for a request about one subject, "
        "the subject's consent (the registry's signed receipt and revocation feed, verified "
        "with --consent-public-key). Every decision is written to "
        "STATE_DIR/audit.jsonl without raw personal data; with a log key, the log's signed "
        "checkpoints, proofs and entries are served to the coordinator and the department's "
        "operator certificate (TransparencyService). Stops cleanly on SIGTERM.",
        _cmd_node_serve,
        parents=[
            catalogue_options(),
            server_options(
                listen="127.0.0.1:50051",
                state_dir="the node's state: audit log and salt, list and case stores, case keys",
            ),
            policy_bundle_options(scope="'node' or 'node:<department id>'"),
            tls_options(role_hint="node"),
            revocation_options(tokens=True),
            transparency_log_options(key_hint="nodes/DEPARTMENT/log.key"),
        ],
        extra="node",
    )
    p.add_argument("--department", required=True, help="department id, e.g. psb")
    p.add_argument("--db", type=Path, required=True, help="the department's DuckDB file")
    p.add_argument("--rules", type=Path, help="rule file (default: the embedded default rules)")
    p.add_argument("--policy", type=Path, help="Cedar policy (default: policies/node.cedar)")
    p.add_argument("--issuer-public-key", type=Path, required=True, help="token issuer public key")
    p.add_argument(
        "--consent-public-key",
        type=Path,
        help="the consent registry's public key (the coordinator's consent.pub): this node "
        "verifies every consent receipt and revocation head with it before it answers under a "
        "consent (default with --certs-dir: CERTS_DIR/coordinator/consent.pub)",
    )
    p.add_argument(
        "--consent-issuer",
        default="osmanthus-consent-registry",
        help="the issuer name the coordinator signs receipts as (its --consent-issuer)",
    )
    p.add_argument(
        "--max-revocation-staleness",
        type=duration,
        default=timedelta(seconds=60),
        help="refuse queries under a consent when the newest revocation head verified is "
        "older than this (5s to 1h): a coordinator withholding revocations is refused after it",
    )
    p.add_argument(
        "--unsafe-trust-coordinator-consent",
        action="store_true",
        help="UNSAFE: do not verify consents; answer whenever the coordinator says a consent "
        "exists (only to run with a coordinator from before receipts travelled)",
    )
    p.add_argument(
        "--case-settings",
        type=Path,
        metavar="FILE",
        help="objections and credit repair (docs/cases.md): a TOML file with the deadlines in "
        "working days ([deadlines] reply_working_days, decide_working_days), how long a "
        "decided case's attachments are kept ([retention] days), the per-subject limits "
        "([limits] filings_per_subject_per_day, open_cases_per_subject) and the year's "
        "calendar ([calendar] holidays, working_weekend_days: lists of YYYY-MM-DD). Read at "
        "start; an unknown key or a bad value stops the node naming it. Default: 10 and 3 "
        "working days, 1095 days, 5 filings a day and 10 open cases, Monday to Friday",
    )
    p.add_argument(
        "--inbox",
        type=Path,
        metavar="DIR",
        help="a folder this node watches for import files (.csv or .parquet, moved in whole: "
        "write them elsewhere or as NAME.tmp and rename them in). Each is applied in name "
        "order, every row or none, then moved to DIR/done/, or to DIR/rejected/ beside "
        "NAME.reason.txt naming every bad row; a file the node stopped in the middle of is "
        "applied whole at the next start, or was applied already and is only moved",
    )
    p.add_argument(
        "--table-cache-mb",
        type=int,
        default=256,
        help="memory for fast-encryption tables (about 54 MB per 2048-bit requester key; "
        "0 = always use the slower plain path)",
    )
    read_environment(p)

    p = command(
        node,
        "import",
        "load records from CSV or Parquet (all rows or none)",
        "Validate every row of FILE (columns record_id, subject_kind, subject_id, kind, quantity, "
        "event_start, event_end, status, and optionally action and reason) and apply all of "
        "them in one transaction. A row adds a record (action empty or 'add'), corrects a "
        "stored one ('correct': the whole record again, same subject) or withdraws one "
        "('withdraw': record_id and reason); corrections and withdrawals keep the record's "
        "history (who, when, why). If any row is bad nothing is written and every bad row is "
        "reported by line and field. A file applied before (same SHA-256) is not applied "
        "again. With --node, FILE is uploaded to the running node (the department's operator "
        "certificate); with --db, the node must be stopped (DuckDB allows one writer).",
        _cmd_node_import,
        parents=[tls_options(role_hint="operator")],
        extra="node",
    )
    p.add_argument("--department", required=True, help="department id")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--node", metavar="HOST:PORT", help="upload to the department's running node"
    )
    where.add_argument("--db", type=Path, help="the department's DuckDB file (node stopped)")
    p.add_argument("--rules", type=Path, help="rule file (default: embedded default rules)")
    p.add_argument(
        "--operator",
        help="with --node: name of your operator certificate in --certs-dir (default: the "
        "department id)",
    )
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")
    p.add_argument("file", type=Path, help="CSV or Parquet file")


def _cmd_node_serve(args: argparse.Namespace) -> int:
    from node.server import DEFAULT_NODE_POLICY, NodeConfig, start_node
    from osmanthus.core.server import serve_until_signalled

    config = NodeConfig(
        department=args.department,
        db=args.db,
        tls=tls_files(args, role="node", name=args.department),
        issuer_public_key=args.issuer_public_key,
        state_dir=args.state_dir,
        listen=args.listen,
        metrics_listen=args.metrics_listen,
        rules=args.rules,
        policy=args.policy or DEFAULT_NODE_POLICY,
        table_cache_bytes=args.table_cache_mb * 2**20,
        policy_bundle=policy_bundle(args),
        policy_trust=tuple(args.policy_trust),
        policy_poll_s=args.policy_poll,
        consent_public_key=_consent_public_key(args),
        consent_issuer=args.consent_issuer,
        max_revocation_staleness=args.max_revocation_staleness,
        unsafe_trust_coordinator_consent=args.unsafe_trust_coordinator_consent,
        crl=crl_file(args),
        token_deny_list=args.token_deny_list,
        case_settings=args.case_settings,
        log_key=log_key_file(args, role="node", name=args.department),
        log_roster=log_roster_file(args),
        checkpoint_every=args.checkpoint_every,
        checkpoint_interval_s=args.checkpoint_interval,
        inbox=args.inbox,
    )
    # before the server starts: until the handler is in place SIGHUP would end the process
    check_bundle_on_sighup(args)
    running = start_node(config, catalogue=catalogue_of(args))
    _log.info("node %s serving on port %d", args.department, running.port)
    serve_until_signalled(running, ready_file=args.ready_file)
    return ExitCode.SUCCESS


def _consent_public_key(args: argparse.Namespace) -> Path | None:
    """--consent-public-key, or the coordinator's consent.pub in --certs-dir if it is there."""
    if args.consent_public_key is not None or args.unsafe_trust_coordinator_consent:
        return args.consent_public_key  # type: ignore[no-any-return]
    if args.certs_dir:
        published = Path(args.certs_dir) / "coordinator" / "consent.pub"
        if published.exists():
            return published
    return None


def _cmd_node_import(args: argparse.Namespace) -> int:
    if args.node:
        return _import_live(args)
    import getpass

    from node.store import RecordStore
    from osmanthus.core.catalogue import load_catalogue
    from osmanthus.core.files import narrow_umask
    from osmanthus.core.rules import load_default_rules, load_rules

    # the records hold resident ids: a database this creates, and DuckDB's log of it, are the
    # importing user's only (an existing file keeps the mode its operator gave it)
    narrow_umask()
    catalogue = load_catalogue()
    dept = catalogue.department(args.department)
    rules = (
        load_rules(args.rules, catalogue=catalogue)
        if args.rules
        else load_default_rules(dept.id, catalogue=catalogue)
    )
    with RecordStore(args.db, department=dept.id) as store:
        report = store.import_file(
            args.file, rules=rules, catalogue=catalogue, actor=f"offline:{getpass.getuser()}"
        )
    _print_import(
        args,
        where=str(args.db),
        added=report.rows,
        corrected=report.corrected,
        withdrawn=report.withdrawn,
        sha256=report.sha256,
        duplicate=report.duplicate,
        applied_by=report.actor,
    )
    return ExitCode.SUCCESS


def _import_live(args: argparse.Namespace) -> int:
    """`node import --node`: upload FILE to the running node, with a progress bar."""
    from node.importer import RecordImporter

    tls = tls_files(args, role="operator", name=args.operator or args.department)
    size = args.file.stat().st_size if args.file.is_file() else 0
    with (
        RecordImporter(args.node, department=args.department, tls=tls) as importer,
        _upload_bar(args, total=size) as bar,
    ):
        outcome = importer.upload(args.file, progress=bar.update if bar is not None else None)
    _print_import(
        args,
        where=f"the node of {args.department} at {args.node}",
        added=outcome.added,
        corrected=outcome.corrected,
        withdrawn=outcome.withdrawn,
        sha256=outcome.sha256,
        duplicate=outcome.duplicate,
        applied_by=outcome.applied_by,
    )
    return ExitCode.SUCCESS


@contextmanager
def _upload_bar(args: argparse.Namespace, *, total: int) -> Iterator[Any]:
    """A tqdm bar of the bytes sent, on a terminal's stderr only (and not with --json)."""
    if args.json or not sys.stderr.isatty():
        yield None
        return
    try:
        from tqdm import tqdm
    except ModuleNotFoundError:  # the base install has no tqdm: no bar, nothing lost
        yield None
        return
    with tqdm(total=total, unit="B", unit_scale=True, desc="upload", leave=False) as bar:
        yield bar


def _print_import(
    args: argparse.Namespace,
    *,
    where: str,
    added: int,
    corrected: int,
    withdrawn: int,
    sha256: str,
    duplicate: bool,
    applied_by: str,
) -> None:
    if args.json:
        print(
            json.dumps(
                {
                    "file": str(args.file),
                    "sha256": sha256,
                    "duplicate": duplicate,
                    "added": added,
                    "corrected": corrected,
                    "withdrawn": withdrawn,
                    "applied_by": applied_by,
                },
                sort_keys=True,
            )
        )
    elif duplicate:
        print(
            f"{args.file} was applied before (SHA-256 {sha256[:16]}..., by {applied_by}): "
            f"nothing done; it had added {added}, corrected {corrected}, withdrawn {withdrawn}"
        )
    else:
        print(
            f"imported {added} records from {args.file} into {where}"
            + (f"; corrected {corrected}, withdrew {withdrawn}" if corrected or withdrawn else "")
        )

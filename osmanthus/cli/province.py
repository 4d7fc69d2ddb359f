"""`osmanthus province`: the reference provincial receiver of the cities' sync batches."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from osmanthus.cli.env import read_environment
from osmanthus.cli.exit_codes import ExitCode
from osmanthus.cli.options import (
    Subcommands,
    command,
    command_group,
    crl_file,
    revocation_options,
    server_options,
    signing_key_options,
    tls_files,
    tls_options,
    write_signing_key,
)

_log = logging.getLogger("osmanthus")


def register(subcommands: Subcommands) -> None:
    """Add `province serve|keygen|batches`."""
    # the reference provincial receiver that cities' sync jobs deliver to
    province = command_group(
        subcommands,
        "province",
        "the reference provincial receiver of sync batches",
        "Run and inspect the reference provincial receiver: it stands in for the provincial "
        "credit information sharing platform in development and tests (docs/province.md).",
    )
    p = command(
        province,
        "serve",
        "receive signed sync batches over mutual TLS",
        "Serve osmanthus.v1.ProvinceService. A batch is accepted only from a certificate that "
        "--senders registers for the batch's sender, signed with one of that sender's Ed25519 "
        "keys, in the batch format, and continuing that sender's stream of its kind (sequence "
        "and watermark follow on from the last batch). It is stored with its records in "
        "STATE_DIR/province.duckdb in one transaction; a batch delivered again is acknowledged "
        "and not stored twice. Every refusal is recorded and listed by 'province batches'. "
        "Serves with the node certificate named --name ('osmanthus certs issue --role node "
        "--name province'). With --witness-key and --logs it is also a witness of the "
        "platform's transparency logs (osmanthus.v1.WitnessService, docs/transparency.md): "
        "it cosigns a log's checkpoint only after checking its consistency with the last one "
        "it cosigned, keeps that in STATE_DIR/witness.json, and logs every refusal that shows "
        "a log misbehaving at ERROR. Stops cleanly on SIGTERM.",
        _cmd_province_serve,
        parents=[
            server_options(listen="127.0.0.1:50060", state_dir="where the batch store lives"),
            tls_options(role_hint="receiver's node"),
            revocation_options(tokens=False),
        ],
        extra="province",
    )
    p.add_argument(
        "--senders",
        type=Path,
        required=True,
        help="senders.toml: each city's id, public keys and delivering certificates",
    )
    p.add_argument("--name", default="province", help="the receiver's node certificate name")
    p.add_argument(
        "--operator",
        action="append",
        metavar="NAME",
        help="operator certificate that may list everything (repeatable; default: operator)",
    )
    p.add_argument(
        "--witness-key",
        type=Path,
        help="the receiver's witness key (witness.key from 'osmanthus certs log-key --role "
        "node --name province --witness'); with --logs, serve WitnessService",
    )
    p.add_argument(
        "--logs",
        type=Path,
        help="logs.toml, the roster of the logs to witness and their keys (certs init writes it)",
    )
    # --metrics-listen comes with the server options: its RPCs' metrics, and its witness's
    read_environment(p)
    p = command(
        province,
        "keygen",
        "create the Ed25519 key pair a city's sync job signs batches with",
        "Create OUT_DIR/NAME.key (private, mode 0600: the sync job signs with it) and "
        "OUT_DIR/NAME.pub (register it for the city in the receiver's senders.toml). Existing "
        "files are never replaced.",
        _cmd_province_keygen,
        parents=[signing_key_options(name="sync")],
    )
    p = command(
        province,
        "batches",
        "list the batches a receiver stored and the deliveries it refused",
        "Ask a running receiver for the batches it stored (newest first: id, sender, kind, "
        "sequence, records, watermark range, partial flag, delivering certificate) and the "
        "deliveries it refused (time, certificate, sender and batch claimed, reason). With "
        "the receiver's operator certificate every sender is listed; with a sender's "
        "certificate (--requester), only that sender's batches and its own rejections.",
        _cmd_province_batches,
        parents=[tls_options(role_hint="operator (or --requester)")],
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


def _cmd_province_serve(args: argparse.Namespace) -> int:
    from osmanthus.core.server import serve_until_signalled
    from province.server import ProvinceConfig, start_province

    config = ProvinceConfig(
        senders=args.senders,
        state_dir=args.state_dir,
        tls=tls_files(args, role="node", name=args.name),
        listen=args.listen,
        name=args.name,
        operators=tuple(args.operator or ["operator"]),
        crl=crl_file(args),
        witness_key=args.witness_key,
        logs=args.logs,
        metrics_listen=args.metrics_listen,
    )
    running = start_province(config)
    _log.info("provincial receiver serving on port %d", running.port)
    serve_until_signalled(running, ready_file=args.ready_file)
    return ExitCode.SUCCESS


def _cmd_province_keygen(args: argparse.Namespace) -> int:
    return write_signing_key(
        args,
        what="sync signing key",
        private="the city's sync job signs its batches with it",
        public="register it for the city in the receiver's senders.toml (public_keys)",
    )


def _cmd_province_batches(args: argparse.Namespace) -> int:
    from osmanthus.core.syncbatch import BatchKind
    from sdk.province import ProvinceClient

    if args.requester:
        tls = tls_files(args, role="requester", name=args.requester)
    else:
        tls = tls_files(args, role="operator", name=args.operator)
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
    return ExitCode.SUCCESS

"""`osmanthus certs`: the platform CA, mutual-TLS certificates and the consent-receipt key."""

from __future__ import annotations

import argparse
from pathlib import Path

from osmanthus.cli.exit_codes import ExitCode
from osmanthus.cli.options import Subcommands, command, command_group
from osmanthus.core.errors import InvalidArgument


def register(subcommands: Subcommands) -> None:
    """Add `certs init|issue|consent-key`."""
    certs = command_group(
        subcommands, "certs", "platform CA and mutual-TLS certificates", "Manage the platform CA."
    )
    p = command(
        certs,
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
        certs,
        "issue",
        "issue one more certificate from an existing CA",
        "Issue a certificate for a new department node, requester or operator.",
        _cmd_certs_issue,
    )
    p.add_argument("--ca-dir", type=Path, required=True, help="the directory 'certs init' made")
    p.add_argument(
        "--role",
        required=True,
        choices=["node", "requester", "operator", "coordinator"],
        help="what the certificate is for",
    )
    p.add_argument("--name", required=True, help="department id, requester id or operator name")
    p.add_argument("--days", type=int, default=365, help="validity in days")

    p = command(
        certs,
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
    return ExitCode.SUCCESS


def _cmd_certs_issue(args: argparse.Namespace) -> int:
    from certs import PeerRole, issue_certificate

    paths = issue_certificate(
        args.ca_dir, role=PeerRole(args.role), name=args.name, validity_days=args.days
    )
    print(f"issued {args.role} certificate for {args.name!r}: {paths.cert}")
    return ExitCode.SUCCESS


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
        return ExitCode.SUCCESS
    paths = create_consent_key(args.ca_dir, overwrite=args.overwrite)
    print(
        f"consent-receipt key pair written: {paths.private} (the coordinator's --consent-key), "
        f"{paths.public} (give to banks and citizens who verify receipts)"
    )
    return ExitCode.SUCCESS

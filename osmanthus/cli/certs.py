"""`osmanthus certs`: the platform CA, mutual-TLS certificates and the consent-receipt key."""

from __future__ import annotations

import argparse
from pathlib import Path

from osmanthus.cli.exit_codes import ExitCode
from osmanthus.cli.options import Subcommands, command, command_group
from osmanthus.core.errors import InvalidArgument

#: the reasons certs.revocation.REASONS accepts, here so that building the parser imports no crypto
_REASONS = (
    "unspecified",
    "key_compromise",
    "affiliation_changed",
    "superseded",
    "cessation_of_operation",
    "privilege_withdrawn",
)


def register(subcommands: Subcommands) -> None:
    """Add `certs init|issue|revoke|crl|consent-key|log-key`."""
    certs = command_group(
        subcommands, "certs", "platform CA and mutual-TLS certificates", "Manage the platform CA."
    )
    p = command(
        certs,
        "init",
        "create the platform CA and every certificate",
        "Create OUT/ca.pem and ca.key, the coordinator certificate, one node certificate per "
        "department (the department is named in the certificate), one per requester and an "
        "operator certificate for health probes, each department's and the coordinator's "
        "transparency log key (log.key) and the coordinator's witness key (witness.key), and "
        "OUT/logs.toml listing their public keys. Private keys are written mode 0600.",
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
        "revoke",
        "revoke a certificate and publish a fresh CRL",
        "Record the certificate (--cert FILE, which must be this CA's, or --serial as "
        "'openssl x509 -serial' prints it) as revoked in CA_DIR/revocations.json (mode 0600) "
        "and write CA_DIR/crl.pem, signed by the CA key with the next CRL number. Servers given "
        "the CRL (--crl) refuse the certificate within seconds, without a restart: copy "
        "crl.pem to every coordinator, node and receiver host. Revoking is final: issue the "
        "peer a new certificate with 'certs issue'.",
        _cmd_certs_revoke,
    )
    p.add_argument("--ca-dir", type=Path, required=True, help="the directory 'certs init' made")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--cert", type=Path, help="the certificate file to revoke")
    which.add_argument(
        "--serial",
        help="the serial to revoke, in hex as 'openssl x509 -noout -serial' prints it "
        "(serial=3F2A…, 3F:2A…; 0x optional), or in decimal with --decimal; it must be the "
        "serial of a certificate in --ca-dir unless --force is given",
    )
    p.add_argument("--decimal", action="store_true", help="--serial is in decimal, not hex")
    p.add_argument(
        "--force",
        action="store_true",
        help="revoke --serial even though no certificate in --ca-dir has it (one issued "
        "elsewhere: the CA keeps no register of every serial it issued)",
    )
    p.add_argument(
        "--reason",
        default="unspecified",
        choices=sorted(_REASONS),
        help="why (RFC 5280 reason code): key_compromise for a lost or stolen key",
    )
    p.add_argument("--days", type=int, default=30, help="days until the CRL's nextUpdate")

    p = command(
        certs,
        "crl",
        "sign the CRL again with a later nextUpdate",
        "Write CA_DIR/crl.pem again from the CA's record of revocations, with the next CRL "
        "number and a nextUpdate --days ahead. Servers warn once the CRL in force is past its "
        "nextUpdate (it still revokes what it lists): run this from cron well within --days, "
        "and distribute crl.pem as after a revocation.",
        _cmd_certs_crl,
    )
    p.add_argument("--ca-dir", type=Path, required=True, help="the directory 'certs init' made")
    p.add_argument("--days", type=int, default=30, help="days until the CRL's nextUpdate")

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

    p = command(
        certs,
        "log-key",
        "create a transparency log key (or witness key) for a peer added later",
        "Create the Ed25519 key with which a department node or the coordinator signs its audit "
        "log's checkpoints: CA_DIR/nodes/NAME/log.key (mode 0600, the node's --log-key; "
        "CA_DIR/coordinator/log.key for the coordinator) and log.pub, named after the log's "
        "origin (NAME.node.osmanthus/audit). With --witness, "
        "create a witness cosigning key instead: witness.key and witness.pub, named "
        "NAME.node.osmanthus/witness (the provincial receiver: --role node --name province "
        "--witness). The public key is added to CA_DIR/logs.toml, the roster of logs and "
        "witnesses that witnesses, the portal and auditors trust: copy the updated logs.toml "
        "to every host that has one. 'certs init' makes the coordinator's log and witness keys "
        "and every department's log key; use this for a department added later or for a CA "
        "made before transparency logs. A coordinator replica (several coordinators on one "
        "--state-url) needs a log of its own: --role coordinator --name coordinator --replica "
        "NAME writes CA_DIR/coordinator/replicas/NAME/log.key, named "
        "NAME.coordinator.osmanthus/audit (its --replica NAME). An existing key is kept "
        "(checkpoints it signed verify only against it); a .pub without its key is refused: "
        "restore the key from backup. A key whose public half the roster lists for another log "
        "is refused.",
        _cmd_certs_log_key,
    )
    p.add_argument("--ca-dir", type=Path, required=True, help="the directory 'certs init' made")
    p.add_argument(
        "--role",
        required=True,
        choices=["node", "coordinator"],
        help="whose log (or witness) the key is: a department node's or the coordinator's",
    )
    p.add_argument(
        "--name",
        required=True,
        help="the department id (e.g. housing, or province for the receiver); 'coordinator' "
        "for the coordinator",
    )
    p.add_argument(
        "--witness",
        action="store_true",
        help="make the peer's witness key (witness.key, witness.pub) instead of its log key",
    )
    p.add_argument(
        "--replica",
        metavar="NAME",
        help="with --role coordinator: the key of the coordinator replica NAME (its "
        "'coordinator serve --replica NAME'), in CA_DIR/coordinator/replicas/NAME",
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
    print(
        f"transparency log keys (log.key, log.pub; the coordinator's witness.key) and "
        f"{args.out / 'logs.toml'}, the roster of their public keys"
    )
    return ExitCode.SUCCESS


def _cmd_certs_issue(args: argparse.Namespace) -> int:
    from certs import PeerRole, issue_certificate

    paths = issue_certificate(
        args.ca_dir, role=PeerRole(args.role), name=args.name, validity_days=args.days
    )
    print(f"issued {args.role} certificate for {args.name!r}: {paths.cert}")
    return ExitCode.SUCCESS


def _cmd_certs_revoke(args: argparse.Namespace) -> int:
    from certs.revocation import parse_serial, revoke_certificate
    from osmanthus.core.crl import serial_text

    if args.decimal and args.serial is None:
        raise InvalidArgument("--decimal goes with --serial", field="--decimal")

    entry, crl = revoke_certificate(
        args.ca_dir,
        serial=(
            parse_serial(args.serial, decimal=args.decimal) if args.serial is not None else None
        ),
        cert=args.cert,
        reason=args.reason,
        days=args.days,
        force=args.force,
    )
    named = f" ({entry.subject})" if entry.subject else ""
    print(f"revoked serial {serial_text(entry.serial)}{named}, reason {entry.reason}")
    print(
        f"{crl.path}: CRL number {crl.number}, {crl.revoked} revoked, next update "
        f"{crl.next_update.isoformat()}; copy it to every server host"
    )
    return ExitCode.SUCCESS


def _cmd_certs_crl(args: argparse.Namespace) -> int:
    from certs.revocation import publish_crl

    crl = publish_crl(args.ca_dir, days=args.days)
    print(
        f"{crl.path}: CRL number {crl.number}, {crl.revoked} revoked, next update "
        f"{crl.next_update.isoformat()}; copy it to every server host"
    )
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


def _cmd_certs_log_key(args: argparse.Namespace) -> int:
    from certs import PeerRole
    from certs.logkeys import create_log_key, roster_path

    paths = create_log_key(
        args.ca_dir,
        role=PeerRole(args.role),
        name=args.name,
        witness=args.witness,
        replica=args.replica,
    )
    kind = "witness key" if args.witness else "log signing key"
    state = "written" if paths.created else "kept (it already existed)"
    print(f"{kind} {paths.name!r} {state}: {paths.private} (secret), {paths.public}")
    print(
        f"{roster_path(args.ca_dir)} lists it; copy logs.toml to the witnesses, the portal and "
        "every auditor"
    )
    return ExitCode.SUCCESS

"""`osmanthus coordinator` and `osmanthus consent`: the coordinator and its consent receipts."""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

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
    log_key_file,
    policy_bundle,
    policy_bundle_options,
    revocation_options,
    server_options,
    tls_files,
    tls_options,
    transparency_log_options,
)
from osmanthus.core.errors import ConfigError, InvalidArgument
from osmanthus.core.types import SubjectKind

_log = logging.getLogger("osmanthus")
#: osmanthus.core.receipts.RECEIPT_ISSUER, here so that building the parser imports no crypto
_DEFAULT_RECEIPT_ISSUER = "osmanthus-consent-registry"

#: the option of `consent verify` behind each expected value that verify_receipt checks
_VERIFY_OPTIONS = {
    "expected_grantee": "--grantee",
    "expected_purpose": "--purpose",
    "expected_subject": "--subject",
    "expected_kind": "--kind",
    "issuer": "--issuer",
}


def register(subcommands: Subcommands) -> None:
    """Add `coordinator serve` and `consent verify`."""
    _register_coordinator(subcommands)
    _register_consent(subcommands)


def _register_coordinator(subcommands: Subcommands) -> None:
    coordinator = command_group(
        subcommands, "coordinator", "run the coordinator", "Coordinator operations."
    )
    p = command(
        coordinator,
        "serve",
        "serve requesters: policy, consent, fan-out and blind sums",
        "Serve requester queries: verify the token against the client certificate, evaluate the "
        "central Cedar policy, check consent, ask every relevant node at once within --deadline, "
        "validate and add the ciphertexts, and answer with the sum and its coverage. The "
        "coordinator never holds a decryption key. With a log key it signs its audit log's "
        "checkpoints, and TransparencyService serves its log to operator certificates and "
        "every log (its own, and each node's relayed) to requesters the central policy grants "
        "ReadAuditLog for the call (auditors read; the sync job carries checkpoints).",
        _cmd_coordinator_serve,
        parents=[
            catalogue_options(),
            server_options(listen="127.0.0.1:50050", state_dir="consents, keys and audit log"),
            policy_bundle_options(scope="'central'"),
            tls_options(role_hint="coordinator"),
            revocation_options(tokens=True),
            transparency_log_options(key_hint="coordinator/log.key", roster=False),
        ],
        extra="coordinator",
    )
    p.add_argument("--nodes", type=Path, required=True, help="nodes.toml: department → address")
    p.add_argument(
        "--policy", type=Path, help="central Cedar policy (default policies/central.cedar)"
    )
    p.add_argument("--issuer-public-key", type=Path, required=True, help="token issuer public key")
    p.add_argument("--deadline", type=float, default=5.0, help="seconds to wait for the nodes")
    p.add_argument(
        "--table-cache-mb",
        type=int,
        default=256,
        help="memory for the tables that re-randomise forwarded sums (about 54 MB per 2048-bit "
        "requester key; 0 = always use the slower plain path)",
    )
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
    p.add_argument(
        "--witness-key",
        type=Path,
        help="the coordinator's witness key, with which it cosigns the nodes' checkpoints "
        "(default: coordinator/witness.key in --certs-dir, where 'certs init' puts it; with "
        "--replica, coordinator/replicas/NAME/witness.key if there: a replica never cosigns "
        "with another replica's witness key)",
    )
    p.add_argument(
        "--logs",
        type=Path,
        help="logs.toml, the roster of the logs and witnesses and their public keys (default: "
        "logs.toml in --certs-dir). With a witness key, the coordinator witnesses every node "
        "log it lists (docs/transparency.md)",
    )
    p.add_argument(
        "--witness-interval",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how often every node's latest checkpoint is fetched, checked and cosigned "
        "(0: never; the first round runs at start)",
    )
    p.add_argument(
        "--state-url",
        metavar="URL",
        help="keep the consents, keys, disclosure pins, ε ledger and rate limits in this "
        "PostgreSQL database (postgresql://USER@HOST:PORT/DB; a password is best given as "
        "OSMANTHUS_STATE_URL or in ~/.pgpass) instead of files in --state-dir: every replica "
        "given the same URL serves the same federation (docs/deployment.md)",
    )
    p.add_argument(
        "--replica",
        metavar="NAME",
        help="this replica's name, when several coordinators share --state-url: its audit log "
        "is its own, signed as NAME.coordinator.osmanthus/audit with its own key (default "
        "--log-key: coordinator/replicas/NAME/log.key in --certs-dir, made by 'certs log-key "
        "--role coordinator --replica NAME', which lists it in logs.toml). Without it the log "
        "is coordinator.osmanthus/audit: give every other replica a name",
    )
    read_environment(p)


def _register_consent(subcommands: Subcommands) -> None:
    consent = command_group(
        subcommands,
        "consent",
        "consent receipts",
        "Work with the consents the coordinator records.",
    )
    p = command(
        consent,
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


def _cmd_coordinator_serve(args: argparse.Namespace) -> int:
    from coordinator.server import DEFAULT_CENTRAL_POLICY, CoordinatorConfig, start_coordinator
    from osmanthus.core.server import serve_until_signalled

    config = CoordinatorConfig(
        nodes=args.nodes,
        tls=tls_files(args, role="coordinator", name="coordinator"),
        issuer_public_key=args.issuer_public_key,
        state_dir=args.state_dir,
        listen=args.listen,
        metrics_listen=args.metrics_listen,
        policy=args.policy or DEFAULT_CENTRAL_POLICY,
        deadline_s=args.deadline,
        table_cache_bytes=args.table_cache_mb * 2**20,
        policy_bundle=policy_bundle(args),
        policy_trust=tuple(args.policy_trust),
        policy_poll_s=args.policy_poll,
        consent_key=_consent_key(args),
        consent_issuer=args.consent_issuer,
        crl=crl_file(args),
        token_deny_list=args.token_deny_list,
        witness_key=_in_certs_dir(args, args.witness_key, _own_keys(args), "witness.key"),
        logs=_in_certs_dir(args, args.logs, "", "logs.toml"),
        witness_interval_s=args.witness_interval,
        state_url=args.state_url,
        log_key=_log_key(args),
        replica=args.replica,
        checkpoint_every=args.checkpoint_every,
        checkpoint_interval_s=args.checkpoint_interval,
    )
    # before the server starts: until the handler is in place SIGHUP would end the process
    check_bundle_on_sighup(args)
    running = start_coordinator(config, catalogue=catalogue_of(args))
    _log.info("coordinator serving on port %d", running.port)
    try:
        serve_until_signalled(running.server, ready_file=args.ready_file)
    finally:
        running.stop()
    return ExitCode.SUCCESS


def _own_keys(args: argparse.Namespace) -> str:
    """The directory, under --certs-dir, of this coordinator's (or replica's) log keys."""
    if args.replica is None:
        return "coordinator"
    from osmanthus.core.logkeys import REPLICAS_DIR
    from osmanthus.core.peers import validate_name

    return f"coordinator/{REPLICAS_DIR}/{validate_name(args.replica, field='--replica')}"


def _log_key(args: argparse.Namespace) -> Path | None:
    """--log-key, or this coordinator's (or replica's) log.key in --certs-dir if there."""
    if args.replica is None:
        return log_key_file(args, role="coordinator", name="coordinator")
    return _in_certs_dir(args, args.log_key, _own_keys(args), "log.key")


def _in_certs_dir(
    args: argparse.Namespace, given: Path | None, directory: str, name: str
) -> Path | None:
    """An option's file, or the one 'certs init' put in --certs-dir (None if not there)."""
    if given is not None:
        return Path(given)
    if args.certs_dir:
        candidate = Path(args.certs_dir) / directory / name
        if candidate.is_file():
            return candidate
    return None


def _consent_key(args: argparse.Namespace) -> Path | None:
    """--consent-key, or the consent key 'certs init' put in --certs-dir; None: STATE_DIR's."""
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
    return ExitCode.SUCCESS

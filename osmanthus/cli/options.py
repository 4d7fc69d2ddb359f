"""What the `osmanthus` commands share: help format, parent parsers of common options, helpers."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from osmanthus.cli.env import ENV_ATTR
from osmanthus.cli.exit_codes import ExitCode, exit_codes_epilog
from osmanthus.core.durations import parse_duration
from osmanthus.core.errors import ConfigError, InvalidArgument

if TYPE_CHECKING:
    from osmanthus.core.catalogue import Catalogue
    from osmanthus.core.tls import TlsFiles
    from sdk import Client

#: the subcommands of a command group, to which each group module adds its commands
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
#: a command's handler: it returns the exit code (ExitCode) or raises an OsmanthusError
Handler: TypeAlias = Callable[[argparse.Namespace], int]

#: a help text that already says what happens without the option: no second default after it
_SAYS_DEFAULT = re.compile(r"\bdefault\b")
#: how the help names an option's variable, and the same without a space to wrap the line at
_ENV_MARK = "[env: "
_ENV_MARK_UNBROKEN = "[env:\0"
#: the name of a key pair's files (NAME.key, NAME.pub)
#: osmanthus.core.crl.CRL_FILE, here so that building the parser imports no crypto
_CRL_FILE = "crl.pem"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help that keeps the descriptions' paragraphs and examples as written, shows an option's
    default only when it has one (and only once), and names the option's OSMANTHUS_* variable."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if _has_default(action) and "%(default)" not in text and not _SAYS_DEFAULT.search(text):
            text += " (default: %(default)s)"
        variable = getattr(action, ENV_ATTR, None)
        if variable:
            text += f" {_ENV_MARK}{variable}]"
        return text

    def _split_lines(self, text: str, width: int) -> list[str]:
        # "[env: NAME]" on one line: a reader looks for the name after "env:"
        lines = super()._split_lines(text.replace(_ENV_MARK, _ENV_MARK_UNBROKEN), width)
        return [line.replace(_ENV_MARK_UNBROKEN, _ENV_MARK) for line in lines]


def _has_default(action: argparse.Action) -> bool:
    """Whether the option has a default worth printing: not for a flag, nothing or an empty list."""
    default = action.default
    if action.required or default is None or default == argparse.SUPPRESS or action.nargs == 0:
        return False
    if isinstance(default, str | list | tuple) and not default:
        return False
    # as argparse's own: a positional argument has a default only when it may be left out
    return bool(action.option_strings) or action.nargs in ("?", "*")


def command(
    subcommands: Subcommands,
    name: str,
    help_text: str,
    description: str,
    handler: Handler | None = None,
    *,
    parents: Sequence[argparse.ArgumentParser] = (),
    extra: str | None = None,
) -> argparse.ArgumentParser:
    """Add a command (or a group of commands, without a handler) under `subcommands`.

    `parents` are parent parsers of shared options (the functions below make them); `extra` is
    the optional-dependency extra the command needs ('osmanthus[extra]'), named when a module of
    it is missing.
    """
    parser: argparse.ArgumentParser = subcommands.add_parser(
        name,
        help=help_text,
        description=description,
        epilog=exit_codes_epilog(),
        formatter_class=HelpFormatter,
        parents=list(parents),
    )
    if handler is not None:
        parser.set_defaults(handler=handler, command_name=parser.prog, command_extra=extra)
    return parser


def command_group(
    subcommands: Subcommands, name: str, help_text: str, description: str
) -> Subcommands:
    """Add a group of commands, e.g. `certs`, and return the subcommands to add its actions to."""
    parser = command(subcommands, name, help_text, description)
    actions: Subcommands = parser.add_subparsers(
        dest=f"{name}_command", required=True, metavar="ACTION"
    )
    return actions


# --- argument types ---------------------------------------------------------------------------


def duration(text: str) -> timedelta:
    """A duration such as 15m or 12h (argparse type)."""
    try:
        return parse_duration(text, field="duration")
    except InvalidArgument as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def iso_date(text: str) -> date:
    """A date such as 2026-11-26 (argparse type)."""
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2026-11-26") from exc


# --- parent parsers ---------------------------------------------------------------------------
# Each call makes a new parent: a parent's options are shared by every parser made from it, and
# a server's options are marked with their OSMANTHUS_* variable, which other commands must not be.


def _parent() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(add_help=False)


def tls_options(*, role_hint: str) -> argparse.ArgumentParser:
    """--certs-dir, or --ca, --cert and --key: this process's side of mutual TLS."""
    parent = _parent()
    group = parent.add_argument_group(
        "mutual TLS",
        f"either --certs-dir (the directory 'osmanthus certs init' made; the {role_hint} "
        "certificate is found in it) or all of --ca, --cert and --key",
    )
    group.add_argument("--certs-dir", type=Path, help="platform certificate directory")
    group.add_argument("--ca", type=Path, help="platform CA certificate (PEM)")
    group.add_argument("--cert", type=Path, help="this process's certificate (PEM)")
    group.add_argument("--key", type=Path, help="this process's private key (PEM)")
    return parent


def catalogue_options() -> argparse.ArgumentParser:
    """--catalogue: the platform's catalogue file."""
    parent = _parent()
    parent.add_argument(
        "--catalogue",
        type=Path,
        help="the platform's catalogue file (default: the one shipped with Osmanthus); every "
        "node, the coordinator and every requester must use the same one, because the "
        "encrypted slot widths are derived from it",
    )
    return parent


def server_options(*, listen: str, state_dir: str) -> argparse.ArgumentParser:
    """--state-dir, --listen and --ready-file of a long-running server."""
    parent = _parent()
    group = parent.add_argument_group("server")
    group.add_argument("--state-dir", type=Path, required=True, help=state_dir)
    group.add_argument("--listen", default=listen, help="host:port (port 0 = any free port)")
    group.add_argument("--ready-file", type=Path, help="write the bound port here once serving")
    group.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="serve Prometheus metrics on http://HOST:PORT/metrics (off by default; plain HTTP: "
        "bind a loopback or monitoring-only address, e.g. 127.0.0.1:9464)",
    )
    return parent


def policy_bundle_options(*, scope: str) -> argparse.ArgumentParser:
    """--policy-bundle, --policy-trust and --policy-poll: follow a signed policy bundle."""
    parent = _parent()
    group = parent.add_argument_group(
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
        help="bundle check interval, from 0.05 to 3600",
    )
    return parent


def revocation_options(*, tokens: bool) -> argparse.ArgumentParser:
    """--crl, and with `tokens` --token-deny-list: the revocations a server follows."""
    parent = _parent()
    group = parent.add_argument_group(
        "revocation",
        "checked at start (a file that fails stops the start, exit 3), then every few seconds: "
        "a newer list signed by the same authority is put in force without a restart; a list "
        "with a bad signature or a lower number is logged as a WARNING and changes nothing",
    )
    crl = group.add_mutually_exclusive_group()
    crl.add_argument(
        "--crl",
        type=Path,
        help="the platform CA's certificate revocation list ('osmanthus certs revoke' and "
        "'certs crl' write it): a caller whose certificate it revokes is refused (default: "
        f"{_CRL_FILE} in --certs-dir, which must then be there)",
    )
    crl.add_argument(
        "--no-crl",
        action="store_true",
        help="run without a CRL even with --certs-dir: no certificate is ever revoked (logged "
        "as a WARNING at start)",
    )
    if tokens:
        group.add_argument(
            "--token-deny-list",
            type=Path,
            help="the token issuer's signed deny list ('osmanthus token revoke' writes it): a "
            "token it withdraws is refused (without one, a token is good until it expires)",
        )
    return parent


def crl_file(args: argparse.Namespace) -> Path | None:
    """--crl, or the CRL 'certs init' put in --certs-dir; None with --no-crl or without either.

    A --certs-dir without its CRL is refused (ConfigError, exit 3) rather than run without
    one: a CRL lost in a copy would otherwise re-admit every revoked certificate in silence.
    """
    if args.crl is not None:
        return Path(args.crl)
    if getattr(args, "no_crl", False):
        return None
    if getattr(args, "certs_dir", None):
        candidate = Path(args.certs_dir) / _CRL_FILE
        if not candidate.is_file():
            raise ConfigError(
                f"{candidate} does not exist: --certs-dir holds no CRL, so revoked certificates "
                "would be accepted. Copy the platform CA's crl.pem there ('osmanthus certs crl' "
                "writes one), give --crl, or run without one with --no-crl",
                field="crl",
            )
        return candidate
    return None


def transparency_log_options(*, key_hint: str, roster: bool = True) -> argparse.ArgumentParser:
    """--log-key, --checkpoint-every, --checkpoint-interval and (with `roster`) --logs: the audit
    log as a transparency log (signed checkpoints, TransparencyService; docs/transparency.md)."""
    parent = _parent()
    group = parent.add_argument_group(
        "transparency log",
        "with a log key, the audit log's Merkle tree head is signed as a checkpoint at start, "
        "then every --checkpoint-every entries or every --checkpoint-interval seconds once the "
        "log grew, and TransparencyService serves checkpoints, proofs and entries. A log that "
        "does not extend its last checkpoint (an entry changed, the log truncated or replaced) "
        "stops the start (exit 3)",
    )
    group.add_argument(
        "--log-key",
        type=Path,
        help=f"the key that signs checkpoints ('osmanthus certs init' or 'certs log-key' "
        f"writes it; default: {key_hint} in --certs-dir if there; without one no checkpoint is "
        "signed and the service is not offered)",
    )
    if roster:
        group.add_argument(
            "--logs",
            type=Path,
            help="logs.toml, the roster of log and witness keys: witness cosignatures that "
            "verify against it are kept and served with the checkpoints (default: logs.toml in "
            "--certs-dir if there; without one no cosignature is kept)",
        )
    group.add_argument(
        "--checkpoint-every",
        type=int,
        default=1000,
        metavar="N",
        help="sign a checkpoint once the log grew by N entries",
    )
    group.add_argument(
        "--checkpoint-interval",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="sign a checkpoint once this long passed and the log grew at all",
    )
    return parent


def log_key_file(args: argparse.Namespace, *, role: str, name: str) -> Path | None:
    """--log-key, or the peer's log.key in --certs-dir if 'certs init' put one there."""
    from osmanthus.core.logkeys import LOG_KEY_FILE
    from osmanthus.core.peers import PeerRole, peer_dir

    if args.log_key is not None:
        return Path(args.log_key)
    if getattr(args, "certs_dir", None):
        candidate = peer_dir(Path(args.certs_dir), role=PeerRole(role), name=name) / LOG_KEY_FILE
        if candidate.is_file():
            return candidate
    return None


def log_roster_file(args: argparse.Namespace) -> Path | None:
    """--logs, or logs.toml in --certs-dir if it is there."""
    from osmanthus.core.logkeys import ROSTER_FILE

    if args.logs is not None:
        return Path(args.logs)
    if getattr(args, "certs_dir", None):
        candidate = Path(args.certs_dir) / ROSTER_FILE
        if candidate.is_file():
            return candidate
    return None


def requester_options(*, keys_help: str) -> argparse.ArgumentParser:
    """--coordinator, --requester, --token or --token-file, --keys: querying as a requester."""
    parent = _parent()
    group = parent.add_argument_group(
        "requester",
        "the coordinator you ask and who you are to it: your requester certificate (mutual TLS "
        "below), your platform token and the Paillier key the token is bound to",
    )
    group.add_argument("--coordinator", required=True, help="coordinator host:port")
    group.add_argument("--requester", required=True, help="your requester id (certificate name)")
    group.add_argument("--token", help="your platform token (or --token-file)")
    group.add_argument("--token-file", type=Path, help="file holding your platform token")
    group.add_argument("--keys", type=Path, required=True, help=keys_help)
    return parent


# --- helpers of the handlers ------------------------------------------------------------------


def tls_files(args: argparse.Namespace, *, role: str, name: str) -> TlsFiles:
    """This process's TLS files: --ca/--cert/--key, or those of `role` `name` in --certs-dir."""
    from certs import PeerRole, cert_paths
    from osmanthus.core.tls import TlsFiles

    if args.ca and args.cert and args.key:
        return TlsFiles(ca=args.ca, cert=args.cert, key=args.key)
    if args.certs_dir:
        return TlsFiles.from_cert_paths(cert_paths(args.certs_dir, role=PeerRole(role), name=name))
    raise InvalidArgument("give --certs-dir, or all of --ca, --cert and --key", field="tls")


def catalogue_of(args: argparse.Namespace) -> Catalogue:
    """The catalogue --catalogue names, or the one shipped with Osmanthus."""
    from osmanthus.core.catalogue import load_catalogue

    return load_catalogue(args.catalogue)


def requester_token(args: argparse.Namespace) -> str:
    """The requester's platform token from --token or --token-file."""
    token = args.token_file.read_text(encoding="utf-8").strip() if args.token_file else args.token
    if not token:
        raise InvalidArgument("give --token or --token-file", field="token")
    return str(token)


def requester_client(args: argparse.Namespace, *, token: str, catalogue: Catalogue) -> Client:
    """An SDK client for --coordinator as --requester, from the connection options."""
    from sdk import Client

    tls = tls_files(args, role="requester", name=args.requester)
    return Client(args.coordinator, tls=tls, token=token, keys=args.keys, catalogue=catalogue)


def policy_bundle(args: argparse.Namespace) -> Path | None:
    """--policy-bundle, checked against --policy and --policy-trust."""
    if args.policy_bundle is not None and args.policy is not None:
        raise InvalidArgument(
            "give --policy or --policy-bundle, not both: a bundle carries its own policy",
            field="policy_bundle",
        )
    if args.policy_bundle is None and args.policy_trust:
        raise InvalidArgument("--policy-trust needs --policy-bundle", field="policy_trust")
    bundle: Path | None = args.policy_bundle
    return bundle


def check_bundle_on_sighup(args: argparse.Namespace) -> None:
    """SIGHUP: look at the policy bundle now instead of at the next poll."""
    if args.policy_bundle is None:
        return
    from osmanthus.core.bundle_watch import install_sighup_handler

    install_sighup_handler()


def signing_key_options(*, name: str) -> argparse.ArgumentParser:
    """--out-dir and --name of a command that writes an Ed25519 key pair."""
    parent = _parent()
    parent.add_argument("--out-dir", type=Path, required=True, help="directory for the key pair")
    parent.add_argument("--name", default=name, help="file name of the pair")
    return parent


def write_signing_key(args: argparse.Namespace, *, what: str, private: str, public: str) -> int:
    """A new Ed25519 key pair (osmanthus.core.signing) for signing bundles, reports or batches:
    --out-dir/--name .key and .pub, with its key id and what each half is for."""
    from osmanthus.core import signing

    private_path, public_path, key_id = signing.write_key_pair(args.out_dir, args.name, what=what)
    # the key id every signature made with it names: the key's RFC 7638 thumbprint
    print(f"{what} {key_id} written:")
    print(f"  {private_path}  private: keep it secret, {private}")
    print(f"  {public_path}  public: {public}")
    return ExitCode.SUCCESS

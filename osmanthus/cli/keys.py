"""`osmanthus keys` and `osmanthus token`: requester Paillier keys and platform access tokens."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timedelta
from pathlib import Path

from osmanthus.cli.exit_codes import ExitCode
from osmanthus.cli.options import Subcommands, command, command_group, duration
from osmanthus.core.errors import ConfigError, InvalidArgument


def register(subcommands: Subcommands) -> None:
    """Add `keys create|fingerprint` and `token keygen|issue|revoke|deny-list`."""
    _register_keys(subcommands)
    _register_token(subcommands)


def _register_keys(subcommands: Subcommands) -> None:
    keys = command_group(
        subcommands, "keys", "requester Paillier keys", "Manage a requester's Paillier key pair."
    )
    p = command(
        keys,
        "create",
        "generate a Paillier key pair and print its fingerprint",
        "Generate the requester's Paillier key pair (kept owner-only) and print the fingerprint "
        "to give to the platform when asking for a token.",
        _cmd_keys_create,
    )
    p.add_argument("--out", type=Path, required=True, help="key file to create")
    p.add_argument("--bits", type=int, default=2048, choices=[2048, 3072], help="modulus size")
    p = command(
        keys,
        "fingerprint",
        "print a key file's fingerprint",
        "Print the fingerprint.",
        _cmd_keys_fingerprint,
    )
    p.add_argument("key", type=Path, help="key file")


def _register_token(subcommands: Subcommands) -> None:
    from osmanthus.core.types import Role

    token = command_group(
        subcommands,
        "token",
        "platform access tokens (EdDSA JWT)",
        "Issue requester tokens, and withdraw them.",
    )
    p = command(
        token,
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
        token,
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
        "--ttl", type=duration, default=timedelta(hours=1), help="lifetime, e.g. 15m, 12h"
    )
    p.add_argument("--single-use", action="store_true", help="the token may be used for one call")
    p.add_argument(
        "--seal-key",
        type=Path,
        help="a subjects' portal device's X25519 public sealing key (raw 32 bytes or PEM): the "
        "token's seal_fp claim, the only key nodes seal the subject's file to",
    )
    p.add_argument("--iss", default="osmanthus-platform", help="issuer claim")
    p.add_argument("--aud", default="osmanthus", help="audience claim")

    p = command(
        token,
        "revoke",
        "withdraw a requester's tokens, or one token, before they expire",
        "Add to the issuer's signed deny list either --requester (every token of that requester "
        "issued before --issued-before, default now: its outstanding tokens stop working, a "
        "token issued afterwards works) or --jti (one token), and sign the list again with the "
        "next sequence. Servers given the list (--token-deny-list) refuse a withdrawn token "
        "within seconds, without a restart: copy the file to every coordinator and node host. "
        "An existing list that does not verify against the issuer key is refused (exit 3), and "
        "so is a missing one unless --create is given: a new list starts at sequence 1, which "
        "servers that held a list before ignore.",
        _cmd_token_revoke,
    )
    _deny_list_arguments(p)
    p.add_argument(
        "--create",
        action="store_true",
        help="start a new list (sequence 1) if --deny-list does not exist: only for the first "
        "list of an issuer",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--requester", help="withdraw every token of this requester ...")
    which.add_argument("--jti", help="withdraw the one token with this id (its 'jti' claim)")
    p.add_argument(
        "--issued-before",
        type=_utc_time,
        help="... issued before this UTC time, e.g. 2026-11-26T09:30:00Z (default: now)",
    )
    p.add_argument("--reason", default="withdrawn by the issuer", help="why, for the logs")

    p = command(
        token,
        "deny-list",
        "write the issuer's deny list (empty) or sign it again",
        "Create an empty signed deny list (sequence 1; only for the first list of an issuer), "
        "or sign the existing one again with the next sequence (after restoring it, say). "
        "Servers need a list to start with --token-deny-list. A list that does not verify "
        "against the issuer key (another key, a damaged file) is refused unless --reset is "
        "given.",
        _cmd_token_deny_list,
    )
    _deny_list_arguments(p)
    p.add_argument(
        "--reset",
        action="store_true",
        help="replace a list that does not verify by one signed with --issuer-key at its "
        "sequence + 1 (read without verification, so the servers take the new one), keeping "
        "the entries that can be read",
    )


def _deny_list_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--issuer-key", type=Path, required=True, help="issuer private key (0600)")
    p.add_argument("--deny-list", type=Path, required=True, help="the deny list file to update")
    p.add_argument("--iss", default="osmanthus-platform", help="the tokens' issuer claim")


def _utc_time(text: str) -> datetime:
    """A time with its UTC offset (argparse type)."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time like 2026-11-26T09:30:00Z"
        ) from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no UTC offset: add Z or +08:00")
    return value


def _cmd_keys_create(args: argparse.Namespace) -> int:
    from sdk.keys import load_or_create_keys

    if args.out.exists():
        raise ConfigError(f"{args.out} already exists; refusing to replace a key", field="out")
    keys = load_or_create_keys(args.out, bits=args.bits)
    print(keys.fingerprint)
    return ExitCode.SUCCESS


def _cmd_keys_fingerprint(args: argparse.Namespace) -> int:
    from sdk.keys import load_or_create_keys

    if not args.key.exists():
        raise ConfigError(f"{args.key} does not exist", field="key")
    print(load_or_create_keys(args.key).fingerprint)
    return ExitCode.SUCCESS


def _cmd_token_keygen(args: argparse.Namespace) -> int:
    from osmanthus.core import signing

    signing.generate_key_pair(
        private_path=args.private,
        public_path=args.public,
        what="token issuer key, which would invalidate every token it issued",
        overwrite=args.overwrite,
    )
    print(f"issuer key pair written: {args.private} (keep secret), {args.public} (give to servers)")
    return ExitCode.SUCCESS


def _cmd_token_revoke(args: argparse.Namespace) -> int:
    from osmanthus.core import signing
    from osmanthus.core.denylist import deny_tokens

    if args.issued_before is not None and args.requester is None:
        raise InvalidArgument("--issued-before goes with --requester", field="--issued-before")
    key = signing.load_private_key(args.issuer_key, what="token issuer key", field="issuer_key")
    deny = deny_tokens(
        args.deny_list,
        private_key=key,
        issuer=args.iss,
        requester=args.requester,
        issued_before=args.issued_before,
        jti=args.jti,
        reason=args.reason,
        create=args.create,
    )
    if args.requester is not None:
        cutoff = deny.requesters[args.requester].issued_before
        what = f"every token of requester {args.requester!r} issued before {cutoff.isoformat()}"
    else:
        what = f"token {args.jti}"
    print(f"{args.deny_list}: {what} withdrawn (deny list sequence {deny.sequence})")
    print("copy it to every coordinator and node host: they refuse it within seconds")
    return ExitCode.SUCCESS


def _cmd_token_deny_list(args: argparse.Namespace) -> int:
    from osmanthus.core import signing
    from osmanthus.core.denylist import reset_deny_list, write_deny_list

    key = signing.load_private_key(args.issuer_key, what="token issuer key", field="issuer_key")
    if not args.reset:
        deny = write_deny_list(args.deny_list, private_key=key, issuer=args.iss)
        print(f"{args.deny_list}: {deny.describe()}")
        return ExitCode.SUCCESS
    reset = reset_deny_list(args.deny_list, private_key=key, issuer=args.iss)
    if reset.problem:
        kept = (
            "its entries were carried over unverified (an entry only withdraws tokens)"
            if reset.entries_kept
            else "its entries could not be read and are LOST: withdraw those tokens again"
        )
        print(
            f"WARNING: {args.deny_list} did not verify ({reset.problem}). It was replaced by a "
            f"list signed with {args.issuer_key} at sequence {reset.deny.sequence}, one above "
            f"the old list's sequence {reset.old_sequence} READ WITHOUT VERIFICATION; {kept}.",
            file=sys.stderr,
        )
    print(f"{args.deny_list}: {reset.deny.describe()}")
    return ExitCode.SUCCESS


def _cmd_token_issue(args: argparse.Namespace) -> int:
    from osmanthus.core.subjectseal import read_public_key_file, seal_fingerprint
    from osmanthus.core.tokens import TokenIssuer
    from osmanthus.core.types import Role

    issuer = TokenIssuer.from_file(args.issuer_key, issuer=args.iss, audience=args.aud)
    seal_fp = (
        None if args.seal_key is None else seal_fingerprint(read_public_key_file(args.seal_key))
    )
    token = issuer.issue(
        requester=args.requester,
        role=Role(args.role),
        purposes=args.purpose,
        key_fingerprint=args.key_fingerprint,
        ttl=args.ttl,
        single_use=args.single_use,
        seal_fingerprint=seal_fp,
    )
    print(token)
    return ExitCode.SUCCESS

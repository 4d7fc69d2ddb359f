"""`osmanthus keys` and `osmanthus token`: requester Paillier keys and platform access tokens."""

from __future__ import annotations

import argparse
from datetime import timedelta
from pathlib import Path

from osmanthus.cli.exit_codes import ExitCode
from osmanthus.cli.options import Subcommands, command, command_group, duration
from osmanthus.core.errors import ConfigError


def register(subcommands: Subcommands) -> None:
    """Add `keys create|fingerprint` and `token keygen|issue`."""
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
        subcommands, "token", "platform access tokens (EdDSA JWT)", "Issue requester tokens."
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
    p.add_argument("--iss", default="osmanthus-platform", help="issuer claim")
    p.add_argument("--aud", default="osmanthus", help="audience claim")


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
    return ExitCode.SUCCESS

"""`osmanthus policy`: privacy officers' tools to check, test, compare and publish policies."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from osmanthus.cli.exit_codes import ExitCode
from osmanthus.cli.options import (
    Subcommands,
    command,
    command_group,
    signing_key_options,
    write_signing_key,
)
from osmanthus.core.errors import ConfigError, InvalidArgument

if TYPE_CHECKING:
    from osmanthus.core.bundle import VerifiedBundle

#: `policy diff --exit-code`: some decision changes (as diff(1) says the files differ)
_CHANGES_FOUND = 1


def register(subcommands: Subcommands) -> None:
    """Add `policy validate|test|diff|explain|keygen|publish|verify`."""
    policy = command_group(
        subcommands, "policy", "Cedar access policies", "Policy tools for privacy officers."
    )
    p = command(
        policy,
        "validate",
        "check that policy files parse",
        "Parse each Cedar policy file and report errors with file and line.",
        _cmd_policy_validate,
        extra="policy",
    )
    p.add_argument("files", type=Path, nargs="+", help="policy files")
    p = command(
        policy,
        "test",
        "check a policy against the decisions the privacy office expects",
        "Run every case of the case files (TOML: one [[case]] per request, with the decision "
        "expected and, optionally, the rules that must decide it, the minimum number of "
        "departments and the rate limits) against the policy file, and list each case as PASS "
        "or FAIL with what differs. policies/cases/ holds the cases of the default policies. "
        "Exit 6 if any case fails.",
        _cmd_policy_test,
        extra="policy",
    )
    p.add_argument("--policy", type=Path, required=True, help="the Cedar policy file to test")
    p.add_argument("cases", type=Path, nargs="+", help="case files (TOML)")
    p = command(
        policy,
        "diff",
        "list the requests a policy change newly allows or denies",
        "Decide a generated set of requests with both policy files and list every request "
        "whose decision changes, with the rules that decided it before and after. The set "
        "covers every role and action, and for each fact the values that matter: every "
        "purpose, requester and department either file names plus one neither names, every "
        "consent state, both shapes, coverage around the 80 % line.",
        _cmd_policy_diff,
        extra="policy",
    )
    p.add_argument("old", type=Path, help="the policy in force")
    p.add_argument("new", type=Path, help="the proposed policy")
    p.add_argument("--limit", type=int, default=40, help="changes listed per direction")
    p.add_argument(
        "--exit-code", action="store_true", help="exit 1 when any decision changes (for scripts)"
    )
    p = command(
        policy,
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
        extra="policy",
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
        policy,
        "keygen",
        "create a publisher key pair for signing policy bundles",
        "Create an Ed25519 key pair for publishing policies: OUT_DIR/NAME.key (private, mode "
        "0600: keep it on the privacy office's machine only) and OUT_DIR/NAME.pub (public: give "
        "it to the coordinator and every node, which trust bundles signed with it through "
        "--policy-trust). Prints the key id (the key's RFC 7638 thumbprint) that every bundle "
        "signed with it names. Existing files are never replaced.",
        _cmd_policy_keygen,
        parents=[signing_key_options(name="policy-publisher")],
        extra="policy",
    )
    p = command(
        policy,
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
        extra="policy",
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
        policy,
        "verify",
        "check a policy bundle as a server would",
        "Check a bundle's signature against the trusted publisher keys, its consistency and its "
        "policy, and, with --scope, that a server of that scope would accept it; print its "
        "scope, serial, hash and publisher. Exit 3 with the reason if any check fails.",
        _cmd_policy_verify,
        extra="policy",
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


def _cmd_policy_validate(args: argparse.Namespace) -> int:
    from osmanthus.core.policy import PolicyEngine

    for path in args.files:
        engine = PolicyEngine.from_file(path)
        print(f"{path}: valid ({len(engine.annotations())} policies, sha256 {engine.hash[:16]}…)")
    return ExitCode.SUCCESS


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
    return ExitCode.POLICY_CASES_FAILED if failed else ExitCode.SUCCESS


def _cmd_policy_diff(args: argparse.Namespace) -> int:
    from osmanthus.core.policy import PolicyEngine
    from osmanthus.core.policy_diff import diff, render

    old, new = PolicyEngine.from_file(args.old), PolicyEngine.from_file(args.new)
    result = diff(old, new)
    print(render(result, limit=args.limit, old_name=str(args.old), new_name=str(args.new)))
    return _CHANGES_FOUND if args.exit_code and result.changes else ExitCode.SUCCESS


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
    return ExitCode.SUCCESS


def _cmd_policy_keygen(args: argparse.Namespace) -> int:
    return write_signing_key(
        args,
        what="publisher key",
        private="sign bundles with it (--key)",
        public="give it to the coordinator and the nodes (--policy-trust)",
    )


def _cmd_policy_publish(args: argparse.Namespace) -> int:
    from osmanthus.core import signing
    from osmanthus.core.bundle import (
        check_scope,
        read_bundle_file,
        read_claims,
        sign_bundle,
        verify_bundle,
    )
    from osmanthus.core.files import write_atomically
    from osmanthus.core.policy import PolicyEngine

    scope = check_scope(args.scope)
    engine = PolicyEngine.from_file(args.policy)
    key = signing.load_private_key(args.key, what="publisher key")
    previous: int | None = None
    if args.out.exists():
        try:
            # either format: a bundle of format 1 is replaced by one numbered above it
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
        data, trusted_keys={signing.key_id(public): public}, scope=None, origin=str(args.out)
    )
    write_atomically(args.out, data, mode=0o644)
    _print_bundle(f"published {args.out}", verified)
    return ExitCode.SUCCESS


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
    return ExitCode.SUCCESS


def _print_bundle(title: str, bundle: VerifiedBundle) -> None:
    print(title)
    print(f"  scope      {bundle.scope}")
    print(f"  serial     {bundle.serial}")
    print(f"  hash       {bundle.hash}  (recorded as policy_hash in every audit entry)")
    print(f"  publisher  {bundle.publisher}")
    print(f"  created    {bundle.created_at.isoformat()}")
    print(f"  key        {bundle.key_id}")
    print(f"  policies   {len(bundle.engine.annotations())}")

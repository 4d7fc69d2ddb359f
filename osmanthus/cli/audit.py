"""`osmanthus audit`: verify, show, prove and search audit logs (privacy officers, auditors)."""

from __future__ import annotations

import argparse
import base64
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any, Final

from osmanthus.cli.exit_codes import ExitCode
from osmanthus.cli.options import Subcommands, command, command_group, tls_files, tls_options

#: `osmanthus audit verify` and `checkpoint` exit with this when a log fails verification
FAILED = ExitCode.LOG_FAILED_VERIFICATION
_LOG_SUFFIX = ".jsonl"

_KEYS_HELP = (
    "The keys trusted are those of --logs (the platform's roster, logs.toml, which 'osmanthus "
    "certs init' writes at the root of the certificates directory; default: logs.toml in "
    "--certs-dir when given) or --log-key; nothing beside a log or sent by a server is trusted."
)
_LIVE_HELP = (
    "With --live HOST:PORT the log is fetched through TransparencyService from a node (its own "
    "log) or the coordinator (its own, or a node's by --origin), over mutual TLS with an "
    "operator certificate (--operator) or a requester certificate granted ReadAuditLog."
)


def register(subcommands: Subcommands) -> None:
    actions = command_group(
        subcommands,
        "audit",
        "verify, show, prove and search audit logs (auditors)",
        "Check that an audit log is what its signed checkpoints and its witnesses' "
        "cosignatures say it is, and look into it. Every node and the coordinator keep "
        "STATE_DIR/audit.jsonl with signed checkpoints beside it (audit.jsonl.checkpoint, "
        "audit.jsonl.checkpoints, audit.jsonl.cosignatures). Copy those files (or point at the "
        "state directory), or ask the live log, and run 'osmanthus audit verify'. "
        "See docs/transparency.md.",
    )
    p = command(
        actions,
        "verify",
        "replay a log (or every audit log under a directory, or a live log) against its "
        "checkpoints and cosignatures",
        "Replay LOG line by line and check that every signed checkpoint's root is the root of "
        "the log's first SIZE lines, that the checkpoints only grow, and that every witness "
        "cosignature kept beside the log verifies and cosigns a checkpoint of the history. "
        "The first problem is named with the lines or sizes it concerns. "
        + _KEYS_HELP
        + " "
        + _LIVE_HELP
        + " A live replay fetches every entry the latest checkpoint covers and "
        "names the first entry that is not what was signed.\n\n"
        "examples:\n"
        "  osmanthus audit verify state/housing/audit.jsonl --logs certs/logs.toml\n"
        "  osmanthus audit verify state/ --logs certs/logs.toml --json\n"
        "  osmanthus audit verify --live 10.0.0.5:50051 --origin housing.node.osmanthus/audit "
        "--certs-dir certs --logs certs/logs.toml --previous saved.note",
        _verify,
        parents=[_output_options(progress=True), _key_options(), _live_options()],
    )
    p.add_argument(
        "log",
        nargs="?",
        type=Path,
        help="a log file, or a directory searched for *.jsonl audit logs",
    )
    p.add_argument(
        "--quorum",
        type=int,
        default=0,
        metavar="K",
        help="fail unless some checkpoint is cosigned by at least K trusted witnesses (default 0: "
        "cosignatures are reported, not required)",
    )
    p.add_argument(
        "--previous",
        type=Path,
        metavar="NOTE",
        help="a checkpoint note saved earlier ('audit checkpoint --save'): the log must still "
        "hold it (a local log's history must contain it; a live log's checkpoint must extend "
        "it by a consistency proof), or the log was rolled back or forked",
    )

    p = command(
        actions,
        "checkpoint",
        "show a log's latest checkpoint and who signed and cosigned it",
        "Show the latest checkpoint of LOG (LOG.checkpoint, with the cosignatures kept in "
        "LOG.cosignatures) or of a live log: origin, tree size, root hash, and each signature "
        "verified or not. Without keys the checkpoint is shown marked NOT VERIFIED. "
        + _KEYS_HELP
        + " "
        + _LIVE_HELP,
        _checkpoint,
        parents=[_output_options(progress=False), _key_options(), _live_options()],
    )
    p.add_argument("log", nargs="?", type=Path, help="a log file")
    p.add_argument("--save", type=Path, metavar="NOTE", help="write the signed note to this file")

    p = command(
        actions,
        "prove",
        "an inclusion proof of one entry, or a consistency proof between two sizes, verified",
        "With --index I: the RFC 9162 inclusion proof of entry I (line I+1) in the tree of "
        "--size N entries (default: the latest checkpoint's size), verified against the signed "
        "root when N is a checkpoint's size. With --from M --to N: the consistency proof that "
        "the tree of N extends the tree of M, verified against both roots. Hashes are printed "
        "in base64, leaf side first, as RFC 9162 orders them. "
        + _KEYS_HELP
        + " "
        + _LIVE_HELP
        + " A live consistency proof runs from the checkpoint in --previous to the latest.",
        _prove,
        parents=[_output_options(progress=False), _key_options(), _live_options()],
    )
    p.add_argument("log", nargs="?", type=Path, help="a log file")
    p.add_argument("--index", type=int, help="the entry's leaf index (its line number less one)")
    p.add_argument("--size", type=int, help="the tree size of the inclusion proof")
    p.add_argument("--from", dest="from_size", type=int, help="the older tree size")
    p.add_argument("--to", dest="to_size", type=int, help="the newer tree size")
    p.add_argument(
        "--previous", type=Path, metavar="NOTE", help="with --live: the older checkpoint's note"
    )

    p = command(
        actions,
        "search",
        "list the entries of a log (or a directory of logs) by time, requester, purpose, "
        "decision or subject",
        "Print each matching entry with its leaf index (for 'audit prove --index'). --subject "
        "is hashed with the log's salt (audit.salt beside the log, or --salt) exactly as the "
        "node hashed it, so the raw identifier is never compared, printed or logged; reading "
        "the salt needs the log owner's permission. An id on the command line is not private: "
        "other users of the machine see it (ps, /proc) and the shell keeps it in its history. "
        "Give it on standard input (--subject -) or in a file (--subject-file) instead. Search "
        "does not verify the log: run 'audit verify' first.\n\n"
        "examples:\n"
        "  osmanthus audit search state/tax/audit.jsonl --since 2026-11-01 --decision deny\n"
        "  read -rs ID && printf '%s\\n' \"$ID\" | \\\n"
        "    osmanthus audit search state/ --subject - --kind person --json",
        _search,
        parents=[_output_options(progress=False)],
    )
    p.add_argument(
        "log", type=Path, help="a log file, or a directory searched for *.jsonl audit logs"
    )
    p.add_argument("--since", type=_when(end=False), help="from this time (RFC 3339 or a date)")
    p.add_argument("--until", type=_when(end=True), help="up to this time (a date: its end)")
    p.add_argument("--requester", help="only this requester")
    p.add_argument("--purpose", help="only this purpose")
    p.add_argument("--decision", choices=["allow", "deny"], help="only this decision")
    subject = p.add_mutually_exclusive_group()
    subject.add_argument(
        "--subject",
        metavar="ID",
        help="only entries about this resident id or credit code (needs --kind); '-' reads it "
        "from standard input (one line), which is preferred: an id given here is visible to "
        "other users (ps, /proc) and kept in the shell's history",
    )
    subject.add_argument(
        "--subject-file",
        type=Path,
        metavar="PATH",
        help="like --subject, the id read from the first line of this file",
    )
    p.add_argument("--kind", choices=["person", "enterprise"], help="the kind of --subject")
    p.add_argument("--salt", type=Path, help="the log's salt file (default: audit.salt beside it)")
    p.add_argument("--limit", type=int, default=0, help="at most this many entries (0: all)")


# --- options -------------------------------------------------------------------------------------


def _output_options(*, progress: bool) -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--json", action="store_true", help="print one JSON document on stdout instead of text"
    )
    if progress:
        parent.add_argument("--quiet", action="store_true", help="no progress bar")
    return parent


def _key_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("trusted keys")
    group.add_argument("--logs", type=Path, metavar="logs.toml", help="the platform's log roster")
    group.add_argument(
        "--log-key",
        action="append",
        default=[],
        metavar="KEY",
        help="a log's verifier key text, or a file holding one (e.g. its log.pub); repeatable; "
        "instead of the roster's log keys",
    )
    group.add_argument(
        "--witness",
        action="append",
        default=[],
        metavar="KEY",
        help="a witness's verifier key text, or a file holding one (witness.pub); repeatable; "
        "added to the roster's witnesses",
    )
    group.add_argument(
        "--origin", help="the log's origin, e.g. housing.node.osmanthus/audit (needed with --live)"
    )
    return parent


def _live_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False, parents=[tls_options(role_hint="operator")])
    group = parent.add_argument_group("live log")
    group.add_argument("--live", metavar="HOST:PORT", help="ask this server instead of a file")
    group.add_argument(
        "--server-name",
        help="the name the server's certificate must carry (default: from --origin, e.g. "
        "housing.node.osmanthus for a node's log; coordinator.osmanthus for a relayed one "
        "when --live is the coordinator: give it then)",
    )
    group.add_argument(
        "--operator",
        default="operator",
        help="your operator certificate's name in --certs-dir",
    )
    return parent


def _when(*, end: bool) -> Callable[[str], datetime]:
    def parse(text: str) -> datetime:
        try:
            if len(text) == 10:
                day = date.fromisoformat(text)
                moment = datetime.combine(day, time.max if end else time.min, tzinfo=UTC)
                return moment
            value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is neither a date (2026-11-26) nor an RFC 3339 time "
                "(2026-11-26T10:00:00Z)"
            ) from None
        if value.utcoffset() is None:
            raise argparse.ArgumentTypeError(f"{text!r} has no time zone: add Z or +08:00")
        return value

    return parse


# --- the handlers --------------------------------------------------------------------------------


class _Output:
    """Text on stdout, or one JSON document; errors as JSON too with --json."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.json = bool(args.json)

    def line(self, text: str = "") -> None:
        if not self.json:
            print(text)

    def document(self, value: object) -> None:
        if self.json:
            json.dump(value, sys.stdout, indent=2, ensure_ascii=False)
            sys.stdout.write("\n")


def _guarded(
    run: Callable[[argparse.Namespace, _Output], int],
) -> Callable[[argparse.Namespace], int]:
    """With --json, an error is a JSON document on stdout too (and the same exit code)."""
    from osmanthus.core.errors import OsmanthusError

    def handler(args: argparse.Namespace) -> int:
        out = _Output(args)
        try:
            return run(args, out)
        except OsmanthusError as exc:
            if not out.json:
                raise
            out.document({"ok": False, "error": str(exc), "field": exc.field})
            print(f"error: {exc}", file=sys.stderr)
            return exc.exit_code

    return handler


def _keys(args: argparse.Namespace, *, required: bool) -> Any:
    from osmanthus.cli.auditing import Keys, key_text
    from osmanthus.core.errors import InvalidArgument
    from osmanthus.core.logkeys import ROSTER_FILE, LogRoster
    from osmanthus.core.signednote import CosignatureVerifier, NoteVerifier

    roster_path = args.logs
    if roster_path is None and getattr(args, "certs_dir", None) and not args.log_key:
        candidate = Path(args.certs_dir) / ROSTER_FILE
        roster_path = candidate if candidate.is_file() else None
    roster = LogRoster.load(roster_path) if roster_path is not None else None
    try:
        log_keys = tuple(
            NoteVerifier.from_key_text(key_text(v, field_name="log_key")) for v in args.log_key
        )
        witnesses = tuple(
            CosignatureVerifier.from_key_text(key_text(v, field_name="witness"))
            for v in args.witness
        )
    except InvalidArgument as exc:
        raise InvalidArgument(f"a key given: {exc.message}", field=exc.field) from None
    keys = Keys(roster=roster, log_keys=log_keys, extra_witnesses=witnesses)
    if required and not keys.given:
        raise InvalidArgument(
            "give the keys to trust: --logs logs.toml (the platform's roster) or --log-key",
            field="logs",
        )
    return keys


@contextmanager
def _bar(args: argparse.Namespace, *, total: int, unit: str, desc: str) -> Iterator[Any]:
    """A tqdm progress bar on stderr (when tqdm is installed and not --quiet/--json)."""
    quiet = getattr(args, "quiet", False) or args.json or not sys.stderr.isatty()
    try:
        from tqdm import tqdm
    except ModuleNotFoundError:  # the base install has no tqdm: no bar, nothing lost
        quiet = True
    if quiet:
        yield None
        return
    with tqdm(total=total, unit=unit, unit_scale=True, desc=desc, leave=False) as bar:
        yield bar


@contextmanager
def _live_client(args: argparse.Namespace) -> Iterator[Any]:
    from osmanthus.core.errors import InvalidArgument
    from sdk.transparency import TransparencyClient

    if not args.origin:
        raise InvalidArgument(
            "--live needs --origin, the log's origin (e.g. housing.node.osmanthus/audit)",
            field="origin",
        )
    from osmanthus.core.logkeys import party_host

    # a coordinator replica's log is served under the coordinator's certificate
    server_name = args.server_name or party_host(args.origin)
    tls = tls_files(args, role="operator", name=args.operator)
    with TransparencyClient.connect(args.live, tls=tls, server_name=server_name) as client:
        yield client


def _local_logs(path: Path | None) -> list[Path]:
    from osmanthus.core.errors import InvalidArgument

    if path is None:
        raise InvalidArgument("give a LOG file or directory, or --live HOST:PORT", field="log")
    if path.is_dir():
        # a state directory holds one log per service (state/<name>/audit.jsonl), next to
        # other JSON-lines files (a witness's alarms): a transparency log is the *.jsonl file
        # that has its checkpoints or its tree beside it
        logs = sorted(
            p
            for p in path.rglob(f"*{_LOG_SUFFIX}")
            if p.is_file()
            and any(p.with_name(p.name + suffix).exists() for suffix in (".checkpoints", ".tree.0"))
        )
        if not logs:
            raise InvalidArgument(
                f"{path}: no *{_LOG_SUFFIX} audit log (one with checkpoints or a tree beside "
                "it) in this directory or below",
                field="log",
            )
        return logs
    if not path.is_file():
        raise InvalidArgument(f"{path}: no such log file or directory", field="log")
    return [path]


def _verify(args: argparse.Namespace) -> int:
    return _guarded(_run_verify)(args)


def _run_verify(args: argparse.Namespace, out: _Output) -> int:
    from osmanthus.cli import auditing
    from osmanthus.core.errors import InvalidArgument

    keys = _keys(args, required=True)
    if args.quorum < 0:
        raise InvalidArgument("--quorum must be 0 or more", field="quorum")
    reports: list[auditing.LogReport] = []
    if args.live:
        previous = _read_file(args.previous, "previous") if args.previous else None
        with _live_client(args) as client, _bar(args, total=0, unit="entry", desc="replay") as bar:
            reports.append(
                auditing.verify_live(
                    client,
                    keys,
                    origin=args.origin,
                    previous=previous,
                    quorum=args.quorum,
                    progress=bar.update if bar is not None else None,
                )
            )
    else:
        previous = _read_file(args.previous, "previous") if args.previous else None
        for path in _local_logs(args.log):
            size = path.stat().st_size
            with _bar(args, total=size, unit="B", desc=path.name) as bar:
                reports.append(
                    auditing.verify_local(
                        path,
                        keys,
                        origin=args.origin,
                        quorum=args.quorum,
                        progress=bar.update if bar is not None else None,
                        previous=previous,
                    )
                )
    ok = all(report.ok for report in reports)
    out.document({"ok": ok, "logs": [report.to_json() for report in reports]})
    for report in reports:
        _print_report(out, report)
    if not ok and not out.json:
        bad = sum(1 for report in reports if not report.ok)
        print(f"error: {bad} of {len(reports)} log(s) failed verification", file=sys.stderr)
    return ExitCode.SUCCESS if ok else FAILED


def _print_report(out: _Output, report: Any) -> None:
    status = "OK" if report.ok else "FAILED"
    out.line(f"{report.log}: {status}")
    out.line(f"  origin        {report.origin or '(none)'}")
    out.line(f"  entries       {report.entries}")
    out.line(f"  checkpoints   {report.checkpoints} (latest: {report.latest_size})")
    for name, sizes in sorted(report.cosigned.items()):
        out.line(f"  cosigned by   {name}: {_sizes(sizes)}")
    if report.witnessed_size is not None:
        out.line(f"  witnessed up to {report.witnessed_size} entries")
    for warning in report.warnings:
        out.line(f"  warning: {warning}")
    if report.problem:
        out.line(f"  problem: {report.problem}")
    if report.hint:
        out.line(f"  hint (unsigned): {report.hint}")


def _sizes(sizes: Sequence[int]) -> str:
    shown = ", ".join(str(size) for size in sizes[-8:])
    return f"... {shown}" if len(sizes) > 8 else shown


def _read_file(path: Path, field: str) -> bytes:
    from osmanthus.core.errors import InvalidArgument

    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"{path}: cannot read: {exc.strerror}", field=field) from None


def _checkpoint(args: argparse.Namespace) -> int:
    return _guarded(_run_checkpoint)(args)


def _run_checkpoint(args: argparse.Namespace, out: _Output) -> int:
    from osmanthus.cli import auditing
    from osmanthus.core.errors import InvalidArgument

    keys = _keys(args, required=bool(args.live))
    if args.live:
        with _live_client(args) as client:
            note = client.get_checkpoint_note(args.origin)
        where = f"live {args.origin}"
    else:
        (path,) = _local_logs(args.log) if args.log and args.log.is_file() else [None]
        if path is None:
            raise InvalidArgument("give a LOG file, or --live HOST:PORT", field="log")
        found = auditing.latest_note(path)
        if found is None:
            raise InvalidArgument(
                f"{path}: no {path.name}.checkpoint beside it: no checkpoint was issued",
                field="log",
            )
        note = auditing.merged_note(path, found)
        where = str(path)
    problem = ""
    if keys.given:
        checked, problem = auditing.checked_note(note, keys, origin=args.origin)
        if checked is not None and checked.bad_cosignatures:
            problem = f"bad cosignature(s) from {', '.join(checked.bad_cosignatures)}"
        shown = checked if checked is not None else auditing.unverified_checkpoint(note)
    else:
        shown = auditing.unverified_checkpoint(note)
    if args.save:
        args.save.write_bytes(note)
    verified = keys.given and not problem
    document = {
        "ok": not problem,
        "log": where,
        "origin": shown.origin,
        "size": shown.size,
        "root": base64.b64encode(shown.root).decode(),
        "verified": verified,
        "problem": problem or None,
        "cosigned_at": {
            name: datetime.fromtimestamp(stamp, UTC).isoformat().replace("+00:00", "Z")
            for name, stamp in shown.cosigned_at.items()
        },
        "bad_cosignatures": list(shown.bad_cosignatures),
        "not_cosigned_by": list(shown.missing),
        "note": note.decode("utf-8", errors="replace"),
    }
    out.document(document)
    out.line(f"{where}")
    out.line(f"  origin      {shown.origin}")
    out.line(f"  size        {shown.size}")
    out.line(f"  root        {document['root']}")
    if not keys.given:
        out.line("  signature   NOT VERIFIED (no --logs or --log-key given)")
    elif problem:
        out.line(f"  signature   FAILED: {problem}")
    else:
        out.line("  signature   verified with the log's key")
    for name, stamp in sorted(document["cosigned_at"].items()):
        out.line(f"  cosigned    {name} at {stamp} (verified)")
    for name in shown.bad_cosignatures:
        out.line(f"  cosigned    {name}: DOES NOT VERIFY")
    for name in shown.missing:
        out.line(f"  cosigned    {name}: no cosignature")
    if args.save:
        out.line(f"  saved to    {args.save}")
    return FAILED if problem else ExitCode.SUCCESS


def _b64(values: Sequence[bytes]) -> list[str]:
    return [base64.b64encode(value).decode() for value in values]


def _prove(args: argparse.Namespace) -> int:
    return _guarded(_run_prove)(args)


def _run_prove(args: argparse.Namespace, out: _Output) -> int:
    from osmanthus.core.errors import InvalidArgument

    inclusion = args.index is not None
    consistency = args.from_size is not None or args.to_size is not None or args.previous
    if inclusion == bool(consistency):
        raise InvalidArgument(
            "give --index I (inclusion) or --from M --to N (consistency), not both",
            field="index",
        )
    keys = _keys(args, required=bool(args.live))
    if args.live:
        document = _prove_live(args, keys, inclusion=inclusion)
    else:
        document = _prove_local(args, keys, inclusion=inclusion)
    out.document(document)
    for key, value in document.items():
        if isinstance(value, list):
            out.line(f"{key}:")
            for item in value:
                out.line(f"  {item}")
        else:
            out.line(f"{key}: {value}")
    return ExitCode.SUCCESS if document["verified"] is not False else FAILED


def _signed_roots(path: Path, keys: Any) -> dict[int, bytes]:
    """size -> root of every checkpoint in the history, after verify_log accepted it."""
    from osmanthus.cli import auditing
    from osmanthus.core.checkpoints import verify_log
    from osmanthus.core.errors import CryptoError

    origin = auditing.origin_of(path)
    if origin is None or not keys.given:
        return {}
    result = verify_log(path, keys.log_verifiers(origin), origin=origin)
    if not result.ok:
        raise CryptoError(f"{path} fails verification: {result.problem}", field="log")
    return {record.size: record.root for record in auditing.history(path)}


def _prove_local(args: argparse.Namespace, keys: Any, *, inclusion: bool) -> dict[str, Any]:
    from osmanthus.cli import auditing
    from osmanthus.core import merkle
    from osmanthus.core.errors import InvalidArgument

    (path,) = _local_logs(args.log)[:1] if args.log and args.log.is_file() else [None]
    if path is None:
        raise InvalidArgument("give a LOG file, or --live HOST:PORT", field="log")
    signed = _signed_roots(path, keys)
    tree = auditing.leaves_of(path)
    latest = max(signed) if signed else tree.size
    if inclusion:
        size = args.size if args.size is not None else latest
        if not 0 <= args.index < size <= tree.size:
            raise InvalidArgument(
                f"entry {args.index} is not in a tree of {size} (the log holds {tree.size})",
                field="index",
            )
        hashes = merkle.inclusion_proof(tree, args.index, size)
        entry = next(line for i, line in enumerate(auditing.log_lines(path)) if i == args.index)
        root = signed.get(size, tree.root(size))
        merkle.verify_inclusion(args.index, size, merkle.leaf_hash(entry), hashes, root)
        return {
            "kind": "inclusion",
            "log": str(path),
            "index": args.index,
            "size": size,
            "entry": entry.decode("utf-8", errors="replace"),
            "leaf": base64.b64encode(merkle.leaf_hash(entry)).decode(),
            "root": base64.b64encode(root).decode(),
            "root_signed": size in signed,
            "hashes": _b64(hashes),
            "verified": True,
        }
    old = args.from_size
    new = args.to_size if args.to_size is not None else latest
    if old is None or not 0 < old <= new <= tree.size:
        raise InvalidArgument(
            f"no consistency proof from {old} to {new}: give 0 < --from <= --to <= "
            f"{tree.size} (the log's entries)",
            field="from",
        )
    hashes = merkle.consistency_proof(tree, old, new)
    old_root, new_root = signed.get(old, tree.root(old)), signed.get(new, tree.root(new))
    merkle.verify_consistency(old, new, old_root, new_root, hashes)
    return {
        "kind": "consistency",
        "log": str(path),
        "from": old,
        "to": new,
        "from_root": base64.b64encode(old_root).decode(),
        "to_root": base64.b64encode(new_root).decode(),
        "roots_signed": [old in signed, new in signed],
        "hashes": _b64(hashes),
        "verified": True,
    }


def _prove_live(args: argparse.Namespace, keys: Any, *, inclusion: bool) -> dict[str, Any]:
    from osmanthus.cli import auditing
    from osmanthus.core import merkle
    from osmanthus.core.errors import CryptoError, InvalidArgument

    with _live_client(args) as client:
        note = client.get_checkpoint_note(args.origin)
        head, problem = auditing.checked_note(note, keys, origin=args.origin)
        if head is None:
            raise CryptoError(f"the served checkpoint: {problem}", field="checkpoint")
        if inclusion:
            if args.size is not None and args.size != head.size:
                raise InvalidArgument(
                    f"a live proof is for the latest checkpoint ({head.size}), the only root "
                    "the log signs now: leave out --size",
                    field="size",
                )
            proof = client.inclusion_proof(args.index, head, origin=args.origin)
            return {
                "kind": "inclusion",
                "log": f"live {args.origin}",
                "index": proof.leaf_index,
                "size": proof.tree_size,
                "entry": proof.entry.decode("utf-8", errors="replace"),
                "leaf": base64.b64encode(merkle.leaf_hash(proof.entry)).decode(),
                "root": base64.b64encode(head.root).decode(),
                "root_signed": True,
                "hashes": _b64(proof.hashes),
                "verified": True,
            }
        if args.previous is None:
            raise InvalidArgument(
                "a live consistency proof needs --previous NOTE, the older checkpoint (saved "
                "with 'audit checkpoint --live --save'): the log signs only its latest root",
                field="previous",
            )
        old, problem = auditing.checked_note(
            _read_file(args.previous, "previous"), keys, origin=args.origin
        )
        if old is None:
            raise InvalidArgument(f"--previous: {problem}", field="previous")
        consistency = client.consistency_proof(old, head, origin=args.origin)
        return {
            "kind": "consistency",
            "log": f"live {args.origin}",
            "from": old.size,
            "to": head.size,
            "from_root": base64.b64encode(old.root).decode(),
            "to_root": base64.b64encode(head.root).decode(),
            "roots_signed": [True, True],
            "hashes": _b64(consistency.hashes),
            "verified": True,
        }


def _search(args: argparse.Namespace) -> int:
    return _guarded(_run_search)(args)


#: a subject id is a few dozen characters; a longer first line is not one
_MAX_SUBJECT_LINE: Final = 256


def _subject_id(args: argparse.Namespace) -> str:
    """The subject id of --subject ID, --subject - (the first line of standard input) or
    --subject-file PATH (its first line); never quoted in an error."""
    from osmanthus.core.errors import InvalidArgument

    line: str
    if args.subject_file is not None:
        field = "subject_file"
        try:
            with args.subject_file.open("r", encoding="utf-8") as handle:
                line = handle.readline(_MAX_SUBJECT_LINE + 1)
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise InvalidArgument(
                f"cannot read {args.subject_file}: {reason}", field=field
            ) from None
    elif args.subject == "-":
        field = "subject"
        line = sys.stdin.readline(_MAX_SUBJECT_LINE + 1)
    else:
        return str(args.subject)
    subject = line.strip()
    if not subject or len(line) > _MAX_SUBJECT_LINE:
        where = "standard input" if field == "subject" else str(args.subject_file)
        raise InvalidArgument(
            f"{where} must hold the subject id on its first line (nothing else on it)",
            field=field,
        )
    return subject


def _run_search(args: argparse.Namespace, out: _Output) -> int:
    import hashlib
    import hmac

    from osmanthus.cli import auditing
    from osmanthus.core.audit import AuditEntry, load_or_create_salt
    from osmanthus.core.errors import InvalidArgument
    from osmanthus.core.ids import canonical_subject
    from osmanthus.core.types import SubjectKind

    if args.limit < 0:
        raise InvalidArgument("--limit must be 0 (all) or more", field="limit")
    given = args.subject is not None or args.subject_file is not None
    if given != (args.kind is not None):
        raise InvalidArgument("--subject (or --subject-file) and --kind go together", field="kind")
    logs = _local_logs(args.log)
    needles: dict[Path, bytes] = {}
    if given:
        subject = canonical_subject(SubjectKind(args.kind), _subject_id(args))
        for path in logs:
            salt_path = args.salt or path.with_name("audit.salt")
            if not salt_path.is_file():
                # never created here: a new salt would match nothing and hide that
                raise InvalidArgument(
                    f"{salt_path}: no audit salt beside {path.name}; give --salt",
                    field="salt",
                )
            salt = load_or_create_salt(salt_path)
            # AuditLog.subject_hash: HMAC-SHA256(salt, subject id as UTF-8), in hex
            needles[path] = (
                hmac.new(salt, subject.encode("utf-8"), hashlib.sha256).hexdigest().encode()
            )
    found: list[dict[str, Any]] = []
    for path, index, line in auditing.lines_with_index(logs):
        if args.limit and len(found) >= args.limit:
            break
        needle = needles.get(path)
        if needle is not None and needle not in line:
            continue
        try:
            entry = AuditEntry.from_json(line.decode("ascii"))
        except (ValueError, KeyError, TypeError, InvalidArgument):
            continue  # a torn line: verify reports it; search shows entries only
        if not _matches(args, entry, needle):
            continue
        record = json.loads(line)
        found.append({"log": str(path), "index": index, **record})
        if not out.json:
            prefix = f"{path.name}:" if len(logs) > 1 else ""
            subject = entry.subject_hash[:16] or f"batch of {len(entry.subject_hashes)}"
            out.line(
                f"{prefix}{index}  {record['time']}  {entry.requester}  {entry.purpose}  "
                f"{entry.decision}  {entry.shape or '-'}  subject {subject}  {entry.reason}"
            )
    out.document({"ok": True, "entries": found, "count": len(found)})
    out.line(f"{len(found)} entr{'y' if len(found) == 1 else 'ies'}")
    return ExitCode.SUCCESS


def _matches(args: argparse.Namespace, entry: Any, needle: bytes | None) -> bool:
    if args.since is not None and entry.time < args.since:
        return False
    if args.until is not None and entry.time > args.until:
        return False
    if args.requester is not None and entry.requester != args.requester:
        return False
    if args.purpose is not None and entry.purpose != args.purpose:
        return False
    if args.decision is not None and entry.decision != args.decision:
        return False
    if needle is not None:
        digest = needle.decode()
        return bool(entry.subject_hash == digest or digest in entry.subject_hashes)
    return True

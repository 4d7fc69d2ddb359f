"""The `osmanthus` command's top-level parser and `main()`: parse, run the handler, map errors."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from osmanthus import __version__
from osmanthus.cli import (
    audit,
    batch,
    certs,
    coordinator,
    demo,
    disputes,
    health,
    keys,
    lists,
    node,
    policy,
    portal,
    province,
    report,
    status,
    sync,
)
from osmanthus.cli.env import Parser, read_environment
from osmanthus.cli.exit_codes import ExitCode, exit_codes_epilog
from osmanthus.cli.extras import extra_for, missing_module
from osmanthus.cli.options import Handler, HelpFormatter
from osmanthus.core.errors import ImportRejected, OsmanthusError

_log = logging.getLogger("osmanthus")

#: the command groups, in the order `osmanthus --help` lists them
_GROUPS = (
    demo,
    certs,
    keys,
    node,
    lists,
    disputes,
    coordinator,
    policy,
    batch,
    report,
    province,
    sync,
    portal,
    audit,
    health,
    status,
)
#: problems of a rejected import printed before the rest is summed up
_PROBLEMS_SHOWN = 200


def build_parser() -> argparse.ArgumentParser:
    """The parser of the `osmanthus` command and all its subcommands."""
    parser = Parser(
        prog="osmanthus",
        description=(
            "Osmanthus: a federated credit-data gateway. Each department runs a node that keeps "
            "its records local and answers only encrypted, policy-checked contributions; the "
            "coordinator adds them up without being able to read them."
        ),
        epilog=exit_codes_epilog(),
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"osmanthus {__version__}", help="print the version"
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log detail",
    )
    # a container's servers take their log level from the environment like their other options
    read_environment(parser, note=False)
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in _GROUPS:
        group.register(subcommands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `osmanthus` command with `argv` (default: sys.argv) and return its exit code.

    --help, --version and usage errors exit (SystemExit) as argparse does, with 0 and 2.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    handler: Handler = args.handler
    try:
        return int(handler(args))
    except ImportRejected as exc:
        print(f"error: {exc}", file=sys.stderr)
        for line, field, problem in exc.problems[:_PROBLEMS_SHOWN]:
            print(f"  line {line}: {field}: {problem}", file=sys.stderr)
        if exc.problem_count > _PROBLEMS_SHOWN:
            print(f"  … and {exc.problem_count - _PROBLEMS_SHOWN} more", file=sys.stderr)
        return exc.exit_code
    except OsmanthusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ModuleNotFoundError as exc:
        module = missing_module(exc)
        extra = extra_for(module, command_extra=args.command_extra) if module else None
        if extra is None:
            _log.exception("internal error")
            return ExitCode.INTERNAL_ERROR
        # an install without the extra this command needs: say which, not a traceback
        print(
            f"error: '{args.command_name}' needs the '{extra}' extra: "
            f"pip install 'osmanthus[{extra}]' (missing module: {module})",
            file=sys.stderr,
        )
        return ExitCode.INVALID_INPUT
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    except Exception:
        _log.exception("internal error")
        return ExitCode.INTERNAL_ERROR

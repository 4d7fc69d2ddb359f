"""The exit codes of the `osmanthus` command: one numbered registry, each code with its meaning."""

from __future__ import annotations

import textwrap
from enum import IntEnum


class ExitCode(IntEnum):
    """What an `osmanthus` command's exit status means; scripts and health checks rely on these."""

    SUCCESS = 0
    INTERNAL_ERROR = 1
    USAGE = 2
    INVALID_INPUT = 3
    REFUSED = 4
    UNAVAILABLE = 5
    POLICY_CASES_FAILED = 6
    QUARANTINED = 7
    LOG_FAILED_VERIFICATION = 8
    UNHEALTHY = 9
    INTERRUPTED = 130


_WIDTH = 100

#: the meaning of each exit code, as printed under every `--help`
EXIT_CODE_HELP: dict[ExitCode, str] = {
    ExitCode.SUCCESS: "success",
    ExitCode.INTERNAL_ERROR: "unexpected internal error (see the log)",
    ExitCode.USAGE: "bad command line (usage), or a bad OSMANTHUS_* environment variable",
    ExitCode.INVALID_INPUT: "invalid input or configuration (the message names the file, field "
    "and problem), or a missing extra (the message names the one to install)",
    ExitCode.REFUSED: "refused: authentication, permission, consent or policy",
    ExitCode.UNAVAILABLE: "a server was unavailable or did not answer in time",
    ExitCode.POLICY_CASES_FAILED: "policy test cases failed (each failure is listed)",
    ExitCode.QUARANTINED: "stored data failed its signature check and was set aside: a sync "
    "batch in quarantine holds its stream ('osmanthus sync quarantine show')",
    ExitCode.LOG_FAILED_VERIFICATION: "an audit log failed verification: an entry, checkpoint, "
    "cosignature or proof does not match what was signed ('osmanthus audit' names which)",
    ExitCode.UNHEALTHY: "'osmanthus status' found something wrong other than a server down: a "
    "stale audit checkpoint, a witness alarm, another catalogue, a failed or late sync job "
    "(each problem is listed)",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C)",
}


def exit_codes_epilog() -> str:
    """The "exit codes:" section printed under every `--help`, one line per registered code."""
    width = max(len(str(int(code))) for code in ExitCode)
    lines = ["exit codes:"]
    for code in ExitCode:
        # wrapped by hand: argparse prints an epilog as it is, to keep these columns
        lines += textwrap.wrap(
            EXIT_CODE_HELP[code],
            width=_WIDTH,
            initial_indent=f"  {int(code):<{width}}  ",
            subsequent_indent=" " * (width + 4),
        )
    return "\n".join(lines) + "\n"

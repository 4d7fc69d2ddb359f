"""`osmanthus demo` and `osmanthus seed`: the local federation demo and its synthetic records."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from osmanthus.cli.exit_codes import ExitCode
from osmanthus.cli.options import Subcommands, command, iso_date


def register(subcommands: Subcommands) -> None:
    """Add `demo` and `seed`."""
    p = command(
        subcommands,
        "demo",
        "run the local federation demo end to end",
        "Seed synthetic data, create certificates and tokens, start every department node and the "
        "coordinator on 127.0.0.1, query persons and enterprises through the SDK, print score "
        "cards and what the coordinator saw, show a citizen reading her score at the service "
        "hall's kiosk (the subjects' portal), then shut everything down. With --keep-running, "
        "everything stays up until Ctrl-C: the demo prints the kiosk's URL, the online "
        "self-service URL with its demo sign-in, an SDK snippet and CLI commands with the demo's "
        "certificate, token and key paths.",
        _cmd_demo,
        # every server and the SDK in one process tree
        extra="all",
    )
    p.add_argument(
        "--workdir", type=Path, default=Path(".osmanthus/demo"), help="where demo files go"
    )
    p.add_argument("--persons", type=int, default=2000, help="synthetic persons to seed")
    p.add_argument("--enterprises", type=int, default=300, help="synthetic enterprises to seed")
    p.add_argument(
        "--keep-running",
        action="store_true",
        help="after the scenes, leave the federation, the kiosk, the online portal and the "
        "demo's identity provider up until Ctrl-C, and print how to reach each",
    )

    p = command(
        subcommands,
        "seed",
        "write deterministic synthetic records, one DuckDB file per department",
        "Write synthetic records for every department of the default catalogue into "
        "OUT/<department>.duckdb, plus OUT/subjects.csv listing the synthetic subjects. The same "
        "--seed and --as-of always give the same records.",
        _cmd_seed,
        extra="node",
    )
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--persons", type=int, default=2000, help="number of synthetic persons")
    p.add_argument("--enterprises", type=int, default=300, help="number of synthetic enterprises")
    p.add_argument("--seed", type=int, default=20261126, help="random seed")
    p.add_argument("--as-of", type=iso_date, help="reference date for record ages (default today)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--no-scene",
        action="store_true",
        help="synthetic subjects only: leave out the demo's named subjects (the kiosk's citizen "
        "with 106, the demo enterprise), e.g. for benchmarks that count subjects",
    )


def _cmd_demo(args: argparse.Namespace) -> int:
    from osmanthus.demo.run import run_demo

    return run_demo(
        workdir=args.workdir,
        persons=args.persons,
        enterprises=args.enterprises,
        keep_running=args.keep_running,
    )


def _cmd_seed(args: argparse.Namespace) -> int:
    from osmanthus.demo.seed import seed

    report = seed(
        args.out,
        persons=args.persons,
        enterprises=args.enterprises,
        seed=args.seed,
        as_of=args.as_of or datetime.now(UTC).date(),
        progress=None if args.quiet else _progress_printer(),
        scene=not args.no_scene,
    )
    print(f"wrote {len(report.databases)} department databases to {args.out}")
    return ExitCode.SUCCESS


def _progress_printer() -> Callable[[str], None]:
    from tqdm import tqdm

    bar = tqdm(desc="seeding", unit="dept", leave=False)

    def step(message: str) -> None:
        bar.set_postfix_str(message)
        bar.update(1)

    return step

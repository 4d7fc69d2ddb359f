"""The query benchmark's pure parts: percentiles, argument parsing and the JSON summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bench.query import (
    DEFAULT_WARMUP,
    BenchResult,
    LatencyStats,
    build_parser,
    percentile,
    run_benchmark,
    wait_until_idle,
)
from osmanthus.core.crypto import DEFAULT_TABLE_AFTER_USES
from osmanthus.core.errors import InvalidArgument
from osmanthus.core.types import Shape


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 90) == 90.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile(values, 0) == 1.0
    assert percentile([7.0], 99) == 7.0
    # with few samples p99 is the slowest one, never an interpolated value below it
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 99) == 5.0


def test_percentile_refuses_no_values_and_out_of_range_q() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match=r"\[0, 100\]"):
        percentile([1.0], 101)


def test_parser_defaults_match_the_documented_run() -> None:
    args = build_parser().parse_args([])
    assert args.persons == 2000
    assert args.queries == 200
    assert args.shapes == [Shape.BREAKDOWN, Shape.TOTAL, Shape.THRESHOLD]
    assert args.concurrency == 1
    # the warm-up must reach the node's table threshold, or timing starts on the slow path
    assert args.warmup == DEFAULT_WARMUP > DEFAULT_TABLE_AFTER_USES


def test_parser_reads_shapes_and_drops_repeats() -> None:
    args = build_parser().parse_args(["--shapes", "total, breakdown,total"])
    assert args.shapes == [Shape.TOTAL, Shape.BREAKDOWN]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--shapes", "stats"], "unknown shape(s) stats"),
        (["--shapes", ","], "(none given)"),
        (["--queries", "0"], "must be 1 or more, got 0"),
        (["--concurrency", "two"], "'two' is not a whole number"),
    ],
)
def test_parser_names_the_bad_argument(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_summary_has_null_figures_for_shapes_not_measured_and_is_valid_json() -> None:
    breakdown = LatencyStats(
        shape=Shape.BREAKDOWN,
        ok=4,
        errors=1,
        p50_ms=200.0,
        p90_ms=250.0,
        p99_ms=260.0,
        max_ms=260.0,
        mean_ms=215.0,
        wall_s=2.0,
    )
    failed = LatencyStats(
        shape=Shape.TOTAL,
        ok=0,
        errors=3,
        p50_ms=float("nan"),
        p90_ms=float("nan"),
        p99_ms=float("nan"),
        max_ms=float("nan"),
        mean_ms=float("nan"),
        wall_s=1.0,
    )
    result = BenchResult(
        nodes=22,
        persons=200,
        consented=200,
        queries=5,
        concurrency=1,
        setup_s=4.5,
        warmup_s=1.0,
        settled=True,
        stats={Shape.BREAKDOWN: breakdown, Shape.TOTAL: failed},
    )
    summary = json.loads(json.dumps(result.summary(), allow_nan=False))
    assert summary["breakdown_p50_ms"] == 200.0
    assert summary["breakdown_qps"] == 2.0
    assert summary["total_errors"] == 3
    assert summary["total_p50_ms"] is None
    assert summary["total_qps"] is None
    assert result.errors == 4


def test_wait_until_idle_sees_a_quiet_process_settle() -> None:
    # this process sleeps while it waits, so it is idle
    assert wait_until_idle([os.getpid()], timeout_s=5.0) is True


def test_wait_until_idle_gives_up_on_a_busy_process() -> None:
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        assert wait_until_idle([busy.pid], timeout_s=1.5) is False
    finally:
        busy.kill()
        busy.wait()


def test_wait_until_idle_is_false_for_a_process_that_is_gone() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert wait_until_idle([gone.pid], timeout_s=1.0) is False


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"queries": 0}, "queries"), ({"warmup": -1}, "warmup"), ({"shapes": ()}, "shapes")],
)
def test_run_benchmark_refuses_bad_settings_before_starting_anything(
    kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidArgument) as exc:
        run_benchmark(**kwargs)  # type: ignore[arg-type]
    assert exc.value.field == field

"""Smoke test of the query benchmark: 22 node processes and a coordinator, a few timed queries."""

from __future__ import annotations

import json

import pytest

from bench.query import main

REQUIRED_KEYS = {
    "nodes",
    "queries",
    "breakdown_p50_ms",
    "breakdown_p99_ms",
    "breakdown_qps",
    "total_p50_ms",
    "total_p99_ms",
    "total_qps",
    "concurrency",
    "setup_s",
}


@pytest.mark.slow
def test_breakdown_benchmark_reports_latencies_as_last_json_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # a short warm-up keeps the nodes below their table threshold: ~10 s instead of ~20 s here
    code = main(["--queries", "5", "--persons", "200", "--shapes", "breakdown", "--warmup", "2"])

    out = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(out[-1])
    assert code == 0, "\n".join(out)
    assert summary.keys() >= REQUIRED_KEYS
    assert summary["nodes"] == 22
    assert summary["queries"] == 5
    assert summary["concurrency"] == 1
    assert summary["breakdown_ok"] == 5
    assert summary["breakdown_errors"] == 0
    assert 0 < summary["breakdown_p50_ms"] <= summary["breakdown_p99_ms"]
    assert summary["breakdown_p99_ms"] <= summary["breakdown_max_ms"]
    assert summary["breakdown_qps"] > 0
    assert summary["setup_s"] > 0
    # TOTAL was not asked for, so it has no figures rather than made-up ones
    assert summary["total_p50_ms"] is None
    assert summary["total_qps"] is None
    assert summary["settled"] is True
    assert summary["clean_shutdown"] is True

"""Smoke test of the ingest benchmark: a small file uploaded to a running node while queries run."""

from __future__ import annotations

import json

import pytest

from bench.ingest import main


def test_ingest_benchmark_reports_rates_and_latencies_as_last_json_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["--rows", "5000", "--held", "5000", "--query-threads", "1", "--query-rate", "200"])

    out = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(out[-1])
    assert code == 0, "\n".join(out)
    assert summary["rows"] == 5000 and summary["held_before"] == 5000
    assert summary["offline_rows_per_s"] > 0 and summary["live_rows_per_s"] > 0
    assert summary["live_over_offline"] == pytest.approx(
        summary["live_s"] / summary["offline_s"], rel=0.01
    )
    assert summary["queries_before"] >= 150
    assert summary["query_errors_before"] == summary["query_errors_during"] == 0
    assert 0 < summary["query_before_p50_ms"] <= summary["query_before_p99_ms"]


def test_a_row_count_below_one_is_refused() -> None:
    assert main(["--rows", "0"]) == 3

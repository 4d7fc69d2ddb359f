"""Smoke test of the batch benchmark: 22 node processes, a coordinator and a few hundred persons."""

from __future__ import annotations

import json

import pytest

from bench.batch import main

REQUIRED_KEYS = {
    "persons",
    "wall_s",
    "values_per_s",
    "coordinator_peak_rss_mb",
    "node_peak_rss_mb_max",
    "client_peak_rss_mb",
    "naive_phe_estimate_s",
    "speedup_vs_naive_phe",
}


@pytest.mark.slow
def test_batch_benchmark_scores_everyone_and_reports_json_last(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # 300 persons in chunks of 50: several chunks, each answered by all 22 node processes
    code = main(["--persons", "300", "--chunk-size", "50", "--phe-sample", "2"])
    out = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(out[-1])
    assert code == 0, "\n".join(out)
    assert summary.keys() >= REQUIRED_KEYS
    assert summary["persons"] == 300 and summary["departments"] == 22
    assert summary["scored"] == 300 and summary["refused"] == 0
    assert summary["values_per_s"] == pytest.approx(300 * 22 / summary["wall_s"], rel=0.01)
    assert 0 < summary["coordinator_peak_rss_mb"] < 1024
    assert 0 < summary["node_peak_rss_mb_max"] < 1024
    assert summary["naive_phe_estimate_s"] > 0
    assert summary["clean_shutdown"] is True
    assert any("naive phe (ESTIMATE)" in line for line in out)

"""Smoke test of the sync benchmark: 17 node processes, a coordinator, a receiver, two job runs."""

from __future__ import annotations

import json

import pytest

from bench.sync import main

REQUIRED_KEYS = {
    "enterprises",
    "list_entries",
    "withdrawn",
    "wall_s",
    "records",
    "records_by_kind",
    "records_per_s",
    "batches",
    "baseline_scoring_s",
    "ratio",
    "phases_s",
    "second_run_s",
    "second_run_records",
    "job_peak_rss_mb",
    "stored_records",
    "consistent",
    "clean_shutdown",
}


@pytest.mark.slow
def test_sync_benchmark_delivers_grades_and_list_events_once_and_reports_json_last(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["--enterprises", "240", "--list-entries", "160"])
    out = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(out[-1])
    assert code == 0, "\n".join(out)
    assert summary.keys() >= REQUIRED_KEYS
    assert summary["enterprises"] == 240 and summary["departments"] == 17
    assert summary["list_entries"] == 160 and summary["withdrawn"] == 16
    by_kind = summary["records_by_kind"]
    # every list event once (160 published, 16 withdrawn) and a grade per enterprise, less any
    # whose credit code also reads as a resident id (no sync batch may carry one)
    assert by_kind["list_changes"] == 160 + 16
    assert 0 < by_kind["grades"] <= 240
    assert summary["records"] == by_kind["grades"] + by_kind["list_changes"]
    assert summary["stored_records"] == by_kind and summary["batches"] >= 2
    assert summary["records_per_s"] == pytest.approx(
        summary["records"] / summary["wall_s"], rel=0.01
    )
    assert summary["ratio"] == pytest.approx(
        summary["wall_s"] / summary["baseline_scoring_s"], rel=0.05
    )
    # the second run finds nothing new: no record and no batch goes up
    assert summary["second_run_records"] == 0 and summary["second_run_batches"] == 0
    assert summary["second_run_s"] > 0
    assert sum(summary["phases_s"].values()) == pytest.approx(summary["wall_s"], abs=0.1)
    assert {"startup", "list_feed", "grade_scoring", "delivery"} <= summary["phases_s"].keys()
    assert "delivery" not in summary["second_run_phases_s"]
    assert 0 < summary["job_peak_rss_mb"] < 1024
    assert summary["consistent"] is True and summary["clean_shutdown"] is True
    assert summary["job_exit_codes"] == [0, 0]
    assert any(line.startswith("first run / baseline") for line in out)

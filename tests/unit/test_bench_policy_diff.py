"""Smoke test of bench/policy_diff.py: one quick run yields the table and a complete JSON line."""

from __future__ import annotations

import json

import pytest

from bench.policy_diff import main


def test_a_quick_run_reports_every_case(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--repeat", "1", "--no-every-request"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    figures = json.loads(lines[-1])
    for case in ("same", "widened", "removed"):
        assert figures[f"{case}_requests"] > 100_000
        assert figures[f"{case}_fast_s"] > 0
        # the slow path was skipped: no figure, no ratio
        assert figures[f"{case}_every_request_s"] is None and figures[f"{case}_ratio"] is None
    assert figures["same_changes"] == 0
    assert figures["widened_changes"] == 11  # the library's 11 requests (test_policy_diff.py)
    assert figures["removed_changes"] > 0
    assert any(line.startswith("widened ") for line in lines)

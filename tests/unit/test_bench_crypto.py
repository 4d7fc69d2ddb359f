"""Smoke test of bench/crypto.py: one quick 2048-bit run yields a complete, positive JSON line."""

from __future__ import annotations

import json

import pytest

from bench.crypto import Cell, load_heu, main, measure

RATE_KEYS = [
    f"{impl}_{op}_per_s" for impl in ("ours", "phe", "heu") for op in ("enc", "dec", "add")
] + ["ours_plain_enc_per_s"]
OTHER_FIGURES = [
    "ours_table_build_s",
    "ours_table_mb",
    "ratio_ours_vs_phe_enc",
    "ratio_ours_vs_heu_enc",
]
RUN_KEYS = ["bits", "seconds_per_cell", "python", "cpu"]


def test_quick_run_reports_every_figure(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--quick", "--seconds", "0.05", "--bits", "2048"]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert "ours, fast (fixed base)" in out
    result = json.loads(lines[-1])

    assert set(RATE_KEYS + OTHER_FIGURES + RUN_KEYS) <= result.keys()
    assert result["bits"] == [2048]
    assert result["seconds_per_cell"] == 0.05
    assert result["cpu"]
    assert result["python"].startswith("3.")
    # --bits 2048 measures no other size, so no 3072-bit figure may appear
    assert not [k for k in result if k.endswith("_3072")]

    heu_available = load_heu()[1] is None
    for key in RATE_KEYS + OTHER_FIGURES:
        value = result[key]
        if value is None:
            assert "heu" in key and not heu_available, f"{key} is null"
            assert result["heu_unavailable_reason"]
        else:
            assert value > 0, f"{key} = {value}"
    if heu_available:
        assert "heu_unavailable_reason" not in result
    # the fixed-base path exists to beat r^n: even a 50 ms cell shows it clearly
    assert result["ours_enc_per_s"] > 2 * result["ours_plain_enc_per_s"]


def test_measure_counts_calls_over_the_wall_time() -> None:
    calls = []
    cell = Cell(lambda: calls.append(None))
    rate = measure({"append": cell}, seconds=0.03)["append"]
    assert cell.elapsed >= 0.03
    assert cell.calls <= len(calls)  # warm-up calls are not counted
    assert rate == pytest.approx(cell.calls / cell.elapsed)


def test_measure_refuses_a_non_positive_time() -> None:
    with pytest.raises(ValueError, match="seconds per cell must be positive"):
        measure({"noop": Cell(lambda: None)}, seconds=0)

"""Smoke test of bench/crypto.py: one quick 2048-bit run yields a complete, positive JSON line."""

from __future__ import annotations

import json
import sys

import pytest

from bench.crypto import Cell, Rates, SizeResult, load_heu, main, measure, render_table, summary

RATE_KEYS = [
    f"{impl}_{op}_per_s" for impl in ("ours", "phe", "heu") for op in ("enc", "dec", "add")
] + ["ours_plain_enc_per_s", "ours_dec_parallel_per_s"]
OTHER_FIGURES = [
    "ours_table_build_s",
    "ours_table_mb",
    "ratio_ours_vs_phe_enc",
    "ratio_ours_vs_heu_enc",
    "ratio_ours_dec_parallel_vs_sequential",
    "ours_dec_parallel_start_s",
]
RUN_KEYS = ["bits", "seconds_per_cell", "python", "cpu", "dec_workers", "dec_parallel_list"]


@pytest.fixture(autouse=True)
def _restore_heu_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    # load_heu pins HEU to one thread through the environment; undo that after each test
    monkeypatch.setenv("YACL_NUM_THREADS", "1")


def test_quick_run_reports_every_figure(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--quick", "--seconds", "0.05", "--bits", "2048", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert "ours, fast (fixed base)" in out
    assert "ours, dec on 2 cores" in out
    result = json.loads(lines[-1])
    assert result["dec_workers"] == 2

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
    calls: list[None] = []
    cell = Cell(lambda: calls.append(None))
    rate = measure({"append": cell}, seconds=0.03)["append"]
    assert cell.elapsed >= 0.03
    assert cell.calls <= len(calls)  # warm-up calls are not counted
    assert rate == pytest.approx(cell.calls / cell.elapsed)


def test_measure_refuses_a_non_positive_time() -> None:
    with pytest.raises(ValueError, match="seconds per cell must be positive"):
        measure({"noop": Cell(lambda: None)}, seconds=0)


def test_missing_heu_is_reported_with_null_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "heu", None)  # as if sf-heu were not installed
    heu_phe, reason = load_heu()
    assert heu_phe is None
    assert reason is not None and "sf-heu" in reason

    size = SizeResult(
        bits=2048,
        ours_fast=Rates(1000.0, 250.0, 100000.0),
        ours_plain=Rates(100.0, None, None),
        phe=Rates(50.0, 250.0, 90000.0),
        heu=None,
        table_build_s=0.5,
        table_bytes=54_000_000,
    )
    result = summary(
        [size], seconds=1.0, heu_reason=reason, load=(0.1, 1.0), cpu_share=1.0, workers=2
    )
    assert result["heu_unavailable_reason"] == reason
    assert result["heu_enc_per_s"] is None
    assert result["ratio_ours_vs_heu_enc"] is None
    assert result["ratio_ours_vs_phe_enc"] == pytest.approx(20.0)
    assert result["ours_table_mb"] == pytest.approx(54.0)
    # a size measured without the multi-core cell reports null, not a made-up figure
    assert result["ours_dec_parallel_per_s"] is None
    assert result["ratio_ours_dec_parallel_vs_sequential"] is None
    json.dumps(result)  # the JSON line must serialise as it is

    table = render_table(
        [size], seconds=1.0, heu_reason=reason, load=(0.1, 0.1), cpu_share=0.5, workers=2
    )
    assert "unavailable" in table and reason in table
    assert "WARNING: this process had the CPU for only 50%" in table


def test_parallel_decryption_figures_reach_the_json_and_the_table() -> None:
    size = SizeResult(
        bits=3072,
        ours_fast=Rates(700.0, 140.0, 90000.0),
        ours_plain=Rates(40.0, None, None),
        phe=Rates(40.0, 140.0, 80000.0),
        heu=Rates(430.0, 90.0, 60000.0),
        table_build_s=1.4,
        table_bytes=121_000_000,
        ours_dec_parallel=273.0,
        dec_parallel_start_s=0.12,
    )
    result = summary(
        [size], seconds=1.0, heu_reason=None, load=(0.1, 0.1), cpu_share=1.0, workers=2
    )
    assert result["ours_dec_parallel_per_s_3072"] == 273.0
    assert result["ratio_ours_dec_parallel_vs_sequential_3072"] == pytest.approx(1.95)
    assert result["ours_dec_parallel_start_s_3072"] == 0.12
    assert result["dec_workers"] == 2
    table = render_table(
        [size], seconds=1.0, heu_reason=None, load=(0.1, 0.1), cpu_share=1.0, workers=2
    )
    assert "ours, dec on 2 cores" in table and "273.0" in table and "1.95×" in table


def test_a_worker_count_below_one_is_refused() -> None:
    with pytest.raises(SystemExit):
        main(["--workers", "0"])

"""Smoke test of the STATS benchmark: 22 node processes, a coordinator and two small cohorts."""

from __future__ import annotations

import json

import pytest

from bench.stats import main


@pytest.mark.slow
def test_stats_benchmark_reports_latencies_and_ratios_as_last_json_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # one warm-up query keeps the nodes below their table threshold: no 23 table builds to wait for
    code = main(["--persons", "200", "--cohorts", "10,50", "--repeat", "2", "--warmup", "1"])

    out = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(out[-1])
    assert code == 0, "\n".join(out)
    assert summary["nodes"] == 22 and summary["persons"] == 200
    assert summary["repeat"] == 2 and summary["epsilon"] == 0.01
    assert summary["cohorts"] == [10, 50]
    for size in (10, 50):
        assert summary[f"stats_{size}_errors"] == 0
        assert 0 < summary[f"stats_{size}_p50_ms"] <= summary[f"stats_{size}_max_ms"]
        assert summary[f"stats_{size}_subjects_per_s"] == pytest.approx(
            size / summary[f"stats_{size}_p50_ms"] * 1000, rel=0.01
        )
        assert summary[f"baseline_{size}_ms"] > 0
        assert summary[f"ratio_{size}"] == pytest.approx(
            summary[f"stats_{size}_p50_ms"] / summary[f"baseline_{size}_ms"], rel=0.01
        )
    # every answer was checked against the plaintext sums, and carried noise
    assert summary["noise_within_guard"] is True
    assert summary["noise_mean_abs_over_scale"] > 0
    # the coordinator's ledger charged the 5 queries of ε 0.01, no more and no less
    assert summary["epsilon_left"] == pytest.approx(summary["policy_epsilon_budget"] - 0.05)
    assert summary["setup_s"] > 0
    assert summary["settled"] is True
    assert summary["clean_shutdown"] is True


def test_a_cohort_larger_than_the_population_is_refused_naming_the_field(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["--persons", "100", "--cohorts", "10,500"])

    assert code == 3
    err = capsys.readouterr().err
    assert "cohorts: cohort size 500 is more than the 100 persons seeded" in err

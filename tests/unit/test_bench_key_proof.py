"""Smoke test of bench/key_proof.py: one quick 2048-bit run gives a complete, positive JSON line."""

from __future__ import annotations

import json

import pytest

from bench.key_proof import main

FIGURES = [
    "check_s",
    "prove_s",
    "verify_s",
    "encrypt_s",
    "verify_with_80_nth_roots_s",
    "proof_bytes",
    "contribute_request_bytes",
    "ratio_check_vs_encrypt",
    "ratio_prove_vs_encrypt",
    "ratio_verify_vs_encrypt",
    "ratio_proof_vs_request_bytes",
]


def test_quick_run_reports_every_figure(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--bits", "2048", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "one encryption" in out
    result = json.loads(out.strip().splitlines()[-1])
    assert result["bits"] == [2048]
    assert (result["proof_rounds"], result["nth_root_rounds"]) == (80, 4)
    for key in FIGURES:
        assert result[key] > 0, key
    assert not [k for k in result if k.endswith("_3072")]
    assert result["proof_bytes"] == 21_781
    # 76 more n-th powers cost more than the whole 4-root verification: a ratio in one run
    assert result["verify_with_80_nth_roots_s"] > 2 * result["verify_s"]

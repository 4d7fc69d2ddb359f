"""Smoke test of the proof benchmark: a small log, every figure present and consistent."""

from __future__ import annotations

import json

import pytest

from bench.audit_proofs import main

REQUIRED_KEYS = {
    "entries",
    "log_bytes",
    "checkpoints",
    "baseline_leaf_hash_us",
    "baseline_read_s",
    "inclusion_proof_bytes_median",
    "inclusion_proof_bytes_max",
    "inclusion_generate_us",
    "inclusion_verify_us",
    "consistency_proof_bytes_median",
    "consistency_proof_bytes_max",
    "consistency_generate_us",
    "consistency_verify_us",
    "verify_log_s",
    "ratio_inclusion_generate_vs_leaf_hash",
    "ratio_inclusion_verify_vs_leaf_hash",
    "ratio_consistency_generate_vs_leaf_hash",
    "ratio_consistency_verify_vs_leaf_hash",
    "ratio_verify_log_vs_read",
}


def test_proof_benchmark_verifies_every_proof_and_reports_json_last(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--entries", "3000", "--samples", "40"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    figures = json.loads(out[-1])
    assert figures.keys() >= REQUIRED_KEYS
    assert figures["entries"] == 3000 and figures["checkpoints"] == 3
    # RFC 9162: an inclusion proof in a tree of 3,000 has 11 or 12 hashes of 32 bytes
    assert 11 * 32 <= figures["inclusion_proof_bytes_median"] <= 12 * 32
    assert figures["consistency_proof_bytes_max"] <= 2 * 12 * 32
    assert figures["ratio_verify_log_vs_read"] == pytest.approx(
        figures["verify_log_s"] / figures["baseline_read_s"], rel=1e-6
    )
    assert figures["ratio_inclusion_verify_vs_leaf_hash"] == pytest.approx(
        figures["inclusion_verify_us"] / figures["baseline_leaf_hash_us"], rel=1e-6
    )

"""Cost of checking a requester's Paillier key: well-formedness checks and the modulus proof.

Measures, per key size, in one run and one thread: the checks every party makes on a key from
outside (`crypto.check_modulus`: gcd with the product of the primes below 2^20, perfect power,
probable prime), making the modulus proof (`keyproof.prove_modulus`, CGGMP21 Π^mod), verifying
it, and one plain Paillier encryption (`PublicKey.encrypt`, one r^n mod n²) as the yardstick
the other figures are divided by. Also the proof's size against a Contribute request without it,
and what verifying would cost with 80 n-th roots instead of 4 (CGGMP21 as printed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gmpy2

from osmanthus.core import crypto
from osmanthus.core.catalogue import load_catalogue
from osmanthus.core.crypto import ALLOWED_KEY_BITS, generate_keypair
from osmanthus.core.encoding import SlotLayout
from osmanthus.core.keyproof import (
    MODULUS_PROOF_ROUNDS,
    NTH_ROOT_ROUNDS,
    prove_modulus,
    verify_modulus_proof,
)
from osmanthus.core.types import QueryId, Shape, SubjectKind
from osmanthus.core.wire.node import ContributionRequest, contribution_request_to_proto

DEFAULT_REPEATS = 15
QUICK_REPEATS = 3


@dataclass(frozen=True)
class SizeResult:
    """Median seconds of each operation at one key size, and the sizes on the wire."""

    bits: int
    check_s: float
    prove_s: float
    verify_s: float
    encrypt_s: float
    nth_power_s: float
    proof_bytes: int
    request_bytes: int

    @property
    def verify_with_80_nth_roots_s(self) -> float:
        """CGGMP21 as printed: 76 more z^n mod n (an estimate from the measured one)."""
        return self.verify_s + (MODULUS_PROOF_ROUNDS - NTH_ROOT_ROUNDS) * self.nth_power_s


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _median_time(operation: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        operation()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _contribute_request_bytes(public_key: bytes, proof: bytes) -> int:
    """A person BREAKDOWN Contribute request as the coordinator sends it, in bytes."""
    layout = SlotLayout.for_catalogue(load_catalogue(), SubjectKind.PERSON, Shape.BREAKDOWN)
    request = ContributionRequest(
        query_id=QueryId("q_" + "0" * 32),
        subject_kind=SubjectKind.PERSON,
        subject_id="320502199001011234",
        shape=Shape.BREAKDOWN,
        purpose="loan_underwriting",
        consent_id="c_" + "0" * 32,
        public_key=public_key,
        slots=layout.names,
        slot_widths=layout.widths,
        modulus_proof=proof,
    )
    return len(contribution_request_to_proto(request).SerializeToString())


def bench_size(bits: int, repeats: int) -> SizeResult:
    _progress(f"{bits} bits: generating a key pair")
    public, private = generate_keypair(bits=bits)
    proof = prove_modulus(private)
    verify_modulus_proof(public, proof)  # correct before it is timed
    crypto._product_of_small_primes()  # built once per process: not part of a check
    n = public.n
    z = gmpy2.mpz(n - 2)
    # the three checks, uncached (check_modulus remembers its verdicts per key)
    cells: dict[str, Callable[[], object]] = {
        "check": lambda: crypto._modulus_defect(n),
        "prove": lambda: prove_modulus(private),
        "verify": lambda: verify_modulus_proof(public, proof),
        "encrypt": lambda: public.encrypt(12345),
        "nth_power": lambda: gmpy2.powmod(z, n, n),
    }
    medians: dict[str, list[float]] = {name: [] for name in cells}
    # the cells take turns, so that other load falls on every figure alike
    per_round = max(1, repeats // 3)
    for _ in range(3):
        for name, operation in cells.items():
            medians[name].append(_median_time(operation, per_round))
    _progress(f"{bits} bits: done")
    figure = {name: statistics.median(values) for name, values in medians.items()}
    return SizeResult(
        bits=bits,
        check_s=figure["check"],
        prove_s=figure["prove"],
        verify_s=figure["verify"],
        encrypt_s=figure["encrypt"],
        nth_power_s=figure["nth_power"],
        proof_bytes=len(proof),
        request_bytes=_contribute_request_bytes(public.to_bytes(), b""),
    )


def summary(results: Sequence[SizeResult], *, repeats: int) -> dict[str, Any]:
    """The JSON line: 2048-bit figures unsuffixed, 3072-bit ones with `_3072`."""
    out: dict[str, Any] = {
        "bits": [r.bits for r in results],
        "repeats": repeats,
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "proof_rounds": MODULUS_PROOF_ROUNDS,
        "nth_root_rounds": NTH_ROOT_ROUNDS,
    }
    for r in results:
        suffix = "" if r.bits == 2048 else f"_{r.bits}"
        out.update(
            {
                f"check_s{suffix}": r.check_s,
                f"prove_s{suffix}": r.prove_s,
                f"verify_s{suffix}": r.verify_s,
                f"encrypt_s{suffix}": r.encrypt_s,
                f"verify_with_80_nth_roots_s{suffix}": r.verify_with_80_nth_roots_s,
                f"proof_bytes{suffix}": r.proof_bytes,
                f"contribute_request_bytes{suffix}": r.request_bytes,
                f"ratio_check_vs_encrypt{suffix}": r.check_s / r.encrypt_s,
                f"ratio_prove_vs_encrypt{suffix}": r.prove_s / r.encrypt_s,
                f"ratio_verify_vs_encrypt{suffix}": r.verify_s / r.encrypt_s,
                f"ratio_proof_vs_request_bytes{suffix}": r.proof_bytes / r.request_bytes,
            }
        )
    return out


def render_table(results: Sequence[SizeResult], *, repeats: int) -> str:
    lines = [
        f"key checks, median of {repeats} runs each, one thread; ratios against one plain "
        "Paillier encryption (r^n mod n²) measured in the same run",
        "",
        f"{'bits':>5}  {'operation':<34} {'time':>10} {'× encryption':>13}",
    ]
    for r in results:
        rows = [
            ("checks (gcd, power, prime)", r.check_s),
            (f"prove (Π^mod, {MODULUS_PROOF_ROUNDS} + {NTH_ROOT_ROUNDS} roots)", r.prove_s),
            ("verify", r.verify_s),
            ("verify with 80 n-th roots (est.)", r.verify_with_80_nth_roots_s),
            ("one encryption", r.encrypt_s),
        ]
        for name, seconds in rows:
            lines.append(
                f"{r.bits:>5}  {name:<34} {seconds * 1000:>8.2f} ms {seconds / r.encrypt_s:>12.1f}×"
            )
        lines.append(
            f"{r.bits:>5}  proof {r.proof_bytes:,} bytes; a Contribute request without it "
            f"{r.request_bytes:,} bytes ({r.proof_bytes / r.request_bytes:.0f}×)"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_REPEATS} runs per operation (a smoke run)"
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help=f"runs per operation (default {DEFAULT_REPEATS})"
    )
    parser.add_argument(
        "--bits",
        type=int,
        choices=ALLOWED_KEY_BITS,
        default=None,
        help="measure this key size only (default: all of them)",
    )
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = QUICK_REPEATS if args.quick else DEFAULT_REPEATS
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = (args.bits,) if args.bits is not None else ALLOWED_KEY_BITS
    results = [bench_size(bits, args.repeats) for bits in sizes]
    print(render_table(results, repeats=args.repeats))
    print(json.dumps(summary(results, repeats=args.repeats)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

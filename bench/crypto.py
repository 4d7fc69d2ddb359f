"""Paillier throughput: ours (fixed-base, plain, multi-core decryption), python-paillier, HEU."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gmpy2
from phe import paillier

from osmanthus.core.crypto import (
    ALLOWED_KEY_BITS,
    FAST_WINDOW_BITS,
    FastEncryptor,
    generate_keypair,
    resolve_workers,
)
from osmanthus.core.errors import CryptoError
from osmanthus.core.workers import ParallelDecryptor

DEFAULT_SECONDS = 3.0
QUICK_SECONDS = 0.5
#: share of each cell's time spent running the operation untimed first (allocator, caches)
WARMUP_FRACTION = 0.1
#: the timed loop reads the clock once per batch of calls lasting about this long, so that
#: clock reads cost nothing measurable even for additions of a few microseconds
BATCH_TARGET_S = 0.005
#: each cell's time is split into this many slices, taken in turn by all cells of a key size
ROUNDS = 3
#: below this share of wall time on the CPU, the run warns that the machine was busy
MIN_CPU_SHARE = 0.95
PHE_ADD_METHOD = "EncryptedNumber.__add__ (exponent 0; phe.util.mulmod mod n², gmpy2)"
HEU_SCHEMA = "ZPaillier"
HEU_INSTALL_HINT = "install the bench extra: .venv/bin/pip install 'sf-heu>=0.5.2b0'"
#: ciphertexts per call of the multi-core decryption cell: the SDK's default batch chunk
#: (sdk.batch.DEFAULT_CIPHERTEXTS_PER_CHUNK), decrypted chunk after chunk by one pool
PARALLEL_LIST = 24


@dataclass(frozen=True)
class Rates:
    """Operations per second of one implementation at one key size (None: not measured)."""

    enc: float | None
    dec: float | None
    add: float | None


@dataclass(frozen=True)
class SizeResult:
    """Every figure measured at one key size."""

    bits: int
    ours_fast: Rates
    ours_plain: Rates
    phe: Rates
    heu: Rates | None
    table_build_s: float
    table_bytes: int
    #: decryptions per second of ParallelDecryptor over lists of PARALLEL_LIST ciphertexts
    ours_dec_parallel: float | None = None
    #: from creating the ParallelDecryptor to its first list decrypted (workers started)
    dec_parallel_start_s: float | None = None
    #: wall and CPU time of this process in the multi-core cell, left out of the CPU share
    multi_core_wall_s: float = 0.0
    multi_core_cpu_s: float = 0.0


class Cell:
    """One operation under measurement; its timed calls and time accumulate over the rounds."""

    def __init__(self, operation: Callable[[], object]) -> None:
        self.operation = operation
        self.calls = 0
        self.elapsed = 0.0
        #: wall and process CPU time over warm-up and runs, for the run's CPU share
        self.wall_s = 0.0
        self.cpu_s = 0.0
        self._batch = 0

    def warm_up(self, seconds: float) -> None:
        """Run untimed for `seconds` (at least once) and size the batch from the pace seen."""
        start, cpu_start = time.perf_counter(), time.process_time()
        calls = 0
        while True:
            self.operation()
            calls += 1
            now = time.perf_counter()
            if now - start >= seconds:
                break
        self._batch = max(1, int(BATCH_TARGET_S / ((now - start) / calls)))
        self.wall_s += now - start
        self.cpu_s += time.process_time() - cpu_start

    def run(self, seconds: float) -> None:
        """Timed calls for at least `seconds` of wall time (overshoot: under one batch)."""
        if self._batch == 0:
            raise RuntimeError("Cell.run before Cell.warm_up: the batch size is not known yet")
        operation, batch = self.operation, self._batch
        start, cpu_start = time.perf_counter(), time.process_time()
        deadline = start + seconds
        while True:
            for _ in range(batch):
                operation()
            self.calls += batch
            now = time.perf_counter()
            if now >= deadline:
                break
        self.elapsed += now - start
        self.wall_s += now - start
        self.cpu_s += time.process_time() - cpu_start

    @property
    def rate(self) -> float:
        return self.calls / self.elapsed


def measure(cells: dict[str, Cell], *, seconds: float, rounds: int = ROUNDS) -> dict[str, float]:
    """Calls per second of each cell over `seconds` of wall time, after a warm-up.

    The cells take turns in `rounds` slices, so that a load change on the machine halfway
    through hits every implementation alike instead of skewing the ratios.
    """
    if seconds <= 0:
        raise ValueError(f"seconds per cell must be positive, got {seconds}")
    for cell in cells.values():
        cell.warm_up(seconds * WARMUP_FRACTION)
    for _ in range(rounds):
        for cell in cells.values():
            cell.run(seconds / rounds)
    return {name: cell.rate for name, cell in cells.items()}


def _check(implementation: str, operation: str, got: int, expected: int) -> None:
    # a fast but wrong implementation must not produce a figure at all
    if got != expected:
        raise CryptoError(
            f"{implementation} {operation} is wrong: decrypted {got}, expected {expected}; "
            "its figures would be meaningless",
            field=implementation,
        )


def _plaintexts(bits: int) -> tuple[int, int]:
    # full-width values, as packed plaintexts are; below 2^(bits-3) so that every key of `bits`
    # bits (n > 2^(bits-1)) takes them, HEU's bound of n/2 included, and their sum cannot wrap
    return secrets.randbits(bits - 3), secrets.randbits(bits - 3)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class FastTable:
    build_s: float
    table_bytes: int


@dataclass(frozen=True)
class Ours:
    """Our cells at one key size, and what they were built with."""

    cells: dict[str, Cell]
    table: FastTable
    decryptor: ParallelDecryptor
    dec_parallel_start_s: float


def cells_ours(bits: int, workers: int) -> Ours:
    """Cells for our fast and plain paths and multi-core decryption, after correctness checks.

    The caller closes the returned decryptor, which holds `workers` processes.
    """
    public, private = generate_keypair(bits=bits)
    m1, m2 = _plaintexts(bits)
    started = time.perf_counter()
    fast = FastEncryptor(public_key=public)
    table = FastTable(build_s=time.perf_counter() - started, table_bytes=fast.table_bytes)
    _check("ours_fast", "encryption", private.decrypt(fast.encrypt(m1)), m1)
    _check("ours_plain", "encryption", private.decrypt(public.encrypt(m1)), m1)
    c1, c2 = fast.encrypt(m1), public.encrypt(m2)
    _check("ours", "addition", private.decrypt(public.add(c1, c2)), m1 + m2)
    _progress(f"  ours: table built in {table.build_s:.2f} s, {table.table_bytes / 1e6:.1f} MB")
    expected = [secrets.randbits(bits - 3) for _ in range(PARALLEL_LIST)]
    batch = [fast.encrypt(m) for m in expected]
    started = time.perf_counter()
    decryptor = ParallelDecryptor(private, workers=workers)
    try:
        got = decryptor.decrypt(batch)
        start_s = time.perf_counter() - started
        for index, (plaintext, m) in enumerate(zip(got, expected, strict=True)):
            _check("ours_dec_parallel", f"decryption of list item {index}", plaintext, m)
    except BaseException:
        decryptor.close()
        raise
    _progress(f"  ours: {workers} decryption workers started in {start_s:.2f} s")
    # decryption and addition do not depend on how the ciphertext was made: measured once
    cells = {
        "ours_fast.enc": Cell(lambda: fast.encrypt(m1)),
        "ours_plain.enc": Cell(lambda: public.encrypt(m1)),
        "ours_fast.dec": Cell(lambda: private.decrypt(c1)),
        "ours_fast.add": Cell(lambda: public.add(c1, c2)),
        # one call decrypts PARALLEL_LIST ciphertexts: its rate is scaled when read
        "ours_parallel.dec": Cell(lambda: decryptor.decrypt(batch)),
    }
    return Ours(cells=cells, table=table, decryptor=decryptor, dec_parallel_start_s=start_s)


def cells_phe(bits: int) -> dict[str, Cell]:
    public, private = paillier.generate_paillier_keypair(n_length=bits)
    m1, m2 = _plaintexts(bits)
    c1 = paillier.EncryptedNumber(public, public.raw_encrypt(m1), 0)
    c2 = paillier.EncryptedNumber(public, public.raw_encrypt(m2), 0)
    raw = c1.ciphertext(be_secure=False)
    _check("phe", "encryption", private.raw_decrypt(raw), m1)
    _check("phe", "addition", private.raw_decrypt((c1 + c2).ciphertext(be_secure=False)), m1 + m2)
    return {
        "phe.enc": Cell(lambda: public.raw_encrypt(m1)),
        "phe.dec": Cell(lambda: private.raw_decrypt(raw)),
        "phe.add": Cell(lambda: c1 + c2),
    }


def load_heu() -> tuple[Any, str | None]:
    """HEU's `phe` module, or None and the reason it cannot be used."""
    # HEU's (yacl's) thread pool sizes itself from this variable when first used; one thread
    # keeps the comparison single-threaded like the others
    os.environ["YACL_NUM_THREADS"] = "1"
    try:
        from heu import phe as heu_phe
    except ImportError as exc:
        return None, f"cannot import heu ({exc}); {HEU_INSTALL_HINT}"
    return heu_phe, None


def cells_heu(heu_phe: Any, bits: int) -> dict[str, Cell]:
    kit = heu_phe.setup(getattr(heu_phe.SchemaType, HEU_SCHEMA), bits)
    encryptor, decryptor, evaluator = kit.encryptor(), kit.decryptor(), kit.evaluator()
    m1, m2 = _plaintexts(bits)
    c1, c2 = encryptor.encrypt_raw(m1), encryptor.encrypt_raw(m2)
    _check("heu", "encryption", decryptor.decrypt_raw(c1), m1)
    _check("heu", "addition", decryptor.decrypt_raw(evaluator.add(c1, c2)), m1 + m2)
    return {
        "heu.enc": Cell(lambda: encryptor.encrypt_raw(m1)),
        "heu.dec": Cell(lambda: decryptor.decrypt_raw(c1)),
        "heu.add": Cell(lambda: evaluator.add(c1, c2)),
    }


def _rates(rates: dict[str, float], implementation: str) -> Rates:
    return Rates(
        enc=rates.get(f"{implementation}.enc"),
        dec=rates.get(f"{implementation}.dec"),
        add=rates.get(f"{implementation}.add"),
    )


def bench_size(bits: int, seconds: float, heu_phe: Any, *, workers: int) -> SizeResult:
    _progress(f"{bits} bits: generating keys and checking every implementation")
    ours = cells_ours(bits, workers)
    with ours.decryptor:
        cells = dict(ours.cells)
        cells.update(cells_phe(bits))
        if heu_phe is not None:
            cells.update(cells_heu(heu_phe, bits))
        _progress(
            f"{bits} bits: measuring {len(cells)} cells, {seconds:g} s each in {ROUNDS} rounds"
        )
        rates = measure(cells, seconds=seconds)
    parallel = ours.cells["ours_parallel.dec"]
    return SizeResult(
        bits=bits,
        ours_fast=_rates(rates, "ours_fast"),
        ours_plain=_rates(rates, "ours_plain"),
        phe=_rates(rates, "phe"),
        heu=_rates(rates, "heu") if heu_phe is not None else None,
        table_build_s=ours.table.build_s,
        table_bytes=ours.table.table_bytes,
        ours_dec_parallel=rates["ours_parallel.dec"] * PARALLEL_LIST,
        dec_parallel_start_s=ours.dec_parallel_start_s,
        multi_core_wall_s=parallel.wall_s,
        multi_core_cpu_s=parallel.cpu_s,
    )


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _ratio(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or theirs is None or theirs <= 0:
        return None
    return ours / theirs


def summary(
    results: Sequence[SizeResult],
    *,
    seconds: float,
    heu_reason: str | None,
    load: tuple[float, float],
    cpu_share: float,
    workers: int,
) -> dict[str, Any]:
    """The JSON line: 2048-bit figures unsuffixed, 3072-bit ones with `_3072`."""
    out: dict[str, Any] = {}
    for r in results:
        sfx = "" if r.bits == 2048 else f"_{r.bits}"
        heu = r.heu if r.heu is not None else Rates(None, None, None)
        for op in ("enc", "dec", "add"):
            out[f"ours_{op}_per_s{sfx}"] = getattr(r.ours_fast, op)
            out[f"phe_{op}_per_s{sfx}"] = getattr(r.phe, op)
            out[f"heu_{op}_per_s{sfx}"] = getattr(heu, op)
        out[f"ours_plain_enc_per_s{sfx}"] = r.ours_plain.enc
        out[f"ours_table_build_s{sfx}"] = r.table_build_s
        out[f"ours_table_mb{sfx}"] = r.table_bytes / 1e6
        for op in ("enc", "dec", "add"):
            ours = getattr(r.ours_fast, op)
            out[f"ratio_ours_vs_phe_{op}{sfx}"] = _ratio(ours, getattr(r.phe, op))
            out[f"ratio_ours_vs_heu_{op}{sfx}"] = _ratio(ours, getattr(heu, op))
        out[f"ratio_ours_fast_vs_plain_enc{sfx}"] = _ratio(r.ours_fast.enc, r.ours_plain.enc)
        out[f"ours_dec_parallel_per_s{sfx}"] = r.ours_dec_parallel
        out[f"ratio_ours_dec_parallel_vs_sequential{sfx}"] = _ratio(
            r.ours_dec_parallel, r.ours_fast.dec
        )
        out[f"ours_dec_parallel_start_s{sfx}"] = r.dec_parallel_start_s
    out.update(
        {
            "bits": [r.bits for r in results],
            "seconds_per_cell": seconds,
            # every cell runs on one thread except multi-core decryption, on dec_workers
            "threads": 1,
            "dec_workers": workers,
            "dec_parallel_list": PARALLEL_LIST,
            "ours_window_bits": FAST_WINDOW_BITS,
            "phe_add_method": PHE_ADD_METHOD,
            "heu_schema": HEU_SCHEMA,
            "python": platform.python_version(),
            "cpu": cpu_model(),
            "cpu_count": os.cpu_count(),
            "loadavg_1min_start": load[0],
            "loadavg_1min_end": load[1],
            "cpu_share": cpu_share,
            "gmpy2_version": gmpy2.version(),
            "phe_version": _version("phe"),
            "heu_version": _version("sf-heu") if heu_reason is None else None,
        }
    )
    if heu_reason is not None:
        out["heu_unavailable_reason"] = heu_reason
    return out


def _fmt(value: float | None) -> str:
    return f"{value:>12,.1f}" if value is not None else f"{'—':>12}"


def _fmt_ratio(value: float | None) -> str:
    return f"{value:>7.2f}×" if value is not None else f"{'n/a':>8}"


def render_table(
    results: Sequence[SizeResult],
    *,
    seconds: float,
    heu_reason: str | None,
    load: tuple[float, float],
    cpu_share: float,
    workers: int,
) -> str:
    lines = [
        f"Paillier, one thread, {seconds:g} s per cell; CPU: {cpu_model()} "
        f"({os.cpu_count()} cores); Python {platform.python_version()}",
        f"CPU share of this process: {cpu_share:.0%} of the single-thread cells' wall time; "
        f"1-minute load average {load[0]:.2f} at start, {load[1]:.2f} at end",
        f"{'bits':>5}  {'implementation':<24}{'enc/s':>12}{'dec/s':>12}{'add/s':>12}",
    ]
    for r in results:
        rows: list[tuple[str, Rates | None]] = [
            ("ours, fast (fixed base)", r.ours_fast),
            ("ours, plain (r^n)", r.ours_plain),
            ("phe (python-paillier)", r.phe),
            (f"HEU {HEU_SCHEMA}", r.heu),
        ]
        for name, rates in rows:
            if rates is None:
                lines.append(f"{r.bits:>5}  {name:<24}{'unavailable':>12}")
                continue
            lines.append(
                f"{r.bits:>5}  {name:<24}{_fmt(rates.enc)}{_fmt(rates.dec)}{_fmt(rates.add)}"
            )
        multi = f"ours, dec on {workers} cores"
        lines.append(f"{r.bits:>5}  {multi:<24}{_fmt(None)}{_fmt(r.ours_dec_parallel)}{_fmt(None)}")
    if cpu_share < MIN_CPU_SHARE:
        lines.append(
            f"WARNING: this process had the CPU for only {cpu_share:.0%} of the time: the "
            "machine was busy, every figure is low and the ratios are less reliable"
        )
    lines.append("")
    lines.append("— ours plain: decryption and addition are the same code as the fast row's.")
    lines.append(f"phe addition: {PHE_ADD_METHOD}.")
    lines.append(
        f"ours dec on {workers} cores: ParallelDecryptor, lists of {PARALLEL_LIST} ciphertexts "
        "(one SDK batch chunk) after the workers have started; every other cell is one thread."
    )
    if heu_reason is not None:
        lines.append(f"HEU unavailable: {heu_reason}")
    lines.append("")
    lines.append(f"{'bits':>5}  {'ours fast / …':<24}{'enc':>8}{'dec':>8}{'add':>8}")
    for r in results:
        heu = r.heu if r.heu is not None else Rates(None, None, None)
        for name, theirs in (("phe", r.phe), ("HEU", heu), ("ours plain", r.ours_plain)):
            cells = "".join(
                _fmt_ratio(_ratio(getattr(r.ours_fast, op), getattr(theirs, op)))
                for op in ("enc", "dec", "add")
            )
            lines.append(f"{r.bits:>5}  {name:<24}{cells}")
        lines.append(
            f"{r.bits:>5}  {'dec: ' + str(workers) + ' cores / 1':<24}{'':>8}"
            f"{_fmt_ratio(_ratio(r.ours_dec_parallel, r.ours_fast.dec))}"
        )
    lines.append("")
    for r in results:
        lines.append(
            f"{r.bits:>5}  fast-path table ({FAST_WINDOW_BITS}-bit windows): built once in "
            f"{r.table_build_s:.2f} s, {r.table_bytes / 1e6:.1f} MB per requester key"
        )
        if r.dec_parallel_start_s is not None:
            lines.append(
                f"{r.bits:>5}  decryption workers: started and first list decrypted in "
                f"{r.dec_parallel_start_s:.2f} s"
            )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_SECONDS:g} s per cell instead of {DEFAULT_SECONDS:g} s (a smoke run)",
    )
    parser.add_argument(
        "--seconds", type=float, default=None, help="wall time per cell (overrides --quick)"
    )
    parser.add_argument(
        "--bits",
        type=int,
        choices=ALLOWED_KEY_BITS,
        default=None,
        help="measure this key size only (default: all of them)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes for multi-core decryption (default: every core this process may use)",
    )
    args = parser.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    if args.seconds is None:
        args.seconds = QUICK_SECONDS if args.quick else DEFAULT_SECONDS
    if args.seconds <= 0:
        parser.error(f"--seconds must be positive, got {args.seconds}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = (args.bits,) if args.bits is not None else ALLOWED_KEY_BITS
    heu_phe, heu_reason = load_heu()
    if heu_reason is not None:
        _progress(f"HEU unavailable: {heu_reason}")
    workers = resolve_workers(args.workers)
    load_start = os.getloadavg()[0]
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    results = [bench_size(bits, args.seconds, heu_phe, workers=workers) for bits in sizes]
    # one busy thread gets a whole core unless something else competes for it; the multi-core
    # cell is left out, since its work is done by other processes while this one waits
    cpu = time.process_time() - cpu_start - sum(r.multi_core_cpu_s for r in results)
    wall = time.perf_counter() - wall_start - sum(r.multi_core_wall_s for r in results)
    cpu_share = cpu / wall
    load = (load_start, os.getloadavg()[0])
    seconds = args.seconds
    print(
        render_table(
            results,
            seconds=seconds,
            heu_reason=heu_reason,
            load=load,
            cpu_share=cpu_share,
            workers=workers,
        )
    )
    line = summary(
        results,
        seconds=seconds,
        heu_reason=heu_reason,
        load=load,
        cpu_share=cpu_share,
        workers=workers,
    )
    print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

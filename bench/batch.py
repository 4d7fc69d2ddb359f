"""Batch scoring end to end: N persons × 22 departments through gRPC and mTLS on loopback.

Seeds N persons into the 22 person-credit departments (in a subprocess, so this process's peak
memory is the client's own), starts each node and the coordinator as its own process, streams
every id through `Client.batch_scores` and reports wall time, values per second (N × 22 encrypted
contributions summed and decrypted) and the peak RSS of every process. Next to it, the time naive
phe would take for the same values (one `phe` encryption per value, measured on a sample in this
run and extrapolated: an estimate, labelled so). The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import phe

from certs import PeerRole, cert_paths, init_platform
from osmanthus.core.catalogue import load_catalogue
from osmanthus.core.errors import InvalidArgument, OsmanthusError
from osmanthus.core.tls import TlsFiles
from osmanthus.core.tokens import TokenIssuer, generate_issuer_keypair
from osmanthus.core.types import Role, Shape, SubjectKind
from osmanthus.demo.launcher import LocalFederation, osmanthus_command
from sdk import Client, load_or_create_keys

SYNC = "sync-1"
PURPOSE = "credit_rescoring"
DEFAULT_SEED = 20261126
#: phe encryptions timed for the naive estimate: enough for a stable mean at ~10 ms each
PHE_SAMPLE = 40
_RSS_SAMPLE_S = 0.5


@dataclass(frozen=True)
class BatchResult:
    persons: int
    departments: int
    shape: Shape
    chunk_size: int
    subjects_per_ciphertext: int
    seed_s: float
    start_s: float
    wall_s: float
    scored: int
    refused: int
    peak_rss_mb: dict[str, float]
    phe_encrypt_s: float
    unclean_exits: dict[str, int | None]

    @property
    def values(self) -> int:
        return self.persons * self.departments

    @property
    def naive_phe_estimate_s(self) -> float:
        return self.values * self.phe_encrypt_s

    def summary(self) -> dict[str, object]:
        nodes = [v for k, v in self.peak_rss_mb.items() if k.startswith("node-")]
        return {
            "persons": self.persons,
            "departments": self.departments,
            "shape": self.shape.value,
            "chunk_size": self.chunk_size,
            "subjects_per_ciphertext": self.subjects_per_ciphertext,
            "wall_s": round(self.wall_s, 2),
            "values_per_s": round(self.values / self.wall_s, 1),
            "subjects_per_s": round(self.persons / self.wall_s, 1),
            "scored": self.scored,
            "refused": self.refused,
            "coordinator_peak_rss_mb": self.peak_rss_mb.get("coordinator"),
            "node_peak_rss_mb_max": max(nodes) if nodes else None,
            "client_peak_rss_mb": self.peak_rss_mb.get("client"),
            "naive_phe_estimate_s": round(self.naive_phe_estimate_s, 1),
            "speedup_vs_naive_phe": round(self.naive_phe_estimate_s / self.wall_s, 1),
            "seed_s": round(self.seed_s, 2),
            "start_s": round(self.start_s, 2),
            "clean_shutdown": not self.unclean_exits,
        }


def _status_kb(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


class PeakRss:
    """Tracks each process's peak resident set: the kernel's VmHWM, sampled until stopped."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._pids = pids
        self._peak_kb: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _sample(self) -> None:
        for name, pid in self._pids.items():
            # VmHWM is the process's own high-water mark, so sampling cannot miss a peak
            kb = _status_kb(pid, "VmHWM")
            if kb is not None:
                self._peak_kb[name] = max(self._peak_kb.get(name, 0), kb)

    def _run(self) -> None:
        while not self._stop.wait(_RSS_SAMPLE_S):
            self._sample()

    def __enter__(self) -> PeakRss:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def megabytes(self) -> dict[str, float]:
        return {name: round(kb / 1024, 1) for name, kb in sorted(self._peak_kb.items())}


def time_phe_encrypt(sample: int = PHE_SAMPLE) -> float:
    """Seconds per `phe` encryption of a small integer at 2048 bits, measured now."""
    public, _ = phe.generate_paillier_keypair(n_length=2048)
    public.encrypt(1)  # first call pays phe's lazy set-up
    start = time.perf_counter()
    for value in range(sample):
        public.encrypt(value)
    return (time.perf_counter() - start) / sample


def _person_ids(subjects_file: Path) -> Iterator[str]:
    with subjects_file.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["subject_kind"] == "person":
                yield row["subject_id"]


def run_benchmark(
    *,
    persons: int,
    shape: Shape = Shape.TOTAL,
    chunk_size: int | None = None,
    decrypt_workers: int | None = None,
    phe_sample: int = PHE_SAMPLE,
    rng_seed: int = DEFAULT_SEED,
    progress: Callable[[str], None] = lambda _msg: None,
) -> BatchResult:
    if persons < 1:
        raise InvalidArgument(f"must be 1 or more, got {persons}", field="persons")
    catalogue = load_catalogue()
    person_depts = [d.id for d in catalogue.departments_for(SubjectKind.PERSON)]
    with tempfile.TemporaryDirectory(prefix="osmanthus-bench-batch-") as tmp:
        work = Path(tmp)
        progress(f"seeding {persons} persons into the {len(person_depts)} person departments")
        t_seed = time.perf_counter()
        subprocess.run(
            osmanthus_command(
                "seed",
                "--out", str(work / "data"),
                "--persons", str(persons),
                "--enterprises", "0",
                "--seed", str(rng_seed),
                "--quiet",
                "--no-scene",
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        seed_s = time.perf_counter() - t_seed
        certs = work / "certs"
        init_platform(certs, departments=person_depts, requesters=[SYNC])
        issuer_dir = work / "issuer"
        generate_issuer_keypair(issuer_dir / "issuer.key", issuer_dir / "issuer.pub")
        keys = load_or_create_keys(work / "keys" / f"{SYNC}.key")
        token = TokenIssuer.from_file(issuer_dir / "issuer.key").issue(
            requester=SYNC,
            role=Role.SYNC_JOB,
            purposes=[PURPOSE],
            key_fingerprint=keys.fingerprint,
            ttl=timedelta(hours=12),
        )
        federation = LocalFederation(
            data_dir=work / "data",
            certs_dir=certs,
            issuer_public_key=issuer_dir / "issuer.pub",
            run_dir=work / "run",
            departments=person_depts,
        )
        codes: dict[str, int | None] = {}
        try:
            progress(f"starting {len(person_depts)} nodes and the coordinator")
            t_start = time.perf_counter()
            target = f"127.0.0.1:{federation.start()}"
            start_s = time.perf_counter() - t_start
            tls = TlsFiles.from_cert_paths(cert_paths(certs, role=PeerRole.REQUESTER, name=SYNC))
            pids = {f"node-{name}": p.popen.pid for name, p in federation.nodes.items()}
            assert federation.coordinator is not None
            pids["coordinator"] = federation.coordinator.popen.pid
            pids["client"] = os.getpid()
            with Client(target, tls=tls, token=token, keys=keys, catalogue=catalogue) as client:
                client.register_key()
                per = client.subjects_per_ciphertext(SubjectKind.PERSON, shape)
                size = chunk_size or per * 24
                progress(
                    f"scoring {persons} persons ({shape.value}, {per} per ciphertext, "
                    f"{size} per chunk)"
                )
                scored = refused = 0
                with PeakRss(pids) as rss:
                    t0 = time.perf_counter()
                    for row in client.batch_scores(
                        _person_ids(work / "data" / "subjects.csv"),
                        purpose=PURPOSE,
                        shape=shape,
                        chunk_size=size,
                        decrypt_workers=decrypt_workers,
                    ):
                        if row.refused is None:
                            scored += 1
                        else:
                            refused += 1
                    wall_s = time.perf_counter() - t0
        finally:
            codes = federation.stop()
    progress(f"timing {phe_sample} naive phe encryptions for the estimate")
    phe_s = time_phe_encrypt(phe_sample)
    return BatchResult(
        persons=persons,
        departments=len(person_depts),
        shape=shape,
        chunk_size=size,
        subjects_per_ciphertext=per,
        seed_s=seed_s,
        start_s=start_s,
        wall_s=wall_s,
        scored=scored,
        refused=refused,
        peak_rss_mb=rss.megabytes(),
        phe_encrypt_s=phe_s,
        unclean_exits={name: code for name, code in codes.items() if code != 0},
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.batch",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--persons", type=int, default=100_000, help="persons to score")
    parser.add_argument("--shape", choices=["total", "breakdown"], default="total")
    parser.add_argument(
        "--chunk-size", type=int, help="subjects per chunk (default: 24 ciphertexts)"
    )
    parser.add_argument(
        "--decrypt-workers", type=int, help="decryption processes (default: all cores)"
    )
    parser.add_argument("--phe-sample", type=int, default=PHE_SAMPLE, help="phe encryptions timed")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def progress(text: str) -> None:
        print(f"[{datetime.now(UTC):%H:%M:%S}] {text}", file=sys.stderr, flush=True)

    try:
        result = run_benchmark(
            persons=args.persons,
            shape=Shape(args.shape),
            chunk_size=args.chunk_size,
            decrypt_workers=args.decrypt_workers,
            phe_sample=args.phe_sample,
            progress=progress,
        )
    except OsmanthusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    s = result.summary()
    print(f"persons × departments     {result.persons} × {result.departments} = "
          f"{result.values} values")  # fmt: skip
    print(f"wall time                 {s['wall_s']} s ({s['values_per_s']} values/s, "
          f"{s['subjects_per_s']} persons/s)")  # fmt: skip
    print(f"scored / refused          {result.scored} / {result.refused}")
    print(f"packing                   {result.subjects_per_ciphertext} persons per ciphertext, "
          f"{result.chunk_size} per chunk")  # fmt: skip
    for name, mb in result.peak_rss_mb.items():
        print(f"peak RSS {name:<17} {mb} MB")
    print(f"naive phe (ESTIMATE)      {s['naive_phe_estimate_s']} s: {result.values} × "
          f"{result.phe_encrypt_s * 1000:.1f} ms per phe encryption, measured on "
          f"{args.phe_sample} in this run")  # fmt: skip
    print(f"speed-up vs naive phe     {s['speedup_vs_naive_phe']}× (estimate)")
    print(json.dumps(s))
    return 0 if not result.unclean_exits and not result.refused else 1


if __name__ == "__main__":
    raise SystemExit(main())

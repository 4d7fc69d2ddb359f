"""The audit log's appends with and without its Merkle tree, fsynced, in the same run.

Times N appends shared by T threads (group commit: one write and one fsync per batch) into a
fresh `AuditLog` with `tree=False` (the JSON-lines log as it was before the tree) and with the
tree (`tree=True`, the default: each batch's leaves are appended to the tree files, unsynced,
after the log's fsync). The two variants take turns for `--rounds` rounds in fresh directories,
so that other load falls on both alike; a figure is the median over the rounds of appends
divided by wall time. The ratio is baseline appends/s over tree appends/s (the issue's aim:
at most 1.5).

Then, on the last round's log with its tree: the time to reopen it (a clean restart: the log's
lines are counted, one line is hashed), to rebuild the tree after its files are deleted, and to
compute a root, an inclusion proof and a consistency proof, with the proofs' sizes; the root is
checked against `merkle.root_of` of the file's lines and every proof is verified. The last line
printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from osmanthus.core import merkle
from osmanthus.core.audit import TREE_SUFFIX, AuditEntry, AuditLog, load_or_create_salt


def _entry(log: AuditLog, n: int) -> AuditEntry:
    return AuditEntry(
        time=datetime.now(UTC),
        query_id=f"q_{n:012d}",
        requester="bank-of-suzhou",
        purpose="loan_underwriting",
        consent_id="cns_abcdefghijklmnopqrstuv",
        policy_hash="ab" * 32,
        decision="allow",
        reason="permitted by central-loan-underwriting",
        shape="breakdown",
        subject_hash=log.subject_hash(f"3205051990{n:08d}"),
        extra={"ciphertexts_received": 22, "ciphertext_bytes": 11264},
    )


def _run(directory: Path, *, tree: bool, entries: int, threads: int) -> tuple[float, Path]:
    """Seconds for `entries` appends from `threads` threads into a fresh log."""
    salt = load_or_create_salt(directory / "audit.salt")
    path = directory / "audit.jsonl"
    with AuditLog(path=path, salt=salt, tree=tree) as log:
        share = [list(range(t, entries, threads)) for t in range(threads)]
        start = threading.Barrier(threads + 1)

        def writer(numbers: list[int]) -> None:
            start.wait()
            for n in numbers:
                log.append(_entry(log, n))

        workers = [threading.Thread(target=writer, args=(numbers,)) for numbers in share]
        for worker in workers:
            worker.start()
        start.wait()
        began = time.perf_counter()
        for worker in workers:
            worker.join()
        elapsed = time.perf_counter() - began
        if tree and log.tree_size != entries:
            raise SystemExit(f"the tree has {log.tree_size} leaves after {entries} appends")
    return elapsed, path


def _timed(fn: Any, repeat: int) -> tuple[float, Any]:
    began = time.perf_counter()
    result = None
    for _ in range(repeat):
        result = fn()
    return (time.perf_counter() - began) / repeat, result


def _tree_figures(path: Path) -> dict[str, Any]:
    salt = load_or_create_salt(path.parent / "audit.salt")
    lines = path.read_bytes().split(b"\n")[:-1]
    began = time.perf_counter()
    log = AuditLog(path=path, salt=salt)
    reopen_s = time.perf_counter() - began
    log.close()
    for level in path.parent.glob(path.name + TREE_SUFFIX + ".*"):
        level.unlink()
    logging.disable(logging.WARNING)  # the rebuild's warning is expected here
    began = time.perf_counter()
    log = AuditLog(path=path, salt=salt)
    rebuild_s = time.perf_counter() - began
    logging.disable(logging.NOTSET)
    with log:
        size = log.tree_size
        root = log.root()
        if root != merkle.root_of(lines):
            raise SystemExit("the tree's root is not the RFC 6962 root of the log's lines")
        index, old = size // 3, size // 2 + 1
        root_s, _ = _timed(log.root, 200)
        inclusion_s, inclusion = _timed(lambda: log.inclusion_proof(index, size), 200)
        consistency_s, consistency = _timed(lambda: log.consistency_proof(old, size), 200)
        merkle.verify_inclusion(index, size, merkle.leaf_hash(lines[index]), inclusion, root)
        merkle.verify_consistency(old, size, log.root(old), root, consistency)
    return {
        "tree_leaves": size,
        "reopen_ms": reopen_s * 1e3,
        "rebuild_ms": rebuild_s * 1e3,
        "root_us": root_s * 1e6,
        "inclusion_proof_us": inclusion_s * 1e6,
        "inclusion_proof_hashes": len(inclusion),
        "consistency_proof_us": consistency_s * 1e6,
        "consistency_proof_hashes": len(consistency),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to put the logs (default: the temp dir)"
    )
    args = parser.parse_args(argv)
    cpu_began, wall_began = time.process_time(), time.perf_counter()
    seconds: dict[str, list[float]] = {"baseline": [], "tree": []}
    last_path: Path | None = None
    with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
        for round_n in range(args.rounds):
            # alternate which variant goes first
            order = ("baseline", "tree") if round_n % 2 == 0 else ("tree", "baseline")
            for variant in order:
                directory = Path(scratch) / f"{variant}-{round_n}"
                directory.mkdir()
                elapsed, path = _run(
                    directory,
                    tree=variant == "tree",
                    entries=args.entries,
                    threads=args.threads,
                )
                seconds[variant].append(elapsed)
                if variant == "tree":
                    last_path = path
                print(
                    f"round {round_n + 1}/{args.rounds} {variant:8} "
                    f"{args.entries / elapsed:10,.0f} appends/s",
                    file=sys.stderr,
                )
        assert last_path is not None
        tree = _tree_figures(last_path)
    cpu_share = (time.process_time() - cpu_began) / (time.perf_counter() - wall_began)
    rates = {k: args.entries / statistics.median(v) for k, v in seconds.items()}
    ratio = rates["baseline"] / rates["tree"]
    print(
        f"audit log appends, {args.entries:,} entries from {args.threads} threads, fsynced, "
        f"median of {args.rounds} rounds (CPU share {cpu_share:.0%})"
    )
    print(f"  without the tree (baseline)  {rates['baseline']:12,.0f} appends/s")
    print(f"  with the Merkle tree         {rates['tree']:12,.0f} appends/s")
    print(f"  cost of the tree             {ratio:12.2f}x (aim: at most 1.5x)")
    print(f"tree of {tree['tree_leaves']:,} leaves")
    print(f"  clean reopen                 {tree['reopen_ms']:12.1f} ms")
    print(f"  rebuild from the log         {tree['rebuild_ms']:12.1f} ms")
    print(f"  root                         {tree['root_us']:12.1f} us")
    print(
        f"  inclusion proof              {tree['inclusion_proof_us']:12.1f} us "
        f"({tree['inclusion_proof_hashes']} hashes)"
    )
    print(
        f"  consistency proof            {tree['consistency_proof_us']:12.1f} us "
        f"({tree['consistency_proof_hashes']} hashes)"
    )
    figures = {
        "entries": args.entries,
        "threads": args.threads,
        "rounds": args.rounds,
        "baseline_appends_per_s": rates["baseline"],
        "tree_appends_per_s": rates["tree"],
        "ratio": ratio,
        "baseline_seconds": seconds["baseline"],
        "tree_seconds": seconds["tree"],
        "cpu_share": cpu_share,
        **tree,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

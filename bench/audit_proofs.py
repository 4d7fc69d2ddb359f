"""Proof sizes and times, and `audit verify`'s replay, on an audit log of 10⁶ entries.

Builds a log of `--entries` realistic audit lines (AuditEntry.to_json, as nodes write them, with
a salted subject hash), its Merkle tree (`AuditLog` hashes the lines into its tree files on
opening, as a node does after a restart with no tree), and a signed checkpoint every 1,000
entries (`<log>.checkpoints`, `<log>.checkpoint`, Ed25519 C2SP notes). Then, in the same run:

- baselines: one SHA-256 leaf hash of a typical entry (`merkle.leaf_hash`), and one plain
  sequential read of the whole log, line by line (what any replay must at least do);
- inclusion proofs of `--samples` random entries in the whole tree, and consistency proofs from
  `--samples` random older sizes to the whole tree, each generated from the tree files
  (`AuditLog.inclusion_proof` / `consistency_proof`) and verified (`merkle.verify_inclusion` /
  `verify_consistency`); a figure is the median per proof, its size the proof's bytes
  (32 per hash; median and largest);
- `verify_log` over the whole log and its checkpoints (what `osmanthus audit verify` runs).

Each time is also given as a ratio against a baseline: proof times against one leaf hash,
verify_log against the plain read. Every proof must verify and verify_log must pass, or the run
stops. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import logging
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from osmanthus.core import merkle
from osmanthus.core.audit import AuditEntry, AuditLog, load_or_create_salt
from osmanthus.core.checkpoints import SignedCheckpoint, history_path, latest_path, verify_log
from osmanthus.core.signednote import Checkpoint, NoteSigner, NoteVerifier

ORIGIN = "housing.node.osmanthus/audit"
CHECKPOINT_EVERY = 1000
#: hashes per timed batch of the leaf-hash baseline
_BASELINE_BATCH = 10_000
_REQUESTERS = ("bank-of-suzhou", "suzhou-insurance", "platform-sync", "portal-1")
_PURPOSES = ("loan_underwriting", "insurance_underwriting", "provincial_sync", "self_query")


def _write_log(path: Path, entries: int, salt: bytes, progress: Callable[[int], None]) -> None:
    """`entries` lines as nodes write them, in bulk (appending is bench/audit.py's subject)."""
    started = datetime(2026, 11, 1, tzinfo=UTC)
    keyed = hmac.new(salt, digestmod=hashlib.sha256)

    def subject_hash(subject: str) -> str:  # AuditLog.subject_hash, without opening a log
        mac = keyed.copy()
        mac.update(subject.encode("utf-8"))
        return mac.hexdigest()

    rng = random.Random(17)
    with path.open("wb") as handle:
        handle.truncate(0)
        chunk: list[bytes] = []
        for n in range(entries):
            allowed = rng.random() < 0.9
            entry = AuditEntry(
                time=started + timedelta(seconds=n * 3),
                query_id=f"q_{n:012d}",
                requester=_REQUESTERS[n % len(_REQUESTERS)],
                purpose=_PURPOSES[n % len(_PURPOSES)],
                consent_id=f"cns_{n:022d}",
                policy_hash="ab" * 32,
                decision="allow" if allowed else "deny",
                reason="permitted by central-loan-underwriting"
                if allowed
                else "PermissionDenied: no consent in force for this purpose",
                shape="breakdown",
                subject_hash=subject_hash(f"3205051990{n % 100_000_000:08d}"),
                extra={"ciphertexts_received": 22, "ciphertext_bytes": 11264},
            )
            chunk.append(entry.to_json().encode("ascii") + b"\n")
            if len(chunk) == 10_000:
                handle.write(b"".join(chunk))
                progress(len(chunk))
                chunk = []
        handle.write(b"".join(chunk))
        progress(len(chunk))
    path.chmod(0o600)


def _checkpoints(log: AuditLog, signer: NoteSigner) -> int:
    """A signed checkpoint every CHECKPOINT_EVERY entries and one of the whole log."""
    size = log.tree_size
    sizes = [*range(CHECKPOINT_EVERY, size, CHECKPOINT_EVERY), size]
    history = history_path(log.path)
    with history.open("w", encoding="ascii") as handle:
        for at in sizes:
            checkpoint = Checkpoint(origin=ORIGIN, size=at, root_hash=log.root(at))
            signed = SignedCheckpoint(checkpoint=checkpoint, note=signer.sign(checkpoint.body()))
            handle.write(signed.record() + "\n")
    history.chmod(0o600)
    latest_path(log.path).write_bytes(signed.note)
    latest_path(log.path).chmod(0o600)
    return len(sizes)


def _median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    began = time.perf_counter()
    result = fn()
    return time.perf_counter() - began, result


def _leaf_hash_s(line: bytes, rounds: int = 5) -> float:
    """Median seconds of one leaf hash of `line`, over `rounds` batches."""
    times = []
    for _ in range(rounds):
        began = time.perf_counter()
        for _ in range(_BASELINE_BATCH):
            merkle.leaf_hash(line)
        times.append((time.perf_counter() - began) / _BASELINE_BATCH)
    return statistics.median(times)


def _read_s(path: Path) -> float:
    """Seconds for one sequential read of the log, line by line, touching every line."""
    began = time.perf_counter()
    total = 0
    with path.open("rb") as handle:
        for raw in handle:
            total += len(raw)
    if total != path.stat().st_size:
        raise SystemExit("the plain read did not read the whole log")
    return time.perf_counter() - began


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000, help="entries in the log")
    parser.add_argument("--samples", type=int, default=1000, help="random proofs of each kind")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the log")
    parser.add_argument("--seed", type=int, default=1, help="seed of the random indices")
    args = parser.parse_args(argv)
    if args.entries < 2 or args.samples < 1:
        parser.error("--entries must be at least 2 and --samples at least 1")
    rng = random.Random(args.seed)
    cpu_began, wall_began = time.process_time(), time.perf_counter()
    signer = NoteSigner(name=ORIGIN, private_key=Ed25519PrivateKey.generate())
    verifier = NoteVerifier(name=ORIGIN, public_key=signer.public_key)
    with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
        directory = Path(scratch)
        path = directory / "audit.jsonl"
        salt = load_or_create_salt(directory / "audit.salt")
        written = [0]

        def progress(n: int) -> None:
            written[0] += n
            if written[0] % 100_000 == 0 or written[0] == args.entries:
                print(f"writing {written[0]:,}/{args.entries:,} entries", file=sys.stderr)

        _write_log(path, args.entries, salt, progress)
        print("hashing the log into its tree", file=sys.stderr)
        logging.disable(logging.WARNING)  # "rebuilding the tree" is what is wanted here
        tree_s, log = _timed(lambda: AuditLog(path=path, salt=salt))
        logging.disable(logging.NOTSET)
        with log:
            size = log.tree_size
            if size != args.entries:
                raise SystemExit(f"the tree holds {size} leaves, not {args.entries}")
            checkpoints = _checkpoints(log, signer)
            root = log.root()
            indices = [rng.randrange(size) for _ in range(args.samples)]
            olds = [rng.randrange(1, size) for _ in range(args.samples)]
            # only the lines the proofs need: the whole log may not fit in memory
            wanted = {*indices, size // 2}
            lines: dict[int, bytes] = {}
            with path.open("rb") as handle:
                for number, raw in enumerate(handle):
                    if number in wanted:
                        lines[number] = raw.rstrip(b"\n")
            typical = lines[size // 2]

            print("timing the baselines", file=sys.stderr)
            hash_s = _leaf_hash_s(typical)
            read_s = statistics.median(_read_s(path) for _ in range(3))

            print(f"timing {args.samples} inclusion proofs", file=sys.stderr)
            inclusion_gen: list[float] = []
            inclusion_ver: list[float] = []
            inclusion_bytes: list[int] = []
            for index in indices:
                began = time.perf_counter()
                proof = log.inclusion_proof(index, size)
                inclusion_gen.append(time.perf_counter() - began)
                leaf = merkle.leaf_hash(lines[index])
                began = time.perf_counter()
                merkle.verify_inclusion(index, size, leaf, proof, root)
                inclusion_ver.append(time.perf_counter() - began)
                inclusion_bytes.append(len(proof) * merkle.HASH_BYTES)

            print(f"timing {args.samples} consistency proofs", file=sys.stderr)
            consistency_gen: list[float] = []
            consistency_ver: list[float] = []
            consistency_bytes: list[int] = []
            for old in olds:
                began = time.perf_counter()
                proof = log.consistency_proof(old, size)
                consistency_gen.append(time.perf_counter() - began)
                old_root = log.root(old)
                began = time.perf_counter()
                merkle.verify_consistency(old, size, old_root, root, proof)
                consistency_ver.append(time.perf_counter() - began)
                consistency_bytes.append(len(proof) * merkle.HASH_BYTES)
        del lines

        print("replaying the log with verify_log", file=sys.stderr)
        verify_s, report = _timed(lambda: verify_log(path, [verifier], origin=ORIGIN))
        if not report.ok or report.entries != size or report.checkpoints != checkpoints:
            raise SystemExit(f"verify_log did not pass: {report}")
        log_bytes = path.stat().st_size
    cpu_share = (time.process_time() - cpu_began) / (time.perf_counter() - wall_began)

    figures: dict[str, Any] = {
        "entries": size,
        "log_bytes": log_bytes,
        "checkpoints": checkpoints,
        "samples": args.samples,
        "tree_build_s": tree_s,
        "baseline_leaf_hash_us": hash_s * 1e6,
        "baseline_read_s": read_s,
        "inclusion_proof_bytes_median": statistics.median(inclusion_bytes),
        "inclusion_proof_bytes_max": max(inclusion_bytes),
        "inclusion_generate_us": _median_us(inclusion_gen),
        "inclusion_verify_us": _median_us(inclusion_ver),
        "consistency_proof_bytes_median": statistics.median(consistency_bytes),
        "consistency_proof_bytes_max": max(consistency_bytes),
        "consistency_generate_us": _median_us(consistency_gen),
        "consistency_verify_us": _median_us(consistency_ver),
        "verify_log_s": verify_s,
        "cpu_share": cpu_share,
    }
    for key in (
        "inclusion_generate",
        "inclusion_verify",
        "consistency_generate",
        "consistency_verify",
    ):
        figures[f"ratio_{key}_vs_leaf_hash"] = (
            figures[f"{key}_us"] / figures["baseline_leaf_hash_us"]
        )
    figures["ratio_verify_log_vs_read"] = verify_s / read_s
    figures["verify_log_entries_per_s"] = size / verify_s

    print(
        f"audit log of {size:,} entries ({log_bytes / 1e6:,.0f} MB), {checkpoints:,} checkpoints, "
        f"{args.samples} random proofs of each kind (CPU share {cpu_share:.0%})"
    )
    print(f"  baseline: one leaf hash      {figures['baseline_leaf_hash_us']:10.2f} us")
    print(f"  baseline: read the log       {read_s:10.2f} s")
    print(f"  tree built from the log      {tree_s:10.2f} s")
    for kind in ("inclusion", "consistency"):
        print(
            f"  {kind:11} proof  {figures[f'{kind}_proof_bytes_median']:6.0f} B median, "
            f"{figures[f'{kind}_proof_bytes_max']:5d} B max; generate "
            f"{figures[f'{kind}_generate_us']:8.1f} us "
            f"({figures[f'ratio_{kind}_generate_vs_leaf_hash']:6.1f}x a leaf hash), verify "
            f"{figures[f'{kind}_verify_us']:7.1f} us "
            f"({figures[f'ratio_{kind}_verify_vs_leaf_hash']:5.1f}x)"
        )
    print(
        f"  verify_log (audit verify)    {verify_s:10.2f} s "
        f"({figures['ratio_verify_log_vs_read']:.1f}x the plain read, "
        f"{figures['verify_log_entries_per_s']:,.0f} entries/s)"
    )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`policy diff` of the shipped central policy: rule steps against deciding every request.

Times, in one process and one run, `osmanthus.core.policy_diff.diff` (each rule taken apart into
the steps Cedar evaluates, each step's outcome remembered for the facts it reads) and
`diff_every_request` (every request of the matrix decided whole by both engines, in Cedar
batches: what `diff` did before), on three changes of policies/central.cedar: none, a widened
permit (a role added) and a removed permit. Both must report the very same changes, or the
script stops with exit 1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

from osmanthus.core.policy import PolicyEngine
from osmanthus.core.policy_diff import PolicyDiff, diff, diff_every_request

CENTRAL = Path(__file__).resolve().parents[1] / "policies" / "central.cedar"
#: below this share of the wall time on the CPU, the machine was busy and every figure is low
MIN_CPU_SHARE = 0.95


def _cases(text: str) -> dict[str, str]:
    """The new policy of each case; the old one is always `text`."""
    widened = text.replace(
        '["bank", "credit_agency"].contains(principal.role)',
        '["bank", "credit_agency", "library"].contains(principal.role)',
    )
    start = text.index('@id("central-court-enforcement")')
    removed = text[:start] + text[text.index("};", start) + 2 :]
    return {"same": text, "widened": widened, "removed": removed}


def _timed(
    fn: Callable[[PolicyEngine, PolicyEngine], PolicyDiff], old: PolicyEngine, new: PolicyEngine
) -> tuple[float, PolicyDiff]:
    start = time.perf_counter()
    result = fn(old, new)
    return time.perf_counter() - start, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--policy", type=Path, default=CENTRAL, help="the old policy")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of the fast diff")
    parser.add_argument(
        "--no-every-request",
        action="store_true",
        help="skip the slow path (about 20 s a case here): no ratio, no cross-check",
    )
    args = parser.parse_args(argv)
    text = args.policy.read_text(encoding="utf-8")
    old = PolicyEngine(source=text, origin=str(args.policy))
    figures: dict[str, object] = {"policy": str(args.policy), "repeat": args.repeat}
    load_start = os.getloadavg()[0]
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    rows = []
    for name, source in _cases(text).items():
        new = PolicyEngine(source=source, origin=name)
        times = []
        for run in range(args.repeat):
            print(f"{name}: fast diff, run {run + 1} of {args.repeat} …", file=sys.stderr)
            seconds, fast = _timed(diff, old, new)
            times.append(seconds)
        every_s: float | None = None
        if not args.no_every_request:
            print(f"{name}: every request decided whole …", file=sys.stderr)
            every_s, slow = _timed(diff_every_request, old, new)
            if slow != fast:
                print(f"error: {name}: the two paths report different changes", file=sys.stderr)
                return 1
        fast_s = statistics.median(times)
        figures |= {
            f"{name}_requests": fast.requests,
            f"{name}_changes": len(fast.changes),
            f"{name}_fast_s": round(fast_s, 3),
            f"{name}_fast_min_s": round(min(times), 3),
            f"{name}_every_request_s": round(every_s, 3) if every_s is not None else None,
            f"{name}_ratio": round(every_s / fast_s, 1) if every_s is not None else None,
        }
        rows.append((name, fast.requests, len(fast.changes), fast_s, min(times), every_s))
    wall = time.perf_counter() - wall_start
    cpu_share = (time.process_time() - cpu_start) / wall
    figures |= {
        "cpu_share": round(cpu_share, 3),
        "loadavg_1min_start": load_start,
        "loadavg_1min_end": os.getloadavg()[0],
        "python": platform.python_version(),
        "cedarpy": version("cedarpy"),
        "cpu": platform.processor() or platform.machine(),
    }

    print(f"policy diff of {args.policy} (old) against each new policy; one thread")
    print(f"CPU share of this process: {cpu_share:.0%} of the wall time")
    if cpu_share < MIN_CPU_SHARE:
        print("WARNING: the machine was busy: every figure is low, the ratios less so")
    print(
        f"{'new policy':<10} {'requests':>9} {'changes':>8} {'fast p50':>9} {'fast min':>9} "
        f"{'every request':>14} {'ratio':>7}"
    )
    for name, requests, changes, fast_s, fast_min, every_s in rows:
        whole = f"{every_s:13.2f}s" if every_s is not None else f"{'—':>14}"
        ratio = f"{every_s / fast_s:6.1f}×" if every_s is not None else f"{'—':>7}"
        print(
            f"{name:<10} {requests:>9} {changes:>8} {fast_s:8.2f}s {fast_min:8.2f}s {whole} {ratio}"
        )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

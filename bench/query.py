"""Single-query latency and throughput of person queries through a real local federation."""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from certs import PeerRole, cert_paths, init_platform
from osmanthus.core.catalogue import load_catalogue
from osmanthus.core.crypto import DEFAULT_TABLE_AFTER_USES
from osmanthus.core.errors import InvalidArgument, OsmanthusError
from osmanthus.core.tls import TlsFiles
from osmanthus.core.tokens import TokenIssuer, generate_issuer_keypair
from osmanthus.core.types import Role, Shape, SubjectKind
from osmanthus.demo.launcher import LocalFederation
from osmanthus.demo.seed import seed
from sdk import Client, PersonScore, ThresholdResult, load_or_create_keys

AGENCY = "agency-1"
REGISTRAR = "registrar"
PURPOSE = "loan_underwriting"
DEFAULT_SEED = 20261126
#: the shapes a credit agency is granted for consented loan underwriting
SHAPE_NAMES = {"breakdown": Shape.BREAKDOWN, "total": Shape.TOTAL, "threshold": Shape.THRESHOLD}
#: the score a THRESHOLD query asks about: the source's library deposit waiver line, which
#: makes 91 zero tests (110..200), the most a realistic threshold needs
THRESHOLD = 110
_TOKEN_TTL = timedelta(hours=12)
#: enough untimed queries for every node to start building its fixed-base table for the key
DEFAULT_WARMUP = DEFAULT_TABLE_AFTER_USES + 4
#: the node and coordinator processes count as idle below this share of one core, all together
_IDLE_CPU_SHARE = 0.10
_IDLE_SAMPLE_S = 0.5
_IDLE_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class LatencyStats:
    """Latencies of the successful timed queries of one shape, and the run's throughput."""

    shape: Shape
    ok: int
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    wall_s: float

    @property
    def qps(self) -> float:
        return self.ok / self.wall_s if self.wall_s > 0 else 0.0


@dataclass(frozen=True)
class BenchResult:
    nodes: int
    persons: int
    consented: int
    queries: int
    concurrency: int
    setup_s: float
    warmup_s: float
    #: whether the servers were seen idle (tables built) before timing started
    settled: bool
    stats: dict[Shape, LatencyStats]
    #: first few error messages of failed or partial queries, for the operator
    error_samples: tuple[str, ...] = ()
    #: processes whose exit code on shutdown was not 0, by name
    unclean_exits: dict[str, int | None] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        return sum(s.errors for s in self.stats.values())

    def summary(self) -> dict[str, object]:
        """The machine-readable line: figures of shapes not measured are null."""
        out: dict[str, object] = {
            "nodes": self.nodes,
            "persons": self.persons,
            "consented": self.consented,
            "queries": self.queries,
            "concurrency": self.concurrency,
            "setup_s": round(self.setup_s, 2),
            "warmup_s": round(self.warmup_s, 2),
            "settled": self.settled,
        }
        for name, shape in SHAPE_NAMES.items():
            s = self.stats.get(shape)
            out[f"{name}_ok"] = None if s is None else s.ok
            out[f"{name}_errors"] = None if s is None else s.errors
            for key in ("p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms", "qps"):
                # JSON has no NaN: a shape not run, or with no successful query, has no figures
                value = None if s is None or s.ok == 0 else getattr(s, key)
                out[f"{name}_{key}"] = None if value is None else round(value, 2)
        out["clean_shutdown"] = not self.unclean_exits
        return out


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]) of values sorted ascending."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {q}")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def _stats(shape: Shape, latencies_s: list[float], errors: int, wall_s: float) -> LatencyStats:
    ms = sorted(x * 1000 for x in latencies_s)
    if not ms:
        nan = float("nan")
        return LatencyStats(shape, 0, errors, nan, nan, nan, nan, nan, wall_s)
    return LatencyStats(
        shape=shape,
        ok=len(ms),
        errors=errors,
        p50_ms=percentile(ms, 50),
        p90_ms=percentile(ms, 90),
        p99_ms=percentile(ms, 99),
        max_ms=ms[-1],
        mean_ms=sum(ms) / len(ms),
        wall_s=wall_s,
    )


@dataclass
class _Outcomes:
    latencies_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _one_query(client: Client, subject: str, consent_id: str, shape: Shape) -> str | None:
    """Run one query; None on a complete answer, else why it does not count."""
    try:
        result: PersonScore | ThresholdResult
        if shape is Shape.THRESHOLD:
            result = client.person_meets_threshold(
                subject, threshold=THRESHOLD, purpose=PURPOSE, consent_id=consent_id
            )
        else:
            result = client.person_score(
                subject, purpose=PURPOSE, consent_id=consent_id, shape=shape
            )
    except OsmanthusError as exc:
        return f"{type(exc).__name__}: {exc}"
    if result.partial:
        # a partial answer skips the missing nodes' work, so its latency is not comparable
        missing = ", ".join(f"{m.department} ({m.detail})" for m in result.missing)
        return f"partial answer, missing {missing}"
    return None


#: how long warm-up waits for every node to be reachable: on a loaded machine the coordinator's
#: first connections to 22 freshly started nodes can time out before their TLS handshakes end
WARMUP_PATIENCE_S = 120.0


def _warm_up_query(client: Client, subject: str, consent_id: str, shape: Shape) -> str | None:
    """`_one_query`, asked again while nodes are unreachable (warm-up is not timed)."""
    deadline = time.monotonic() + WARMUP_PATIENCE_S
    while True:
        problem = _one_query(client, subject, consent_id, shape)
        # only a refusal for want of nodes: a partial answer released would pin the subject
        unreachable = problem is not None and problem.startswith("Unavailable")
        if not unreachable or time.monotonic() > deadline:
            return problem
        time.sleep(0.5)  # a reconnection attempt, not a wait for an event: nothing to wait on


def _timed_run(
    clients: Sequence[Client],
    work: Sequence[tuple[str, str]],
    shape: Shape,
) -> tuple[_Outcomes, float]:
    """Run `work` (subject, consent id) with one thread per client, pulling from a shared queue."""
    outcomes = _Outcomes()
    next_index = iter(range(len(work)))
    index_lock = threading.Lock()
    start = threading.Barrier(len(clients) + 1)

    def worker(client: Client) -> None:
        start.wait()
        while True:
            with index_lock:
                i = next(next_index, None)
            if i is None:
                return
            subject, consent_id = work[i]
            t0 = time.perf_counter()
            problem = _one_query(client, subject, consent_id, shape)
            elapsed = time.perf_counter() - t0
            with outcomes.lock:
                if problem is None:
                    outcomes.latencies_s.append(elapsed)
                else:
                    outcomes.errors.append(problem)

    threads = [
        threading.Thread(target=worker, args=(c,), name=f"bench-client-{n}", daemon=True)
        for n, c in enumerate(clients)
    ]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return outcomes, time.perf_counter() - t0


def _cpu_seconds(pids: Sequence[int]) -> float | None:
    """User plus system CPU time of `pids` from /proc; None where /proc cannot tell."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        # the command name in parentheses may hold spaces: fields are counted after its ")"
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def wait_until_idle(pids: Sequence[int], *, timeout_s: float = _IDLE_TIMEOUT_S) -> bool:
    """Wait until `pids` together use under 10 % of a core over two consecutive samples.

    After the warm-up every node builds its fixed-base table for the requester key in a
    background thread; timing while 22 processes do that on 2 cores would mix two regimes.
    False if they did not settle within `timeout_s`, or if /proc is not there to tell.
    """
    deadline = time.monotonic() + timeout_s
    before = _cpu_seconds(pids)
    quiet = 0
    while before is not None and time.monotonic() < deadline:
        time.sleep(_IDLE_SAMPLE_S)
        after = _cpu_seconds(pids)
        if after is None:
            return False
        quiet = quiet + 1 if after - before < _IDLE_CPU_SHARE * _IDLE_SAMPLE_S else 0
        if quiet >= 2:
            return True
        before = after
    return False


def _person_ids(subjects_file: Path) -> list[str]:
    with subjects_file.open(newline="", encoding="utf-8") as f:
        return [r["subject_id"] for r in csv.DictReader(f) if r["subject_kind"] == "person"]


def run_benchmark(
    *,
    persons: int = 2000,
    queries: int = 200,
    shapes: Sequence[Shape] = (Shape.BREAKDOWN, Shape.TOTAL),
    concurrency: int = 1,
    consented: int = 200,
    warmup: int = DEFAULT_WARMUP,
    deadline_s: float = 5.0,
    rng_seed: int = DEFAULT_SEED,
    progress: Callable[[str], None] = lambda _msg: None,
) -> BenchResult:
    """Start the 22 person-credit nodes and a coordinator as processes, and time person queries.

    Timing starts in the steady state of a requester that queries often: the first client runs
    `warmup` untimed queries (shapes in turn), which connects every channel and makes each node
    build its fixed-base encryption table for the key; every other client runs one per shape;
    then the benchmark waits until the server processes are idle.
    """
    for name, value, least in (
        ("persons", persons, 1),
        ("queries", queries, 1),
        ("concurrency", concurrency, 1),
        ("consented", consented, 1),
        ("warmup", warmup, 0),
    ):
        if value < least:
            raise InvalidArgument(f"must be {least} or more, got {value}", field=name)
    if not shapes:
        raise InvalidArgument("name at least one shape", field="shapes")
    if not deadline_s > 0:
        raise InvalidArgument(f"must be above 0 seconds, got {deadline_s}", field="deadline_s")
    t_setup = time.perf_counter()
    catalogue = load_catalogue()
    person_depts = [d.id for d in catalogue.departments_for(SubjectKind.PERSON)]
    rng = random.Random(rng_seed)
    with tempfile.TemporaryDirectory(prefix="osmanthus-bench-") as tmp:
        work_dir = Path(tmp)
        progress(f"seeding {persons} persons into {len(catalogue.departments)} department files")
        # no enterprises: only person queries are timed, and seeding them would only cost time
        report = seed(
            work_dir / "data",
            persons=persons,
            enterprises=0,
            as_of=datetime.now(UTC).date(),
            catalogue=catalogue,
            scene=False,  # the synthetic population only: the counts reported are exact
        )
        progress("creating the platform CA, certificates, issuer key and a 2048-bit Paillier key")
        certs = work_dir / "certs"
        init_platform(
            certs, departments=[d.id for d in catalogue.departments], requesters=[AGENCY, REGISTRAR]
        )
        issuer_dir = work_dir / "issuer"
        generate_issuer_keypair(issuer_dir / "issuer.key", issuer_dir / "issuer.pub")
        issuer = TokenIssuer.from_file(issuer_dir / "issuer.key")
        agency_keys = load_or_create_keys(work_dir / "keys" / f"{AGENCY}.key")
        registrar_keys = load_or_create_keys(work_dir / "keys" / f"{REGISTRAR}.key")
        agency_token = issuer.issue(
            requester=AGENCY,
            role=Role.CREDIT_AGENCY,
            purposes=[PURPOSE],
            key_fingerprint=agency_keys.fingerprint,
            ttl=_TOKEN_TTL,
        )
        registrar_token = issuer.issue(
            requester=REGISTRAR,
            role=Role.PLATFORM_SERVICE,
            purposes=["consent_management"],
            key_fingerprint=registrar_keys.fingerprint,
            ttl=_TOKEN_TTL,
        )

        def tls(name: str) -> TlsFiles:
            return TlsFiles.from_cert_paths(cert_paths(certs, role=PeerRole.REQUESTER, name=name))

        # only the person departments: the coordinator then has every department a person query
        # expects, and the enterprise-only nodes would just compete for the CPU
        federation = LocalFederation(
            data_dir=work_dir / "data",
            certs_dir=certs,
            issuer_public_key=issuer_dir / "issuer.pub",
            run_dir=work_dir / "run",
            departments=person_depts,
            deadline_s=deadline_s,
        )
        clients: list[Client] = []
        codes: dict[str, int | None] = {}
        try:
            progress(f"starting {len(person_depts)} person-credit nodes and the coordinator")
            target = f"127.0.0.1:{federation.start()}"
            with Client(
                target,
                tls=tls(REGISTRAR),
                token=registrar_token,
                keys=registrar_keys,
                catalogue=catalogue,
            ) as registrar:
                registrar.register_key()
                sample = rng.sample(_person_ids(report.subjects_file), min(consented, persons))
                progress(f"recording consent for {len(sample)} persons")
                expires = datetime.now(UTC) + timedelta(days=1)
                consents = [
                    (
                        subject,
                        registrar.grant_consent(
                            subject_id=subject, grantee=AGENCY, purpose=PURPOSE, expires_at=expires
                        ).consent_id,
                    )
                    for subject in sample
                ]
            clients = [
                Client(
                    target,
                    tls=tls(AGENCY),
                    token=agency_token,
                    keys=agency_keys,
                    catalogue=catalogue,
                )
                for _ in range(concurrency)
            ]
            setup_s = time.perf_counter() - t_setup

            t_warm = time.perf_counter()
            progress(f"warming up: {warmup} untimed queries, then waiting for the nodes to "
                     "finish building their encryption tables")  # fmt: skip
            plan = [(clients[0], shapes[i % len(shapes)]) for i in range(warmup)]
            plan += [(c, shape) for c in clients[1:] for shape in shapes]
            for client in clients:
                client.register_key()
            for client, shape in plan:
                subject, consent_id = rng.choice(consents)
                problem = _warm_up_query(client, subject, consent_id, shape)
                if problem is not None:
                    raise OsmanthusError(f"warm-up {shape.value} query failed: {problem}")
            servers = [*federation.nodes.values()]
            if federation.coordinator is not None:
                servers.append(federation.coordinator)
            settled = wait_until_idle([p.popen.pid for p in servers])
            if not settled:
                progress("the servers did not go idle; timing anyway (see 'settled' in the JSON)")
            warmup_s = time.perf_counter() - t_warm

            stats: dict[Shape, LatencyStats] = {}
            error_samples: list[str] = []
            for shape in shapes:
                work = [rng.choice(consents) for _ in range(queries)]
                progress(f"timing {queries} {shape.value} queries with {concurrency} client(s)")
                outcomes, wall_s = _timed_run(clients, work, shape)
                stats[shape] = _stats(shape, outcomes.latencies_s, len(outcomes.errors), wall_s)
                error_samples += [f"{shape.value}: {e}" for e in outcomes.errors[:3]]
        finally:
            for client in clients:
                client.close()
            codes = federation.stop()
    return BenchResult(
        nodes=len(person_depts),
        persons=persons,
        consented=len(consents),
        queries=queries,
        concurrency=concurrency,
        setup_s=setup_s,
        warmup_s=warmup_s,
        settled=settled,
        stats=stats,
        error_samples=tuple(error_samples),
        unclean_exits={name: code for name, code in codes.items() if code != 0},
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _shapes(text: str) -> list[Shape]:
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in SHAPE_NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown shape(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(SHAPE_NAMES)}, comma-separated"
        )
    return [SHAPE_NAMES[n] for n in dict.fromkeys(names)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.query",
        description=(
            "Time person queries end to end (SDK → coordinator → 22 department node processes → "
            "SDK decryption) on 127.0.0.1. The last line of output is one JSON object."
        ),
    )
    parser.add_argument("--persons", type=_positive_int, default=2000, help="persons to seed")
    parser.add_argument(
        "--queries", type=_positive_int, default=200, help="timed queries per shape"
    )
    parser.add_argument(
        "--shapes",
        type=_shapes,
        default=[Shape.BREAKDOWN, Shape.TOTAL, Shape.THRESHOLD],
        help="comma-separated disclosure shapes to time (breakdown, total, threshold)",
    )
    parser.add_argument(
        "--concurrency", type=_positive_int, default=1, help="client threads querying at once"
    )
    parser.add_argument(
        "--consented",
        type=_positive_int,
        default=200,
        help="persons who consent; queries pick among them at random",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=DEFAULT_WARMUP,
        help=(
            "untimed queries before timing; from "
            f"{DEFAULT_TABLE_AFTER_USES} on, nodes build their fast encryption tables"
        ),
    )
    parser.add_argument(
        "--deadline", type=float, default=5.0, help="coordinator's per-node deadline in seconds"
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed")
    return parser


def _print_summary(result: BenchResult) -> None:
    print(
        f"\n{result.nodes} person-credit nodes + coordinator (separate processes, mTLS on "
        f"127.0.0.1), {result.persons} persons seeded, {result.consented} consented; "
        f"{result.concurrency} client thread(s); setup {result.setup_s:.1f} s, "
        f"warm-up {result.warmup_s:.1f} s"
        + ("" if result.settled else " (servers NOT idle when timing began)")
    )
    print(f"{'shape':<10} {'ok':>5} {'err':>4} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} "
          f"{'max ms':>9} {'mean ms':>9} {'q/s':>8}")  # fmt: skip
    for s in result.stats.values():
        print(
            f"{s.shape.value:<10} {s.ok:>5} {s.errors:>4} {s.p50_ms:>9.1f} {s.p90_ms:>9.1f} "
            f"{s.p99_ms:>9.1f} {s.max_ms:>9.1f} {s.mean_ms:>9.1f} {s.qps:>8.2f}"
        )
    for sample in result.error_samples:
        print(f"error: {sample}")
    if result.unclean_exits:
        print(f"warning: processes that did not exit cleanly: {result.unclean_exits}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 if every timed query got a complete answer, 1 otherwise."""
    args = build_parser().parse_args(argv)
    if args.warmup < 0:
        build_parser().error(f"--warmup must be 0 or more, got {args.warmup}")
    if not args.deadline > 0:
        build_parser().error(f"--deadline must be above 0 seconds, got {args.deadline}")
    t0 = time.perf_counter()

    def progress(text: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f}s] {text}", flush=True)

    result = run_benchmark(
        persons=args.persons,
        queries=args.queries,
        shapes=args.shapes,
        concurrency=args.concurrency,
        consented=args.consented,
        warmup=args.warmup,
        deadline_s=args.deadline,
        rng_seed=args.seed,
        progress=progress,
    )
    _print_summary(result)
    print(json.dumps(result.summary()), flush=True)
    return 1 if result.errors else 0


if __name__ == "__main__":
    sys.exit(main())

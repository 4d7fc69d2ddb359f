"""STATS latency through a real local federation, against the same sums pooled in one process."""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

from bench.query import _cpu_seconds, _person_ids, percentile, wait_until_idle
from certs import PeerRole, cert_paths, init_platform
from coordinator.server import DEFAULT_CENTRAL_POLICY
from node.store import RecordStore
from osmanthus.core.catalogue import Catalogue, load_catalogue
from osmanthus.core.clock import china_today
from osmanthus.core.crypto import DEFAULT_TABLE_AFTER_USES
from osmanthus.core.dp import parse_epsilon
from osmanthus.core.encoding import SlotLayout
from osmanthus.core.errors import ConfigError, InvalidArgument, OsmanthusError
from osmanthus.core.policy import PolicyEngine, PolicyRequest
from osmanthus.core.rules import RuleSet, load_default_rules
from osmanthus.core.tls import TlsFiles
from osmanthus.core.tokens import TokenIssuer, generate_issuer_keypair
from osmanthus.core.types import DepartmentId, Role, Shape, SubjectId, SubjectKind
from osmanthus.core.wire.node import MAX_CHUNK_SUBJECTS, MAX_COHORT, validate_cohort
from osmanthus.demo.launcher import LocalFederation
from osmanthus.demo.seed import seed
from sdk import Client, StatsResult, load_or_create_keys

#: the provincial sync job: a role the default policies let ask for statistics
REQUESTER = "sync-job"
ROLE = Role.SYNC_JOB
PURPOSE = "statistics"
DEFAULT_SEED = 20261127
DEFAULT_PERSONS = 20_000
DEFAULT_COHORTS = (100, 1_000, 10_000)
DEFAULT_REPEAT = 5
#: small enough that a whole run stays far inside the central policy's daily ε budget
DEFAULT_EPSILON = Decimal("0.01")
#: a noisy sum further than this many noise scales from the plaintext sum is a bug, not bad luck:
#: P(|Z| > 40 b) is about e^-40 for discrete-Laplace noise of scale b
GUARD_SCALES = 40
_TOKEN_TTL = timedelta(hours=12)
#: persons in each warm-up query after the first
_WARMUP_COHORT = 100
#: other processes using more than this many cores while timing make the figures suspect
_BUSY_CORES = 0.2
_KIND = SubjectKind.PERSON


def default_warmup(statistics_per_query: int) -> int:
    """Untimed queries after which every node and the coordinator has built its table for the key.

    Each STATS query encrypts one sum per statistic at every node (and one noise term per
    statistic at the coordinator); a table is built after DEFAULT_TABLE_AFTER_USES encryptions.
    Timing before that would mix the plain path and 23 table builds into the first cohort.
    """
    return math.ceil(DEFAULT_TABLE_AFTER_USES / statistics_per_query) + 1


class PooledSums:
    """The cohort sums one process computes from every department's file: a pooled database.

    The real code path without crypto or gRPC: each department's RecordStore and RuleSet as
    `node.server.build_service` makes them, then, as `NodeService` does for STATS, one
    `records_for_many` per chunk, `RuleSet.contribution` and `SlotLayout.part` per subject.
    """

    def __init__(self, *, data_dir: Path, catalogue: Catalogue) -> None:
        self.layout = SlotLayout.for_catalogue(catalogue, _KIND, Shape.BREAKDOWN)
        self._as_of = china_today()
        self._departments: list[tuple[DepartmentId, RecordStore, RuleSet, tuple[int, ...]]] = []
        try:
            for dept in catalogue.departments_for(_KIND):
                rules = load_default_rules(dept.id, catalogue=catalogue)
                # most subjects have no record at any one department: their part is computed once
                zero = self.layout.part(
                    rules.contribution(_KIND, (), as_of=self._as_of), department=dept.id
                )
                store = RecordStore(
                    data_dir / f"{dept.id}.duckdb", department=dept.id, read_only=True
                )
                self._departments.append((dept.id, store, rules, zero))
        except BaseException:
            self.close()
            raise

    def sums(self, subject_ids: Sequence[str]) -> tuple[int, ...]:
        """Every statistic's exact sum over the cohort, in the layout's order."""
        cohort: tuple[SubjectId, ...] = validate_cohort(_KIND, subject_ids)
        totals = [0] * len(self.layout.names)
        for department, store, rules, zero in self._departments:
            for start in range(0, len(cohort), MAX_CHUNK_SUBJECTS):
                part_of = cohort[start : start + MAX_CHUNK_SUBJECTS]
                records = store.records_for_many(_KIND, part_of)
                for subject in part_of:
                    found = records.get(subject)
                    part = (
                        self.layout.part(
                            rules.contribution(_KIND, found, as_of=self._as_of),
                            department=department,
                        )
                        if found
                        else zero
                    )
                    for i, value in enumerate(part):
                        totals[i] += value
        return tuple(totals)

    def close(self) -> None:
        for _, store, _, _ in self._departments:
            store.close()
        self._departments.clear()


@dataclass(frozen=True)
class CohortFigures:
    """One cohort size: the federated latencies and the pooled baseline's, on the same cohorts."""

    size: int
    #: successful federated queries, end to end (SDK call to decrypted sums), seconds
    latencies_s: tuple[float, ...]
    #: the pooled computation of the same cohorts' sums, seconds
    baseline_s: tuple[float, ...]
    errors: int

    @property
    def p50_ms(self) -> float | None:
        return _ms(self.latencies_s, 50)

    @property
    def max_ms(self) -> float | None:
        return _ms(self.latencies_s, 100)

    @property
    def baseline_ms(self) -> float | None:
        return _ms(self.baseline_s, 50)

    @property
    def subjects_per_s(self) -> float | None:
        p50 = self.p50_ms
        return None if p50 is None else self.size / (p50 / 1000)

    @property
    def ratio(self) -> float | None:
        """Federated p50 over pooled p50: how many times slower the federation answers."""
        p50, base = self.p50_ms, self.baseline_ms
        return None if p50 is None or not base else p50 / base


@dataclass(frozen=True)
class NoiseFigures:
    """Observed noise (noisy sum − plaintext sum) against the scale the coordinator stated."""

    statistic: str
    scale: Fraction
    abs_noise: tuple[int, ...]

    @property
    def mean_abs_over_scale(self) -> float:
        # E|Z| of discrete-Laplace noise is close to its scale b once b is large
        return statistics.fmean(self.abs_noise) / float(self.scale)

    @property
    def max_abs_over_scale(self) -> float:
        return max(self.abs_noise) / float(self.scale)


@dataclass(frozen=True)
class BenchResult:
    nodes: int
    persons: int
    repeat: int
    epsilon: Decimal
    warmup: int
    setup_s: float
    #: whether the servers were seen idle (tables built) before timing started
    settled: bool
    #: cores' worth of CPU that processes other than the benchmark's used while it timed
    #: (None where /proc cannot tell): above ~0.2 the figures are slowed by other work
    other_load_cores: float | None
    cohorts: tuple[CohortFigures, ...]
    noise: tuple[NoiseFigures, ...]
    #: answers further than GUARD_SCALES noise scales from the plaintext sums
    guard_failures: tuple[str, ...]
    epsilon_left: Decimal | None
    limits: PolicyLimits
    error_samples: tuple[str, ...] = ()
    unclean_exits: dict[str, int | None] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        return sum(c.errors for c in self.cohorts)

    def summary(self) -> dict[str, object]:
        """The machine-readable line: a figure with no successful query behind it is null."""
        out: dict[str, object] = {
            "nodes": self.nodes,
            "persons": self.persons,
            "repeat": self.repeat,
            "epsilon": float(self.epsilon),
            "policy_epsilon_budget": float(self.limits.budget),
            "cohorts": [c.size for c in self.cohorts],
            "warmup": self.warmup,
            "setup_s": round(self.setup_s, 2),
            "settled": self.settled,
            "other_load_cores": (
                None if self.other_load_cores is None else round(self.other_load_cores, 2)
            ),
        }
        for c in self.cohorts:
            out[f"stats_{c.size}_errors"] = c.errors
            for key, value in (
                (f"stats_{c.size}_p50_ms", c.p50_ms),
                (f"stats_{c.size}_max_ms", c.max_ms),
                (f"stats_{c.size}_subjects_per_s", c.subjects_per_s),
                (f"baseline_{c.size}_ms", c.baseline_ms),
                (f"ratio_{c.size}", c.ratio),
            ):
                out[key] = None if value is None else round(value, 3)
        out["noise_mean_abs_over_scale"] = (
            round(statistics.fmean(n.mean_abs_over_scale for n in self.noise), 3)
            if self.noise
            else None
        )
        out["noise_max_abs_over_scale"] = (
            round(max(n.max_abs_over_scale for n in self.noise), 3) if self.noise else None
        )
        out["noise_within_guard"] = not self.guard_failures
        out["epsilon_left"] = None if self.epsilon_left is None else float(self.epsilon_left)
        out["clean_shutdown"] = not self.unclean_exits
        return out


def _machine_busy_seconds() -> float | None:
    """CPU time every process on the machine has spent, from /proc/stat (None without it)."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    # user nice system idle iowait irq softirq: idle and iowait are not work
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in first[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def _load_sample(ours: Sequence[int]) -> tuple[float, float | None, float | None]:
    return time.perf_counter(), _machine_busy_seconds(), _cpu_seconds(ours)


def _other_load(
    before: tuple[float, float | None, float | None],
    after: tuple[float, float | None, float | None],
) -> float | None:
    """Cores' worth of CPU the rest of the machine used between two samples."""
    (t0, busy0, ours0), (t1, busy1, ours1) = before, after
    if busy0 is None or busy1 is None or ours0 is None or ours1 is None or t1 <= t0:
        return None
    return max(0.0, ((busy1 - busy0) - (ours1 - ours0)) / (t1 - t0))


def _text(value: Decimal) -> str:
    return format(value.normalize(), "f")


def _ms(values_s: Sequence[float], q: float) -> float | None:
    return percentile(sorted(v * 1000 for v in values_s), q) if values_s else None


@dataclass(frozen=True)
class PolicyLimits:
    """What the coordinator's central policy lets the benchmark's requester do with STATS."""

    rules: str
    min_cohort: int
    max_epsilon: Decimal | None
    #: the least ε any of the requester's budgets holds: a run lasts less than any period
    budget: Decimal
    #: the fewest answers any rate limit allows (None: no limit)
    max_queries: int | None


def policy_limits(*, epsilon: Decimal, cohort: int) -> PolicyLimits:
    """Ask the central policy the federation will run, as its coordinator will."""
    engine = PolicyEngine.from_file(DEFAULT_CENTRAL_POLICY)
    decision = engine.decide(
        PolicyRequest(
            principal_type="Requester",
            principal_id=REQUESTER,
            principal_attrs={"role": ROLE.value},
            action="StatsQuery",
            resource_type="Dataset",
            resource_id=_KIND.value,
            context={"purpose": PURPOSE, "cohort": cohort, "epsilon": epsilon},
        )
    )
    if not decision.allowed:
        raise ConfigError(
            f"{DEFAULT_CENTRAL_POLICY} does not let a {ROLE.value} requester ask for "
            f"statistics: {decision.reason}"
        )
    budgets = engine.epsilon_budgets(decision)
    if not budgets:
        raise ConfigError(
            f"{DEFAULT_CENTRAL_POLICY}: rule(s) {', '.join(decision.policy_ids)} set no "
            "@epsilon_budget, so the coordinator would refuse every STATS query"
        )
    limits = engine.rate_limits(decision)
    return PolicyLimits(
        rules=", ".join(decision.policy_ids),
        min_cohort=engine.min_cohort(decision),
        max_epsilon=engine.max_epsilon(decision),
        budget=min(b.epsilon for b in budgets),
        max_queries=min(r.count for r in limits) if limits else None,
    )


def check_arguments(
    *,
    persons: int,
    cohorts: Sequence[int],
    repeat: int,
    epsilon: Decimal,
    warmup: int,
    limits: PolicyLimits,
) -> None:
    """Refuse, naming the field, what the federation or its policy would refuse mid-run."""
    for name, value in (("persons", persons), ("repeat", repeat)):
        if value < 1:
            raise InvalidArgument(f"must be 1 or more, got {value}", field=name)
    if warmup < 0:
        raise InvalidArgument(f"must be 0 or more, got {warmup}", field="warmup")
    if not cohorts:
        raise InvalidArgument("name at least one cohort size", field="cohorts")
    policy = f"the central policy (rule {limits.rules})"
    for size in cohorts:
        if not limits.min_cohort <= size <= MAX_COHORT:
            raise InvalidArgument(
                f"cohort size {size} is outside {limits.min_cohort}..{MAX_COHORT} (the smallest "
                f"cohort {policy} allows, the most subjects one STATS query may name)",
                field="cohorts",
            )
        if size > persons:
            raise InvalidArgument(
                f"cohort size {size} is more than the {persons} persons seeded; a cohort names "
                "distinct persons (raise --persons)",
                field="cohorts",
            )
    if limits.max_epsilon is not None and epsilon > limits.max_epsilon:
        raise InvalidArgument(
            f"ε {_text(epsilon)} is more than {policy} lets one query spend "
            f"({_text(limits.max_epsilon)})",
            field="epsilon",
        )
    queries = warmup + len(cohorts) * repeat
    if epsilon * queries > limits.budget:
        raise InvalidArgument(
            f"{queries} queries at ε {_text(epsilon)} spend {_text(epsilon * queries)}, more "
            f"than the budget of {_text(limits.budget)} under {policy}; lower --epsilon or "
            "--repeat",
            field="epsilon",
        )
    if limits.max_queries is not None and queries > limits.max_queries:
        raise InvalidArgument(
            f"{queries} queries are more than the {limits.max_queries} {policy} answers per "
            "period; lower --repeat or --warmup",
            field="repeat",
        )


def run_benchmark(
    *,
    persons: int = DEFAULT_PERSONS,
    cohorts: Sequence[int] = DEFAULT_COHORTS,
    repeat: int = DEFAULT_REPEAT,
    epsilon: Decimal = DEFAULT_EPSILON,
    warmup: int | None = None,
    deadline_s: float = 5.0,
    rng_seed: int = DEFAULT_SEED,
    progress: Callable[[str], None] = lambda _msg: None,
) -> BenchResult:
    """Start the 22 person-credit nodes and a coordinator as processes, and time STATS queries.

    Each timed query asks for every statistic over a fresh random cohort; right after it, the
    same cohort's exact sums are computed in this process straight from the department files
    (`PooledSums`), so federated and pooled times share the machine's load of the moment.
    `warmup` None means `default_warmup`.
    """
    catalogue = load_catalogue()
    layout = SlotLayout.for_catalogue(catalogue, _KIND, Shape.BREAKDOWN)
    warmup = default_warmup(len(layout.names)) if warmup is None else warmup
    sizes = list(dict.fromkeys(cohorts))
    limits = policy_limits(epsilon=epsilon, cohort=min(sizes, default=MAX_COHORT))
    check_arguments(
        persons=persons,
        cohorts=sizes,
        repeat=repeat,
        epsilon=epsilon,
        warmup=warmup,
        limits=limits,
    )
    if not deadline_s > 0:
        raise InvalidArgument(f"must be above 0 seconds, got {deadline_s}", field="deadline")
    t_setup = time.perf_counter()
    person_depts = [d.id for d in catalogue.departments_for(_KIND)]
    rng = random.Random(rng_seed)
    with tempfile.TemporaryDirectory(prefix="osmanthus-bench-stats-") as tmp:
        work_dir = Path(tmp)
        progress(f"seeding {persons} persons into {len(catalogue.departments)} department files")
        report = seed(
            work_dir / "data",
            persons=persons,
            enterprises=0,
            as_of=datetime.now(UTC).date(),
            catalogue=catalogue,
            scene=False,  # the synthetic population only: the counts reported are exact
        )
        population = _person_ids(report.subjects_file)
        progress("creating the platform CA, certificates, issuer key and a 2048-bit Paillier key")
        certs = work_dir / "certs"
        init_platform(
            certs, departments=[d.id for d in catalogue.departments], requesters=[REQUESTER]
        )
        issuer_dir = work_dir / "issuer"
        generate_issuer_keypair(issuer_dir / "issuer.key", issuer_dir / "issuer.pub")
        keys = load_or_create_keys(work_dir / "keys" / f"{REQUESTER}.key")
        token = TokenIssuer.from_file(issuer_dir / "issuer.key").issue(
            requester=REQUESTER,
            role=ROLE,
            purposes=[PURPOSE],
            key_fingerprint=keys.fingerprint,
            ttl=_TOKEN_TTL,
        )
        tls = TlsFiles.from_cert_paths(cert_paths(certs, role=PeerRole.REQUESTER, name=REQUESTER))
        # a running node holds its database file (live imports: DuckDB's one writer), so the
        # pooled baseline reads a copy made before the nodes start, of the same records
        pooled_dir = work_dir / "pooled"
        shutil.copytree(work_dir / "data", pooled_dir)
        federation = LocalFederation(
            data_dir=work_dir / "data",
            certs_dir=certs,
            issuer_public_key=issuer_dir / "issuer.pub",
            run_dir=work_dir / "run",
            departments=person_depts,
            deadline_s=deadline_s,
        )
        pooled: PooledSums | None = None
        client: Client | None = None
        codes: dict[str, int | None] = {}
        try:
            progress(f"starting {len(person_depts)} person-credit nodes and the coordinator")
            target = f"127.0.0.1:{federation.start()}"
            client = Client(target, tls=tls, token=token, keys=keys, catalogue=catalogue)
            client.register_key()
            pooled = PooledSums(data_dir=pooled_dir, catalogue=catalogue)
            setup_s = time.perf_counter() - t_setup

            # the first warm-up query is as large as the smallest timed cohort, for the caches;
            # the rest only make every node build its table, which small cohorts do as well
            warm_sizes = [min(sizes), *[min(min(sizes), _WARMUP_COHORT)] * (warmup - 1)]
            progress(
                f"warming up: {warmup} untimed STATS queries (the first over {min(sizes)} "
                f"persons, the others over {min(min(sizes), _WARMUP_COHORT)}), then waiting for "
                "the nodes to finish building their encryption tables"
            )
            for size in warm_sizes[:warmup]:
                warm = rng.sample(population, size)
                client.stats(warm, kind=_KIND, purpose=PURPOSE, epsilon=epsilon)
            pooled.sums(rng.sample(population, min(sizes)))
            servers = [*federation.nodes.values()]
            if federation.coordinator is not None:
                servers.append(federation.coordinator)
            settled = wait_until_idle([p.popen.pid for p in servers])
            if not settled:
                progress("the servers did not go idle; timing anyway (see 'settled' in the JSON)")

            figures: list[CohortFigures] = []
            abs_noise: dict[str, list[int]] = {name: [] for name in layout.names}
            scales: dict[str, Fraction] = {}
            guard_failures: list[str] = []
            error_samples: list[str] = []
            epsilon_left: Decimal | None = None
            ours = [os.getpid(), *(p.popen.pid for p in servers)]
            load_before = _load_sample(ours)
            for size in sizes:
                progress(f"timing {repeat} STATS queries over {size} persons, each followed by "
                         "the pooled plaintext sums of the same cohort")  # fmt: skip
                latencies: list[float] = []
                baseline: list[float] = []
                errors = 0
                for _ in range(repeat):
                    cohort = rng.sample(population, size)
                    t0 = time.perf_counter()
                    try:
                        answer: StatsResult = client.stats(
                            cohort, kind=_KIND, purpose=PURPOSE, epsilon=epsilon
                        )
                    except OsmanthusError as exc:
                        errors += 1
                        error_samples.append(f"cohort {size}: {type(exc).__name__}: {exc}")
                        continue
                    latencies.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    exact = pooled.sums(cohort)
                    baseline.append(time.perf_counter() - t0)
                    epsilon_left = answer.epsilon_left
                    for name, value in zip(layout.names, exact, strict=True):
                        scale = answer.noise_scales[name]
                        scales[name] = scale
                        noise = answer.sums[name] - value
                        abs_noise[name].append(abs(noise))
                        if abs(noise) > GUARD_SCALES * scale:
                            guard_failures.append(
                                f"cohort {size}, {name}: noisy sum {answer.sums[name]} is "
                                f"{noise:+} from the plaintext sum {value}, more than "
                                f"{GUARD_SCALES} × the stated scale {float(scale):.6g}"
                            )
                figures.append(CohortFigures(size, tuple(latencies), tuple(baseline), errors))
            other_load = _other_load(load_before, _load_sample(ours))
        finally:
            if client is not None:
                client.close()
            if pooled is not None:
                pooled.close()
            codes = federation.stop()
    return BenchResult(
        nodes=len(person_depts),
        persons=persons,
        repeat=repeat,
        epsilon=epsilon,
        warmup=warmup,
        setup_s=setup_s,
        settled=settled,
        other_load_cores=other_load,
        cohorts=tuple(figures),
        noise=tuple(
            NoiseFigures(name, scales[name], tuple(values))
            for name, values in abs_noise.items()
            if values
        ),
        guard_failures=tuple(guard_failures),
        epsilon_left=epsilon_left,
        limits=limits,
        error_samples=tuple(error_samples[:5]),
        unclean_exits={name: code for name, code in codes.items() if code != 0},
    )


def build_parser() -> argparse.ArgumentParser:
    # values are parsed by main, so that a bad one exits 3 naming its field
    parser = argparse.ArgumentParser(
        prog="python -m bench.stats",
        description=(
            "Time STATS queries (noisy cohort sums) end to end: SDK → coordinator → 22 "
            "department node processes → noise under encryption → SDK decryption, on 127.0.0.1; "
            "against the same sums computed in one process from the department files. The last "
            "line of output is one JSON object."
        ),
    )
    parser.add_argument("--persons", default=str(DEFAULT_PERSONS), help="persons to seed")
    parser.add_argument(
        "--cohorts",
        default=",".join(str(c) for c in DEFAULT_COHORTS),
        help=(
            "comma-separated cohort sizes to time (each at least the policy's smallest cohort, "
            f"at most {MAX_COHORT} and at most --persons)"
        ),
    )
    parser.add_argument(
        "--repeat", default=str(DEFAULT_REPEAT), help="timed queries per cohort size"
    )
    parser.add_argument(
        "--epsilon",
        default=str(DEFAULT_EPSILON),
        help=(
            "ε each query spends; the central policy caps ε per query, and the whole run "
            "(warm-up included) must fit in its ε budget per day"
        ),
    )
    parser.add_argument(
        "--warmup",
        default=None,
        help="untimed queries before timing (default: enough for every node to build its table)",
    )
    parser.add_argument(
        "--deadline", default="5.0", help="coordinator's per-node deadline in seconds"
    )
    parser.add_argument("--seed", default=str(DEFAULT_SEED), help="random seed")
    return parser


def _whole(text: str, *, field: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InvalidArgument(f"{text!r} is not a whole number", field=field) from None


def _sizes(text: str) -> list[int]:
    return [_whole(part.strip(), field="cohorts") for part in text.split(",") if part.strip()]


def _seconds(text: str, *, field: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InvalidArgument(f"{text!r} is not a number of seconds", field=field) from None
    if not value > 0 or math.isinf(value):
        raise InvalidArgument(f"must be above 0 seconds, got {text!r}", field=field)
    return value


def _print_summary(result: BenchResult) -> None:
    print(
        f"\n{result.nodes} person-credit nodes + coordinator (separate processes, mTLS on "
        f"127.0.0.1), {result.persons} persons seeded; every query asks all "
        f"{len(result.noise) or 'the'} statistics at ε {_text(result.epsilon)}; {result.repeat} "
        f"queries per cohort size after {result.warmup} untimed; setup {result.setup_s:.1f} s"
        + ("" if result.settled else " (servers NOT idle when timing began)")
    )
    if result.other_load_cores is not None:
        busy = result.other_load_cores > _BUSY_CORES
        print(
            f"other work on the machine while timing: {result.other_load_cores:.2f} cores"
            + (" (BUSY: every figure is slowed, the federated ones most)" if busy else "")
        )
    print("baseline: the same sums in this process from the 22 DuckDB files (no crypto, no gRPC)")
    print(f"{'cohort':>8} {'ok':>3} {'err':>4} {'p50 ms':>9} {'max ms':>9} {'subjects/s':>11} "
          f"{'pooled ms':>10} {'ratio':>7}")  # fmt: skip
    for c in result.cohorts:
        cells = [
            "—" if v is None else f"{v:.{digits}f}"
            for v, digits in (
                (c.p50_ms, 1),
                (c.max_ms, 1),
                (c.subjects_per_s, 0),
                (c.baseline_ms, 1),
                (c.ratio, 1),
            )
        ]
        print(f"{c.size:>8} {len(c.latencies_s):>3} {c.errors:>4} {cells[0]:>9} {cells[1]:>9} "
              f"{cells[2]:>11} {cells[3]:>10} {cells[4]:>6}×")  # fmt: skip
    answers = max((len(n.abs_noise) for n in result.noise), default=0)
    print(f"noise (noisy − plaintext sum) over {answers} answers, against the scale b the "
          "coordinator states (E|noise| ≈ b):")  # fmt: skip
    print(f"{'statistic':<20} {'scale b':>12} {'mean |noise|':>13} {'/ b':>6} {'max |noise|':>12} "
          f"{'/ b':>6}")  # fmt: skip
    for n in result.noise:
        print(f"{n.statistic:<20} {float(n.scale):>12.6g} {statistics.fmean(n.abs_noise):>13.6g} "
              f"{n.mean_abs_over_scale:>6.2f} {max(n.abs_noise):>12} "
              f"{n.max_abs_over_scale:>6.2f}")  # fmt: skip
    if result.epsilon_left is not None:
        print(
            f"ε left in the requester's budget: {_text(result.epsilon_left)} of "
            f"{_text(result.limits.budget)} (central policy rule {result.limits.rules})"
        )
    for failure in result.guard_failures:
        print(f"CORRECTNESS GUARD FAILED: {failure}")
    for sample in result.error_samples:
        print(f"error: {sample}")
    if result.unclean_exits:
        print(f"warning: processes that did not exit cleanly: {result.unclean_exits}")


def main(argv: Sequence[str] | None = None) -> int:
    """0 on success; 1 if a query failed or an answer broke the guard; 3 for a bad argument."""
    args = build_parser().parse_args(argv)
    t0 = time.perf_counter()

    def progress(text: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f}s] {text}", file=sys.stderr, flush=True)

    try:
        result = run_benchmark(
            persons=_whole(args.persons, field="persons"),
            cohorts=_sizes(args.cohorts),
            repeat=_whole(args.repeat, field="repeat"),
            epsilon=parse_epsilon(args.epsilon),
            warmup=None if args.warmup is None else _whole(args.warmup, field="warmup"),
            deadline_s=_seconds(args.deadline, field="deadline"),
            rng_seed=_whole(args.seed, field="seed"),
            progress=progress,
        )
    except OsmanthusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    _print_summary(result)
    print(json.dumps(result.summary()), flush=True)
    if result.guard_failures:
        print(
            f"error: {len(result.guard_failures)} noisy sum(s) were more than {GUARD_SCALES} "
            "noise scales from the plaintext: the federated sums are wrong",
            file=sys.stderr,
        )
    if result.errors:
        print(f"error: {result.errors} timed STATS queries failed", file=sys.stderr)
    return 1 if result.guard_failures or result.errors or result.unclean_exits else 0


if __name__ == "__main__":
    sys.exit(main())

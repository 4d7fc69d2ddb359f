"""The provincial sync job end to end: N enterprises' grades and the list changes, timed.

Seeds N enterprises into the 17 enterprise departments (in a subprocess), starts each of their
nodes, the coordinator and the reference provincial receiver as processes on 127.0.0.1 (mutual
TLS), publishes list entries through the list-publishing departments' nodes (their list officers'
operator certificates) and withdraws one in ten, then times `osmanthus sync run --once` as an
operator runs it: the list feed, the whole roster scored, every record signed into batches and
delivered. A second run right after finds nothing changed and sends nothing: its time is what
the job costs when there is nothing to report.

The baseline, measured in the same run and on the same warm federation, is the encrypted
scoring every run must do: `Client.batch_scores` over the same roster (TOTAL, purpose
credit_rescoring) in this process, with the job's requester key. It is timed twice: before the
job, which is the roster's first disclosure to that requester (the coordinator pins each
enterprise's department set as it answers), and after the second run, with every enterprise
pinned as in both job runs; the ratios are against the second. The job's wall time divided by
it is the job's overhead: its process start-up, the list feed, staging, diffing, signing and
delivery. Before anything is timed, a warm-up batch makes every node build its encryption table
for the key, and the benchmark waits until the servers are idle. The last line printed is one
JSON object.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Final

import duckdb

from bench.query import _cpu_seconds, wait_until_idle
from bench.stats import _machine_busy_seconds
from certs import PeerRole, cert_paths, init_platform, issue_certificate
from node.officer import ListOfficer
from osmanthus.core import signing
from osmanthus.core.catalogue import Catalogue, ListColour, ListType, load_catalogue
from osmanthus.core.clock import china_today
from osmanthus.core.crypto import DEFAULT_TABLE_AFTER_USES
from osmanthus.core.encoding import SlotLayout
from osmanthus.core.errors import InvalidArgument, OsmanthusError
from osmanthus.core.lists import EntryId, NewEntry, WithdrawReason, holds_resident_id
from osmanthus.core.tls import TlsFiles
from osmanthus.core.tokens import TokenIssuer, generate_issuer_keypair
from osmanthus.core.types import Role, Shape, SubjectId, SubjectKind
from osmanthus.demo.launcher import (
    LocalFederation,
    Process,
    osmanthus_command,
    spawn,
)
from province.store import STORE_FILE
from sdk import Client, load_or_create_keys

SYNC: Final = "sync-1"
SENDER: Final = "suzhou"
RECEIVER: Final = "province"
GRADES_PURPOSE: Final = "credit_rescoring"
DEFAULT_SEED: Final = 20261126
#: the largest cohort a STATS query takes (syncjob.job.MAX_COHORT)
MAX_COHORT: Final = 50_000
#: ε of the optional statistics cohort: far inside the central policy's 5 a day
STATISTICS_EPSILON: Final = "0.01"
#: one entry in this many is withdrawn after publication
WITHDRAW_EVERY: Final = 10
#: warm-up chunks of one enterprise each: one encryption per node per chunk, past the uses
#: after which every node (and the coordinator) builds its fixed-base table for the key
WARMUP_CHUNKS: Final = DEFAULT_TABLE_AFTER_USES + 8
#: how long one `sync run` may take before the benchmark gives up on it
JOB_TIMEOUT_S: Final = 3600.0
_TOKEN_TTL: Final = timedelta(hours=12)
#: how long the machine is watched, with every process of ours idle, for other work
_OTHER_LOAD_S: Final = 3.0

#: progress lines of `sync run` that end a phase, in the order a run prints them, with the
#: phase's JSON key and what it covers; a phase is timed from the previous mark present
_MARKS: Final = (
    (re.compile(r"run \S+"), "startup", "start-up: interpreter, imports, key, state, channels"),
    (re.compile(r"lists: \S+ \d+ events"), "list_feed", "list feed: every department's changes"),
    (re.compile(r"list_changes: \d+ batches"), "list_batches", "list records: build, sign, outbox"),
    (re.compile(r"grades: scoring "), "roster", "grades: read the roster"),
    (
        re.compile(r"grades: \d+ of \d+ enterprises changed"),
        "grade_scoring",
        "grades: score (BatchQuery), stage, diff",
    ),
    (re.compile(r"grades: \d+ batches"), "grade_batches", "grade records: build, sign, outbox"),
    (re.compile(r"statistics \S+: "), "statistics", "statistics: one STATS query"),
    (re.compile(r"statistics: \d+ batches"), "statistic_batches", "statistic records: sign"),
    (re.compile(r"delivered "), "delivery", "delivery: each batch, acknowledged in turn"),
)
_EXIT_PHASE: Final = ("exit", "summary, close, process exit")


@dataclass(frozen=True)
class JobRun:
    """One `osmanthus sync run --once` as a subprocess, and what it reported."""

    wall_s: float
    exit_code: int
    #: the run's summary as `sync status --json` gives it (records and batches by kind)
    summary: dict[str, Any]
    #: peak resident set of the job process (with the children it reaped), from wait4
    peak_rss_mb: float
    #: (key, seconds) of each phase in the order they ran
    phases: tuple[tuple[str, float], ...]
    #: CPU seconds the servers spent during the run: nodes, coordinator, receiver
    server_cpu_s: dict[str, float]
    stderr_tail: str

    @property
    def records(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.summary.get("records", {}).items()}

    @property
    def batches(self) -> int:
        return sum(int(v) for v in self.summary.get("delivered", {}).values())

    @property
    def errors(self) -> list[str]:
        return [str(e) for e in self.summary.get("errors", [])]


@dataclass(frozen=True)
class Baseline:
    """One pass of `Client.batch_scores` over the roster in this process."""

    seconds: float
    scored_ids: tuple[str, ...]
    #: CPU seconds the servers spent during the pass: nodes, coordinator, receiver
    server_cpu_s: dict[str, float]


@dataclass(frozen=True)
class SyncResult:
    enterprises: int
    departments: int
    list_entries: int
    withdrawn: int
    statistics: int
    seed_s: float
    start_s: float
    publish_s: float
    withdraw_s: float
    warmup_s: float
    settled: bool
    #: before the job: the roster's first disclosure to the requester, so the coordinator pins
    #: each enterprise's department set as it answers (as a first-ever sync would)
    first_baseline: Baseline
    #: after the second run: every enterprise pinned already, as for both job runs; the ratios
    #: are against this one
    baseline: Baseline
    #: what the job must send: grades (scored, not refused by the batch format), list events,
    #: statistics
    expected: dict[str, int]
    first: JobRun
    second: JobRun
    #: records and batches the receiver stored, by kind, read from its DuckDB after it stopped
    stored_records: dict[str, int]
    stored_batches: dict[str, int]
    stored_list_events: dict[str, int]
    unclean_exits: dict[str, int | None]
    #: cores' worth of CPU other processes used while all of ours were idle, just before the
    #: first baseline and just after the last (None where /proc cannot tell)
    other_load_cores: tuple[float | None, float | None]

    @property
    def records(self) -> int:
        return sum(self.first.records.values())

    @property
    def consistent(self) -> bool:
        """Everything expected went up once, and the second run sent nothing."""
        expected = {k: v for k, v in self.expected.items() if v}
        return (
            self.first.records == expected
            and self.stored_records == expected
            and sum(self.second.records.values()) == 0
            and self.second.batches == 0
            and self.stored_list_events
            == {
                k: v
                for k, v in (("published", self.list_entries), ("withdrawn", self.withdrawn))
                if v
            }
        )

    def summary(self) -> dict[str, object]:
        first, second, base = self.first, self.second, self.baseline
        return {
            "enterprises": self.enterprises,
            "departments": self.departments,
            "list_entries": self.list_entries,
            "withdrawn": self.withdrawn,
            "statistics": self.statistics,
            "wall_s": round(first.wall_s, 2),
            "records": self.records,
            "records_by_kind": first.records,
            "records_per_s": round(self.records / first.wall_s, 1),
            "batches": first.batches,
            "baseline_scoring_s": round(base.seconds, 2),
            "baseline_grades_per_s": round(len(base.scored_ids) / base.seconds, 1),
            "first_baseline_scoring_s": round(self.first_baseline.seconds, 2),
            "ratio": round(first.wall_s / base.seconds, 2),
            "phases_s": {k: round(v, 2) for k, v in first.phases},
            "second_run_s": round(second.wall_s, 2),
            "second_run_ratio": round(second.wall_s / base.seconds, 2),
            "second_run_records": sum(second.records.values()),
            "second_run_batches": second.batches,
            "second_run_phases_s": {k: round(v, 2) for k, v in second.phases},
            "job_peak_rss_mb": first.peak_rss_mb,
            "second_run_peak_rss_mb": second.peak_rss_mb,
            "node_cpu_s": _rounded(first.server_cpu_s["nodes"], 1),
            "coordinator_cpu_s": _rounded(first.server_cpu_s["coordinator"], 1),
            "receiver_cpu_s": _rounded(first.server_cpu_s["receiver"], 1),
            "baseline_node_cpu_s": _rounded(base.server_cpu_s["nodes"], 1),
            "baseline_coordinator_cpu_s": _rounded(base.server_cpu_s["coordinator"], 1),
            "first_baseline_coordinator_cpu_s": _rounded(
                self.first_baseline.server_cpu_s["coordinator"], 1
            ),
            "stored_records": self.stored_records,
            "stored_batches": self.stored_batches,
            "consistent": self.consistent,
            "job_exit_codes": [first.exit_code, second.exit_code],
            "seed_s": round(self.seed_s, 2),
            "start_s": round(self.start_s, 2),
            "publish_s": round(self.publish_s, 2),
            "withdraw_s": round(self.withdraw_s, 2),
            "warmup_s": round(self.warmup_s, 2),
            "settled": self.settled,
            "other_load_cores_before": _rounded(self.other_load_cores[0]),
            "other_load_cores_after": _rounded(self.other_load_cores[1]),
            "clean_shutdown": not self.unclean_exits,
        }


def _rounded(value: float | None, digits: int = 2) -> float | None:
    """`value` rounded for the JSON; None for a figure /proc could not give."""
    return None if value is None or math.isnan(value) else round(value, digits)


# --- set-up ----------------------------------------------------------------------------------


def _enterprise_ids(subjects_file: Path) -> list[str]:
    with subjects_file.open(newline="", encoding="utf-8") as f:
        return [r["subject_id"] for r in csv.DictReader(f) if r["subject_kind"] == "enterprise"]


def _write_ids(path: Path, ids: Sequence[str]) -> None:
    path.write_text("subject_id\n" + "".join(f"{i}\n" for i in ids), encoding="utf-8")


def list_entries(
    catalogue: Catalogue, subjects: Sequence[str], *, count: int, today: date, rng: random.Random
) -> list[tuple[ListType, NewEntry]]:
    """`count` enterprise entries spread in turn over every list that takes enterprises, each
    in view today and within its list's longest window."""
    lists = [t for t in catalogue.lists if SubjectKind.ENTERPRISE in t.subject_kinds]
    if not lists:
        raise InvalidArgument("the catalogue has no list that takes enterprises", field="lists")
    # an enterprise's code that also reads as a resident id can go in no sync batch
    eligible = [s for s in subjects if not holds_resident_id(s)]
    if not eligible:
        raise InvalidArgument("no seeded enterprise can be listed", field="enterprises")
    order = rng.sample(eligible, len(eligible))
    out: list[tuple[ListType, NewEntry]] = []
    for i in range(count):
        list_type = lists[i % len(lists)]
        # started up to 200 days ago and as long as the list allows: in view for months yet
        start = today - timedelta(days=i % 200)
        end = start + timedelta(days=list_type.max_window_days - 1)
        entry = NewEntry(
            entry_id=EntryId(f"bench-{list_type.id}-{i:07d}"),
            list=list_type.id,
            subject_kind=SubjectKind.ENTERPRISE,
            subject_id=SubjectId(order[i % len(order)]),
            subject_name=f"Benchmark Trading Co. {i}",
            legal_basis="",
            reason="synthetic entry for the sync benchmark",
            window_start=start,
            window_end=end,
        )
        out.append((list_type, entry))
    return out


def _withdraw_reason(list_type: ListType) -> WithdrawReason:
    # a black list entry leaves after credit repair, a red list honour is revoked
    return (
        WithdrawReason.REPAIRED if list_type.colour is ListColour.BLACK else WithdrawReason.REVOKED
    )


def _sync_toml(*, coordinator: str, province: str, statistics: bool) -> str:
    text = f"""\
sender = "{SENDER}"
signing_key = "keys/{SENDER}-sync.key"
state_dir = "state/sync"

[coordinator]
target = "{coordinator}"
requester = "{SYNC}"
token_file = "{SYNC}.jwt"
paillier_keys = "keys/{SYNC}.paillier"
certs_dir = "certs"

[province]
target = "{province}"

[lists]
every = "0s"

[grades]
enterprises = "enterprises.csv"
every = "0s"

[delivery]
retry_for = "2m"
"""
    if statistics:
        text += f"""
[[statistics]]
name = "enterprises.bench"
subject_kind = "enterprise"
subjects = "cohort.csv"
epsilon = "{STATISTICS_EPSILON}"
"""
    return text


# --- timing the job --------------------------------------------------------------------------


def _phases(lines: Sequence[tuple[float, str]], end: float) -> tuple[tuple[str, float], ...]:
    """Each phase's seconds from the job's timestamped progress lines (time 0: the spawn)."""
    marks: list[tuple[float, str]] = []
    for pattern, key, _label in _MARKS:
        times = [t for t, line in lines if pattern.match(line)]
        if times:
            marks.append((times[-1], key))
    marks.sort()
    out: list[tuple[str, float]] = []
    previous = 0.0
    for at, key in marks:
        out.append((key, at - previous))
        previous = at
    out.append((_EXIT_PHASE[0], end - previous))
    return tuple(out)


def _read_lines(stream: IO[str], t0: float, into: list[tuple[float, str]]) -> None:
    for line in stream:
        into.append((time.perf_counter() - t0, line.rstrip("\n")))


def _server_cpu(groups: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds of each group of processes so far; NaN where /proc cannot tell."""
    out: dict[str, float] = {}
    for name, pids in groups.items():
        seconds = _cpu_seconds(pids)
        out[name] = float("nan") if seconds is None else seconds
    return out


def _cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before[name] for name in before}


def run_job(config: Path, *, work: Path, servers: dict[str, list[int]]) -> JobRun:
    """Run `osmanthus sync run --once` and time it from spawn to exit.

    Progress lines (stderr) are timestamped as they arrive, which splits the wall time into
    phases; they are a few dozen lines, so printing them costs nothing measurable.
    """
    cpu_before = _server_cpu(servers)
    lines: list[tuple[float, str]] = []
    out_path = work / f"sync-run-{time.monotonic_ns()}.out"
    with out_path.open("w", encoding="utf-8") as out:
        t0 = time.perf_counter()
        job = subprocess.Popen(
            osmanthus_command("sync", "run", "--once", "--config", str(config)),
            stdout=out,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        assert job.stderr is not None
        reader = threading.Thread(
            target=_read_lines, args=(job.stderr, t0, lines), name="sync-stderr", daemon=True
        )
        reader.start()
        timer = threading.Timer(JOB_TIMEOUT_S, job.kill)
        timer.start()
        try:
            # wait4 rather than wait: it also gives the process's own peak RSS
            _, status, usage = os.wait4(job.pid, 0)
        finally:
            timer.cancel()
        wall_s = time.perf_counter() - t0
        job.returncode = os.waitstatus_to_exitcode(status)
        reader.join()
        job.stderr.close()
    cpu_after = _server_cpu(servers)
    report = _status(config)
    last = report.get("last_run") or {}
    summary = last.get("summary") or {}
    stdout = out_path.read_text(encoding="utf-8")
    tail = "\n".join(line for _, line in lines[-15:]) + ("\n" + stdout if stdout else "")
    return JobRun(
        wall_s=wall_s,
        exit_code=job.returncode,
        summary=summary,
        # ru_maxrss is in kilobytes on Linux
        peak_rss_mb=round(usage.ru_maxrss / 1024, 1),
        phases=_phases(lines, wall_s),
        server_cpu_s=_cpu_delta(cpu_before, cpu_after),
        stderr_tail=tail,
    )


def _status(config: Path) -> dict[str, Any]:
    done = subprocess.run(
        osmanthus_command("sync", "status", "--json", "--config", str(config)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise OsmanthusError(f"'sync status' failed ({done.returncode}): {done.stderr.strip()}")
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def _stored(state_dir: Path) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """Records and batches by kind, and list events by event, in a stopped receiver's store."""
    with duckdb.connect(str(state_dir / STORE_FILE), read_only=True) as conn:
        records = dict(
            conn.execute(
                "SELECT b.kind, count(*) FROM records r JOIN batches b USING (batch_id) "
                "GROUP BY b.kind"
            ).fetchall()
        )
        batches = dict(conn.execute("SELECT kind, count(*) FROM batches GROUP BY kind").fetchall())
        changes = conn.execute(
            "SELECT r.record FROM records r JOIN batches b USING (batch_id) "
            "WHERE b.kind = 'list_changes'"
        ).fetchall()
    events = Counter(json.loads(text)["event"] for (text,) in changes)
    return (
        {str(k): int(v) for k, v in records.items()},
        {str(k): int(v) for k, v in batches.items()},
        dict(events),
    )


def time_baseline(
    client: Client, roster: Sequence[str], *, servers: dict[str, list[int]]
) -> Baseline:
    """Score the roster as the job does (TOTAL, its purpose, the default chunks and decryption
    workers), in this process."""
    scored: list[str] = []
    cpu_before = _server_cpu(servers)
    t0 = time.perf_counter()
    for row in client.batch_scores(
        roster, purpose=GRADES_PURPOSE, kind=SubjectKind.ENTERPRISE, shape=Shape.TOTAL
    ):
        if row.refused is None:
            scored.append(row.subject_id)
    seconds = time.perf_counter() - t0
    return Baseline(seconds, tuple(scored), _cpu_delta(cpu_before, _server_cpu(servers)))


def other_load(ours: Sequence[int], seconds: float = _OTHER_LOAD_S) -> float | None:
    """Cores' worth of CPU the rest of the machine uses over `seconds`, ours being idle."""
    busy0, ours0 = _machine_busy_seconds(), _cpu_seconds(ours)
    time.sleep(seconds)
    busy1, ours1 = _machine_busy_seconds(), _cpu_seconds(ours)
    if busy0 is None or busy1 is None or ours0 is None or ours1 is None:
        return None
    return max(0.0, ((busy1 - busy0) - (ours1 - ours0)) / seconds)


# --- the benchmark ---------------------------------------------------------------------------


def run_benchmark(
    *,
    enterprises: int,
    entries: int,
    statistics: bool = False,
    rng_seed: int = DEFAULT_SEED,
    progress: Callable[[str], None] = lambda _msg: None,
) -> SyncResult:
    if enterprises < WARMUP_CHUNKS:
        raise InvalidArgument(
            f"must be {WARMUP_CHUNKS} or more (the warm-up scores that many), got {enterprises}",
            field="enterprises",
        )
    if entries < WITHDRAW_EVERY:
        raise InvalidArgument(
            f"must be {WITHDRAW_EVERY} or more, so that some are withdrawn, got {entries}",
            field="list_entries",
        )
    catalogue = load_catalogue()
    enterprise_depts = [d.id for d in catalogue.departments_for(SubjectKind.ENTERPRISE)]
    publishing = sorted({str(t.department) for t in catalogue.lists})
    missing = [d for d in publishing if d not in enterprise_depts]
    if missing:
        raise InvalidArgument(
            f"list departments {', '.join(missing)} serve no enterprise: the job's list feed "
            "would find their nodes down",
            field="catalogue",
        )
    rng = random.Random(rng_seed)
    with tempfile.TemporaryDirectory(prefix="osmanthus-bench-sync-") as tmp:
        work = Path(tmp)
        progress(f"seeding {enterprises} enterprises into the {len(enterprise_depts)} "
                 "enterprise departments")  # fmt: skip
        t_seed = time.perf_counter()
        subprocess.run(
            osmanthus_command(
                "seed",
                "--out", str(work / "data"),
                "--persons", "0",
                "--enterprises", str(enterprises),
                "--seed", str(rng_seed),
                "--quiet",
                "--no-scene",
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        seed_s = time.perf_counter() - t_seed
        roster = _enterprise_ids(work / "data" / "subjects.csv")
        _write_ids(work / "enterprises.csv", roster)
        statistic_names: tuple[str, ...] = ()
        if statistics:
            _write_ids(work / "cohort.csv", roster[:MAX_COHORT])
            layout = SlotLayout.for_catalogue(catalogue, SubjectKind.ENTERPRISE, Shape.BREAKDOWN)
            statistic_names = tuple(layout.names)

        progress("creating the platform CA, certificates, keys and the job's files")
        certs = work / "certs"
        # the receiver serves with a node certificate named `province`
        init_platform(certs, departments=[*enterprise_depts, RECEIVER], requesters=[SYNC])
        officers_tls = {
            dept: TlsFiles.from_cert_paths(
                issue_certificate(certs, role=PeerRole.OPERATOR, name=dept)
            )
            for dept in publishing
        }
        issuer_dir = work / "issuer"
        generate_issuer_keypair(issuer_dir / "issuer.key", issuer_dir / "issuer.pub")
        keys_dir = work / "keys"
        keys_dir.mkdir()
        keys = load_or_create_keys(keys_dir / f"{SYNC}.paillier")
        token = TokenIssuer.from_file(issuer_dir / "issuer.key").issue(
            requester=SYNC,
            role=Role.SYNC_JOB,
            purposes=[GRADES_PURPOSE, "statistics"],
            key_fingerprint=keys.fingerprint,
            ttl=_TOKEN_TTL,
        )
        (work / f"{SYNC}.jwt").write_text(token, encoding="utf-8")
        _, public, _ = signing.write_key_pair(keys_dir, f"{SENDER}-sync", what="sender key")
        (work / "senders.toml").write_text(
            f'[[sender]]\nid = "{SENDER}"\npublic_keys = ["keys/{public.name}"]\n'
            f'certificates = ["{SYNC}"]\n',
            encoding="utf-8",
        )

        run_dir = work / "run"
        federation = LocalFederation(
            data_dir=work / "data",
            certs_dir=certs,
            issuer_public_key=issuer_dir / "issuer.pub",
            run_dir=run_dir,
            departments=enterprise_depts,
        )
        receiver: Process | None = None
        codes: dict[str, int | None] = {}
        try:
            progress(f"starting {len(enterprise_depts)} nodes, the coordinator and the receiver")
            t_start = time.perf_counter()
            coordinator_port = federation.start()
            receiver = spawn(
                "receiver",
                osmanthus_command(
                    "province", "serve",
                    "--senders", str(work / "senders.toml"),
                    "--state-dir", str(work / "state" / "province"),
                    "--certs-dir", str(certs),
                    "--listen", "127.0.0.1:0",
                ),
                run_dir=run_dir,
            )  # fmt: skip
            receiver_port = receiver.wait_ready()
            start_s = time.perf_counter() - t_start
            assert federation.coordinator is not None
            servers = {
                "nodes": [p.popen.pid for p in federation.nodes.values()],
                "coordinator": [federation.coordinator.popen.pid],
                "receiver": [receiver.popen.pid],
            }
            every_server = [pid for pids in servers.values() for pid in pids]
            config = work / "sync.toml"
            config.write_text(
                _sync_toml(
                    coordinator=f"127.0.0.1:{coordinator_port}",
                    province=f"127.0.0.1:{receiver_port}",
                    statistics=statistics,
                ),
                encoding="utf-8",
            )

            planned = list_entries(catalogue, roster, count=entries, today=china_today(), rng=rng)
            by_dept: dict[str, list[NewEntry]] = {}
            for list_type, entry in planned:
                by_dept.setdefault(str(list_type.department), []).append(entry)
            progress(f"publishing {entries} list entries through {len(by_dept)} departments' "
                     "nodes")  # fmt: skip
            officers = {
                dept: ListOfficer(
                    f"127.0.0.1:{federation.nodes[dept].port}",
                    department=dept,
                    tls=officers_tls[dept],
                )
                for dept in by_dept
            }
            try:
                t_publish = time.perf_counter()
                for dept, batch in by_dept.items():
                    officers[dept].publish(batch)
                publish_s = time.perf_counter() - t_publish
                # a random tenth, in publication order: every list loses some
                picked = sorted(rng.sample(range(len(planned)), len(planned) // WITHDRAW_EVERY))
                withdrawals = [planned[i] for i in picked]
                progress(f"withdrawing {len(withdrawals)} of them")
                t_withdraw = time.perf_counter()
                for list_type, entry in withdrawals:
                    officers[str(list_type.department)].withdraw(
                        entry.entry_id,
                        reason=_withdraw_reason(list_type),
                        reference=f"bench withdrawal {entry.entry_id}",
                    )
                withdraw_s = time.perf_counter() - t_withdraw
            finally:
                for officer in officers.values():
                    officer.close()

            tls = TlsFiles.from_cert_paths(cert_paths(certs, role=PeerRole.REQUESTER, name=SYNC))
            target = f"127.0.0.1:{coordinator_port}"
            with Client(target, tls=tls, token=token, keys=keys, catalogue=catalogue) as client:
                progress(
                    f"warming up: {WARMUP_CHUNKS} chunks of one enterprise, then waiting for "
                    "every node to build its encryption table for the job's key"
                )
                t_warm = time.perf_counter()
                client.register_key()
                for row in client.batch_scores(
                    roster[:WARMUP_CHUNKS],
                    purpose=GRADES_PURPOSE,
                    kind=SubjectKind.ENTERPRISE,
                    shape=Shape.TOTAL,
                    chunk_size=1,
                ):
                    if row.refused is not None:
                        raise OsmanthusError(f"warm-up: {row.subject_id} refused: {row.refused}")
                settled = wait_until_idle(every_server)
                warmup_s = time.perf_counter() - t_warm
                if not settled:
                    progress("the servers did not go idle; timing anyway ('settled' is false)")

                ours = [os.getpid(), *every_server]
                load_before = other_load(ours)
                progress(f"baseline: scoring the {len(roster)} enterprises in this process "
                         "(their first disclosure to the job's requester)")  # fmt: skip
                first_baseline = time_baseline(client, roster, servers=servers)
                wait_until_idle(every_server)
                progress("timing 'osmanthus sync run --once': the first run")
                first = run_job(config, work=work, servers=servers)
                progress(f"first run: exit {first.exit_code}, {first.wall_s:.1f} s")
                wait_until_idle(every_server)
                progress("timing the second run: nothing changed")
                second = run_job(config, work=work, servers=servers)
                progress(f"second run: exit {second.exit_code}, {second.wall_s:.1f} s")
                wait_until_idle(every_server)
                progress("baseline again, every enterprise now pinned as for the job's runs")
                baseline = time_baseline(client, roster, servers=servers)
                wait_until_idle(every_server)
                load_after = other_load(ours)
            # the job leaves out a grade whose credit code also reads as a resident id
            grades_expected = sum(not holds_resident_id(c) for c in first_baseline.scored_ids)
            codes["receiver"] = receiver.stop()
            receiver = None
            stored = _stored(work / "state" / "province")
        finally:
            if receiver is not None:
                codes["receiver"] = receiver.stop()
            codes.update(federation.stop())
    expected = {
        "grades": grades_expected,
        "list_changes": len(planned) + len(withdrawals),
        "statistics": len(statistic_names),
    }
    return SyncResult(
        enterprises=len(roster),
        departments=len(enterprise_depts),
        list_entries=len(planned),
        withdrawn=len(withdrawals),
        statistics=len(statistic_names),
        seed_s=seed_s,
        start_s=start_s,
        publish_s=publish_s,
        withdraw_s=withdraw_s,
        warmup_s=warmup_s,
        settled=settled,
        first_baseline=first_baseline,
        baseline=baseline,
        expected=expected,
        first=first,
        second=second,
        stored_records=stored[0],
        stored_batches=stored[1],
        stored_list_events=stored[2],
        unclean_exits={name: code for name, code in codes.items() if code != 0},
        other_load_cores=(load_before, load_after),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sync",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--enterprises", type=int, default=100_000, help="enterprises seeded and graded"
    )
    parser.add_argument(
        "--list-entries",
        type=int,
        default=10_000,
        help=f"list entries published before the run; one in {WITHDRAW_EVERY} is then withdrawn",
    )
    parser.add_argument(
        "--statistics",
        action="store_true",
        help=f"also report every statistic over one cohort of up to {MAX_COHORT} enterprises",
    )
    return parser


def _print_table(result: SyncResult) -> None:
    s = result.summary()
    first, second = result.first, result.second
    labels = {key: label for _, key, label in _MARKS} | {_EXIT_PHASE[0]: _EXIT_PHASE[1]}
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(first.records.items())) or "none"
    print(f"enterprises × departments   {result.enterprises} × {result.departments}")
    print(f"list entries                {result.list_entries} published, "
          f"{result.withdrawn} withdrawn")  # fmt: skip
    print(f"first run                   {s['wall_s']} s: {s['records']} records ({kinds}) in "
          f"{first.batches} batches, {s['records_per_s']} records/s")  # fmt: skip
    for key, seconds in first.phases:
        print(f"  {labels[key]:<52} {seconds:8.2f} s")
    print(f"baseline (same run)         {s['baseline_scoring_s']} s: batch_scores over the "
          f"roster in-process, after the runs ({s['baseline_grades_per_s']} grades/s)")  # fmt: skip
    print(f"  its first pass, before the job (first disclosure: the coordinator pins) "
          f"{s['first_baseline_scoring_s']} s")  # fmt: skip
    print(f"first run / baseline        {s['ratio']}×")
    print(f"second run (nothing new)    {s['second_run_s']} s, {s['second_run_records']} "
          f"records, {second.batches} batches: {s['second_run_ratio']}× the baseline")  # fmt: skip
    for key, seconds in second.phases:
        print(f"  {labels[key]:<52} {seconds:8.2f} s")
    print(f"server CPU, first run       nodes {s['node_cpu_s']} s, coordinator "
          f"{s['coordinator_cpu_s']} s, receiver {s['receiver_cpu_s']} s")  # fmt: skip
    print(f"server CPU, baseline        nodes {s['baseline_node_cpu_s']} s, coordinator "
          f"{s['baseline_coordinator_cpu_s']} s")  # fmt: skip
    print(f"job peak RSS                {first.peak_rss_mb} MB (second run "
          f"{second.peak_rss_mb} MB)")  # fmt: skip
    print(f"receiver holds              {result.stored_records} in {result.stored_batches} "
          f"batches; consistent: {result.consistent}")  # fmt: skip
    print(f"set-up                      seed {s['seed_s']} s, start {s['start_s']} s, "
          f"publish {s['publish_s']} s, withdraw {s['withdraw_s']} s, "
          f"warm-up {s['warmup_s']} s")  # fmt: skip
    print(f"other load (2 cores)        {s['other_load_cores_before']} cores before the "
          f"first baseline, {s['other_load_cores_after']} after the last")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def progress(text: str) -> None:
        print(f"[{datetime.now(UTC):%H:%M:%S}] {text}", file=sys.stderr, flush=True)

    try:
        result = run_benchmark(
            enterprises=args.enterprises,
            entries=args.list_entries,
            statistics=args.statistics,
            progress=progress,
        )
    except OsmanthusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    for run in (result.first, result.second):
        if run.exit_code != 0 or run.errors:
            print(f"sync run exited {run.exit_code}; its last lines:\n{run.stderr_tail}",
                  file=sys.stderr)  # fmt: skip
    _print_table(result)
    print(json.dumps(result.summary()))
    failed = result.first.exit_code or result.second.exit_code
    return 0 if not failed and result.consistent and not result.unclean_exits else 1


if __name__ == "__main__":
    raise SystemExit(main())

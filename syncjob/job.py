"""One run of the provincial sync job: gather what changed, batch and sign it, deliver it.

A run has three gathering phases, each on its own schedule, and a delivery phase:

- **lists**: each list-publishing department's change feed after the job's cursor (through the
  coordinator, role sync_job), plus the expiries the job derives from the windows it reported;
- **grades**: every enterprise of the roster scored in one BatchQuery (TOTAL, purpose
  credit_rescoring), staged as it comes so a stopped run resumes; only grades that changed since
  the last batch go up;
- **statistics**: STATS over each configured cohort; an answer is staged at once, since its ε is
  spent; a statistic a department could not answer goes up with no value, marked partial.

Each phase ends in one transaction that puts its signed batches in the outbox and moves its
cursors (syncjob.state). Delivery then sends the outbox in order, retrying what is retryable
with exponential backoff and full jitter, and checkpoints each batch as the receiver acknowledges
it. A run stopped anywhere (kill -9 included) resumes from the state file with no record lost or
sent twice: what was committed is resent as the same signed bytes, what was not is gathered again.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from osmanthus.catalogue import Catalogue
from osmanthus.encoding import SlotLayout
from osmanthus.errors import (
    FailedPrecondition,
    InvalidArgument,
    OsmanthusError,
    Unavailable,
)
from osmanthus.lists import ListChange, ListChangeEvent, holds_resident_id
from osmanthus.policy import POLICY_TIME_ZONE
from osmanthus.syncbatch import (
    MAX_RECORDS_BYTES,
    BatchKind,
    build_batch,
    grade_record,
    list_change_record,
    record_size,
    sign_batch,
    statistic_record,
)
from osmanthus.types import Shape, SubjectKind
from sdk.batchjob import read_ids
from syncjob.config import StatisticSpec, SyncConfig
from syncjob.state import OpenEntry, OutboxBatch, Run, StagedGrade, SyncState

if TYPE_CHECKING:
    from province.client import ProvinceClient
    from sdk import Client
    from syncjob.metrics import SyncMetrics

_log = logging.getLogger(__name__)

#: the purposes the central policy grants the sync job
GRADES_PURPOSE: Final = "credit_rescoring"
STATISTICS_PURPOSE: Final = "statistics"
#: events asked per list feed page (the coordinator takes 1 to 1000)
LIST_PAGE_SIZE: Final = 500
#: grades staged per transaction while a roster is scored
STAGE_EVERY: Final = 5_000
#: a cohort's size limits (the coordinator's minimum and MAX_COHORT)
MIN_COHORT: Final = 10
MAX_COHORT: Final = 50_000
_RECORD_INDEX: Final = re.compile(r"records\[(\d+)\]")


@dataclass
class RunSummary:
    """What one run did: printed at its end, kept in the state file, exported as metrics."""

    run: str
    resumed: bool
    started_at: datetime
    #: batches put in the outbox, by kind
    built: dict[str, int] = field(default_factory=dict)
    #: batches and records the receiver acknowledged, by kind
    delivered: dict[str, int] = field(default_factory=dict)
    records: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    retries: int = 0
    #: what is partial and why ("lists: customs did not answer")
    partial: list[str] = field(default_factory=list)
    #: records or subjects left out, and why
    skipped: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    exit_code: int = 0
    duration_s: float = 0.0

    def fail(self, work: str, error: OsmanthusError) -> None:
        self.errors.append(f"{work}: {error}")
        if not self.exit_code:
            self.exit_code = error.exit_code

    def as_dict(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "resumed": self.resumed,
            "built": self.built,
            "delivered": self.delivered,
            "records": self.records,
            "duplicates": self.duplicates,
            "retries": self.retries,
            "partial": self.partial,
            "skipped": self.skipped[:50],
            "errors": self.errors,
            "exit_code": self.exit_code,
            "duration_s": round(self.duration_s, 3),
        }

    def line(self) -> str:
        batches = sum(self.delivered.values())
        records = sum(self.records.values())
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.delivered.items())) or "none"
        text = (
            f"run {self.run}{' (resumed)' if self.resumed else ''}: {batches} batches "
            f"({kinds}), {records} records, {self.duplicates} duplicates, {self.retries} "
            f"retries, {self.duration_s:.1f} s"
        )
        if self.partial:
            text += f"; partial: {'; '.join(self.partial)}"
        if self.errors:
            text += f"; {len(self.errors)} errors (first: {self.errors[0]})"
        return text


class Stopped(Exception):
    """The job was asked to stop (SIGTERM, Ctrl-C) while it waited."""


class SyncJob:
    """The sync job over one state directory; `run_once` is one run."""

    def __init__(
        self,
        *,
        config: SyncConfig,
        state: SyncState,
        client: Client,
        province: ProvinceClient,
        signing_key: Ed25519PrivateKey,
        catalogue: Catalogue,
        metrics: SyncMetrics | None = None,
        stop: threading.Event | None = None,
        progress: Callable[[str], None] = lambda _: None,
        grade_progress: Callable[[int, int], None] = lambda done, total: None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
    ) -> None:
        self._config = config
        self._state = state
        self._client = client
        self._province = province
        self._key = signing_key
        self._catalogue = catalogue
        self._metrics = metrics
        self._stop = stop or threading.Event()
        self._say = progress
        self._grade_progress = grade_progress
        self._clock = clock
        # jitter needs no secrecy, but a seeded generator per job would march in step
        self._rng = rng or random.SystemRandom()

    # --- the run ---------------------------------------------------------------------------------

    def run_once(self) -> RunSummary:
        started = time.monotonic()
        now = self._clock()
        run = self._state.begin_run(now)
        summary = RunSummary(run=run.tag, resumed=run.resumed, started_at=run.started_at)
        self._say(f"run {run.tag}{' resumed' if run.resumed else ''}")
        try:
            # batches a stopped run left in the outbox go first: a stream is sent in order
            self._deliver(summary)
            for phase, gather in (
                ("lists", self._gather_lists),
                ("grades", self._gather_grades),
                ("statistics", self._gather_statistics),
            ):
                self._check_stop()
                try:
                    gather(run, summary)
                except Stopped:
                    raise
                except OsmanthusError as exc:
                    self._error(summary, phase, exc)
            self._deliver(summary)
            finished = True
        except Stopped:
            summary.errors.append("stopped before the run finished; the next run resumes it")
            summary.exit_code = summary.exit_code or 130
            finished = False
        summary.duration_s = time.monotonic() - started
        # a run that met errors is finished all the same: what failed is due again next run,
        # batches not delivered stay in the outbox, and grades half scored stay staged
        if finished:
            self._state.finish_run(run, now=self._clock(), summary=summary.as_dict())
        if self._metrics is not None:
            self._metrics.observe_run(summary, outbox=self._state.outbox(), finished=finished)
        return summary

    def _error(self, summary: RunSummary, work: str, exc: OsmanthusError) -> None:
        summary.fail(work, exc)
        self._state.record_error(work, str(exc), at=self._clock())
        if self._metrics is not None:
            self._metrics.error(work)
        self._say(f"{work}: {exc}")

    def _check_stop(self) -> None:
        if self._stop.is_set():
            raise Stopped

    def _due(self, work: str, every: timedelta) -> bool:
        last = self._state.last_done(work)
        return last is None or last + every <= self._clock()

    def _today(self) -> date:
        return self._clock().astimezone(POLICY_TIME_ZONE).date()

    # --- lists -----------------------------------------------------------------------------------

    def _gather_lists(self, run: Run, summary: RunSummary) -> None:
        if not self._config.lists_enabled or self._state.phase_done(run, "lists"):
            return
        if not self._due("lists", self._config.lists_every):
            return
        departments = sorted({str(t.department) for t in self._catalogue.lists})
        events: list[ListChangeEvent] = []
        cursors: dict[str, str] = {}
        missing: dict[str, str] = {}
        for department in departments:
            self._check_stop()
            cursor = self._state.list_cursor(department)
            read = 0
            try:
                while True:
                    page = self._client.list_changes(
                        department, after=cursor, page_size=LIST_PAGE_SIZE
                    )
                    events.extend(page.events)
                    read += len(page.events)
                    cursor = page.next_cursor
                    if not page.more:
                        break
            except OsmanthusError as exc:
                if not exc.retryable:
                    raise
                # what was read stands; the rest comes in a later run
                missing[department] = str(exc)
            if cursor != self._state.list_cursor(department):
                cursors[department] = cursor
            self._say(
                f"lists: {department} {read} events"
                + (f", did not answer ({missing[department]})" if department in missing else "")
            )
        if len(missing) == len(departments):
            raise Unavailable(
                "no department's list changes could be read (is the coordinator up?): "
                + "; ".join(f"{d}: {m}" for d, m in missing.items())
            )
        records, opened, closed = list_change_records(
            events, open_entries=self._state.open_entries(), today=self._today()
        )
        for department in missing:
            summary.partial.append(f"lists: {department} did not answer")
        batches = (
            self._batches(run, BatchKind.LIST_CHANGES, records, missing=sorted(missing))
            if records or missing
            else []
        )
        self._state.commit_list_changes(
            run,
            batches=batches,
            cursors=cursors,
            opened=opened,
            closed=closed,
            complete=not missing,
            now=self._clock(),
        )
        self._built(summary, BatchKind.LIST_CHANGES, batches)

    # --- grades ----------------------------------------------------------------------------------

    def _gather_grades(self, run: Run, summary: RunSummary) -> None:
        roster = self._config.enterprises
        if roster is None or self._state.phase_done(run, "grades"):
            return
        if not self._due("grades", self._config.grades_every):
            return
        codes = list(_distinct(read_ids(roster)))
        # grades an earlier run scored before it failed are kept, not scored again
        done = self._state.adopt_staged_grades(run)
        self._grade_progress(done, len(codes))
        expected = len(self._catalogue.departments_for(SubjectKind.ENTERPRISE))
        as_of = self._today().isoformat()
        if done < len(codes):
            self._say(f"grades: scoring {len(codes) - done} of {len(codes)} enterprises")
            buffer: list[StagedGrade] = []
            try:
                scores = self._client.batch_scores(
                    codes[done:],
                    purpose=GRADES_PURPOSE,
                    kind=SubjectKind.ENTERPRISE,
                    shape=Shape.TOTAL,
                )
                for position, row in enumerate(scores, start=done):
                    refused = row.refused
                    if refused is None and holds_resident_id(row.subject_id):
                        refused = (
                            "the credit code also reads as a resident identity number, which "
                            "no sync batch may carry"
                        )
                    buffer.append(
                        StagedGrade(
                            position=position,
                            credit_code=row.subject_id if refused is None else codes[position],
                            grade=row.grade if refused is None else None,
                            score=row.score if refused is None else None,
                            departments_answered=expected if refused is None else None,
                            as_of=as_of,
                            refused=refused,
                        )
                    )
                    if len(buffer) >= STAGE_EVERY:
                        self._state.stage_grades(run, buffer)
                        self._grade_progress(position + 1, len(codes))
                        buffer = []
                        self._check_stop()
            finally:
                # every row yielded stands, even when the stream failed after it
                if buffer:
                    self._state.stage_grades(run, buffer)
                    self._grade_progress(buffer[-1].position + 1, len(codes))
        for refused_row in self._state.refused_grades(run):
            summary.skipped.append(f"grades: row {refused_row.position + 2}: {refused_row.refused}")
        changed = list(self._state.changed_grades(run))
        records = [
            grade_record(
                credit_code=g.credit_code,
                grade=str(g.grade),
                score=int(g.score or 0),
                as_of=date.fromisoformat(g.as_of),
                departments_answered=int(g.departments_answered or 0),
            )
            for g in changed
        ]
        self._say(f"grades: {len(records)} of {len(codes)} enterprises changed")
        batches = self._batches(run, BatchKind.GRADES, records) if records else []
        self._state.commit_grades(run, batches=batches, sent=changed, now=self._clock())
        self._built(summary, BatchKind.GRADES, batches)

    # --- statistics ------------------------------------------------------------------------------

    def _gather_statistics(self, run: Run, summary: RunSummary) -> None:
        if not self._config.statistics or self._state.phase_done(run, "statistics"):
            return
        staged = self._state.staged_statistics(run)
        due = [
            s
            for s in self._config.statistics
            if s.name in staged or self._due(f"statistic:{s.name}", s.every)
        ]
        if not due:
            return
        for spec in due:
            if spec.name in staged:
                continue
            self._check_stop()
            try:
                records, complete = self._statistic(spec)
            except OsmanthusError as exc:
                # not staged: asked again next run (a refused query spent no ε)
                self._error(summary, f"statistics {spec.name}", exc)
                continue
            self._state.stage_statistic(run, spec.name, records, complete=complete)
            staged[spec.name] = (records, complete)
        records = [r for name in sorted(staged) for r in staged[name][0]]
        for name, (named, complete) in sorted(staged.items()):
            if not complete:
                missing = named[0]["missing_departments"] if named else []
                summary.partial.append(
                    f"statistics {name}: no value, {', '.join(missing)} did not answer"
                )
        batches = self._batches(run, BatchKind.STATISTICS, records) if records else []
        self._state.commit_statistics(
            run,
            batches=batches,
            completed=[name for name, (_, complete) in staged.items() if complete],
            now=self._clock(),
        )
        self._built(summary, BatchKind.STATISTICS, batches)

    def _statistic(self, spec: StatisticSpec) -> tuple[list[dict[str, Any]], bool]:
        cohort = list(_distinct(read_ids(spec.subjects)))
        if not MIN_COHORT <= len(cohort) <= MAX_COHORT:
            raise InvalidArgument(
                f"{spec.subjects} holds {len(cohort)} distinct subjects; a cohort has "
                f"{MIN_COHORT} to {MAX_COHORT}",
                field=f"statistics.{spec.name}.subjects",
            )
        layout = SlotLayout.for_catalogue(self._catalogue, spec.subject_kind, Shape.BREAKDOWN)
        asked = spec.statistics or layout.names
        as_of = self._today()
        try:
            result = self._client.stats(
                cohort,
                kind=spec.subject_kind,
                purpose=STATISTICS_PURPOSE,
                epsilon=spec.epsilon,
                statistics=spec.statistics,
            )
        except Unavailable as exc:
            if not exc.departments:
                raise
            self._say(f"statistics {spec.name}: {', '.join(exc.departments)} did not answer")
            return [
                statistic_record(
                    name=f"{spec.name}.{statistic}",
                    subject_kind=spec.subject_kind,
                    cohort_size=len(cohort),
                    value=None,
                    noise_scale=None,
                    epsilon=None,
                    as_of=as_of,
                    missing_departments=exc.departments,
                )
                for statistic in asked
            ], False
        self._say(f"statistics {spec.name}: ε {result.epsilon} spent, {result.epsilon_left} left")
        return [
            statistic_record(
                name=f"{spec.name}.{statistic}",
                subject_kind=spec.subject_kind,
                cohort_size=result.cohort,
                value=value,
                noise_scale=result.noise_scales[statistic],
                epsilon=result.epsilon,
                as_of=as_of,
            )
            for statistic, value in result.sums.items()
        ], True

    # --- batches ---------------------------------------------------------------------------------

    def _batches(
        self,
        run: Run,
        kind: BatchKind,
        records: Sequence[dict[str, Any]],
        *,
        missing: Sequence[str] = (),
    ) -> list[OutboxBatch]:
        """Signed batches continuing `kind`'s stream: records packed up to the size limit,
        watermarks `<run tag>.<n>`."""
        sequence, start = self._state.next_position(kind)
        built: list[OutboxBatch] = []
        now = self._clock().replace(microsecond=0)
        groups = list(_packed(records)) or [[]]
        for index, group in enumerate(groups, start=1):
            end = f"{run.tag}.{index}"
            batch = self._build(kind, sequence, start, end, group, missing, now)
            signed = sign_batch(batch, private_key=self._key)
            built.append(
                OutboxBatch(
                    kind=kind,
                    sequence=sequence,
                    batch_id=batch.batch_id,
                    watermark_from=start,
                    watermark_to=end,
                    records=len(batch.records),
                    partial=batch.partial,
                    signed=signed,
                    built_at=now,
                    attempts=0,
                )
            )
            sequence, start = sequence + 1, end
        return built

    def _build(
        self,
        kind: BatchKind,
        sequence: int,
        start: str,
        end: str,
        records: list[dict[str, Any]],
        missing: Sequence[str],
        now: datetime,
    ) -> Any:
        # a record the format refuses is left out and logged, never allowed to hold the stream
        while True:
            try:
                return build_batch(
                    sender=self._config.sender,
                    kind=kind,
                    sequence=sequence,
                    watermark_from=start,
                    watermark_to=end,
                    records=records,
                    created_at=now,
                    missing_departments=missing,
                )
            except InvalidArgument as exc:
                match = _RECORD_INDEX.match(exc.field or "")
                if match is None:
                    raise
                bad = int(match.group(1))
                _log.error("%s record left out of the batch: %s", kind.value, exc)
                self._state.record_error(
                    f"{kind.value} record", f"left out: {exc}", at=self._clock()
                )
                records = records[:bad] + records[bad + 1 :]

    def _built(self, summary: RunSummary, kind: BatchKind, batches: Sequence[OutboxBatch]) -> None:
        if batches:
            summary.built[kind.value] = summary.built.get(kind.value, 0) + len(batches)
            self._say(
                f"{kind.value}: {len(batches)} batches, "
                f"{sum(b.records for b in batches)} records ready to send"
            )

    # --- delivery --------------------------------------------------------------------------------

    def _deliver(self, summary: RunSummary) -> None:
        blocked: set[BatchKind] = set()
        for batch in self._state.outbox():
            if batch.kind in blocked:
                continue
            self._check_stop()
            try:
                self._send(batch, summary)
            except Stopped:
                raise
            except OsmanthusError as exc:
                # later batches of this stream would be a gap: hold them; other streams go on
                blocked.add(batch.kind)
                self._error(summary, f"deliver {batch.kind.value} #{batch.sequence}", exc)

    def _send(self, batch: OutboxBatch, summary: RunSummary) -> None:
        delivery_cfg = self._config.delivery
        give_up = time.monotonic() + delivery_cfg.retry_for.total_seconds()
        attempt = 0
        while True:
            self._state.count_attempt(batch)
            try:
                answer = self._province.deliver(batch.signed)
                break
            except OsmanthusError as exc:
                if not exc.retryable:
                    raise
                cap = min(
                    delivery_cfg.backoff_max.total_seconds(),
                    delivery_cfg.backoff_initial.total_seconds() * 2**attempt,
                )
                wait = self._rng.uniform(0, cap)
                if time.monotonic() + wait > give_up:
                    raise Unavailable(
                        f"the receiver did not take batch {batch.batch_id} within "
                        f"{delivery_cfg.retry_for} ({attempt + 1} attempts; last: {exc}); it "
                        "stays in the outbox for the next run"
                    ) from None
                attempt += 1
                summary.retries += 1
                if self._metrics is not None:
                    self._metrics.retry()
                self._say(
                    f"deliver {batch.kind.value} #{batch.sequence}: {exc.message}; "
                    f"retry {attempt} in {wait:.1f} s"
                )
                if self._stop.wait(wait):
                    raise Stopped from None
        if answer.batch_id != batch.batch_id or answer.sequence != batch.sequence:
            raise FailedPrecondition(
                f"the receiver acknowledged batch {answer.batch_id} #{answer.sequence} for "
                f"{batch.batch_id} #{batch.sequence}: it is not the receiver this job reports to, "
                "or its store was changed"
            )
        self._state.acknowledge(batch, at=self._clock())
        kind = batch.kind.value
        summary.delivered[kind] = summary.delivered.get(kind, 0) + 1
        summary.records[kind] = summary.records.get(kind, 0) + batch.records
        summary.duplicates += int(answer.duplicate)
        if self._metrics is not None:
            self._metrics.delivered(batch, duplicate=answer.duplicate)
        self._say(
            f"delivered {kind} #{batch.sequence} ({batch.records} records"
            f"{', already held' if answer.duplicate else ''})"
        )


def list_change_records(
    events: Sequence[ListChangeEvent], *, open_entries: Sequence[OpenEntry], today: date
) -> tuple[list[dict[str, Any]], list[OpenEntry], list[tuple[str, str]]]:
    """The records of `events` (in order), then of the expiries due by `today` (China date):
    an entry reported published and neither withdrawn nor reported expired expires the day after
    its window ends. Also the entries left open (to remember) and those that closed (to forget).
    """
    known = {(e.department, e.entry_id): e for e in open_entries}
    opened: dict[tuple[str, str], OpenEntry] = {}
    closed: set[tuple[str, str]] = set()
    records: list[dict[str, Any]] = []
    for event in events:
        entry = event.entry
        key = (str(entry.department), str(entry.entry_id))
        record = list_change_record(
            entry, event=event.event, at=event.at, withdraw_reason=event.withdraw_reason
        )
        records.append(record)
        if event.event is ListChange.PUBLISHED:
            opened[key] = OpenEntry(
                department=key[0],
                entry_id=key[1],
                window_end=entry.window_end.isoformat(),
                record=record,
            )
            closed.discard(key)
        else:
            opened.pop(key, None)
            if key in known:
                closed.add(key)
    candidates = [e for k, e in known.items() if k not in closed] + list(opened.values())
    for candidate in sorted(candidates, key=lambda e: (e.window_end, e.department, e.entry_id)):
        end = date.fromisoformat(candidate.window_end)
        if end >= today:
            continue
        # the entry left view at the first moment of the day after its window (China time)
        left = datetime.combine(end + timedelta(days=1), datetime.min.time(), POLICY_TIME_ZONE)
        records.append(
            {
                **candidate.record,
                "event": ListChange.EXPIRED.value,
                "event_at": left.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "withdraw_reason": None,
            }
        )
        key = (candidate.department, candidate.entry_id)
        if opened.pop(key, None) is None:
            closed.add(key)
    return records, list(opened.values()), sorted(closed)


def _distinct(ids: Iterable[str]) -> Iterator[str]:
    seen: set[str] = set()
    for value in ids:
        if value not in seen:
            seen.add(value)
            yield value


def _packed(records: Sequence[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Records in order, in groups that fit one batch; a record reported twice (one entry's
    event, one enterprise, one statistic) starts a new group, as one batch holds it once."""
    group: list[dict[str, Any]] = []
    size = 0
    keys: set[tuple[Any, ...]] = set()
    for record in records:
        key = _record_key(record)
        needed = record_size(record) + 1
        if group and (size + needed > MAX_RECORDS_BYTES or key in keys):
            yield group
            group, size, keys = [], 0, set()
        group.append(record)
        size += needed
        keys.add(key)
    if group:
        yield group


def _record_key(record: Mapping[str, Any]) -> tuple[Any, ...]:
    if "entry_id" in record:
        return (record["department"], record["entry_id"], record["event"])
    if "credit_code" in record:
        return (record["credit_code"],)
    return (record["subject_kind"], record["name"])

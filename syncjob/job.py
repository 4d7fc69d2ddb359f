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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from osmanthus.core.catalogue import Catalogue
from osmanthus.core.clock import CHINA_STANDARD_TIME, china_date
from osmanthus.core.encoding import SlotLayout
from osmanthus.core.errors import (
    ConfigError,
    FailedPrecondition,
    InvalidArgument,
    OsmanthusError,
    Unavailable,
)
from osmanthus.core.lists import ListChange, ListChangeEvent, holds_resident_id
from osmanthus.core.syncbatch import (
    MAX_RECORDS_BYTES,
    BatchKind,
    build_batch,
    grade_record,
    list_change_record,
    record_size,
    sender_key_id,
    sign_batch,
    signed_in_current_format,
    statistic_record,
)
from osmanthus.core.syncbatch_checks import GRADE_PATTERN
from osmanthus.core.types import Shape, SubjectKind
from syncjob import recovery
from syncjob.checkpoints import CheckpointCarrier
from syncjob.config import StatisticSpec, SyncConfig
from syncjob.roster import read_roster, shown_refusal
from syncjob.state import OpenEntry, OutboxBatch, Run, StagedGrade, SyncState
from syncjob.verify import Quarantined, check_and_read, check_stored, held_back, remember_key

if TYPE_CHECKING:
    from osmanthus.core.wire.province import BatchSummary
    from sdk import Client
    from sdk.province import ProvinceClient
    from sdk.results import BatchScore
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
#: how early a scheduled kind of data may come due again: at most a tenth of its period
SCHEDULE_SLACK: Final = timedelta(hours=1)
#: an entry is reported expired this long after its window's last day ends, so that its
#: department (whose clock may differ a little) can no longer withdraw it
EXPIRY_MARGIN: Final = timedelta(minutes=10)


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
    #: transparency logs whose checkpoint the provincial witness cosigned: origin -> size
    checkpoints: dict[str, int] = field(default_factory=dict)
    #: the witness's refusals ("origin: reason: message"), each also in `errors`
    alarms: list[str] = field(default_factory=list)
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
            "checkpoints": self.checkpoints,
            "alarms": self.alarms,
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
        if self.skipped:
            text += f"; {len(self.skipped)} left out (first: {self.skipped[0]})"
        if self.checkpoints:
            text += f"; {len(self.checkpoints)} checkpoints cosigned"
        if self.alarms:
            text += f"; {len(self.alarms)} WITNESS ALARMS (first: {self.alarms[0]})"
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
        checkpoints: CheckpointCarrier | None = None,
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
        self._key_id = sender_key_id(signing_key.public_key())
        #: every key the job has signed with: a waiting batch is verified against its own
        self._keyring = remember_key(state, signing_key.public_key(), at=clock())
        self._catalogue = catalogue
        self._metrics = metrics
        self._checkpoints = checkpoints
        self._stop = stop or threading.Event()
        self._say = progress
        self._grade_progress = grade_progress
        self._clock = clock
        # jitter needs no secrecy, but a seeded generator per job would march in step
        self._rng = rng or random.SystemRandom()
        #: set once the receiver stayed unreachable for retry_for: the rest of the run waits
        #: no more for it (the batches stay in the outbox)
        self._receiver_down = False
        #: the run's delivery deadline (monotonic), from its first delivery
        self._give_up: float | None = None
        #: streams refused in this run
        self._blocked: frozenset[BatchKind] = frozenset()

    # --- the run ---------------------------------------------------------------------------------

    def run_once(self) -> RunSummary:
        started = time.monotonic()
        run = self._state.begin_run(self._clock())
        summary = RunSummary(run=run.tag, resumed=run.resumed, started_at=run.started_at)
        self._receiver_down = False
        self._give_up = None
        self._blocked = frozenset()
        self._say(f"run {run.tag}{' resumed' if run.resumed else ''}")
        finished = False
        try:
            # batches a stopped run left in the outbox go first: a stream is sent in order
            self._deliver(summary)
            for phase, gather in (
                ("lists", self._gather_lists),
                ("grades", self._gather_grades),
                ("statistics", self._gather_statistics),
                ("checkpoints", self._carry_checkpoints),
            ):
                self._check_stop()
                try:
                    gather(run, summary)
                except (Stopped, KeyboardInterrupt):
                    raise
                except OsmanthusError as exc:
                    self._error(summary, phase, exc)
                except Exception as exc:
                    # one phase's bug must not stop the others nor leave the run unfinished,
                    # which would hold back every later run; the message may hold data, so
                    # only the log (the operator's) gets it
                    _log.exception("internal error in the %s phase", phase)
                    self._error(
                        summary,
                        phase,
                        OsmanthusError(
                            f"internal error ({type(exc).__name__}); the job's log has the details"
                        ),
                    )
            self._deliver(summary)
            finished = True
        except Stopped:
            summary.errors.append("stopped before the run finished; the next run resumes it")
            summary.exit_code = summary.exit_code or 130
        summary.duration_s = time.monotonic() - started
        # a run that met errors is finished all the same: what failed is due again next run,
        # batches not delivered stay in the outbox, and grades half scored stay staged
        if finished:
            self._state.finish_run(run, now=self._clock(), summary=summary.as_dict())
        if self._metrics is not None:
            self._metrics.observe_run(
                summary,
                outbox=self._state.outbox_summary(),
                streams=self._state.streams(),
                last_ok_run=self._state.last_ok_run(),
                finished=finished,
                quarantined=len(self._state.quarantined()),
            )
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
        return is_due(self._state.last_done(work), every, self._clock())

    def _china_date(self, *, margin: timedelta = timedelta(0)) -> date:
        return china_date(self._clock() - margin)

    # --- checkpoints (syncjob.checkpoints) --------------------------------------------------------

    def _carry_checkpoints(self, run: Run, summary: RunSummary) -> None:
        if self._checkpoints is None:
            return
        report = self._checkpoints.carry_all(stop=self._stop.is_set)
        summary.checkpoints.update(report.cosigned)
        for origin in report.cosigned:
            if self._metrics is not None:
                self._metrics.checkpoint_cosigned(origin)
        for origin, (reason, exc) in report.alarms.items():
            # never skipped in silence: the run's errors, its exit code, the metrics
            summary.alarms.append(f"{origin}: {reason}: {exc.message}")
            if self._metrics is not None:
                self._metrics.checkpoint_alarm(origin, reason)
            self._error(summary, f"checkpoint {origin}", exc)
        for origin, exc in report.failed.items():
            summary.partial.append(f"checkpoints: {origin} not carried ({exc.message})")
            self._state.record_error(f"checkpoint {origin}", str(exc), at=self._clock())
        self._say(
            f"checkpoints: {len(report.cosigned)} cosigned, {len(report.unchanged)} unchanged, "
            f"{len(report.alarms)} refused, {len(report.failed)} not reached"
        )

    # --- lists -----------------------------------------------------------------------------------

    def _gather_lists(self, run: Run, summary: RunSummary) -> None:
        if not self._config.lists_enabled or self._state.phase_done(run, "lists"):
            return
        departments = sorted({str(t.department) for t in self._catalogue.lists})
        if not departments or not self._due("lists", self._config.lists_every):
            return
        # taken before the feeds are read, and a little in the past: an entry is reported
        # expired only once its department can no longer withdraw it
        today = self._china_date(margin=EXPIRY_MARGIN)
        events: list[ListChangeEvent] = []
        #: withheld withdrawals naming their entry: they close the entry the job reported
        closing: list[tuple[str, ListChangeEvent]] = []
        cursors: dict[str, tuple[str, str]] = {}
        missing: dict[str, OsmanthusError] = {}
        withheld: dict[str, list[str]] = {}
        for department in departments:
            self._check_stop()
            stored = self._state.list_cursor(department)
            feed, cursor, read, error = self._read_feed(department, *stored, summary)
            if error is not None:
                # what was read stands (its cursor moves); the rest comes in a later run
                missing[department] = error
                if error.retryable:
                    # partial, not a failure of the run: kept for `sync status` all the same
                    self._state.record_error(f"lists {department}", str(error), at=self._clock())
                else:
                    self._error(summary, f"lists {department}", error)
            for event in read:
                if event.entry is not None:
                    events.append(event)
                elif event.event is ListChange.WITHDRAWN and event.entry_id:
                    closing.append((department, event))
                else:
                    withheld.setdefault(department, []).append(event.withheld)
            if (feed, cursor) != stored:
                cursors[department] = (feed, cursor)
            note = f", did not answer ({missing[department]})" if department in missing else ""
            self._say(f"lists: {department} {len(read)} events{note}")
        if len(missing) == len(departments):
            if all(e.retryable for e in missing.values()):
                raise Unavailable(
                    "no department's list changes could be read (is the coordinator up?): "
                    + "; ".join(f"{d}: {e.message}" for d, e in missing.items())
                )
            return  # each refusal is recorded; the phase is tried again next run
        for department in missing:
            summary.partial.append(f"lists: {department} did not answer")
        for department, reasons in withheld.items():
            summary.partial.append(
                f"lists: {len(reasons)} event(s) of {department} withheld by the coordinator "
                f"({'; '.join(sorted(set(reasons)))}); the department must withdraw the entry and "
                "publish a corrected one"
            )
        incomplete = set(missing) | set(withheld)
        records, opened, closed = list_change_records(
            events,
            open_entries=self._state.open_entries(),
            today=today,
            complete=frozenset(departments) - incomplete,
            closing=closing,
        )
        batches, dropped = (
            self._batches(run, BatchKind.LIST_CHANGES, records, missing=sorted(incomplete))
            if records or incomplete
            else ([], [])
        )
        self._skipped(summary, BatchKind.LIST_CHANGES, dropped)
        self._state.commit_list_changes(
            run,
            batches=batches,
            cursors=cursors,
            opened=opened,
            closed=closed,
            complete=not missing,
        )
        self._built(summary, BatchKind.LIST_CHANGES, batches)

    def _read_feed(
        self, department: str, feed: str, cursor: str, summary: RunSummary
    ) -> tuple[str, str, list[ListChangeEvent], OsmanthusError | None]:
        """Every event of `department`'s feed after `cursor`: the feed id, the cursor after
        the last event read, the events, and the error that stopped the reading, if any."""
        read: list[ListChangeEvent] = []
        reset = False
        try:
            while True:
                self._check_stop()
                page = self._client.list_changes(department, after=cursor, page_size=LIST_PAGE_SIZE)
                if feed and page.feed_id != feed and not reset:
                    # the department's list store was made anew: its numbers start again, and
                    # the old cursor means nothing in it; read it from its first event
                    summary.partial.append(
                        f"lists: the feed of {department} was re-created; read again from its "
                        "first event (the province may hear of some entries again)"
                    )
                    self._state.record_error(
                        f"lists {department}",
                        "feed re-created; read from its start",
                        at=self._clock(),
                    )
                    feed, cursor, read, reset = page.feed_id, "", [], True
                    continue
                if feed and page.feed_id != feed:
                    # changed again within one read: two stores answer for the department
                    raise Unavailable(
                        f"the feed of {department} changed identity twice while it was read; "
                        "is more than one list store answering for it?"
                    )
                feed = page.feed_id
                read.extend(page.events)
                cursor = page.next_cursor
                if not page.more:
                    return feed, cursor, read, None
        except OsmanthusError as exc:
            return feed, cursor, read, exc

    # --- grades ----------------------------------------------------------------------------------

    def _gather_grades(self, run: Run, summary: RunSummary) -> None:
        path = self._config.enterprises
        if path is None or self._state.phase_done(run, "grades"):
            return
        if not self._due("grades", self._config.grades_every):
            return
        self._check_grade_letters()
        roster = read_roster(path, field="grades.enterprises")
        codes = roster.ids
        # grades an earlier run scored from this roster before it failed are kept
        done = self._state.adopt_staged_grades(run, roster=roster.digest)
        self._grade_progress(done, len(codes))
        expected = len(self._catalogue.departments_for(SubjectKind.ENTERPRISE))
        as_of = self._china_date().isoformat()
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
                    buffer.append(self._staged(position, codes[position], row, expected, as_of))
                    if len(buffer) >= STAGE_EVERY:
                        self._state.stage_grades(run, buffer, roster=roster.digest)
                        self._grade_progress(position + 1, len(codes))
                        buffer = []
                        self._check_stop()
            finally:
                # every row yielded stands, even when the stream failed after it
                if buffer:
                    self._state.stage_grades(run, buffer, roster=roster.digest)
                    self._grade_progress(buffer[-1].position + 1, len(codes))
        for refused in self._state.refused_grades(run):
            summary.skipped.append(
                f"grades: {path.name} line {roster.line_of(refused.position)}: {refused.refused}"
            )
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
        batches, dropped = self._batches(run, BatchKind.GRADES, records) if records else ([], [])
        self._skipped(summary, BatchKind.GRADES, dropped)
        # a grade the format refused was not sent: it is tried again when next due
        left_out = {r.get("credit_code") for r in dropped}
        sent = [g for g in changed if g.credit_code not in left_out]
        self._state.commit_grades(run, batches=batches, sent=sent)
        self._built(summary, BatchKind.GRADES, batches)

    def _staged(
        self, position: int, value: str, row: BatchScore, expected: int, as_of: str
    ) -> StagedGrade:
        refused = row.refused
        if refused is None and row.grade is None:
            refused = "the catalogue gives enterprises no grade"
        if refused is None and holds_resident_id(row.subject_id):
            refused = (
                "the credit code also reads as a resident identity number, which no sync "
                "batch may carry"
            )
        if refused is not None:
            # no code is kept for a refused row: the value may be anything, even a person's id
            return StagedGrade(position, "", None, None, None, as_of, shown_refusal(value, refused))
        return StagedGrade(position, row.subject_id, row.grade, row.score, expected, as_of, None)

    def _check_grade_letters(self) -> None:
        grades = self._catalogue.model(SubjectKind.ENTERPRISE).grades
        wrong = [letter for letter, _ in grades if not GRADE_PATTERN.fullmatch(letter)]
        if wrong:
            raise ConfigError(
                f"the catalogue's enterprise grades {wrong} cannot be reported: a sync batch "
                "takes 1 to 3 capital letters",
                field="grades",
            )

    # --- statistics ------------------------------------------------------------------------------

    def _gather_statistics(self, run: Run, summary: RunSummary) -> None:
        if self._state.phase_done(run, "statistics"):
            return
        # answers an earlier run staged and never batched come too: their ε is spent
        staged = self._state.staged_statistics(run)
        due = [
            s
            for s in self._config.statistics
            if s.name not in staged and self._due(f"statistic:{s.name}", s.every)
        ]
        if not due and not staged:
            return
        for spec in due:
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
        batches, dropped = (
            self._batches(run, BatchKind.STATISTICS, records) if records else ([], [])
        )
        self._skipped(summary, BatchKind.STATISTICS, dropped)
        # a statistic the format refused counts as done all the same: its ε is spent, and
        # asking again would spend more on a record refused the same way
        self._state.commit_statistics(
            run,
            batches=batches,
            completed=[name for name, (_, complete) in staged.items() if complete],
        )
        self._built(summary, BatchKind.STATISTICS, batches)

    def _statistic(self, spec: StatisticSpec) -> tuple[list[dict[str, Any]], bool]:
        cohort = read_roster(spec.subjects, field=f"statistics.{spec.name}.subjects").ids
        if not MIN_COHORT <= len(cohort) <= MAX_COHORT:
            raise ConfigError(
                f"{spec.subjects} holds {len(cohort)} distinct subjects; a cohort has "
                f"{MIN_COHORT} to {MAX_COHORT}",
                field=f"statistics.{spec.name}.subjects",
            )
        layout = SlotLayout.for_catalogue(self._catalogue, spec.subject_kind, Shape.BREAKDOWN)
        asked = spec.statistics or layout.names
        as_of = self._china_date()
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
    ) -> tuple[list[OutboxBatch], list[dict[str, Any]]]:
        sequence, start = self._state.next_position(kind)
        return build_batches(
            sender=self._config.sender,
            kind=kind,
            key=self._key,
            tag=run.tag,
            sequence=sequence,
            start=start,
            records=records,
            missing=missing,
            now=self._clock(),
        )

    def _skipped(
        self, summary: RunSummary, kind: BatchKind, dropped: Sequence[dict[str, Any]]
    ) -> None:
        for record in dropped:
            # the reason names the field, never a value that reads as a resident id
            why = str(record.get("_why"))
            summary.skipped.append(f"{kind.value}: a record left out: {why}")
            self._error(
                summary,
                f"{kind.value} record",
                InvalidArgument(f"left out of the batch, not reported: {why}"),
            )

    def _built(self, summary: RunSummary, kind: BatchKind, batches: Sequence[OutboxBatch]) -> None:
        if batches:
            summary.built[kind.value] = summary.built.get(kind.value, 0) + len(batches)
            self._say(
                f"{kind.value}: {len(batches)} batches, "
                f"{sum(b.records for b in batches)} records ready to send"
            )

    # --- delivery --------------------------------------------------------------------------------

    def _deliver(self, summary: RunSummary) -> None:
        if self._receiver_down:
            return
        if self._give_up is None:
            # one deadline for the whole run: a receiver that is down costs retry_for, not
            # retry_for per batch or per pass
            self._give_up = time.monotonic() + self._config.delivery.retry_for.total_seconds()
        blocked = set(self._blocked)
        for held in self._state.quarantined():
            if held.kind not in blocked:
                # a stream is ordered: nothing behind a quarantined batch goes before it
                blocked.add(held.kind)
                self._alarm(summary, f"deliver {held.kind.value}", held_back(held))
        for kind, batch_id in self._state.outbox_ids():
            if kind in blocked:
                continue
            self._check_stop()
            batch = self._state.outbox_batch(batch_id)
            if batch is None:
                continue
            work = f"deliver {batch.kind.value} #{batch.sequence}"
            now = self._clock()
            try:
                # what is sent or signed anew is first checked against the key that signed it
                state, ring, sender = self._state, self._keyring, self._config.sender
                if batch.signed.key_id != self._key_id or not signed_in_current_format(
                    batch.signed
                ):
                    # signed before the job's key was changed, or in the earlier signature
                    # format: the same payload, signed anew, so the province needs only the
                    # current key and envelope (the id and content are kept)
                    made = check_and_read(state, batch, keyring=ring, sender=sender, at=now)
                    batch = self._state.resign(batch, sign_batch(made, private_key=self._key))
                else:
                    check_stored(state, batch, keyring=ring, sender=sender, at=now)
                self._send(batch, summary, give_up=self._give_up)
            except Stopped:
                raise
            except Quarantined as exc:
                blocked.add(batch.kind)
                self._alarm(summary, work, exc)
            except Unavailable as exc:
                # retried until retry_for: the receiver is down; the outbox waits for next run
                self._receiver_down = True
                self._error(summary, work, exc)
                return
            except OsmanthusError as exc:
                # later batches of this stream would be a gap: hold them; other streams go on
                blocked.add(batch.kind)
                self._error(summary, work, exc)
            except Exception as exc:
                # a bug must not leave the run unfinished (every later run would stop here)
                _log.exception("internal error delivering %s", batch.batch_id)
                blocked.add(batch.kind)
                self._error(
                    summary,
                    work,
                    OsmanthusError(
                        f"internal error ({type(exc).__name__}); the job's log has the details"
                    ),
                )
        # a stream refused in this pass is not tried again in this run
        self._blocked = frozenset(blocked)

    def _send(self, batch: OutboxBatch, summary: RunSummary, *, give_up: float) -> None:
        delivery = self._config.delivery
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
                    delivery.backoff_max.total_seconds(),
                    delivery.backoff_initial.total_seconds() * 2 ** min(attempt, 30),
                )
                wait = self._rng.uniform(0, cap)
                if time.monotonic() + wait > give_up:
                    raise Unavailable(
                        f"the receiver did not take batch {batch.batch_id} within "
                        f"{delivery.retry_for} ({attempt + 1} attempts; last: {exc.message}); "
                        "it stays in the outbox for the next run"
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

    # --- operations ------------------------------------------------------------------------------

    def _alarm(self, summary: RunSummary, work: str, exc: Quarantined) -> None:
        # a quarantined batch is an alarm: its exit code is the run's, whatever came before
        self._error(summary, work, exc)
        summary.exit_code = exc.exit_code

    def _stream(self, kind: BatchKind) -> recovery.Stream:
        return recovery.Stream(
            state=self._state,
            province=self._province,
            sender=self._config.sender,
            kind=kind,
            key=self._key,
            keyring=self._keyring,
            now=self._clock(),
        )

    def rebase(self, kind: BatchKind) -> tuple[list[OutboxBatch], BatchSummary | None]:
        """`sync rebase`: renumber `kind`'s waiting batches, once verified, to follow the
        receiver's stream (syncjob.recovery.rebase)."""
        return recovery.rebase(self._stream(kind))

    def settle_quarantine(self, kind: BatchKind, *, rebuild: bool) -> recovery.Settled:
        """`sync quarantine drop|rebuild` for `kind` (syncjob.recovery.settle)."""
        return recovery.settle(self._stream(kind), regather=rebuild)


def is_due(last: datetime | None, every: timedelta, now: datetime) -> bool:
    """Whether work last done at `last` (the start of the run that did it) is due again."""
    if last is None:
        return True
    # a daily job started by cron a few seconds early must not skip a day
    slack = min(every / 10, SCHEDULE_SLACK)
    return last + every - slack <= now


def build_batches(
    *,
    sender: str,
    kind: BatchKind,
    key: Ed25519PrivateKey,
    tag: str,
    sequence: int,
    start: str,
    records: Sequence[dict[str, Any]],
    missing: Sequence[str] = (),
    now: datetime,
) -> tuple[list[OutboxBatch], list[dict[str, Any]]]:
    """Signed batches continuing a stream at `sequence` from watermark `start`: records packed
    up to the size limit, watermarks `<tag>.<n>`; and the records the format refused (left out,
    each with its reason under "_why"), which never hold the stream."""
    built: list[OutboxBatch] = []
    dropped: list[dict[str, Any]] = []
    stamp = now.replace(microsecond=0)
    for index, group in enumerate(list(_packed(records)) or [[]], start=1):
        end = f"{tag}.{index}"
        while True:
            try:
                batch = build_batch(
                    sender=sender,
                    kind=kind,
                    sequence=sequence,
                    watermark_from=start,
                    watermark_to=end,
                    records=group,
                    created_at=stamp,
                    missing_departments=missing,
                )
                break
            except InvalidArgument as exc:
                match = _RECORD_INDEX.match(exc.field or "")
                if match is None:
                    raise
                bad = int(match.group(1))
                dropped.append({**group[bad], "_why": str(exc)})
                group = group[:bad] + group[bad + 1 :]
        built.append(
            OutboxBatch(
                kind=kind,
                sequence=sequence,
                batch_id=batch.batch_id,
                watermark_from=start,
                watermark_to=end,
                records=len(batch.records),
                partial=batch.partial,
                signed=sign_batch(batch, private_key=key),
                built_at=stamp,
                attempts=0,
            )
        )
        sequence, start = sequence + 1, end
    return built, dropped


def list_change_records(
    events: Sequence[ListChangeEvent],
    *,
    open_entries: Sequence[OpenEntry],
    today: date,
    complete: frozenset[str] | None = None,
    closing: Sequence[tuple[str, ListChangeEvent]] = (),
) -> tuple[list[dict[str, Any]], list[OpenEntry], list[tuple[str, str]]]:
    """The records of `events` (in order), then of the expiries due by `today` (China date):
    an entry reported published and neither withdrawn nor reported expired expires the day after
    its window ends. Also the entries left open (to remember) and those that closed (to forget).

    Expiries are derived only for the departments in `complete` (all, if None): one whose feed
    was not read to its end may yet hold the entry's withdrawal.

    `closing` holds withheld withdrawals that name their entry, with their department: the
    entry fails a check today, so its fields do not come with the event, but the job reported
    it published when it passed, and reports its withdrawal with the fields it sent then. One
    the job never reported is nothing to the province and is passed over.
    """
    known = {(e.department, e.entry_id): e for e in open_entries}
    opened: dict[tuple[str, str], OpenEntry] = {}
    closed: set[tuple[str, str]] = set()
    records: list[dict[str, Any]] = []
    for event in events:
        entry = event.entry
        if entry is None:
            continue  # withheld: the caller reports it
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
    for department, event in closing:
        key = (department, event.entry_id)
        source = opened.pop(key, None) or (known.get(key) if key not in closed else None)
        if source is None or event.withdraw_reason is None:
            continue
        records.append(
            {
                **source.record,
                "event": ListChange.WITHDRAWN.value,
                "event_at": event.at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "withdraw_reason": event.withdraw_reason.value,
            }
        )
        if key in known:
            closed.add(key)
    candidates = [e for k, e in known.items() if k not in closed] + list(opened.values())
    for candidate in sorted(candidates, key=lambda e: (e.window_end, e.department, e.entry_id)):
        end = date.fromisoformat(candidate.window_end)
        if end >= today or (complete is not None and candidate.department not in complete):
            continue
        # the entry left view at the first moment of the day after its window (China time)
        left = datetime.combine(end + timedelta(days=1), datetime.min.time(), CHINA_STANDARD_TIME)
        # an entry published after its window had ended (late, or first read now) cannot
        # have expired before it was published: the same instant, then
        at = max(left.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), candidate.record["event_at"])
        records.append(
            {
                **candidate.record,
                "event": ListChange.EXPIRED.value,
                "event_at": at,
                "withdraw_reason": None,
            }
        )
        key = (candidate.department, candidate.entry_id)
        if opened.pop(key, None) is None:
            closed.add(key)
    return records, list(opened.values()), sorted(closed)


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

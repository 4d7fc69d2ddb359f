"""The sync job's Prometheus metrics: an HTTP endpoint while it runs, or a node-exporter textfile.

A job run by cron or a systemd timer exits between runs, so a scrape would find nothing: there
the textfile (`--metrics-file`, written after every run, atomically) is the way; a job that
stays up (`--every`) can serve `--metrics-listen` as well.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, start_http_server
from prometheus_client.openmetrics.exposition import ALLOWUTF8

from osmanthus.core.files import write_atomically
from osmanthus.core.syncbatch import BatchKind

if TYPE_CHECKING:
    from syncjob.job import RunSummary
    from syncjob.state import OutboxBatch, OutboxSummary, StreamPosition

PREFIX: Final = "osmanthus_sync"


class SyncMetrics:
    """Counters and gauges of one job process, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._batches = Counter(
            f"{PREFIX}_batches_delivered",
            "Batches the receiver acknowledged (stored now or already held)",
            ["kind"],
            registry=r,
        )
        self._records = Counter(
            f"{PREFIX}_records_delivered",
            "Records in acknowledged batches",
            ["kind"],
            registry=r,
        )
        self._duplicates = Counter(
            f"{PREFIX}_duplicate_acks",
            "Deliveries the receiver answered as already held (a resend after a crash)",
            ["kind"],
            registry=r,
        )
        self._partial = Counter(
            f"{PREFIX}_partial_batches_delivered",
            "Acknowledged batches that name departments whose data is missing",
            ["kind"],
            registry=r,
        )
        self._retries = Counter(
            f"{PREFIX}_delivery_retries", "Deliveries retried after a retryable failure", registry=r
        )
        self._errors = Counter(
            f"{PREFIX}_errors", "Failures by the work that failed", ["work"], registry=r
        )
        self._runs = Counter(
            f"{PREFIX}_runs", "Runs by outcome (ok, errors, stopped)", ["outcome"], registry=r
        )
        self._outbox_batches = Gauge(
            f"{PREFIX}_outbox_batches", "Signed batches waiting for the receiver", registry=r
        )
        self._outbox_records = Gauge(
            f"{PREFIX}_outbox_records", "Records in batches waiting for the receiver", registry=r
        )
        self._quarantined = Gauge(
            f"{PREFIX}_quarantined_batches",
            "Waiting batches that failed verification against the job's keys; each holds its "
            "stream until the operator drops or rebuilds it (alert on any)",
            registry=r,
        )
        self._last_success = Gauge(
            f"{PREFIX}_last_delivery_timestamp_seconds",
            "When the receiver last acknowledged a batch of the stream (Unix time)",
            ["kind"],
            registry=r,
        )
        self._duration = Gauge(
            f"{PREFIX}_last_run_duration_seconds", "Wall time of the last run", registry=r
        )
        self._last_run = Gauge(
            f"{PREFIX}_last_run_timestamp_seconds",
            "When the last run ended (Unix time)",
            registry=r,
        )
        self._last_ok_run = Gauge(
            f"{PREFIX}_last_ok_run_timestamp_seconds",
            "When the last run that met no error ended (Unix time; 0 before the first)",
            registry=r,
        )
        self._checkpoints = Counter(
            f"{PREFIX}_checkpoints_cosigned",
            "Checkpoints of a transparency log the provincial witness cosigned",
            ["origin"],
            registry=r,
        )
        self._checkpoint_alarms = Counter(
            f"{PREFIX}_checkpoint_alarms",
            "Checkpoints the provincial witness refused (a log rolled back, forked or "
            "rewritten, a wrong key, or a witness that does not know the log): alert on any",
            ["origin", "reason"],
            registry=r,
        )
        for kind in BatchKind:
            for labelled in (self._batches, self._records, self._duplicates, self._partial):
                labelled.labels(kind=kind.value)
        self._lock = threading.Lock()

    def delivered(self, batch: OutboxBatch, *, duplicate: bool) -> None:
        kind = batch.kind.value
        self._batches.labels(kind=kind).inc()
        self._records.labels(kind=kind).inc(batch.records)
        if duplicate:
            self._duplicates.labels(kind=kind).inc()
        if batch.partial:
            self._partial.labels(kind=kind).inc()
        self._last_success.labels(kind=kind).set_to_current_time()

    def checkpoint_cosigned(self, origin: str) -> None:
        self._checkpoints.labels(origin=origin).inc()

    def checkpoint_alarm(self, origin: str, reason: str) -> None:
        self._checkpoint_alarms.labels(origin=origin, reason=reason).inc()

    def retry(self) -> None:
        self._retries.inc()

    def error(self, work: str) -> None:
        # "deliver grades #12" → "deliver grades": one series per kind of work, not per batch
        self._errors.labels(work=work.split(" #")[0]).inc()

    def observe_run(
        self,
        summary: RunSummary,
        *,
        outbox: OutboxSummary,
        streams: Mapping[BatchKind, StreamPosition],
        last_ok_run: datetime | None,
        finished: bool,
        quarantined: int = 0,
    ) -> None:
        """After a run: its outcome, the backlog, and the times read back from the state, so a
        process that has just started (cron, a restart) reports them too."""
        outcome = "stopped" if not finished else ("errors" if summary.errors else "ok")
        self._runs.labels(outcome=outcome).inc()
        self._outbox_batches.set(outbox.batches)
        self._outbox_records.set(outbox.records)
        self._quarantined.set(quarantined)
        self._duration.set(summary.duration_s)
        self._last_run.set_to_current_time()
        for kind, position in streams.items():
            self._last_success.labels(kind=kind.value).set(position.acked_at.timestamp())
        self._last_ok_run.set(last_ok_run.timestamp() if last_ok_run else 0)

    def serve(self, host: str, port: int) -> int:
        """Serve /metrics on host:port (0: any free port); the port it listens on."""
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        return int(server.server_port)

    def write_textfile(self, path: Path) -> None:
        """Write the metrics for node-exporter's textfile collector, atomically, readable by
        all (0644): the collector runs as another user, and the job's umask is 077."""
        with self._lock:
            data = generate_latest(self.registry, escaping=ALLOWUTF8)
        write_atomically(path, data, mode=0o644, field="metrics-file")

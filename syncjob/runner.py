"""`osmanthus sync run`, `status` and `rebase`: clients from the config, the schedule, the report.

The job takes the state directory's lock for as long as it runs, so two jobs never number one
stream twice; `status` only reads.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from osmanthus.core import signing
from osmanthus.core.catalogue import Catalogue, load_catalogue
from osmanthus.core.errors import ConfigError, InvalidArgument, OsmanthusError
from osmanthus.core.syncbatch import BatchKind, sender_key_id, shown_key_id
from syncjob.checkpoints import CheckpointCarrier, with_token
from syncjob.config import SyncConfig
from syncjob.job import SCHEDULE_SLACK, SyncJob, is_due
from syncjob.metrics import SyncMetrics
from syncjob.state import QuarantinedBatch, SyncState, exclusive, running_job
from syncjob.verify import Quarantined, keyring, verify_stored

_log = logging.getLogger(__name__)


def _catalogue(config: SyncConfig) -> Catalogue:
    return load_catalogue(config.catalogue) if config.catalogue else load_catalogue()


def _token(config: SyncConfig) -> str:
    try:
        token = config.token_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the token file {config.token_file}: {exc.strerror}",
            field="coordinator.token_file",
        ) from None
    if not token:
        raise ConfigError(f"{config.token_file} is empty", field="coordinator.token_file")
    return token


@contextmanager
def open_job(
    config: SyncConfig,
    *,
    stop: threading.Event,
    metrics: SyncMetrics | None,
    progress: Callable[[str], None],
    grade_progress: Callable[[int, int], None],
) -> Iterator[SyncJob]:
    """The job with its clients and state, holding the state directory's lock."""
    from sdk import Client
    from sdk.province import ProvinceClient

    try:
        key = signing.load_private_key(config.signing_key)
    except ConfigError as exc:
        raise ConfigError(exc.message, field="signing_key") from None
    if not config.paillier_keys.is_file():
        # the SDK would make a new key there, which the token is not bound to
        raise ConfigError(
            f"{config.paillier_keys} does not exist: give the Paillier key file the job's token "
            "is bound to",
            field="coordinator.paillier_keys",
        )
    catalogue = _catalogue(config)
    token = _token(config)
    with exclusive(config.state_dir):
        state = SyncState(
            config.state_dir, sender=config.sender, key_id=sender_key_id(key.public_key())
        )
        try:
            with (
                Client(
                    config.coordinator.target,
                    tls=config.coordinator.tls,
                    token=token,
                    keys=config.paillier_keys,
                    server_name=config.coordinator.server_name,
                    catalogue=catalogue,
                ) as client,
                ProvinceClient(
                    config.province.target,
                    tls=config.province.tls,
                    server_name=config.province.server_name,
                ) as province,
                _carrier(config, token) as checkpoints,
            ):
                yield SyncJob(
                    config=config,
                    state=state,
                    client=client,
                    province=province,
                    signing_key=key,
                    catalogue=catalogue,
                    metrics=metrics,
                    checkpoints=checkpoints,
                    stop=stop,
                    progress=progress,
                    grade_progress=grade_progress,
                )
        finally:
            state.close()


@contextmanager
def _carrier(config: SyncConfig, token: str) -> Iterator[CheckpointCarrier | None]:
    """The carrier of the logs' checkpoints to the provincial witness, if configured."""
    if config.logs is None:
        yield None
        return
    from osmanthus.core.logkeys import WITNESS_SUFFIX, LogRoster, replica_of
    from osmanthus.core.tls import secure_channel
    from sdk.transparency import TransparencyClient, WitnessClient

    try:
        roster = LogRoster.load(config.logs)
    except ConfigError as exc:
        raise ConfigError(exc.message, field="checkpoints.logs") from None
    # a replica's log is served by that replica alone: one whose address is not known would
    # go uncarried run after run, so the run does not start
    unknown = sorted(
        origin
        for origin in roster.origins()
        if (name := replica_of(origin)) is not None and name not in config.replicas
    )
    if unknown:
        raise ConfigError(
            f"{config.logs} lists the coordinator replica log(s) {', '.join(unknown)}: give each "
            'replica\'s address in [checkpoints.replicas] (NAME = "HOST:PORT")',
            field="checkpoints.replicas",
        )

    def logs_at(target: str) -> TransparencyClient:
        channel = secure_channel(
            target, config.coordinator.tls, server_name=config.coordinator.server_name
        )
        return TransparencyClient(channel=with_token(channel, token), owns_channel=True)

    with ExitStack() as opened:
        logs = opened.enter_context(logs_at(config.coordinator.target))
        replicas = {
            name: opened.enter_context(logs_at(target))
            for name, target in sorted(config.replicas.items())
        }
        witness = opened.enter_context(
            WitnessClient.connect(
                config.province.target,
                tls=config.province.tls,
                server_name=config.province.server_name,
            )
        )
        yield CheckpointCarrier(
            roster=roster,
            logs=logs,
            replica_logs=replicas,
            witness=witness,
            witness_name=config.province.server_name + WITNESS_SUFFIX,
        )


def run(
    config: SyncConfig,
    *,
    every: timedelta | None,
    metrics_listen: str | None = None,
    metrics_file: Path | None = None,
    quiet: bool = False,
) -> int:
    """Run once (every=None) or on a schedule until SIGTERM/SIGINT; the exit code."""
    stop = threading.Event()
    _on_signals(stop)
    metrics = SyncMetrics()
    if metrics_file is not None and not metrics_file.parent.is_dir():
        raise ConfigError(f"{metrics_file.parent} is not a directory", field="metrics-file")
    if metrics_listen:
        _serve_metrics(metrics, metrics_listen)

    def say(message: str) -> None:
        if not quiet:
            print(message, file=sys.stderr, flush=True)

    while True:
        try:
            code = _one_run(config, stop=stop, metrics=metrics, say=say, quiet=quiet)
        except OsmanthusError as exc:
            # the run could not start (the token file unreadable, another job holding the
            # state): on a schedule that is this run's failure, not the service's end
            if every is None:
                raise
            print(f"error: {exc}", file=sys.stderr, flush=True)
            metrics.error("start")
            code = exc.exit_code
        except Exception:
            if every is None:
                raise
            # a scheduled job outlives one run's bug; the next run may well succeed
            _log.exception("the run failed")
            metrics.error("internal")
            code = 1
        finally:
            if metrics_file is not None:
                _write_metrics(metrics, metrics_file)
        if every is None:
            return code
        if stop.is_set():
            # SIGTERM is how a scheduled job is shut down; the state is consistent at any point
            return 0
        say(f"next run in {every}")
        if stop.wait(every.total_seconds()):
            return 0


def _write_metrics(metrics: SyncMetrics, path: Path) -> None:
    try:
        metrics.write_textfile(path)
    except ConfigError as exc:
        # the metrics are a view of the run, not the run: report, do not fail it
        _log.error("cannot write the metrics: %s", exc.message)


def _one_run(
    config: SyncConfig,
    *,
    stop: threading.Event,
    metrics: SyncMetrics,
    say: Callable[[str], None],
    quiet: bool,
) -> int:
    from tqdm import tqdm

    with tqdm(unit="grade", desc="grades", disable=quiet or None, leave=False) as bar:

        def graded(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        with open_job(
            config, stop=stop, metrics=metrics, progress=say, grade_progress=graded
        ) as job:
            summary = job.run_once()
            print(summary.line(), flush=True)
            if summary.resumed and not summary.exit_code and not stop.is_set():
                # the run an earlier job left unfinished gathered what was new then: a fresh
                # run follows at once, so a crash never holds back new data for a period
                bar.reset()
                summary = job.run_once()
                print(summary.line(), flush=True)
    return summary.exit_code


def _serve_metrics(metrics: SyncMetrics, listen: str) -> None:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InvalidArgument(f"{listen!r} is not HOST:PORT", field="metrics-listen")
    try:
        bound = metrics.serve(host.strip("[]"), int(port))
    except OSError as exc:
        raise ConfigError(
            f"cannot serve metrics on {listen}: {exc.strerror}", field="metrics-listen"
        ) from None
    _log.info("metrics on http://%s:%d/metrics", host, bound)


def _on_signals(stop: threading.Event) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            # a second signal: the operator means it
            raise KeyboardInterrupt
        _log.warning("signal %d: stopping after the current step", signum)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


def status(config: SyncConfig) -> dict[str, Any]:
    """Where each stream stands, the backlog, the last run and the last error."""
    state = SyncState(config.state_dir, sender=config.sender, key_id=None)
    try:
        streams = state.streams()
        outbox = state.outbox_summary()
        done = state.done_times()
        error = state.last_error()
        last_ok = state.last_ok_run()
        runs = state.runs(limit=1)
        now = datetime.now(UTC)
        schedule: dict[str, str] = {}
        if config.lists_enabled:
            schedule["lists"] = _next(done.get("lists"), config.lists_every, now)
        if config.enterprises is not None:
            schedule["grades"] = _next(done.get("grades"), config.grades_every, now)
        for spec in config.statistics:
            schedule[f"statistics {spec.name}"] = _next(
                done.get(f"statistic:{spec.name}"), spec.every, now
            )
        acked = [p.acked_at for p in streams.values()]
        return {
            "state": str(state.path),
            "sender": config.sender,
            "running": running_job(config.state_dir),
            # first: a batch that failed verification holds its stream until the operator acts
            "quarantine": [_quarantined(q) for q in state.quarantined()],
            "signing_keys": [
                {
                    "key_id": k.key_id,
                    "first_used": _stamp(k.first_used),
                    "last_used": _stamp(k.last_used),
                }
                for k in state.signing_keys()
            ],
            "streams": {
                kind.value: (
                    {
                        "sequence": streams[kind].sequence,
                        "watermark": streams[kind].watermark,
                        "batch_id": streams[kind].batch_id,
                        "acknowledged_at": _stamp(streams[kind].acked_at),
                    }
                    if kind in streams
                    else None
                )
                for kind in BatchKind
            },
            "last_delivery": _stamp(max(acked)) if acked else None,
            "last_ok_run": _stamp(last_ok) if last_ok else None,
            "backlog": {
                "batches": outbox.batches,
                "records": outbox.records,
                "oldest_built_at": _stamp(outbox.oldest_built_at)
                if outbox.oldest_built_at
                else None,
                "attempts": outbox.attempts,
                "by_kind": {k.value: n for k, (n, _) in sorted(outbox.by_kind.items(), key=str)},
            },
            "last_run": runs[0] if runs else None,
            "last_error": (
                {
                    "at": _stamp(error[0]),
                    "work": error[1],
                    "message": error[2],
                    # an error older than the last clean run is history, not a current fault
                    "since_last_ok_run": last_ok is None or error[0] > last_ok,
                }
                if error
                else None
            ),
            "list_cursors": state.list_cursors(),
            "next_due": schedule,
        }
    finally:
        state.close()


def _quarantined(held: QuarantinedBatch) -> dict[str, Any]:
    return {
        "kind": held.kind.value,
        "sequence": held.sequence,
        "batch_id": held.batch_id,
        # as the outbox row named it, unverified: repeated only if it reads as a key id
        "key_id": shown_key_id(held.key_id),
        "payload_sha256": held.payload_sha256,
        "reason": held.reason,
        "quarantined_at": _stamp(held.quarantined_at),
        **(
            {"resolved_at": _stamp(held.resolved_at), "resolution": held.resolution}
            if held.resolved_at
            else {}
        ),
    }


def _next(last: datetime | None, every: timedelta, now: datetime) -> str:
    if is_due(last, every, now):
        return "now"
    assert last is not None
    return _stamp(last + every - min(every / 10, SCHEDULE_SLACK))


def _stamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def print_status(report: dict[str, Any]) -> None:
    running = f", job running (process {report['running']})" if report["running"] else ""
    print(f"sync state {report['state']} (sender {report['sender']}{running})")
    for held in report["quarantine"]:
        print(
            f"QUARANTINED: {held['kind']} batch #{held['sequence']} ({held['batch_id']}) since "
            f"{held['quarantined_at']}: {held['reason']}; the {held['kind']} stream waits "
            "behind it (osmanthus sync quarantine show|drop|rebuild, docs/province.md)"
        )
    print("streams (last batch the receiver acknowledged):")
    for kind, position in report["streams"].items():
        if position is None:
            print(f"  {kind:<13} nothing delivered yet")
        else:
            print(
                f"  {kind:<13} #{position['sequence']} to watermark {position['watermark']} "
                f"at {position['acknowledged_at']}"
            )
    keys = ", ".join(k["key_id"] for k in report["signing_keys"]) or "none recorded yet"
    print(f"signing keys (current and earlier; each verifies what it signed): {keys}")
    print(f"last delivery: {report['last_delivery'] or 'never'}")
    print(f"last run without error: {report['last_ok_run'] or 'never'}")
    backlog = report["backlog"]
    if backlog["batches"]:
        kinds = ", ".join(f"{k} {n}" for k, n in backlog["by_kind"].items())
        print(
            f"backlog: {backlog['batches']} batches ({kinds}), {backlog['records']} records, "
            f"oldest built {backlog['oldest_built_at']}, {backlog['attempts']} attempts so far"
        )
    else:
        print("backlog: none")
    last = report["last_run"]
    if last is None:
        print("last run: none")
    else:
        finished = last["finished_at"] or (
            "still running" if report["running"] else "not finished (the next run resumes it)"
        )
        print(f"last run: {last['tag']} started {last['started_at']}, finished {finished}")
    error = report["last_error"]
    if error is None:
        print("last error: none")
    else:
        when = "" if error["since_last_ok_run"] else " (before the last run without error)"
        print(f"last error: {error['at']}{when} {error['work']}: {error['message']}")
    if report["list_cursors"]:
        cursors = ", ".join(f"{d} {c}" for d, c in report["list_cursors"].items())
        print(f"list feed cursors: {cursors}")
    for work, when in report["next_due"].items():
        print(f"next {work}: {when}")


def rebase(config: SyncConfig, kind: BatchKind) -> str:
    """`sync rebase`: renumber `kind`'s waiting batches to follow the receiver's stream."""
    with _with_job(config) as job:
        batches, last = job.rebase(kind)
    after = (
        f"the receiver's #{last.sequence} (watermark {last.watermark_to})"
        if last
        else "the start of the receiver's stream"
    )
    return (
        f"{kind.value}: {len(batches)} waiting batches renumbered #{batches[0].sequence} to "
        f"#{batches[-1].sequence}, following {after}; the next run sends them"
    )


def _with_job(config: SyncConfig) -> AbstractContextManager[SyncJob]:
    return open_job(
        config,
        stop=threading.Event(),
        metrics=None,
        progress=lambda _: None,
        grade_progress=lambda done, total: None,
    )


def quarantine_report(config: SyncConfig) -> dict[str, Any]:
    """`sync quarantine show`: the quarantined batches, and every waiting batch checked now
    against the job's keys (read only: a batch failing here is quarantined by the next run,
    rebase, drop or rebuild, which hold the state's lock)."""
    state = SyncState(config.state_dir, sender=config.sender, key_id=None)
    try:
        keys = keyring(state)
        failing: list[dict[str, Any]] = []
        checked = 0
        for batch in state.outbox():
            checked += 1
            try:
                verify_stored(batch, keyring=keys, sender=config.sender)
            except Quarantined as exc:
                failing.append(
                    {
                        "kind": batch.kind.value,
                        "sequence": batch.sequence,
                        "batch_id": batch.batch_id,
                        "reason": str(exc),
                    }
                )
        return {
            "state": str(state.path),
            "quarantine": [_quarantined(q) for q in state.quarantined()],
            "failing_now": failing,
            "waiting_checked": checked,
            "resolved": [_quarantined(q) for q in state.quarantined(resolved=True)][-20:],
            "signing_keys": sorted(keys),
        }
    finally:
        state.close()


def print_quarantine(report: dict[str, Any]) -> None:
    print(f"sync state {report['state']}; the job's keys: {', '.join(report['signing_keys'])}")
    if not report["quarantine"]:
        print("quarantine: empty")
    for held in report["quarantine"]:
        print(
            f"QUARANTINED {held['kind']} #{held['sequence']} {held['batch_id']} (key "
            f"{held['key_id']}, payload sha256 {held['payload_sha256']}) since "
            f"{held['quarantined_at']}: {held['reason']}"
        )
    known = {q["batch_id"] for q in report["quarantine"]}
    for bad in report["failing_now"]:
        if bad["batch_id"] not in known:
            print(
                f"fails verification, not yet quarantined: {bad['kind']} #{bad['sequence']} "
                f"{bad['batch_id']}: {bad['reason']}"
            )
    print(f"{report['waiting_checked']} waiting batches checked, {len(report['failing_now'])} fail")
    for done in report["resolved"]:
        print(
            f"resolved {done['resolved_at']}: {done['kind']} #{done['sequence']} "
            f"{done['batch_id']}: {done['resolution']}"
        )


def quarantine_settle(config: SyncConfig, kind: BatchKind, *, rebuild: bool) -> str:
    """`sync quarantine drop|rebuild`: take `kind`'s quarantined batches out of its stream."""
    with _with_job(config) as job:
        done = job.settle_quarantine(kind, rebuild=rebuild)
    parts: list[str] = []
    if done.dropped:
        listed = ", ".join(f"#{s} {b}" for s, b in done.dropped)
        parts.append(f"dropped {listed}")
    if done.held:
        parts.append(
            f"#{done.held[0]} {done.held[1]} is held by the province as it was signed: "
            "acknowledged, nothing lost"
        )
    after = (
        f"the receiver's #{done.follows.sequence} (watermark {done.follows.watermark_to})"
        if done.follows
        else "the start of the receiver's stream"
    )
    parts.append(f"{len(done.waiting)} waiting batches follow {after}")
    if done.regather:
        parts.append(
            {
                BatchKind.LIST_CHANGES: "the next run reads every department's list feed again "
                "from its first event (the province hears again of entries it holds)",
                BatchKind.GRADES: "the next run sends every enterprise's grade again",
                BatchKind.STATISTICS: "the next run asks every statistic again (spending its "
                "ε again)",
            }[kind]
        )
    elif done.dropped:
        parts.append("what the dropped batches held is not reported again")
    return f"{kind.value}: " + "; ".join(parts)

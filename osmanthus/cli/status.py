"""`osmanthus status`: one screen for the platform operator, the coordinator, every node and the
sync job, with a verdict and an exit code that say whether anything is wrong."""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from osmanthus.cli.exit_codes import ExitCode
from osmanthus.cli.options import (
    Subcommands,
    catalogue_options,
    command,
    duration,
    tls_files,
    tls_options,
)

if TYPE_CHECKING:
    from osmanthus.core.status import AuditStanding
    from osmanthus.core.tls import TlsFiles
    from osmanthus.core.wire.node import NodeInfoView
    from osmanthus.core.wire.status import CoordinatorStanding, NodeStanding

#: osmanthus.core.peers.COORDINATOR_DNS_NAME, here so that building the parser imports no crypto
_COORDINATOR_SERVER_NAME: Final = "coordinator.osmanthus"
#: the sync job's textfile metrics read (syncjob.metrics)
_SYNC_LAST_RUN: Final = "osmanthus_sync_last_run_timestamp_seconds"
_SYNC_LAST_OK_RUN: Final = "osmanthus_sync_last_ok_run_timestamp_seconds"
_SYNC_DURATION: Final = "osmanthus_sync_last_run_duration_seconds"
#: a run that ended well records its end this close before the metrics are written (seconds)
_SYNC_OK_SLACK_S: Final = 5.0
#: the nodes asked at once
_PARALLEL: Final = 8
SERVING: Final = "SERVING"
DOWN: Final = "DOWN"


def register(subcommands: Subcommands) -> None:
    """Add `status`."""
    p = command(
        subcommands,
        "status",
        "one screen for the platform operator: coordinator, every node, the sync job",
        "Ask the coordinator (StatusService) and every department node (the standard gRPC health "
        "check and NodeService.GetInfo) over mutual TLS with the operator certificate, read the "
        "sync job's state or metrics file, and print one table and a verdict. The nodes are "
        "reached at the addresses the coordinator's nodes.toml gives, or at those of --nodes "
        "(the same format) when the operator's host reaches them by other names.\n\n"
        "Something is wrong, and the exit code says so, when the coordinator or a node does not "
        "answer or is not SERVING (5), or (9): a node holds another catalogue than the "
        "coordinator, an audit log has entries that no checkpoint younger than "
        "--max-checkpoint-age signs, the coordinator's witness raised an alarm about a node's "
        "log, or the sync job's last run failed, did not finish or is older than --max-sync-age. "
        "Each problem is listed; --json prints the whole report for monitoring.",
        _cmd_status,
        parents=[tls_options(role_hint="operator"), catalogue_options()],
        extra="node",
    )
    p.add_argument("--coordinator", required=True, help="the coordinator's host:port")
    p.add_argument(
        "--coordinator-server-name",
        default=_COORDINATOR_SERVER_NAME,
        help="the name in the coordinator's certificate",
    )
    p.add_argument(
        "--operator", default="operator", help="operator certificate name in --certs-dir"
    )
    p.add_argument(
        "--nodes",
        type=Path,
        help="a nodes.toml naming where this host reaches each node (default: the addresses "
        "the coordinator reports)",
    )
    sync = p.add_mutually_exclusive_group()
    sync.add_argument(
        "--sync-config", type=Path, help="the sync job's config file: its state is read"
    )
    sync.add_argument(
        "--sync-metrics", type=Path, help="the sync job's --metrics-file (textfile metrics)"
    )
    p.add_argument(
        "--max-checkpoint-age",
        type=duration,
        default="10m",
        help="entries no checkpoint younger than this signs are a problem (e.g. 10m)",
    )
    p.add_argument(
        "--max-sync-age",
        type=duration,
        default="26h",
        help="a sync job whose last run is older than this is a problem (e.g. 26h)",
    )
    p.add_argument("--timeout", type=float, default=5.0, help="seconds for each call")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


# --- what was found -----------------------------------------------------------------------------


@dataclass
class _Server:
    """One server as `status` found it: its health, and what it said of itself."""

    address: str
    health: str = DOWN
    #: why it could not be asked (None: it answered)
    error: str | None = None


@dataclass
class _Node(_Server):
    department: str = ""
    info: NodeInfoView | None = None
    #: what the coordinator says of it (None: the coordinator did not answer)
    standing: NodeStanding | None = None


@dataclass
class _Coordinator(_Server):
    standing: CoordinatorStanding | None = None


@dataclass
class _Report:
    coordinator: _Coordinator
    nodes: list[_Node]
    sync: dict[str, Any] | None
    #: (who, what): each makes the exit non-zero
    down: list[tuple[str, str]] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)


def _cmd_status(args: argparse.Namespace) -> int:
    tls = tls_files(args, role="operator", name=args.operator)
    now = time.time()
    coordinator = _ask_coordinator(args, tls)
    nodes = _nodes_to_ask(args, coordinator)
    with ThreadPoolExecutor(max_workers=_PARALLEL, thread_name_prefix="status") as pool:
        list(pool.map(lambda n: _ask_node(n, tls, timeout=args.timeout), nodes))
    sync = _sync(args)
    report = _Report(coordinator=coordinator, nodes=nodes, sync=sync)
    _judge(report, args, now=now)
    if args.json:
        print(json.dumps(_document(report, now=now), indent=2, ensure_ascii=False))
    else:
        _print(report, now=now)
    if report.down:
        return ExitCode.UNAVAILABLE
    if report.problems:
        return ExitCode.UNHEALTHY
    return ExitCode.SUCCESS


def _health(channel: Any, *, timeout: float) -> str:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    reply = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=""), timeout=timeout
    )
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def _asking(server: _Server, ask: Callable[[], None]) -> None:
    """Run `ask`; a failed call leaves `server` DOWN with the reason."""
    import grpc

    from osmanthus.core.errors import OsmanthusError
    from osmanthus.core.grpc_errors import error_from_rpc

    try:
        ask()
    except grpc.RpcError as exc:
        error = error_from_rpc(exc)
        server.error = f"{type(error).__name__}: {error.message}"
    except OsmanthusError as exc:
        server.error = f"{type(exc).__name__}: {exc.message}"


def _ask_coordinator(args: argparse.Namespace, tls: TlsFiles) -> _Coordinator:
    from osmanthus.core.tls import secure_channel
    from osmanthus.core.wire.status import coordinator_status_from_proto
    from osmanthus.v1 import status_pb2, status_pb2_grpc

    found = _Coordinator(address=args.coordinator)
    with secure_channel(args.coordinator, tls, server_name=args.coordinator_server_name) as ch:

        def ask() -> None:
            found.health = _health(ch, timeout=args.timeout)
            reply = status_pb2_grpc.StatusServiceStub(ch).GetStatus(
                status_pb2.GetStatusRequest(), timeout=args.timeout
            )
            found.standing = coordinator_status_from_proto(reply)

        _asking(found, ask)
    return found


def _nodes_to_ask(args: argparse.Namespace, coordinator: _Coordinator) -> list[_Node]:
    """The coordinator's nodes, at the addresses --nodes gives when given (a node only there is
    asked too: the coordinator may be the one that is down)."""
    reported = {n.department: n for n in coordinator.standing.nodes} if coordinator.standing else {}
    addresses = {d: n.address for d, n in reported.items()}
    if args.nodes is not None:
        from coordinator.config import load_nodes
        from osmanthus.cli.options import catalogue_of

        listed = load_nodes(args.nodes, catalogue=catalogue_of(args))
        addresses.update({e.department: e.address for e in listed})
    return [
        _Node(address=address, department=department, standing=reported.get(department))
        for department, address in addresses.items()
    ]


def _ask_node(node: _Node, tls: TlsFiles, *, timeout: float) -> None:
    from osmanthus.core.tls import node_server_name, secure_channel
    from osmanthus.core.wire.node import node_info_from_proto
    from osmanthus.v1 import node_pb2, node_pb2_grpc

    with secure_channel(node.address, tls, server_name=node_server_name(node.department)) as ch:

        def ask() -> None:
            node.health = _health(ch, timeout=timeout)
            reply = node_pb2_grpc.NodeServiceStub(ch).GetInfo(
                node_pb2.GetInfoRequest(), timeout=timeout
            )
            node.info = node_info_from_proto(reply)

        _asking(node, ask)


# --- the sync job -------------------------------------------------------------------------------


def _sync(args: argparse.Namespace) -> dict[str, Any] | None:
    """The sync job's last run, from its state (--sync-config) or textfile (--sync-metrics)."""
    if args.sync_config is not None:
        from syncjob.config import load_config
        from syncjob.runner import status

        report = status(load_config(args.sync_config))
        last = report["last_run"]
        summary = (last or {}).get("summary") or {}
        return {
            "source": f"state {report['state']}",
            "running": report["running"] is not None,
            "last_run_at": last and (last["finished_at"] or last["started_at"]),
            "last_run_finished": bool(last and last["finished_at"]),
            "last_run_ok": bool(last and last["finished_at"] and summary.get("exit_code") == 0),
            "last_ok_run_at": report["last_ok_run"],
            "quarantined": len(report["quarantine"]),
            "backlog_batches": report["backlog"]["batches"],
        }
    if args.sync_metrics is not None:
        values = _read_metrics(args.sync_metrics)
        last_run = values.get(_SYNC_LAST_RUN, 0.0)
        last_ok = values.get(_SYNC_LAST_OK_RUN, 0.0)
        took = values.get(_SYNC_DURATION, 0.0)
        return {
            "source": f"metrics {args.sync_metrics}",
            "running": False,
            "last_run_at": _iso(last_run) if last_run else None,
            "last_run_finished": bool(last_run),
            # the textfile has no outcome of the last run: a run that ended well recorded its
            # end (the last ok run) after it started, one that failed did not
            "last_run_ok": bool(last_run) and last_ok >= last_run - took - _SYNC_OK_SLACK_S,
            "last_ok_run_at": _iso(last_ok) if last_ok else None,
            "quarantined": int(values.get("osmanthus_sync_quarantined_batches", 0)),
            "backlog_batches": int(values.get("osmanthus_sync_outbox_batches", 0)),
        }
    return None


def _read_metrics(path: Path) -> dict[str, float]:
    """The unlabelled samples of a Prometheus text file, by name."""
    from osmanthus.core.errors import InvalidArgument

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidArgument(
            f"{path}: cannot read: {exc.strerror}", field="sync-metrics"
        ) from None
    values: dict[str, float] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and not line.startswith("#") and "{" not in parts[0]:
            try:
                values[parts[0]] = float(parts[1])
            except ValueError:
                continue
    if _SYNC_LAST_RUN not in values:
        raise InvalidArgument(
            f"{path}: no {_SYNC_LAST_RUN}: not the sync job's --metrics-file, or it never ran",
            field="sync-metrics",
        )
    return values


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


# --- the verdict ---------------------------------------------------------------------------------


def _judge(report: _Report, args: argparse.Namespace, *, now: float) -> None:
    max_age = args.max_checkpoint_age.total_seconds()
    coordinator = report.coordinator
    if coordinator.error is not None or coordinator.health != SERVING:
        report.down.append(("coordinator", _why_down(coordinator)))
    if coordinator.standing is not None:
        _judge_audit(report, "coordinator", coordinator.standing.audit, max_age)
    elif not report.nodes:
        report.warnings.append(
            ("nodes", "not asked: the coordinator did not say which (give --nodes)")
        )
    for node in report.nodes:
        who = f"node {node.department}"
        if node.error is not None or node.health != SERVING:
            report.down.append((who, _why_down(node)))
        if node.standing is None and coordinator.standing is not None:
            report.problems.append((who, "not in the coordinator's nodes.toml"))
        info = node.info
        if info is not None:
            if info.department != node.department:
                report.problems.append((who, f"answers as department {info.department!r}"))
            if coordinator.standing is not None:
                if info.catalogue_digest != coordinator.standing.catalogue_digest:
                    report.problems.append(
                        (who, "holds another catalogue than the coordinator (digests differ)")
                    )
                if info.software_version != coordinator.standing.software_version:
                    report.warnings.append(
                        (
                            who,
                            f"runs {info.software_version}, the coordinator "
                            f"{coordinator.standing.software_version}",
                        )
                    )
            if info.records_held == 0:
                report.warnings.append((who, "holds no records"))
            _judge_audit(report, who, info.audit, max_age)
        standing = node.standing
        if standing is not None:
            if standing.alarms:
                alarms = ", ".join(f"{r} ×{n}" for r, n in sorted(standing.alarms.items()))
                report.problems.append((who, f"witness alarms about its log: {alarms}"))
            elif coordinator.standing is not None and not standing.witnessed:
                report.warnings.append((who, "its log is not witnessed by the coordinator"))
    _judge_sync(report, args, now=now)


def _why_down(server: _Server) -> str:
    if server.error is not None:
        return f"does not answer at {server.address} ({server.error})"
    return f"health {server.health} at {server.address}"


def _judge_audit(report: _Report, who: str, audit: AuditStanding, max_age: float) -> None:
    if audit.failure is not None:
        # it refuses every query until an entry can be written (its health says NOT_SERVING)
        report.problems.append(
            (who, f"cannot write its audit log ({audit.failure}): every query is refused")
        )
    if not audit.checkpoints:
        report.warnings.append((who, "no log key: its audit log has no signed checkpoints"))
        return
    if audit.unsigned_entries == 0:
        return  # the latest checkpoint covers the whole log, however old it is
    age = audit.checkpoint_age_s
    if age is None or age > max_age:
        shown = "no checkpoint" if age is None else f"the latest checkpoint is {_ago(age)} old"
        report.problems.append(
            (
                who,
                f"audit checkpoint stale: {audit.unsigned_entries} entries unsigned and {shown} "
                f"(--max-checkpoint-age {_ago(max_age)})",
            )
        )


def _judge_sync(report: _Report, args: argparse.Namespace, *, now: float) -> None:
    sync = report.sync
    if sync is None:
        return
    if sync["quarantined"]:
        report.problems.append(
            ("sync job", f"{sync['quarantined']} batches in quarantine (osmanthus sync status)")
        )
    if sync["last_run_at"] is None:
        report.problems.append(("sync job", "has never run"))
        return
    if sync["running"]:
        return
    if not sync["last_run_finished"]:
        report.problems.append(("sync job", "its last run did not finish"))
    elif not sync["last_run_ok"]:
        report.problems.append(
            ("sync job", f"its last run failed (last run without error: {sync['last_ok_run_at']})")
        )
    age = now - _epoch(sync["last_run_at"])
    limit = args.max_sync_age.total_seconds()
    if age > limit:
        report.problems.append(
            ("sync job", f"its last run was {_ago(age)} ago (--max-sync-age {_ago(limit)})")
        )


# --- output --------------------------------------------------------------------------------------


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{math.floor(seconds)}s"
    if seconds < 7200:
        return f"{math.floor(seconds / 60)}m"
    if seconds < 172800:
        return f"{math.floor(seconds / 3600)}h"
    return f"{math.floor(seconds / 86400)}d"


def _audit_document(audit: AuditStanding) -> dict[str, Any]:
    return {
        "entries": audit.entries,
        "checkpoints": audit.checkpoints,
        "checkpoint_size": audit.checkpoint_size,
        "unsigned_entries": audit.unsigned_entries,
        "checkpoint_age_s": (
            round(audit.checkpoint_age_s, 3) if audit.checkpoint_age_s is not None else None
        ),
        "failure": audit.failure,
    }


def _document(report: _Report, *, now: float) -> dict[str, Any]:
    """The report as JSON (docs/deployment.md "Operating it" lists the fields)."""
    c = report.coordinator
    coordinator: dict[str, Any] = {"address": c.address, "health": c.health, "error": c.error}
    if c.standing is not None:
        coordinator |= {
            "software_version": c.standing.software_version,
            "catalogue_digest": c.standing.catalogue_digest,
            "policy_hash": c.standing.policy_hash,
            "audit": _audit_document(c.standing.audit),
            "witnessing": c.standing.witnessing,
        }
    nodes = []
    for n in report.nodes:
        node: dict[str, Any] = {
            "department": n.department,
            "address": n.address,
            "health": n.health,
            "error": n.error,
        }
        if n.info is not None:
            node |= {
                "name": n.info.name,
                "software_version": n.info.software_version,
                "rules_version": n.info.rules_version,
                "rules_digest": n.info.rules_digest,
                "policy_hash": n.info.policy_hash,
                "catalogue_digest": n.info.catalogue_digest,
                "records_held": n.info.records_held,
                "last_ingest": {
                    "at": _iso(n.info.last_ingest_at) if n.info.last_ingest_at else None,
                    "source": n.info.last_ingest_source or "unknown",
                    "actor": n.info.last_ingest_actor or None,
                },
                "audit": _audit_document(n.info.audit),
            }
        if n.standing is not None:
            node["witness"] = {
                "witnessed": n.standing.witnessed,
                "cosigned_size": n.standing.cosigned_size,
                "alarms": dict(n.standing.alarms),
            }
        nodes.append(node)
    return {
        "ok": not (report.down or report.problems),
        "verdict": _verdict(report),
        "checked_at": _iso(now),
        "problems": [{"who": w, "problem": p} for w, p in [*report.down, *report.problems]],
        "warnings": [{"who": w, "warning": p} for w, p in report.warnings],
        "coordinator": coordinator,
        "nodes": nodes,
        "sync": report.sync,
    }


def _verdict(report: _Report) -> str:
    problems = [*report.down, *report.problems]
    if not problems:
        nodes = sum(1 for n in report.nodes if n.health == SERVING)
        return f"OK: the coordinator and {nodes} nodes serving, nothing wrong found"
    listed = "; ".join(f"{who}: {what}" for who, what in problems)
    return f"{len(problems)} PROBLEM{'S' if len(problems) > 1 else ''}: {listed}"


def _print(report: _Report, *, now: float) -> None:
    c = report.coordinator
    line = f"coordinator  {c.address}  {c.health}"
    if c.standing is not None:
        s = c.standing
        line += (
            f"  version {s.software_version}  policy {s.policy_hash[:12]}  catalogue "
            f"{s.catalogue_digest[:12]}  audit {_audit_text(s.audit)}  witnessing "
            f"{'on' if s.witnessing else 'off'}"
        )
    elif c.error:
        line += f"  {c.error}"
    print(line)
    print()
    header = (
        "NODE", "ADDRESS", "HEALTH", "VERSION", "RULES", "RECORDS", "LAST INGEST", "AUDIT",
        "CHECKPOINT", "COSIGNED", "ALARMS",
    )  # fmt: skip
    rows: list[Sequence[str]] = [header]
    for n in report.nodes:
        info, standing = n.info, n.standing
        rows.append(
            (
                n.department,
                n.address,
                n.health,
                info.software_version if info else "-",
                info.rules_version if info else "-",
                f"{info.records_held:,}" if info else "-",
                _ingest_text(info, now=now) if info else "-",
                f"{info.audit.entries:,}" if info else "-",
                _checkpoint_text(info.audit) if info else "-",
                (str(standing.cosigned_size) if standing.witnessed else "not witnessed")
                if standing
                else "-",
                str(sum(standing.alarms.values())) if standing else "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if report.sync is not None:
        sync = report.sync
        outcome = (
            "running now"
            if sync["running"]
            else (
                "ok"
                if sync["last_run_ok"]
                else "FAILED"
                if sync["last_run_finished"]
                else "unfinished"
            )
        )
        print()
        print(
            f"sync job  last run {sync['last_run_at'] or 'never'} {outcome}  last ok run "
            f"{sync['last_ok_run_at'] or 'never'}  backlog {sync['backlog_batches']} batches  "
            f"({sync['source']})"
        )
    if report.warnings:
        print()
        print("warnings:")
        for who, what in report.warnings:
            print(f"  {who}: {what}")
    problems = [*report.down, *report.problems]
    if problems:
        print()
        print("problems:")
        for who, what in problems:
            print(f"  {who}: {what}")
    print()
    print(f"verdict: {_verdict(report)}")


def _audit_text(audit: AuditStanding) -> str:
    return f"{audit.entries:,} entries, checkpoint {_checkpoint_text(audit)}"


def _checkpoint_text(audit: AuditStanding) -> str:
    if not audit.checkpoints:
        return "none (no log key)"
    if audit.checkpoint_age_s is None:
        return "none yet"
    unsigned = f", {audit.unsigned_entries} unsigned" if audit.unsigned_entries else ""
    return f"{audit.checkpoint_size:,} ({_ago(audit.checkpoint_age_s)} ago{unsigned})"


def _ingest_text(info: NodeInfoView, *, now: float) -> str:
    if info.last_ingest_at is None:
        return "unknown"
    how = info.last_ingest_source or "unknown"
    if info.last_ingest_actor:
        how += f", {info.last_ingest_actor}"
    return f"{_ago(now - info.last_ingest_at)} ago ({how})"

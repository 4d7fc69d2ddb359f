"""`osmanthus status` against a real federation over mutual TLS, with the operator certificate.

Nodes and coordinator are started by start_federation with their log keys (every audit log a
transparency log) and the coordinator's witness. All green gives exit 0 and the JSON report; a
node stopped gives UNAVAILABLE naming it; a node whose checkpointer stopped while its log grew
gives UNHEALTHY naming the stale checkpoint; a failed sync run is a problem; the coordinator's
StatusService refuses anything but an operator certificate.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from certs import PeerRole, cert_paths
from osmanthus.cli.app import main
from osmanthus.cli.exit_codes import ExitCode
from osmanthus.core.checkpoints import latest_path
from osmanthus.core.errors import PermissionDenied
from osmanthus.core.grpc_errors import error_from_rpc
from osmanthus.core.logserver import LocalLog
from osmanthus.core.tls import COORDINATOR_SERVER_NAME, TlsFiles, node_server_name, secure_channel
from osmanthus.demo.seed import SeedReport
from osmanthus.v1 import node_pb2, node_pb2_grpc, status_pb2, status_pb2_grpc
from sdk import RequesterKeys
from tests.conftest import IssuerKeyPaths
from tests.integration.conftest import (
    Federation,
    restricted_catalogue,
    start_federation,
    stop_federation,
)

DEPARTMENTS = ("psb", "tax")
#: checkpoints by time only (every 60 s), so that a test's own entries stay unsigned
NO_CHECKPOINT_BY_COUNT = 1_000_000
HOUR_S = 3600.0

NODE_FIELDS = {
    "department", "address", "health", "error", "name", "software_version", "rules_version",
    "rules_digest", "policy_hash", "catalogue_digest", "records_held", "last_ingest", "audit",
    "witness",
}  # fmt: skip
AUDIT_FIELDS = {
    "entries", "checkpoints", "checkpoint_size", "unsigned_entries", "checkpoint_age_s", "failure",
}  # fmt: skip


def _start(
    base: Path,
    seeded: SeedReport,
    platform_certs: Path,
    issuer_keys: IssuerKeyPaths,
    requester_keys: dict[str, RequesterKeys],
) -> Federation:
    return start_federation(
        base,
        catalogue=restricted_catalogue(DEPARTMENTS),
        data=seeded,
        certs=platform_certs,
        issuer_keys=issuer_keys,
        keys=requester_keys,
        departments=DEPARTMENTS,
        transparency=True,
        witness=True,
        checkpoint_every=NO_CHECKPOINT_BY_COUNT,
    )


@pytest.fixture(scope="module")
def fed(
    tmp_path_factory: pytest.TempPathFactory,
    seeded: SeedReport,
    platform_certs: Path,
    issuer_keys: IssuerKeyPaths,
    requester_keys: dict[str, RequesterKeys],
) -> Iterator[Federation]:
    federation = _start(
        tmp_path_factory.mktemp("status"), seeded, platform_certs, issuer_keys, requester_keys
    )
    witnessing = federation.coordinator.witnessing
    assert witnessing is not None
    witnessing.witness_once()
    yield federation
    stop_federation(federation)


@pytest.fixture
def own_fed(
    tmp_path: Path,
    seeded: SeedReport,
    platform_certs: Path,
    issuer_keys: IssuerKeyPaths,
    requester_keys: dict[str, RequesterKeys],
) -> Iterator[Federation]:
    """A federation of the test's own, for tests that break it."""
    federation = _start(tmp_path, seeded, platform_certs, issuer_keys, requester_keys)
    yield federation
    stop_federation(federation)


def status(
    fed: Federation, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, dict[str, Any]]:
    code = main(
        ["status", "--certs-dir", str(fed.certs), "--coordinator", fed.target, "--json", *extra]
    )
    return code, json.loads(capsys.readouterr().out)


def operator_tls(fed: Federation) -> TlsFiles:
    return TlsFiles.from_cert_paths(cert_paths(fed.certs, role=PeerRole.OPERATOR, name="operator"))


def sync_metrics(path: Path, *, last_run: float, last_ok_run: float, duration_s: float) -> Path:
    """A textfile as the sync job's --metrics-file writes it (syncjob.metrics)."""
    path.write_text(
        "# HELP osmanthus_sync_last_run_timestamp_seconds When the last run ended (Unix time)\n"
        "# TYPE osmanthus_sync_last_run_timestamp_seconds gauge\n"
        f"osmanthus_sync_last_run_timestamp_seconds {last_run:.9e}\n"
        f"osmanthus_sync_last_ok_run_timestamp_seconds {last_ok_run:.9e}\n"
        f"osmanthus_sync_last_run_duration_seconds {duration_s:.9e}\n"
        "osmanthus_sync_outbox_batches 0.0\n"
        "osmanthus_sync_quarantined_batches 0.0\n"
        'osmanthus_sync_runs_total{outcome="ok"} 1.0\n',
        encoding="utf-8",
    )
    return path


def test_all_green_exits_zero_with_every_field(
    fed: Federation, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    now = time.time()
    metrics = sync_metrics(
        tmp_path / "sync.prom", last_run=now, last_ok_run=now - 0.2, duration_s=3.0
    )
    code, report = status(fed, capsys, "--sync-metrics", str(metrics))
    assert code == ExitCode.SUCCESS, report["problems"]
    assert report["ok"] is True
    assert str(report["verdict"]).startswith("OK: the coordinator and 2 nodes serving")
    assert report["problems"] == []
    coordinator = report["coordinator"]
    assert isinstance(coordinator, dict)
    assert coordinator["health"] == "SERVING"
    assert coordinator["witnessing"] is True
    assert len(coordinator["catalogue_digest"]) == 64
    assert set(coordinator["audit"]) == AUDIT_FIELDS
    assert coordinator["audit"]["checkpoints"] is True
    nodes = report["nodes"]
    assert isinstance(nodes, list)
    assert [n["department"] for n in nodes] == list(DEPARTMENTS)
    for node in nodes:
        assert set(node) == NODE_FIELDS
        assert node["health"] == "SERVING"
        assert node["error"] is None
        assert node["records_held"] == fed.data.records[node["department"]]
        assert node["catalogue_digest"] == coordinator["catalogue_digest"]
        # the demo seeds its stores directly: no import recorded, so the store file's time
        assert node["last_ingest"]["source"] == "file time"
        assert node["last_ingest"]["actor"] is None
        assert node["audit"]["failure"] is None
        assert node["last_ingest"]["at"].endswith("Z")
        assert node["audit"]["checkpoints"] is True
        assert node["audit"]["checkpoint_age_s"] >= 0
        assert node["witness"]["witnessed"] is True
        assert node["witness"]["alarms"] == {}
    sync = report["sync"]
    assert isinstance(sync, dict)
    assert sync["last_run_ok"] is True


def test_the_table_ends_with_the_verdict(
    fed: Federation, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["status", "--certs-dir", str(fed.certs), "--coordinator", fed.target])
    out = capsys.readouterr().out
    assert code == ExitCode.SUCCESS, out
    lines = out.strip().splitlines()
    assert lines[0].startswith(f"coordinator  {fed.target}  SERVING")
    assert any(line.split()[:1] == ["NODE"] for line in lines)
    for department in DEPARTMENTS:
        assert any(line.startswith(department + " ") for line in lines), out
    assert lines[-1].startswith("verdict: OK")


def test_a_failed_sync_run_is_a_problem(
    fed: Federation, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    now = time.time()
    # the last run ended now; the last run without error ended a day ago
    metrics = sync_metrics(
        tmp_path / "sync.prom", last_run=now, last_ok_run=now - 24 * HOUR_S, duration_s=3.0
    )
    code, report = status(fed, capsys, "--sync-metrics", str(metrics))
    assert code == ExitCode.UNHEALTHY
    assert report["ok"] is False
    assert [p["who"] for p in report["problems"]] == ["sync job"]
    assert "failed" in str(report["verdict"])


def test_a_stopped_node_is_named_and_unavailable(
    own_fed: Federation, capsys: pytest.CaptureFixture[str]
) -> None:
    own_fed.nodes["tax"].stop(grace=0)
    code, report = status(own_fed, capsys)
    assert code == ExitCode.UNAVAILABLE
    assert report["ok"] is False
    problems = report["problems"]
    assert isinstance(problems, list)
    assert [p["who"] for p in problems] == ["node tax"]
    assert "does not answer" in problems[0]["problem"]
    assert "node tax" in str(report["verdict"])
    by_department = {n["department"]: n for n in report["nodes"]}
    assert by_department["tax"]["health"] == "DOWN"
    assert by_department["psb"]["health"] == "SERVING"


def test_a_stale_checkpoint_is_named(
    own_fed: Federation, capsys: pytest.CaptureFixture[str]
) -> None:
    # the psb node's checkpointer stops (a hung or dead thread) ...
    running = own_fed.nodes["psb"]
    owners = [getattr(stop, "__self__", None) for stop in running.on_stop]
    local = next(owner for owner in owners if isinstance(owner, LocalLog))
    local.checkpointer.close()
    # ... its log grows (a refused call is audited) ...
    log = own_fed.state_dir / "psb" / "audit.jsonl"
    before = len(log.read_bytes().splitlines())
    tls = operator_tls(own_fed)
    address = f"127.0.0.1:{running.port}"
    with (
        secure_channel(address, tls, server_name=node_server_name("psb")) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        node_pb2_grpc.NodeServiceStub(channel).Contribute(node_pb2.ContributeRequest())
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert len(log.read_bytes().splitlines()) > before
    # ... and its last checkpoint was signed an hour ago
    signed = latest_path(log)
    an_hour_ago = time.time() - HOUR_S
    os.utime(signed, (an_hour_ago, an_hour_ago))

    code, report = status(own_fed, capsys, "--max-checkpoint-age", "10m")
    assert code == ExitCode.UNHEALTHY
    problems = report["problems"]
    assert isinstance(problems, list)
    assert [p["who"] for p in problems] == ["node psb"]
    assert "audit checkpoint stale" in problems[0]["problem"]
    psb = next(n for n in report["nodes"] if n["department"] == "psb")
    assert psb["audit"]["unsigned_entries"] >= 1
    assert psb["audit"]["checkpoint_age_s"] >= HOUR_S - 60
    # a larger allowance accepts the same hour-old checkpoint
    code, _ = status(own_fed, capsys, "--max-checkpoint-age", "2h")
    assert code == ExitCode.SUCCESS


@pytest.mark.parametrize("role,name", [(PeerRole.REQUESTER, "agency-1"), (PeerRole.NODE, "psb")])
def test_the_coordinator_status_is_for_operators_only(
    fed: Federation, role: PeerRole, name: str
) -> None:
    tls = TlsFiles.from_cert_paths(cert_paths(fed.certs, role=role, name=name))
    with (
        secure_channel(fed.target, tls, server_name=COORDINATOR_SERVER_NAME) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        status_pb2_grpc.StatusServiceStub(channel).GetStatus(status_pb2.GetStatusRequest())
    error = error_from_rpc(refused.value)
    assert isinstance(error, PermissionDenied)
    assert "operator" in error.message


def test_an_unreachable_coordinator_is_unavailable(
    fed: Federation, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # the nodes are still asked at the addresses --nodes gives
    nodes = tmp_path / "nodes.toml"
    nodes.write_text((fed.state_dir.parent / "nodes.toml").read_text(encoding="utf-8"))
    code = main(
        [
            "status", "--certs-dir", str(fed.certs), "--coordinator", "127.0.0.1:1",
            "--nodes", str(nodes), "--json", "--timeout", "2",
        ]
    )  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert code == ExitCode.UNAVAILABLE
    assert [p["who"] for p in report["problems"]] == ["coordinator"]
    assert [n["health"] for n in report["nodes"]] == ["SERVING", "SERVING"]

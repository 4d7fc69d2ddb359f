"""A node that cannot write its audit log says so: health NOT_SERVING, `osmanthus status` a problem.

Real components: the psb node with its state directory on a small tmpfs the test fills
(tests/smalldisk.py), the coordinator, the standard gRPC health service and `osmanthus status
--json` with the operator's certificate. Once space is freed the next query is answered and
the node says SERVING again, with no restart. A requester's GetInfo tells none of the standing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from certs import PeerRole
from osmanthus.cli.app import main
from osmanthus.cli.exit_codes import ExitCode
from osmanthus.core.types import Role
from osmanthus.v1 import node_pb2, node_pb2_grpc
from tests.integration.conftest import Federation
from tests.integration.test_node_disk_full import PAGE_SLACK_ENTRIES, small_node
from tests.integration.test_rejections_node import (
    AGENCY,
    AGENCY_PURPOSES,
    DEPARTMENT,
    TIMEOUT_S,
    _channel,
    _metadata,
    _request,
)
from tests.smalldisk import fill

__all__ = ["small_node"]  # the fixture, used by name
FULL = "No space left on device"


def _status(fed: Federation, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code = main(["status", "--certs-dir", str(fed.certs), "--coordinator", fed.target, "--json"])
    return code, json.loads(capsys.readouterr().out)


def _health(channel: grpc.Channel) -> str:
    reply = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT_S
    )
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def test_a_node_that_cannot_audit_is_not_serving_and_status_names_why(
    small_node: tuple[Federation, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    federation, state = small_node
    token = federation.token(AGENCY, role=Role.CREDIT_AGENCY, purposes=AGENCY_PURPOSES)
    with (
        _channel(federation, PeerRole.COORDINATOR, "coordinator") as channel,
        _channel(federation, PeerRole.OPERATOR, "operator") as operator,
    ):
        node = node_pb2_grpc.NodeServiceStub(channel)

        def answered() -> bool:
            try:
                node.Contribute(_request(federation), timeout=TIMEOUT_S, metadata=_metadata(token))
            except grpc.RpcError as exc:
                assert isinstance(exc, grpc.Call)
                assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc.details()
                return False
            return True

        assert answered()
        assert _health(operator) == "SERVING"
        code, report = _status(federation, capsys)
        assert code == ExitCode.SUCCESS, report["problems"]
        filler = fill(state)
        for _ in range(PAGE_SLACK_ENTRIES):
            if not answered():
                break
        else:
            raise AssertionError(f"{PAGE_SLACK_ENTRIES} answers on a full disk")
        # refusing every query: the health service and the operator's status say so
        assert _health(operator) == "NOT_SERVING"
        info = node_pb2_grpc.NodeServiceStub(operator).GetInfo(
            node_pb2.GetInfoRequest(), timeout=TIMEOUT_S
        )
        assert info.audit_failure == FULL
        assert str(state) not in info.audit_failure
        code, report = _status(federation, capsys)
        assert code == ExitCode.UNAVAILABLE  # not serving (exit 5)
        assert report["ok"] is False
        (psb,) = [n for n in report["nodes"] if n["department"] == DEPARTMENT]
        assert psb["health"] == "NOT_SERVING"
        assert psb["audit"]["failure"] == FULL
        assert {
            "who": f"node {DEPARTMENT}",
            "problem": f"cannot write its audit log ({FULL}): every query is refused",
        } in report["problems"]
        # room again: the next query is answered, and the node says SERVING again
        filler.unlink()
        assert answered()
        assert _health(operator) == "SERVING"
        code, report = _status(federation, capsys)
        (psb,) = [n for n in report["nodes"] if n["department"] == DEPARTMENT]
        assert psb["audit"]["failure"] is None
        assert code == ExitCode.SUCCESS, report["problems"]


def test_a_requester_learns_none_of_the_node_s_standing(
    small_node: tuple[Federation, Path],
) -> None:
    federation, _ = small_node
    with _channel(federation, PeerRole.REQUESTER, AGENCY) as channel:
        info = node_pb2_grpc.NodeServiceStub(channel).GetInfo(
            node_pb2.GetInfoRequest(), timeout=TIMEOUT_S
        )
    assert info.department == DEPARTMENT and info.rules_version
    assert (info.records_held, info.audit_entries, info.last_ingest_at) == (0, 0, 0)
    assert (info.last_ingest_source, info.last_ingest_actor, info.audit_failure) == ("", "", "")
    with _channel(federation, PeerRole.OPERATOR, "operator") as channel:
        told = node_pb2_grpc.NodeServiceStub(channel).GetInfo(
            node_pb2.GetInfoRequest(), timeout=TIMEOUT_S
        )
    assert told.records_held > 0

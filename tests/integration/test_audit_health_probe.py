"""A server whose audit log could not be written says SERVING again by itself once it can.

Real components: the psb node over mTLS with its state directory on a small tmpfs the test
fills (tests/smalldisk.py), and the standard gRPC health service. A load balancer sends a
server that says NOT_SERVING no requests, so no audit entry would come to show that the disk
has room again: the server probes its log in the background (AuditLog.probe, a scratch file
beside the log, no entry) every AUDIT_PROBE_INTERVAL_S. Once the filler is deleted, the health
service says SERVING with no request sent, the log has gained no entry, and the next query is
answered and audited.
"""

from __future__ import annotations

import json
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from certs import PeerRole
from osmanthus.core.audit import PROBE_SUFFIX
from osmanthus.core.types import Role
from osmanthus.v1 import node_pb2_grpc
from tests.integration.conftest import Federation
from tests.integration.test_node_disk_full import PAGE_SLACK_ENTRIES, small_node
from tests.integration.test_rejections_node import (
    AGENCY,
    AGENCY_PURPOSES,
    TIMEOUT_S,
    _channel,
    _metadata,
    _request,
)
from tests.smalldisk import fill
from tests.waiting import wait_until

__all__ = ["small_node"]  # the fixture, used by name


def _health(channel: grpc.Channel) -> str:
    reply = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT_S
    )
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def test_a_node_says_serving_again_once_its_disk_has_room_with_no_request(
    small_node: tuple[Federation, Path],
) -> None:
    federation, state = small_node
    log = state / "audit.jsonl"
    token = federation.token(AGENCY, role=Role.CREDIT_AGENCY, purposes=AGENCY_PURPOSES)
    with (
        _channel(federation, PeerRole.COORDINATOR, "coordinator") as channel,
        _channel(federation, PeerRole.OPERATOR, "operator") as operator,
    ):
        node = node_pb2_grpc.NodeServiceStub(channel)

        def answered() -> tuple[str, bool]:
            request = _request(federation)
            try:
                node.Contribute(request, timeout=TIMEOUT_S, metadata=_metadata(token))
            except grpc.RpcError as exc:
                assert isinstance(exc, grpc.Call)
                assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc.details()
                return request.query_id, False
            return request.query_id, True

        assert answered()[1]
        filler = fill(state)
        for _ in range(PAGE_SLACK_ENTRIES):
            if not answered()[1]:
                break
        else:
            raise AssertionError(f"{PAGE_SLACK_ENTRIES} answers on a full disk")
        assert _health(operator) == "NOT_SERVING"
        held = log.read_bytes()
        filler.unlink()
        # no request from here on: the background probe alone finds the room
        wait_until(
            lambda: _health(operator) == "SERVING",
            what="the node to say SERVING again after space was freed, with no request",
            poll_s=0.05,
        )
        # the probe wrote no entry and left no scratch file
        assert log.read_bytes() == held
        assert not (state / f"audit.jsonl{PROBE_SUFFIX}").exists()
        query_id, ok = answered()
        assert ok
    lines = [json.loads(line) for line in log.read_bytes().splitlines()]
    assert lines[-1]["query_id"] == query_id and lines[-1]["decision"] == "allow"

"""The coordinator's StatusService: its own standing and its view of every node, for operators.

`osmanthus status` asks here first: the coordinator's version, catalogue and central policy, its
audit log and latest checkpoint, and for each node of nodes.toml its address and what the
coordinator's witness last cosigned of the node's log, with the alarms it raised.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from coordinator.config import NodeEndpoint
from coordinator.context import CoordinatorContext
from coordinator.witnessing import NodeWitnessing
from osmanthus import __version__
from osmanthus.core.errors import PermissionDenied
from osmanthus.core.grpc_errors import servicer_method
from osmanthus.core.logkeys import log_origin
from osmanthus.core.logserver import LocalLog
from osmanthus.core.peers import PeerRole
from osmanthus.core.server import current_caller
from osmanthus.core.status import audit_standing, catalogue_digest
from osmanthus.core.wire import status as wire
from osmanthus.v1 import status_pb2, status_pb2_grpc

STATUS_SERVICE_NAME = status_pb2.DESCRIPTOR.services_by_name["StatusService"].full_name


class CoordinatorStatus:
    """Builds the coordinator's standing from what it runs with."""

    def __init__(
        self,
        *,
        context: CoordinatorContext,
        endpoints: Sequence[NodeEndpoint],
        witnessing: NodeWitnessing | None,
    ) -> None:
        self._ctx = context
        self._endpoints = tuple(endpoints)
        self._witnessing = witnessing
        # the catalogue does not change while the coordinator runs
        self._catalogue_digest = catalogue_digest(context.catalogue)

    def standing(self) -> wire.CoordinatorStanding:
        local = self._ctx.transparency
        return wire.CoordinatorStanding(
            software_version=__version__,
            catalogue_digest=self._catalogue_digest,
            policy_hash=self._ctx.policy.current().hash,
            audit=audit_standing(self._ctx.audit, local if isinstance(local, LocalLog) else None),
            nodes=tuple(self._node(e) for e in self._endpoints),
            witnessing=self._witnessing is not None,
        )

    def _node(self, endpoint: NodeEndpoint) -> wire.NodeStanding:
        witnessing = self._witnessing
        origin = log_origin(PeerRole.NODE, endpoint.department)
        if witnessing is None or origin not in witnessing.origins:
            return wire.NodeStanding(department=endpoint.department, address=endpoint.address)
        latest = witnessing.witness.latest(origin)
        alarms = {
            reason: count
            for (alarmed, reason), count in witnessing.alarm_counts().items()
            if alarmed == origin and count
        }
        return wire.NodeStanding(
            department=endpoint.department,
            address=endpoint.address,
            witnessed=True,
            cosigned_size=latest.size if latest is not None else 0,
            alarms=alarms,
        )


class StatusServicer(status_pb2_grpc.StatusServiceServicer):
    """Answers operator certificates only: the standing names the nodes' addresses."""

    def __init__(self, status: CoordinatorStatus) -> None:
        self._status = status

    @servicer_method
    def GetStatus(  # noqa: N802 - gRPC method name
        self, request: status_pb2.GetStatusRequest, context: grpc.ServicerContext
    ) -> status_pb2.CoordinatorStatus:
        caller = current_caller().peer
        if caller.role is not PeerRole.OPERATOR:
            raise PermissionDenied(
                f"only an operator certificate may ask the coordinator's status; the caller's "
                f"certificate names {caller.role.value} {caller.name!r}"
            )
        return wire.coordinator_status_to_proto(self._status.standing())

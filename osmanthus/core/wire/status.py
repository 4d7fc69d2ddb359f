"""StatusService's wire contract: what the coordinator tells the platform operator of itself.

The coordinator's servicer writes CoordinatorStatus with these; `osmanthus status` reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from osmanthus.core.status import AuditStanding
from osmanthus.core.wire.node import audit_standing_fields, audit_standing_from_proto
from osmanthus.v1 import status_pb2


@dataclass(frozen=True)
class NodeStanding:
    """One node of the coordinator's nodes.toml, as the coordinator sees it."""

    department: str
    #: the address the coordinator reaches the node at
    address: str
    #: whether the coordinator's witness watches the node's log (the roster lists it)
    witnessed: bool = False
    #: the size the witness last cosigned (0: none yet)
    cosigned_size: int = 0
    #: alarm reason -> how many since the coordinator started
    alarms: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class CoordinatorStanding:
    software_version: str
    catalogue_digest: str
    policy_hash: str
    audit: AuditStanding
    nodes: tuple[NodeStanding, ...]
    #: whether the coordinator witnesses the nodes' logs at all
    witnessing: bool


def coordinator_status_to_proto(status: CoordinatorStanding) -> status_pb2.CoordinatorStatus:
    return status_pb2.CoordinatorStatus(
        software_version=status.software_version,
        catalogue_digest=status.catalogue_digest,
        policy_hash=status.policy_hash,
        nodes=[
            status_pb2.StatusNode(
                department=n.department,
                address=n.address,
                witnessed=n.witnessed,
                cosigned_size=n.cosigned_size,
                alarms=[
                    status_pb2.WitnessAlarmCount(reason=reason, count=count)
                    for reason, count in sorted(n.alarms.items())
                ],
            )
            for n in status.nodes
        ],
        witnessing=status.witnessing,
        **audit_standing_fields(status.audit),
    )


def coordinator_status_from_proto(message: status_pb2.CoordinatorStatus) -> CoordinatorStanding:
    return CoordinatorStanding(
        software_version=message.software_version,
        catalogue_digest=message.catalogue_digest,
        policy_hash=message.policy_hash,
        audit=audit_standing_from_proto(message),
        nodes=tuple(
            NodeStanding(
                department=n.department,
                address=n.address,
                witnessed=n.witnessed,
                cosigned_size=n.cosigned_size,
                alarms={a.reason: a.count for a in n.alarms},
            )
            for n in message.nodes
        ),
        witnessing=message.witnessing,
    )

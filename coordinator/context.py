"""What every part of the coordinator decides with: one context, built once, handed to each.

The query path, batches, statistics, list searches and change feeds each authenticate, decide
under the central policy, charge the requester's rate limit and audit, against the same
catalogue, node pool, policy, audit log, rate limiter, clock and deadline. They share this
context instead of each holding its own copy of seven references, and decide through its
helpers so that a request reads as the steps of its own decision.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from coordinator.nodes import NodePool
from coordinator.ratelimit import RateLimiter
from osmanthus.core import metrics
from osmanthus.core.audit import AuditLog, redacted_reason
from osmanthus.core.audited import AuditedRequest, audited
from osmanthus.core.auditproofs import CheckpointSource
from osmanthus.core.catalogue import Catalogue
from osmanthus.core.errors import OsmanthusError, PermissionDenied
from osmanthus.core.policy import (
    Decision,
    PolicyEngine,
    PolicyRequest,
    RateLimit,
    ReloadablePolicy,
    time_facts,
)
from osmanthus.core.tokens import TokenClaims

#: how long the coordinator waits for a node's answer to a single query by default
DEFAULT_DEADLINE_S = 5.0


@dataclass(frozen=True, kw_only=True)
class CoordinatorContext:
    """The coordinator's shared state: what each sub-service decides and answers with."""

    catalogue: Catalogue
    nodes: NodePool
    policy: ReloadablePolicy
    audit: AuditLog
    rate_limiter: RateLimiter
    clock: Callable[[], datetime]
    #: per node call of a single query, a list page or a statistic
    deadline_s: float = DEFAULT_DEADLINE_S
    #: the audit log's checkpointer (osmanthus.core.checkpoints): with it, the coordinator's
    #: part of a subject's file proves its audit lines to a signed checkpoint
    transparency: CheckpointSource | None = None

    def decide(
        self,
        engine: PolicyEngine,
        claims: TokenClaims,
        action: str,
        resource: tuple[str, str],
        context: Mapping[str, Any] | None = None,
    ) -> Decision:
        """The central policy's decision on `claims` doing `action` to `resource`, now.

        A request that makes several decisions passes the one engine it took at its start to
        each, so that one policy version decides the whole request (the one its audit names).
        """
        return engine.decide(
            PolicyRequest(
                principal_type="Requester",
                principal_id=claims.requester,
                principal_attrs={"role": claims.role.value},
                action=action,
                resource_type=resource[0],
                resource_id=resource[1],
                context={**(context or {}), **time_facts(self.clock())},
            )
        )

    def require(
        self,
        engine: PolicyEngine,
        claims: TokenClaims,
        action: str,
        resource: tuple[str, str],
        context: Mapping[str, Any] | None = None,
    ) -> Decision:
        """`decide`, refusing (PermissionDenied with the policy's reason) unless allowed."""
        decision = self.decide(engine, claims, action, resource, context)
        if not decision.allowed:
            raise PermissionDenied(f"central policy: {decision.reason}")
        return decision

    @contextmanager
    def rate_limited(self, requester: str, limits: Sequence[RateLimit]) -> Iterator[None]:
        """Charge the permit's @rate_limit for the block; give it back if the block fails.

        Only answers count against a limit: a request refused or failing after the charge
        (a node down, a check failing) is refunded.
        """
        stamp = self.rate_limiter.charge(requester, limits)
        try:
            yield
        except BaseException:
            self.rate_limiter.refund(requester, limits, stamp)
            raise

    def audited(
        self,
        record: AuditedRequest,
        *,
        redact: Callable[[OsmanthusError], str] = redacted_reason,
    ) -> AbstractContextManager[AuditedRequest]:
        """The request's steps, with its one audit entry in the coordinator's log, counted by
        shape, purpose and decision (osmanthus.core.metrics)."""
        return _counted(audited(self.audit, record, clock=self.clock, redact=redact), record)


@contextmanager
def _counted(
    steps: AbstractContextManager[AuditedRequest], record: AuditedRequest
) -> Iterator[AuditedRequest]:
    """`steps` (audited), with its decision counted once it is recorded: an allow when the
    steps end, a deny when they raise (a refusal, a fault, or an entry that could not be
    written: nothing left without its entry)."""
    try:
        with steps as steps_record:
            yield steps_record
    except BaseException:
        metrics.query_decided(record.shape, record.purpose, "deny")
        raise
    metrics.query_decided(record.shape, record.purpose, "allow")

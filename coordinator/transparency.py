"""TransparencyService at the coordinator: who may read which log, and the relay to the nodes.

The coordinator serves its own audit log and, relayed by origin, each node's: a request naming
`<department>.node.osmanthus/audit` is forwarded to that department's node over the
coordinator's channel to it (the node serves the coordinator's certificate), and its answer
comes back as the node sent it (a relayed checkpoint is checked against the roster's key for
the origin by the servicer, osmanthus.core.logserver).

Who may call:

* an operator certificate, for the coordinator's own log, unless it is a department's officer
  (an operator certificate named after a department reads its own node's log at the node);
* a requester whose token the central policy grants `ReadAuditLog` on `AuditLog::"<origin>"`
  with `context.method` the TransparencyService method called, for any origin: the
  coordinator's own log or a node's, relayed. The default policy grants auditors the reads
  (GetCheckpoint, GetInclusionProof, GetConsistencyProof, GetEntries) and the sync job what
  carrying checkpoints to the province's witness takes (GetCheckpoint, GetConsistencyProof,
  AddCosignatures): not the entries, which tell who asked about whom across the city.

Every requester's call is one audited decision in the coordinator's log, like every other
decision of the central policy; a refusal of anyone else is audited too. An operator's reads
are not audited (hashes, signatures and entries of the log itself; the operator holds the log).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, Final

from coordinator.context import CoordinatorContext
from osmanthus.core.audited import AuditedRequest
from osmanthus.core.errors import NotFound, PermissionDenied
from osmanthus.core.logkeys import log_origin
from osmanthus.core.peers import PeerRole
from osmanthus.core.policy import AUDIT_LOG_METHODS
from osmanthus.core.server import Caller
from osmanthus.core.tls import PeerIdentity
from osmanthus.core.tokens import TokenClaims
from osmanthus.core.types import DepartmentId, QueryId

#: the central policy's action, on resource AuditLog::"<origin>"
ACTION: Final = "ReadAuditLog"
#: the audit entry's `purpose` for a transparency log call (the method is in `extra`)
AUDIT_PURPOSE: Final = "transparency_log"
#: an origin as the platform names logs; anything else a caller sent is not written to the log
_ORIGIN = re.compile(r"[a-z0-9][a-z0-9.-]{0,120}/audit")


class AuditLogReaders:
    """The coordinator's `authorize` and `relay` for TransparencyServicer."""

    def __init__(
        self,
        *,
        context: CoordinatorContext,
        authenticate: Callable[[PeerIdentity, str | None], TokenClaims],
        new_query_id: Callable[[], QueryId],
        departments: Iterable[DepartmentId],
        own_origin: str,
    ) -> None:
        self._ctx = context
        self._authenticate = authenticate
        self._new_query_id = new_query_id
        self._own_origin = own_origin
        self._departments = frozenset(departments)
        #: a node's origin -> its department, for the nodes this coordinator has a channel to
        self._by_origin = {log_origin(PeerRole.NODE, d): d for d in self._departments}

    def authorize(self, caller: Caller, method: str, origin: str) -> None:
        """Return if `caller` may call `method` on the log `origin`; refuse and audit if not."""
        peer = caller.peer
        if (
            peer.role is PeerRole.OPERATOR
            and origin == self._own_origin
            and peer.name not in {d.id for d in self._ctx.catalogue.departments}
        ):
            return
        engine = self._ctx.policy.current()
        record = AuditedRequest(
            query_id=self._new_query_id(),
            purpose=AUDIT_PURPOSE,
            policy_hash=engine.hash if peer.role is PeerRole.REQUESTER else "",
            extra={
                "method": method[:40],
                "origin": origin if _ORIGIN.fullmatch(origin) else "(not an origin)",
            },
        )
        with self._ctx.audited(record):
            if peer.role is not PeerRole.REQUESTER:
                record.requester = f"{peer.role.value}:{peer.name}"
                raise PermissionDenied(
                    "the coordinator serves transparency logs to requesters the central policy "
                    f"grants {ACTION}, and its own log to the platform's operator "
                    f"certificates; the caller's certificate names {peer.role.value} "
                    f"{peer.name!r}"
                )
            claims = record.identify(self._authenticate(peer, caller.token))
            if method not in AUDIT_LOG_METHODS:
                # the servicer names its own methods; anything else is a bug, and no permit
                # written for the known calls may cover it
                raise PermissionDenied(f"{method[:40]!r} is not a transparency log call")
            decision = self._ctx.require(
                engine, claims, ACTION, ("AuditLog", origin), {"method": method}
            )
            # charged once the call is allowed; a read that then fails is not refunded (it is
            # one call against a generous limit)
            self._ctx.rate_limiter.charge(claims.requester, engine.rate_limits(decision))
            record.allow(f"transparency log {method} allowed")

    def relay(self, origin: str, method: str, request: Any) -> Any:
        """The same call to the node whose log `origin` is; NotFound for any other origin."""
        department = self._by_origin.get(origin)
        if department is None:
            known = ", ".join(sorted([self._own_origin, *self._by_origin]))
            raise NotFound(
                f"no log {origin[:80]!r} is served through this coordinator; its logs: {known}",
                field="origin",
            )
        return self._ctx.nodes.transparency_call(
            department, method, request, deadline_s=self._ctx.deadline_s
        )

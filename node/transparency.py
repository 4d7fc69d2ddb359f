"""Who may read a department node's transparency log (TransparencyService at the node).

The coordinator's certificate (it witnesses the node's log and relays for the auditors the
central policy allows) and the department's own operator certificate (an operator certificate
named after the department, as for the list and case offices). Anyone else is refused, and the
refusal is one "deny" entry in the node's audit log like every other refusal. Reads that are
allowed are not audited: they are hashes and signatures, or entries already in the log, and the
coordinator polls for checkpoints; auditing them would grow the log with every poll.
"""

from __future__ import annotations

import re
import secrets

from osmanthus.core.audit import AuditLog
from osmanthus.core.audited import AuditedRequest, audited
from osmanthus.core.errors import PermissionDenied
from osmanthus.core.logserver import Authorize
from osmanthus.core.peers import PeerRole
from osmanthus.core.server import Caller
from osmanthus.core.types import DepartmentId

#: an origin as the platform names logs; anything else a caller sent is not written to the log
_ORIGIN = re.compile(r"[a-z0-9][a-z0-9.-]{0,120}/audit")

#: the audit entry's `purpose` for a refused transparency log call (the method is in `extra`)
AUDIT_PURPOSE = "transparency_log"


def node_log_readers(*, department: DepartmentId, audit: AuditLog) -> Authorize:
    """The node's `authorize` for TransparencyServicer (see the module docstring)."""

    def authorize(caller: Caller, method: str, origin: str) -> None:
        peer = caller.peer
        if peer.role is PeerRole.COORDINATOR:
            return
        if peer.role is PeerRole.OPERATOR and peer.name == department:
            return
        record = AuditedRequest(
            query_id=f"tlog_{secrets.token_hex(8)}",
            requester=f"{peer.role.value}:{peer.name}",
            purpose=AUDIT_PURPOSE,
            extra={
                "method": method[:40],
                "origin": origin if _ORIGIN.fullmatch(origin) else "(not an origin)",
            },
        )
        with audited(audit, record):
            raise PermissionDenied(
                f"the transparency log of {department} is served to the platform coordinator "
                f"and to the department's operator certificate ({department!r}) only; the "
                f"caller's certificate names {peer.role.value} {peer.name!r}"
            )

    return authorize

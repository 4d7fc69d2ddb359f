"""The portal's own audit log: sign-ins, sign-outs and refusals, subjects as salted hashes.

It is an `osmanthus.core.audit.AuditLog` in the portal's state directory (owner-only, salt
beside it), so the same tools read it. Entries never carry a raw identifier or a piece of one:
a refused card is recorded by the rule it failed, another subject asked about by its hash.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

from osmanthus.core.audit import AuditEntry, AuditLog, load_or_create_salt
from osmanthus.core.errors import InvalidArgument
from osmanthus.core.files import private_directory
from osmanthus.core.ids import validate_any_subject
from osmanthus.core.types import SELF_QUERY
from portal.session import Subject

AUDIT_FILE: Final = "portal-audit.jsonl"
SALT_FILE: Final = "portal-audit.salt"
#: what the portal does for a subject is always their own question
PURPOSE: Final = str(SELF_QUERY)


class PortalAudit:
    """Append the portal's decisions to its audit log."""

    def __init__(
        self,
        *,
        state_dir: Path,
        device_id: str,
        now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        private_directory(state_dir, what="the portal's audit log")
        salt = load_or_create_salt(state_dir / SALT_FILE)
        self.log = AuditLog(path=state_dir / AUDIT_FILE, salt=salt)
        self._device = device_id
        self._now = now

    def record(
        self,
        *,
        event: str,
        decision: str,
        reason: str,
        subject: Subject | None = None,
        extra: Mapping[str, int | str] | None = None,
    ) -> None:
        """One entry: `event` (sign_in, sign_out, expired, refused, revoke, ...) and why."""
        self.log.append(
            AuditEntry(
                time=self._now(),
                query_id="",
                requester=self._device,
                purpose=PURPOSE,
                consent_id="",
                policy_hash="",
                decision=decision,
                reason=reason,
                shape="",
                subject_hash=self.log.subject_hash(subject.id) if subject is not None else "",
                extra={"event": event, **(extra or {})},
            )
        )

    def other_subject(self, *, asked: str, session_subject: Subject, route: str) -> None:
        """A signed-in subject's browser asked about someone else: refused, both hashed."""
        self.record(
            event="other_subject",
            decision="deny",
            reason="a signed-in subject asked about another subject",
            subject=session_subject,
            extra={"asked_hash": self.log.subject_hash(_canonical(asked)), "route": route},
        )

    def close(self) -> None:
        self.log.close()


def _canonical(asked: str) -> str:
    """A valid resident id or credit code in its canonical form (a lower-case 'x' check
    character upper-cased), so the hash matches the one every other log keeps for that subject;
    anything else as it came."""
    try:
        return validate_any_subject(asked, field="subject")
    except InvalidArgument:
        return asked

"""The portal's check of "who asked about me": every part's audit lines against the pinned keys.

Each part of a subject's file carries its log's signed checkpoint and, per audit line, the line
as the log holds it and its inclusion proof (osmanthus.core.auditproofs). The portal checks them
with the roster of log and witness keys in its settings (`logs.toml`), never with a key a part
brings, before a line is shown as a fact: "verified" only when the checkpoint is cosigned by
enough witnesses (`min_witnesses`, at least one), "signed by the department only" when it is
not. A part whose checkpoint or proofs fail, or that shows a logged line about another subject
than the hash it states (or one leaf twice), is an alarm: whoever holds that log changed it
after signing, or the part was made up. It is logged at WARNING naming the log and what failed,
never the subject nor its hash.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from osmanthus.core.auditproofs import PartCheck, verify_part
from osmanthus.core.logkeys import LogRoster
from osmanthus.core.subjectfile import SubjectFile

_log = logging.getLogger(__name__)


def check_parts(
    parts: Sequence[SubjectFile], *, roster: LogRoster | None, min_witnesses: int
) -> tuple[PartCheck, ...]:
    """One check per part, in order; each part whose log could not be verified is logged."""
    checks = tuple(verify_part(p, roster=roster, min_witnesses=min_witnesses) for p in parts)
    for check in checks:
        if check.problem is not None:
            _log.warning(
                "who asked about me: the audit log %s (the part from %s) could not be "
                "verified; %d entries not shown: %s",
                check.origin, check.source, check.failed, check.problem,
            )  # fmt: skip
    return checks

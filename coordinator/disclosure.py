"""Pins the department set of every answer a requester gets about a subject, against subtraction.

Answers about one subject that cover different department sets disclose, by subtraction (of two
answers, or a combination of several, or of single slots of a BREAKDOWN), the contributions of
the departments where the sets differ, down to a single department. So the first answer released
to a requester about a subject fixes its department set, and every later answer to that requester
about that subject sums exactly that set: a department outside it is left out (and reported so),
a department of it that does not answer makes the answer refused. Every answer about the subject
is then the same sum over time; what changes is only what the departments' records say.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from coordinator.database import RegistryDatabase
from osmanthus.errors import FailedPrecondition
from osmanthus.types import RequesterId, SubjectKind

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pinned_sets (
    requester VARCHAR NOT NULL,
    subject_kind VARCHAR NOT NULL,
    subject_hash VARCHAR NOT NULL,   -- salted hash, as in the audit log: never the raw id
    departments VARCHAR NOT NULL,    -- sorted, comma-separated
    pinned_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (requester, subject_kind, subject_hash)
)
"""


class DisclosureLedger(RegistryDatabase):
    """The department set pinned for each (requester, subject), in a DuckDB file."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, schema=_SCHEMA, what="disclosure ledger")

    def settle(
        self,
        *,
        requester: RequesterId,
        subject_kind: SubjectKind,
        subject_hash: str,
        answered: frozenset[str],
        release: Callable[[frozenset[str]], None],
        now: datetime,
    ) -> frozenset[str]:
        """Decide which departments this answer sums, pinning the set if it is the first.

        With a pinned set, every pinned department must have answered (FailedPrecondition naming
        the others) and the answer sums exactly the pinned set. Without one, the answer sums
        `answered`, pinned once accepted. Either way `release(set)` runs first and raises to
        refuse (too few departments, partial coverage refused by policy). Check and pin happen
        under one lock, so two concurrent first answers cannot pin two different sets.
        """
        with self._lock:
            row = self._db.execute(
                "SELECT departments FROM pinned_sets "
                "WHERE requester = ? AND subject_kind = ? AND subject_hash = ?",
                [requester, subject_kind.value, subject_hash],
            ).fetchone()
            if row is not None:
                pinned = frozenset(row[0].split(","))
                lacking = pinned - answered
                if lacking:
                    raise FailedPrecondition(
                        f"{', '.join(sorted(lacking))} did not answer, but earlier answers to "
                        f"{requester} about this subject included them; an answer without them "
                        "would disclose their contribution by subtraction. Ask again when they "
                        "answer"
                    )
                release(pinned)
                return pinned
            release(answered)
            self._db.execute(
                "INSERT INTO pinned_sets VALUES (?, ?, ?, ?, ?)",
                [requester, subject_kind.value, subject_hash, ",".join(sorted(answered)), now],
            )
            return answered

    def settle_batch(
        self,
        *,
        requester: RequesterId,
        subject_kind: SubjectKind,
        subject_hashes: Sequence[str],
        departments: frozenset[str],
        now: datetime,
    ) -> list[bool]:
        """For a batch chunk summing `departments`: may each subject be answered with that set?

        A subject with no pinned set is pinned to `departments` now, before its answer exists,
        under the same lock as every single-query settle: a concurrent query cannot pin another
        set in between. A subject pinned to another set is refused (False); a batch sums one set
        for the whole chunk and cannot leave a department out for one subject.
        """
        wanted = ",".join(sorted(departments))
        unique = sorted(set(subject_hashes))
        with self._lock:
            rows = self._db.execute(
                "SELECT subject_hash, departments FROM pinned_sets "
                "WHERE requester = ? AND subject_kind = ? "
                "AND subject_hash IN (SELECT unnest(?::VARCHAR[]))",
                [requester, subject_kind.value, unique],
            ).fetchall()
            pinned = dict(rows)
            fresh = [h for h in unique if h not in pinned]
            if fresh:
                self._db.execute(
                    "INSERT INTO pinned_sets SELECT ?, ?, unnest(?::VARCHAR[]), ?, ?",
                    [requester, subject_kind.value, fresh, wanted, now],
                )
        return [pinned.get(h, wanted) == wanted for h in subject_hashes]

"""Refuses answers that a requester could subtract from an earlier one to isolate a department.

Two answers about the same subject whose department sets differ by k departments disclose, by
subtraction, the sum of those k departments' contributions. A partial answer after a full one
(a node was down, or a department's policy refused one purpose but not another) would disclose a
single department's part. So every released answer's department set is remembered per requester
and subject, and an answer whose set differs from an earlier one by fewer than the policy's
minimum number of departments is refused. Sets that are equal, or differ by at least the minimum,
are as safe as any answer: the difference is itself a sum of enough departments.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import duckdb

from osmanthus.errors import ConfigError, FailedPrecondition
from osmanthus.types import RequesterId, SubjectKind

_SCHEMA = """
CREATE TABLE IF NOT EXISTS released (
    requester VARCHAR NOT NULL,
    subject_kind VARCHAR NOT NULL,
    subject_hash VARCHAR NOT NULL,   -- salted hash, as in the audit log: never the raw id
    departments VARCHAR NOT NULL,    -- sorted, comma-separated
    first_released_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (requester, subject_kind, subject_hash, departments)
)
"""


class DisclosureLedger:
    """The department sets released to each requester about each subject, in a DuckDB file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._db = duckdb.connect(str(path))
            self._db.execute(_SCHEMA)
        except duckdb.Error as exc:
            raise ConfigError(f"{path}: cannot open the disclosure ledger: {exc}") from exc
        self._lock = threading.Lock()

    def admit(
        self,
        *,
        requester: RequesterId,
        subject_kind: SubjectKind,
        subject_hash: str,
        departments: Iterable[str],
        minimum: int,
        now: datetime,
    ) -> None:
        """Record that this set is released, or raise FailedPrecondition if that is unsafe."""
        answered = frozenset(departments)
        key = ",".join(sorted(answered))
        with self._lock:
            rows = self._db.execute(
                "SELECT departments FROM released "
                "WHERE requester = ? AND subject_kind = ? AND subject_hash = ?",
                [requester, subject_kind.value, subject_hash],
            ).fetchall()
            for (earlier,) in rows:
                difference = answered ^ frozenset(earlier.split(","))
                if 0 < len(difference) < minimum:
                    raise FailedPrecondition(
                        f"an earlier answer to {requester} about this subject covered other "
                        f"departments; the two differ only by {', '.join(sorted(difference))}, "
                        "so together they would disclose that part by subtraction. The policy "
                        f"requires such answers to differ by at least {minimum} departments: ask "
                        "again when the same departments answer as before"
                    )
            self._db.execute(
                "INSERT INTO released VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [requester, subject_kind.value, subject_hash, key, now],
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> DisclosureLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

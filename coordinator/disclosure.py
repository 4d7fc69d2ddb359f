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

from coordinator.database import LedgerDatabase
from osmanthus.core.errors import FailedPrecondition
from osmanthus.core.storefile import sqlite_transaction
from osmanthus.core.types import RequesterId, SubjectKind

# SQLite, not DuckDB: the ledger is a point-lookup table that grows by one row per subject a
# requester ever hears about (a city's millions after one batch), and SQLite keeps its B-tree
# on disk behind a bounded page cache where DuckDB holds its ART indexes in memory
_SCHEMA = """
CREATE TABLE IF NOT EXISTS department_sets (
    id INTEGER PRIMARY KEY,
    departments TEXT NOT NULL UNIQUE     -- sorted, comma-separated
);
CREATE TABLE IF NOT EXISTS pinned_sets (
    requester TEXT NOT NULL,
    subject_kind TEXT NOT NULL,
    subject_hash BLOB NOT NULL,          -- the salted audit hash's 32 bytes: never the raw id
    set_id INTEGER NOT NULL REFERENCES department_sets (id),
    pinned_at TEXT NOT NULL,
    PRIMARY KEY (requester, subject_kind, subject_hash)
) WITHOUT ROWID;
"""
#: SQLite's page cache for the ledger, in KiB: what bounds its memory whatever its size
_CACHE_KIB = 16 * 1024
#: hashes per lookup statement (SQLite's default limit on parameters is far above this)
_LOOKUP_BATCH = 500


class DisclosureLedger(LedgerDatabase):
    """The department set pinned for each (requester, subject), in a SQLite file.

    Each settle (a check and its pin) is atomic against concurrent RPCs under the connection's
    lock, and every pin is durable before an answer leaves.
    """

    def __init__(self, path: Path) -> None:
        super().__init__(path, schema=_SCHEMA, what="disclosure ledger", cache_kib=_CACHE_KIB)
        self._set_ids: dict[str, int] = {}
        self._sets: dict[int, frozenset[str]] = {}

    def _set(self, set_id: int) -> frozenset[str]:
        found = self._sets.get(set_id)
        if found is None:
            row = self._db.execute(
                "SELECT departments FROM department_sets WHERE id = ?", (set_id,)
            ).fetchone()
            found = frozenset(row[0].split(",")) if row and row[0] else frozenset()
            self._sets[set_id] = found
        return found

    def _set_id(self, departments: frozenset[str]) -> int:
        text = ",".join(sorted(departments))
        found = self._set_ids.get(text)
        if found is None:
            self._db.execute(
                "INSERT INTO department_sets (departments) VALUES (?) ON CONFLICT DO NOTHING",
                (text,),
            )
            row = self._db.execute(
                "SELECT id FROM department_sets WHERE departments = ?", (text,)
            ).fetchone()
            found = int(row[0])
            self._set_ids[text] = found
        return found

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
        key = bytes.fromhex(subject_hash)
        with self._lock:
            row = self._db.execute(
                "SELECT set_id FROM pinned_sets "
                "WHERE requester = ? AND subject_kind = ? AND subject_hash = ?",
                (requester, subject_kind.value, key),
            ).fetchone()
            if row is not None:
                pinned = self._set(int(row[0]))
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
            with sqlite_transaction(self._db):
                self._db.execute(
                    "INSERT INTO pinned_sets VALUES (?, ?, ?, ?, ?)",
                    (requester, subject_kind.value, key, self._set_id(answered), now.isoformat()),
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
        keys = [bytes.fromhex(h) for h in subject_hashes]
        unique = sorted(set(keys))
        with self._lock:
            wanted = self._set_id(departments)
            pinned: dict[bytes, int] = {}
            for i in range(0, len(unique), _LOOKUP_BATCH):
                part = unique[i : i + _LOOKUP_BATCH]
                marks = ",".join("?" * len(part))
                pinned.update(
                    self._db.execute(
                        "SELECT subject_hash, set_id FROM pinned_sets "
                        f"WHERE requester = ? AND subject_kind = ? AND subject_hash IN ({marks})",
                        (requester, subject_kind.value, *part),
                    ).fetchall()
                )
            fresh = [k for k in unique if k not in pinned]
            if fresh:
                stamp = now.isoformat()
                with sqlite_transaction(self._db):
                    self._db.executemany(
                        "INSERT INTO pinned_sets VALUES (?, ?, ?, ?, ?)",
                        ((requester, subject_kind.value, k, wanted, stamp) for k in fresh),
                    )
        return [pinned.get(k, wanted) == wanted for k in keys]

"""What the department's cases do to its records as the node reads them: the record overlay.

The record store is read-only while the node runs (node.store), so a case never changes a
stored row. Instead every read path (Contribute, ContributeChunk, ContributeStats, FLAGS, the
subject's file) passes the records it read through the overlay, which the case store builds
from its record history (node.cases):

- a record under an OPEN objection reads as `disputed` (ARCHITECTURE.md: a record under
  dispute contributes nothing until resolved), at once, from the moment the case is filed; a
  repair does not dispute its record (the penalty counts until the repair is approved), nor
  does an objection filed again after the department rejected one about the same record;
- a record an upheld case withdrew (an objection upheld with WITHDRAW, or an approved repair
  of a penalty record) is dropped: it no longer exists for any answer;
- a record an upheld case corrected reads with the corrected quantity and dates;
- a rejected case leaves nothing behind: the record reads as stored again.

With no amendment and no open case the overlay is empty and every read returns what the store
gave, untouched. Otherwise a batch costs one set lookup per subject, and a dict lookup per
record of the few subjects that have a case. A change applies to a record only if the record
is still about the subject (kind and id) the case was filed by: a record id the department
reused for another subject's record in a later import is read as stored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date

from osmanthus.core.rules import DISPUTED, Record
from osmanthus.core.types import SubjectId, SubjectKind


@dataclass(frozen=True, kw_only=True)
class RecordChange:
    """What the cases do to one record (fields None: as stored)."""

    subject_kind: SubjectKind
    subject_id: SubjectId
    dropped: bool = False
    disputed: bool = False
    quantity: int | None = None
    event_start: date | None = None
    event_end: date | None = None

    def applied(self, record: Record) -> Record | None:
        """`record` as the node reads it, or None when it is dropped."""
        if self.dropped:
            return None
        changes: dict[str, object] = {}
        if self.quantity is not None:
            changes["quantity"] = self.quantity
        if self.event_start is not None:
            changes["event_start"] = self.event_start
        if self.event_end is not None:
            changes["event_end"] = self.event_end
        if self.disputed:
            changes["status"] = DISPUTED
        return dataclasses.replace(record, **changes) if changes else record  # type: ignore[arg-type]


class RecordOverlay:
    """An immutable view of every record change the department's cases make.

    The case store builds a new one after each write and swaps it in whole, so a reader never
    sees half of a change and needs no lock."""

    def __init__(self, changes: Mapping[str, RecordChange] | None = None) -> None:
        self._changes: dict[str, RecordChange] = dict(changes or {})
        self._subjects = frozenset(c.subject_id for c in self._changes.values())

    def __bool__(self) -> bool:
        return bool(self._changes)

    def __len__(self) -> int:
        return len(self._changes)

    def change(self, record_id: str) -> RecordChange | None:
        return self._changes.get(record_id)

    def records(self, records: list[Record]) -> list[Record]:
        """One subject's records as the node reads them (the same list when nothing applies)."""
        if not self._changes:
            return records
        return self._apply(records)

    def records_many(self, found: dict[SubjectId, list[Record]]) -> dict[SubjectId, list[Record]]:
        """A chunk's records (subject → records, as RecordStore.records_for_many gives them)
        as the node reads them; the same dict when no subject of the chunk has a case."""
        if not self._changes:
            return found
        touched = self._subjects.intersection(found)
        if not touched:
            return found
        out = dict(found)
        for subject in touched:
            applied = self._apply(found[subject])
            if applied:
                out[subject] = applied
            else:
                # as the store gives it: a subject without records is absent
                del out[subject]
        return out

    def _apply(self, records: Iterable[Record]) -> list[Record]:
        out: list[Record] = []
        for record in records:
            change = self._changes.get(record.record_id)
            if (
                change is None
                or change.subject_id != record.subject_id
                or change.subject_kind is not record.subject_kind
            ):
                out.append(record)
                continue
            applied = change.applied(record)
            if applied is not None:
                out.append(applied)
        return out


EMPTY_OVERLAY = RecordOverlay()

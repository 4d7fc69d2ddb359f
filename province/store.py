"""The receiver's DuckDB store: batches and their records, stored once each, and every rejection.

A batch and its records are written in one transaction, after the duplicate and continuity
checks made in that same transaction: a batch is stored whole or not at all, and never twice.
Continuity is per sender and kind: the first batch is sequence 1, and each next batch is the
previous sequence + 1 and starts at the watermark where the previous one ended. Anything else
means a batch in between is missing (a gap) or a range is being reported twice (an overlap),
and is refused, so that the province never holds a stream with a hole in it.
"""

from __future__ import annotations

import base64
import binascii
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import duckdb

from osmanthus.core.errors import ConfigError, FailedPrecondition, InvalidArgument
from osmanthus.core.storefile import create_or_read_meta, transaction
from osmanthus.core.syncbatch import Batch, BatchKind, SignedBatch
from osmanthus.core.wire.province import (
    BatchPage,
    BatchQuery,
    BatchSummary,
    Delivery,
    Rejection,
    RejectionPage,
    RejectionQuery,
)

#: the store's file in the receiver's state directory
STORE_FILE: Final = "province.duckdb"
SCHEMA_VERSION: Final = 2
DEFAULT_PAGE_SIZE: Final = 20
MAX_PAGE_SIZE: Final = 100
#: a rejection's reason is kept to this many characters (the reasons name fields, not data)
MAX_REASON_CHARS: Final = 1_000
_FILE_MODE: Final = 0o600
_PAGE_TOKEN_PREFIX: Final = "1:"
_MAX_PAGE_TOKEN_CHARS: Final = 64

_SCHEMA = """
CREATE TABLE meta (schema_version INTEGER NOT NULL);
CREATE TABLE batches (
    receipt_no BIGINT PRIMARY KEY,
    batch_id VARCHAR NOT NULL UNIQUE,
    sender VARCHAR NOT NULL,
    kind VARCHAR NOT NULL CHECK (kind IN ('list_changes', 'grades', 'statistics')),
    sequence BIGINT NOT NULL CHECK (sequence >= 1),
    watermark_from VARCHAR NOT NULL,
    watermark_to VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    records INTEGER NOT NULL,
    partial BOOLEAN NOT NULL,
    missing_departments VARCHAR[] NOT NULL,
    content_sha256 VARCHAR NOT NULL,
    payload_sha256 VARCHAR NOT NULL,
    payload BLOB NOT NULL,
    signature BLOB NOT NULL,
    key_id VARCHAR NOT NULL,
    peer VARCHAR NOT NULL,
    received_at TIMESTAMP NOT NULL,
    UNIQUE (sender, kind, sequence)
);
CREATE TABLE records (
    batch_id VARCHAR NOT NULL,
    record_no INTEGER NOT NULL,
    record VARCHAR NOT NULL,
    PRIMARY KEY (batch_id, record_no)
);
CREATE TABLE rejections (
    rejection_no BIGINT PRIMARY KEY,
    "at" TIMESTAMP NOT NULL,
    peer VARCHAR NOT NULL,
    sender VARCHAR NOT NULL,
    batch_id VARCHAR NOT NULL,
    code VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    -- a tally counts the refusals of one unregistered certificate in one row (count_rejection)
    tally BOOLEAN NOT NULL,
    first_at TIMESTAMP NOT NULL,
    "count" BIGINT NOT NULL CHECK ("count" >= 1)
);
"""
_SUMMARY_COLUMNS = (
    "receipt_no, batch_id, sender, kind, sequence, watermark_from, watermark_to, created_at, "
    "records, partial, missing_departments, key_id, peer, payload_sha256, received_at"
)
# timestamps are stored as UTC without a zone: DuckDB's TIMESTAMPTZ reads back in local time
_INSERT_RECORDS = (
    "INSERT INTO records SELECT * FROM (SELECT unnest(?::VARCHAR[]), unnest(?::INTEGER[]), "
    "unnest(?::VARCHAR[]))"
)


class BatchStore:
    """Received batches and rejections in one DuckDB file, written by one receiver process.

    Every call holds one lock: the receiver's traffic is a few batches per run of each city's
    job, and one writer keeps the duplicate and continuity checks and the insert atomic. Being
    the only writer, it numbers receipts and rejections from counters it keeps (read once on
    opening), so that an insert never scans a table.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        created = not self.path.exists()
        try:
            self._conn = duckdb.connect(str(self.path))
        except duckdb.Error as exc:
            raise ConfigError(
                f"{self.path}: cannot open the batch store ({exc}); is another receiver using "
                "this state directory?",
                field="state_dir",
            ) from None
        try:
            if created:
                os.chmod(self.path, _FILE_MODE)
            self._check_or_create_schema()
            self._next_receipt = self._after_last("receipt_no", "batches")
            self._next_rejection = self._after_last("rejection_no", "rejections")
            # (peer, code) → (rejection_no, first_at, count) of each tally row
            self._tallies: dict[tuple[str, str], tuple[int, datetime, int]] = {
                (r[0], r[1]): (int(r[2]), r[3], int(r[4]))
                for r in self._conn.execute(
                    'SELECT peer, code, rejection_no, first_at, "count" FROM rejections WHERE tally'
                ).fetchall()
            }
        except BaseException:
            self._conn.close()
            raise

    def _check_or_create_schema(self) -> None:
        row = create_or_read_meta(
            self._conn,
            path=self.path,
            schema=_SCHEMA,
            meta=(SCHEMA_VERSION,),
            what="batch store",
            field="state_dir",
        )
        if row is not None and row != (SCHEMA_VERSION,):
            raise ConfigError(
                f"{self.path}: batch store schema {list(row)}, this Osmanthus reads version "
                f"{SCHEMA_VERSION}",
                field="state_dir",
            )

    # -- delivery ---------------------------------------------------------------------------------

    def accept(self, batch: Batch, signed: SignedBatch, *, peer: str, now: datetime) -> Delivery:
        """Store `batch` with its records, or acknowledge it as already stored.

        The same batch id with the same content (Batch.content_sha256) is a duplicate: nothing
        is written. FailedPrecondition if the id was stored with other content (a conflict) or
        the batch does not continue its sender's stream of its kind (a gap or an overlap).
        """
        content = batch.content_sha256
        with self._lock:
            with transaction(self._conn):
                row = self._conn.execute(
                    "SELECT content_sha256, records, received_at, sequence, watermark_to "
                    "FROM batches WHERE batch_id = ?",
                    [batch.batch_id],
                ).fetchone()
                if row is not None:
                    # nothing written: the read-only transaction ends with the block
                    return self._duplicate(batch, content, row)
                self._check_continuity(batch)
                receipt_no = self._next_receipt
                self._conn.execute(
                    "INSERT INTO batches VALUES "
                    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        receipt_no,
                        batch.batch_id,
                        batch.sender,
                        batch.kind.value,
                        batch.sequence,
                        batch.watermark_from,
                        batch.watermark_to,
                        _naive_utc(batch.created_at),
                        len(batch.records),
                        batch.partial,
                        list(batch.missing_departments),
                        content,
                        batch.payload_sha256,
                        signed.payload,
                        signed.signature,
                        signed.key_id,
                        peer,
                        _naive_utc(now),
                    ],
                )
                if batch.records:
                    texts = batch.record_json()
                    self._conn.execute(
                        _INSERT_RECORDS,
                        [[batch.batch_id] * len(texts), list(range(len(texts))), list(texts)],
                    )
            self._next_receipt += 1
        return Delivery(
            batch_id=batch.batch_id,
            duplicate=False,
            records=len(batch.records),
            received_at=_aware(_naive_utc(now)),
            sequence=batch.sequence,
            watermark_to=batch.watermark_to,
        )

    @staticmethod
    def _duplicate(batch: Batch, content: str, row: tuple[Any, ...]) -> Delivery:
        stored_content, records, received_at, sequence, watermark_to = row
        if stored_content != content:
            raise FailedPrecondition(
                f"conflict: batch {batch.batch_id} ({batch.sender}'s {batch.kind.value}, "
                f"watermarks {batch.watermark_from} to {batch.watermark_to}) was received on "
                f"{_iso(_aware(received_at))} with other content; the receiver keeps the first. "
                "A range is reported once: send that batch again as it was first sent, or "
                "report a correction in a later range",
                field="batch_id",
            )
        return Delivery(
            batch_id=batch.batch_id,
            duplicate=True,
            records=int(records),
            received_at=_aware(received_at),
            sequence=int(sequence),
            watermark_to=str(watermark_to),
        )

    def _check_continuity(self, batch: Batch) -> None:
        last = self._conn.execute(
            "SELECT sequence, watermark_from, watermark_to, batch_id FROM batches "
            "WHERE sender = ? AND kind = ? ORDER BY sequence DESC LIMIT 1",
            [batch.sender, batch.kind.value],
        ).fetchone()
        stream = f"{batch.sender}'s {batch.kind.value}"
        if last is None:
            if batch.sequence != 1:
                raise FailedPrecondition(
                    f"gap: no batch of {stream} was received yet, so the first is sequence 1, "
                    f"not {batch.sequence}: the batches before it are missing",
                    field="sequence",
                )
            return
        sequence, _, watermark_to, last_id = last
        if batch.sequence <= sequence:
            taken = self._conn.execute(
                "SELECT batch_id, watermark_from, watermark_to FROM batches "
                "WHERE sender = ? AND kind = ? AND sequence = ?",
                [batch.sender, batch.kind.value, batch.sequence],
            ).fetchone()
            held = f" as batch {taken[0]} (watermarks {taken[1]} to {taken[2]})" if taken else ""
            raise FailedPrecondition(
                f"overlap: sequence {batch.sequence} of {stream} was already received{held}; "
                f"this batch covers {batch.watermark_from} to {batch.watermark_to}. The stream "
                f"continues with sequence {sequence + 1} from watermark {watermark_to}",
                field="sequence",
            )
        if batch.sequence != sequence + 1:
            raise FailedPrecondition(
                f"gap: the last batch of {stream} is sequence {sequence} ({last_id}); the next "
                f"is sequence {sequence + 1}, not {batch.sequence}: the batches between are "
                "missing",
                field="sequence",
            )
        if batch.watermark_from != watermark_to:
            raise FailedPrecondition(
                f"gap: the last batch of {stream} (sequence {sequence}, {last_id}) ends at "
                f"watermark {watermark_to}; the next must start there, not at "
                f"{batch.watermark_from}: the changes between would be lost",
                field="watermark_from",
            )

    def _after_last(self, column: str, table: str) -> int:
        row = self._conn.execute(f"SELECT coalesce(max({column}), 0) + 1 FROM {table}").fetchone()
        return int(row[0]) if row else 1

    # -- rejections -------------------------------------------------------------------------------

    def reject(
        self, *, at: datetime, peer: str, sender: str, batch_id: str, code: str, reason: str
    ) -> None:
        """Record one refused delivery, in a row of its own."""
        with self._lock:
            self._insert_rejection(
                at=at, peer=peer, sender=sender, batch_id=batch_id, code=code, reason=reason
            )

    def count_rejection(self, *, at: datetime, peer: str, code: str, reason: str) -> int:
        """Count one refused delivery in the one row kept per (certificate, code): for
        certificates no sender registered, whose deliveries are never read, so that any number
        of them takes one row. The row moves to the top of the listing; returns its count."""
        with self._lock:
            row = self._tallies.get((peer, code))
            if row is None:
                number = self._next_rejection
                self._insert_rejection(
                    at=at, peer=peer, sender="", batch_id="", code=code, reason=reason, tally=True
                )
                self._tallies[peer, code] = (number, _naive_utc(at), 1)
                return 1
            number, first_at, count = row
            with transaction(self._conn):
                # deleted and written anew under the next number: the listing is newest first
                self._conn.execute("DELETE FROM rejections WHERE rejection_no = ?", [number])
                self._conn.execute(
                    "INSERT INTO rejections VALUES (?, ?, ?, '', '', ?, ?, true, ?, ?)",
                    [
                        self._next_rejection,
                        _naive_utc(at),
                        peer,
                        code,
                        reason[:MAX_REASON_CHARS],
                        first_at,
                        count + 1,
                    ],
                )
            self._tallies[peer, code] = (self._next_rejection, first_at, count + 1)
            self._next_rejection += 1
            return count + 1

    def _insert_rejection(
        self,
        *,
        at: datetime,
        peer: str,
        sender: str,
        batch_id: str,
        code: str,
        reason: str,
        tally: bool = False,
    ) -> None:
        with transaction(self._conn):
            self._conn.execute(
                "INSERT INTO rejections VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1)",
                [
                    self._next_rejection,
                    _naive_utc(at),
                    peer,
                    sender,
                    batch_id,
                    code,
                    reason[:MAX_REASON_CHARS],
                    tally,
                    _naive_utc(at),
                ],
            )
        self._next_rejection += 1

    # -- reading ----------------------------------------------------------------------------------

    def batches(self, query: BatchQuery, *, senders: frozenset[str] | None = None) -> BatchPage:
        """Stored batches newest first, filtered by `query`; `senders` (when given) limits the
        answer to those senders' batches."""
        size = page_size(query.page_size)
        after = decode_page_token(query.page_token)
        clauses: list[str] = ["receipt_no < ?"]
        params: list[object] = [after]
        if query.sender is not None:
            clauses.append("sender = ?")
            params.append(query.sender)
        if query.kind is not None:
            clauses.append("kind = ?")
            params.append(query.kind.value)
        if senders is not None:
            clauses.append("sender IN (SELECT unnest(?::VARCHAR[]))")
            params.append(sorted(senders))
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_SUMMARY_COLUMNS} FROM batches WHERE {' AND '.join(clauses)} "
                "ORDER BY receipt_no DESC LIMIT ?",
                [*params, size + 1],
            ).fetchall()
        token = encode_page_token(rows[size - 1][0]) if len(rows) > size else ""
        return BatchPage(tuple(_summary(r) for r in rows[:size]), token)

    def rejections(self, query: RejectionQuery, *, peer: str | None = None) -> RejectionPage:
        """Rejections newest first; `peer` (when given) limits them to that certificate's."""
        size = page_size(query.page_size)
        after = decode_page_token(query.page_token)
        clauses: list[str] = ["rejection_no < ?"]
        params: list[object] = [after]
        if peer is not None:
            clauses.append("peer = ?")
            params.append(peer)
        with self._lock:
            rows = self._conn.execute(
                'SELECT rejection_no, "at", peer, sender, batch_id, code, reason, first_at, '
                '"count" '
                f"FROM rejections WHERE {' AND '.join(clauses)} "
                "ORDER BY rejection_no DESC LIMIT ?",
                [*params, size + 1],
            ).fetchall()
        token = encode_page_token(rows[size - 1][0]) if len(rows) > size else ""
        found = tuple(
            Rejection(
                at=_aware(r[1]),
                peer=r[2],
                sender=r[3],
                batch_id=r[4],
                code=r[5],
                reason=_counted(r[6], count=int(r[8]), first_at=_aware(r[7])),
            )
            for r in rows[:size]
        )
        return RejectionPage(found, token)

    def records(self, batch_id: str) -> tuple[str, ...]:
        """The canonical JSON of each stored record of `batch_id`, in the batch's order."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT record FROM records WHERE batch_id = ? ORDER BY record_no", [batch_id]
            ).fetchall()
        return tuple(r[0] for r in rows)

    def signed_batch(self, batch_id: str) -> SignedBatch | None:
        """The batch as it was delivered, signature included, so it can be verified again."""
        with self._lock:
            row = self._conn.execute(
                "SELECT payload, signature, key_id FROM batches WHERE batch_id = ?", [batch_id]
            ).fetchone()
        if row is None:
            return None
        return SignedBatch(payload=bytes(row[0]), signature=bytes(row[1]), key_id=row[2])

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def page_size(value: int, *, field: str = "page_size") -> int:
    """The page size asked, 0 meaning the default; InvalidArgument past the maximum."""
    if value == 0:
        return DEFAULT_PAGE_SIZE
    if not 0 < value <= MAX_PAGE_SIZE:
        raise InvalidArgument(f"{value} is out of range; use 1 to {MAX_PAGE_SIZE}", field=field)
    return value


def encode_page_token(last: int) -> str:
    """The token for the page after the row numbered `last`: base64url("1:" + number)."""
    raw = f"{_PAGE_TOKEN_PREFIX}{last}".encode("ascii")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_page_token(token: str) -> int:
    """The row number a page continues below; for "" (the first page) one past any row."""
    if not token:
        return 2**63 - 1
    problem = InvalidArgument(
        "is not a page token this receiver gave; start again with an empty page_token",
        field="page_token",
    )
    if len(token) > _MAX_PAGE_TOKEN_CHARS:
        raise problem
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        raise problem from None
    number = text.removeprefix(_PAGE_TOKEN_PREFIX)
    if number == text or not number.isdigit() or not 0 < int(number) < 2**63:
        raise problem
    return int(number)


def _summary(row: tuple[Any, ...]) -> BatchSummary:
    return BatchSummary(
        batch_id=row[1],
        sender=row[2],
        kind=BatchKind(row[3]),
        sequence=int(row[4]),
        watermark_from=row[5],
        watermark_to=row[6],
        created_at=_aware(row[7]),
        records=int(row[8]),
        partial=bool(row[9]),
        missing_departments=tuple(row[10]),
        key_id=row[11],
        peer=row[12],
        payload_sha256=row[13],
        received_at=_aware(row[14]),
    )


def _counted(reason: str, *, count: int, first_at: datetime) -> str:
    # the count travels in the reason, which every listing already shows
    if count == 1:
        return reason
    return f"{reason} [refused {count} times since {_iso(first_at)}; the time is the latest]"


def _naive_utc(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None, microsecond=0)


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC)


def _iso(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")

"""The wire contract of IngestService: an import file's header, its chunks, and the outcome."""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import PurePath
from typing import Final

from osmanthus.core.errors import InvalidArgument
from osmanthus.core.wire import MAX_RECEIVE_BYTES
from osmanthus.core.wire.common import timestamp_from_proto, timestamp_to_proto
from osmanthus.v1 import ingest_pb2

#: the data each upload message carries: well under the server's message limit
CHUNK_BYTES: Final = 256 * 1024
assert CHUNK_BYTES < MAX_RECEIVE_BYTES
#: the largest import file a node accepts over the wire (a million rows is ~70 MB of CSV)
MAX_IMPORT_BYTES: Final = 2 * 1024**3
#: the formats an import file may have, by extension
IMPORT_SUFFIXES: Final = (".csv", ".parquet")
MAX_FILE_NAME_LENGTH: Final = 200
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, kw_only=True)
class UploadHeader:
    """What an uploaded import file is: its name (for the format and the audit), digest, size."""

    file_name: str
    sha256: str
    size: int

    @property
    def suffix(self) -> str:
        return PurePath(self.file_name).suffix.lower()


@dataclass(frozen=True, kw_only=True)
class ImportOutcome:
    """What an import did (`duplicate`: the file was applied before; the counts are then the
    first application's, and nothing was done now)."""

    sha256: str
    duplicate: bool
    added: int
    corrected: int
    withdrawn: int
    applied_at: datetime.datetime
    applied_by: str


def validate_header(header: UploadHeader) -> UploadHeader:
    """The header, or InvalidArgument naming the field that is wrong."""
    name = header.file_name
    if not name or len(name) > MAX_FILE_NAME_LENGTH or PurePath(name).name != name:
        raise InvalidArgument(
            f"file_name must be a bare file name of 1-{MAX_FILE_NAME_LENGTH} characters",
            field="header.file_name",
        )
    if any(ord(c) < 0x20 or c == "\x7f" for c in name):
        raise InvalidArgument("file_name holds control characters", field="header.file_name")
    if header.suffix not in IMPORT_SUFFIXES:
        raise InvalidArgument(
            f"file_name must end in {' or '.join(IMPORT_SUFFIXES)} (the format)",
            field="header.file_name",
        )
    if not _SHA256.fullmatch(header.sha256):
        raise InvalidArgument(
            "sha256 must be the file's SHA-256 in 64 lower-case hex digits", field="header.sha256"
        )
    if not 0 < header.size <= MAX_IMPORT_BYTES:
        raise InvalidArgument(
            f"size must be from 1 to {MAX_IMPORT_BYTES} bytes", field="header.size"
        )
    return header


def upload_from_proto(
    chunks: Iterable[ingest_pb2.ImportChunk],
) -> tuple[UploadHeader, Iterator[bytes]]:
    """The header of an upload (from its first message) and an iterator of its data."""
    stream = iter(chunks)
    first = next(stream, None)
    if first is None or not first.HasField("header"):
        raise InvalidArgument("an upload starts with a message carrying the header", field="header")
    h = first.header
    header = validate_header(UploadHeader(file_name=h.file_name, sha256=h.sha256, size=h.size))

    def data() -> Iterator[bytes]:
        if first.data:
            yield first.data
        for position, chunk in enumerate(stream, start=1):
            if chunk.HasField("header"):
                raise InvalidArgument(
                    f"message {position} carries a header; only the first may", field="header"
                )
            yield chunk.data

    return header, data()


def upload_to_proto(
    header: UploadHeader, data: Iterable[bytes]
) -> Iterator[ingest_pb2.ImportChunk]:
    """The messages of an upload: the header, then the data in chunks of at most CHUNK_BYTES."""
    yield ingest_pb2.ImportChunk(
        header=ingest_pb2.ImportHeader(
            file_name=header.file_name, sha256=header.sha256, size=header.size
        )
    )
    for block in data:
        for start in range(0, len(block), CHUNK_BYTES):
            yield ingest_pb2.ImportChunk(data=block[start : start + CHUNK_BYTES])


def outcome_to_proto(outcome: ImportOutcome) -> ingest_pb2.ImportRecordsResponse:
    return ingest_pb2.ImportRecordsResponse(
        sha256=outcome.sha256,
        duplicate=outcome.duplicate,
        added=outcome.added,
        corrected=outcome.corrected,
        withdrawn=outcome.withdrawn,
        applied_at=timestamp_to_proto(outcome.applied_at),
        applied_by=outcome.applied_by,
    )


def outcome_from_proto(message: ingest_pb2.ImportRecordsResponse) -> ImportOutcome:
    return ImportOutcome(
        sha256=message.sha256,
        duplicate=message.duplicate,
        added=message.added,
        corrected=message.corrected,
        withdrawn=message.withdrawn,
        applied_at=timestamp_from_proto(message.applied_at, field="applied_at"),
        applied_by=message.applied_by,
    )

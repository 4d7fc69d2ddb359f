"""The department operator's side of a live import: upload a file to the running node."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

import grpc

from osmanthus.core.errors import InvalidArgument
from osmanthus.core.grpc_errors import error_from_rpc
from osmanthus.core.tls import TlsFiles, node_server_name, secure_channel
from osmanthus.core.wire import ingest as ingest_wire
from osmanthus.core.wire.ingest import CHUNK_BYTES, ImportOutcome, UploadHeader, validate_header
from osmanthus.v1 import ingest_pb2_grpc

#: how long an upload and its import may take before the client gives up (the node finishes or
#: rolls back the import whatever the client does; a retry is recognised by the file's digest)
DEFAULT_IMPORT_TIMEOUT_S: Final = 3600.0


def upload_header(path: Path) -> UploadHeader:
    """The header of `path`'s upload: its name, SHA-256 and size (InvalidArgument if unreadable)."""
    digest, size = hashlib.sha256(), 0
    try:
        with path.open("rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
                size += len(block)
    except FileNotFoundError:
        raise InvalidArgument(f"{path}: file does not exist", field="path") from None
    except IsADirectoryError:
        raise InvalidArgument(f"{path}: is a directory", field="path") from None
    if size == 0:
        raise InvalidArgument(f"{path}: the file is empty", field="path")
    return validate_header(UploadHeader(file_name=path.name, sha256=digest.hexdigest(), size=size))


class RecordImporter:
    """A department operator at its node: uploads import files (IngestService).

    Connects over mutual TLS with the operator certificate named after the department to the
    node, whose certificate must name `department`.
    """

    def __init__(
        self,
        target: str,
        *,
        department: str,
        tls: TlsFiles,
        timeout_s: float = DEFAULT_IMPORT_TIMEOUT_S,
    ) -> None:
        self.department = department
        self._timeout_s = timeout_s
        self._channel = secure_channel(target, tls, server_name=node_server_name(department))
        self._stub = ingest_pb2_grpc.IngestServiceStub(self._channel)

    def upload(self, path: Path, *, progress: Callable[[int], None] | None = None) -> ImportOutcome:
        """Upload `path` and have the node apply it, every row or none.

        `progress(n)` hears of each `n` bytes sent. Sending the same file again (after a lost
        answer, say) is safe: the node answers `duplicate` and applies nothing.
        """
        header = upload_header(path)

        def data() -> Iterator[bytes]:
            with path.open("rb") as f:
                while block := f.read(CHUNK_BYTES):
                    yield block
                    if progress is not None:
                        progress(len(block))

        try:
            response = self._stub.ImportRecords(
                ingest_wire.upload_to_proto(header, data()), timeout=self._timeout_s
            )
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
        return ingest_wire.outcome_from_proto(response)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> RecordImporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""The list officer's side: publication files and a client of the node's list office."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Final, TypeVar

import grpc

from node.store import read_table, rows_rejected
from osmanthus.core.catalogue import Catalogue
from osmanthus.core.clock import china_today
from osmanthus.core.errors import InvalidArgument, OsmanthusError
from osmanthus.core.grpc_errors import error_from_rpc
from osmanthus.core.lists import (
    MAX_ENTRIES_PER_PUBLISH,
    ListEntry,
    NewEntry,
    WithdrawReason,
    validate_new_entry,
)
from osmanthus.core.tls import TlsFiles, node_server_name, secure_channel
from osmanthus.core.types import SubjectKind
from osmanthus.core.wire import MAX_RECEIVE_BYTES
from osmanthus.core.wire import lists as lists_wire
from osmanthus.core.wire.lists import PublishResult
from osmanthus.v1 import lists_pb2, lists_pb2_grpc

#: the columns of a publication file, in the order the template shows them
PUBLICATION_COLUMNS: Final = (
    "entry_id",
    "list",
    "subject_kind",
    "subject_id",
    "subject_name",
    "legal_basis",
    "reason",
    "window_start",
    "window_end",
)
#: legal_basis may be left out (or empty): the list's own legal basis from the catalogue applies
REQUIRED_PUBLICATION_COLUMNS: Final = frozenset(PUBLICATION_COLUMNS) - {"legal_basis"}
DEFAULT_TIMEOUT_S: Final = 30.0
#: a publication request stays this far under the node's receive limit (envelope, metadata)
_REQUEST_HEADROOM: Final = 64 * 1024
_ENTRY_INDEX = re.compile(r"entries\[(\d+)\]")
T = TypeVar("T")


@dataclass(frozen=True)
class Publication:
    """A checked publication file: its entries, and the line (or row) each came from."""

    path: Path
    entries: tuple[NewEntry, ...]
    lines: tuple[int, ...]
    #: "line" for CSV, "row" for Parquet
    unit: str

    def locate(self, error: OsmanthusError) -> OsmanthusError:
        """`error` with `entries[i]` in its field turned into the file's line and column."""
        match = _ENTRY_INDEX.match(error.field or "")
        if match is None or int(match.group(1)) >= len(self.lines):
            return error
        column = (error.field or "")[match.end() :].lstrip(".") or "row"
        line = self.lines[int(match.group(1))]
        return type(error)(f"{self.path}, {self.unit} {line}: {error.message}", field=column)


def read_publication(
    path: Path,
    *,
    catalogue: Catalogue,
    department: str,
    today: date | None = None,
) -> Publication:
    """Check every row of a CSV or Parquet publication file, as the node will.

    Raises ImportRejected listing (line, column, problem) for every bad row, so nothing is
    sent while any row is bad. `today` (default: today in China) bounds how far ahead a window
    may start.
    """
    path = Path(path)
    dept = catalogue.department(department).id
    when = today if today is not None else china_today()
    rows, unit = read_table(
        path,
        columns=PUBLICATION_COLUMNS,
        required=REQUIRED_PUBLICATION_COLUMNS,
        outcome="published",
    )
    problems: list[tuple[int, str, str]] = []
    entries: list[NewEntry] = []
    lines: list[int] = []
    first_line: dict[str, int] = {}
    for line, values in rows:
        if isinstance(values, str):
            problems.append((line, "row", values))
            continue
        kind_text = values.get("subject_kind", "")
        try:
            kind = SubjectKind(kind_text)
        except ValueError:
            problems.append(
                (line, "subject_kind", f"{kind_text[:20]!r} is not 'person' or 'enterprise'")
            )
            continue
        try:
            entry = validate_new_entry(
                entry_id=values.get("entry_id", ""),
                list_id=values.get("list", ""),
                subject_kind=kind,
                subject_id=values.get("subject_id", ""),
                subject_name=values.get("subject_name", ""),
                legal_basis=values.get("legal_basis", ""),
                reason=values.get("reason", ""),
                window_start=values.get("window_start", ""),
                window_end=values.get("window_end", ""),
                catalogue=catalogue,
                department=dept,
                today=when,
            )
        except InvalidArgument as exc:
            problems.append((line, exc.field or "row", exc.message))
            continue
        earlier = first_line.setdefault(entry.entry_id, line)
        if earlier != line:
            problems.append(
                (
                    line,
                    "entry_id",
                    f"repeats the entry id of {unit} {earlier}; each entry has its own",
                )
            )
            continue
        entries.append(entry)
        lines.append(line)
    if problems:
        raise rows_rejected(path, unit, problems, outcome="published")
    if not entries:
        raise InvalidArgument(f"{path}: the file holds no entries", field="path")
    return Publication(path=path, entries=tuple(entries), lines=tuple(lines), unit=unit)


class ListOfficer:
    """A department's list officer at its node: publish, withdraw, read a subject's history.

    Connects over mutual TLS with the officer's operator certificate (named after the
    department) to the node, whose certificate must name `department`.
    """

    def __init__(
        self,
        target: str,
        *,
        department: str,
        tls: TlsFiles,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.department = department
        self._timeout_s = timeout_s
        self._channel = secure_channel(target, tls, server_name=node_server_name(department))
        self._stub = lists_pb2_grpc.ListOfficeServiceStub(self._channel)

    def _call(self, method: Callable[..., T], request: object) -> T:
        try:
            return method(request, timeout=self._timeout_s)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None

    def publish(self, entries: Sequence[NewEntry]) -> PublishResult:
        """Publish `entries`, in as many publications as the node's limits need.

        Each publication is all or none. A publication refused after earlier ones were stored
        leaves those published; the error says how many, and sending the same entries again
        counts them as unchanged. Errors name the entry by its index in `entries`.
        """
        if not entries:
            raise InvalidArgument("there are no entries to publish", field="entries")
        published = unchanged = 0
        for start, batch in self._batches(entries):
            try:
                result = lists_wire.publish_result_from_proto(
                    self._call(
                        self._stub.PublishEntries, lists_wire.publish_request_to_proto(batch)
                    )
                )
            except OsmanthusError as exc:
                raise _shifted(exc, start, published + unchanged) from None
            published += result.published
            unchanged += result.unchanged
        return PublishResult(published=published, unchanged=unchanged)

    @staticmethod
    def _batches(
        entries: Sequence[NewEntry],
    ) -> list[tuple[int, list[lists_pb2.NewEntry]]]:
        limit = MAX_RECEIVE_BYTES - _REQUEST_HEADROOM
        batches: list[tuple[int, list[lists_pb2.NewEntry]]] = []
        current: list[lists_pb2.NewEntry] = []
        start = size = 0
        for index, entry in enumerate(entries):
            message = lists_wire.new_entry_to_proto(entry)
            # a repeated field costs its tag and a length prefix besides the message
            cost = message.ByteSize() + 6
            if current and (len(current) == MAX_ENTRIES_PER_PUBLISH or size + cost > limit):
                batches.append((start, current))
                current, start, size = [], index, 0
            current.append(message)
            size += cost
        batches.append((start, current))
        return batches

    def withdraw(self, entry_id: str, *, reason: WithdrawReason, reference: str) -> ListEntry:
        """Take an entry out of public view (credit repair, a revoked honour, an error)."""
        message = self._call(
            self._stub.WithdrawEntry,
            lists_wire.withdraw_request_to_proto(entry_id, reason=reason, reference=reference),
        )
        return lists_wire.list_entry_from_proto(message)

    def history(self, kind: SubjectKind, subject_id: str) -> tuple[ListEntry, ...]:
        """Every entry of the department about one subject, in view or not, with its events."""
        message = self._call(
            self._stub.History, lists_wire.history_request_to_proto(kind, subject_id)
        )
        return lists_wire.history_from_proto(message)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> ListOfficer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _shifted(error: OsmanthusError, offset: int, stored: int) -> OsmanthusError:
    """A batch's error with entry indexes counted from the start of the whole publication."""

    def shift(text: str) -> str:
        return _ENTRY_INDEX.sub(lambda m: f"entries[{int(m.group(1)) + offset}]", text)

    message = shift(error.message)
    if stored:
        message += (
            f" ({stored} entries before it went in earlier publications and stay published; "
            "once this is fixed, publishing the same entries again counts them as unchanged)"
        )
    return type(error)(message, field=shift(error.field) if error.field else None)

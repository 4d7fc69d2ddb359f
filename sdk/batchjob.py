"""A resumable batch-scoring job: subject ids from a CSV in, one Parquet file of scores out.

Work is saved as a Parquet part plus a checkpoint, each written to a temporary name and renamed
into place, every `rows_per_part` rows or every `checkpoint_s` seconds, whichever comes first (at
the end of a chunk), so an interrupted job (a crash, Ctrl-C, `kill -9`, a department down)
resumes from its last checkpoint with no duplicate and no missing row, and loses at most about
`checkpoint_s` seconds of work. The finished file is
assembled from the parts in input order, then the parts and the checkpoint are removed.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from osmanthus.core.catalogue import SubjectModel
from osmanthus.core.errors import ConfigError, ImportRejected, InvalidArgument, OsmanthusError
from osmanthus.core.files import (
    PRIVATE_FILE_MODE,
    private_directory,
    sync_directory,
    write_atomically,
)
from osmanthus.core.types import Shape
from sdk.results import BatchScore

#: the id column of the input CSV
ID_COLUMN = "subject_id"
#: rows kept in memory before a part is written and the checkpoint advanced
DEFAULT_ROWS_PER_PART = 50_000
#: seconds after which the rows received are saved even if fewer than rows_per_part: a job killed
#: outright (`kill -9`, out of memory) loses at most this much work, whatever its size; a save
#: (a Parquet part and an fsync'd checkpoint) costs milliseconds, so 30 s costs nothing to speak of
DEFAULT_CHECKPOINT_S = 30.0
CHECKPOINT_VERSION = 1
#: what OUT.parts holds, for the log lines and errors about its modes
PARTS_WHAT = "the batch job's checkpoint and parts (subject ids with their scores)"

Scorer = Callable[[Iterator[str]], Iterator[BatchScore]]


@dataclass(frozen=True)
class JobReport:
    output: Path
    rows: int
    scored: int
    refused: int
    resumed_from: int


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sql_path(path: Path) -> str:
    # COPY takes its target as a literal, not a parameter
    return "'" + str(path).replace("'", "''") + "'"


def read_ids(path: Path, *, skip: int = 0) -> Iterator[str]:
    """The subject ids of the CSV at `path`, after the first `skip`, lazily."""
    try:
        f = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the input: {exc.strerror}", field="in") from None
    with f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or ID_COLUMN not in header:
            raise ImportRejected(
                f"{path}: the first line must be a header naming a {ID_COLUMN!r} column",
                problems=[(1, ID_COLUMN, "missing from the header")],
            )
        column = header.index(ID_COLUMN)
        for index, row in enumerate(reader):
            if index < skip:
                continue
            if len(row) <= column:
                raise ImportRejected(
                    f"{path}: line {index + 2} has no {ID_COLUMN!r} value",
                    problems=[(index + 2, ID_COLUMN, "missing")],
                )
            yield row[column].strip()


def count_ids(path: Path) -> int:
    return sum(1 for _ in read_ids(path))


class BatchJob:
    """Score every id of `source` into `output`, resuming from `output`'s checkpoint if any."""

    def __init__(
        self,
        *,
        source: Path,
        output: Path,
        model: SubjectModel,
        shape: Shape,
        purpose: str,
        chunk_size: int,
        rows_per_part: int = DEFAULT_ROWS_PER_PART,
        checkpoint_s: float = DEFAULT_CHECKPOINT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`checkpoint_s`: save at the end of the first chunk this long after the last save
        (0: after every chunk), besides every `rows_per_part` rows; `clock` measures it."""
        if (
            isinstance(checkpoint_s, bool)
            or not isinstance(checkpoint_s, int | float)
            or not math.isfinite(checkpoint_s)
            or checkpoint_s < 0
        ):
            raise InvalidArgument(
                f"checkpoint seconds must be a finite number >= 0, got {checkpoint_s!r}",
                field="checkpoint_seconds",
            )
        self.source = source
        self.output = output
        self.model = model
        self.shape = shape
        self.purpose = purpose
        self.chunk_size = chunk_size
        # a part ends on a chunk boundary: the rows of one chunk are all saved or none are
        self.rows_per_part = max(chunk_size, rows_per_part // chunk_size * chunk_size)
        self.checkpoint_s = float(checkpoint_s)
        self._clock = clock
        self.parts_dir = output.with_name(output.name + ".parts")
        self.checkpoint_path = self.parts_dir / "checkpoint.json"

    # --- checkpoint ------------------------------------------------------------------------

    def _identity(self, input_digest: str) -> dict[str, Any]:
        return {
            "version": CHECKPOINT_VERSION,
            "input_sha256": input_digest,
            "subject_kind": self.model.kind.value,
            "shape": self.shape.value,
            "purpose": self.purpose,
            "chunk_size": self.chunk_size,
        }

    def _load_checkpoint(self, identity: dict[str, Any]) -> tuple[int, int, int, int]:
        """(rows done, parts written, scored, refused) from the checkpoint, or zeros."""
        if not self.checkpoint_path.exists():
            if self.parts_dir.exists():
                shutil.rmtree(self.parts_dir)
            private_directory(self.parts_dir, what=PARTS_WHAT, field="out")
            return 0, 0, 0, 0
        # a directory an earlier version left open to others is repaired, each repair logged
        private_directory(self.parts_dir, what=PARTS_WHAT, field="out")
        try:
            saved = json.loads(self.checkpoint_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"{self.checkpoint_path}: unreadable checkpoint ({exc}); delete "
                f"{self.parts_dir} to start the job again"
            ) from None
        differing = [k for k, v in identity.items() if saved.get(k) != v]
        if differing:
            raise ConfigError(
                f"{self.checkpoint_path}: the checkpoint belongs to another job (its "
                f"{', '.join(differing)} differ from this one's); delete {self.parts_dir} to "
                "start again, or run the original command",
                field=differing[0],
            )
        parts = int(saved["parts"])
        # a part written after the last checkpoint is not part of the job: it will be redone
        for stray in self.parts_dir.glob("part-*.parquet"):
            if int(stray.stem.split("-")[1]) >= parts:
                stray.unlink()
        return int(saved["rows"]), parts, int(saved["scored"]), int(saved["refused"])

    def _save_checkpoint(
        self, identity: dict[str, Any], *, rows: int, parts: int, scored: int, refused: int
    ) -> None:
        state = {**identity, "rows": rows, "parts": parts, "scored": scored, "refused": refused}
        write_atomically(
            self.checkpoint_path,
            json.dumps(state, indent=2, sort_keys=True).encode(),
            mode=PRIVATE_FILE_MODE,
        )

    # --- output ----------------------------------------------------------------------------

    def _columns(self) -> list[tuple[str, str]]:
        columns = [
            ("line", "BIGINT"),
            ("subject_id", "VARCHAR"),
            ("score", "INTEGER"),
            ("grade", "VARCHAR"),
        ]
        if self.shape is Shape.BREAKDOWN:
            columns.append(("deductions", "INTEGER"))
            # prefixed: a category may not take the name of another column
            columns += [(f"bonus_{c.name}", "INTEGER") for c in self.model.categories]
        columns.append(("refused", "VARCHAR"))
        return columns

    def _write_part(self, number: int, first_line: int, rows: list[BatchScore]) -> None:
        columns = self._columns()
        values: dict[str, list[Any]] = {name: [] for name, _ in columns}
        for offset, row in enumerate(rows):
            values["line"].append(first_line + offset)
            values["subject_id"].append(row.subject_id)
            values["score"].append(row.score)
            values["grade"].append(row.grade)
            if self.shape is Shape.BREAKDOWN:
                values["deductions"].append(row.deductions)
                for c in self.model.categories:
                    values[f"bonus_{c.name}"].append(row.bonuses.get(c.name))
            values["refused"].append(row.refused)
        path = self.parts_dir / f"part-{number:06d}.parquet"
        tmp = path.with_name(path.name + ".tmp")
        select = ", ".join(
            f'unnest(${i + 1}::{sql_type}[]) AS "{name}"'
            for i, (name, sql_type) in enumerate(columns)
        )
        with duckdb.connect() as con:
            con.execute(
                f"COPY (SELECT {select}) TO {_sql_path(tmp)} (FORMAT parquet)",
                [values[name] for name, _ in columns],
            )
        with tmp.open("rb") as f:
            # DuckDB made it with the umask; the directory kept others out meanwhile
            os.fchmod(f.fileno(), PRIVATE_FILE_MODE)
            os.fsync(f.fileno())
        os.replace(tmp, path)
        sync_directory(self.parts_dir)

    def _assemble(self, parts: int) -> None:
        files = [str(self.parts_dir / f"part-{i:06d}.parquet") for i in range(parts)]
        # made in the private parts directory and owner-only before it is renamed into place:
        # it holds every subject's score, as the parts do
        tmp = self.parts_dir / (self.output.name + ".tmp")
        with duckdb.connect() as con:
            if files:
                con.execute(
                    f"COPY (SELECT * FROM read_parquet(?) ORDER BY line) TO {_sql_path(tmp)} "
                    "(FORMAT parquet)",
                    [files],
                )
            else:
                columns = ", ".join(f'NULL::{t} AS "{n}"' for n, t in self._columns())
                con.execute(f"COPY (SELECT {columns} LIMIT 0) TO {_sql_path(tmp)} (FORMAT parquet)")
        with tmp.open("rb") as f:
            os.fchmod(f.fileno(), PRIVATE_FILE_MODE)
            os.fsync(f.fileno())
        os.replace(tmp, self.output)
        sync_directory(self.output.parent, written=self.output)
        # the checkpoint goes first: parts without a checkpoint are simply started afresh
        self.checkpoint_path.unlink()
        shutil.rmtree(self.parts_dir)

    # --- run -------------------------------------------------------------------------------

    def run(self, scorer: Scorer, *, progress: Callable[[int], object] | None = None) -> JobReport:
        """Score what is left; `progress(n)` is told of every n rows saved."""
        if "'" in str(self.output):
            raise ConfigError(
                f"{self.output}: the output path may not contain a quote", field="out"
            )
        identity = self._identity(_sha256(self.source))
        done, parts, scored, refused = self._load_checkpoint(identity)
        resumed_from = done
        if progress and done:
            progress(done)
        buffer: list[BatchScore] = []
        saved_at = self._clock()

        def flush() -> None:
            nonlocal done, parts, scored, refused, saved_at
            # the rows leave the buffer before anything can fail: an interruption inside this
            # function must not save them a second time (the checkpoint decides what counts)
            rows = buffer[:]
            buffer.clear()
            self._write_part(parts, done + 1, rows)
            parts += 1
            done += len(rows)
            scored += sum(1 for r in rows if r.refused is None)
            refused += sum(1 for r in rows if r.refused is not None)
            self._save_checkpoint(identity, rows=done, parts=parts, scored=scored, refused=refused)
            saved_at = self._clock()
            if progress:
                progress(len(rows))

        try:
            for row in scorer(read_ids(self.source, skip=done)):
                buffer.append(row)
                if len(buffer) >= self.rows_per_part or (
                    # by time only at the end of a chunk: a part holds whole chunks
                    len(buffer) % self.chunk_size == 0
                    and self._clock() - saved_at >= self.checkpoint_s
                ):
                    flush()
        except BaseException as exc:
            # rows of whole chunks already received are kept: a part ends on a chunk boundary
            whole = len(buffer) // self.chunk_size * self.chunk_size
            del buffer[whole:]
            if buffer:
                flush()
            if isinstance(exc, OsmanthusError) and not isinstance(exc, ImportRejected):
                raise type(exc)(
                    f"{exc.message}; {done} of the input's rows are saved in {self.parts_dir}: "
                    "run the same command again to resume",
                    field=exc.field,
                ) from exc
            raise
        if buffer:
            flush()
        self._assemble(parts)
        return JobReport(
            output=self.output,
            rows=done,
            scored=scored,
            refused=refused,
            resumed_from=resumed_from,
        )

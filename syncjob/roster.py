"""Rosters: the CSV files of subject ids the sync job grades or takes statistics over.

A roster is read whole (110,000 rated enterprises are a few MB), each id once in the order of
its first line, with the line it came from, and a digest that names exactly this list: staged
work of one roster is never resumed against another.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from osmanthus.core.errors import ConfigError
from osmanthus.core.lists import holds_resident_id

#: the id column, as `osmanthus batch score` reads it
ID_COLUMN: Final = "subject_id"


@dataclass(frozen=True)
class Roster:
    ids: tuple[str, ...]
    #: the line of the file each id was first read from
    lines: tuple[int, ...]
    digest: str

    def line_of(self, position: int) -> int:
        return self.lines[position]


def read_roster(path: Path, *, field: str) -> Roster:
    """The distinct ids of `path`; ConfigError naming `field` (and the line) if it cannot be
    read. UTF-8 with or without the byte-order mark Excel writes; the header names subject_id."""
    ids: list[str] = []
    lines: list[int] = []
    seen: set[str] = set()
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None or ID_COLUMN not in [h.strip() for h in header]:
                raise ConfigError(
                    f"{path}: the first line must be a header naming a {ID_COLUMN!r} column",
                    field=field,
                )
            column = [h.strip() for h in header].index(ID_COLUMN)
            for row in reader:
                line = reader.line_num
                if not row or not any(cell.strip() for cell in row):
                    continue
                if len(row) <= column or not row[column].strip():
                    raise ConfigError(f"{path}: line {line} has no {ID_COLUMN}", field=field)
                value = row[column].strip()
                if value not in seen:
                    seen.add(value)
                    ids.append(value)
                    lines.append(line)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", field=field) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path} is not UTF-8 (byte {exc.start}); save it as UTF-8 (Excel: 'CSV UTF-8')",
            field=field,
        ) from None
    except csv.Error as exc:
        raise ConfigError(f"{path}: not a readable CSV ({exc})", field=field) from None
    digest = hashlib.sha256("\n".join(ids).encode("utf-8")).hexdigest()
    return Roster(ids=tuple(ids), lines=tuple(lines), digest=digest)


def shown_refusal(value: str, reason: str) -> str:
    """A refusal of one roster value fit for logs and the state file: never repeating any part
    of a value that reads as a person's resident id (the coordinator's reason may quote it)."""
    if holds_resident_id(value):
        return "the value reads as a resident identity number, not a credit code"
    return reason

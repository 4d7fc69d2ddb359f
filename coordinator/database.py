"""The DuckDB file behind a coordinator registry: opened once, schema ensured, used locked."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Self

import duckdb

from osmanthus.errors import ConfigError


class RegistryDatabase:
    """Base of the consent and key registries: one connection serialised by a lock.

    One connection per file keeps DuckDB's single-writer rule inside this process; the lock
    makes each registry operation (a check and its insert) atomic against concurrent RPCs.
    """

    def __init__(self, path: Path, *, schema: str, what: str) -> None:
        self.path = path
        try:
            self._db = duckdb.connect(str(path))
            self._db.execute(schema)
        except duckdb.Error as exc:
            raise ConfigError(f"{path}: cannot open the {what}: {exc}") from exc
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

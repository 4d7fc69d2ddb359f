"""The database files behind the coordinator's registries and ledgers: opened once, schema
ensured, one connection used under a lock."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Self

import duckdb

from osmanthus.core.errors import ConfigError


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


class LedgerDatabase:
    """Base of the disclosure and ε ledgers: a SQLite file, one connection serialised by a lock.

    SQLite rather than DuckDB: the ledgers are point lookups and appends that grow without
    bound, and SQLite keeps its B-trees on disk behind a bounded page cache. Every write is
    durable (WAL, synchronous=FULL) before the answer it records leaves the coordinator.
    """

    def __init__(self, path: Path, *, schema: str, what: str, cache_kib: int | None = None) -> None:
        self.path = path
        try:
            self._db = sqlite3.connect(
                str(path), check_same_thread=False, isolation_level=None, timeout=30
            )
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
            if cache_kib is not None:
                self._db.execute(f"PRAGMA cache_size = -{int(cache_kib)}")
            self._db.executescript(schema)
        except sqlite3.Error as exc:
            raise ConfigError(f"{path}: cannot open the {what}: {exc}") from exc
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

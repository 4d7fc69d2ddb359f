"""Osmanthus's local database files: a DuckDB file's schema and meta row, and transactions.

Every write to a store is one transaction that is committed when its block ends and rolled back
if the block raises (`transaction` for DuckDB files, `sqlite_transaction` for the SQLite
ledgers and the sync job's state), so no store is left half-written by a failure.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

import duckdb

from osmanthus.core.errors import ConfigError


def rollback_quietly(conn: duckdb.DuckDBPyConnection) -> None:
    """Roll back; no active transaction (committed or rolled back already) is nothing to undo."""
    with contextlib.suppress(duckdb.Error):
        conn.rollback()


@contextlib.contextmanager
def transaction(conn: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """One DuckDB transaction: committed when the block ends, rolled back if it raises
    (a failed commit included)."""
    conn.begin()
    try:
        yield conn
        conn.commit()
    except BaseException:
        rollback_quietly(conn)
        raise


@contextlib.contextmanager
def sqlite_transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One SQLite write transaction (BEGIN IMMEDIATE: the write lock is taken at the start, so
    the checks inside it see what the write will change): committed when the block ends,
    rolled back if it raises. `db` must be in autocommit mode (isolation_level=None)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise


def create_or_read_meta(
    conn: duckdb.DuckDBPyConnection,
    *,
    path: Path,
    schema: str,
    meta: Sequence[object],
    what: str,
    writable: bool = True,
    field: str | None = None,
) -> tuple[object, ...] | None:
    """The stored meta row, or None after creating `schema` and inserting `meta` as that row.

    A file without a meta table is ours to initialise only if it is empty: a file holding other
    tables is someone else's database, and is refused rather than written into. A read-only
    opening of a file without the schema is refused too (`writable` False).
    """
    tables = {
        row[0]
        for row in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
        ).fetchall()
    }
    if "meta" not in tables:
        if not writable:
            raise ConfigError(
                f"{path}: not an Osmanthus {what} (no meta table); open it writable once to "
                "create the schema",
                field=field,
            )
        if tables:
            raise ConfigError(
                f"{path}: holds other tables ({', '.join(sorted(tables))}) but no Osmanthus "
                "meta table; refusing to write into a foreign database",
                field=field,
            )
        with transaction(conn):
            conn.execute(schema)
            conn.execute(f"INSERT INTO meta VALUES ({', '.join('?' for _ in meta)})", list(meta))
        return None
    rows = conn.execute("SELECT * FROM meta").fetchall()
    if len(rows) != 1:
        raise ConfigError(f"{path}: meta table has {len(rows)} rows, expected 1", field=field)
    return tuple(rows[0])

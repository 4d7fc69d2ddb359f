"""An Osmanthus DuckDB file: create its schema and one meta row once, or read that row back."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

import duckdb

from osmanthus.core.errors import ConfigError


def rollback_quietly(conn: duckdb.DuckDBPyConnection) -> None:
    """Roll back; no active transaction (committed or rolled back already) is nothing to undo."""
    with contextlib.suppress(duckdb.Error):
        conn.rollback()


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
        conn.begin()
        try:
            conn.execute(schema)
            conn.execute(f"INSERT INTO meta VALUES ({', '.join('?' for _ in meta)})", list(meta))
            conn.commit()
        except BaseException:
            rollback_quietly(conn)
            raise
        return None
    rows = conn.execute("SELECT * FROM meta").fetchall()
    if len(rows) != 1:
        raise ConfigError(f"{path}: meta table has {len(rows)} rows, expected 1", field=field)
    return tuple(rows[0])

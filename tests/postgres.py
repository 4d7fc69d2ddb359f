"""A real PostgreSQL server for tests, started from Debian's postgresql-15 binaries.

initdb refuses to run as root, so as root (CI) the cluster is made and run as the `postgres`
user (runuser), in a temporary directory that user owns; as anyone else, as that user. The
server listens on 127.0.0.1 on a free port, with its unix socket in the same directory, and
trusts local connections (a throwaway cluster). Skipped only when the binaries are missing
and CI is unset: .ci/run installs them.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

PG_BIN: Final = Path(os.environ.get("OSMANTHUS_PG_BIN", "/usr/lib/postgresql/15/bin"))
_OWNER: Final = "postgres"


@dataclass
class Postgres:
    directory: Path
    port: int
    _as_owner: list[str]

    @property
    def data(self) -> Path:
        return self.directory / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def _pg_ctl(self, *args: str) -> None:
        subprocess.run(
            [*self._as_owner, str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60",
             *args],
            check=True, capture_output=True,
        )  # fmt: skip

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1"
        self._pg_ctl("-l", str(self.directory / "server.log"), "-o", options, "start")

    def stop(self) -> None:
        # fast: the connections in flight are ended, as at an operator's restart
        self._pg_ctl("-m", "fast", "stop")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_postgres() -> Postgres:
    """A fresh cluster in a new temporary directory, started."""
    as_owner: list[str] = []
    directory = Path(tempfile.mkdtemp(prefix="osmanthus-pg-"))
    if os.geteuid() == 0:
        user = pwd.getpwnam(_OWNER)
        os.chown(directory, user.pw_uid, user.pw_gid)
        as_owner = ["runuser", "-u", _OWNER, "--"]
    server = Postgres(directory=directory, port=_free_port(), _as_owner=as_owner)
    subprocess.run(
        [*as_owner, str(PG_BIN / "initdb"), "-D", str(server.data), "-U", "postgres",
         "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"],
        check=True, capture_output=True,
    )  # fmt: skip
    server.start()
    return server


def _binaries_present() -> bool:
    if not (PG_BIN / "initdb").exists():
        return False
    return os.geteuid() != 0 or (shutil.which("runuser") is not None and _owner_exists())


def _owner_exists() -> bool:
    try:
        pwd.getpwnam(_OWNER)
    except KeyError:
        return False
    return True


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One PostgreSQL server for the session; each test takes a fresh database of it."""
    if not _binaries_present():
        if os.environ.get("CI"):
            pytest.fail(f"no PostgreSQL binaries in {PG_BIN}: .ci/run installs postgresql-15")
        pytest.skip(
            f"no PostgreSQL binaries in {PG_BIN} (apt-get install postgresql-15); "
            "these tests run in CI"
        )
    server = start_postgres()
    try:
        yield server
    finally:
        try:
            server.stop()
        finally:
            shutil.rmtree(server.directory, ignore_errors=True)

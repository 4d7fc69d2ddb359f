"""Durable file writes: a reader sees a file whole, old or new, and a crash loses neither.

Every file Osmanthus writes for others to read (keys, bundles, reports, checkpoints, the port a
server bound) goes through `write_atomically`, so that no copy of the temp-file-and-rename dance
differs from another in its mode, its fsync or its handling of an existing file.
"""

from __future__ import annotations

import errno
import os
import secrets
from pathlib import Path

from osmanthus.core.errors import ConfigError


def write_atomically(
    path: Path, data: bytes, *, mode: int = 0o644, overwrite: bool = True, field: str = "out"
) -> None:
    """Replace `path` with `data` so that a reader sees the old file or the new one, never half.

    The data is written to a temporary file in the same directory (created with `mode`, so a
    private key is never readable by others, even briefly), flushed to disk and renamed over
    `path`; the directory is then synced so the rename survives a crash. With
    `overwrite=False` the temporary file is hard-linked to `path` instead, which fails if
    `path` exists, even when another process creates it at the same moment.
    """
    directory = path.parent
    tmp = directory / f".{path.name}.{secrets.token_hex(6)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}", field=field) from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            # the umask may have narrowed the mode given to open(); set exactly what was asked
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            _link_new(tmp, path, field=field)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}", field=field) from exc
    finally:
        tmp.unlink(missing_ok=True)
    sync_directory(directory, written=path, field=field)


def _link_new(tmp: Path, path: Path, *, field: str) -> None:
    try:
        os.link(tmp, path)
    except FileExistsError as exc:
        raise ConfigError(f"{path} already exists; refusing to replace it", field=field) from exc
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP):
            raise ConfigError(
                f"cannot write {path}: {exc.strerror}; this file system has no hard links, "
                "which are needed to create the file without ever replacing one; write it to a "
                "directory on a local disk and copy it afterwards",
                field=field,
            ) from exc
        raise


def sync_directory(directory: Path, *, written: Path | None = None, field: str = "out") -> None:
    """Make a newly created or renamed file's directory entry durable too."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(
            f"wrote {written or directory}, but cannot open its directory to make the write "
            f"durable: {exc.strerror}; it may not survive a crash",
            field=field,
        ) from exc
    try:
        os.fsync(dir_fd)
    except OSError as exc:
        # some file systems (several network ones) cannot sync a directory: nothing to do there
        if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
            raise ConfigError(
                f"wrote {written or directory}, but cannot sync its directory: {exc.strerror}; "
                "it may not survive a crash",
                field=field,
            ) from exc
    finally:
        os.close(dir_fd)

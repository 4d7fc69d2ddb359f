"""Durable file writes, and state directories that only their service's user may open.

Every file Osmanthus writes for others to read (keys, bundles, reports, checkpoints, the port a
server bound) goes through `write_atomically`, so that no copy of the temp-file-and-rename dance
differs from another in its mode, its fsync or its handling of an existing file. Every service
keeps its state in a `private_directory` (0700, files 0600) and narrows its umask at start
(`narrow_umask`), so that what DuckDB and SQLite create there by themselves is private too.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import pwd
import secrets
import stat
from pathlib import Path
from typing import Final

from osmanthus.core.errors import ConfigError

_log = logging.getLogger(__name__)


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


# --- private state -----------------------------------------------------------------------------

#: a service's state directory, and every directory in it: its user's alone
PRIVATE_DIR_MODE: Final = 0o700
#: every file in a state directory
PRIVATE_FILE_MODE: Final = 0o600
#: the permission bits no state file or directory may give: any for the group and for others
_OTHERS: Final = 0o077


def append_durably(path: Path, data: bytes, *, field: str) -> None:
    """Append `data` (whole lines) to `path`, created 0600, and fsync it; a torn last line left
    by a crash is ended first, so the new line starts on a line of its own. A file readable by
    others is refused (ConfigError naming `field`): these files are private state."""
    existed = path.exists()
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot open: {exc.strerror}", field=field) from exc
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if mode & 0o077:
            raise ConfigError(
                f"{path}: mode {mode:04o}; it must be 0600 (run: chmod 600 {path})", field=field
            )
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except OSError:
            # the lines were never acknowledged: cut off what was written of them (a full
            # disk), or a later append would follow a line torn in the middle of the file
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise
    except OSError as exc:
        raise ConfigError(f"{path}: cannot append: {exc.strerror}", field=field) from exc
    finally:
        os.close(fd)
    if not existed:
        sync_directory(path.parent, written=path, field=field)


def narrow_umask() -> int:
    """Narrow this process's umask so that nothing it creates from now on is open to other
    users (group and other bits masked; a stricter umask stays as strict); the previous umask.

    A service calls this once at start, for the rest of the process's life. It is the only
    way to make the files that DuckDB and SQLite create themselves private: DuckDB creates a
    database's write-ahead log at the first write after every checkpoint (and deletes it at
    the checkpoint), with mode 0666 less the umask, and the log holds what the database does
    (resident ids, in the coordinator's consent registry and a node's list store). A chmod
    after opening, or a narrower umask around some calls only, misses the logs created later
    by other threads. Files that others must read (a public key handed out, the metrics file
    node-exporter reads) are written with an explicit mode (`write_atomically`), which the
    umask does not narrow.
    """
    previous = os.umask(_OTHERS)
    if previous & ~_OTHERS:
        # a stricter umask stays as strict
        os.umask(previous | _OTHERS)
    return previous


def private_directory(path: Path, *, what: str, field: str = "state_dir") -> tuple[Path, ...]:
    """Create `path` owner-only (0700), or make an existing one and everything in it so.

    `what` says what the directory holds, for the log lines and errors. In an existing
    directory, every directory that gives the group or others any permission loses those bits
    (0755 becomes 0700) and so does every file (0644 becomes 0600), each with a WARNING naming
    the path and its old mode; the paths repaired are returned. Symbolic links inside are
    neither followed nor changed (the directory itself may be one: the operator chose it).
    A directory owned by another user is refused (ConfigError): a service keeping its state
    in someone else's directory would depend on that user for its secrets.
    """
    try:
        path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        top = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileExistsError, NotADirectoryError):
        raise ConfigError(f"{path} is not a directory; {what} needs one", field=field) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot make {path} a private directory for {what}: {exc.strerror}", field=field
        ) from None
    try:
        info = os.fstat(top)
        if info.st_uid != os.geteuid():
            raise ConfigError(
                f"{path} belongs to {_user(info.st_uid)}, not to {_user(os.geteuid())} who runs "
                f"this; {what} needs a directory of its own user's: give it one, or chown the "
                "directory to this user",
                field=field,
            )
        repaired: list[Path] = []
        if _repair(top, path, info, what=what, field=field):
            repaired.append(path)
        # walked from the descriptor: the directory itself, even if `path` names it by a link
        for directory, dirnames, filenames, dir_fd in os.fwalk(
            ".", dir_fd=top, follow_symlinks=False
        ):
            for name in (*dirnames, *filenames):
                entry = Path(path, directory, name)
                if _repair_entry(dir_fd, entry, name, what=what, field=field):
                    repaired.append(entry)
    finally:
        os.close(top)
    return tuple(repaired)


def _repair_entry(dir_fd: int, path: Path, name: str, *, what: str, field: str) -> bool:
    """Take the group's and others' bits from one directory or regular file (never through a
    symbolic link: the entry is opened without following one, then changed by its descriptor,
    so that a link put in its place meanwhile changes nothing)."""
    try:
        info = os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return False  # gone meanwhile (a temporary file)
    if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
        return False
    if not stat.S_IMODE(info.st_mode) & _OTHERS:
        return False
    try:
        fd = os.open(
            name,
            os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
            dir_fd=dir_fd,
        )
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise ConfigError(
            f"{path} in {what} is open to other users (mode {stat.S_IMODE(info.st_mode):o}) "
            f"and cannot be opened to make it owner-only ({exc.strerror}); run: chmod go-rwx "
            f"{path}",
            field=field,
        ) from None
    try:
        opened = os.fstat(fd)
        if not (stat.S_ISREG(opened.st_mode) or stat.S_ISDIR(opened.st_mode)):
            return False
        return _repair(fd, path, opened, what=what, field=field)
    finally:
        os.close(fd)


def _repair(fd: int, path: Path, info: os.stat_result, *, what: str, field: str) -> bool:
    mode = stat.S_IMODE(info.st_mode)
    if not mode & _OTHERS:
        return False
    try:
        os.fchmod(fd, mode & ~_OTHERS)
    except OSError as exc:
        raise ConfigError(
            f"{path} in {what} is open to other users (mode {mode:o}) and cannot be made "
            f"owner-only ({exc.strerror}); it belongs to {_user(info.st_uid)}: give the "
            "service's user a state directory of its own",
            field=field,
        ) from None
    _log.warning(
        "%s was open to other users (mode %o); made it owner-only (%o). It is part of %s: "
        "whoever could read it before may have copied it",
        path,
        mode,
        mode & ~_OTHERS,
        what,
    )
    return True


def _user(uid: int) -> str:
    try:
        return f"user {pwd.getpwuid(uid).pw_name!r} (uid {uid})"
    except KeyError:
        return f"uid {uid}"

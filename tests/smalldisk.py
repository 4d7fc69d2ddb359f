"""Real disk faults for tests: a small file system that fills up, and a file made read-only.

`small_disk` mounts a size-limited tmpfs (as root: `mount -t tmpfs -o size=...`) in the test's
own mount namespace, which is the one the servers under test run in (they are threads of the
test process: a private namespace made with unshare would hide the mount from them), and
unmounts it afterwards. `immutable` sets the ext4 immutable attribute (`chattr +i`), which
refuses writes even through a file descriptor opened before (EPERM, on ext2/3/4), whereas root
ignores permission bits and a read-only remount is refused (EBUSY) while a file is open for
writing. A test that cannot mount is skipped, with the reason, unless the `CI` variable is set:
there it fails, so that the fault is never silently untested.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

#: what fills the disk is written in chunks of this size, then byte by byte to the last page
_FILL_CHUNK = 1 << 16


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but {reason}")
    pytest.skip(reason)


@contextmanager
def small_disk(path: Path, *, size_bytes: int) -> Iterator[Path]:
    """A tmpfs of `size_bytes` mounted at `path` (created 0700), unmounted on leaving."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        _unavailable("mounting a small tmpfs needs root and mount(8)")
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_bytes},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        _unavailable(f"cannot mount a tmpfs at {path}: {done.stderr.strip()}")
    try:
        yield path
    finally:
        # lazily: a server thread of a failed test may still hold a file open there
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path, name: str = "filler") -> Path:
    """Write a file in `directory` until the file system has no room left; returns it."""
    filler = directory / name
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for chunk in (_FILL_CHUNK, 1):
            while True:
                try:
                    os.write(fd, b"\0" * chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return filler


@contextmanager
def immutable(path: Path) -> Iterator[None]:
    """`path` refuses every write (chattr +i) until the block ends."""
    if os.geteuid() != 0 or shutil.which("chattr") is None:
        _unavailable("chattr +i needs root and chattr(1)")
    kind = subprocess.run(
        ["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True, check=False
    ).stdout.strip()
    if not kind.startswith("ext"):
        # tmpfs takes the flag but still writes through a descriptor opened before it; an
        # overlay (a container's root) refuses the flag: neither makes the fault, and neither
        # is a fault of the code under test, so this one skips in CI too
        pytest.skip(f"{path} is on {kind or 'an unknown file system'}, not ext2/3/4")
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        _unavailable(f"chattr +i {path}: {done.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)

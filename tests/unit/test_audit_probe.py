"""AuditLog.probe on a disk that fills up: a real fault (a small tmpfs, tests/smalldisk.py).

While the disk is full the probe says no and the log stays failed; once space is freed the
probe says yes with no entry written, the watchers hear the log takes writes again, no scratch
file is left, and the next entry follows the last acknowledged one as a whole line.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from osmanthus.core.audit import PROBE_SUFFIX, AuditLog
from osmanthus.core.errors import ConfigError
from tests.smalldisk import fill, small_disk
from tests.unit.test_audit_faults import _append_until_refused, _assert_consistent, _entry, _open


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with small_disk(tmp_path / "disk", size_bytes=256 * 1024) as mounted:
        yield mounted


def test_the_probe_finds_the_log_writable_again_without_an_entry(disk: Path) -> None:
    log: AuditLog = _open(disk)
    told: list[str | None] = []
    log.watch(told.append)
    for n in range(3):
        log.append(_entry(log, f"before_{n}"))
    assert log.probe()  # nothing failed: nothing to probe
    filler = fill(disk)
    written, _ = _append_until_refused(log, "full")
    assert told == [None, "No space left on device"]
    before = log.path.read_bytes()
    # still full: the probe fails, the log stays failed, and no scratch file is left
    assert not log.probe()
    assert log.failure == "No space left on device"
    assert not (disk / f"audit.jsonl{PROBE_SUFFIX}").exists()
    filler.unlink()
    assert log.probe()
    assert log.failure is None
    assert told == [None, "No space left on device", None]
    # the probe wrote no entry and left no scratch file
    assert log.path.read_bytes() == before
    assert not (disk / f"audit.jsonl{PROBE_SUFFIX}").exists()
    log.append(_entry(log, "after"))
    _assert_consistent(log)
    ids = [e.query_id for e in log.entries()]
    assert ids == [*(f"before_{n}" for n in range(3)), *written, "after"]
    log.close()


def test_a_closed_log_is_not_probed(tmp_path: Path) -> None:
    log = _open(tmp_path)
    log.close()
    with pytest.raises(ConfigError, match="closed"):
        log.probe()

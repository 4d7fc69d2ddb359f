"""A test's view of processes through /proc (Linux): who descends from whom, who still runs.

A process is known by its pid together with its start time, so a pid that the kernel hands to a
new process after the old one is gone is not mistaken for the old one. A zombie counts as gone:
it holds no memory and runs no code, and only its new parent (init) can reap it.
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
#: whether this system has the /proc the helpers read (Linux)
HAVE_PROC = (PROC / "self" / "stat").exists()


@dataclass(frozen=True)
class ProcessId:
    """One process: its pid and its start time (clock ticks after boot)."""

    pid: int
    started: int


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time) of `pid`, or None if there is no such process."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # the command name is in parentheses and may itself hold spaces and parentheses
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[19])


def descendants(pid: int) -> set[ProcessId]:
    """Every process below `pid` (children, their children, ...), as they are now."""
    children: dict[int, list[ProcessId]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        stat = _stat(int(entry.name))
        if stat is not None:
            _, parent, started = stat
            children.setdefault(parent, []).append(ProcessId(int(entry.name), started))
    found: set[ProcessId] = set()
    pending = [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            if child not in found:
                found.add(child)
                pending.append(child.pid)
    return found


def running(process: ProcessId) -> bool:
    """Whether this very process still exists and is not a zombie."""
    stat = _stat(process.pid)
    return stat is not None and stat[2] == process.started and stat[0] != "Z"


def command_line(process: ProcessId) -> str:
    """The process's arguments joined by spaces ('' once it is gone)."""
    try:
        raw = (PROC / str(process.pid) / "cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def kill_running(processes: set[ProcessId]) -> None:
    """SIGKILL those of `processes` still running (a test's cleanup of what it started)."""
    for process in processes:
        if running(process):
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)

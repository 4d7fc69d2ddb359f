"""The demo launcher waits for processes by their progress, not by the clock: real processes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from osmanthus.core.errors import Unavailable
from osmanthus.demo.launcher import Process, spawn, wait_all_ready

#: a stand-in for a server: optionally burns CPU or sleeps, then writes its port and serves
_SERVER = """
import argparse, signal, sys, time
parser = argparse.ArgumentParser()
parser.add_argument("--busy", type=float, default=0.0)
parser.add_argument("--sleep", type=float, default=0.0)
parser.add_argument("--port", default="4321")
parser.add_argument("--exit", type=int, default=None)
parser.add_argument("--ignore-term", action="store_true")
parser.add_argument("--ready-file")
args = parser.parse_args()
end = time.monotonic() + args.busy
while time.monotonic() < end:
    pass
time.sleep(args.sleep)
if args.exit is not None:
    print("giving up", flush=True)
    sys.exit(args.exit)
if args.ignore_term:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
with open(args.ready_file + ".tmp", "w") as f:
    f.write(args.port + "\\n")
import os
os.replace(args.ready_file + ".tmp", args.ready_file)
while True:
    time.sleep(3600)  # serving: no CPU at all until a signal comes
"""


def _start(run_dir: Path, name: str, *args: str) -> Process:
    return spawn(name, [sys.executable, "-c", _SERVER, *args], run_dir=run_dir)


def _stop(*processes: Process) -> None:
    for process in processes:
        if process.popen.poll() is None:
            process.popen.kill()
        process.popen.wait()


def test_every_port_is_returned_and_a_slow_start_says_who_is_still_starting(
    tmp_path: Path,
) -> None:
    fast = _start(tmp_path, "node-fast", "--port", "1111")
    slow = _start(tmp_path, "node-slow", "--port", "2222", "--sleep", "1.0")
    reports: list[str] = []
    try:
        ports = wait_all_ready([fast, slow], report=reports.append, every_s=0.3)
        assert ports == {"node-fast": 1111, "node-slow": 2222}
        assert (fast.port, slow.port) == (1111, 2222)
        # reported while the slow one started: how many are ready, and which one is not
        assert reports and "still starting: node-slow" in reports[-1]
        assert "of 2 processes ready" in reports[-1]
    finally:
        _stop(fast, slow)


def test_a_process_that_exits_before_it_is_ready_fails_the_start_with_its_log(
    tmp_path: Path,
) -> None:
    good = _start(tmp_path, "node-good")
    bad = _start(tmp_path, "node-bad", "--exit", "3")
    try:
        with pytest.raises(Unavailable, match=r"node-bad exited with code 3") as caught:
            wait_all_ready([good, bad], report=None)
        assert "giving up" in caught.value.message
    finally:
        _stop(good, bad)


def test_a_process_that_uses_no_cpu_and_is_not_ready_counts_as_hung(tmp_path: Path) -> None:
    hung = _start(tmp_path, "node-hung", "--sleep", "600")
    try:
        started = time.monotonic()
        with pytest.raises(Unavailable, match=r"node-hung is not ready and has made no progress"):
            wait_all_ready([hung], stall_s=3.0, report=None)
        # the stall bound, not a deadline: it took at least that long to say so
        assert time.monotonic() - started >= 3.0
    finally:
        _stop(hung)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc for CPU times")
def test_a_start_that_keeps_using_cpu_is_waited_for_beyond_the_stall_bound(
    tmp_path: Path,
) -> None:
    # busy for three stall bounds: slow, as on a loaded machine, but never hung
    busy = _start(tmp_path, "node-busy", "--busy", "4.5")
    try:
        assert wait_all_ready([busy], stall_s=1.5, report=None) == {"node-busy": 4321}
    finally:
        _stop(busy)


def test_stop_returns_the_exit_code_and_kills_only_a_process_that_hangs(tmp_path: Path) -> None:
    polite = _start(tmp_path, "polite")
    stubborn = _start(tmp_path, "stubborn", "--ignore-term")
    try:
        wait_all_ready([polite, stubborn], report=None)
        # Python's default SIGTERM action ends the process: no code of its own runs
        assert polite.stop() == -signal.SIGTERM
        stubborn.terminate()
        # it ignores SIGTERM and then uses (almost) no CPU: not gone, and not progressing
        assert stubborn.wait_exit(idle_s=1.0, limit_s=30.0) is None
        assert stubborn.popen.poll() is None
        stubborn.popen.kill()
        assert stubborn.wait_exit() == -signal.SIGKILL
    finally:
        _stop(polite, stubborn)


def test_a_process_given_to_the_launcher_from_outside_is_waited_for_too(tmp_path: Path) -> None:
    ready = tmp_path / "helper.port"
    log = tmp_path / "helper.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            [sys.executable, "-c", _SERVER, "--port", "5555", "--ready-file", str(ready)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    helper = Process("helper", popen, ready, log)
    try:
        assert helper.wait_ready(report=None) == 5555
    finally:
        _stop(helper)

"""Key-holding worker processes die with their owner, even when it is killed with SIGKILL.

The attack: `kill -9` of a batch job (or of the coordinator) used to leave its pool's workers,
two of them holding the requester's Paillier private key, with the fork server and the resource
tracker, re-parented to init, for ever. Each test starts a real owner process
(lifeline_owner_main.py) with a real 2048-bit key, waits for it to say its workers run, notes
every process below it, kills it with SIGKILL and waits until every one of them is gone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from osmanthus.core.crypto import generate_keypair
from tests.processes import (
    HAVE_PROC,
    ProcessId,
    command_line,
    descendants,
    kill_running,
    running,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.skipif(not HAVE_PROC, reason="reads the process tree from /proc")

OWNER = Path(__file__).with_name("lifeline_owner_main.py")


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _, private = generate_keypair(bits=2048)
    path = tmp_path_factory.mktemp("lifeline") / "requester.key"
    path.write_text(private.to_json())
    return path


@dataclass
class Owner:
    """A running owner process and what it reported once its pool was up."""

    process: subprocess.Popen[str]
    workers: set[ProcessId]
    forked: ProcessId | None
    #: every process below the owner once the pool was up: workers, fork server, tracker
    family: set[ProcessId]

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()


@pytest.fixture
def start_owner(key_file: Path) -> Iterator[Callable[[str], Owner]]:
    started: list[Owner] = []

    def start(kind: str) -> Owner:
        process = subprocess.Popen(
            [sys.executable, str(OWNER), kind, str(key_file)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        # the event: the owner prints its workers' pids once they run (a line, or EOF if it died)
        line = process.stdout.readline()
        if not line:
            process.wait()
            raise AssertionError(f"the {kind} owner exited with {process.returncode}")
        report = json.loads(line)
        family = descendants(process.pid)
        by_pid = {p.pid: p for p in family}
        workers = {by_pid[pid] for pid in report["workers"]}
        forked = by_pid[report["forked"]] if report["forked"] else None
        owner = Owner(process=process, workers=workers, forked=forked, family=family)
        started.append(owner)
        return owner

    yield start
    for owner in started:
        if owner.process.poll() is None:
            owner.kill()
        assert owner.process.stdin is not None
        owner.process.stdin.close()
        kill_running(owner.family)


def _still_running(processes: set[ProcessId]) -> str:
    return "still running: " + "; ".join(
        f"{p.pid} {command_line(p)[:100]}" for p in processes if running(p)
    )


def _helpers(owner: Owner) -> tuple[set[ProcessId], set[ProcessId]]:
    """(fork servers, resource trackers) among the owner's family."""
    # workers are forked from the fork server: the same command line, so they are set apart
    helpers = owner.family - owner.workers
    fork_servers = {p for p in helpers if "multiprocessing.forkserver" in command_line(p)}
    trackers = {p for p in helpers if "multiprocessing.resource_tracker" in command_line(p)}
    return fork_servers, trackers


@pytest.mark.parametrize("kind", ["decryptor", "zero-tests"])
def test_a_killed_owner_leaves_no_worker_fork_server_or_resource_tracker(
    start_owner: Callable[[str], Owner], kind: str
) -> None:
    owner = start_owner(kind)
    fork_servers, trackers = _helpers(owner)
    assert len(owner.workers) == 2 and owner.workers <= owner.family
    # the four processes of the report: two workers, the fork server and its resource tracker
    assert len(fork_servers) == 1 and len(trackers) == 1, owner.family
    owner.kill()
    wait_until(
        lambda: not any(running(p) for p in owner.family),
        what=lambda: (
            f"the {kind} owner was killed, its processes are {_still_running(owner.family)}"
        ),
    )


def test_without_a_lifeline_the_workers_outlive_their_killed_owner(
    start_owner: Callable[[str], Owner],
) -> None:
    # positive control: a plain pool's key-holding workers are still there once an owned
    # pool's are gone, both owners killed at the same moment
    unowned = start_owner("unowned")
    owned = start_owner("decryptor")
    unowned.kill()
    owned.kill()
    wait_until(
        lambda: not any(running(p) for p in owned.family),
        what=lambda: f"the killed owner's processes are {_still_running(owned.family)}",
    )
    assert all(running(p) for p in unowned.family), _still_running(unowned.family)
    # and they go only once someone kills the workers; the fork server and tracker follow
    kill_running(unowned.workers)
    wait_until(
        lambda: not any(running(p) for p in unowned.family),
        what=lambda: f"after its workers, {_still_running(unowned.family)}",
    )


def test_a_forked_child_of_the_owner_does_not_keep_the_workers_alive(
    start_owner: Callable[[str], Owner],
) -> None:
    owner = start_owner("decryptor-and-fork")
    assert owner.forked is not None
    owner.kill()
    # the forked child still runs, yet holds no copy of the lifeline's write end
    wait_until(
        lambda: not any(running(p) for p in owner.workers),
        what=lambda: f"with a forked child alive, the workers are {_still_running(owner.workers)}",
    )
    assert running(owner.forked)
    # the fork server and tracker stay while the child (a multiprocessing process, as far as
    # they know) holds their pipes; once it ends they go too
    assert owner.process.stdin is not None
    owner.process.stdin.close()
    wait_until(
        lambda: not any(running(p) for p in owner.family),
        what=lambda: f"after the forked child, {_still_running(owner.family)}",
    )

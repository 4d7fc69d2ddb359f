"""Starting a whole local federation (nodes + coordinator) as separate processes on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from coordinator.config import NodeEndpoint, render_nodes
from osmanthus.core.errors import FailedPrecondition, Unavailable
from osmanthus.core.types import DepartmentId

#: start-up fails when a process exits, or when one not yet ready has used no CPU time for this
#: long: it is then waiting on something that will not come. A start on a busy machine is slow
#: but keeps using CPU, however little (a process among ~90 runnable ones on 2 cores still gets
#: a few per cent of one), so there is no limit on the start as a whole. Where the CPU time of
#: a process cannot be read (no /proc), the bound counts from the last process that got ready.
STALL_TIMEOUT_S = 120.0
#: how often a start that takes a while reports which processes are ready and which are not
PROGRESS_EVERY_S = 10.0
#: stopping kills a process that, after SIGTERM, has used no CPU time for this long (or, without
#: /proc, that has not exited this long after it), or has not exited after STOP_LIMIT_S in all
STOP_TIMEOUT_S = 30.0
STOP_LIMIT_S = 300.0
_POLL_S = 0.05
#: how often the CPU time of waiting processes is read
_CPU_EVERY_S = 1.0


def _cpu_ticks(pid: int) -> int | None:
    """User and system CPU time a process (and its reaped children) used, in clock ticks; None
    when it cannot be read (no /proc, or the process is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        # the command name in brackets may hold spaces: the fields proper follow its last ')'
        fields = stat[stat.rindex(")") + 2 :].split()
        return sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    except (OSError, ValueError):  # gone, or a kernel that writes this file otherwise
        return None


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-2000:]
    except OSError:
        return "(no log)"


def report_to_stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    ready_file: Path
    log_path: Path
    port: int = 0
    signalled: bool = False

    def ready_port(self) -> int | None:
        """The port the process wrote to its ready file, once it has."""
        if not self.port and self.ready_file.exists():
            text = self.ready_file.read_text().strip()
            if text:
                self.port = int(text)
        return self.port or None

    def wait_ready(self, *, report: Callable[[str], None] | None = report_to_stderr) -> int:
        """The port, once the process is ready: it waits as long as the process makes progress
        (wait_all_ready), not against a fixed clock."""
        wait_all_ready([self], report=report)
        return self.port

    def terminate(self) -> None:
        # one SIGTERM only: a second one could land during interpreter shutdown and kill it
        if not self.signalled and self.popen.poll() is None:
            self.signalled = True
            self.popen.send_signal(signal.SIGTERM)

    def wait_exit(
        self, *, idle_s: float = STOP_TIMEOUT_S, limit_s: float = STOP_LIMIT_S
    ) -> int | None:
        """The exit code once the process exits; None if it is still running after using no CPU
        time for `idle_s` (without /proc: `idle_s` after the call), or after `limit_s` in all.

        Shutting down on a busy machine is slow but keeps using CPU; a hung process does not.
        """
        start = moved = checked = time.monotonic()
        used = _cpu_ticks(self.popen.pid)
        while True:
            code = self.popen.poll()
            if code is not None:
                return code
            now = time.monotonic()
            if now - checked >= _CPU_EVERY_S:
                checked = now
                now_used = _cpu_ticks(self.popen.pid)
                if now_used is not None and now_used != used:
                    used, moved = now_used, now
            if now - moved >= idle_s or now - start >= limit_s:
                return None
            time.sleep(_POLL_S)

    def stop(self) -> int | None:
        """SIGTERM, wait for the exit (wait_exit), SIGKILL if it hangs; the exit code."""
        if self.popen.poll() is None:
            self.terminate()
            if self.wait_exit() is None:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode


def wait_all_ready(
    processes: Iterable[Process],
    *,
    stall_s: float = STALL_TIMEOUT_S,
    report: Callable[[str], None] | None = report_to_stderr,
    every_s: float = PROGRESS_EVERY_S,
) -> dict[str, int]:
    """Wait until every process has written its port; name → port.

    Raises Unavailable when one exits first, or when one not yet ready has used no CPU time for
    `stall_s` (see STALL_TIMEOUT_S). A start that takes longer than `every_s` is reported every
    `every_s` through `report`: how many are ready, and which are still starting.
    """
    everyone = list(processes)
    waiting = [p for p in everyone if p.ready_port() is None]
    start = checked = time.monotonic()
    used = {p.name: _cpu_ticks(p.popen.pid) for p in waiting}
    moved = dict.fromkeys(used, start)
    next_report = start + every_s
    while waiting:
        now = time.monotonic()
        got_ready = False
        for process in list(waiting):
            if process.ready_port() is not None:
                waiting.remove(process)
                got_ready = True
            elif process.popen.poll() is not None:
                raise Unavailable(
                    f"{process.name} exited with code {process.popen.returncode} before it was "
                    f"ready:\n{_tail(process.log_path)}"
                )
        read_cpu = now - checked >= _CPU_EVERY_S
        if read_cpu:
            checked = now
        for process in waiting:
            if read_cpu:
                ticks = _cpu_ticks(process.popen.pid)
                if ticks is not None and ticks != used[process.name]:
                    used[process.name], moved[process.name] = ticks, now
            if got_ready and used[process.name] is None:
                moved[process.name] = now  # no CPU figures: the others' progress is all there is
            if now - moved[process.name] >= stall_s:
                raise Unavailable(
                    f"{process.name} is not ready and has made no progress (no CPU time used) "
                    f"for {stall_s:g} s:\n{_tail(process.log_path)}"
                )
        if waiting and report is not None and now >= next_report:
            next_report = now + every_s
            names = sorted(p.name for p in waiting)
            shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
            report(
                f"{now - start:.0f} s: {len(everyone) - len(waiting)} of {len(everyone)} "
                f"processes ready; still starting: {shown}"
            )
        if waiting:
            time.sleep(_POLL_S)
    return {p.name: p.port for p in everyone}


def osmanthus_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "osmanthus.cli", "--log-level", "WARNING", *args]


def spawn(name: str, argv: Sequence[str], *, run_dir: Path, own_session: bool = False) -> Process:
    """Start `argv` with --ready-file appended; its output goes to RUN_DIR/<name>.log.

    With `own_session` the process gets a session (and process group) of its own, so a Ctrl-C
    at the terminal reaches only the parent, which stops it with the one SIGTERM `stop` sends:
    a SIGINT from the terminal and a SIGTERM from the parent could otherwise both reach it, the
    second during its interpreter's shutdown, and end it by signal instead of cleanly.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    ready = run_dir / f"{name}.port"
    ready.unlink(missing_ok=True)
    log_path = run_dir / f"{name}.log"
    log = log_path.open("wb")
    popen = subprocess.Popen(
        [*argv, "--ready-file", str(ready)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=own_session,
    )
    log.close()
    return Process(name, popen, ready, log_path)


@dataclass
class LocalFederation:
    """Department nodes and a coordinator, each its own process, all on 127.0.0.1."""

    data_dir: Path
    certs_dir: Path
    issuer_public_key: Path
    run_dir: Path
    departments: Sequence[str]
    deadline_s: float = 5.0
    #: where a slow start says which processes are ready (None: nowhere)
    progress: Callable[[str], None] | None = report_to_stderr
    nodes: dict[str, Process] = field(default_factory=dict)
    coordinator: Process | None = None
    #: the token issuer's deny list every server follows (None: none)
    token_deny_list: Path | None = None
    #: each process in a session of its own (see spawn): the caller alone stops them
    own_session: bool = False
    #: how often (seconds) every audit log signs a checkpoint once it grew, and the coordinator
    #: witnesses the nodes' logs (None: the servers' defaults, 60 s)
    checkpoint_interval_s: float | None = None

    def _transparency_args(self, *, coordinator: bool) -> list[str]:
        if self.checkpoint_interval_s is None:
            return []
        args = ["--checkpoint-interval", str(self.checkpoint_interval_s)]
        if coordinator:
            args += ["--witness-interval", str(self.checkpoint_interval_s)]
        return args

    def _revocation_args(self) -> list[str]:
        """--crl (the CRL 'certs init' wrote; a server refuses to start without it) and
        --token-deny-list."""
        args = ["--crl", str(self.certs_dir / "crl.pem")]
        if self.token_deny_list is not None:
            args += ["--token-deny-list", str(self.token_deny_list)]
        return args

    def start(self) -> int:
        """Start every node, then the coordinator; returns the coordinator's port.

        Waits as long as the processes make progress (wait_all_ready), so a busy machine only
        makes the start slower; raises Unavailable when one exits or hangs."""
        for dept in self.departments:
            self.nodes[dept] = self._spawn_node(dept, port=0)
        ports = wait_all_ready(self.nodes.values(), report=self.progress)
        endpoints = [
            NodeEndpoint(DepartmentId(d), f"127.0.0.1:{ports[p.name]}")
            for d, p in self.nodes.items()
        ]
        nodes_toml = self.run_dir / "nodes.toml"
        nodes_toml.write_text(render_nodes(endpoints))
        self.coordinator = spawn(
            "coordinator",
            osmanthus_command(
                "coordinator", "serve",
                "--nodes", str(nodes_toml),
                "--issuer-public-key", str(self.issuer_public_key),
                "--state-dir", str(self.run_dir / "state" / "coordinator"),
                "--certs-dir", str(self.certs_dir),
                "--listen", "127.0.0.1:0",
                "--deadline", str(self.deadline_s),
                *self._revocation_args(),
                *self._transparency_args(coordinator=True),
            ),
            run_dir=self.run_dir,
            own_session=self.own_session,
        )  # fmt: skip
        return self.coordinator.wait_ready(report=self.progress)

    def _spawn_node(self, dept: str, *, port: int) -> Process:
        return spawn(
            f"node-{dept}",
            osmanthus_command(
                "node", "serve",
                "--department", dept,
                "--db", str(self.data_dir / f"{dept}.duckdb"),
                "--issuer-public-key", str(self.issuer_public_key),
                "--state-dir", str(self.run_dir / "state" / dept),
                "--certs-dir", str(self.certs_dir),
                "--listen", f"127.0.0.1:{port}",
                *self._revocation_args(),
                *self._transparency_args(coordinator=False),
            ),
            run_dir=self.run_dir,
            own_session=self.own_session,
        )  # fmt: skip

    def restart_node(self, dept: str) -> int:
        """Start a node that has exited again, on the port the coordinator knows it by (its
        state directory and records are where they were); returns the port once it serves."""
        old = self.nodes[dept]
        if old.popen.poll() is None:
            raise FailedPrecondition(f"node {dept} is still running", field="department")
        # the log of the first run stays beside the new one
        if old.log_path.exists():
            old.log_path.replace(old.log_path.with_suffix(".log.1"))
        process = self._spawn_node(dept, port=old.port)
        self.nodes[dept] = process
        return process.wait_ready(report=self.progress)

    def stop(self) -> dict[str, int | None]:
        """SIGTERM everything (coordinator first) and return each exit code."""
        codes: dict[str, int | None] = {}
        if self.coordinator:
            codes["coordinator"] = self.coordinator.stop()
        for p in self.nodes.values():
            p.terminate()
        for name, p in self.nodes.items():
            codes[name] = p.stop()
        return codes

    @property
    def coordinator_audit(self) -> Path:
        return self.run_dir / "state" / "coordinator" / "audit.jsonl"

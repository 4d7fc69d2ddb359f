"""Starting a whole local federation (nodes + coordinator) as separate processes on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from coordinator.config import NodeEndpoint, render_nodes
from osmanthus.core.errors import Unavailable
from osmanthus.core.types import DepartmentId

#: how long a process may take to bind its port before start-up counts as failed
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    ready_file: Path
    log_path: Path
    port: int = 0
    signalled: bool = False

    def wait_ready(self, deadline: float) -> int:
        while time.monotonic() < deadline:
            if self.ready_file.exists():
                text = self.ready_file.read_text().strip()
                if text:
                    self.port = int(text)
                    return self.port
            if self.popen.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise Unavailable(f"{self.name} exited with code {self.popen.returncode}:\n{tail}")
            time.sleep(0.05)
        raise Unavailable(f"{self.name} did not start within {START_TIMEOUT_S:g} s")

    def terminate(self) -> None:
        # one SIGTERM only: a second one could land during interpreter shutdown and kill it
        if not self.signalled and self.popen.poll() is None:
            self.signalled = True
            self.popen.send_signal(signal.SIGTERM)

    def stop(self) -> int | None:
        if self.popen.poll() is None:
            self.terminate()
            try:
                self.popen.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode


def osmanthus_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "osmanthus.cli", "--log-level", "WARNING", *args]


def spawn(name: str, argv: Sequence[str], *, run_dir: Path) -> Process:
    """Start `argv` with --ready-file appended; its output goes to RUN_DIR/<name>.log."""
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
    nodes: dict[str, Process] = field(default_factory=dict)
    coordinator: Process | None = None

    def start(self) -> int:
        """Start every node, then the coordinator; returns the coordinator's port."""
        for dept in self.departments:
            self.nodes[dept] = spawn(
                f"node-{dept}",
                osmanthus_command(
                    "node", "serve",
                    "--department", dept,
                    "--db", str(self.data_dir / f"{dept}.duckdb"),
                    "--issuer-public-key", str(self.issuer_public_key),
                    "--state-dir", str(self.run_dir / "state" / dept),
                    "--certs-dir", str(self.certs_dir),
                    "--listen", "127.0.0.1:0",
                ),
                run_dir=self.run_dir,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        endpoints = [
            NodeEndpoint(DepartmentId(d), f"127.0.0.1:{p.wait_ready(deadline)}")
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
            ),
            run_dir=self.run_dir,
        )  # fmt: skip
        return self.coordinator.wait_ready(time.monotonic() + START_TIMEOUT_S)

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

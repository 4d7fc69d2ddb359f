"""Starting and stopping an mTLS gRPC server with standard health checking (nodes, coordinator)."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from osmanthus.core.errors import ConfigError
from osmanthus.core.files import write_atomically
from osmanthus.core.tls import TlsFiles, server_credentials
from osmanthus.core.wire import MAX_RECEIVE_BYTES

_log = logging.getLogger(__name__)

#: seconds in-flight calls get to finish on shutdown: longer than the coordinator's default
#: node deadline (5 s), so a query waiting on a slow node still completes
GRACE_SECONDS = 10.0


@dataclass
class RunningServer:
    server: grpc.Server
    port: int
    health: health.HealthServicer
    service_names: tuple[str, ...]
    #: run after the server has drained: close databases, logs, client channels
    on_stop: list[Callable[[], None]] = field(default_factory=list)
    _stopped: threading.Event = field(default_factory=threading.Event)

    def stop(self, grace: float = GRACE_SECONDS) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        # tell probes first so load balancers stop sending work, then drain
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        for close in self.on_stop:
            close()

    def wait(self) -> None:
        self.server.wait_for_termination()


def start_server(
    *,
    register: Sequence[Callable[[grpc.Server], None]],
    service_names: Sequence[str],
    listen: str,
    tls: TlsFiles,
    max_workers: int = 16,
    interceptors: Sequence[grpc.ServerInterceptor] = (),
) -> RunningServer:
    """Bind `listen` (host:port, port 0 = any free port) with mutual TLS only and start serving."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="osmanthus-rpc"),
        options=[("grpc.max_receive_message_length", MAX_RECEIVE_BYTES)],
        interceptors=list(interceptors),
    )
    for add in register:
        add(server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    try:
        port = server.add_secure_port(listen, server_credentials(tls))
    except RuntimeError as exc:
        raise ConfigError(f"cannot listen on {listen}: {exc}", field="listen") from exc
    if port == 0:
        raise ConfigError(f"cannot listen on {listen}: address in use or invalid", field="listen")
    server.start()
    for name in (*service_names, ""):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(server, port, health_servicer, tuple(service_names))


def serve_until_signalled(running: RunningServer, *, ready_file: Path | None) -> None:
    """Block until SIGTERM/SIGINT, then stop gracefully. Writes the bound port to `ready_file`."""
    done = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        _log.info("signal %d received: shutting down", signum)
        done.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    if ready_file is not None:
        # written atomically so a watcher never reads a half-written port
        write_atomically(ready_file, f"{running.port}\n".encode(), field="ready_file")
    done.wait()
    running.stop()

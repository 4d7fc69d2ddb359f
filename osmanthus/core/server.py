"""Running an mTLS gRPC server: who is calling (one interceptor), health checking, shutdown.

Every Osmanthus server (nodes, coordinator, provincial receiver) starts here. Its calls pass one
server interceptor, CallerInterceptor, which reads the caller once per call, before any
handler: the platform peer its verified client certificate names and the bearer token it sent.
A call to one of the server's own services without a certificate naming a peer is refused
UNAUTHENTICATED right there; handlers read the caller with `current_caller()`. Deny by default:
a handler run without the interceptor has no caller, and `current_caller()` refuses it.
"""

from __future__ import annotations

import contextvars
import logging
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from osmanthus.core.errors import ConfigError, OsmanthusError
from osmanthus.core.files import write_atomically
from osmanthus.core.grpc_errors import abort
from osmanthus.core.tls import PeerIdentity, TlsFiles, peer_identity, server_credentials
from osmanthus.core.tokens import bearer_token
from osmanthus.core.wire import MAX_RECEIVE_BYTES

_log = logging.getLogger(__name__)

#: seconds in-flight calls get to finish on shutdown: longer than the coordinator's default
#: node deadline (5 s), so a query waiting on a slow node still completes
GRACE_SECONDS = 10.0


@dataclass(frozen=True)
class Caller:
    """Who made a call: the peer its client certificate names, and the bearer token it sent."""

    peer: PeerIdentity
    #: the requester's token from the 'authorization: Bearer' metadata, None if it sent none
    token: str | None


_CALLER: contextvars.ContextVar[Caller] = contextvars.ContextVar("osmanthus_caller")


def current_caller() -> Caller:
    """The caller of the call being handled; only CallerInterceptor sets it."""
    try:
        return _CALLER.get()
    except LookupError:
        # a servicer served without the interceptor: refuse rather than guess who is calling
        raise ConfigError(
            "the server reads callers in CallerInterceptor, and this call did not pass it"
        ) from None


def _service_of(method: str) -> str:
    # "/osmanthus.v1.NodeService/Contribute" -> "osmanthus.v1.NodeService"
    return method.lstrip("/").split("/", 1)[0]


class CallerInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Reads each call's caller once, before its handler; refuses calls without a peer.

    Only the server's own services are guarded: the standard health and reflection services
    answer any client the TLS handshake admitted (the handshake already demands a certificate
    from the platform CA).
    """

    def __init__(self, services: Sequence[str]) -> None:
        self._services = frozenset(services)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None or _service_of(handler_call_details.method) not in self._services:
            return handler
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _unary(handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _streaming(handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _unary(handler.stream_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            _streaming(handler.stream_stream),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _caller_of(context: grpc.ServicerContext) -> Caller:
    try:
        peer = peer_identity(context)
    except OsmanthusError as exc:
        abort(context, exc)
    return Caller(peer=peer, token=bearer_token(context.invocation_metadata()))


def _unary(behaviour: Callable[[Any, grpc.ServicerContext], Any]) -> Callable[..., Any]:
    def handle(request: Any, context: grpc.ServicerContext) -> Any:
        token = _CALLER.set(_caller_of(context))
        try:
            return behaviour(request, context)
        finally:
            _CALLER.reset(token)

    return handle


def _streaming(
    behaviour: Callable[[Any, grpc.ServicerContext], Iterator[Any]],
) -> Callable[..., Iterator[Any]]:
    def handle(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        caller = _caller_of(context)
        # grpc pulls the responses after this function returns, on the same thread: the
        # caller is set around each step of the stream, not only around its creation
        responses = iter(behaviour(request, context))
        while True:
            token = _CALLER.set(caller)
            try:
                response = next(responses)
            except StopIteration:
                return
            finally:
                _CALLER.reset(token)
            yield response

    return handle


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
        # the caller is read first, so that other interceptors and every handler see it
        interceptors=[CallerInterceptor(service_names), *interceptors],
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

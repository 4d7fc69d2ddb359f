"""Running an mTLS gRPC server: who is calling (one interceptor), health checking, shutdown.

Every Osmanthus server (nodes, coordinator, provincial receiver) starts here. Its calls pass one
server interceptor, CallerInterceptor, which reads the caller once per call, before any
handler: the platform peer its verified client certificate names and the bearer token it sent.
A call to one of the server's own services without a certificate naming a peer is refused
UNAUTHENTICATED right there; handlers read the caller with `current_caller()`. A server given the
platform CA's CRL passes each call next through RevocationInterceptor, which refuses a revoked
client certificate (UNAUTHENTICATED) before any handler runs. Deny by default:
a handler run without the interceptor has no caller, and `current_caller()` refuses it.
CallerInterceptor also decodes each request once the caller is known, so that bytes that are not
the message are INVALID_ARGUMENT (grpc's own decoding answers INTERNAL and logs a traceback).
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
from typing import TYPE_CHECKING, Any, Final, NoReturn

import grpc
from cryptography import x509
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client.registry import Collector

from osmanthus.core.errors import ConfigError, InvalidArgument, OsmanthusError, Unauthenticated
from osmanthus.core.files import write_atomically
from osmanthus.core.grpc_errors import abort
from osmanthus.core.metrics import MetricsEndpoint, MetricsInterceptor
from osmanthus.core.metrics import serve as serve_metrics
from osmanthus.core.tls import (
    PeerIdentity,
    TlsFiles,
    peer_certificate_pem,
    peer_identity,
    server_credentials,
)
from osmanthus.core.tokens import bearer_token
from osmanthus.core.wire import MAX_RECEIVE_BYTES, decoded

if TYPE_CHECKING:
    from osmanthus.core.audit import AuditLog
    from osmanthus.core.crl import PeerRevocation
    from osmanthus.core.denylist import TokenDenial

_log = logging.getLogger(__name__)

#: seconds in-flight calls get to finish on shutdown: longer than the coordinator's default
#: node deadline (5 s), so a query waiting on a slow node still completes
GRACE_SECONDS = 10.0
#: how often a server whose audit log cannot be written checks whether it can again
#: (RunningServer.follow_audit): how long, at most, it says NOT_SERVING after the disk has room
AUDIT_PROBE_INTERVAL_S: Final = 1.0


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
        # grpc gets no deserializer: it hands over the request's bytes, and the handler decodes
        # them once the caller is known. grpc's own decoding answers bytes that are not the
        # message INTERNAL "Exception deserializing request!" and logs a traceback; ours
        # answers INVALID_ARGUMENT (osmanthus.core.wire.decoded)
        decode = handler.request_deserializer
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _unary(handler.unary_unary, _one(decode)),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _streaming(handler.unary_stream, _one(decode)),
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _unary(handler.stream_unary, _each(decode)),
                response_serializer=handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            _streaming(handler.stream_stream, _each(decode)),
            response_serializer=handler.response_serializer,
        )


def _caller_of(context: grpc.ServicerContext) -> Caller:
    try:
        peer = peer_identity(context)
    except OsmanthusError as exc:
        abort(context, exc)
    return Caller(peer=peer, token=bearer_token(context.invocation_metadata()))


#: turns what grpc hands a handler (a request's bytes, or an iterator of them) into messages
_Reader = Callable[[Any, grpc.ServicerContext], Any]


def _one(deserialize: Callable[[bytes], Any] | None) -> _Reader:
    """Reads a unary request: undecodable bytes end the call INVALID_ARGUMENT right here."""

    def read(raw: Any, context: grpc.ServicerContext) -> Any:
        try:
            return decoded(raw, deserialize)
        except InvalidArgument as exc:
            abort(context, exc)

    return read


def _each(deserialize: Callable[[bytes], Any] | None) -> _Reader:
    """Reads a request stream lazily: a message that does not decode raises InvalidArgument
    where the servicer reads it, and its servicer_method answers INVALID_ARGUMENT."""

    def read(raws: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        return (decoded(raw, deserialize) for raw in raws)

    return read


def _unary(
    behaviour: Callable[[Any, grpc.ServicerContext], Any], read: _Reader
) -> Callable[..., Any]:
    def handle(request: Any, context: grpc.ServicerContext) -> Any:
        token = _CALLER.set(_caller_of(context))
        try:
            return behaviour(read(request, context), context)
        finally:
            _CALLER.reset(token)

    return handle


def _streaming(
    behaviour: Callable[[Any, grpc.ServicerContext], Iterator[Any]], read: _Reader
) -> Callable[..., Iterator[Any]]:
    def handle(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        caller = _caller_of(context)
        # grpc pulls the responses after this function returns, on the same thread: the
        # caller is set around each step of the stream, not only around its creation
        responses = iter(behaviour(read(request, context), context))
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


class RevocationInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Refuses, UNAUTHENTICATED, a call whose client certificate the platform CA's CRL revokes.

    gRPC Python's TLS handshake cannot take a CRL, so the certificate the handshake verified is
    compared here, on every call to the server's own services, with the CRL in force (which
    `revocation` follows from its file: a revocation needs no restart).
    """

    def __init__(self, services: Sequence[str], revocation: PeerRevocation) -> None:
        self._services = frozenset(services)
        self._revocation = revocation

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None or _service_of(handler_call_details.method) not in self._services:
            return handler
        behaviour, make = (
            (handler.unary_unary, grpc.unary_unary_rpc_method_handler)
            if handler.unary_unary
            else (handler.unary_stream, grpc.unary_stream_rpc_method_handler)
            if handler.unary_stream
            else (handler.stream_unary, grpc.stream_unary_rpc_method_handler)
            if handler.stream_unary
            else (handler.stream_stream, grpc.stream_stream_rpc_method_handler)
        )
        check = self._check
        requests_stream, responses_stream = handler.request_streaming, handler.response_streaming
        streaming = requests_stream or responses_stream

        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            # a stream's responses come from the iterator returned: refused before the first
            watch = check(context, streaming=streaming)
            if watch is not None and requests_stream:
                request = watch.requests(request)
            answer = behaviour(request, context)
            if watch is not None and responses_stream:
                return watch.responses(answer)
            return answer

        return make(
            handle,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _check(self, context: grpc.ServicerContext, *, streaming: bool) -> _StreamWatch | None:
        """Aborts UNAUTHENTICATED when the caller's certificate is revoked now; for a stream,
        the watch that checks it again at every message (a stream may outlive a revocation)."""
        if not streaming and not self._revocation.lists_any:
            return None  # no certificate to parse
        pem = peer_certificate_pem(context)
        if pem is None:
            # CallerInterceptor refuses a call without a certificate before this one runs
            return None
        try:
            identity = peer_identity(context)
            whose = f"the client certificate of {identity.role.value} {identity.name!r}"
        except OsmanthusError:
            whose = "the client certificate"
        try:
            serial = x509.load_pem_x509_certificate(pem).serial_number
        except ValueError as exc:
            _refuse(context, Unauthenticated(f"{whose} cannot be parsed: {exc}"))
        watch = _StreamWatch(self._revocation, serial=serial, whose=whose, context=context)
        watch.check()
        return watch if streaming else None


@dataclass(frozen=True)
class _StreamWatch:
    """One stream's caller, checked against the CRL in force at each message read and each
    response sent: a dictionary lookup, so a revocation ends an open stream at its next
    message rather than when the client hangs up."""

    revocation: PeerRevocation
    serial: int
    whose: str
    context: grpc.ServicerContext

    def check(self) -> None:
        problem = self.revocation.refusal(self.serial, whose=self.whose)
        if problem is not None:
            _refuse(self.context, Unauthenticated(problem))

    def requests(self, requests: Iterator[Any]) -> Iterator[Any]:
        for request in requests:
            self.check()
            yield request

    def responses(self, responses: Iterator[Any]) -> Iterator[Any]:
        try:
            for response in responses:
                self.check()
                yield response
        finally:
            # refused mid-stream: the servicer's generator ends here, not when collected
            close = getattr(responses, "close", None)
            if close is not None:
                close()


def _refuse(context: grpc.ServicerContext, error: Unauthenticated) -> NoReturn:
    _log.warning("call from %s refused: %s", context.peer(), error.message)
    abort(context, error)


@dataclass
class RunningServer:
    server: grpc.Server
    port: int
    health: health.HealthServicer
    service_names: tuple[str, ...]
    #: run after the server has drained: close databases, logs, client channels
    on_stop: list[Callable[[], None]] = field(default_factory=list)
    _stopped: threading.Event = field(default_factory=threading.Event)
    #: the platform CA's CRL this server follows (None: it was given none)
    revocation: PeerRevocation | None = None
    #: the token issuer's deny list this server follows (None: none, or it verifies no tokens)
    token_denial: TokenDenial | None = None
    #: the process's Prometheus endpoint this server started (None: metrics not served)
    metrics: MetricsEndpoint | None = None

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

    def follow_audit(self, log: AuditLog) -> None:
        """Say NOT_SERVING on the health service while `log` cannot be written (the server
        refuses every query then, rather than answer without its entry), SERVING again once
        it can: load balancers and `osmanthus status` see what callers get.

        A load balancer sends a server saying NOT_SERVING nothing, so no entry would come to
        show that the disk takes writes again: while the log is failing, a background thread
        probes it (AuditLog.probe, no entry written) every AUDIT_PROBE_INTERVAL_S, and its
        success says SERVING again, with no request and no restart.
        """
        failing = threading.Event()

        def changed(failure: str | None) -> None:
            # told under the log's lock, in the order of the changes: quick, and no log use
            if failure is None:
                failing.clear()
            else:
                failing.set()
            # after stop() the health service keeps saying NOT_SERVING (grpc ignores set too)
            if self._stopped.is_set():
                return
            status = (
                health_pb2.HealthCheckResponse.SERVING
                if failure is None
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            for name in (*self.service_names, ""):
                self.health.set(name, status)

        def probe_while_failing() -> None:
            while True:
                failing.wait()
                # the interval first: the failure has just been seen by a write
                if self._stopped.wait(AUDIT_PROBE_INTERVAL_S):
                    return
                if not failing.is_set():
                    continue  # an entry was written meanwhile
                try:
                    log.probe()  # on success the log tells `changed`, which clears `failing`
                except OsmanthusError:
                    return  # the log was closed: the server is stopping
                except Exception:  # a fault of the probe must not end the probing
                    _log.exception("%s: probing the audit log failed", log.path)

        prober = threading.Thread(
            target=probe_while_failing, name="osmanthus-audit-probe", daemon=True
        )

        def stop_probing() -> None:
            failing.set()  # wakes the prober, which finds the server stopped
            prober.join()

        log.watch(changed)
        prober.start()
        # first of the closing steps: the prober ends before the log closes
        self.on_stop.insert(0, stop_probing)


def start_server(
    *,
    register: Sequence[Callable[[grpc.Server], None]],
    service_names: Sequence[str],
    listen: str,
    tls: TlsFiles,
    max_workers: int = 16,
    interceptors: Sequence[grpc.ServerInterceptor] = (),
    revocation: PeerRevocation | None = None,
    token_denial: TokenDenial | None = None,
    metrics_listen: str | None = None,
    metrics_collectors: Sequence[Collector] = (),
) -> RunningServer:
    """Bind `listen` (host:port, port 0 = any free port) with mutual TLS only and start serving.

    Every server answers the standard health and reflection services (grpcurl lists its
    services). `metrics_listen` (HOST:PORT): count every RPC (osmanthus.core.metrics) and serve
    the process's Prometheus metrics there, with `metrics_collectors` (the server's own).

    `revocation` (the CA's CRL) refuses revoked client certificates; it and `token_denial` (the
    deny list the server's token verifier asks) start following their files once the server
    serves, and stop with it.
    """
    # revoked certificates are refused right after the caller is read, before anything else
    checks = [RevocationInterceptor(service_names, revocation)] if revocation is not None else []
    # outermost: refusals by the interceptors below count too
    counting = [MetricsInterceptor()] if metrics_listen is not None else []
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="osmanthus-rpc"),
        options=[("grpc.max_receive_message_length", MAX_RECEIVE_BYTES)],
        # the caller is read first, so that other interceptors and every handler see it
        interceptors=[*counting, CallerInterceptor(service_names), *checks, *interceptors],
    )
    for add in register:
        add(server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    try:
        port = server.add_secure_port(listen, server_credentials(tls))
    except RuntimeError as exc:
        raise ConfigError(f"cannot listen on {listen}: {exc}", field="listen") from exc
    if port == 0:
        raise ConfigError(f"cannot listen on {listen}: address in use or invalid", field="listen")
    endpoint = None
    if metrics_listen is not None:
        endpoint = serve_metrics(metrics_listen, collectors=metrics_collectors)
    try:
        server.start()
    except BaseException:
        if endpoint is not None:
            endpoint.close()
        raise
    for name in (*service_names, ""):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    running = RunningServer(
        server,
        port,
        health_servicer,
        tuple(service_names),
        revocation=revocation,
        token_denial=token_denial,
        metrics=endpoint,
    )
    if endpoint is not None:
        running.on_stop.append(endpoint.close)
    for watched in (revocation, token_denial):
        if watched is not None:
            watched.start()
            running.on_stop.append(watched.close)
    return running


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

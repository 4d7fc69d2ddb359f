"""Prometheus metrics of a server process: one registry, its HTTP endpoint, the gRPC interceptor.

Every Osmanthus server (node, coordinator, provincial receiver, portal) exports its metrics with
the official client, at `--metrics-listen HOST:PORT` (off by default; docs/deployment.md lists
every metric and example alert rules). One registry per process (`REGISTRY`); `serve` starts the
process's endpoint. Importing this module also installs its sink for the core's hooks
(osmanthus.core.probes): audit appends, and the checkpoint age of every open transparency log.

Labels are bounded by construction, so no caller can grow the number of series: a gRPC method is
a label only once a registered service knows it; shapes are the Shape enum's; purposes are the
ones the policy in force names (`bind_purposes`), anything else "other"; departments and log
names come from configuration, capped at `MAX_LABEL_VALUES` each. No subject, session, consent
or requester id is ever a label: requesters are counted in totals only.

Part of the ingest work calls `ingest_started`, `ingest_progress`, `ingest_rows` and
`ingest_finished`.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from osmanthus import __version__
from osmanthus.core import probes
from osmanthus.core.errors import ConfigError
from osmanthus.core.types import Shape

_log = logging.getLogger(__name__)

PREFIX: Final = "osmanthus"
#: seconds; an RPC or page from a few milliseconds (a cached answer) to the coordinator's node
#: deadline and beyond (a STATS query over a large cohort, an encryption table build)
LATENCY_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
#: seconds; building one requester key's encryption tables takes seconds to minutes
TABLE_BUILD_BUCKETS: Final = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
#: the label of a value outside the bounded set (an unknown purpose, shape or route)
OTHER: Final = "other"
#: distinct values a configuration-bound label (department, log) takes before "other"
#: (a city has ~88 departments, ~65 of them about enterprises: each must keep its own series)
MAX_LABEL_VALUES: Final = 256
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,99}$")

#: the process's registry: every server of the process registers here
REGISTRY: Final = CollectorRegistry(auto_describe=True)

# --- instruments ------------------------------------------------------------------------------

GRPC_HANDLED: Final = Counter(
    f"{PREFIX}_grpc_server_handled",
    "RPCs completed by the server, by service, method and gRPC status code",
    ["grpc_service", "grpc_method", "grpc_code"],
    registry=REGISTRY,
)
GRPC_SECONDS: Final = Histogram(
    f"{PREFIX}_grpc_server_handling_seconds",
    "Time from the call reaching the server's handler to its last response or error",
    ["grpc_service", "grpc_method"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
HTTP_REQUESTS: Final = Counter(
    f"{PREFIX}_http_requests",
    "HTTP requests answered, by route template, method and status code",
    ["route", "method", "status"],
    registry=REGISTRY,
)
HTTP_SECONDS: Final = Histogram(
    f"{PREFIX}_http_request_seconds",
    "Time to answer an HTTP request, by route template and method",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
QUERIES: Final = Counter(
    f"{PREFIX}_queries",
    "Requests the coordinator decided and audited, by disclosure shape, purpose and decision",
    ["shape", "purpose", "decision"],
    registry=REGISTRY,
)
PARTIAL_ANSWERS: Final = Counter(
    f"{PREFIX}_partial_answers",
    "Answers the coordinator gave without every department, by shape",
    ["shape"],
    registry=REGISTRY,
)
MISSING_DEPARTMENTS: Final = Counter(
    f"{PREFIX}_missing_departments",
    "Departments missing from a query's answer (down, late or refusing), by department",
    ["department"],
    registry=REGISTRY,
)
TABLE_BUILDS: Final = Counter(
    f"{PREFIX}_encryption_table_builds",
    "Per-requester-key encryption tables built (a cache miss of the fast path)",
    registry=REGISTRY,
)
TABLE_BUILD_SECONDS: Final = Histogram(
    f"{PREFIX}_encryption_table_build_seconds",
    "Time to build one requester key's encryption tables",
    buckets=TABLE_BUILD_BUCKETS,
    registry=REGISTRY,
)
EPSILON_SPENT: Final = Counter(
    f"{PREFIX}_epsilon_spent",
    "Differential-privacy budget (ε) charged for noisy statistics, by purpose",
    ["purpose"],
    registry=REGISTRY,
)
AUDIT_APPENDS: Final = Counter(
    f"{PREFIX}_audit_appends",
    "Entries made durable in an audit log, by the log's file name",
    ["log"],
    registry=REGISTRY,
)
INGEST_ROWS: Final = Counter(
    f"{PREFIX}_ingest_rows",
    "Rows a node loaded while serving, by department and kind (new, correction, withdrawal)",
    ["department", "kind"],
    registry=REGISTRY,
)
INGEST_FILES: Final = Counter(
    f"{PREFIX}_ingest_files",
    "Import files a node finished while serving, by department and result (loaded, refused)",
    ["department", "result"],
    registry=REGISTRY,
)
INGEST_IN_PROGRESS: Final = Gauge(
    f"{PREFIX}_ingest_in_progress",
    "Imports running on the node now, by department",
    ["department"],
    registry=REGISTRY,
)
INGEST_ROWS_READ: Final = Gauge(
    f"{PREFIX}_ingest_rows_read",
    "Rows of the department's import in progress read and checked so far (0 when none runs); "
    "rows count as loaded (ingest_rows) only once their file commits",
    ["department"],
    registry=REGISTRY,
)
INGEST_LAST_SUCCESS: Final = Gauge(
    f"{PREFIX}_ingest_last_success_timestamp_seconds",
    "Unix time the department's last import finished loaded",
    ["department"],
    registry=REGISTRY,
)
BUILD_INFO: Final = Gauge(
    f"{PREFIX}_build_info", "The Osmanthus version the process runs", ["version"], registry=REGISTRY
)
BUILD_INFO.labels(__version__).set(1)


# --- bounded labels ---------------------------------------------------------------------------


class BoundedLabel:
    """Values of a configuration-bound label: names as they are, up to `cap` distinct ones;
    anything that is not a plain name, or comes after the cap, is "other"."""

    def __init__(self, cap: int = MAX_LABEL_VALUES) -> None:
        self._cap = cap
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if not _NAME.match(value):
            return OTHER
        with self._lock:
            if value in self._seen:
                return value
            if len(self._seen) >= self._cap:
                return OTHER
            self._seen.add(value)
            return value


_departments = BoundedLabel()
_logs = BoundedLabel()
_SHAPES: Final = frozenset(shape.value for shape in Shape)
_DECISIONS: Final = frozenset({"allow", "deny"})


def shape_label(shape: str) -> str:
    if not shape:
        return "none"
    return shape if shape in _SHAPES else OTHER


_PURPOSE_IS = re.compile(r'purpose\s*==\s*"([^"\\]{1,64})"')
_PURPOSE_IN = re.compile(r"\[([^\]]*)\]\s*\.\s*contains\s*\(\s*context\s*\.\s*purpose\s*\)")
_LITERAL = re.compile(r'"([^"\\]{1,64})"')


def purposes_named(policy_source: str) -> frozenset[str]:
    """The purposes a Cedar policy names (`context.purpose == "x"`, `["x", "y"].contains(
    context.purpose)`): the bounded set a purpose label takes its values from."""
    found = set(_PURPOSE_IS.findall(policy_source))
    for listed in _PURPOSE_IN.findall(policy_source):
        found.update(_LITERAL.findall(listed))
    return frozenset(p for p in found if _NAME.match(p))


@dataclass
class _Purposes:
    """The purposes the policy in force names, re-read when the policy changes (a bundle)."""

    source: Callable[[], str] | None = None
    _cached_for: str | None = None
    _known: frozenset[str] = field(default_factory=frozenset)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def label(self, purpose: str) -> str:
        source = self.source
        if source is None or not purpose:
            return OTHER if purpose else "none"
        try:
            text = source()
        except Exception:  # counting never fails the request it counts
            _log.exception("reading the policy's purposes for a metric label failed")
            return OTHER
        with self._lock:
            if text is not self._cached_for:
                self._known = purposes_named(text)
                self._cached_for = text
            return purpose if purpose in self._known else OTHER


_purposes = _Purposes()


def bind_purposes(policy_source: Callable[[], str]) -> None:
    """Label purposes with the ones the policy returned by `policy_source` names (read at each
    count, so a reloaded bundle's new purposes appear); any other purpose is "other"."""
    _purposes.source = policy_source


def purpose_label(purpose: str) -> str:
    return _purposes.label(purpose)


# --- domain hooks -----------------------------------------------------------------------------


def query_decided(shape: str, purpose: str, decision: str) -> None:
    """Count one audited decision ("allow" or "deny") of a request for `shape` and `purpose`."""
    decision = decision if decision in _DECISIONS else OTHER
    QUERIES.labels(shape_label(shape), purpose_label(purpose), decision).inc()


def partial_answer(*, shape: str) -> None:
    """The central policy let an answer go without some departments."""
    PARTIAL_ANSWERS.labels(shape_label(shape)).inc()


def departments_missing(missing: Iterable[str]) -> None:
    """Departments a query went without, answered or refused for it."""
    for department in missing:
        MISSING_DEPARTMENTS.labels(_departments(department)).inc()


def epsilon_spent(epsilon: float, *, purpose: str) -> None:
    if epsilon > 0:
        EPSILON_SPENT.labels(purpose_label(purpose)).inc(epsilon)


def ingest_started(department: str) -> None:
    INGEST_IN_PROGRESS.labels(_departments(department)).inc()


def ingest_rows(n: int, *, department: str, kind: str = "new") -> None:
    """`n` rows of `kind` loaded by an import that committed (call once it has)."""
    if kind not in ("new", "correction", "withdrawal"):
        kind = OTHER
    INGEST_ROWS.labels(_departments(department), kind).inc(n)


def ingest_progress(rows_read: int, *, department: str) -> None:
    """The import in progress has read and checked `rows_read` rows of its file so far."""
    INGEST_ROWS_READ.labels(_departments(department)).set(rows_read)


def ingest_finished(department: str, *, loaded: bool) -> None:
    label = _departments(department)
    INGEST_IN_PROGRESS.labels(label).dec()
    INGEST_ROWS_READ.labels(label).set(0)
    INGEST_FILES.labels(label, "loaded" if loaded else "refused").inc()
    if loaded:
        INGEST_LAST_SUCCESS.labels(label).set(time.time())


class _Sink:
    """The core's hooks (osmanthus.core.probes), counted here."""

    def audit_appended(self, log: str, count: int) -> None:
        AUDIT_APPENDS.labels(_logs(log)).inc(count)

    def table_built(self, seconds: float) -> None:
        TABLE_BUILDS.inc()
        TABLE_BUILD_SECONDS.observe(seconds)


probes.install(_Sink())


class CheckpointCollector(Collector):
    """At each scrape: each open transparency log's checkpoint age, checkpoint size and tree
    size (an alert: old checkpoint while the tree grew past it)."""

    def collect(self) -> Iterator[Metric]:
        age = GaugeMetricFamily(
            f"{PREFIX}_audit_checkpoint_age_seconds",
            "Seconds since the log's latest checkpoint was signed",
            labels=["origin"],
        )
        size = GaugeMetricFamily(
            f"{PREFIX}_audit_checkpoint_size",
            "Entries the log's latest checkpoint covers",
            labels=["origin"],
        )
        tree = GaugeMetricFamily(
            f"{PREFIX}_audit_tree_size", "Entries in the log's Merkle tree", labels=["origin"]
        )
        now = time.time()
        for log in probes.open_logs():
            origin = _logs(log.origin)
            checkpointer = getattr(log, "checkpointer", None)
            audit = getattr(log, "log", None)
            if checkpointer is None or audit is None:
                continue
            try:
                last = checkpointer.last
                if last is not None:
                    size.add_metric([origin], last.size)
                    # the latest file is replaced atomically at each checkpoint, so its time
                    # survives restarts
                    age.add_metric(
                        [origin], max(0.0, now - checkpointer.latest_path.stat().st_mtime)
                    )
                tree.add_metric([origin], audit.tree_size)
            except Exception:  # a log failing its tree is reported by the service itself
                _log.debug("checkpoint metrics of %s unavailable", origin, exc_info=True)
        yield age
        yield size
        yield tree


REGISTRY.register(CheckpointCollector())


# --- gRPC -------------------------------------------------------------------------------------


def _code_of(context: grpc.ServicerContext, default: grpc.StatusCode) -> str:
    code = context.code()
    return str(code.name if isinstance(code, grpc.StatusCode) else default.name)


class MetricsInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Counts every call the server has a handler for, by service, method and status code, and
    observes its latency. Outermost, so refusals by the other interceptors count too; a method
    no service registered is left to grpc (UNIMPLEMENTED), uncounted, so it adds no series."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        service, _, method = handler_call_details.method.lstrip("/").partition("/")
        handled = GRPC_HANDLED
        seconds = GRPC_SECONDS.labels(service, method)

        def done(code: str, start: float) -> None:
            seconds.observe(time.perf_counter() - start)
            handled.labels(service, method, code).inc()

        def unary(behaviour: Callable[..., Any]) -> Callable[..., Any]:
            def handle(request: Any, context: grpc.ServicerContext) -> Any:
                start = time.perf_counter()
                try:
                    response = behaviour(request, context)
                except BaseException:
                    done(_code_of(context, grpc.StatusCode.UNKNOWN), start)
                    raise
                done(_code_of(context, grpc.StatusCode.OK), start)
                return response

            return handle

        def streaming(behaviour: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
            def handle(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                start = time.perf_counter()
                code = grpc.StatusCode.UNKNOWN
                try:
                    yield from behaviour(request, context)
                    code = grpc.StatusCode.OK
                except GeneratorExit:
                    code = grpc.StatusCode.CANCELLED
                    raise
                finally:
                    done(_code_of(context, code), start)

            return handle

        kwargs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary), **kwargs)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(streaming(handler.unary_stream), **kwargs)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary), **kwargs)
        return grpc.stream_stream_rpc_method_handler(streaming(handler.stream_stream), **kwargs)


# --- the endpoint -----------------------------------------------------------------------------


class _Union(Collector):
    """The process registry and a server's own collectors, served at one endpoint."""

    def __init__(self, collectors: Sequence[Collector]) -> None:
        self._collectors = tuple(collectors)

    def collect(self) -> Iterator[Metric]:
        for collector in self._collectors:
            yield from collector.collect()


def parse_listen(listen: str, *, field_name: str = "metrics_listen") -> tuple[str, int]:
    """HOST:PORT (an IPv6 host in brackets) as (host, port); ConfigError naming the field."""
    host, sep, port_text = listen.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(
            f"{listen!r} is not HOST:PORT (e.g. 127.0.0.1:9464; port 0: any free port)",
            field=field_name,
        )
    return host, int(port_text)


@dataclass
class MetricsEndpoint:
    """/metrics served over HTTP (plain: bind it to a loopback or monitoring-only address)."""

    host: str
    port: int
    _stop: Callable[[], None]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self._stop()


def serve(listen: str, *, collectors: Sequence[Collector] = ()) -> MetricsEndpoint:
    """Serve the process registry (with `collectors`, a server's own) on HOST:PORT; port 0
    binds any free one (the endpoint's `port` tells which)."""
    host, port = parse_listen(listen)
    registry: Collector = _Union((REGISTRY, *collectors)) if collectors else REGISTRY
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise ConfigError(
            f"cannot serve metrics on {listen}: {exc.strerror}", field="metrics_listen"
        ) from None

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    endpoint = MetricsEndpoint(host, int(server.server_port), stop)
    _log.info("metrics on %s", endpoint.url)
    return endpoint


# --- HTTP (the portal) ------------------------------------------------------------------------

#: the route label of a request no route matched (a scan of random paths adds no series)
UNMATCHED_ROUTE: Final = "unmatched"
_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

_Asgi = Callable[[dict[str, Any], Any, Any], Any]


def route_template(app: Any, scope: dict[str, Any]) -> str:
    """The template of the route that serves `scope` ("/cases/{case_id}", never the path with
    its ids), from a Starlette app's routes; UNMATCHED_ROUTE if none."""
    partial = None
    for route in getattr(app, "routes", ()):
        try:
            match, _ = route.matches(scope)
        except Exception:  # a route that cannot tell is not this request's
            continue
        name = getattr(match, "name", "")
        template = str(getattr(route, "path", "")) or "/"
        if name == "FULL":
            # a mount (static files) serves whatever is under it: its prefix only
            return template if hasattr(route, "endpoint") else template.rstrip("/") + "/*"
        if name == "PARTIAL" and partial is None:
            partial = template
    return partial or UNMATCHED_ROUTE


class HttpMetricsMiddleware:
    """ASGI middleware counting each HTTP request by route template, method and status, and
    observing its latency. The template, not the path: no subject, case or session id becomes a
    label, and an unknown path counts as UNMATCHED_ROUTE."""

    def __init__(self, app: _Asgi, *, routes_of: Any = None) -> None:
        self._app = app
        self._routes_of = routes_of if routes_of is not None else app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self._app(scope, receive, send)
            return
        start = time.perf_counter()
        route = route_template(self._routes_of, scope)
        method = scope.get("method", "")
        method = method if method in _METHODS else OTHER
        status = 500  # the app raised before it answered

        async def counting_send(message: dict[str, Any]) -> None:
            nonlocal status
            if message.get("type") == "http.response.start":
                status = int(message.get("status", 500))
            await send(message)

        try:
            await self._app(scope, receive, counting_send)
        finally:
            HTTP_SECONDS.labels(route, method).observe(time.perf_counter() - start)
            HTTP_REQUESTS.labels(route, method, str(status)).inc()

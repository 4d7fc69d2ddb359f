"""A curious coordinator: the real coordinator in its own process, recording and scanning itself.

Run as a program by tests/integration/test_curious_coordinator.py:

    python curious_coordinator_main.py CONFIG.json

CONFIG.json names the node registry, the coordinator's TLS files, the token issuer's public key,
the consent signing key, the state directory, the departments of the test federation, the
requester's Paillier modulus n (never its factors) and two output files: `ready` (the bound
port, written once serving) and `report`. The coordinator is started with gRPC interceptors
that record every Contribute answer it receives from a node and every response it sends to a
requester. On SIGUSR1 the process scans its own heap for anything that is or holds a Paillier
private key, and writes a JSON report of the scan and of everything recorded. SIGTERM stops it.

`scan_heap` is importable so that a test can run it where a private key does live (a positive
control: a scan that cannot find a key where there is one proves nothing where there is none).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import grpc

from coordinator.server import CoordinatorConfig, start_coordinator
from osmanthus.core.catalogue import load_catalogue
from osmanthus.core.tls import TlsFiles

#: (module, qualified name) of every type that is or holds a Paillier private key
PRIVATE_KEY_TYPES = frozenset(
    {
        ("osmanthus.core.crypto", "PrivateKey"),
        ("phe.paillier", "PaillierPrivateKey"),
        ("sdk.keys", "RequesterKeys"),
    }
)
#: a factor of a 2048- or 3072-bit n has 309-463 decimal digits or 256-384 hex digits
_DIGIT_RUN = re.compile(r"[0-9]{150,}")
_HEX_RUN = re.compile(r"[0-9a-fA-F]{200,}")
#: byte strings of this length range may hold a factor big-endian (128 or 192 bytes)
_FACTOR_BYTES = range(64, 513)


def _numbers_in(obj: object) -> Iterator[int]:
    """Every integer `obj` is or plainly spells: int, gmpy2 mpz, big-endian bytes, digit runs."""
    kind = type(obj)
    if kind is bool:
        return
    if kind is int:
        yield obj  # type: ignore[misc]
    elif kind.__name__ in ("mpz", "xmpz") and kind.__module__ == "gmpy2":
        yield int(obj)  # type: ignore[call-overload]
    elif kind in (bytes, bytearray) and len(obj) in _FACTOR_BYTES:  # type: ignore[arg-type]
        yield int.from_bytes(obj, "big")  # type: ignore[arg-type]
    elif kind is str and len(obj) >= 150:  # type: ignore[arg-type]
        text: str = obj  # type: ignore[assignment]
        for m in _DIGIT_RUN.finditer(text):
            yield int(m.group())
        for m in _HEX_RUN.finditer(text):
            yield int(m.group(), 16)


def _frames_locals() -> Iterator[object]:
    # locals of running frames are not reachable through gc.get_objects() on their own
    for frame in sys._current_frames().values():
        f: Any = frame
        while f is not None:
            yield from list(f.f_locals.values())
            f = f.f_back


def scan_heap(n: int) -> dict[str, Any]:
    """Look through every object this process holds for a private key or a factor of n.

    gc.get_objects() lists container objects only; ints, mpz, bytes and str are found as the
    referents of those containers (instance attributes, dict values, list items, closures) and
    among the locals of every running frame. The result never contains a factor itself.
    """
    gc.collect()
    private_keys: list[str] = []
    factor_hits: list[str] = []
    n_seen = 0
    numbers_checked = 0
    objects = gc.get_objects()

    def check(value: object, holder: object) -> None:
        nonlocal n_seen, numbers_checked
        for v in _numbers_in(value):
            numbers_checked += 1
            if v == n:
                n_seen += 1
            elif 1 < v < n and n % v == 0:
                factor_hits.append(f"{type(value).__name__} in {type(holder).__name__}")

    for obj in objects:
        kind = type(obj)
        if (kind.__module__, kind.__qualname__) in PRIVATE_KEY_TYPES:
            private_keys.append(f"{kind.__module__}.{kind.__qualname__}")
        check(obj, obj)
        for ref in gc.get_referents(obj):
            if not gc.is_tracked(ref):
                check(ref, obj)
    for value in _frames_locals():
        check(value, sys)
    return {
        "objects_scanned": len(objects),
        "numbers_checked": numbers_checked,
        "n_seen": n_seen,
        "private_key_objects": private_keys,
        "factor_hits": factor_hits,
    }


class Capture:
    """Thread-safe record of what the coordinator received from nodes and sent to requesters."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.received: list[dict[str, str]] = []
        self.forwarded: list[dict[str, str]] = []

    def on_received(self, method: str, query_id: str, department: str, ciphertext: bytes) -> None:
        with self._lock:
            self.received.append(
                {
                    "method": method,
                    "query_id": query_id,
                    "department": department,
                    "ciphertext": ciphertext.hex(),
                }
            )

    def on_forwarded(self, method: str, response: bytes) -> None:
        with self._lock:
            self.forwarded.append({"method": method, "response": response.hex()})

    def snapshot(self) -> dict[str, list[dict[str, str]]]:
        with self._lock:
            return {"received": list(self.received), "forwarded": list(self.forwarded)}


def _method_name(method: str | bytes) -> str:
    return method.decode() if isinstance(method, bytes) else method


class NodeCapture(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Records every node answer as it arrives, without changing the call."""

    def __init__(self, capture: Capture) -> None:
        self._capture = capture

    def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Any], client_call_details: Any, request: Any
    ) -> Any:
        outcome = continuation(client_call_details, request)
        method = _method_name(client_call_details.method)
        query_id = str(getattr(request, "query_id", ""))

        def record(done: Any) -> None:
            if done.exception() is None:
                response = done.result()
                self._capture.on_received(
                    method, query_id, response.department, response.ciphertext.value
                )

        outcome.add_done_callback(record)
        return outcome


class ResponseCapture(grpc.ServerInterceptor):  # type: ignore[misc]
    """Records the serialised bytes of every successful response sent to a requester."""

    def __init__(self, capture: Capture) -> None:
        self._capture = capture

    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: Any
    ) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary
        method = _method_name(handler_call_details.method)
        serialise = handler.response_serializer

        def behaviour(request: Any, context: grpc.ServicerContext) -> Any:
            response = inner(request, context)
            wire = serialise(response) if serialise else response.SerializeToString()
            self._capture.on_forwarded(method, wire)
            return response

        return grpc.unary_unary_rpc_method_handler(
            behaviour,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _restricted_catalogue(departments: Iterable[str]) -> Any:
    wanted = set(departments)
    full = load_catalogue()
    return dataclasses.replace(
        full, departments=tuple(d for d in full.departments if d.id in wanted)
    )


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: curious_coordinator_main.py CONFIG.json", file=sys.stderr)
        return 2
    config = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    n = int(config["modulus"])
    capture = Capture()
    running = start_coordinator(
        CoordinatorConfig(
            nodes=Path(config["nodes"]),
            tls=TlsFiles(ca=Path(config["ca"]), cert=Path(config["cert"]), key=Path(config["key"])),
            issuer_public_key=Path(config["issuer_public_key"]),
            state_dir=Path(config["state_dir"]),
            deadline_s=float(config["deadline_s"]),
            # the platform's consent key: the nodes verify this coordinator's receipts with it
            consent_key=Path(config["consent_key"]),
        ),
        node_interceptors=[NodeCapture(capture)],
        server_interceptors=[ResponseCapture(capture)],
        catalogue=_restricted_catalogue(config["departments"]),
    )
    scan = threading.Event()
    stop = threading.Event()
    signal.signal(signal.SIGUSR1, lambda _s, _f: scan.set())
    signal.signal(signal.SIGTERM, lambda _s, _f: stop.set())
    _write_atomically(Path(config["ready"]), f"{running.port}\n")
    try:
        while not stop.is_set():
            if scan.wait(0.05):
                scan.clear()
                report = {**scan_heap(n), **capture.snapshot()}
                _write_atomically(Path(config["report"]), json.dumps(report))
    finally:
        running.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Client side of the coordinator: one mTLS channel per department node and concurrent fan-out."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import grpc

from coordinator.config import NodeEndpoint
from osmanthus.core.errors import (
    ConfigError,
    DeadlineExceeded,
    OsmanthusError,
    PermissionDenied,
    Unavailable,
)
from osmanthus.core.grpc_errors import error_from_rpc
from osmanthus.core.tls import TlsFiles, node_server_name, secure_channel
from osmanthus.core.tokens import bearer_metadata
from osmanthus.core.types import DepartmentId
from osmanthus.core.wire.lists import (
    ChangesQuery,
    PublicQuery,
    changes_query_to_proto,
    public_query_to_proto,
)
from osmanthus.core.wire.node import (
    ChunkRequest,
    ChunkResult,
    ContributionRequest,
    ContributionResult,
    StatsRequest,
    StatsResult,
    chunk_request_to_proto,
    chunk_result_from_proto,
    contribution_request_to_proto,
    contribution_result_from_proto,
    stats_request_to_proto,
    stats_result_from_proto,
)
from osmanthus.v1 import lists_pb2, node_pb2_grpc

_log = logging.getLogger(__name__)


class _Answer(Protocol):
    @property
    def department(self) -> DepartmentId: ...


R = TypeVar("R", bound=_Answer)

# reconnect quickly after a node restarts, instead of grpc's default backoff of up to 2 minutes
_CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
)


@dataclass(frozen=True)
class PublicEntriesAnswer:
    """One department's page of public list entries, as its node sent them (unchecked)."""

    department: DepartmentId
    entries: tuple[lists_pb2.PublicEntry, ...]
    next_page_token: str


@dataclass(frozen=True)
class ListChangesAnswer:
    """One department's page of its list change feed, as its node sent it (unchecked)."""

    #: the department the node answered as
    department: DepartmentId
    message: lists_pb2.ListChangesResponse


@dataclass(frozen=True)
class NodeFailure:
    department: DepartmentId
    reason: str
    #: the node's error, when it answered with one
    error: OsmanthusError | None = None


def _failure_reason(exc: grpc.RpcError, deadline_s: float) -> str:
    """Why a department is missing, in words for the requester's coverage list."""
    error = error_from_rpc(exc)
    if isinstance(error, DeadlineExceeded):
        return f"no answer within the {deadline_s:g} s deadline"
    if isinstance(error, Unavailable):
        return (
            "unavailable: node down, unreachable or failed the TLS identity check "
            f"({error.message})"
        )
    if isinstance(error, PermissionDenied):
        return f"refused by the department: {error}"
    return f"{type(error).__name__}: {error}"


class NodePool:
    def __init__(
        self,
        endpoints: Sequence[NodeEndpoint],
        *,
        tls: TlsFiles,
        interceptors: Sequence[grpc.UnaryUnaryClientInterceptor] = (),
    ) -> None:
        self._stubs: dict[DepartmentId, node_pb2_grpc.NodeServiceStub] = {}
        self._channels: list[grpc.Channel] = []
        for endpoint in endpoints:
            channel = secure_channel(
                endpoint.address,
                tls,
                server_name=node_server_name(endpoint.department),
                options=_CHANNEL_OPTIONS,
            )
            if interceptors:
                channel = grpc.intercept_channel(channel, *interceptors)
            self._channels.append(channel)
            self._stubs[endpoint.department] = node_pb2_grpc.NodeServiceStub(channel)
        # Blocking calls from a pool: grpc's .future() starts a polling thread per channel for
        # each burst of calls, which cost more than the calls themselves with 22 nodes
        self._callers = ThreadPoolExecutor(
            max_workers=max(4, 2 * len(self._stubs)), thread_name_prefix="osmanthus-fanout"
        )
        # batch chunks take seconds each: on their own threads, single queries never queue
        # behind them
        self._chunk_callers = ThreadPoolExecutor(
            max_workers=max(4, 2 * len(self._stubs)), thread_name_prefix="osmanthus-chunks"
        )

    @property
    def departments(self) -> frozenset[DepartmentId]:
        return frozenset(self._stubs)

    def contribute_all(
        self,
        departments: Sequence[DepartmentId],
        request: ContributionRequest,
        *,
        token: str,
        deadline_s: float,
    ) -> tuple[list[ContributionResult], list[NodeFailure]]:
        """Ask every department at once; each call is bounded by the same deadline."""
        return self._fan_out(
            self._callers,
            departments,
            "Contribute",
            contribution_request_to_proto(request),
            contribution_result_from_proto,
            token=token,
            deadline_s=deadline_s,
        )

    def contribute_chunk_all(
        self,
        departments: Sequence[DepartmentId],
        request: ChunkRequest,
        *,
        token: str,
        deadline_s: float,
    ) -> tuple[list[ChunkResult], list[NodeFailure]]:
        """One batch chunk to every department at once, under one deadline."""
        return self._fan_out(
            self._chunk_callers,
            departments,
            "ContributeChunk",
            chunk_request_to_proto(request),
            chunk_result_from_proto,
            token=token,
            deadline_s=deadline_s,
        )

    def contribute_stats_all(
        self,
        departments: Sequence[DepartmentId],
        request: StatsRequest,
        *,
        token: str,
        deadline_s: float,
    ) -> tuple[list[StatsResult], list[NodeFailure]]:
        """A STATS cohort to every department at once (on the long-call threads)."""
        return self._fan_out(
            self._chunk_callers,
            departments,
            "ContributeStats",
            stats_request_to_proto(request),
            stats_result_from_proto,
            token=token,
            deadline_s=deadline_s,
        )

    def public_entries_each(
        self,
        requests: Sequence[tuple[DepartmentId, PublicQuery]],
        *,
        deadline_s: float,
    ) -> tuple[list[PublicEntriesAnswer], list[NodeFailure]]:
        """Each department its own public-list request (its own page token), all at once.

        No requester token goes with them: the entries are public, the node serves them to the
        coordinator's certificate alone, and the coordinator audits who asked.
        """
        return self._fan_out_each(
            self._callers,
            [(dept, public_query_to_proto(query)) for dept, query in requests],
            "PublicEntries",
            lambda dept, message: PublicEntriesAnswer(
                department=dept,
                entries=tuple(message.entries),
                next_page_token=message.next_page_token,
            ),
            token=None,
            deadline_s=deadline_s,
        )

    def list_changes(
        self,
        department: DepartmentId,
        query: ChangesQuery,
        *,
        deadline_s: float,
    ) -> ListChangesAnswer | NodeFailure:
        """One department's change feed page, or why it did not come.

        No requester token goes with it, as with the public entries: the node serves the
        coordinator's certificate alone, and the request names the requester for its audit.
        """
        answers, failures = self._fan_out_each(
            self._callers,
            [(department, changes_query_to_proto(query))],
            "ListChanges",
            lambda _, message: ListChangesAnswer(
                department=DepartmentId(message.department), message=message
            ),
            token=None,
            deadline_s=deadline_s,
        )
        return answers[0] if answers else failures[0]

    def _fan_out(
        self,
        callers: ThreadPoolExecutor,
        departments: Sequence[DepartmentId],
        method: str,
        message: Any,
        convert: Callable[[Any], R],
        *,
        token: str,
        deadline_s: float,
    ) -> tuple[list[R], list[NodeFailure]]:
        return self._fan_out_each(
            callers,
            [(dept, message) for dept in departments],
            method,
            lambda _, answer: convert(answer),
            token=token,
            deadline_s=deadline_s,
        )

    def _fan_out_each(
        self,
        callers: ThreadPoolExecutor,
        requests: Sequence[tuple[DepartmentId, Any]],
        method: str,
        convert: Callable[[DepartmentId, Any], R],
        *,
        token: str | None,
        deadline_s: float,
    ) -> tuple[list[R], list[NodeFailure]]:
        metadata = bearer_metadata(token) if token is not None else ()
        pending = []
        for dept, message in requests:
            stub = self._stubs.get(dept)
            if stub is None:
                raise ConfigError(f"no node registered for department {dept!r}", field="nodes")
            call = functools.partial(
                getattr(stub, method), message, timeout=deadline_s, metadata=metadata
            )
            pending.append((dept, callers.submit(call)))
        answers: list[R] = []
        failures: list[NodeFailure] = []
        for dept, future in pending:
            try:
                answer = convert(dept, future.result())
            except grpc.RpcError as exc:
                failures.append(
                    NodeFailure(dept, _failure_reason(exc, deadline_s), error_from_rpc(exc))
                )
                continue
            if answer.department != dept:
                failures.append(
                    NodeFailure(dept, f"answered as department {answer.department!r}; discarded")
                )
                continue
            answers.append(answer)
        return answers, failures

    def close(self) -> None:
        self._callers.shutdown(wait=False, cancel_futures=True)
        self._chunk_callers.shutdown(wait=False, cancel_futures=True)
        for channel in self._channels:
            channel.close()

"""Client side of the coordinator: one mTLS channel per department node and concurrent fan-out."""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol, TypeVar

import grpc

from coordinator.config import NodeEndpoint
from osmanthus.core.channelz import CHANNEL_OPTIONS, ChannelCertificates, Connection
from osmanthus.core.consent_feed import RevocationsBehind, Staple
from osmanthus.core.crl import PeerRevocation
from osmanthus.core.crypto import fingerprint_of_modulus
from osmanthus.core.errors import (
    ConfigError,
    DeadlineExceeded,
    KeyProofRequired,
    OsmanthusError,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from osmanthus.core.grpc_errors import error_from_rpc, error_info, error_reason
from osmanthus.core.tls import TlsFiles, node_server_name, secure_channel
from osmanthus.core.tokens import bearer_metadata
from osmanthus.core.types import DepartmentId, KeyFingerprint
from osmanthus.core.wire.cases import FileCaseRequest, node_file_case_to_proto
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
    SealedPart,
    StatsRequest,
    StatsResult,
    SubjectFileQuery,
    chunk_request_to_proto,
    chunk_result_from_proto,
    contribution_request_to_proto,
    contribution_result_from_proto,
    sealed_part_from_proto,
    stats_request_to_proto,
    stats_result_from_proto,
    subject_file_query_to_proto,
)
from osmanthus.core.wire.transparency import TRANSPARENCY_RECEIVE_BYTES
from osmanthus.v1 import cases_pb2, lists_pb2, node_pb2_grpc, transparency_pb2_grpc

_log = logging.getLogger(__name__)


class _Answer(Protocol):
    @property
    def department(self) -> DepartmentId: ...


R = TypeVar("R", bound=_Answer)
Q = TypeVar("Q", ChunkRequest, ContributionRequest, StatsRequest)

#: keys per node whose proof the pool remembers the node has verified (oldest forgotten first);
#: a forgotten key costs one ~22 KB proof sent again, never a refusal
PROVEN_KEYS_PER_NODE: Final = 4096


class RevocationStapler(Protocol):
    """The consent registry as the node pool uses it (coordinator.consent.ConsentRegistry)."""

    @property
    def feed_id(self) -> str: ...

    def revocation_staple(self, now: datetime, *, known: int) -> Staple: ...


#: the ErrorInfo reason of a node that lacks revocation entries (consent_feed.RevocationsBehind)
REVOCATIONS_BEHIND: Final = error_reason(RevocationsBehind)
#: requests one Contribute may take to bring a node up to date with the revocation feed, all
#: within the query's deadline: one is enough unless the node lacks more entries than one
#: request carries. A node further behind keeps each page it verified (under a checkpoint),
#: so it catches up over several queries; each round reads a page under the registry's lock
MAX_CATCH_UP_ROUNDS: Final = 20
#: rounds in which a node takes less than the whole page it was sent: a node that creeps
#: forward one entry at a time is not served page after page
MAX_SLOW_CATCH_UP_ROUNDS: Final = 2

# reconnect quickly after a node restarts, instead of grpc's default backoff of up to 2 minutes;
# the channel also relays the nodes' transparency logs, so it receives what the SDK's
# TransparencyClient does (a page of entries can exceed grpc's default 4 MiB)
_CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.max_receive_message_length", TRANSPARENCY_RECEIVE_BYTES),
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
class SubjectFileAnswer:
    """One department's sealed part of a subject's file, as its node sent it (unopened: the
    coordinator has no key to open it with)."""

    #: the department the node answered as (the part's source)
    department: DepartmentId
    part: SealedPart


@dataclass(frozen=True)
class FileCaseAnswer:
    """A department's receipt for a case filed at its node, as the node sent it (unchecked)."""

    #: the department the node answered as
    department: DepartmentId
    message: cases_pb2.CaseReceipt


class NodeRevoked(Unauthenticated):
    """The node presented a certificate that the platform CA's CRL revokes, or one that could
    not be checked against it (fail closed)."""


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
        revocation: PeerRevocation | None = None,
        key_proofs: Callable[[KeyFingerprint], bytes] = lambda _: b"",
    ) -> None:
        """`revocation`: the platform CA's CRL; a node whose connection presents a certificate it
        revokes is asked nothing (its department fails as revoked).

        `key_proofs`: a registered key's modulus proof by fingerprint (the key registry's
        `modulus_proof`), attached to a request for each node not yet known to have verified
        that key.
        """
        self._key_proofs = key_proofs
        # per department, the keys its node answered a request under: it has verified them
        self._proven: dict[DepartmentId, OrderedDict[KeyFingerprint, None]] = {}
        self._proven_lock = threading.Lock()
        self._stubs: dict[DepartmentId, node_pb2_grpc.NodeServiceStub] = {}
        #: each node's TransparencyService, on the same channel (relayed audit log reads)
        self._logs: dict[DepartmentId, transparency_pb2_grpc.TransparencyServiceStub] = {}
        self._channels: list[grpc.Channel] = []
        self._warming: list[grpc.Future[None]] = []
        self._revocation = revocation
        # per department: its channel before interceptors, and the certificates it connected to
        self._watched: dict[DepartmentId, tuple[grpc.Channel, ChannelCertificates]] = {}
        self._reported: set[tuple[DepartmentId, int]] = set()
        for endpoint in endpoints:
            make = functools.partial(
                secure_channel,
                endpoint.address,
                tls,
                server_name=node_server_name(endpoint.department),
                options=(*_CHANNEL_OPTIONS, *CHANNEL_OPTIONS),
            )
            if revocation is None:
                channel = make()
            else:
                # grpc's handshake takes no CRL: the certificate each connection presented is
                # read from channelz and checked around every call (_check_certificate)
                try:
                    channel, certificates = ChannelCertificates.of_new_channel(
                        make, target=endpoint.address
                    )
                except ConfigError:
                    for made in self._channels:
                        made.close()
                    raise
                self._watched[endpoint.department] = (channel, certificates)
            # connect now rather than on the first request: the TLS handshakes with every node
            # happen while the coordinator is idle, not inside the first requester's deadline
            self._warming.append(grpc.channel_ready_future(channel))
            if interceptors:
                channel = grpc.intercept_channel(channel, *interceptors)
            self._channels.append(channel)
            self._stubs[endpoint.department] = node_pb2_grpc.NodeServiceStub(channel)
            self._logs[endpoint.department] = transparency_pb2_grpc.TransparencyServiceStub(channel)
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
        # per department: how many revocation feed entries its node has verified, as far as
        # this coordinator knows (a node says so when it has fewer)
        self._acknowledged: dict[tuple[DepartmentId, str], int] = {}
        self._acknowledged_lock = threading.Lock()

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
        staple: RevocationStapler | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> tuple[list[ContributionResult], list[NodeFailure]]:
        """Ask every department at once; each call is bounded by the same deadline.

        With `staple` (a query under a consent) each node's request carries the registry's
        revocation head and the entries that node has not acknowledged; a node that lacks
        more is sent the rest, within the same deadline (consent_feed). Each node not known
        to have verified the requester's key gets its modulus proof too (`_proven_fan_out`).
        """
        if staple is None:
            return self._proven_fan_out(
                departments,
                request,
                lambda pairs: self._fan_out_each(
                    self._callers,
                    _converted(pairs, contribution_request_to_proto),
                    "Contribute",
                    lambda _, answer: contribution_result_from_proto(answer),
                    token=token,
                    deadline_s=deadline_s,
                ),
            )
        if clock is None:
            raise ConfigError("a stapled request needs the coordinator's clock", field="clock")
        stapler, now = staple, clock
        return self._proven_fan_out(
            departments,
            request,
            lambda pairs: self._fan_out_each(
                self._callers,
                pairs,
                "Contribute",
                lambda _, answer: contribution_result_from_proto(answer),
                token=token,
                deadline_s=deadline_s,
                call=lambda dept, stub, message, metadata: self._contribute_stapled(
                    dept, stub, message, stapler, now, metadata=metadata, deadline_s=deadline_s
                ),
            ),
        )

    def _contribute_stapled(
        self,
        dept: DepartmentId,
        stub: node_pb2_grpc.NodeServiceStub,
        request: ContributionRequest,
        stapler: RevocationStapler,
        clock: Callable[[], datetime],
        *,
        metadata: Any,
        deadline_s: float,
    ) -> Any:
        """One node's Contribute with the revocation staple, sending the entries it lacks."""
        ends = time.monotonic() + deadline_s
        feed = stapler.feed_id
        with self._acknowledged_lock:
            known = self._acknowledged.get((dept, feed), 0)
        slow = 0
        last: grpc.RpcError | None = None
        for _ in range(MAX_CATCH_UP_ROUNDS):
            if last is not None and time.monotonic() >= ends:
                break  # the catch-up stays within the query's deadline
            staple = stapler.revocation_staple(clock(), known=known)
            message = contribution_request_to_proto(
                dataclasses.replace(
                    request, revocation_head=staple.head, revocations=staple.revocations
                )
            )
            try:
                answer = stub.Contribute(
                    message, timeout=max(0.001, ends - time.monotonic()), metadata=metadata
                )
            except grpc.RpcError as exc:
                has = _revocations_held(exc, feed)
                # another refusal, or a node that claims more entries than the feed has
                if has is None or has > staple.size:
                    raise
                # again only while the node makes progress, and only a few times unless it
                # takes every entry it is sent; the first answer may say it holds less than
                # this pool thought (it was restored), which is no reason to give up
                if last is not None and has <= known:
                    raise
                if has < staple.size and not (last is None and has < known):
                    slow += 1
                    if slow > MAX_SLOW_CATCH_UP_ROUNDS:
                        raise
                known = has
                last = exc
                # what it keeps (a page under a checkpoint) is where the next query starts
                with self._acknowledged_lock:
                    self._acknowledged[dept, feed] = has
                continue
            with self._acknowledged_lock:
                self._acknowledged[dept, feed] = max(
                    staple.size, self._acknowledged.get((dept, feed), 0)
                )
            return answer
        # the node still lacks entries after every round: its last refusal says so
        assert last is not None
        raise last

    def contribute_chunk_all(
        self,
        departments: Sequence[DepartmentId],
        request: ChunkRequest,
        *,
        token: str,
        deadline_s: float,
    ) -> tuple[list[ChunkResult], list[NodeFailure]]:
        """One batch chunk to every department at once, under one deadline."""
        return self._proven_fan_out(
            departments,
            request,
            lambda pairs: self._fan_out_each(
                self._chunk_callers,
                _converted(pairs, chunk_request_to_proto),
                "ContributeChunk",
                lambda _, answer: chunk_result_from_proto(answer),
                token=token,
                deadline_s=deadline_s,
            ),
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
        return self._proven_fan_out(
            departments,
            request,
            lambda pairs: self._fan_out_each(
                self._chunk_callers,
                _converted(pairs, stats_request_to_proto),
                "ContributeStats",
                lambda _, answer: stats_result_from_proto(answer),
                token=token,
                deadline_s=deadline_s,
            ),
        )

    def subject_files_all(
        self,
        departments: Sequence[DepartmentId],
        query: SubjectFileQuery,
        *,
        token: str,
        deadline_s: float,
    ) -> tuple[list[SubjectFileAnswer], list[NodeFailure]]:
        """A subject's file from every department at once, each part sealed by its node to the
        key in `query`. The requester's token goes along: each node verifies it, and that the
        key is the one its seal_fp claim names, itself."""
        message = subject_file_query_to_proto(query)
        return self._fan_out_each(
            self._callers,
            [(dept, message) for dept in departments],
            "SubjectFile",
            lambda _, message: SubjectFileAnswer(
                department=DepartmentId(message.source), part=sealed_part_from_proto(message)
            ),
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

    def file_case(
        self,
        department: DepartmentId,
        request: FileCaseRequest,
        *,
        token: str,
        deadline_s: float,
    ) -> FileCaseAnswer | NodeFailure:
        """A subject's sealed case to `department`'s node alone, or why it was not taken.

        The requester's token goes along: the node verifies it (role portal, purpose
        self_query) itself. The node's certificate is checked as for every call (server name,
        and the CRL in force); a refusal comes back as the node's own error in the failure.
        """
        answers, failures = self._fan_out_each(
            self._callers,
            [(department, node_file_case_to_proto(request))],
            "FileCase",
            lambda _, message: FileCaseAnswer(
                department=DepartmentId(message.department), message=message
            ),
            token=token,
            deadline_s=deadline_s,
        )
        return answers[0] if answers else failures[0]

    def transparency_call(
        self, department: DepartmentId, method: str, request: Any, *, deadline_s: float
    ) -> Any:
        """One TransparencyService call (`method`, a request message) to `department`'s node,
        with the coordinator's certificate and no token; the node's refusal comes back as its
        own error (Unavailable when it cannot be reached), the node's certificate checked as
        for every call."""
        stub = self._logs.get(department)
        if stub is None:
            raise ConfigError(f"no node is configured for department {department!r}")
        try:
            return self._checked_call(
                department,
                lambda: getattr(stub, method)(request, timeout=deadline_s),
                deadline_s,
            )
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
        except NodeRevoked as exc:
            raise Unavailable(f"department {department!r}: {exc.message}") from None

    def _proven_fan_out(
        self,
        departments: Sequence[DepartmentId],
        request: Q,
        send: Callable[[list[tuple[DepartmentId, Q]]], tuple[list[R], list[NodeFailure]]],
    ) -> tuple[list[R], list[NodeFailure]]:
        """`send` a request under a requester's key to every department, with the key's
        modulus proof for each node not yet known to have verified it.

        A node verifies a key's proof once and remembers it (`keyproof.ProvenKeys`); this pool
        remembers which nodes have answered under which key, so the ~22 KB proof goes to each
        node once rather than with every request. A node that has forgotten (it restarted)
        answers KEY_PROOF_REQUIRED and is asked once more with the proof, under a fresh
        deadline.
        """
        fingerprint = fingerprint_of_modulus(int.from_bytes(request.public_key, "big"))
        proven_request: list[Q] = []

        def with_proof() -> Q:
            if not proven_request:
                proof = self._key_proofs(fingerprint)
                proven_request.append(dataclasses.replace(request, modulus_proof=proof))
            return proven_request[0]

        answers: list[R]
        failures: list[NodeFailure]
        answers, failures = send(
            [
                (dept, request if self._has_proven(dept, fingerprint) else with_proof())
                for dept in departments
            ]
        )
        forgot = [f.department for f in failures if isinstance(f.error, KeyProofRequired)]
        if forgot:
            _log.info("sending key %s… with its proof again to %s", fingerprint[:16], forgot)
            for dept in forgot:
                self._forget_proven(dept, fingerprint)
            more: list[R]
            more, failed_again = send([(dept, with_proof()) for dept in forgot])
            failures = [f for f in failures if f.department not in forgot] + failed_again
            order = {dept: i for i, dept in enumerate(departments)}
            answers = sorted([*answers, *more], key=lambda a: order.get(a.department, len(order)))
        for answer in answers:
            self._remember_proven(answer.department, fingerprint)
        return answers, failures

    def _has_proven(self, department: DepartmentId, fingerprint: KeyFingerprint) -> bool:
        with self._proven_lock:
            known = self._proven.get(department)
            if known is None or fingerprint not in known:
                return False
            known.move_to_end(fingerprint)
            return True

    def _remember_proven(self, department: DepartmentId, fingerprint: KeyFingerprint) -> None:
        with self._proven_lock:
            known = self._proven.setdefault(department, OrderedDict())
            known[fingerprint] = None
            known.move_to_end(fingerprint)
            while len(known) > PROVEN_KEYS_PER_NODE:
                known.popitem(last=False)

    def _forget_proven(self, department: DepartmentId, fingerprint: KeyFingerprint) -> None:
        with self._proven_lock:
            known = self._proven.get(department)
            if known is not None:
                known.pop(fingerprint, None)

    def _fan_out_each(
        self,
        callers: ThreadPoolExecutor,
        requests: Sequence[tuple[DepartmentId, Any]],
        method: str,
        convert: Callable[[DepartmentId, Any], R],
        *,
        token: str | None,
        deadline_s: float,
        call: Callable[[DepartmentId, Any, Any, Any], Any] | None = None,
    ) -> tuple[list[R], list[NodeFailure]]:
        """`call(department, stub, message, metadata)`, when given, makes each call instead of
        the stub's `method` (a Contribute that may take several requests)."""
        metadata = bearer_metadata(token) if token is not None else ()
        pending = []
        for dept, message in requests:
            stub = self._stubs.get(dept)
            if stub is None:
                raise ConfigError(f"no node registered for department {dept!r}", field="nodes")
            one = (
                functools.partial(call, dept, stub, message, metadata)
                if call is not None
                else functools.partial(
                    getattr(stub, method), message, timeout=deadline_s, metadata=metadata
                )
            )
            if dept in self._watched:
                one = functools.partial(self._checked_call, dept, one, deadline_s)
            pending.append((dept, callers.submit(one)))
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
            except NodeRevoked as exc:
                failures.append(NodeFailure(dept, f"refused: {exc.message}", exc))
                continue
            if answer.department != dept:
                failures.append(
                    NodeFailure(dept, f"answered as department {answer.department!r}; discarded")
                )
                continue
            answers.append(answer)
        return answers, failures

    def _checked_call(self, dept: DepartmentId, call: Callable[[], Any], deadline_s: float) -> Any:
        """`call` to `dept`'s node, refused (NodeRevoked) unless it travelled on a connection
        whose certificate was checked against the CRL before the request went out.

        Fails closed: a node whose certificate cannot be seen (no live connection after
        connecting, within the deadline or after the call) is refused, and so is an answer that
        came over a connection other than the ones checked (one made and closed in between, as a
        revoked node or someone on the network replacing the connection would). channelz counts
        the streams (calls) started on each connection: one of the checked connections must
        still be live after the call and have started a stream since it was checked.
        """
        checked = self._check_certificate(dept, connect_within=deadline_s)
        answer = call()
        if checked is None:
            return answer  # no CRL in force
        after = self._check_certificate(dept, connect_within=None) or {}
        carried = any(
            socket_id in after and after[socket_id].streams_started > connection.streams_started
            for socket_id, connection in checked.items()
        )
        if not carried:
            raise self._unverifiable(
                dept,
                "the answer did not come over a connection whose certificate was checked (the "
                "connection was replaced or closed during the call); answer discarded",
            )
        return answer

    def _check_certificate(
        self, dept: DepartmentId, *, connect_within: float | None
    ) -> dict[int, Connection] | None:
        """The live connections to `dept`'s node, each presenting a certificate that the CRL in
        force does not revoke; None when no CRL is in force. Connects first when
        `connect_within` is given, so that no request leaves before the certificate of the
        server it goes to has been seen. Raises NodeRevoked otherwise."""
        revocation = self._revocation
        if revocation is None or not revocation.lists_any:
            return None
        channel, certificates = self._watched[dept]
        connections = certificates.connections()
        if not connections and connect_within is not None:
            try:
                grpc.channel_ready_future(channel).result(timeout=connect_within)
            except grpc.FutureTimeoutError:
                raise self._unverifiable(
                    dept, f"no connection to its node within {connect_within:g} s"
                ) from None
            connections = certificates.connections()
        if not connections:
            # connected, yet no live connection to read: the server closed it straight away
            raise self._unverifiable(dept, "its node closed the connection before it was read")
        for connection in connections.values():
            if connection.serial is None:
                raise self._unverifiable(
                    dept, "the certificate of its node cannot be read from the connection"
                )
            problem = revocation.refusal(
                connection.serial, whose=f"the node certificate of {dept!r}"
            )
            if problem is not None:
                if (dept, connection.serial) not in self._reported:
                    self._reported.add((dept, connection.serial))
                    _log.warning("department %s not asked: %s", dept, problem)
                raise NodeRevoked(problem)
        return connections

    @staticmethod
    def _unverifiable(dept: DepartmentId, why: str) -> NodeRevoked:
        _log.warning("department %s not asked: certificate not verifiable: %s", dept, why)
        return NodeRevoked(
            f"certificate revoked or not verifiable: {why}, so department {dept!r}'s node "
            "cannot be checked against the CRL"
        )

    def close(self) -> None:
        self._callers.shutdown(wait=False, cancel_futures=True)
        self._chunk_callers.shutdown(wait=False, cancel_futures=True)
        for warming in self._warming:
            warming.cancel()
        for channel in self._channels:
            channel.close()


def _converted(
    pairs: Sequence[tuple[DepartmentId, Q]], to_proto: Callable[[Q], Any]
) -> list[tuple[DepartmentId, Any]]:
    """Each department's request as a proto message, each distinct request converted once."""
    messages: dict[int, Any] = {}
    out = []
    for dept, request in pairs:
        if id(request) not in messages:
            messages[id(request)] = to_proto(request)
        out.append((dept, messages[id(request)]))
    return out


def _revocations_held(exc: grpc.RpcError, feed: str) -> int | None:
    """How many entries of `feed` a node that refused with REVOCATIONS_BEHIND holds; None if
    the refusal is another one."""
    reason, metadata = error_info(exc)
    if reason != REVOCATIONS_BEHIND or metadata.get("feed") != feed:
        return None
    held = metadata.get("sequence", "")
    return int(held) if held.isdigit() and len(held) < 16 else None

"""The largest message each server accepts, filled with one repeated field, is answered at once.

A 1 MiB message holds ~170,000 short strings (a million small integers). Every repeated request
field of every RPC is capped at its natural size (the catalogue's departments, measures and
slots; a chunk's, a cohort's or a publication's most entries) before any other work, and a
caller without the permission is refused before any entry is read. Each case below sends the
largest message the server takes (just under the 1 MiB receive limit), filled with one field,
and asserts the right refusal (INVALID_ARGUMENT naming the field and its cap, or
PERMISSION_DENIED) in a time bounded by the same RPC's minimal request measured in the same run:
at most RATIO times the median of MINIMAL_CALLS minimal calls, plus FLOOR_S. Before the caps, an
EnterpriseQuery of 20,000 departments held a worker for 5 s (a quadratic duplicate check ahead of
the central policy); the messages here, checked that way, would take hours.

Real servers over mutual TLS: the session federation's coordinator and court node, the court's
list office, and a provincial receiver of this module's own.
"""

from __future__ import annotations

import dataclasses
import datetime
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message

from certs import PeerRole, cert_paths, issue_certificate
from osmanthus.core import signing
from osmanthus.core.consent_feed import MAX_STAPLED_REVOCATIONS
from osmanthus.core.encoding import SlotLayout
from osmanthus.core.grpc_errors import error_from_rpc
from osmanthus.core.ids import make_resident_id
from osmanthus.core.lists import MAX_ENTRIES_PER_PUBLISH
from osmanthus.core.peers import PROVINCE_SERVER_NAME
from osmanthus.core.server import RunningServer
from osmanthus.core.tls import COORDINATOR_SERVER_NAME, TlsFiles, node_server_name, secure_channel
from osmanthus.core.types import Role, Shape, SubjectKind
from osmanthus.core.wire import MAX_RECEIVE_BYTES
from osmanthus.core.wire.common import RequestLimits
from osmanthus.core.wire.node import MAX_CHUNK_SUBJECTS, MAX_COHORT
from osmanthus.v1 import (
    common_pb2,
    coordinator_pb2,
    lists_pb2,
    node_pb2,
    province_pb2,
)
from province.server import ProvinceConfig, start_province
from tests.integration.conftest import Federation

#: a refusal of the largest message takes at most RATIO × the minimal request's median, plus
#: FLOOR_S (the 1 MiB itself: sent over TLS, parsed, its field's length read)
RATIO = 20.0
FLOOR_S = 0.5
MINIMAL_CALLS = 5
#: what a message may hold besides the field (gRPC counts the serialized message only)
SLACK_BYTES = 64
#: a call that breaks the bound is failed at this deadline instead of hanging the test
DEADLINE_S = 60.0

LIBRARY = "library-1"
AGENCY = "agency-1"
SYNC = "sync-1"
COURT = "court"
#: the library is granted none of EnterpriseQuery, StatsQuery and BatchQuery by the central
#: policy; its token names their purposes, so the policy (not the token) refuses it
LIBRARY_PURPOSES = ("deposit_waiver", "statistics", "credit_rescoring", "loan_underwriting")


# --- the messages ------------------------------------------------------------------------------


def _short_ids() -> Iterator[str]:
    """Distinct 4-character strings: 6 bytes each on the wire."""
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
    for a in alphabet:
        for b in alphabet:
            for c in alphabet:
                for d in alphabet:
                    yield a + b + c + d


def filled(message: Any, path: str, entry: Callable[[int], Any] | None = None) -> Any:
    """`message` with the repeated field at `path` ("chunk.subject_ids") appended to until the
    message is just under MAX_RECEIVE_BYTES; `entry(i)` makes entry i (distinct short strings
    by default; empty messages for a field of messages)."""
    *parents, name = path.split(".")
    holder = message
    for parent in parents:
        holder = getattr(holder, parent)
    field = getattr(holder, name)
    ids = _short_ids()
    make = entry or (lambda _: next(ids))

    def append(count: int) -> None:
        if hasattr(field, "add"):
            for _ in range(count):
                field.add()
        else:
            field.extend(make(len(field) + i) for i in range(count))

    target = MAX_RECEIVE_BYTES - SLACK_BYTES
    empty = message.ByteSize()
    append(64)
    per_entry = (message.ByteSize() - empty) / 64
    # the estimate is close, not exact (a packed field's or a submessage's length prefix
    # grows with it): converge from both sides
    while not target - SLACK_BYTES < (size := message.ByteSize()) <= target:
        if size > target:
            del field[-max(1, int((size - target) / per_entry)) :]
        else:
            append(max(1, int((target - size) / per_entry) - 1))
    return message


def resident_ids(count: int) -> list[str]:
    """`count` distinct valid resident ids (18 characters, 20 bytes each on the wire)."""
    start = datetime.date(1960, 1, 1)
    return [
        make_resident_id(
            region="320505", birth=start + datetime.timedelta(days=i // 900), sequence=i % 900
        )
        for i in range(count)
    ]


# --- the servers and callers -------------------------------------------------------------------


@dataclasses.dataclass
class Caller:
    """One certificate's channel to one server, with the token its calls carry (if any)."""

    channel: grpc.Channel
    token: str | None

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def unary(self, method: str, message: Message, response: type[Message]) -> grpc.Call | None:
        """The failed call (None if it succeeded)."""
        rpc = self.channel.unary_unary(
            method,
            request_serializer=type(message).SerializeToString,
            response_deserializer=response.FromString,
        )
        try:
            rpc(message, metadata=self.metadata(), timeout=DEADLINE_S)
        except grpc.RpcError as exc:
            assert isinstance(exc, grpc.Call)
            return exc
        return None

    def stream(self, method: str, messages: list[Message]) -> grpc.Call | None:
        rpc = self.channel.stream_stream(
            method,
            request_serializer=type(messages[0]).SerializeToString,
            response_deserializer=coordinator_pb2.BatchQueryResponse.FromString,
        )
        try:
            list(rpc(iter(messages), metadata=self.metadata(), timeout=DEADLINE_S))
        except grpc.RpcError as exc:
            assert isinstance(exc, grpc.Call)
            return exc
        return None


@pytest.fixture(scope="module")
def receiver(
    tmp_path_factory: pytest.TempPathFactory, platform_certs: Path
) -> Iterator[RunningServer]:
    """A provincial receiver whose one sender delivers with sync-1's certificate."""
    directory = tmp_path_factory.mktemp("bounds-province")
    tls = TlsFiles.from_cert_paths(
        issue_certificate(platform_certs, role=PeerRole.NODE, name="province", out_dir=directory)
    )
    signing.write_key_pair(directory / "keys", "suzhou-sync", what="sender key")
    senders = directory / "senders.toml"
    senders.write_text(
        '[[sender]]\nid = "suzhou"\npublic_keys = ["keys/suzhou-sync.pub"]\n'
        'certificates = ["sync-1"]\n',
        encoding="utf-8",
    )
    server = start_province(ProvinceConfig(senders=senders, state_dir=directory / "state", tls=tls))
    yield server
    server.stop(grace=0.5)


@pytest.fixture(scope="module")
def callers(
    federation: Federation, receiver: RunningServer, list_officers: dict[str, TlsFiles]
) -> Iterator[dict[str, Caller]]:
    """Every caller the cases use, by name; keys registered for the library and the sync job."""
    with federation.client(LIBRARY, role=Role.LIBRARY, purposes=LIBRARY_PURPOSES) as library:
        library.register_key()
    with federation.client(SYNC, role=Role.SYNC_JOB, purposes=["credit_rescoring"]) as sync:
        sync.register_key()
    library_token = federation.token(LIBRARY, role=Role.LIBRARY, purposes=LIBRARY_PURPOSES)
    sync_token = federation.token(SYNC, role=Role.SYNC_JOB, purposes=["credit_rescoring"])
    coordinator_tls = TlsFiles.from_cert_paths(
        cert_paths(federation.certs, role=PeerRole.COORDINATOR, name="coordinator")
    )
    court = f"127.0.0.1:{federation.nodes[COURT].port}"
    court_name = node_server_name(COURT)
    province = f"127.0.0.1:{receiver.port}"

    def channel(target: str, tls: TlsFiles, name: str) -> grpc.Channel:
        return secure_channel(target, tls, server_name=name)

    made = {
        # the coordinator: a library without the permission, a sync job with it
        "library@coordinator": Caller(
            channel(federation.target, federation.tls(LIBRARY), COORDINATOR_SERVER_NAME),
            library_token,
        ),
        "agency@coordinator": Caller(
            channel(federation.target, federation.tls(AGENCY), COORDINATOR_SERVER_NAME),
            federation.token(AGENCY, role=Role.CREDIT_AGENCY, purposes=["loan_underwriting"]),
        ),
        "sync@coordinator": Caller(
            channel(federation.target, federation.tls(SYNC), COORDINATOR_SERVER_NAME), sync_token
        ),
        # a node: a requester's certificate (only the coordinator may ask), and the
        # coordinator's certificate with a token whose requester the node's policy refuses
        "library@node": Caller(channel(court, federation.tls(LIBRARY), court_name), library_token),
        "coordinator@node": Caller(channel(court, coordinator_tls, court_name), library_token),
        # the court's list office: its list officer, and a stranger
        "officer@office": Caller(channel(court, list_officers[COURT], court_name), None),
        "library@office": Caller(channel(court, federation.tls(LIBRARY), court_name), None),
        # the receiver: a certificate no sender registered, and the sender's own
        "library@province": Caller(
            channel(province, federation.tls(LIBRARY), PROVINCE_SERVER_NAME), None
        ),
        "sync@province": Caller(
            channel(province, federation.tls(SYNC), PROVINCE_SERVER_NAME), None
        ),
    }
    yield made
    for caller in made.values():
        caller.channel.close()


# --- the cases ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    caller: str
    method: str
    response: type[Message]
    #: the minimal request: the baseline
    minimal: Callable[[Federation], Message]
    #: the largest request
    largest: Callable[[Federation], Message]
    code: grpc.StatusCode
    #: INVALID_ARGUMENT: the field named, and the cap the message names
    field: str = ""
    cap: int = 0


def _key(federation: Federation, requester: str) -> common_pb2.PaillierPublicKey:
    return common_pb2.PaillierPublicKey(n=federation.keys[requester].public.to_bytes())


def _limits(federation: Federation) -> RequestLimits:
    return RequestLimits.for_catalogue(federation.catalogue)


def _person_layout(federation: Federation) -> SlotLayout:
    return SlotLayout.for_catalogue(federation.catalogue, SubjectKind.PERSON, Shape.BREAKDOWN)


def _stats_query(federation: Federation) -> coordinator_pb2.StatsQueryRequest:
    return coordinator_pb2.StatsQueryRequest(
        subject_kind=common_pb2.SUBJECT_KIND_PERSON,
        purpose="statistics",
        epsilon="0.5",
        public_key=_key(federation, LIBRARY),
    )


def _contribute_stats(federation: Federation) -> node_pb2.ContributeStatsRequest:
    layout = _person_layout(federation)
    keys = federation.keys[LIBRARY]
    return node_pb2.ContributeStatsRequest(
        query_id="q_boundsboundsbounds",
        subject_kind=common_pb2.SUBJECT_KIND_PERSON,
        purpose="statistics",
        # with its modulus proof: a node checks it the first time it sees a key
        public_key=common_pb2.PaillierPublicKey(
            n=keys.public.to_bytes(), modulus_proof=keys.modulus_proof
        ),
        slots=list(layout.names),
        slot_widths=list(layout.widths),
        slot_bounds=[slot.sum_bound for slot in layout.slots],
    )


def _batch_header(federation: Federation, requester: str) -> coordinator_pb2.BatchQueryRequest:
    return coordinator_pb2.BatchQueryRequest(
        header=coordinator_pb2.BatchHeader(
            subject_kind=common_pb2.SUBJECT_KIND_PERSON,
            shape=common_pb2.SHAPE_TOTAL,
            purpose="credit_rescoring",
            public_key=_key(federation, requester),
        )
    )


def _publication_of_10000(_: Federation) -> lists_pb2.PublishEntriesRequest:
    """MAX_ENTRIES_PER_PUBLISH entries, each as long as a message of them allows."""
    ids = resident_ids(MAX_ENTRIES_PER_PUBLISH)

    def entry(i: int, reason: str) -> lists_pb2.NewEntry:
        return lists_pb2.NewEntry(
            entry_id=f"e{i:05d}",
            list="judgement_defaulters",
            subject_kind=common_pb2.SUBJECT_KIND_PERSON,
            subject_id=ids[i],
            reason=reason,
        )

    # each entry costs its size, 3 bytes of framing, and 2 for its reason's tag and length
    room = (MAX_RECEIVE_BYTES - SLACK_BYTES) // MAX_ENTRIES_PER_PUBLISH
    reason = "r" * min(120, room - entry(0, "").ByteSize() - 3 - 2)
    request = lists_pb2.PublishEntriesRequest(
        entries=[entry(i, reason) for i in range(MAX_ENTRIES_PER_PUBLISH)]
    )
    assert request.ByteSize() <= MAX_RECEIVE_BYTES - SLACK_BYTES
    return request


C = "/osmanthus.v1.CoordinatorService/"
N = "/osmanthus.v1.NodeService/"
L = "/osmanthus.v1.ListOfficeService/"
P = "/osmanthus.v1.ProvinceService/"
INVALID = grpc.StatusCode.INVALID_ARGUMENT
DENIED = grpc.StatusCode.PERMISSION_DENIED

CASES: dict[str, Case] = {
    # --- coordinator: every field past its cap, before the token is read ----------------------
    "PersonQuery.measures": Case(
        "library@coordinator",
        C + "PersonQuery",
        coordinator_pb2.QueryResponse,
        lambda f: coordinator_pb2.PersonQueryRequest(),
        lambda f: filled(
            coordinator_pb2.PersonQueryRequest(shape=common_pb2.SHAPE_FLAGS), "measures"
        ),
        INVALID,
        "measures",
    ),
    "EnterpriseQuery.departments": Case(
        "library@coordinator",
        C + "EnterpriseQuery",
        coordinator_pb2.QueryResponse,
        lambda f: coordinator_pb2.EnterpriseQueryRequest(),
        lambda f: filled(
            coordinator_pb2.EnterpriseQueryRequest(
                shape=common_pb2.SHAPE_BREAKDOWN,
                purpose="loan_underwriting",
                public_key=_key(f, LIBRARY),
            ),
            "departments",
        ),
        INVALID,
        "departments",
    ),
    # a credit agency, which may ask about enterprises: the same refusal, as fast
    "EnterpriseQuery.departments (a permitted requester)": Case(
        "agency@coordinator",
        C + "EnterpriseQuery",
        coordinator_pb2.QueryResponse,
        lambda f: coordinator_pb2.EnterpriseQueryRequest(),
        lambda f: filled(
            coordinator_pb2.EnterpriseQueryRequest(
                shape=common_pb2.SHAPE_BREAKDOWN,
                purpose="loan_underwriting",
                public_key=_key(f, AGENCY),
            ),
            "departments",
        ),
        INVALID,
        "departments",
    ),
    "EnterpriseQuery.measures": Case(
        "library@coordinator",
        C + "EnterpriseQuery",
        coordinator_pb2.QueryResponse,
        lambda f: coordinator_pb2.EnterpriseQueryRequest(),
        lambda f: filled(coordinator_pb2.EnterpriseQueryRequest(), "measures"),
        INVALID,
        "measures",
    ),
    "StatsQuery.statistics": Case(
        "library@coordinator",
        C + "StatsQuery",
        coordinator_pb2.StatsResponse,
        lambda f: coordinator_pb2.StatsQueryRequest(),
        lambda f: filled(_stats_query(f), "statistics"),
        INVALID,
        "statistics",
    ),
    "StatsQuery.subject_ids": Case(
        "library@coordinator",
        C + "StatsQuery",
        coordinator_pb2.StatsResponse,
        lambda f: coordinator_pb2.StatsQueryRequest(),
        lambda f: filled(_stats_query(f), "subject_ids"),
        INVALID,
        "subject_ids",
        MAX_COHORT,
    ),
    # within the cap: 50,000 valid ids (1 MB) from a requester the policy refuses, before
    # a single id is read
    "StatsQuery.subject_ids (cohort at the cap, no permission)": Case(
        "library@coordinator",
        C + "StatsQuery",
        coordinator_pb2.StatsResponse,
        lambda f: _stats_query(f),
        lambda f: _with_ids(_stats_query(f), MAX_COHORT),
        DENIED,
    ),
    # --- node: Contribute, ContributeChunk, ContributeStats -----------------------------------
    "Contribute.slots": Case(
        "coordinator@node",
        N + "Contribute",
        node_pb2.ContributeResponse,
        lambda f: node_pb2.ContributeRequest(),
        lambda f: filled(node_pb2.ContributeRequest(), "slots"),
        INVALID,
        "slots",
    ),
    "Contribute.slot_widths": Case(
        "coordinator@node",
        N + "Contribute",
        node_pb2.ContributeResponse,
        lambda f: node_pb2.ContributeRequest(),
        lambda f: filled(node_pb2.ContributeRequest(), "slot_widths", lambda i: 1),
        INVALID,
        "slot_widths",
    ),
    "Contribute.measures": Case(
        "library@node",
        N + "Contribute",
        node_pb2.ContributeResponse,
        lambda f: node_pb2.ContributeRequest(),
        lambda f: filled(node_pb2.ContributeRequest(), "measures"),
        INVALID,
        "measures",
    ),
    # the revocation feed entries a query under consent carries (docs/consent.md)
    "Contribute.revocations": Case(
        "coordinator@node",
        N + "Contribute",
        node_pb2.ContributeResponse,
        lambda f: node_pb2.ContributeRequest(),
        lambda f: filled(node_pb2.ContributeRequest(), "revocations"),
        INVALID,
        "revocations",
        MAX_STAPLED_REVOCATIONS,
    ),
    "ContributeChunk.subject_ids": Case(
        "coordinator@node",
        N + "ContributeChunk",
        node_pb2.ContributeChunkResponse,
        lambda f: node_pb2.ContributeChunkRequest(),
        lambda f: filled(node_pb2.ContributeChunkRequest(), "subject_ids"),
        INVALID,
        "subject_ids",
        MAX_CHUNK_SUBJECTS,
    ),
    "ContributeChunk.slots": Case(
        "library@node",
        N + "ContributeChunk",
        node_pb2.ContributeChunkResponse,
        lambda f: node_pb2.ContributeChunkRequest(),
        lambda f: filled(node_pb2.ContributeChunkRequest(), "slots"),
        INVALID,
        "slots",
    ),
    "ContributeChunk.slot_widths": Case(
        "coordinator@node",
        N + "ContributeChunk",
        node_pb2.ContributeChunkResponse,
        lambda f: node_pb2.ContributeChunkRequest(),
        lambda f: filled(node_pb2.ContributeChunkRequest(), "slot_widths", lambda i: 1),
        INVALID,
        "slot_widths",
    ),
    "ContributeChunk.subject_ids (a chunk at the cap, not the coordinator)": Case(
        "library@node",
        N + "ContributeChunk",
        node_pb2.ContributeChunkResponse,
        lambda f: node_pb2.ContributeChunkRequest(),
        lambda f: node_pb2.ContributeChunkRequest(
            subject_kind=common_pb2.SUBJECT_KIND_PERSON,
            subject_ids=resident_ids(MAX_CHUNK_SUBJECTS),
        ),
        DENIED,
    ),
    "ContributeStats.subject_ids": Case(
        "coordinator@node",
        N + "ContributeStats",
        node_pb2.ContributeStatsResponse,
        lambda f: node_pb2.ContributeStatsRequest(),
        lambda f: filled(_contribute_stats(f), "subject_ids"),
        INVALID,
        "subject_ids",
        MAX_COHORT,
    ),
    "ContributeStats.statistics": Case(
        "coordinator@node",
        N + "ContributeStats",
        node_pb2.ContributeStatsResponse,
        lambda f: node_pb2.ContributeStatsRequest(),
        lambda f: filled(_contribute_stats(f), "statistics"),
        INVALID,
        "statistics",
    ),
    "ContributeStats.slot_bounds": Case(
        "library@node",
        N + "ContributeStats",
        node_pb2.ContributeStatsResponse,
        lambda f: node_pb2.ContributeStatsRequest(),
        lambda f: filled(node_pb2.ContributeStatsRequest(), "slot_bounds", lambda i: 1),
        INVALID,
        "slot_bounds",
    ),
    # 50,000 valid ids from the coordinator, for a requester the node's policy refuses; and
    # from a requester's certificate, which only the coordinator's may use
    "ContributeStats.subject_ids (cohort at the cap, no permission)": Case(
        "coordinator@node",
        N + "ContributeStats",
        node_pb2.ContributeStatsResponse,
        lambda f: _contribute_stats(f),
        lambda f: _with_ids(_contribute_stats(f), MAX_COHORT),
        DENIED,
    ),
    "ContributeStats.subject_ids (cohort at the cap, not the coordinator)": Case(
        "library@node",
        N + "ContributeStats",
        node_pb2.ContributeStatsResponse,
        lambda f: _contribute_stats(f),
        lambda f: _with_ids(_contribute_stats(f), MAX_COHORT),
        DENIED,
    ),
    # --- the list office ------------------------------------------------------------------------
    "PublishEntries.entries (the officer)": Case(
        "officer@office",
        L + "PublishEntries",
        lists_pb2.PublishEntriesResponse,
        lambda f: lists_pb2.PublishEntriesRequest(),
        lambda f: filled(lists_pb2.PublishEntriesRequest(), "entries"),
        INVALID,
        "entries",
        MAX_ENTRIES_PER_PUBLISH,
    ),
    "PublishEntries.entries (a stranger)": Case(
        "library@office",
        L + "PublishEntries",
        lists_pb2.PublishEntriesResponse,
        lambda f: lists_pb2.PublishEntriesRequest(),
        lambda f: filled(lists_pb2.PublishEntriesRequest(), "entries"),
        INVALID,
        "entries",
        MAX_ENTRIES_PER_PUBLISH,
    ),
    "PublishEntries.entries (10,000 entries, a stranger)": Case(
        "library@office",
        L + "PublishEntries",
        lists_pb2.PublishEntriesResponse,
        lambda f: lists_pb2.PublishEntriesRequest(),
        _publication_of_10000,
        DENIED,
    ),
    # --- the provincial receiver: one signed batch, its payload up to 1 MiB -------------------
    "Deliver.payload (a stranger)": Case(
        "library@province",
        P + "Deliver",
        province_pb2.DeliverResponse,
        lambda f: province_pb2.DeliverRequest(),
        lambda f: _delivery(),
        DENIED,
    ),
}


def _with_ids(message: Any, count: int) -> Any:
    message.subject_ids.extend(resident_ids(count))
    return message


def _delivery() -> province_pb2.DeliverRequest:
    request = province_pb2.DeliverRequest(
        batch=province_pb2.SignedBatch(signature=b"x", key_id="k" * 43)
    )
    request.batch.payload = b"[" + b"{}," * ((MAX_RECEIVE_BYTES - 200) // 3) + b"{}]"
    return request


def _elapsed(call: Callable[[], grpc.Call | None]) -> tuple[float, grpc.Call | None]:
    start = time.perf_counter()
    outcome = call()
    return time.perf_counter() - start, outcome


def _assert_bounded(name: str, minimal_s: list[float], largest_s: float) -> None:
    median = statistics.median(minimal_s)
    bound = RATIO * median + FLOOR_S
    assert largest_s < bound, (
        f"{name}: the largest message took {largest_s:.3f} s; the minimal request's median is "
        f"{median:.4f} s, so the bound is {bound:.3f} s"
    )


def _assert_refusal(case: Case, error: grpc.Call | None, federation: Federation) -> None:
    assert error is not None, "the largest message was answered"
    assert error.code() == case.code, (error.code(), error.details())
    if case.code is INVALID:
        refusal = error_from_rpc(error)
        assert refusal.field == case.field, (refusal.field, refusal.message)
        limits = _limits(federation)
        cap = case.cap or {
            "measures": limits.measures,
            "departments": limits.departments,
        }.get(case.field, limits.slots)
        assert f"at most {cap}" in refusal.message, refusal.message


@pytest.mark.parametrize("name", list(CASES))
def test_the_largest_message_is_refused_at_once(
    name: str, federation: Federation, callers: dict[str, Caller]
) -> None:
    case = CASES[name]
    caller = callers[case.caller]
    minimal = case.minimal(federation)
    largest = case.largest(federation)
    assert largest.ByteSize() <= MAX_RECEIVE_BYTES
    caller.unary(case.method, minimal, case.response)  # warm: the TLS handshake, the caches
    minimal_s = [
        _elapsed(lambda: caller.unary(case.method, minimal, case.response))[0]
        for _ in range(MINIMAL_CALLS)
    ]
    largest_s, error = _elapsed(lambda: caller.unary(case.method, largest, case.response))
    _assert_refusal(case, error, federation)
    _assert_bounded(name, minimal_s, largest_s)


@pytest.mark.parametrize("caller_name", ["library@coordinator", "sync@coordinator"])
def test_a_batch_chunk_past_its_cap_is_refused_at_once(
    caller_name: str, federation: Federation, callers: dict[str, Caller]
) -> None:
    """The library may not batch (refused at the header); the sync job may (refused at the
    chunk, before any of its ids is read)."""
    caller = callers[caller_name]
    requester = LIBRARY if caller_name.startswith("library") else SYNC
    header = _batch_header(federation, requester)
    method = C + "BatchQuery"
    chunk = filled(
        coordinator_pb2.BatchQueryRequest(chunk=coordinator_pb2.SubjectChunk(chunk=0)),
        "chunk.subject_ids",
    )
    caller.stream(method, [header])  # warm
    minimal_s = [_elapsed(lambda: caller.stream(method, [header]))[0] for _ in range(MINIMAL_CALLS)]
    largest_s, error = _elapsed(lambda: caller.stream(method, [header, chunk]))
    assert error is not None
    if requester == LIBRARY:
        assert error.code() == DENIED, (error.code(), error.details())
    else:
        assert error.code() == INVALID, (error.code(), error.details())
        refusal = error_from_rpc(error)
        assert refusal.field == "subject_ids"
        assert f"at most {MAX_CHUNK_SUBJECTS}" in refusal.message
    _assert_bounded(f"BatchQuery as {caller_name}", minimal_s, largest_s)

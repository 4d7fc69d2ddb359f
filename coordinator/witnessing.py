"""The coordinator witnesses every node's audit log: fetch, prove, cosign, hand back.

Every `interval_s` (and on `witness_once()`; an interval of 0 runs no loop), for each node
whose log the roster (logs.toml) lists, the coordinator asks the node's TransparencyService for
its latest checkpoint, and for an RFC 9162 consistency proof from the size its own witness last
cosigned for that log (osmanthus.core.carrier). Its in-process witness (osmanthus.core.witness,
the coordinator's witness.key) cosigns only a checkpoint that extends what it cosigned before,
and the cosignature goes back to the node (AddCosignatures), which serves it with the checkpoint
from then on.

A refusal that shows the node's log misbehaving (a rollback, a fork, a proof that fails, a note
its key did not sign) is an alarm: the witness logs it at ERROR and counts it
(`Witness.alarm_counts()`), and the round's report names it. A node that cannot be reached is
only a warning: it is witnessed at the next round, from the same cosigned size.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import grpc

from coordinator.config import NodeEndpoint
from osmanthus.core.carrier import Witnessed, WrongOrigin, carry
from osmanthus.core.errors import ConfigError, OsmanthusError
from osmanthus.core.grpc_errors import error_from_rpc
from osmanthus.core.logkeys import log_origin
from osmanthus.core.peers import PeerRole
from osmanthus.core.tls import TlsFiles, node_server_name, secure_channel
from osmanthus.core.wire import transparency as wire
from osmanthus.core.witness import Witness
from osmanthus.v1 import transparency_pb2_grpc

#: how often every node's log is witnessed by default (`--witness-interval`)
DEFAULT_WITNESS_INTERVAL_S: Final = 60.0
#: the alarm reason of a node that answers with another log's checkpoint
WRONG_ORIGIN: Final = "wrong_origin"
#: seconds one node gets for each call of a round
CALL_TIMEOUT_S: Final = 10.0

_log = logging.getLogger(__name__)


@dataclass
class WitnessRound:
    """What one round did, log by log."""

    #: origin -> the size cosigned now
    cosigned: dict[str, int] = field(default_factory=dict)
    #: origins whose checkpoint was the one already cosigned (nothing sent)
    unchanged: list[str] = field(default_factory=list)
    #: origin -> the witness's refusal
    refused: dict[str, OsmanthusError] = field(default_factory=dict)
    #: origin -> the alarm reason, for the refusals that show the log misbehaving
    alarms: dict[str, str] = field(default_factory=dict)
    #: origin -> why the node could not be asked or handed the cosignature
    unreachable: dict[str, OsmanthusError] = field(default_factory=dict)


class _NodeLog:
    """One node's log as the witnessing loop reaches it (over the coordinator's certificate)."""

    def __init__(self, endpoint: NodeEndpoint, *, tls: TlsFiles) -> None:
        self.origin = log_origin(PeerRole.NODE, endpoint.department)
        self.channel = secure_channel(
            endpoint.address, tls, server_name=node_server_name(endpoint.department)
        )
        self._stub = transparency_pb2_grpc.TransparencyServiceStub(self.channel)

    def _call(self, method: str, request: object) -> Any:
        try:
            return getattr(self._stub, method)(request, timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None

    def checkpoint_note(self) -> bytes:
        answer = self._call("GetCheckpoint", wire.get_checkpoint_request(self.origin))
        return wire.signed_checkpoint_note(answer)

    def consistency_proof(self, old: int, new: int) -> Sequence[bytes]:
        answer = self._call(
            "GetConsistencyProof", wire.consistency_proof_request(self.origin, old, new)
        )
        proof = wire.consistency_proof_from_proto(answer)
        if (proof.first_size, proof.second_size) != (old, new):
            # a proof between other sizes proves nothing here: the witness refuses the empty one
            return []
        return proof.hashes

    def add_cosignatures(self, note: bytes) -> None:
        self._call("AddCosignatures", wire.add_cosignatures_request(self.origin, note))


class NodeWitnessing:
    """The coordinator's witness over the nodes' logs, and the loop that feeds it."""

    def __init__(
        self,
        *,
        witness: Witness,
        endpoints: Sequence[NodeEndpoint],
        tls: TlsFiles,
        interval_s: float = DEFAULT_WITNESS_INTERVAL_S,
    ) -> None:
        if not interval_s >= 0:
            raise ConfigError(
                "the witness interval must be 0 (no rounds but witness_once) or more seconds",
                field="witness_interval",
            )
        self.witness = witness
        self.interval_s = interval_s
        listed = set(witness.roster.logs)
        self._logs = [
            _NodeLog(e, tls=tls)
            for e in endpoints
            if log_origin(PeerRole.NODE, e.department) in listed
        ]
        unlisted = sorted(
            e.department for e in endpoints if log_origin(PeerRole.NODE, e.department) not in listed
        )
        if unlisted:
            # such a node's log is witnessed by nobody here: say so once, at start
            _log.warning(
                "the roster lists no log key for %s: their logs are not witnessed by the "
                "coordinator (add them with 'osmanthus certs log-key')",
                ", ".join(unlisted),
            )
        self._round_lock = threading.Lock()
        #: alarms raised here rather than by the witness (a checkpoint of another origin)
        self._own_alarms: Counter[tuple[str, str]] = Counter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def origins(self) -> list[str]:
        return [log.origin for log in self._logs]

    def alarm_counts(self) -> Mapping[tuple[str, str], int]:
        """{(origin, reason): alarms} since the coordinator started."""
        counts = Counter(self.witness.alarm_counts())
        with self._round_lock:
            counts.update(self._own_alarms)
        return dict(counts)

    def witness_once(self) -> WitnessRound:
        """One round over every listed node's log (rounds never overlap)."""
        with self._round_lock:
            report = WitnessRound()
            for log in self._logs:
                if self._stop.is_set():
                    break
                self._witness_log(log, report)
            return report

    def _witness_log(self, log: _NodeLog, report: WitnessRound) -> None:
        origin = log.origin
        latest = self.witness.latest(origin)
        witnessed = Witnessed(
            size=latest.size if latest else 0, root=latest.root if latest else None
        )
        try:
            note = log.checkpoint_note()
        except OsmanthusError as exc:
            report.unreachable[origin] = exc
            _log.warning("cannot witness %s: its checkpoint: %s", origin, exc)
            return
        before = self.witness.alarm_counts()
        try:
            carried = carry(
                origin=origin,
                note=note,
                witnessed=witnessed,
                witness_name=self.witness.signer.name,
                proof=log.consistency_proof,
                submit=self.witness.add_checkpoint,
            )
        except OsmanthusError as exc:
            report.refused[origin] = exc
            raised = [
                reason
                for (o, reason), n in self.witness.alarm_counts().items()
                if o == origin and n > before.get((o, reason), 0)
            ]
            if raised:
                # the witness logged the alarm at ERROR with its detail
                report.alarms[origin] = raised[0]
            elif isinstance(exc, WrongOrigin):
                report.alarms[origin] = WRONG_ORIGIN
                self._own_alarms[(origin, WRONG_ORIGIN)] += 1
                _log.error("witness alarm for log %s: %s: %s", origin, WRONG_ORIGIN, exc)
            else:
                _log.warning("the witness refused the checkpoint of %s: %s", origin, exc)
            return
        if carried.unchanged:
            report.unchanged.append(origin)
            return
        report.cosigned[origin] = carried.checkpoint.size
        try:
            log.add_cosignatures(carried.cosigned_note)
        except OsmanthusError as exc:
            # cosigned all the same; the node gets a fresh cosignature next round
            report.unreachable[origin] = exc
            _log.warning("cannot hand %s its cosignature: %s", origin, exc)
            return
        _log.info("cosigned %s at size %d", origin, carried.checkpoint.size)

    # --- the loop ------------------------------------------------------------------------------

    def start(self) -> None:
        """Witness every `interval_s` in a background thread, the first round at once (an
        interval of 0: no thread; rounds are only those `witness_once` runs)."""
        if self._thread is not None or self.interval_s == 0:
            return
        self._thread = threading.Thread(target=self._run, name="osmanthus-witnessing", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.witness_once()
            except Exception:
                # a bug in one round must not end the witnessing; the next round tries again
                _log.exception("witnessing round failed")
            if self._stop.wait(self.interval_s):
                return

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        for log in self._logs:
            log.channel.close()

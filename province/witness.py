"""The receiver's witness (WitnessService): who may submit checkpoints, the servicer, the metrics.

The provincial receiver is the platform's second witness (docs/transparency.md): the sync job
carries each log's checkpoint to it with a consistency proof, and it cosigns only a checkpoint
that extends what it cosigned before (osmanthus.core.witness, C2SP tlog-witness semantics). The
decisions are the core Witness's; this module adds who may call (deny by default: the
certificates senders.toml registers, i.e. the cities' sync jobs, and the receiver's operators),
and exports what the witness did as Prometheus metrics:

- `osmanthus_witness_cosigned_total{origin}`: checkpoints cosigned;
- `osmanthus_witness_refusals_total{origin,reason}`: every refusal, a stale old size included;
- `osmanthus_witness_alarms_total{origin,reason}`: the refusals that show a log misbehaving
  (a rollback, a fork, a failed consistency proof, a bad signature under the log's name):
  alert on any increase;
- `osmanthus_witness_tree_size{origin}`: the size last cosigned.

A refused submission's origin is a label only if the roster lists it (others count under
"unknown"), so a caller cannot grow the number of series.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import grpc
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from osmanthus.core.errors import ConfigError, NotFound, OsmanthusError, PermissionDenied
from osmanthus.core.grpc_errors import servicer_method
from osmanthus.core.logkeyfiles import read_signer
from osmanthus.core.logkeys import LogRoster
from osmanthus.core.peers import PeerRole
from osmanthus.core.server import current_caller
from osmanthus.core.signednote import CosignatureSigner
from osmanthus.core.tls import PeerIdentity
from osmanthus.core.wire import transparency as wire
from osmanthus.core.witness import REASON_STALE, FileAlarmSink, Witness, WitnessedCheckpoint
from osmanthus.v1 import transparency_pb2, transparency_pb2_grpc
from province.senders import SenderRegistry

WITNESS_SERVICE_NAME: Final = transparency_pb2.DESCRIPTOR.services_by_name[
    "WitnessService"
].full_name
#: the witness's state (what it last cosigned for each log), in the receiver's state directory
WITNESS_STATE_FILE: Final = "witness.json"
#: every alarm the witness raised, one JSON line each (osmanthus.core.witness.FileAlarmSink), in
#: the receiver's state directory: the evidence of a misbehaving log outlives a restart
WITNESS_ALARMS_FILE: Final = "witness-alarms.jsonl"
METRICS_PREFIX: Final = "osmanthus_witness"
#: the label of a refusal whose origin the roster does not list (or that names none)
UNKNOWN_ORIGIN_LABEL: Final = "unknown"

_log = logging.getLogger(__name__)


def load_witness(*, key: Path, roster: Path, state_dir: Path, expected_name: str | None) -> Witness:
    """The core Witness over the receiver's key, the roster of logs, its state file, and its
    alarms file (appended to; the metrics count alarms since the receiver started)."""
    signer = read_signer(CosignatureSigner, key, expected_name=expected_name, field="witness_key")
    logs = LogRoster.load(roster)
    if not logs.origins():
        raise ConfigError(f"{roster} lists no log: there is nothing to witness", field="logs")
    return Witness(
        signer=signer,
        roster=logs,
        state_path=state_dir / WITNESS_STATE_FILE,
        alarms=FileAlarmSink(state_dir / WITNESS_ALARMS_FILE),
    )


class WitnessHost:
    """The receiver's witness: the core Witness behind the receiver's access rule."""

    def __init__(
        self, *, witness: Witness, registry: SenderRegistry, operators: frozenset[str]
    ) -> None:
        self.witness = witness
        self._registry = registry
        self._operators = operators

    def _check_caller(self, caller: PeerIdentity, what: str) -> None:
        if caller.role is PeerRole.OPERATOR and caller.name in self._operators:
            return
        if self._registry.senders_for(caller):
            return
        raise PermissionDenied(
            f"certificate {caller.role.value}/{caller.name} may not {what}: only the "
            "certificates senders.toml registers (the cities' sync jobs) and the receiver's "
            "operators may",
            field="certificate",
        )

    def add_checkpoint(self, body: bytes, *, caller: PeerIdentity) -> bytes:
        """Cosign, or refuse as the core witness does (its alarms are logged at ERROR)."""
        self._check_caller(caller, "submit checkpoints to the witness")
        try:
            signatures = self.witness.add_checkpoint(body)
        except OsmanthusError as exc:
            # the core logged an alarm at ERROR already; this line names who submitted it
            _log.warning(
                "witness refused a checkpoint from %s/%s: %s", caller.role.value, caller.name, exc
            )
            raise
        _log.info("witness cosigned a checkpoint for %s/%s", caller.role.value, caller.name)
        return signatures

    def witnessed(self, origin: str, *, caller: PeerIdentity) -> WitnessedCheckpoint:
        """What the witness last cosigned for `origin`. NotFound for a log the roster does not
        list, and for one it lists but never cosigned (whose first checkpoint goes with old
        size 0); the message says which."""
        self._check_caller(caller, "read what the witness cosigned")
        self.witness.roster.log_verifier(origin)
        latest = self.witness.latest(origin)
        if latest is None:
            raise NotFound(
                f"the witness has cosigned nothing for log {origin!r} yet: submit its first "
                "checkpoint with old size 0",
                field="origin",
            )
        return latest


class WitnessServicer(transparency_pb2_grpc.WitnessServiceServicer):
    """WitnessService over gRPC: unpack, hand over with the caller, pack."""

    def __init__(self, host: WitnessHost) -> None:
        self._host = host

    @servicer_method
    def AddCheckpoint(  # noqa: N802 - gRPC method name
        self, request: transparency_pb2.AddCheckpointRequest, context: grpc.ServicerContext
    ) -> transparency_pb2.AddCheckpointResponse:
        signatures = self._host.add_checkpoint(request.body, caller=current_caller().peer)
        return wire.add_checkpoint_response(signatures)

    @servicer_method
    def GetWitnessed(  # noqa: N802 - gRPC method name
        self, request: transparency_pb2.GetWitnessedRequest, context: grpc.ServicerContext
    ) -> transparency_pb2.SignedCheckpoint:
        latest = self._host.witnessed(request.origin, caller=current_caller().peer)
        return wire.signed_checkpoint_to_proto(
            latest.note, origin=latest.origin, tree_size=latest.size, root_hash=latest.root
        )


# --- metrics ---------------------------------------------------------------------------------


class WitnessCollector(Collector):
    """Reads the witness's own counts at each scrape: one source of truth, nothing counted twice."""

    def __init__(self, witness: Witness) -> None:
        self._witness = witness

    def _label(self, origin: str) -> str:
        return origin if origin in self._witness.roster.logs else UNKNOWN_ORIGIN_LABEL

    def _by_reason(self, counts: dict[tuple[str, str], int]) -> dict[tuple[str, str], int]:
        merged: dict[tuple[str, str], int] = {}
        for (origin, reason), n in counts.items():
            key = (self._label(origin), reason)
            merged[key] = merged.get(key, 0) + n
        return merged

    def collect(self) -> Iterator[Metric]:
        witness = self._witness
        cosigned = CounterMetricFamily(
            f"{METRICS_PREFIX}_cosigned", "Checkpoints the witness cosigned", labels=["origin"]
        )
        counts = witness.cosigned_counts()
        for origin in witness.origins():
            cosigned.add_metric([origin], counts.get(origin, 0))
        yield cosigned
        refusals = CounterMetricFamily(
            f"{METRICS_PREFIX}_refusals",
            f"Checkpoints the witness refused, by reason ({REASON_STALE}: the submitter was "
            "behind, not an alarm)",
            labels=["origin", "reason"],
        )
        for (origin, reason), n in sorted(self._by_reason(witness.refusal_counts()).items()):
            refusals.add_metric([origin, reason], n)
        yield refusals
        alarms = CounterMetricFamily(
            f"{METRICS_PREFIX}_alarms",
            "Refusals that show a log misbehaving (rollback, fork, inconsistent proof, bad "
            "signature): alert on any",
            labels=["origin", "reason"],
        )
        for (origin, reason), n in sorted(self._by_reason(witness.alarm_counts()).items()):
            alarms.add_metric([origin, reason], n)
        yield alarms
        size = GaugeMetricFamily(
            f"{METRICS_PREFIX}_tree_size",
            "The tree size the witness last cosigned for the log",
            labels=["origin"],
        )
        for origin in witness.origins():
            latest = witness.latest(origin)
            if latest is not None:
                size.add_metric([origin], latest.size)
        yield size


class WitnessMetrics:
    """A registry holding the witness's metrics; the receiver's metrics endpoint (osmanthus.core.
    metrics, one per process) serves it beside the process's own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        #: the port /metrics is served on, once the receiver serves
        self.port: int | None = None

    def watch(self, witness: Witness) -> None:
        self.registry.register(WitnessCollector(witness))

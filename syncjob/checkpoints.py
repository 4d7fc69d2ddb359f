"""The sync job carries every transparency log's checkpoint to the provincial witness.

Each run, for every log the roster (logs.toml) lists (the coordinator's own and each node's,
relayed by the coordinator's TransparencyService), the job:

1. asks the provincial witness what it last cosigned for the log (GetWitnessed; nothing yet
   means old size 0);
2. fetches the log's latest checkpoint and the RFC 9162 consistency proof from that size
   through the coordinator, and submits both to the witness (C2SP tlog-witness add-checkpoint,
   osmanthus.core.carrier); a 409 carrying another size is tried once more from it;
3. hands the witness's cosignature back to the log (AddCosignatures with the origin), which
   serves it with the checkpoint from then on.

A coordinator replica's own log (`NAME.coordinator.osmanthus/audit`) is served by that replica
only: it is read there (sync.toml's `[checkpoints.replicas]`), every other log through the
coordinator the job queries.

The witness holds the truth, so the job keeps no state of its own here. A refusal by the
witness is an alarm: it goes into the run's summary (and so its exit code and the state's
last error) and the metrics, never a silent skip; the other logs and the rest of the run go on.
A coordinator or node that cannot be reached only makes the log's carrying partial this run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import grpc

from osmanthus.core.carrier import Witnessed, WrongOrigin, carry, peek_checkpoint
from osmanthus.core.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OsmanthusError,
    PermissionDenied,
    WitnessConflict,
    WitnessInconsistent,
)
from osmanthus.core.logkeys import LogRoster, replica_of
from osmanthus.core.tokens import bearer_metadata
from sdk.transparency import TransparencyClient, WitnessClient

#: the alarm reasons the job reports a witness's refusal under (metrics label values)
REASON_CONFLICT: Final = "conflict"
REASON_INCONSISTENT: Final = "inconsistent"
REASON_BAD_SIGNATURE: Final = "bad_signature"
REASON_UNKNOWN_ORIGIN: Final = "unknown_origin"
REASON_BAD_REQUEST: Final = "bad_request"
REASON_WRONG_ORIGIN: Final = "wrong_origin"
REASON_REFUSED: Final = "refused"

_log = logging.getLogger(__name__)


def alarm_reason(error: OsmanthusError) -> str:
    """The reason a witness's refusal is reported under (C2SP tlog-witness's statuses)."""
    for cls, reason in (
        (WrongOrigin, REASON_WRONG_ORIGIN),
        (WitnessConflict, REASON_CONFLICT),
        (WitnessInconsistent, REASON_INCONSISTENT),
        (PermissionDenied, REASON_BAD_SIGNATURE),
        (NotFound, REASON_UNKNOWN_ORIGIN),
        (InvalidArgument, REASON_BAD_REQUEST),
    ):
        if isinstance(error, cls):
            return reason
    return REASON_REFUSED


@dataclass
class CarriedReport:
    """What carrying did this run, log by log."""

    #: origin -> the size the witness cosigned now
    cosigned: dict[str, int] = field(default_factory=dict)
    #: origins whose checkpoint the witness already held, cosignature handed back
    unchanged: list[str] = field(default_factory=list)
    #: origin -> (reason, the witness's refusal): a log misbehaving, or the witness's view of it
    alarms: dict[str, tuple[str, OsmanthusError]] = field(default_factory=dict)
    #: origin -> why the log or the witness could not be reached (tried again next run)
    failed: dict[str, OsmanthusError] = field(default_factory=dict)


class _Bearer(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Sends the job's token with every call: the coordinator authorises log reads by it."""

    def __init__(self, token: str) -> None:
        self._metadata = tuple(bearer_metadata(token))

    def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Any], details: Any, request: Any
    ) -> Any:
        details = details._replace(metadata=(*(details.metadata or ()), *self._metadata))
        return continuation(details, request)


def with_token(channel: grpc.Channel, token: str) -> grpc.Channel:
    """`channel` with the job's bearer token on every call."""
    return grpc.intercept_channel(channel, _Bearer(token))


class CheckpointCarrier:
    """Carries the roster's logs' checkpoints from the coordinator to the provincial witness."""

    def __init__(
        self,
        *,
        roster: LogRoster,
        logs: TransparencyClient,
        witness: WitnessClient,
        witness_name: str,
        replica_logs: Mapping[str, TransparencyClient] | None = None,
    ) -> None:
        self.roster = roster
        self._logs = logs
        #: replica name -> a client of that replica, which alone serves its own log
        self._replica_logs = dict(replica_logs or {})
        self._witness = witness
        self.witness_name = witness_name

    @property
    def origins(self) -> Sequence[str]:
        return self.roster.origins()

    def carry_all(self, *, stop: Callable[[], bool] = lambda: False) -> CarriedReport:
        report = CarriedReport()
        for origin in self.origins:
            if stop():
                break
            self.carry_one(origin, report)
        return report

    def _witnessed(self, origin: str) -> Witnessed:
        try:
            note = self._witness.get_witnessed_note(origin)
        except NotFound:
            # nothing cosigned yet (or a log the witness does not know, which its refusal of
            # the submission then says)
            return Witnessed(size=0, root=None)
        checkpoint = peek_checkpoint(note)
        return Witnessed(size=checkpoint.size, root=checkpoint.root_hash)

    def _logs_of(self, origin: str) -> TransparencyClient:
        replica = replica_of(origin)
        if replica is None:
            return self._logs
        try:
            return self._replica_logs[replica]
        except KeyError:
            raise FailedPrecondition(
                f"no address for coordinator replica {replica!r}, whose log {origin!r} only it "
                "serves: add it to [checkpoints.replicas]",
                field="checkpoints.replicas",
            ) from None

    def carry_one(self, origin: str, report: CarriedReport) -> None:
        refusal: list[OsmanthusError] = []

        def submit(body: bytes) -> bytes:
            try:
                return self._witness.add_checkpoint(body)
            except OsmanthusError as exc:
                refusal.append(exc)
                raise

        try:
            logs = self._logs_of(origin)
            witnessed = self._witnessed(origin)
            note = logs.get_checkpoint_note(origin)
            carried = carry(
                origin=origin,
                note=note,
                witnessed=witnessed,
                witness_name=self.witness_name,
                proof=lambda old, new: logs.raw_consistency_proof(origin, old, new).hashes,
                submit=submit,
            )
        except OsmanthusError as exc:
            if (refusal and refusal[-1] is exc and not exc.retryable) or isinstance(
                exc, WrongOrigin
            ):
                reason = alarm_reason(exc)
                report.alarms[origin] = (reason, exc)
                _log.error("witness alarm for log %s: %s: %s", origin, reason, exc)
            else:
                report.failed[origin] = exc
                _log.warning("checkpoint of %s not carried: %s", origin, exc)
            return
        if carried.unchanged:
            report.unchanged.append(origin)
            return
        report.cosigned[origin] = carried.checkpoint.size
        try:
            logs.add_cosignatures(carried.cosigned_note, origin=origin)
        except OsmanthusError as exc:
            # cosigned all the same; the next run hands the log a fresh cosignature
            report.failed[origin] = exc
            _log.warning("cosignature of %s not handed back: %s", origin, exc)

"""The receiver's decisions: who may deliver for whom, signature, format, storage, rejections.

A delivery is checked in this order, and refused at the first failure:

1. the caller's certificate is registered to deliver for some sender (PERMISSION_DENIED,
   "unknown sender"). Nothing of the delivery is read before this: a certificate no sender
   registered has its refusals counted in one row (BatchStore.count_rejection), not one each;
2. the envelope's sizes and the key id, which must be a key registered for a sender the
   certificate delivers for (UNAUTHENTICATED for an unknown key, PERMISSION_DENIED for another
   sender's);
3. the Ed25519 signature over the payload (UNAUTHENTICATED);
4. the payload's format, read only once its signature verified (INVALID_ARGUMENT naming the
   field), and the sender it names, which must be the key's (PERMISSION_DENIED);
5. duplicate, conflict and continuity, and the write (FAILED_PRECONDITION for a conflict, a gap
   or an overlap).

Every refusal is recorded with the time, the certificate, the reason, the sender whose key the
batch names (once the key is found) and the batch id the payload claims (peeked at only then, for
the record of a refusal); operators list them with the batches.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from osmanthus.core.errors import OsmanthusError, PermissionDenied, Unauthenticated
from osmanthus.core.grpc_errors import status_of
from osmanthus.core.peers import PeerRole
from osmanthus.core.syncbatch import (
    SignedBatch,
    check_envelope,
    peek_claims,
    read_batch,
    shown_key_id,
)
from osmanthus.core.syncbatch import verify_signature as verify_batch_signature
from osmanthus.core.tls import PeerIdentity
from osmanthus.core.wire.province import (
    BatchPage,
    BatchQuery,
    Delivery,
    RejectionPage,
    RejectionQuery,
)
from province.senders import SenderRegistry
from province.store import BatchStore

_log = logging.getLogger(__name__)


def peer_label(caller: PeerIdentity) -> str:
    """How a certificate is written in the store and in messages: "role/name"."""
    return f"{caller.role.value}/{caller.name}"


class ProvinceService:
    """Receives signed batches from registered senders and answers operators' listings."""

    def __init__(
        self,
        *,
        registry: SenderRegistry,
        store: BatchStore,
        operators: frozenset[str],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._registry = registry
        self._store = store
        self._operators = operators
        self._clock = clock

    @property
    def registry(self) -> SenderRegistry:
        """Who may deliver for whom (the witness admits the same certificates)."""
        return self._registry

    def deliver(self, signed: SignedBatch, *, caller: PeerIdentity) -> Delivery:
        """Store the batch once, or acknowledge it again; every refusal is recorded."""
        allowed = self._registry.senders_for(caller)
        if not allowed:
            refusal = PermissionDenied(
                f"unknown sender: certificate {peer_label(caller)} is not registered to "
                "deliver for any sender (senders.toml names a city's delivering certificates)",
                field="certificate",
            )
            self._count_stranger(caller, refusal)
            raise refusal
        # for the record of a refusal: the sender once its key is found, then the batch id
        claimed_sender = claimed_id = ""
        try:
            check_envelope(signed)
            owner = self._registry.key(signed.key_id)
            if owner is None:
                raise Unauthenticated(
                    f"unknown sender: key {shown_key_id(signed.key_id)} is not registered for "
                    "any sender",
                    field="key_id",
                )
            sender, public_key = owner
            claimed_sender = sender.id
            if sender.id not in allowed:
                raise PermissionDenied(
                    f"unknown sender: certificate {peer_label(caller)} is not registered to "
                    f"deliver for {sender.id!r}, whose key signed this batch",
                    field="certificate",
                )
            verify_batch_signature(signed, public_key=public_key)
            batch = read_batch(signed.payload)
            claimed_id = batch.batch_id
            if batch.sender != sender.id:
                raise PermissionDenied(
                    f"the batch names sender {batch.sender!r} but is signed with key "
                    f"{shown_key_id(signed.key_id)} of {sender.id!r}",
                    field="sender",
                )
            delivery = self._store.accept(batch, signed, peer=peer_label(caller), now=self._clock())
        except OsmanthusError as exc:
            if claimed_sender and not claimed_id:
                # unverified and bounded (check_envelope passed); only a registered
                # certificate, with a registered sender's key id, gets this far
                claimed_id = peek_claims(signed.payload)[1]
            self._record_rejection(caller, claimed_sender, claimed_id, exc)
            raise
        _log.info(
            "batch %s of %s (%s, sequence %d, %d records) %s from %s",
            delivery.batch_id,
            sender.id,
            batch.kind.value,
            delivery.sequence,
            delivery.records,
            "acknowledged again" if delivery.duplicate else "stored",
            peer_label(caller),
        )
        return delivery

    def _record_rejection(
        self, caller: PeerIdentity, sender: str, batch_id: str, error: OsmanthusError
    ) -> None:
        _log.warning("delivery from %s refused: %s", peer_label(caller), error)
        try:
            self._store.reject(
                at=self._clock(),
                peer=peer_label(caller),
                sender=sender,
                batch_id=batch_id,
                code=status_of(error).name,
                reason=str(error),
            )
        except Exception:
            # the caller still gets the refusal; only the record of it is lost, and the log says so
            _log.exception("could not record the refusal of a delivery from %s", peer_label(caller))

    def _count_stranger(self, caller: PeerIdentity, error: OsmanthusError) -> None:
        try:
            count = self._store.count_rejection(
                at=self._clock(),
                peer=peer_label(caller),
                code=status_of(error).name,
                reason=str(error),
            )
        except Exception:
            _log.exception("could not count the refusal of a delivery from %s", peer_label(caller))
            return
        # logged at the 1st, 2nd, 4th, 8th... refusal: a flood cannot flood the log either
        if count & (count - 1) == 0:
            _log.warning(
                "delivery from %s refused (%d so far): %s", peer_label(caller), count, error
            )

    def list_batches(self, query: BatchQuery, *, caller: PeerIdentity) -> BatchPage:
        """Operators see every batch; a delivering certificate sees its senders' batches only."""
        if self._is_operator(caller):
            return self._store.batches(query)
        allowed = self._registry.senders_for(caller)
        if not allowed:
            raise PermissionDenied(
                f"certificate {peer_label(caller)} may not list batches: only the receiver's "
                "operators and registered senders' certificates may",
                field="certificate",
            )
        return self._store.batches(query, senders=allowed)

    def list_rejections(self, query: RejectionQuery, *, caller: PeerIdentity) -> RejectionPage:
        """Operators see every rejection; a delivering certificate sees its own only."""
        if self._is_operator(caller):
            return self._store.rejections(query)
        if not self._registry.senders_for(caller):
            raise PermissionDenied(
                f"certificate {peer_label(caller)} may not list rejections: only the "
                "receiver's operators and registered senders' certificates may",
                field="certificate",
            )
        return self._store.rejections(query, peer=peer_label(caller))

    def _is_operator(self, caller: PeerIdentity) -> bool:
        return caller.role is PeerRole.OPERATOR and caller.name in self._operators

    def close(self) -> None:
        self._store.close()

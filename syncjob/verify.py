"""Verify the outbox's stored batches before anything signs them anew or sends them; quarantine
one that fails.

A batch waits in the outbox (syncjob.state) as the signed bytes the job made. Whatever would
sign it anew (after the job's key changed, for the earlier signature format, `sync rebase`) or
send it first checks the stored signature against the key that made it, which must be one of the
job's own keys (the keyring: the state records every key the job signs with), and compares the
signed payload's header with the outbox row (a batch to be signed anew is also read in full, as
the receiver reads it). Signing anew what was never checked would launder a change made on
disk: the receiver refuses a payload whose signature no longer matches, but it would store the
same payload once the job had signed it again.

A batch that fails is **quarantined**: recorded in the state (`sync status` shows it) and logged
at ERROR, never signed anew nor sent; its stream waits behind it, since a stream is ordered and
the batches after it continue its range. `sync quarantine drop|rebuild` (syncjob.recovery) is the
way out.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from osmanthus.core.errors import OsmanthusError
from osmanthus.core.syncbatch import (
    KEY_ID_PATTERN,
    MAX_PAYLOAD_BYTES,
    Batch,
    read_batch,
    sender_key_id,
    shown_key_id,
    signed_in_current_format,
    verify_signature,
)
from syncjob.state import OutboxBatch, QuarantinedBatch, SyncState

_log = logging.getLogger(__name__)

#: what a batch of the earlier signature format signed: this prefix and the payload, with a bare
#: Ed25519 signature (RFC 8032) of 64 bytes; still verified, so that one can be signed anew
LEGACY_SIGNING_CONTEXT: Final = b"osmanthus-sync-batch/1\n"
_LEGACY_SIGNATURE_BYTES: Final = 64
#: the exit code of a command that meets a quarantined batch (osmanthus.cli.exit_codes
#: ExitCode.QUARANTINED; the sync job sits below the CLI and cannot import it)
QUARANTINE_EXIT_CODE: Final = 7
#: the operator's way out, named in every message about a quarantined batch
RECOVERY_HINT: Final = "see `osmanthus sync quarantine show` and docs/province.md"

#: key id → public key: the keys the job has signed with
Keyring = Mapping[str, Ed25519PublicKey]


class Quarantined(OsmanthusError):
    """A waiting batch failed verification: it is never signed anew nor sent, and its stream
    waits behind it until the operator drops or rebuilds it."""

    exit_code = QUARANTINE_EXIT_CODE


def remember_key(
    state: SyncState, key: Ed25519PublicKey, *, at: datetime
) -> dict[str, Ed25519PublicKey]:
    """Record `key` as a key the job signs with, and return every key it has signed with."""
    key_id = sender_key_id(key)
    earlier = [k.key_id for k in state.signing_keys() if k.key_id != key_id]
    if (
        state.remember_key(key_id, key.public_bytes(Encoding.Raw, PublicFormat.Raw), at=at)
        and earlier
    ):
        _log.warning(
            "the job signs with a new key %s; batches its earlier keys (%s) signed are verified "
            "against them before they are signed anew with it",
            key_id,
            ", ".join(earlier),
        )
    return keyring(state)


def keyring(state: SyncState) -> dict[str, Ed25519PublicKey]:
    """The keys the state records the job signed with, by key id (a row whose id is not its
    key's thumbprint is no key of ours, and is left out)."""
    keys: dict[str, Ed25519PublicKey] = {}
    for record in state.signing_keys():
        try:
            key = Ed25519PublicKey.from_public_bytes(record.public_key)
        except ValueError:
            _log.error("the state's signing key %s is not an Ed25519 key; left out", record.key_id)
            continue
        if sender_key_id(key) != record.key_id:
            _log.error(
                "the state's signing key row %s does not hold that key; left out", record.key_id
            )
            continue
        keys[record.key_id] = key
    return keys


def payload_sha256(batch: OutboxBatch) -> str:
    return hashlib.sha256(batch.signed.payload).hexdigest()


def verify_stored(batch: OutboxBatch, *, keyring: Keyring, sender: str) -> None:
    """Quarantined, saying why, unless `batch`'s stored signature verifies against the job's
    key that made it and its signed payload is a batch of `sender` that matches the outbox row.
    Records nothing (see check_stored). The payload is not read in full: what verifies was
    built by the job (read_stored reads it, for signing anew)."""
    signed = batch.signed
    key_id = signed.key_id
    if not isinstance(key_id, str) or not KEY_ID_PATTERN.fullmatch(key_id):
        raise Quarantined("names no key id the job signs with", field="key_id")
    key = keyring.get(key_id)
    if key is None:
        raise Quarantined(
            f"is signed by key {shown_key_id(key_id)}, which this job never signed with (its "
            f"keys: {', '.join(sorted(keyring)) or 'none recorded'})",
            field="key_id",
        )
    if len(signed.payload) > MAX_PAYLOAD_BYTES:
        raise Quarantined(f"is larger than a batch ({MAX_PAYLOAD_BYTES} bytes)", field="payload")
    if signed_in_current_format(signed):
        try:
            verify_signature(signed, public_key=key)
        except OsmanthusError as exc:
            raise Quarantined(exc.message, field=exc.field) from None
    else:
        if len(signed.signature) != _LEGACY_SIGNATURE_BYTES:
            raise Quarantined(
                "is neither a detached JWS nor a signature of the earlier format", field="signature"
            )
        try:
            key.verify(signed.signature, LEGACY_SIGNING_CONTEXT + signed.payload)
        except InvalidSignature:
            raise Quarantined(
                f"(of the earlier format) does not verify against key {key_id}: the payload was "
                "changed after it was signed",
                field="signature",
            ) from None
    try:
        header = json.loads(signed.payload)
    except (UnicodeDecodeError, ValueError, RecursionError):
        header = None
    if not isinstance(header, dict):
        raise Quarantined("is signed but not a batch", field="payload")
    if header.get("sender") != sender:
        raise Quarantined("is a batch of another sender than the job's", field="sender")
    records = header.get("records")
    # the row says where the batch goes in its stream; the payload is what the key vouches for
    row = {
        "kind": (batch.kind.value, header.get("kind")),
        "sequence": (batch.sequence, header.get("sequence")),
        "batch_id": (batch.batch_id, header.get("batch_id")),
        "watermark_from": (batch.watermark_from, header.get("watermark_from")),
        "watermark_to": (batch.watermark_to, header.get("watermark_to")),
        "records": (batch.records, len(records) if isinstance(records, list) else None),
        "partial": (batch.partial, header.get("partial")),
    }
    differ = [name for name, (stored, signed_value) in row.items() if stored != signed_value]
    if differ:
        raise Quarantined(
            f"its outbox row differs from the signed payload in {', '.join(differ)}: the state "
            "was changed after the batch was signed",
            field="outbox",
        )


def read_stored(batch: OutboxBatch, *, keyring: Keyring, sender: str) -> Batch:
    """verify_stored, then the batch read in full (to be signed anew or renumbered)."""
    verify_stored(batch, keyring=keyring, sender=sender)
    try:
        return read_batch(batch.signed.payload)
    except OsmanthusError as exc:
        # signed by the job, yet not a batch this version reads: never sent, never signed anew
        raise Quarantined(f"is signed but not a readable batch: {exc}", field="payload") from None


def check_stored(
    state: SyncState, batch: OutboxBatch, *, keyring: Keyring, sender: str, at: datetime
) -> None:
    """verify_stored, quarantining `batch` (recorded in the state, logged at ERROR) if it
    fails; the Quarantined raised then names the batch, why, and the way out."""
    with _quarantining(state, batch, at=at):
        verify_stored(batch, keyring=keyring, sender=sender)


def check_and_read(
    state: SyncState, batch: OutboxBatch, *, keyring: Keyring, sender: str, at: datetime
) -> Batch:
    """read_stored, quarantining `batch` as check_stored does if it fails."""
    with _quarantining(state, batch, at=at):
        return read_stored(batch, keyring=keyring, sender=sender)
    raise AssertionError("unreachable: _quarantining re-raises")  # pragma: no cover


@contextmanager
def _quarantining(state: SyncState, batch: OutboxBatch, *, at: datetime) -> Iterator[None]:
    try:
        yield
    except Quarantined as exc:
        why = str(exc)
        state.quarantine(batch, payload_sha256=payload_sha256(batch), reason=why, at=at)
        kind = batch.kind.value
        _log.error(
            "QUARANTINED %s batch #%d (%s): %s. It is never signed anew nor sent, and the %s "
            "stream waits behind it: %s",
            kind,
            batch.sequence,
            batch.batch_id,
            why,
            kind,
            RECOVERY_HINT,
        )
        raise Quarantined(
            f"batch #{batch.sequence} ({batch.batch_id}) failed verification and is "
            f"quarantined: {why}; nothing was signed anew or sent, and the {kind} stream waits "
            f"behind it: {RECOVERY_HINT}"
        ) from None


def held_back(quarantined: QuarantinedBatch) -> Quarantined:
    """The error a stream reports while `quarantined` holds it back."""
    kind = quarantined.kind.value
    return Quarantined(
        f"the {kind} stream waits behind quarantined batch #{quarantined.sequence} "
        f"({quarantined.batch_id}, since {quarantined.quarantined_at:%Y-%m-%dT%H:%M:%SZ}): "
        f"{quarantined.reason}; {RECOVERY_HINT}"
    )

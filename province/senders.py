"""The receiver's sender registry (senders.toml): each city's keys and delivering certificates.

    [[sender]]
    id = "suzhou"                          # the sender id its batches carry
    public_keys = ["keys/suzhou-sync.pub"] # Ed25519 public keys (PEM), relative to this file
    certificates = ["sync-1"]              # requester certificates that may deliver for it

A sender may have several keys while it changes keys; a key belongs to one sender only. A
certificate named here delivers only for the senders that name it: deny by default.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from osmanthus.core.errors import ConfigError
from osmanthus.core.names import PEER_NAME_PATTERN
from osmanthus.core.peers import PeerRole
from osmanthus.core.syncbatch import sender_key_id
from osmanthus.core.tls import PeerIdentity

_SENDER_KEYS: Final = frozenset({"id", "public_keys", "certificates"})
#: the certificate role that may deliver: a city's sync job is a platform requester
DELIVERING_ROLE: Final = PeerRole.REQUESTER


@dataclass(frozen=True, kw_only=True)
class Sender:
    """One registered city: its id, its public keys by key id, its delivering certificates."""

    id: str
    keys: Mapping[str, Ed25519PublicKey]
    certificates: frozenset[str]


class SenderRegistry:
    """Who may deliver batches for which sender, and with which keys."""

    def __init__(self, *, senders: Sequence[Sender]) -> None:
        if not senders:
            raise ConfigError("no sender is registered: nobody could deliver", field="senders")
        self._senders: dict[str, Sender] = {}
        self._keys: dict[str, tuple[Sender, Ed25519PublicKey]] = {}
        for sender in senders:
            if sender.id in self._senders:
                raise ConfigError(f"sender {sender.id!r} is registered twice", field="senders")
            self._senders[sender.id] = sender
            for key_id, key in sender.keys.items():
                owner = self._keys.get(key_id)
                if owner is not None:
                    # a batch is attributed by its key: one key for two cities would let one
                    # city's batches pass as the other's
                    raise ConfigError(
                        f"key {key_id} is registered for both {owner[0].id!r} and {sender.id!r}; "
                        "each sender needs keys of its own",
                        field="senders",
                    )
                self._keys[key_id] = (sender, key)

    @property
    def senders(self) -> tuple[Sender, ...]:
        return tuple(self._senders.values())

    def senders_for(self, caller: PeerIdentity) -> frozenset[str]:
        """The senders `caller`'s certificate may deliver (and read batches) for."""
        if caller.role is not DELIVERING_ROLE:
            return frozenset()
        return frozenset(s.id for s in self._senders.values() if caller.name in s.certificates)

    def key(self, key_id: str) -> tuple[Sender, Ed25519PublicKey] | None:
        """The sender owning `key_id`, with the key; None if no sender registered it."""
        return self._keys.get(key_id)


def load_senders(path: Path) -> SenderRegistry:
    """Read and check senders.toml; ConfigError names the file, the entry and the problem."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"sender registry {path} does not exist", field="senders") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", field="senders") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}", field="senders") from None
    unknown = sorted(set(data) - {"sender"})
    if unknown:
        raise ConfigError(
            f"{path}: unknown top-level keys {unknown}; write one [[sender]] table per city",
            field="senders",
        )
    entries = data.get("sender", [])
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: lists no [[sender]] entries", field="senders")
    senders: list[Sender] = []
    for number, entry in enumerate(entries, start=1):
        where = f"{path}: sender {number}"
        if not isinstance(entry, dict) or set(entry) != _SENDER_KEYS:
            raise ConfigError(
                f"{where}: needs exactly the keys {', '.join(sorted(_SENDER_KEYS))}",
                field="senders",
            )
        sender_id = entry["id"]
        if not isinstance(sender_id, str) or not PEER_NAME_PATTERN.fullmatch(sender_id):
            raise ConfigError(
                f"{where}: id {sender_id!r} is not a sender id (1 to 63 lower-case letters, "
                "digits, - or _)",
                field="senders",
            )
        where = f"{path}: sender {sender_id!r}"
        keys: dict[str, Ed25519PublicKey] = {}
        for file in _strings(entry["public_keys"], where=f"{where}: public_keys"):
            key = _load_public_key(path.parent / file, where=where)
            keys[sender_key_id(key)] = key
        certificates = _strings(entry["certificates"], where=f"{where}: certificates")
        for name in certificates:
            if not PEER_NAME_PATTERN.fullmatch(name):
                raise ConfigError(
                    f"{where}: {name!r} is not a certificate name (the requester id its "
                    "certificate names: 1 to 63 lower-case letters, digits, - or _)",
                    field="senders",
                )
        senders.append(Sender(id=sender_id, keys=keys, certificates=frozenset(certificates)))
    try:
        return SenderRegistry(senders=senders)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc.message}", field="senders") from None


def _strings(value: object, *, where: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a non-empty list of strings", field="senders")
    return list(value)


def _load_public_key(path: Path, *, where: str) -> Ed25519PublicKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"{where}: cannot read the public key {path}: {exc.strerror}", field="senders"
        ) from None
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise ConfigError(
            f"{where}: {path} is not a PEM public key ('osmanthus province keygen' makes one)",
            field="senders",
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(
            f"{where}: {path} holds a {type(key).__name__}, not an Ed25519 public key",
            field="senders",
        )
    return key

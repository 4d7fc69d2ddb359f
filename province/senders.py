"""The receiver's sender registry (senders.toml): each city's keys and delivering certificates.

    [[sender]]
    id = "suzhou"                          # the sender id its batches carry
    public_keys = ["keys/suzhou-sync.pub"] # Ed25519 public keys (PEM), relative to this file
    certificates = ["sync-1"]              # requester certificates that may deliver for it

A sender may have several keys while it changes keys; a key belongs to one sender only. A
certificate named here delivers only for the senders that name it: deny by default. Unknown keys
are refused; a problem is named by its path in the file, e.g. sender[1].public_keys[0].
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Final, Self

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    model_validator,
)

from osmanthus.core.errors import ConfigError
from osmanthus.core.names import PEER_NAME_PATTERN
from osmanthus.core.peers import PeerRole
from osmanthus.core.settings import Settings, load_settings, problem, relative_path
from osmanthus.core.syncbatch import sender_key_id
from osmanthus.core.tls import PeerIdentity

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


# --- the file ------------------------------------------------------------------------------------


def _sender_id(value: str) -> str:
    if not PEER_NAME_PATTERN.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a sender id (1 to 63 lower-case letters, digits, - or _)"
        )
    return value


def _certificate_name(value: str) -> str:
    if not PEER_NAME_PATTERN.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a certificate name (the requester id its certificate names: "
            "1 to 63 lower-case letters, digits, - or _)"
        )
    return value


def _public_key(path: Path) -> Ed25519PublicKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read the public key {path}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise ValueError(
            f"{path} is not a PEM public key ('osmanthus province keygen' makes one)"
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} holds a {type(key).__name__}, not an Ed25519 public key")
    return key


def _key_file(value: object, info: ValidationInfo) -> Ed25519PublicKey:
    return _public_key(relative_path(value, info))


class _Sender(Settings):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    id: Annotated[str, AfterValidator(_sender_id)]
    # each file is read as it is validated: a missing or wrong key is named by its index
    public_keys: list[Annotated[Ed25519PublicKey, BeforeValidator(_key_file)]] = Field(
        min_length=1, description="the Ed25519 public key files the sender signs with"
    )
    certificates: list[Annotated[str, AfterValidator(_certificate_name)]] = Field(
        min_length=1, description="the requester certificates that may deliver for the sender"
    )


class _SendersFile(Settings):
    sender: list[_Sender] = Field(min_length=1, description="one [[sender]] table per city")

    @model_validator(mode="after")
    def _each_sender_and_key_once(self) -> Self:
        senders: set[str] = set()
        owners: dict[str, str] = {}
        for i, entry in enumerate(self.sender):
            if entry.id in senders:
                raise problem(f"sender {entry.id!r} is registered twice", "sender", i, "id")
            senders.add(entry.id)
            own: list[str] = []
            for j, key in enumerate(entry.public_keys):
                key_id = sender_key_id(key)
                if key_id in own:
                    first = own.index(key_id)
                    raise problem(
                        f"is the same key as public_keys[{first}]: list it once",
                        "sender", i, "public_keys", j,
                    )  # fmt: skip
                owner = owners.get(key_id)
                if owner is not None:
                    # a batch is attributed by its key: one key for two cities would let one
                    # city's batches pass as the other's
                    raise problem(
                        f"key {key_id} is registered for both {owner!r} and "
                        f"{entry.id!r}; each sender needs keys of its own",
                        "sender", i, "public_keys", j,
                    )  # fmt: skip
                own.append(key_id)
                owners[key_id] = entry.id
        return self


def load_senders(path: Path) -> SenderRegistry:
    """Read and check senders.toml; ConfigError names the file, each problem's path and what
    is wrong there."""
    registry = load_settings(path, _SendersFile, what="sender registry", field="senders")
    return SenderRegistry(
        senders=[
            Sender(
                id=entry.id,
                keys={sender_key_id(key): key for key in entry.public_keys},
                certificates=frozenset(entry.certificates),
            )
            for entry in registry.sender
        ]
    )

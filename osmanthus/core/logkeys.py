"""Names of the platform's transparency logs and witnesses, and the roster of their public keys.

Every audit log has an origin (the first line of its C2SP tlog-checkpoint notes), a schema-less
URL built from its peer's DNS name: `housing.node.osmanthus/audit`, `coordinator.osmanthus/audit`.
The log signs its checkpoints with an Ed25519 note key named after its origin; a witness
cosigns with a key named `<peer DNS name>/witness`. The roster (`logs.toml` at the root of the
certificates directory, public) lists both kinds of verifier keys, so that witnesses, the portal
and auditors trust the same keys and nothing a log serves about itself:

    [[log]]
    origin = "housing.node.osmanthus/audit"
    key = "housing.node.osmanthus/audit+1a2b3c4d+AQ..."

    [[witness]]
    name = "coordinator.osmanthus/witness"
    key = "coordinator.osmanthus/witness+5e6f7a8b+BA..."

Coordinator replicas (several coordinators on one PostgreSQL state database) each write an
audit log of their own, so each needs a log identity of its own: two different logs under one
origin and key are exactly what a witness refuses as a fork. A replica started with a name
(`coordinator serve --replica NAME`) signs as `NAME.coordinator.osmanthus/audit` with a key of
its own (`coordinator/replicas/NAME/log.key` in the CA directory); the coordinator without a
replica name keeps `coordinator.osmanthus/audit`. The replicas are one party: they serve the
coordinator's certificate (`coordinator.osmanthus`), and a witness of the coordinator is not
counted as a witness of a replica's log.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

from osmanthus.core.errors import ConfigError, InvalidArgument, NotFound
from osmanthus.core.files import write_atomically
from osmanthus.core.peers import (
    COORDINATOR_DNS_NAME,
    COORDINATOR_NAME,
    PeerRole,
    node_dns_name,
    validate_name,
)
from osmanthus.core.signednote import CosignatureVerifier, NoteVerifier

#: the roster's file name at the root of a certificates directory
ROSTER_FILE: Final = "logs.toml"
#: a peer's log signing key (NoteSigner key text, a secret) and its verifier key text
LOG_KEY_FILE: Final = "log.key"
LOG_PUBLIC_KEY_FILE: Final = "log.pub"
#: a peer's witness cosigning key (CosignatureSigner key text, a secret) and its verifier key
WITNESS_KEY_FILE: Final = "witness.key"
WITNESS_PUBLIC_KEY_FILE: Final = "witness.pub"
#: the path segment after a peer's DNS name in a log's origin and a witness's key name
LOG_SUFFIX: Final = "/audit"
WITNESS_SUFFIX: Final = "/witness"
#: where a coordinator replica's own keys live under the coordinator's directory of a CA
#: directory: `coordinator/replicas/NAME/log.key`
REPLICAS_DIR: Final = "replicas"

_V = TypeVar("_V", NoteVerifier, CosignatureVerifier)


def _dns_name(role: PeerRole, name: str) -> str:
    if role is PeerRole.COORDINATOR:
        if name != COORDINATOR_NAME:
            raise InvalidArgument(
                f"the coordinator is named {COORDINATOR_NAME!r}, not {name!r}", field="name"
            )
        return COORDINATOR_DNS_NAME
    if role is PeerRole.NODE:
        return node_dns_name(validate_name(name, field="name"))
    raise InvalidArgument(
        f"only the coordinator and department nodes keep logs and witness, not a {role.value}",
        field="role",
    )


def log_origin(role: PeerRole, name: str) -> str:
    """The origin of a peer's audit log, e.g. "housing.node.osmanthus/audit"."""
    return _dns_name(role, name) + LOG_SUFFIX


def witness_name(role: PeerRole, name: str) -> str:
    """The key name of a peer's witness, e.g. "province.node.osmanthus/witness"."""
    return _dns_name(role, name) + WITNESS_SUFFIX


def replica_host(replica: str | None) -> str:
    """The host part of a coordinator replica's log origin and witness name
    ("coordinator-2.coordinator.osmanthus"); None: the coordinator's ("coordinator.osmanthus")."""
    if replica is None:
        return COORDINATOR_DNS_NAME
    return f"{validate_name(replica, field='replica')}.{COORDINATOR_DNS_NAME}"


def coordinator_log_origin(replica: str | None) -> str:
    """The origin of a coordinator's audit log: "coordinator-2.coordinator.osmanthus/audit" for
    the replica `coordinator-2`, "coordinator.osmanthus/audit" without a replica name."""
    return replica_host(replica) + LOG_SUFFIX


#: why a coordinator replica has no witness key: each replica would keep a witness state of its
#: own, so a department could show each replica another history and have both cosigned as the
#: coordinator's; the coordinator without a replica name witnesses the nodes' logs
WITNESSING_REPLICA = (
    "a coordinator replica does not witness: each replica would keep a witness state of its "
    "own, and a department could show each another history and have both cosigned; the "
    "coordinator without --replica witnesses the nodes' logs"
)


def coordinator_witness_name(replica: str | None) -> str:
    """The key name of a coordinator's witness ("coordinator-2.coordinator.osmanthus/witness")."""
    return replica_host(replica) + WITNESS_SUFFIX


def replica_of(origin: str) -> str | None:
    """The replica name in a coordinator replica's log origin; None for any other origin
    (a node's, the coordinator's without a replica name, or no origin the platform makes)."""
    host, slash, rest = origin.partition("/")
    name, dot, parent = host.partition(".")
    if slash + rest != LOG_SUFFIX or dot != "." or parent != COORDINATOR_DNS_NAME:
        return None
    try:
        return validate_name(name, field="replica")
    except InvalidArgument:
        return None


def party_host(name: str) -> str:
    """The host of the party that runs the log or witness `name` (an origin or a witness key
    name): a coordinator replica's is the coordinator's, since the replicas are one party
    under one certificate; anyone else's is the name's own host."""
    host = name.partition("/")[0]
    if host.endswith("." + COORDINATOR_DNS_NAME):
        return COORDINATOR_DNS_NAME
    return host


def is_coordinator_origin(origin: str) -> bool:
    """Whether `origin` is the coordinator's log or a coordinator replica's."""
    return origin == coordinator_log_origin(None) or replica_of(origin) is not None


@dataclass(frozen=True)
class LogRoster:
    """The verifier keys of every log (by origin) and every witness (by key name)."""

    logs: Mapping[str, NoteVerifier] = field(default_factory=dict)
    witnesses: Mapping[str, CosignatureVerifier] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for origin, verifier in self.logs.items():
            if verifier.name != origin:
                raise InvalidArgument(
                    f"the key for log {origin!r} is named {verifier.name!r}: a log's key is"
                    " named after its origin",
                    field="log.key",
                )
        for name, witness in self.witnesses.items():
            if witness.name != name:
                raise InvalidArgument(
                    f"the key for witness {name!r} is named {witness.name!r}", field="witness.key"
                )

    def origins(self) -> list[str]:
        return sorted(self.logs)

    def log_verifier(self, origin: str) -> NoteVerifier:
        """The key of the log `origin`; NotFound names the origin when the roster lacks it."""
        try:
            return self.logs[origin]
        except KeyError:
            raise NotFound(f"no log {origin!r} in the roster", field="origin") from None

    def origins_with_key(self, verifier: NoteVerifier) -> list[str]:
        """The origins whose listed key has the public key of `verifier`, whatever its name:
        one Ed25519 key must sign for one log only, or two logs could pass for each other."""
        mine = verifier.public_key.public_bytes_raw()
        return sorted(
            origin
            for origin, listed in self.logs.items()
            if listed.public_key.public_bytes_raw() == mine
        )

    def witness_verifiers(self) -> list[CosignatureVerifier]:
        return [self.witnesses[name] for name in sorted(self.witnesses)]

    def with_log(self, verifier: NoteVerifier) -> LogRoster:
        """A roster with `verifier` added (or replacing the key of its origin)."""
        return LogRoster(logs={**self.logs, verifier.name: verifier}, witnesses=self.witnesses)

    def with_witness(self, verifier: CosignatureVerifier) -> LogRoster:
        return LogRoster(logs=self.logs, witnesses={**self.witnesses, verifier.name: verifier})

    @classmethod
    def loads(cls, text: str, *, source: str = ROSTER_FILE) -> LogRoster:
        """Parse a roster; ConfigError names the table, its position and the problem."""
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{source}: not valid TOML: {e}") from None
        unknown = set(raw) - {"log", "witness"}
        if unknown:
            raise ConfigError(
                f"{source}: unknown table(s) {sorted(unknown)}: use [[log]], [[witness]]"
            )
        logs: dict[str, NoteVerifier] = {}
        for i, item in enumerate(_tables(raw, "log", source)):
            where = f"{source}: log[{i}]"
            origin = _text(item, "origin", where, allowed={"origin", "key"})
            if origin in logs:
                raise ConfigError(f"{where}: origin {origin!r} is listed twice")
            logs[origin] = _key(NoteVerifier, item, where)
        witnesses: dict[str, CosignatureVerifier] = {}
        for i, item in enumerate(_tables(raw, "witness", source)):
            where = f"{source}: witness[{i}]"
            name = _text(item, "name", where, allowed={"name", "key"})
            if name in witnesses:
                raise ConfigError(f"{where}: witness {name!r} is listed twice")
            witnesses[name] = _key(CosignatureVerifier, item, where)
        try:
            return cls(logs=logs, witnesses=witnesses)
        except InvalidArgument as e:
            raise ConfigError(f"{source}: {e}") from None

    @classmethod
    def load(cls, path: Path) -> LogRoster:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{path}: no log roster there (certs init writes it)") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: cannot read the log roster: {e}") from None
        return cls.loads(text, source=str(path))

    def dumps(self) -> str:
        lines = [
            "# The platform's transparency logs and witnesses: their public (verifier) keys.",
            "# Written by `osmanthus certs`; public. Who trusts a checkpoint trusts these keys.",
        ]
        for origin in sorted(self.logs):
            lines += ["", "[[log]]", f"origin = {_quoted(origin)}"]
            lines.append(f"key = {_quoted(self.logs[origin].verifier_key)}")
        for name in sorted(self.witnesses):
            lines += ["", "[[witness]]", f"name = {_quoted(name)}"]
            lines.append(f"key = {_quoted(self.witnesses[name].verifier_key)}")
        return "\n".join(lines) + "\n"

    def dump(self, path: Path) -> None:
        """Write the roster atomically (it is public: mode 0644)."""
        write_atomically(path, self.dumps().encode("utf-8"), mode=0o644)


def _quoted(text: str) -> str:
    # a JSON string of printable ASCII is a TOML basic string; key texts and origins are ASCII
    return json.dumps(text, ensure_ascii=True)


def _tables(raw: Mapping[str, Any], name: str, source: str) -> Iterable[Mapping[str, Any]]:
    items = raw.get(name, [])
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ConfigError(f"{source}: {name} must be an array of tables ([[{name}]])")
    return items


def _text(item: Mapping[str, Any], key: str, where: str, *, allowed: set[str]) -> str:
    unknown = set(item) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}")
    value = item.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: {key} must be a non-empty string")
    return value


def _key(kind: type[_V], item: Mapping[str, Any], where: str) -> _V:
    text = item.get("key")
    if not isinstance(text, str):
        raise ConfigError(f"{where}: key must be a verifier key text")
    try:
        return kind.from_key_text(text)
    except InvalidArgument as e:
        raise ConfigError(f"{where}: key: {e.message}") from None

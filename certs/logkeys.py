"""Transparency log and witness keys: each peer's Ed25519 note keys, and the roster (logs.toml).

Every department node and the coordinator sign their audit log's checkpoints with a key of
their own, `log.key` (mode 0600) beside their certificate, named after the log's origin
(osmanthus.core.logkeys.log_origin). A witness cosigns with `witness.key`, named
`<peer DNS name>/witness`. The public halves (`log.pub`, `witness.pub`) go into the roster,
`logs.toml` at the root of the certificates directory, which witnesses, the portal and auditors
read: it is public, and whoever trusts a checkpoint trusts the keys it lists.

A coordinator replica (several coordinators on one PostgreSQL state database) has keys of its
own in `coordinator/replicas/NAME/`: `log.key` named `NAME.coordinator.osmanthus/audit` and,
if made, `witness.key` named `NAME.coordinator.osmanthus/witness`.

Keys are kept when they exist, as the consent key is: a checkpoint or cosignature already handed
out verifies only against the key that made it. A .pub without its key is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from osmanthus.core.errors import ConfigError, InvalidArgument
from osmanthus.core.logkeyfiles import load_or_create_signer
from osmanthus.core.logkeys import (
    LOG_KEY_FILE,
    LOG_PUBLIC_KEY_FILE,
    REPLICAS_DIR,
    ROSTER_FILE,
    WITNESS_KEY_FILE,
    WITNESS_PUBLIC_KEY_FILE,
    WITNESSING_REPLICA,
    LogRoster,
    coordinator_log_origin,
    coordinator_witness_name,
    log_origin,
    witness_name,
)
from osmanthus.core.peers import COORDINATOR_NAME, PeerRole, peer_dir, validate_name
from osmanthus.core.signednote import (
    CosignatureSigner,
    CosignatureVerifier,
    NoteSigner,
    NoteVerifier,
)

#: the roles whose peers keep an audit log or witness
LOG_ROLES = (PeerRole.NODE, PeerRole.COORDINATOR)


@dataclass(frozen=True)
class LogKeyPaths:
    """One peer's key pair (log or witness) and the name the key signs as."""

    name: str
    private: Path
    public: Path
    #: whether the key was made by this call (False: an existing key was kept)
    created: bool


def roster_path(certs_dir: Path) -> Path:
    return certs_dir / ROSTER_FILE


def _check_role(role: PeerRole) -> None:
    if role not in LOG_ROLES:
        raise InvalidArgument(
            f"only the coordinator and department nodes have log or witness keys, not a "
            f"{role.value}",
            field="role",
        )


def _load_roster(certs_dir: Path) -> LogRoster:
    path = roster_path(certs_dir)
    return LogRoster.load(path) if path.exists() else LogRoster()


def replica_dir(certs_dir: Path, replica: str) -> Path:
    """Where a coordinator replica's own keys live: `coordinator/replicas/NAME`."""
    coordinator = peer_dir(certs_dir, role=PeerRole.COORDINATOR, name=COORDINATOR_NAME)
    return coordinator / REPLICAS_DIR / validate_name(replica, field="replica")


def _key_place(
    certs_dir: Path, role: PeerRole, name: str, replica: str | None
) -> tuple[Path, str, str]:
    """The directory of a peer's (or replica's) keys, its log origin and its witness name."""
    _check_role(role)
    if replica is None:
        directory = peer_dir(certs_dir, role=role, name=name)
        return directory, log_origin(role, name), witness_name(role, name)
    if role is not PeerRole.COORDINATOR:
        raise InvalidArgument(
            f"only the coordinator has replicas, not a {role.value}", field="replica"
        )
    peer_dir(certs_dir, role=role, name=name)  # the coordinator's name, checked
    directory = replica_dir(certs_dir, replica)
    return directory, coordinator_log_origin(replica), coordinator_witness_name(replica)


def _log_key(
    certs_dir: Path, role: PeerRole, name: str, replica: str | None = None
) -> tuple[LogKeyPaths, NoteVerifier]:
    directory, origin, _ = _key_place(certs_dir, role, name, replica)
    if replica is not None:
        directory.mkdir(parents=True, exist_ok=True)
    signer, created = load_or_create_signer(
        NoteSigner,
        directory / LOG_KEY_FILE,
        directory / LOG_PUBLIC_KEY_FILE,
        name=origin,
        field="log_key",
    )
    paths = LogKeyPaths(
        name=origin,
        private=directory / LOG_KEY_FILE,
        public=directory / LOG_PUBLIC_KEY_FILE,
        created=created,
    )
    return paths, NoteVerifier(name=signer.name, public_key=signer.public_key)


def _witness_key(
    certs_dir: Path, role: PeerRole, name: str, replica: str | None = None
) -> tuple[LogKeyPaths, CosignatureSigner]:
    directory, _, witness = _key_place(certs_dir, role, name, replica)
    if replica is not None:
        directory.mkdir(parents=True, exist_ok=True)
    signer, created = load_or_create_signer(
        CosignatureSigner,
        directory / WITNESS_KEY_FILE,
        directory / WITNESS_PUBLIC_KEY_FILE,
        name=witness,
        field="witness_key",
    )
    paths = LogKeyPaths(
        name=signer.name,
        private=directory / WITNESS_KEY_FILE,
        public=directory / WITNESS_PUBLIC_KEY_FILE,
        created=created,
    )
    return paths, signer


def _with_checked_log(roster: LogRoster, verifier: NoteVerifier, certs_dir: Path) -> LogRoster:
    listed = roster.logs.get(verifier.name)
    if listed is not None and listed.verifier_key != verifier.verifier_key:
        # the roster is what witnesses and auditors trust: a silent change of key would make
        # every checkpoint already cosigned look forged, or a forged log look genuine
        raise ConfigError(
            f"{roster_path(certs_dir)} lists another key for log {verifier.name!r} than its "
            "log.pub: restore the peer's log.key from backup, or edit the roster knowingly",
            field="log_key",
        )
    others = [o for o in roster.origins_with_key(verifier) if o != verifier.name]
    if others:
        # a key copied from another peer's directory: it would sign for two logs
        raise ConfigError(
            f"{roster_path(certs_dir)} lists the public key of {verifier.name!r} for "
            f"{', '.join(others)} already: every log needs a key of its own. Remove the copied "
            "log.key and log.pub and run this again to make one",
            field="log_key",
        )
    return roster.with_log(verifier)


def _with_checked_witness(
    roster: LogRoster, signer: CosignatureSigner, certs_dir: Path
) -> LogRoster:
    listed = roster.witnesses.get(signer.name)
    if listed is not None and listed.verifier_key != signer.verifier_key:
        raise ConfigError(
            f"{roster_path(certs_dir)} lists another key for witness {signer.name!r} than its "
            "witness.pub: restore the peer's witness.key from backup, or edit the roster "
            "knowingly",
            field="witness_key",
        )
    return roster.with_witness(CosignatureVerifier(name=signer.name, public_key=signer.public_key))


def init_log_keys(certs_dir: Path, *, departments: Sequence[str]) -> dict[str, LogKeyPaths]:
    """The coordinator's log and witness keys and each department node's log key (each kept if
    it exists), and `logs.toml` listing them with whatever the roster already listed.

    The result is keyed by the key's name (a log's origin, or a witness's name).
    """
    roster = _load_roster(certs_dir)
    made: dict[str, LogKeyPaths] = {}
    peers = [(PeerRole.COORDINATOR, COORDINATOR_NAME)]
    peers += [(PeerRole.NODE, d) for d in departments]
    for role, name in peers:
        paths, verifier = _log_key(certs_dir, role, name)
        roster = _with_checked_log(roster, verifier, certs_dir)
        made[paths.name] = paths
    paths, signer = _witness_key(certs_dir, PeerRole.COORDINATOR, COORDINATOR_NAME)
    roster = _with_checked_witness(roster, signer, certs_dir)
    made[paths.name] = paths
    roster.dump(roster_path(certs_dir))
    return made


def create_log_key(
    certs_dir: Path,
    *,
    role: PeerRole,
    name: str,
    witness: bool = False,
    replica: str | None = None,
) -> LogKeyPaths:
    """One peer's log key (or, with `witness`, its witness key), kept if it exists, and its
    public key added to `logs.toml` (created if missing).

    For a peer added after `certs init`: a new department's node, a witness such as the
    provincial receiver (`--role node --name province --witness`), or a coordinator replica
    (`--role coordinator --replica NAME`: a log identity of its own).
    """
    if not isinstance(role, PeerRole):
        raise InvalidArgument(f"{role!r} is not a PeerRole", field="role")
    if witness and replica is not None:
        raise InvalidArgument(WITNESSING_REPLICA, field="replica")
    roster = _load_roster(certs_dir)
    if witness:
        paths, signer = _witness_key(certs_dir, role, name, replica)
        roster = _with_checked_witness(roster, signer, certs_dir)
    else:
        paths, verifier = _log_key(certs_dir, role, name, replica)
        roster = _with_checked_log(roster, verifier, certs_dir)
    roster.dump(roster_path(certs_dir))
    return paths

"""What a server reports of itself for `osmanthus status`: its audit log's standing, the catalogue's
fingerprint, when a file last changed.

Node and coordinator fill their status answers from these; the CLI judges them. Everything here
is counts, sizes, times and digests: nothing about a subject, a requester or a record.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

from osmanthus.core.catalogue import Catalogue

if TYPE_CHECKING:
    from osmanthus.core.audit import AuditLog
    from osmanthus.core.checkpoints import Checkpointer


class Checkpointed(Protocol):
    """A transparency log (osmanthus.core.logserver.LocalLog, which the SDK must not import)."""

    @property
    def checkpointer(self) -> Checkpointer: ...


#: NodeInfo.last_ingest_source of records imported into the running node (operator or inbox)
LIVE_INGEST: Final = "live"
#: ... of records loaded with `osmanthus node import` while the node was stopped
OFFLINE_INGEST: Final = "offline"
#: ... when the store records no import (built before import history was kept): the record
#: store file's last change is the time
FILE_TIME: Final = "file time"
#: checkpoint_age_s on the wire for a log that has no checkpoint yet
NO_CHECKPOINT_AGE: Final = -1.0


@dataclass(frozen=True)
class AuditStanding:
    """One audit log at one moment: its entries and its latest checkpoint."""

    entries: int
    #: whether a log key signs checkpoints of it (a transparency log)
    checkpoints: bool
    #: the entries the latest checkpoint signed (0: none)
    checkpoint_size: int = 0
    #: seconds since the latest checkpoint was signed, by the server's clock (None: none yet)
    checkpoint_age_s: float | None = None
    #: why the log cannot be written (the cause, no path); None when it can
    failure: str | None = None

    @property
    def unsigned_entries(self) -> int:
        """Entries appended since the latest checkpoint (no witness can vouch for them yet)."""
        return max(0, self.entries - self.checkpoint_size)


def audit_standing(
    log: AuditLog, local: Checkpointed | None, *, now: Callable[[], float] = time.time
) -> AuditStanding:
    """`log`'s standing; `local` is its transparency log, None when no log key signs it.

    A checkpoint's age is the age of the `<log>.checkpoint` file, which the checkpointer
    replaces (atomically) with each checkpoint it signs: a checkpoint note carries no time."""
    failure = log.failure
    # the tree's files share the log's disk: on a full disk it falls behind, and the status
    # must still answer (with the entries it holds)
    entries = log.tree_size_known
    if local is None:
        return AuditStanding(entries=entries, checkpoints=False, failure=failure)
    last = local.checkpointer.last
    if last is None:
        return AuditStanding(entries=entries, checkpoints=True, failure=failure)
    signed_at = modified_at(local.checkpointer.latest_path)
    age = max(0.0, now() - signed_at) if signed_at is not None else None
    return AuditStanding(
        entries=entries,
        checkpoints=True,
        checkpoint_size=last.size,
        checkpoint_age_s=age,
        failure=failure,
    )


def modified_at(path: Path) -> float | None:
    """When `path` last changed (seconds since the epoch), None if it cannot be read."""
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def catalogue_digest(catalogue: Catalogue) -> str:
    """A SHA-256 fingerprint of a loaded catalogue: the same file loaded by the same Osmanthus
    version gives the same digest, so servers that disagree hold different catalogues."""
    return hashlib.sha256(_canonical(catalogue).encode("utf-8")).hexdigest()


def _canonical(value: object) -> str:
    """A text for `value` that does not depend on the process: sets are sorted (their order
    follows string hashing, which differs between processes), mappings by key."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = (
            f"{f.name}={_canonical(getattr(value, f.name))}" for f in dataclasses.fields(value)
        )
        return f"{type(value).__name__}({','.join(fields)})"
    if isinstance(value, Enum):
        return repr(value.value)
    if isinstance(value, Mapping):
        items = sorted((_canonical(k), _canonical(v)) for k, v in value.items())
        return "{" + ",".join(f"{k}:{v}" for k, v in items) + "}"
    if isinstance(value, set | frozenset):
        return "{" + ",".join(sorted(_canonical(v) for v in value)) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_canonical(v) for v in value) + "]"
    return repr(value)

"""Where the coordinator keeps its state: one interface, two backends.

The state is the consent registry (with its revocation feed), the requester key registry, the
disclosure ledger (pinned department sets), the ε ledger and the rate-limit windows. Each is
used through the file implementation's class (ConsentRegistry, KeyRegistry, DisclosureLedger,
EpsilonLedger, RateLimiter), which is the interface; the backends are

* files (the default, and what the demo uses): DuckDB and SQLite files in the state directory,
  rate limits in the process's memory. One coordinator process per state directory.
* PostgreSQL (`--state-url postgresql://...`): every replica pointed at one database serves
  the same federation (coordinator/pgstate.py, pgregistries.py, pgledgers.py). The replicas
  also share, through the database, the audit salt (pins are keyed by salted subject hashes)
  and the consent signing key's id (each must sign with the key the nodes trust), and the ids
  of the single-use tokens already answered (coordinator/pgreplay.py).

Each replica keeps its own audit log, witness state and policy files in its state directory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from coordinator.consent import ConsentRegistry
from coordinator.disclosure import DisclosureLedger
from coordinator.epsilon import EpsilonLedger
from coordinator.keys import KeyRegistry
from coordinator.ratelimit import RateLimiter
from osmanthus.core.errors import ConfigError
from osmanthus.core.files import PRIVATE_FILE_MODE, write_atomically
from osmanthus.core.receipts import consent_key_id
from osmanthus.core.tokens import ReplayCache

_log = logging.getLogger(__name__)

CONSENTS_FILE: Final = "consents.duckdb"
KEYS_FILE: Final = "keys.duckdb"
DISCLOSURES_FILE: Final = "disclosures.sqlite"
EPSILON_FILE: Final = "epsilon.sqlite"


@dataclass(frozen=True)
class StateStores:
    """The coordinator's registries and ledgers, of one backend."""

    consents: ConsentRegistry
    keys: KeyRegistry
    disclosures: DisclosureLedger
    epsilon: EpsilonLedger
    rate_limiter: RateLimiter


class StateBackend:
    """The embedded files in the state directory (the default)."""

    #: what the log line and `osmanthus status` name
    description = "files in the state directory"

    def adopt_salt(self, path: Path) -> None:
        """Before the audit salt is read: nothing to adopt, each directory has its own."""

    def share_salt(self, salt: bytes) -> bytes:
        """The audit salt this coordinator hashes subjects with."""
        return salt

    def check_consent_key(self, key: Ed25519PrivateKey) -> None:
        """Refuse a consent key other than the one the shared state was signed with."""

    def replay_cache(self) -> ReplayCache:
        """Where single-use tokens' ids are remembered: this process's memory."""
        return ReplayCache()

    def open(
        self, state_dir: Path, *, receipt_key: Ed25519PrivateKey, receipt_issuer: str
    ) -> StateStores:
        """Open every registry and ledger; the caller closes them (`close_stores`)."""
        keys = KeyRegistry(state_dir / KEYS_FILE)
        opened: list[KeyRegistry | ConsentRegistry | DisclosureLedger | EpsilonLedger] = [keys]
        try:
            consents = ConsentRegistry(
                state_dir / CONSENTS_FILE, receipt_key=receipt_key, receipt_issuer=receipt_issuer
            )
            opened.append(consents)
            disclosures = DisclosureLedger(state_dir / DISCLOSURES_FILE)
            opened.append(disclosures)
            epsilon = EpsilonLedger(state_dir / EPSILON_FILE)
        except BaseException:
            for store in reversed(opened):
                store.close()
            raise
        return StateStores(consents, keys, disclosures, epsilon, RateLimiter())

    def close(self) -> None:
        """Close what the backend holds beside the stores."""


class PostgresBackend(StateBackend):
    """One PostgreSQL database shared by every replica."""

    def __init__(self, url: str) -> None:
        # imported here: psycopg is needed only by coordinators that use PostgreSQL
        from coordinator.pgstate import PgState, redacted

        self._state = PgState(url)
        self.description = f"PostgreSQL at {redacted(url)}"

    def adopt_salt(self, path: Path) -> None:
        """A replica's first start takes the salt the other replicas use."""
        from coordinator.pgstate import SALT_KEY

        rows = self._state.read("SELECT value FROM osm_meta WHERE key = %s", [SALT_KEY])
        if rows and not path.exists():
            write_atomically(
                path, bytes(rows[0][0]), mode=PRIVATE_FILE_MODE, overwrite=False, field="state_dir"
            )
            _log.info("%s: the audit salt shared by the replicas, copied from the database", path)

    def share_salt(self, salt: bytes) -> bytes:
        from coordinator.pgstate import SALT_KEY, shared_value

        shared = shared_value(self._state, SALT_KEY, salt)
        if shared != salt:
            # pins are keyed by salted hashes: another salt would unpin every subject
            raise ConfigError(
                "this replica's audit.salt differs from the one the replicas share in the state "
                "database; remove it (the replica then takes the shared one) or restore it from "
                "the other replicas",
                field="state_dir",
            )
        return salt

    def check_consent_key(self, key: Ed25519PrivateKey) -> None:
        from coordinator.pgstate import CONSENT_KEY_ID_KEY, shared_value

        mine = consent_key_id(key.public_key())
        shared = shared_value(self._state, CONSENT_KEY_ID_KEY, mine.encode()).decode()
        if shared != mine:
            raise ConfigError(
                f"this replica's consent key is {mine}, but the replicas sign receipts with "
                f"{shared}: give every replica the same consent.key (--consent-key), the one "
                "whose consent.pub the nodes were given",
                field="consent_key",
            )

    def replay_cache(self) -> ReplayCache:
        """The shared database: a single-use token is answered once at all the replicas."""
        from coordinator.pgreplay import PgReplayCache

        return PgReplayCache(self._state)

    def open(
        self, state_dir: Path, *, receipt_key: Ed25519PrivateKey, receipt_issuer: str
    ) -> StateStores:
        from coordinator.pgledgers import PgDisclosureLedger, PgEpsilonLedger, PgRateLimiter
        from coordinator.pgregistries import PgConsentRegistry, PgKeyRegistry

        state = self._state
        return StateStores(
            consents=PgConsentRegistry(
                state, receipt_key=receipt_key, receipt_issuer=receipt_issuer
            ),
            keys=PgKeyRegistry(state),
            disclosures=PgDisclosureLedger(state),
            epsilon=PgEpsilonLedger(state),
            rate_limiter=PgRateLimiter(state),
        )

    def close(self) -> None:
        self._state.close()


def open_backend(state_url: str | None) -> StateBackend:
    """The backend `state_url` names: None for the state directory's files."""
    if state_url is None:
        return StateBackend()
    backend = PostgresBackend(state_url)
    _log.info("the coordinator's registries and ledgers are in %s", backend.description)
    return backend


def close_stores(stores: StateStores) -> None:
    """Close every registry and ledger (the rate limiter holds nothing to close)."""
    stores.consents.close()
    stores.keys.close()
    stores.disclosures.close()
    stores.epsilon.close()

"""The token issuer's deny list: tokens withdrawn before they expire, checked on every verification.

A requester's token is a bearer credential valid until its `exp`. To withdraw one earlier, the
issuer (`osmanthus token revoke`) adds to its deny list either

- a requester and a cut-off: every token of that requester issued (`iat`) before the cut-off is
  refused, so its outstanding tokens stop working and a token issued afterwards works; or
- one token's `jti`.

The list is one file in the one signing envelope (osmanthus.core.signing, payload type
TOKEN_DENY_LIST_TYPE), signed with the token issuer's own Ed25519 key, so every server that
verifies tokens already holds the key that verifies it (--issuer-public-key). Its payload is

    {"format": 1, "issuer": <the tokens' iss>, "sequence": N, "issued_at": <UTC, seconds>,
     "requesters": [{"requester", "issued_before", "reason", "added_at"}, ...],
     "tokens": [{"jti", "reason", "added_at"}, ...]}

A server (`--token-deny-list`) verifies the list at start and polls the file: a new list is put
in force only if the issuer's key signed it, it names the same issuer, its sequence is higher
and its issued_at is not earlier than the list in force's (and not far ahead of the server's
clock). Anything else changes nothing and is logged as a WARNING. Entries are never dropped by
the issuer's tools: a cut-off applies to tokens that may live for as long as a token may.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from osmanthus.core import signing
from osmanthus.core.errors import (
    ConfigError,
    InvalidArgument,
    OsmanthusError,
)
from osmanthus.core.files import write_atomically
from osmanthus.core.filewatch import AheadOfClock, PolledFile, read_limited
from osmanthus.core.names import PEER_NAME_PATTERN
from osmanthus.core.tokens import JTI_PATTERN, TokenClaims

_log = logging.getLogger(__name__)

DENY_LIST_FORMAT: Final = 1
#: how often a server looks at its deny list file: a withdrawal is in force within this long
DENY_LIST_POLL_S: Final = 2.0
#: entries of each kind a list may hold
MAX_ENTRIES: Final = 100_000
MAX_REASON_CHARS: Final = 200
#: how far ahead of a server's clock a list's issued_at may be (see osmanthus.core.crl)
MAX_CLOCK_AHEAD: Final = timedelta(hours=1)
_FIELDS: Final = frozenset({"format", "issuer", "sequence", "issued_at", "requesters", "tokens"})
_REQUESTER_FIELDS: Final = frozenset({"requester", "issued_before", "reason", "added_at"})
_TOKEN_FIELDS: Final = frozenset({"jti", "reason", "added_at"})


@dataclass(frozen=True, kw_only=True)
class RequesterCutoff:
    """Every token of `requester` issued before `issued_before` is refused."""

    requester: str
    issued_before: datetime
    reason: str
    added_at: datetime


@dataclass(frozen=True, kw_only=True)
class DeniedToken:
    """The one token with this `jti` is refused."""

    jti: str
    reason: str
    added_at: datetime


@dataclass(frozen=True, kw_only=True)
class DenyList:
    """The content of a deny list (verified, or about to be signed)."""

    issuer: str
    sequence: int
    issued_at: datetime
    requesters: Mapping[str, RequesterCutoff] = field(default_factory=dict)
    tokens: Mapping[str, DeniedToken] = field(default_factory=dict)

    def describe(self) -> str:
        return (
            f"deny list sequence {self.sequence} of issuer {self.issuer!r} ({len(self.requesters)} "
            f"requester(s), {len(self.tokens)} token(s), issued {self.issued_at.isoformat()})"
        )

    def refusal(self, claims: TokenClaims) -> str | None:
        """Why the token with `claims` is refused, or None when the list does not deny it."""
        cutoff = self.requesters.get(claims.requester)
        if cutoff is not None and claims.issued_at < cutoff.issued_before:
            return (
                f"the token of requester {claims.requester!r} issued "
                f"{claims.issued_at.isoformat()} was withdrawn by the issuer: every token of "
                f"this requester issued before {cutoff.issued_before.isoformat()} is refused "
                f"(reason: {cutoff.reason}; deny list sequence {self.sequence}); ask the "
                "platform for a new token"
            )
        token = self.tokens.get(claims.jti)
        if token is not None:
            return (
                f"token jti {claims.jti} of requester {claims.requester!r} was withdrawn by the "
                f"issuer on {token.added_at.isoformat()} (reason: {token.reason}; deny list "
                f"sequence {self.sequence}); ask the platform for a new token"
            )
        return None

    def payload(self) -> dict[str, Any]:
        """The signed content, in a fixed order."""
        return {
            "format": DENY_LIST_FORMAT,
            "issuer": self.issuer,
            "sequence": self.sequence,
            "issued_at": _iso(self.issued_at),
            "requesters": [
                {
                    "requester": c.requester,
                    "issued_before": _iso(c.issued_before),
                    "reason": c.reason,
                    "added_at": _iso(c.added_at),
                }
                for c in sorted(self.requesters.values(), key=lambda c: c.requester)
            ],
            "tokens": [
                {"jti": t.jti, "reason": t.reason, "added_at": _iso(t.added_at)}
                for t in sorted(self.tokens.values(), key=lambda t: t.jti)
            ],
        }


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def whole_seconds(value: datetime) -> datetime:
    """`value` in UTC without its fraction of a second (the resolution of a token's `iat`)."""
    return value.astimezone(UTC).replace(microsecond=0)


def _time(value: object, *, field: str) -> datetime:
    if not isinstance(value, str):
        raise InvalidArgument(f"is {str(value)[:40]!r}: expected a UTC time string", field=field)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidArgument(f"{value[:40]!r} is not an ISO 8601 time", field=field) from None
    if parsed.utcoffset() != timedelta(0):
        raise InvalidArgument(f"{value[:40]!r} is not a UTC time", field=field)
    return parsed.astimezone(UTC)


def _reason(value: object, *, field: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_REASON_CHARS:
        raise InvalidArgument(
            f"expected a reason of 1 to {MAX_REASON_CHARS} characters", field=field
        )
    return value


def check_reason(reason: str) -> str:
    """`reason` if it can go in a deny list (1 to MAX_REASON_CHARS characters)."""
    return _reason(reason, field="reason")


def _entries(
    payload: Mapping[str, Any], name: str, fields: frozenset[str]
) -> list[Mapping[str, Any]]:
    entries = payload[name]
    if not isinstance(entries, list):
        raise InvalidArgument("expected a list", field=name)
    if len(entries) > MAX_ENTRIES:
        raise InvalidArgument(f"holds more than {MAX_ENTRIES} entries", field=name)
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or set(entry) != fields:
            raise InvalidArgument(
                f"each entry has exactly {sorted(fields)}", field=f"{name}[{index}]"
            )
    return entries


def deny_list_from_payload(payload: Mapping[str, Any]) -> DenyList:
    """The deny list a verified payload holds; InvalidArgument naming the field otherwise."""
    if set(payload) != _FIELDS:
        raise InvalidArgument(
            f"a deny list has exactly the fields {sorted(_FIELDS)}", field="payload"
        )
    if payload["format"] != DENY_LIST_FORMAT:
        raise InvalidArgument(
            f"format {str(payload['format'])[:20]!r} is not {DENY_LIST_FORMAT}", field="format"
        )
    issuer = payload["issuer"]
    if not isinstance(issuer, str) or not issuer:
        raise InvalidArgument("expected the issuer name of the tokens", field="issuer")
    sequence = payload["sequence"]
    if isinstance(sequence, bool) or not isinstance(sequence, int) or sequence < 1:
        raise InvalidArgument("expected a whole number from 1", field="sequence")
    requesters: dict[str, RequesterCutoff] = {}
    for index, entry in enumerate(_entries(payload, "requesters", _REQUESTER_FIELDS)):
        at = f"requesters[{index}]"
        requester = entry["requester"]
        if not isinstance(requester, str) or not PEER_NAME_PATTERN.fullmatch(requester):
            raise InvalidArgument("is not a requester id", field=f"{at}.requester")
        if requester in requesters:
            raise InvalidArgument(f"{requester!r} is listed twice", field=f"{at}.requester")
        requesters[requester] = RequesterCutoff(
            requester=requester,
            issued_before=_time(entry["issued_before"], field=f"{at}.issued_before"),
            reason=_reason(entry["reason"], field=f"{at}.reason"),
            added_at=_time(entry["added_at"], field=f"{at}.added_at"),
        )
    tokens: dict[str, DeniedToken] = {}
    for index, entry in enumerate(_entries(payload, "tokens", _TOKEN_FIELDS)):
        at = f"tokens[{index}]"
        jti = entry["jti"]
        if not isinstance(jti, str) or not JTI_PATTERN.fullmatch(jti):
            raise InvalidArgument("is not a token id (jti)", field=f"{at}.jti")
        if jti in tokens:
            raise InvalidArgument(f"{jti!r} is listed twice", field=f"{at}.jti")
        tokens[jti] = DeniedToken(
            jti=jti,
            reason=_reason(entry["reason"], field=f"{at}.reason"),
            added_at=_time(entry["added_at"], field=f"{at}.added_at"),
        )
    return DenyList(
        issuer=issuer,
        sequence=sequence,
        issued_at=_time(payload["issued_at"], field="issued_at"),
        requesters=MappingProxyType(requesters),
        tokens=MappingProxyType(tokens),
    )


def seal_deny_list(deny: DenyList, *, private_key: Ed25519PrivateKey) -> bytes:
    """The deny list file: its payload signed with the issuer's key."""
    return signing.seal(
        deny.payload(), payload_type=signing.TOKEN_DENY_LIST_TYPE, private_key=private_key
    )


def open_deny_list(
    data: bytes, *, public_key: Ed25519PublicKey, issuer: str, origin: str
) -> DenyList:
    """The deny list in `data` once signed by `public_key` for `issuer`; ConfigError naming the
    problem otherwise."""
    try:
        payload, _ = signing.open_sealed(
            data,
            payload_type=signing.TOKEN_DENY_LIST_TYPE,
            trusted_keys={signing.key_id(public_key): public_key},
        )
        deny = deny_list_from_payload(payload)
    except OsmanthusError as exc:
        raise ConfigError(f"{origin}: {exc}", field="token_deny_list") from None
    if deny.issuer != issuer:
        raise ConfigError(
            f"{origin} is the deny list of issuer {deny.issuer!r}; this server verifies tokens "
            f"of {issuer!r}",
            field="token_deny_list",
        )
    return deny


def check_succession(in_force: DenyList, new: DenyList, *, origin: str, now: datetime) -> None:
    """ConfigError unless `new` may replace `in_force`: a higher sequence, issued no earlier,
    and not dated far ahead of this server's clock."""
    if new.sequence <= in_force.sequence:
        raise ConfigError(
            f"{origin} has sequence {new.sequence}, not above the list in force "
            f"({in_force.sequence}): an older or replayed deny list is ignored",
            field="sequence",
        )
    if new.issued_at < in_force.issued_at:
        raise ConfigError(
            f"{origin} was issued {new.issued_at.isoformat()}, before the list in force "
            f"({in_force.issued_at.isoformat()}): an old list is ignored even with a higher "
            "sequence; if it is new, the issuing machine's clock is behind",
            field="issued_at",
        )
    if new.issued_at > now + MAX_CLOCK_AHEAD:
        raise AheadOfClock(
            f"{origin} was issued {new.issued_at.isoformat()}, ahead of this server's clock "
            f"({now.isoformat(timespec='seconds')}) by more than an hour: a clock is wrong",
            field="issued_at",
        )


# --- the issuer's side ------------------------------------------------------------------------


def _read_for_update(
    path: Path, *, private_key: Ed25519PrivateKey, issuer: str, create: bool
) -> DenyList | None:
    """The list at `path` to build the next one on; None when there is none yet and `create`
    says to make one. A list that does not verify is refused: the next one must never be built
    on a forged one (`reset_deny_list` is the deliberate way past one). A missing list is
    refused unless `create`: starting again at sequence 1 would make every server, which holds
    a higher sequence, ignore the new list and every revocation in it."""
    if not path.exists():
        if create:
            return None
        raise ConfigError(
            f"{path} does not exist: no deny list to add to. Give the path of the issuer's list; "
            "to start a new one (the first for this issuer), create it with 'osmanthus token "
            "deny-list' or pass --create",
            field="deny_list",
        )
    data = read_limited(path, field="deny_list", what="deny list")
    return open_deny_list(
        data, public_key=private_key.public_key(), issuer=issuer, origin=str(path)
    )


def _publish(path: Path, deny: DenyList, *, private_key: Ed25519PrivateKey) -> DenyList:
    # world-readable: it names requesters and token ids, never a secret; every server reads it
    write_atomically(
        path, seal_deny_list(deny, private_key=private_key), mode=0o644, field="deny_list"
    )
    return deny


def write_deny_list(
    path: Path,
    *,
    private_key: Ed25519PrivateKey,
    issuer: str,
    now: datetime | None = None,
    create: bool = True,
) -> DenyList:
    """Sign the list at `path` again with the next sequence (an empty one at sequence 1 if
    there is none and `create`)."""
    now = whole_seconds(now or datetime.now(UTC))
    current = _read_for_update(path, private_key=private_key, issuer=issuer, create=create)
    if current is None:
        deny = DenyList(issuer=issuer, sequence=1, issued_at=now)
    else:
        deny = replace(
            current, sequence=current.sequence + 1, issued_at=max(now, current.issued_at)
        )
    return _publish(path, deny, private_key=private_key)


@dataclass(frozen=True, kw_only=True)
class DenyListReset:
    """What `reset_deny_list` did: the list written, and what it could read of the old one."""

    deny: DenyList
    #: the old list's sequence, read without verifying it
    old_sequence: int
    #: whether the old list's entries were read (and carried over) or given up
    entries_kept: bool
    #: why the old list did not verify ("" when it did)
    problem: str


def reset_deny_list(
    path: Path, *, private_key: Ed25519PrivateKey, issuer: str, now: datetime | None = None
) -> DenyListReset:
    """Replace the list at `path`, which does not verify (another issuer key, a damaged file),
    by one signed with `private_key` at the old sequence + 1.

    The old sequence is read WITHOUT verifying the old list: the servers hold that sequence (or
    a lower one), so the new list must be above it or every server ignores it. Its entries are
    carried over when they can be read: an entry only ever withdraws tokens, so keeping an
    unverified one can refuse too much, never admit a withdrawn token. The caller says all this
    loudly; a list that verifies is signed again as `write_deny_list` would.
    """
    now = whole_seconds(now or datetime.now(UTC))
    if not path.exists():
        raise ConfigError(
            f"{path} does not exist: nothing to reset; create a list with 'osmanthus token "
            "deny-list'",
            field="deny_list",
        )
    data = read_limited(path, field="deny_list", what="deny list")
    try:
        current = open_deny_list(
            data, public_key=private_key.public_key(), issuer=issuer, origin=str(path)
        )
    except ConfigError as exc:
        problem = exc.message
    else:
        deny = write_deny_list(path, private_key=private_key, issuer=issuer, now=now)
        return DenyListReset(
            deny=deny, old_sequence=current.sequence, entries_kept=True, problem=""
        )
    old_sequence, old = _read_unverified(data, origin=str(path))
    if old is None:
        deny = DenyList(issuer=issuer, sequence=old_sequence + 1, issued_at=now)
    else:
        deny = DenyList(
            issuer=issuer,
            sequence=old_sequence + 1,
            issued_at=max(now, old.issued_at),
            requesters=old.requesters,
            tokens=old.tokens,
        )
    _publish(path, deny, private_key=private_key)
    return DenyListReset(
        deny=deny, old_sequence=old_sequence, entries_kept=old is not None, problem=problem
    )


def _read_unverified(data: bytes, *, origin: str) -> tuple[int, DenyList | None]:
    """The sequence of the sealed deny list in `data`, and the list when its payload reads,
    without looking at its signature. Refused when even the sequence cannot be read: a reset
    must start above whatever the servers hold, and then nothing says where that is."""
    try:
        document = json.loads(data)
        payload = document["payload"]
        sequence = payload["sequence"]
    except (ValueError, TypeError, KeyError, UnicodeDecodeError):
        sequence = None
    if isinstance(sequence, bool) or not isinstance(sequence, int) or sequence < 0:
        raise ConfigError(
            f"{origin}: its sequence cannot be read, so a new list cannot be numbered above "
            "what the servers hold. Find the sequence the servers have in force (their log "
            "line 'token deny list ... sequence N') and restore that list, or move the file "
            "aside and create a new one with a sequence above it",
            field="deny_list",
        )
    try:
        return sequence, deny_list_from_payload(payload)
    except OsmanthusError:
        return sequence, None


def deny_tokens(
    path: Path,
    *,
    private_key: Ed25519PrivateKey,
    issuer: str,
    requester: str | None = None,
    issued_before: datetime | None = None,
    jti: str | None = None,
    reason: str,
    now: datetime | None = None,
    create: bool = False,
) -> DenyList:
    """Add a requester's cut-off (every token it was issued before `issued_before`, default
    now) or one token's `jti` to the list at `path`, and sign it with the next sequence. A
    missing list is refused unless `create` (then the new list starts at sequence 1)."""
    now = whole_seconds(now or datetime.now(UTC))
    reason = check_reason(reason)
    if (requester is None) == (jti is None):
        raise InvalidArgument("give a requester or a token id (jti), not both", field="requester")
    current = _read_for_update(
        path, private_key=private_key, issuer=issuer, create=create
    ) or DenyList(issuer=issuer, sequence=0, issued_at=now)
    requesters = dict(current.requesters)
    tokens = dict(current.tokens)
    if requester is not None:
        if not PEER_NAME_PATTERN.fullmatch(requester):
            raise InvalidArgument(f"{requester!r} is not a requester id", field="requester")
        if issued_before is None:
            # every token issued up to now: an `iat` has whole seconds, so the next second
            cutoff = now + timedelta(seconds=1)
        elif issued_before.tzinfo is None:
            raise InvalidArgument("give a time with its UTC offset", field="issued_before")
        else:
            cutoff = whole_seconds(issued_before)
        earlier = requesters.get(requester)
        if earlier is not None and earlier.issued_before >= cutoff:
            # a cut-off is never moved back: that would re-admit tokens already withdrawn
            cutoff = earlier.issued_before
        requesters[requester] = RequesterCutoff(
            requester=requester, issued_before=cutoff, reason=reason, added_at=now
        )
    else:
        assert jti is not None
        if not JTI_PATTERN.fullmatch(jti):
            raise InvalidArgument(f"{jti[:40]!r} is not a token id (jti)", field="jti")
        tokens.setdefault(jti, DeniedToken(jti=jti, reason=reason, added_at=now))
    for kind, entries in (("requesters", requesters), ("tokens", tokens)):
        if len(entries) > MAX_ENTRIES:
            raise InvalidArgument(f"the list would hold more than {MAX_ENTRIES} {kind}", field=kind)
    deny = DenyList(
        issuer=issuer,
        sequence=current.sequence + 1,
        issued_at=max(now, current.issued_at),
        requesters=requesters,
        tokens=tokens,
    )
    return _publish(path, deny, private_key=private_key)


# --- the servers' side ------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class DenyListStatus:
    """The list in force at a server and what its watcher has done since start."""

    sequence: int
    installed: int
    rejected: int
    last_problem: str = ""


class TokenDenial:
    """The deny list in force at one server, followed from its file (a TokenVerifier's
    `deny_list`)."""

    def __init__(
        self,
        *,
        path: Path,
        public_key: Ed25519PublicKey,
        issuer: str,
        deny: DenyList,
        digest: str,
        interval_s: float = DENY_LIST_POLL_S,
    ) -> None:
        self.path = path
        self._public_key = public_key
        self._issuer = issuer
        self._deny = deny
        self._digest = digest
        self._lock = threading.Lock()
        self._installed = 0
        self._rejected = 0
        self._last_problem = ""
        # the content last refused as dated ahead (offered again until the clock agrees)
        self._ahead_digest = ""
        self._poller = PolledFile(
            path=path,
            what="token deny list",
            on_change=self._offered,
            on_unreadable=self._unreadable,
            interval_s=interval_s,
            started_with=digest,
        )

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        public_key_path: Path,
        issuer: str,
        interval_s: float = DENY_LIST_POLL_S,
    ) -> TokenDenial:
        """The deny list in `path`, verified with the issuer public key; ConfigError, and no
        start, when it fails. Call start() once serving, close() on shutdown."""
        public_key = signing.load_public_key(
            public_key_path, what="token issuer public key", field="issuer_public_key"
        )
        data = read_limited(path, field="token_deny_list", what="token deny list")
        deny = open_deny_list(data, public_key=public_key, issuer=issuer, origin=str(path))
        _log.info("token deny list: %s from %s in force", deny.describe(), path)
        return cls(
            path=path,
            public_key=public_key,
            issuer=issuer,
            deny=deny,
            digest=hashlib.sha256(data).hexdigest(),
            interval_s=interval_s,
        )

    @property
    def deny_list(self) -> DenyList:
        with self._lock:
            return self._deny

    @property
    def status(self) -> DenyListStatus:
        with self._lock:
            return DenyListStatus(
                sequence=self._deny.sequence,
                installed=self._installed,
                rejected=self._rejected,
                last_problem=self._last_problem,
            )

    def refusal(self, claims: TokenClaims) -> str | None:
        """Why the list in force refuses the token with `claims`, or None."""
        with self._lock:
            deny = self._deny
        return deny.refusal(claims)

    def start(self) -> TokenDenial:
        self._poller.start()
        return self

    def wake(self) -> None:
        self._poller.wake()

    def close(self) -> None:
        self._poller.close()

    def check_now(self) -> DenyListStatus:
        self._poller.check_now()
        return self.status

    def _offered(self, data: bytes) -> bool:
        """Put the list in `data` in force if it may replace the one in force; True when it
        was refused as dated ahead of the clock (the poller offers it again later)."""
        digest = hashlib.sha256(data).hexdigest()
        with self._lock:
            current = self._deny
            if digest == self._digest:
                # the list in force, put back after a file that was refused: nothing to do
                self._last_problem = ""
                return False
        origin = str(self.path)
        ahead = False
        try:
            new = open_deny_list(
                data, public_key=self._public_key, issuer=self._issuer, origin=origin
            )
            check_succession(current, new, origin=origin, now=datetime.now(UTC))
        except ConfigError as exc:
            ahead = isinstance(exc, AheadOfClock)
            if ahead and digest == self._ahead_digest:
                return True  # offered again, refused again: counted and logged once
            self._ahead_digest = digest if ahead else ""
            with self._lock:
                self._rejected += 1
                self._last_problem = exc.message
            _log.warning(
                "token deny list rejected, sequence %d stays in force: %s%s",
                current.sequence,
                exc.message,
                "; it is looked at again later" if ahead else "",
            )
            return ahead
        self._ahead_digest = ""
        with self._lock:
            self._deny = new
            self._digest = digest
            self._installed += 1
            self._last_problem = ""
        _log.info(
            "token deny list: %s from %s now in force; it replaces sequence %d",
            new.describe(),
            self.path,
            current.sequence,
        )
        return False

    def _unreadable(self, problem: str) -> None:
        with self._lock:
            self._last_problem = problem
            sequence = self._deny.sequence
        _log.warning("token deny list: %s; sequence %d stays in force", problem, sequence)


def open_token_denial(
    path: Path | None,
    *,
    public_key_path: Path,
    issuer: str,
    interval_s: float = DENY_LIST_POLL_S,
) -> TokenDenial | None:
    """The deny list a server follows, or None (logged as a WARNING) when it is given none."""
    if path is None:
        _log.warning(
            "token deny list: none given (--token-deny-list): a withdrawn token is accepted "
            "until it expires"
        )
        return None
    return TokenDenial.open(
        path, public_key_path=public_key_path, issuer=issuer, interval_s=interval_s
    )

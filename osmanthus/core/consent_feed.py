"""The consent registry's revocation feed: entries chained by hash under a signed head, and the
view of it that a department node verifies, keeps and checks before it answers under a consent.

A consent receipt (osmanthus.core.receipts) proves that a consent was granted; it still verifies
after the consent is revoked. So the registry also publishes every revocation, in order, as an
append-only feed:

- entry i (i = 1, 2, ...) is {"sequence": i, "consent_id", "revoked_at", "expires_at"} (times in
  whole seconds since the epoch), hashed as RFC 8785 canonical JSON;
- the chain hash is h_0 = SHA-256(canonical {"feed": <feed id>}) and
  h_i = SHA-256(h_{i-1} || canonical entry i), so h_N commits to every entry up to N, in order;
- the head {"feed", "issuer", "size": N, "root": base64url(h_N), "issued_at"} is signed with the
  consent key in the one envelope (osmanthus.core.signing, payload type
  CONSENT_REVOCATIONS_TYPE). It says: "at `issued_at` the feed held exactly N entries".

The coordinator staples a head, at most MAX_HEAD_AGE old, and the entries a node lacks to every
request that rests on a consent (node.proto, ContributeRequest). The node verifies the head's
signature and the chain up to it, keeps what it learnt in a file in its state directory, and
refuses a consent-based request when the newest head it verified is older than its maximum
staleness: a coordinator that withholds revocations can do so for that long at most, unless it
can sign heads with the consent key itself (docs/caveats.md says what that leaves open).

A node that lacks more entries than one request carries is sent checkpoints: a head with
`"checkpoint": true` says only "entry `size` of the feed chains to `root`" (a prefix of an
append-only chain, true for ever). The node verifies and keeps each page of MAX_STAPLED_REVOCATIONS
entries against its checkpoint, so what it holds unverified stays within one page, and asks for
the rest; a checkpoint never makes a view fresh and never shows a feed going backwards.

Each receipt names the feed of the registry that signed it (receipts.REVOCATION_FEED_CLAIM), and
a node judges a consent only against that feed: another feed signed with the same key (a
registry started afresh, a staging copy) cannot stand in for it. A node also remembers the
revocations of every feed it has verified (a registry started afresh cannot take back a
revocation an older feed published), and forgets a revocation once the consent it revokes has
expired: its receipt no longer verifies.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import json
import logging
import secrets
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from osmanthus.core import signing
from osmanthus.core.errors import (
    ConfigError,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
)
from osmanthus.core.files import write_atomically
from osmanthus.core.receipts import (
    CONSENT_ID_PATTERN,
    DEFAULT_LEEWAY,
    check_issuer,
)
from osmanthus.core.receipts import FEED_ID_PATTERN as _FEED_ID_PATTERN
from osmanthus.core.strictjson import unique_keys
from osmanthus.core.types import ConsentId

_log = logging.getLogger(__name__)

#: a feed id as the registry makes them: "rvf_" and 22 base64url characters (128 random bits)
FEED_ID_PATTERN: Final = _FEED_ID_PATTERN
FEED_ID_PREFIX: Final = "rvf_"
#: how old the newest verified head may be when a node answers under a consent: a coordinator
#: that withholds revocations (replaying an old head) is refused after this long
DEFAULT_MAX_STALENESS: Final = datetime.timedelta(seconds=60)
MIN_MAX_STALENESS: Final = datetime.timedelta(seconds=5)
MAX_MAX_STALENESS: Final = datetime.timedelta(hours=1)
#: the registry signs a new head when the one it has is this old (or the feed has grown), so a
#: stapled head is never older than this and nodes with the default staleness keep a margin
MAX_HEAD_AGE: Final = datetime.timedelta(seconds=15)
#: entries one request may carry: ~45 bytes each on the wire, well under the 1 MiB receive limit
MAX_STAPLED_REVOCATIONS: Final = 10_000
#: entries a node holds before a head verifies them: one request's worth. A catch-up of more
#: than one request goes page by page, each page verified against its checkpoint
MAX_PENDING_REVOCATIONS: Final = MAX_STAPLED_REVOCATIONS
#: a revocation is kept this long after the consent's expiry, beyond any clock difference
_FORGET_AFTER_EXPIRY: Final = datetime.timedelta(minutes=5)
_HEAD_FIELDS: Final = frozenset({"feed", "issuer", "size", "root", "issued_at"})
#: the field that marks a checkpoint (always true when present)
_CHECKPOINT: Final = "checkpoint"
_STATE_VERSION: Final = 1
#: verified heads remembered by their bytes (a few feeds' current heads)
_VERIFIED_HEADS: Final = 16
#: the largest integer canonical JSON carries exactly (signing.canonical_json)
_MAX_JSON_INT: Final = 2**53 - 1


class RevocationsBehind(FailedPrecondition):
    """The node lacks entries of the feed that the head it was given commits to (or it was
    given a checkpoint, which is never the whole feed).

    The ErrorInfo metadata names the feed and the entries the node has (`sequence`): the
    coordinator sends the rest and asks again.
    """

    def __init__(self, message: str, *, feed: str, sequence: int) -> None:
        super().__init__(message, field="revocations")
        self.feed = feed
        self.sequence = sequence
        self.info_metadata = {"feed": feed, "sequence": str(sequence)}


class RevocationsStale(FailedPrecondition):
    """The newest head the node verified is older than its maximum staleness (or none came)."""


class RevocationFeedRefused(PermissionDenied):
    """The head or the entries are not the registry's: a bad signature, a broken chain, a feed
    that went backwards or forked. Logged at the node as evidence."""


@dataclass(frozen=True)
class Revocation:
    """One entry of the feed: consent `consent_id` was revoked at `revoked_at`; it would have
    expired at `expires_at` (both whole seconds since the epoch)."""

    sequence: int
    consent_id: ConsentId
    revoked_at: int
    expires_at: int

    def canonical(self) -> bytes:
        """What the chain hashes: the entry as RFC 8785 canonical JSON."""
        return signing.canonical_json(
            {
                "sequence": self.sequence,
                "consent_id": self.consent_id,
                "revoked_at": self.revoked_at,
                "expires_at": self.expires_at,
            },
            field="revocations",
        )


@dataclass(frozen=True)
class SignedHead:
    """A head as it travels: the canonical JSON payload and its detached JWS."""

    payload: bytes
    signature: str


@dataclass(frozen=True)
class Staple:
    """What a request under a consent carries to one node: the head, signed for a feed of
    `size` entries, and the entries after those the node acknowledged."""

    head: SignedHead
    revocations: tuple[Revocation, ...]
    size: int


@dataclass(frozen=True)
class FeedHead:
    """A verified head: at `issued_at` feed `feed` of `issuer` held `size` entries, chain `root`.

    A `checkpoint` says less: entry `size` chains to `root` (the feed may hold more)."""

    feed: str
    issuer: str
    size: int
    root: bytes
    issued_at: datetime.datetime
    checkpoint: bool = False


def new_feed_id() -> str:
    """A fresh feed id (128 random bits)."""
    return FEED_ID_PREFIX + secrets.token_urlsafe(16)


def genesis(feed: str) -> bytes:
    """h_0 of feed `feed`: the chain of every feed starts from its own id."""
    return hashlib.sha256(signing.canonical_json({"feed": feed})).digest()


def chain(previous: bytes, entry: Revocation) -> bytes:
    """h_i from h_{i-1} and entry i."""
    return hashlib.sha256(previous + entry.canonical()).digest()


def check_revocation(entry: Revocation, *, field: str = "revocations") -> Revocation:
    """`entry` if every value is one the registry could have written; InvalidArgument naming
    `field` otherwise."""
    if not isinstance(entry.sequence, int) or not 0 < entry.sequence <= _MAX_JSON_INT:
        raise InvalidArgument(f"sequence {entry.sequence!r:.20} is not 1 or more", field=field)
    if not isinstance(entry.consent_id, str) or not CONSENT_ID_PATTERN.fullmatch(entry.consent_id):
        raise InvalidArgument(
            f"entry {entry.sequence}: {str(entry.consent_id)[:40]!r} is not a consent id",
            field=field,
        )
    for name in ("revoked_at", "expires_at"):
        value = getattr(entry, name)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 2**40:
            raise InvalidArgument(
                f"entry {entry.sequence}: {name} {value!r:.20} is not a time in seconds",
                field=field,
            )
    return entry


def sign_head(
    *,
    feed: str,
    issuer: str,
    size: int,
    root: bytes,
    issued_at: datetime.datetime,
    private_key: Ed25519PrivateKey,
    checkpoint: bool = False,
) -> SignedHead:
    """The registry's signed statement that feed `feed` holds `size` entries at `issued_at`;
    with `checkpoint`, only that its entry `size` chains to `root` (see the module)."""
    if not FEED_ID_PATTERN.fullmatch(feed):
        raise InvalidArgument(f"{feed[:40]!r} is not a feed id", field="feed")
    check_issuer(issuer, field="issuer")
    if len(root) != hashlib.sha256().digest_size:
        raise InvalidArgument("a chain hash is a SHA-256", field="root")
    document: dict[str, object] = {
        "feed": feed,
        "issuer": issuer,
        "size": size,
        "root": _b64(root),
        "issued_at": _seconds(issued_at),
    }
    if checkpoint:
        document[_CHECKPOINT] = True
    payload = signing.canonical_json(document)
    signature = signing.sign(
        payload, payload_type=signing.CONSENT_REVOCATIONS_TYPE, private_key=private_key
    )
    return SignedHead(payload=payload, signature=signature)


def verify_head(signed: SignedHead, *, public_key: Ed25519PublicKey, issuer: str) -> FeedHead:
    """The head's content once its signature verifies against the consent key and it names
    `issuer`; RevocationFeedRefused naming the problem otherwise."""
    if not isinstance(signed.payload, bytes) or len(signed.payload) > 1024:
        raise RevocationFeedRefused("the revocation head is not a head", field="revocation_head")
    try:
        signing.verify(
            signed.payload,
            signed.signature,
            payload_type=signing.CONSENT_REVOCATIONS_TYPE,
            trusted_keys={signing.key_id(public_key): public_key},
            field="revocation_head",
        )
    except signing.SignatureError as exc:
        raise RevocationFeedRefused(
            f"the revocation head's signature was refused: {exc.message}", field="revocation_head"
        ) from None
    try:
        document = json.loads(signed.payload, object_pairs_hook=unique_keys("field"))
    except (ValueError, RecursionError) as exc:
        raise RevocationFeedRefused(
            f"the revocation head is not JSON ({exc})", field="revocation_head"
        ) from None
    checkpoint = isinstance(document, dict) and _CHECKPOINT in document
    if checkpoint and document.pop(_CHECKPOINT) is not True:
        raise RevocationFeedRefused(
            f"a revocation head's {_CHECKPOINT!r} is true or absent", field="revocation_head"
        )
    if not isinstance(document, dict) or set(document) != _HEAD_FIELDS:
        raise RevocationFeedRefused(
            f"a revocation head has exactly the fields {sorted(_HEAD_FIELDS)} (and "
            f"{_CHECKPOINT!r}: true in a checkpoint)",
            field="revocation_head",
        )
    feed, head_issuer, size = document["feed"], document["issuer"], document["size"]
    if not isinstance(feed, str) or not FEED_ID_PATTERN.fullmatch(feed):
        raise RevocationFeedRefused("the head names no feed id", field="revocation_head")
    if head_issuer != issuer:
        raise RevocationFeedRefused(
            f"the head is of issuer {str(head_issuer)[:80]!r}, not the consent registry {issuer!r}",
            field="revocation_head",
        )
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise RevocationFeedRefused("the head's size is not a count", field="revocation_head")
    issued = document["issued_at"]
    if isinstance(issued, bool) or not isinstance(issued, int) or not 0 <= issued <= 2**40:
        raise RevocationFeedRefused("the head's issued_at is not a time", field="revocation_head")
    try:
        root = _unb64(document["root"])
    except ValueError:
        raise RevocationFeedRefused(
            "the head's root is not a hash", field="revocation_head"
        ) from None
    return FeedHead(
        feed=feed,
        issuer=head_issuer,
        size=size,
        root=root,
        issued_at=datetime.datetime.fromtimestamp(issued, datetime.UTC),
        checkpoint=checkpoint,
    )


@dataclass
class _Feed:
    """What a node verified of one feed."""

    size: int
    root: bytes
    #: the newest issued_at among the verified heads of this feed (checkpoints aside); kept in
    #: the state file as of its last write, so that a restarted node still sees a newer head
    #: of a shorter feed as the feed going backwards
    latest: datetime.datetime | None = None
    #: entries after `size`, in order, that no head has verified yet (at most one page)
    pending: list[Revocation] = field(default_factory=list)


@dataclass(frozen=True)
class _Snapshot:
    """What the state file is to hold, taken under the view's lock and written outside it."""

    generation: int
    feeds: tuple[tuple[str, int, bytes, datetime.datetime | None], ...]
    revoked: tuple[Revocation, ...]


class RevocationView:
    """A node's verified view of the registry's revocation feeds, kept in a file (mode 0600).

    `learn` takes a head and entries as a request brings them and verifies them; `check` says
    whether a consent may be answered under: the newest head of the feed is fresh, and the
    consent is not revoked in any feed this node has verified. Thread-safe.
    """

    def __init__(
        self,
        path: Path,
        *,
        public_key: Ed25519PublicKey,
        issuer: str,
        max_staleness: datetime.timedelta = DEFAULT_MAX_STALENESS,
        leeway: datetime.timedelta = DEFAULT_LEEWAY,
    ) -> None:
        if not isinstance(public_key, Ed25519PublicKey):
            raise ConfigError("the consent public key must be an Ed25519 key", field="public_key")
        try:
            check_issuer(issuer, field="consent_issuer")
        except InvalidArgument as exc:
            raise ConfigError(exc.message, field="consent_issuer") from exc
        if not MIN_MAX_STALENESS <= max_staleness <= MAX_MAX_STALENESS:
            raise ConfigError(
                f"the maximum staleness of the revocation feed must be between "
                f"{MIN_MAX_STALENESS} and {MAX_MAX_STALENESS}, not {max_staleness}",
                field="max_revocation_staleness",
            )
        self.path = path
        self.public_key = public_key
        self.issuer = issuer
        self.max_staleness = max_staleness
        self._leeway = leeway
        self._lock = threading.Lock()
        self._feeds, self._revoked = _load_state(path)
        # heads verified lately, by their exact bytes: the coordinator staples one head to
        # every request for up to MAX_HEAD_AGE, and its signature need not be checked again
        self._verified: OrderedDict[tuple[bytes, str], FeedHead] = OrderedDict()
        # the state file is written outside `_lock`, one writer at a time, newest state wins
        self._save_lock = threading.Lock()
        self._generation = 0
        self._written = 0

    def learn(
        self, signed: SignedHead | None, entries: Sequence[Revocation], *, now: datetime.datetime
    ) -> FeedHead:
        """Verify `signed` and `entries` and add what they hold to the view; the verified head.

        Raises RevocationsStale if no head came, RevocationFeedRefused if the head or the chain
        is not the registry's, RevocationsBehind if entries the head commits to are missing or
        the head is a checkpoint (its page is kept first). The state file is written once, at
        the end, if the view grew.
        """
        if signed is None:
            raise RevocationsStale(
                "no revocation head came with this request: without one this node cannot know "
                "whether the consent was revoked",
                field="revocation_head",
            )
        head = self._verified_head(signed)
        if head.issued_at > now + self._leeway:
            raise RevocationFeedRefused(
                f"the revocation head is dated {_iso(head.issued_at)}, after now ({_iso(now)})",
                field="revocation_head",
            )
        if len(entries) > MAX_STAPLED_REVOCATIONS:
            raise InvalidArgument(
                f"{len(entries)} revocations in one request; at most {MAX_STAPLED_REVOCATIONS}",
                field="revocations",
            )
        for entry in entries:
            check_revocation(entry)
        with self._lock:
            feed = self._feeds.get(head.feed)
            if feed is None:
                feed = self._feeds[head.feed] = _Feed(size=0, root=genesis(head.feed))
            grew = self._advance(feed, head, entries)
            if not head.checkpoint and (feed.latest is None or head.issued_at > feed.latest):
                feed.latest = head.issued_at
            snapshot = self._snapshot(now) if grew else None
            held = feed.size + len(feed.pending)
        if snapshot is not None:
            self._write(snapshot)
        if head.checkpoint:
            raise RevocationsBehind(
                f"this node has verified {held} entries of revocation feed {head.feed}, up to a "
                "checkpoint; send the rest with the feed's head",
                feed=head.feed,
                sequence=held,
            )
        return head

    def _verified_head(self, signed: SignedHead) -> FeedHead:
        cache_key = (signed.payload, signed.signature)
        with self._lock:
            cached = self._verified.get(cache_key)
            if cached is not None:
                self._verified.move_to_end(cache_key)
                return cached
        head = verify_head(signed, public_key=self.public_key, issuer=self.issuer)
        with self._lock:
            self._verified[cache_key] = head
            while len(self._verified) > _VERIFIED_HEADS:
                self._verified.popitem(last=False)
        return head

    def check(
        self, consent_id: str, *, head: FeedHead, now: datetime.datetime
    ) -> Revocation | None:
        """The revocation of `consent_id` if this node knows one, else None; RevocationsStale
        if the newest verified head of `head`'s feed is older than the maximum staleness."""
        with self._lock:
            feed = self._feeds.get(head.feed)
            latest = feed.latest if feed is not None else None
            if latest is None or now - latest > self.max_staleness:
                shown = _iso(latest) if latest is not None else "never"
                raise RevocationsStale(
                    f"the newest revocation head this node verified was issued {shown}, more "
                    f"than {int(self.max_staleness.total_seconds())} s before now "
                    f"({_iso(now)}): a revocation may be withheld, so no consent is answered "
                    "under until a fresh head comes",
                    field="revocation_head",
                )
            return self._revoked.get(consent_id)

    def sequence(self, feed: str) -> int:
        """How many entries of `feed` this node has verified."""
        with self._lock:
            known = self._feeds.get(feed)
            return known.size if known is not None else 0

    def _advance(self, feed: _Feed, head: FeedHead, entries: Sequence[Revocation]) -> bool:
        """Add what `head` and `entries` verify to `feed`; whether entries were committed."""
        if head.size < feed.size:
            # a checkpoint is a prefix, never a statement of the whole feed; a head of unknown
            # age (a state file from before ages were kept) counts as newer: deny by default
            if not head.checkpoint and (feed.latest is None or head.issued_at > feed.latest):
                # a newer statement of a shorter feed: the registry lost revocations
                _log.warning(
                    "revocation feed %s went backwards: a head issued %s holds %d entries, "
                    "this node verified %d; refusing every consent until the registry's "
                    "revocations are restored (docs/caveats.md)",
                    head.feed,
                    _iso(head.issued_at),
                    head.size,
                    feed.size,
                )
                raise RevocationFeedRefused(
                    f"revocation feed {head.feed} went backwards: the head holds {head.size} "
                    f"entries, this node has verified {feed.size}",
                    field="revocation_head",
                )
            return False  # an older head than one already verified (requests crossed)
        if head.size == feed.size:
            if head.root != feed.root:
                _log.warning(
                    "revocation feed %s forked: a signed head of %d entries has another hash "
                    "than the one this node verified",
                    head.feed,
                    head.size,
                )
                raise RevocationFeedRefused(
                    f"revocation feed {head.feed} forked at {head.size} entries",
                    field="revocation_head",
                )
            # entries pending beyond this head stay: a newer head may still verify them
            return False
        known = feed.size + len(feed.pending)
        for entry in entries:
            if entry.sequence <= known:
                continue  # already held (verified or pending)
            if entry.sequence != known + 1:
                # the coordinator's count of what this node holds is out of date (the node
                # was restored, or its state file removed): not evidence, the chain decides
                break
            if entry.sequence > head.size:
                raise RevocationFeedRefused(
                    f"revocation entry {entry.sequence} is beyond the head's {head.size}",
                    field="revocations",
                )
            if len(feed.pending) >= MAX_PENDING_REVOCATIONS:
                # more than a page unverified: start again from what is verified, which the
                # coordinator sends page by page under checkpoints
                feed.pending.clear()
                raise RevocationsBehind(
                    f"more than {MAX_PENDING_REVOCATIONS} revocations await a head: this node "
                    f"keeps the {feed.size} entries of revocation feed {head.feed} it verified; "
                    "send the rest page by page",
                    feed=head.feed,
                    sequence=feed.size,
                )
            feed.pending.append(entry)
            known += 1
        if known < head.size:
            raise RevocationsBehind(
                f"this node has {known} of the {head.size} entries of revocation feed "
                f"{head.feed}; send the rest",
                feed=head.feed,
                sequence=known,
            )
        # the head commits to the first `count` entries held; any after it (an older head
        # than the one a catch-up started under: requests crossed) stay pending
        count = head.size - feed.size
        verified = feed.pending[:count]
        root = feed.root
        for entry in verified:
            root = chain(root, entry)
        if root != head.root:
            feed.pending.clear()
            _log.warning(
                "revocation entries %d..%d of feed %s do not chain to the signed head: "
                "discarded (altered or invented in transit)",
                feed.size + 1,
                head.size,
                head.feed,
            )
            raise RevocationFeedRefused(
                f"the revocation entries {feed.size + 1}..{head.size} do not chain to the "
                "signed head: they were altered, left out or invented",
                field="revocations",
            )
        for entry in verified:
            self._revoked[entry.consent_id] = entry
        feed.size, feed.root = head.size, root
        del feed.pending[:count]
        _log.info(
            "revocation feed %s: verified to %d entries (%d revoked consents in force)",
            head.feed,
            feed.size,
            len(self._revoked),
        )
        return True

    def _snapshot(self, now: datetime.datetime) -> _Snapshot:
        """What to write, under `_lock`: a copy, so that the write itself does not hold it."""
        cutoff = int((now - _FORGET_AFTER_EXPIRY).timestamp())
        for consent_id in [c for c, e in self._revoked.items() if e.expires_at < cutoff]:
            del self._revoked[consent_id]
        self._generation += 1
        return _Snapshot(
            generation=self._generation,
            feeds=tuple(
                (name, feed.size, feed.root, feed.latest)
                for name, feed in self._feeds.items()
                if feed.size
            ),
            revoked=tuple(self._revoked.values()),
        )

    def _write(self, snapshot: _Snapshot) -> None:
        document = {
            "version": _STATE_VERSION,
            "feeds": {
                name: {"size": size, "root": _b64(root)}
                | ({"latest": _seconds(latest)} if latest is not None else {})
                for name, size, root, latest in sorted(snapshot.feeds)
            },
            "revoked": [
                [e.consent_id, e.revoked_at, e.expires_at]
                for e in sorted(snapshot.revoked, key=lambda e: e.consent_id)
            ],
        }
        data = (json.dumps(document, separators=(",", ":")) + "\n").encode()
        with self._save_lock:
            if snapshot.generation <= self._written:
                return  # a newer state was written meanwhile
            # 0600: consent ids are not personal data, but nothing in a node's state is for others
            write_atomically(self.path, data, mode=0o600, field="state_dir")
            self._written = snapshot.generation


def _load_state(path: Path) -> tuple[dict[str, _Feed], dict[str, Revocation]]:
    """The feeds and revocations kept in `path`; empty if there is no file yet."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}, {}
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", field="state_dir") from exc
    problem = (
        f"{path} is not a revocation state this node wrote; restore it from backup (deleting "
        "it forgets every revocation this node learnt until the coordinator sends them again)"
    )
    try:
        document = json.loads(data, object_pairs_hook=unique_keys("field"))
        if not isinstance(document, dict) or document.get("version") != _STATE_VERSION:
            raise ValueError("version")
        feeds: dict[str, _Feed] = {}
        for name, raw in _mapping(document["feeds"]).items():
            value = _mapping(raw)
            size = value["size"]
            if not FEED_ID_PATTERN.fullmatch(name) or not isinstance(size, int) or size < 0:
                raise ValueError("feed")
            latest = value.get("latest")
            if latest is not None and (
                isinstance(latest, bool) or not isinstance(latest, int) or not 0 <= latest <= 2**40
            ):
                raise ValueError("latest")
            feeds[name] = _Feed(
                size=size,
                root=_unb64(value["root"]),
                latest=None
                if latest is None
                else datetime.datetime.fromtimestamp(latest, datetime.UTC),
            )
        revoked: dict[str, Revocation] = {}
        for consent_id, revoked_at, expires_at in document["revoked"]:
            entry = check_revocation(
                Revocation(
                    sequence=1,
                    consent_id=ConsentId(consent_id),
                    revoked_at=revoked_at,
                    expires_at=expires_at,
                )
            )
            revoked[entry.consent_id] = entry
    except (ValueError, KeyError, TypeError, InvalidArgument, RecursionError):
        raise ConfigError(problem, field="state_dir") from None
    return feeds, revoked


def _mapping(value: object) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ValueError("mapping")
    return value


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: object) -> bytes:
    if not isinstance(text, str) or len(text) != 43:
        raise ValueError("not a hash")
    try:
        return base64.urlsafe_b64decode(text + "=")
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not a hash") from exc


def _seconds(value: datetime.datetime) -> int:
    if not isinstance(value, datetime.datetime) or value.utcoffset() is None:
        raise InvalidArgument("must be a timezone-aware datetime", field="issued_at")
    return int(value.timestamp() // 1)


def _iso(value: datetime.datetime) -> str:
    return value.astimezone(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")

"""The sync job's configuration file (sync.toml): who it is, where it sends, what it reports.

    sender = "suzhou"                        # the sender id senders.toml registers at the province
    signing_key = "keys/suzhou-sync.key"     # Ed25519 key from `osmanthus province keygen`
    state_dir = "state/sync"                 # checkpoints, outbox, staged work (owner-only)

    [coordinator]
    target = "10.0.0.2:50050"
    requester = "sync-1"                     # the job's requester certificate name
    token_file = "sync-1.jwt"                # its platform token (role sync_job)
    paillier_keys = "sync-1.paillier"        # the Paillier key file the token is bound to
    certs_dir = "certs"                      # or ca, cert and key

    [province]
    target = "province.example:50060"        # delivered with the same requester certificate

    [lists]                                  # red and black list changes (on by default)
    every = "0s"                             # every run

    [grades]                                 # enterprise grades (off without `enterprises`)
    enterprises = "rosters/enterprises.csv"  # column subject_id: the enterprises to grade
    every = "1d"

    [[statistics]]                           # noisy statistics, each over one cohort
    name = "enterprises.all"                 # record names are NAME.STATISTIC
    subject_kind = "enterprise"
    subjects = "rosters/enterprises.csv"     # column subject_id, 10 to 50,000 subjects
    epsilon = "0.05"                         # spent per answer; the central policy caps it
    statistics = ["deductions"]              # default: every statistic of the layout
    every = "1d"

    [delivery]
    retry_for = "15m"                        # give up on an unreachable receiver after this
    backoff_initial = "1s"
    backoff_max = "60s"

Paths are relative to the file. Unknown keys are refused, so a misspelt setting is never silently
ignored.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

from osmanthus.core.dp import parse_epsilon
from osmanthus.core.durations import parse_duration
from osmanthus.core.errors import ConfigError, InvalidArgument
from osmanthus.core.names import PEER_NAME_PATTERN
from osmanthus.core.peers import COORDINATOR_DNS_NAME as COORDINATOR_SERVER_NAME
from osmanthus.core.peers import PROVINCE_SERVER_NAME
from osmanthus.core.syncbatch import STATISTIC_NAME_PATTERN
from osmanthus.core.tls import TlsFiles
from osmanthus.core.types import SubjectKind

#: the sender ids a batch may carry (osmanthus.core.syncbatch checks the same)
_SENDER: Final = re.compile(r"[a-z0-9_-]{1,63}")
_TOP: Final = frozenset(
    {
        "sender",
        "signing_key",
        "state_dir",
        "catalogue",
        "coordinator",
        "province",
        "lists",
        "grades",
        "statistics",
        "delivery",
    }
)
_TLS_KEYS: Final = frozenset({"certs_dir", "ca", "cert", "key"})
_COORDINATOR: Final = frozenset(
    {"target", "requester", "token_file", "paillier_keys", "server_name"} | _TLS_KEYS
)
_PROVINCE: Final = frozenset({"target", "server_name"} | _TLS_KEYS)
_LISTS: Final = frozenset({"enabled", "every"})
_GRADES: Final = frozenset({"enterprises", "every"})
_STATISTIC: Final = frozenset(
    {"name", "subject_kind", "subjects", "epsilon", "statistics", "every"}
)
_DELIVERY: Final = frozenset({"retry_for", "backoff_initial", "backoff_max"})


@dataclass(frozen=True, kw_only=True)
class Endpoint:
    target: str
    server_name: str
    tls: TlsFiles


@dataclass(frozen=True, kw_only=True)
class StatisticSpec:
    """One cohort the job reports noisy statistics over, on its own schedule."""

    name: str
    subject_kind: SubjectKind
    subjects: Path
    epsilon: Decimal
    #: BREAKDOWN slots to ask; empty asks every one
    statistics: tuple[str, ...]
    every: timedelta


@dataclass(frozen=True, kw_only=True)
class Delivery:
    retry_for: timedelta = timedelta(minutes=15)
    backoff_initial: timedelta = timedelta(seconds=1)
    backoff_max: timedelta = timedelta(seconds=60)


@dataclass(frozen=True, kw_only=True)
class SyncConfig:
    path: Path
    sender: str
    signing_key: Path
    state_dir: Path
    catalogue: Path | None
    coordinator: Endpoint
    requester: str
    token_file: Path
    paillier_keys: Path
    province: Endpoint
    lists_enabled: bool
    lists_every: timedelta
    #: the enterprises to grade; None: grades are not reported
    enterprises: Path | None
    grades_every: timedelta
    statistics: tuple[StatisticSpec, ...]
    delivery: Delivery = field(default_factory=Delivery)


def load_config(path: Path) -> SyncConfig:
    """The configuration in `path`; ConfigError naming the key if anything is wrong."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", field="config") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}", field="config") from exc
    try:
        return _read(document, base=path.resolve().parent, path=path)
    except InvalidArgument as exc:
        raise ConfigError(f"{path}: {exc.message}", field=exc.field) from None


def _read(document: dict[str, Any], *, base: Path, path: Path) -> SyncConfig:
    _known(document, _TOP, where="")
    sender = _string(document, "sender", where="")
    if not _SENDER.fullmatch(sender):
        raise InvalidArgument(
            f"{sender!r} is not a sender id (1 to 63 of a-z 0-9 - _)", field="sender"
        )
    coordinator = _table(document, "coordinator", required=True)
    _known(coordinator, _COORDINATOR, where="coordinator.")
    requester = _string(coordinator, "requester", where="coordinator.")
    if not PEER_NAME_PATTERN.fullmatch(requester):
        raise InvalidArgument(
            f"{requester!r} is not a certificate name", field="coordinator.requester"
        )
    coordinator_tls = _tls(coordinator, base=base, where="coordinator.", name=requester)
    province = _table(document, "province", required=True)
    _known(province, _PROVINCE, where="province.")
    # the province knows the job by the same requester certificate unless told otherwise
    province_tls = (
        _tls(province, base=base, where="province.", name=requester)
        if _TLS_KEYS & province.keys()
        else coordinator_tls
    )
    lists = _table(document, "lists", required=False)
    _known(lists, _LISTS, where="lists.")
    enabled = lists.get("enabled", True)
    if not isinstance(enabled, bool):
        raise InvalidArgument("must be true or false", field="lists.enabled")
    grades = _table(document, "grades", required=False)
    _known(grades, _GRADES, where="grades.")
    statistics = document.get("statistics", [])
    if not isinstance(statistics, list):
        raise InvalidArgument("must be an array of tables ([[statistics]])", field="statistics")
    specs = tuple(
        _statistic(s, base=base, where=f"statistics[{i}].") for i, s in enumerate(statistics)
    )
    names = [s.name for s in specs]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise InvalidArgument(f"{name!r} is named twice", field=f"statistics[{i}].name")
    delivery = _table(document, "delivery", required=False)
    _known(delivery, _DELIVERY, where="delivery.")
    defaults = Delivery()
    settings = Delivery(
        retry_for=_duration(delivery, "retry_for", defaults.retry_for, where="delivery."),
        backoff_initial=_duration(
            delivery, "backoff_initial", defaults.backoff_initial, where="delivery."
        ),
        backoff_max=_duration(delivery, "backoff_max", defaults.backoff_max, where="delivery."),
    )
    if not timedelta(0) < settings.backoff_initial <= settings.backoff_max:
        raise InvalidArgument(
            "must be above 0 and at most backoff_max", field="delivery.backoff_initial"
        )
    return SyncConfig(
        path=path,
        sender=sender,
        signing_key=_path(document, "signing_key", base=base, where=""),
        state_dir=_path(document, "state_dir", base=base, where=""),
        catalogue=(
            _path(document, "catalogue", base=base, where="") if "catalogue" in document else None
        ),
        coordinator=Endpoint(
            target=_string(coordinator, "target", where="coordinator."),
            server_name=_optional_string(
                coordinator, "server_name", COORDINATOR_SERVER_NAME, where="coordinator."
            ),
            tls=coordinator_tls,
        ),
        requester=requester,
        token_file=_path(coordinator, "token_file", base=base, where="coordinator."),
        paillier_keys=_path(coordinator, "paillier_keys", base=base, where="coordinator."),
        province=Endpoint(
            target=_string(province, "target", where="province."),
            server_name=_optional_string(
                province, "server_name", PROVINCE_SERVER_NAME, where="province."
            ),
            tls=province_tls,
        ),
        lists_enabled=enabled,
        lists_every=_duration(lists, "every", timedelta(0), where="lists."),
        enterprises=(
            _path(grades, "enterprises", base=base, where="grades.")
            if "enterprises" in grades
            else None
        ),
        grades_every=_duration(grades, "every", timedelta(days=1), where="grades."),
        statistics=specs,
        delivery=settings,
    )


def _statistic(value: object, *, base: Path, where: str) -> StatisticSpec:
    if not isinstance(value, dict):
        raise InvalidArgument("must be a table", field=where.rstrip("."))
    _known(value, _STATISTIC, where=where)
    name = _string(value, "name", where=where)
    # a record is named NAME.STATISTIC, at most 128 characters with a 64-character statistic
    if not STATISTIC_NAME_PATTERN.fullmatch(name) or len(name) > 63:
        raise InvalidArgument(
            f"{name!r} is not a statistic name (a lower-case letter, then up to 62 lower-case "
            "letters, digits or _ . : -)",
            field=f"{where}name",
        )
    kind_text = _string(value, "subject_kind", where=where)
    try:
        kind = SubjectKind(kind_text)
    except ValueError:
        raise InvalidArgument(
            f"{kind_text!r} is not person or enterprise", field=f"{where}subject_kind"
        ) from None
    # parsed as the coordinator parses it: at most 4 places, so every answer fits a batch
    epsilon = parse_epsilon(_string(value, "epsilon", where=where), field=f"{where}epsilon")
    asked = value.get("statistics", [])
    if not isinstance(asked, list) or not all(isinstance(s, str) for s in asked):
        raise InvalidArgument("must be a list of statistic names", field=f"{where}statistics")
    return StatisticSpec(
        name=name,
        subject_kind=kind,
        subjects=_path(value, "subjects", base=base, where=where),
        epsilon=epsilon,
        statistics=tuple(asked),
        every=_duration(value, "every", timedelta(days=1), where=where),
    )


def _tls(table: dict[str, Any], *, base: Path, where: str, name: str) -> TlsFiles:
    from osmanthus.core.peers import PeerRole, cert_paths

    if all(k in table for k in ("ca", "cert", "key")):
        return TlsFiles(
            ca=_path(table, "ca", base=base, where=where),
            cert=_path(table, "cert", base=base, where=where),
            key=_path(table, "key", base=base, where=where),
        )
    if "certs_dir" in table:
        certs_dir = _path(table, "certs_dir", base=base, where=where)
        try:
            return TlsFiles.from_cert_paths(
                cert_paths(certs_dir, role=PeerRole.REQUESTER, name=name)
            )
        except ConfigError as exc:
            raise InvalidArgument(exc.message, field=f"{where}certs_dir") from None
    raise InvalidArgument("give certs_dir, or all of ca, cert and key", field=f"{where}certs_dir")


def _table(document: dict[str, Any], key: str, *, required: bool) -> dict[str, Any]:
    value = document.get(key)
    if value is None:
        if required:
            raise InvalidArgument(f"the [{key}] table is missing", field=key)
        return {}
    if not isinstance(value, dict):
        raise InvalidArgument("must be a table", field=key)
    return value


def _known(table: dict[str, Any], allowed: frozenset[str], *, where: str) -> None:
    for key in table:
        if key not in allowed:
            raise InvalidArgument(
                f"unknown setting (known: {', '.join(sorted(allowed))})", field=f"{where}{key}"
            )


def _string(table: dict[str, Any], key: str, *, where: str) -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgument("is required: a non-empty string", field=f"{where}{key}")
    return value


def _optional_string(table: dict[str, Any], key: str, default: str, *, where: str) -> str:
    return _string(table, key, where=where) if key in table else default


def _path(table: dict[str, Any], key: str, *, base: Path, where: str) -> Path:
    return base / _string(table, key, where=where)


def _duration(table: dict[str, Any], key: str, default: timedelta, *, where: str) -> timedelta:
    if key not in table:
        return default
    value = table[key]
    if not isinstance(value, str):
        raise InvalidArgument("must be a duration like 90s, 15m, 12h or 30d", field=f"{where}{key}")
    return parse_duration(value, field=f"{where}{key}")

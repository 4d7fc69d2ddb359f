"""The sync job's configuration file (sync.toml): who it is, where it sends, what it reports.

    sender = "suzhou"                        # the sender id senders.toml registers at the province
    signing_key = "keys/suzhou-sync.key"     # Ed25519 key from `osmanthus province keygen`
    state_dir = "state/sync"                 # checkpoints, outbox, staged work (owner-only)

    [coordinator]
    target = "10.0.0.2:50050"
    requester = "sync-1"                     # the job's requester certificate name
    token_file = "sync-1.jwt"                # its platform token (role sync_job)
    paillier_keys = "sync-1.paillier"        # the Paillier key file the token is bound to
    certs_dir = "certs"                      # or all of ca, cert and key (not both)

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

    [checkpoints]                            # carry the logs' checkpoints to the province's
    logs = "certs/logs.toml"                 # witness: every log this roster lists, each run

    [checkpoints.replicas]                   # coordinator replicas' own logs (each replica's
    coordinator-2 = "10.0.0.3:50050"         # log is read at that replica): name -> address

Paths are relative to the file. Unknown keys are refused, so a misspelt setting is never silently
ignored; a problem is named by its path in the file, e.g. statistics[1].epsilon. The TLS files
are `certs_dir` (the platform layout) or all of `ca`, `cert` and `key`, not both; `[province]`
without any of them uses the coordinator's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, ClassVar, Final, Self

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from osmanthus.core.dp import parse_epsilon
from osmanthus.core.errors import ConfigError, InvalidArgument
from osmanthus.core.names import PEER_NAME_PATTERN
from osmanthus.core.peers import COORDINATOR_DNS_NAME as COORDINATOR_SERVER_NAME
from osmanthus.core.peers import PROVINCE_SERVER_NAME, PeerRole, cert_paths
from osmanthus.core.settings import (
    Duration,
    RelativePath,
    Settings,
    SettingsError,
    Text,
    load_settings,
    problem,
    toml_kind,
)
from osmanthus.core.syncbatch_checks import STATISTIC_NAME_PATTERN
from osmanthus.core.tls import TlsFiles
from osmanthus.core.types import SubjectKind

#: the sender ids a batch may carry (osmanthus.core.syncbatch_checks checks the same)
_SENDER: Final = re.compile(r"[a-z0-9_-]{1,63}")


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
    #: the roster of transparency logs whose checkpoints go to the provincial witness each run
    #: (None: none are carried)
    logs: Path | None = None
    #: coordinator replica name -> the address of that replica, whose own log
    #: (NAME.coordinator.osmanthus/audit) only it serves; the other logs are read at `coordinator`
    replicas: Mapping[str, str] = field(default_factory=dict)


def load_config(path: Path) -> SyncConfig:
    """The configuration in `path`; ConfigError naming the file and each problem's path."""
    document = load_settings(path, _SyncFile, what="sync job configuration", field="config")
    coordinator, province = document.coordinator, document.province
    requester = coordinator.requester
    # the certificate files are looked up once the names are known: each endpoint's problem
    # is named by its own certs_dir
    problems: list[tuple[str, str]] = []
    coordinator_tls = coordinator.files(requester, at="coordinator", problems=problems)
    # the province knows the job by the same requester certificate unless told otherwise
    province_tls = (
        province.files(requester, at="province", problems=problems)
        if province.given()
        else coordinator_tls
    )
    if problems or coordinator_tls is None or province_tls is None:
        raise SettingsError(path, problems)
    delivery = document.delivery
    return SyncConfig(
        path=path,
        sender=document.sender,
        signing_key=document.signing_key,
        state_dir=document.state_dir,
        catalogue=document.catalogue,
        coordinator=Endpoint(
            target=coordinator.target, server_name=coordinator.server_name, tls=coordinator_tls
        ),
        requester=requester,
        token_file=coordinator.token_file,
        paillier_keys=coordinator.paillier_keys,
        province=Endpoint(
            target=province.target, server_name=province.server_name, tls=province_tls
        ),
        lists_enabled=document.lists.enabled,
        lists_every=document.lists.every,
        enterprises=document.grades.enterprises,
        grades_every=document.grades.every,
        statistics=tuple(
            StatisticSpec(
                name=s.name,
                subject_kind=s.subject_kind,
                subjects=s.subjects,
                epsilon=s.epsilon,
                statistics=tuple(s.statistics),
                every=s.every,
            )
            for s in document.statistics
        ),
        delivery=Delivery(
            retry_for=delivery.retry_for,
            backoff_initial=delivery.backoff_initial,
            backoff_max=delivery.backoff_max,
        ),
        logs=document.checkpoints.logs if document.checkpoints is not None else None,
        replicas=dict(document.checkpoints.replicas) if document.checkpoints is not None else {},
    )


# --- the file, table by table --------------------------------------------------------------------


def _sender(value: str) -> str:
    if not _SENDER.fullmatch(value):
        raise ValueError(f"{value!r} is not a sender id (1 to 63 of a-z 0-9 - _)")
    return value


def _certificate_name(value: str) -> str:
    if not PEER_NAME_PATTERN.fullmatch(value):
        raise ValueError(f"{value!r} is not a certificate name (1 to 63 of a-z 0-9 - _)")
    return value


def _statistic_name(value: str) -> str:
    # a record is named NAME.STATISTIC, at most 128 characters with a 64-character statistic
    if not STATISTIC_NAME_PATTERN.fullmatch(value) or len(value) > 63:
        raise ValueError(
            f"{value!r} is not a statistic name (a lower-case letter, then up to 62 lower-case "
            "letters, digits or _ . : -)"
        )
    return value


def _subject_kind(value: object) -> SubjectKind:
    try:
        return SubjectKind(value)
    except ValueError:
        raise ValueError(f"{value!r} is not person or enterprise") from None


def _epsilon(value: object) -> Decimal:
    # a string, parsed as the coordinator parses it: at most 4 places, so every answer fits a
    # batch (a TOML float would already have rounded what was written)
    if not isinstance(value, str):
        raise ValueError(f'must be a string like "0.05", not {toml_kind(value)}')
    try:
        return parse_epsilon(value)
    except InvalidArgument as exc:
        raise ValueError(exc.message) from None


class _Tls(Settings):
    """An endpoint's TLS files: certs_dir (the platform layout), or all of ca, cert and key."""

    #: whether the table must name its TLS files (else it may leave them all out)
    required: ClassVar[bool] = True

    certs_dir: RelativePath | None = None
    ca: RelativePath | None = None
    cert: RelativePath | None = None
    key: RelativePath | None = None

    def given(self) -> bool:
        return any(f is not None for f in (self.certs_dir, self.ca, self.cert, self.key))

    @model_validator(mode="after")
    def _one_way(self) -> Self:
        files = {"ca": self.ca, "cert": self.cert, "key": self.key}
        named = [k for k, v in files.items() if v is not None]
        if self.certs_dir is not None and named:
            raise problem(
                f"give certs_dir, or all of ca, cert and key, not both (also given: "
                f"{', '.join(named)})",
                "certs_dir",
            )
        if named and len(named) < len(files):
            missing = next(k for k, v in files.items() if v is None)
            raise problem(
                f"is required with {' and '.join(named)} (or give certs_dir alone)", missing
            )
        if self.required and not self.given():
            raise problem("give certs_dir, or all of ca, cert and key", "certs_dir")
        return self

    def files(self, name: str, *, at: str, problems: list[tuple[str, str]]) -> TlsFiles | None:
        """The files of requester `name`; None, with a problem added, if any is missing."""
        if self.ca is not None and self.cert is not None and self.key is not None:
            return TlsFiles(ca=self.ca, cert=self.cert, key=self.key)
        assert self.certs_dir is not None  # _one_way
        try:
            return TlsFiles.from_cert_paths(
                cert_paths(self.certs_dir, role=PeerRole.REQUESTER, name=name)
            )
        except ConfigError as exc:
            problems.append((f"{at}.certs_dir", exc.message))
            return None


class _Coordinator(_Tls):
    target: Text
    requester: Annotated[str, AfterValidator(_certificate_name)] = Field(
        description="the job's requester certificate name"
    )
    token_file: RelativePath = Field(description="the job's platform token, role sync_job")
    paillier_keys: RelativePath = Field(description="the Paillier key file the token is bound to")
    server_name: Text = COORDINATOR_SERVER_NAME


class _Province(_Tls):
    required: ClassVar[bool] = False

    target: Text
    server_name: Text = PROVINCE_SERVER_NAME


class _Lists(Settings):
    enabled: bool = True
    every: Duration = timedelta(0)


class _Grades(Settings):
    enterprises: RelativePath | None = None
    every: Duration = timedelta(days=1)


class _Statistic(Settings):
    name: Annotated[str, AfterValidator(_statistic_name)]
    subject_kind: Annotated[SubjectKind, BeforeValidator(_subject_kind)]
    subjects: RelativePath
    epsilon: Annotated[Decimal, BeforeValidator(_epsilon)]
    statistics: list[Text] = Field(default_factory=list)
    every: Duration = timedelta(days=1)


class _Delivery(Settings):
    retry_for: Duration = Delivery.retry_for
    backoff_initial: Duration = Delivery.backoff_initial
    backoff_max: Duration = Delivery.backoff_max

    @model_validator(mode="after")
    def _backoff_grows(self) -> Self:
        if not timedelta(0) < self.backoff_initial <= self.backoff_max:
            raise problem("must be above 0 and at most backoff_max", "backoff_initial")
        return self


class _Checkpoints(Settings):
    logs: RelativePath = Field(description="logs.toml: the logs whose checkpoints are carried")
    #: a coordinator replica's log is served by that replica only
    replicas: dict[Annotated[str, AfterValidator(_certificate_name)], Text] = Field(
        default_factory=dict
    )


class _SyncFile(Settings):
    sender: Annotated[str, AfterValidator(_sender)] = Field(
        description="the sender id senders.toml registers at the province"
    )
    signing_key: RelativePath = Field(description="the Ed25519 key batches are signed with")
    state_dir: RelativePath = Field(description="the job's state directory")
    catalogue: RelativePath | None = None
    coordinator: _Coordinator = Field(description="a [coordinator] table")
    province: _Province = Field(description="a [province] table")
    lists: _Lists = Field(default_factory=_Lists)
    grades: _Grades = Field(default_factory=_Grades)
    statistics: list[_Statistic] = Field(default_factory=list)
    delivery: _Delivery = Field(default_factory=_Delivery)
    checkpoints: _Checkpoints | None = None

    @model_validator(mode="after")
    def _statistics_named_once(self) -> Self:
        names = [s.name for s in self.statistics]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise problem(
                    f"{name!r} is named twice (also statistics[{names.index(name)}])",
                    "statistics", i, "name",
                )  # fmt: skip
        return self

"""An in-process federation for integration tests: 10 real nodes and a coordinator over mTLS."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from certs import PeerRole, cert_paths, issue_certificate
from coordinator.config import NodeEndpoint, render_nodes
from coordinator.server import (
    DEFAULT_CENTRAL_POLICY,
    CoordinatorConfig,
    RunningCoordinator,
    start_coordinator,
)
from coordinator.witnessing import DEFAULT_WITNESS_INTERVAL_S
from node.server import DEFAULT_NODE_POLICY, NodeConfig, start_node
from osmanthus.core.bundle import DEFAULT_POLL_S
from osmanthus.core.catalogue import Catalogue, default_catalogue_path, load_catalogue
from osmanthus.core.checkpoints import latest_path
from osmanthus.core.clock import china_today
from osmanthus.core.crl import REVOCATION_POLL_S
from osmanthus.core.logkeys import LOG_KEY_FILE, ROSTER_FILE, WITNESS_KEY_FILE
from osmanthus.core.logserver import cosignatures_path
from osmanthus.core.peers import peer_dir
from osmanthus.core.receipts import CONSENT_KEY_FILE, CONSENT_PUBLIC_KEY_FILE
from osmanthus.core.server import RunningServer
from osmanthus.core.tls import TlsFiles
from osmanthus.core.tokens import TokenIssuer
from osmanthus.core.types import DepartmentId, Role
from osmanthus.demo.seed import SeedReport, seed
from sdk import Client, RequesterKeys
from sdk.keys import load_or_create_keys
from tests.conftest import PLATFORM_DEPARTMENTS, PLATFORM_REQUESTERS, IssuerKeyPaths
from tests.waiting import wait_until

#: the federation's seed size: big enough for 200 random persons, small enough to seed in ~1 s
PERSONS = 400
ENTERPRISES = 80
AS_OF = datetime.now(UTC).date()


def restricted_catalogue(departments: Sequence[str]) -> Catalogue:
    """The default catalogue cut down to the departments a test federation runs."""
    return load_catalogue().restricted_to(departments)


def restricted_catalogue_toml(departments: Sequence[str]) -> str:
    """The shipped catalogue file without the departments not in `departments`: what a
    `node serve` or `batch score` subprocess is given to agree with restricted_catalogue()."""
    keep = set(departments)

    def block(match: re.Match[str]) -> str:
        return match.group(0) if match.group(1) in keep else ""

    text = default_catalogue_path().read_text(encoding="utf-8")
    text = re.sub(r'\[\[department\]\]\nid = "(\w+)"\n(?:[^\n]+\n)*\n', block, text)
    # and the flags those departments set and the lists they publish
    return re.sub(
        r'\[\[(?:flag|list)\]\]\nid = "\w+"\ndepartment = "(\w+)"\n(?:[^\n]+\n)*\n', block, text
    )


@dataclasses.dataclass
class Federation:
    catalogue: Catalogue
    data: SeedReport
    certs: Path
    issuer: TokenIssuer
    issuer_keys: IssuerKeyPaths
    nodes: dict[str, RunningServer]
    node_configs: dict[str, NodeConfig]
    coordinator: RunningCoordinator
    state_dir: Path
    keys: dict[str, RequesterKeys]

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.coordinator.port}"

    def tls(self, requester: str) -> TlsFiles:
        return TlsFiles.from_cert_paths(
            cert_paths(self.certs, role=PeerRole.REQUESTER, name=requester)
        )

    def token(
        self,
        requester: str,
        *,
        role: Role,
        purposes: Sequence[str],
        keys: RequesterKeys | None = None,
        ttl: timedelta = timedelta(minutes=30),
        single_use: bool = False,
        seal_fingerprint: str | None = None,
    ) -> str:
        keys = keys or self.keys[requester]
        return self.issuer.issue(
            requester=requester,
            role=role,
            purposes=purposes,
            key_fingerprint=keys.fingerprint,
            ttl=ttl,
            single_use=single_use,
            seal_fingerprint=seal_fingerprint,
        )

    def client(
        self,
        requester: str,
        *,
        role: Role,
        purposes: Sequence[str],
        single_use: bool = False,
        seal_fingerprint: str | None = None,
    ) -> Client:
        keys = self.keys[requester]
        token = self.token(
            requester,
            role=role,
            purposes=purposes,
            single_use=single_use,
            seal_fingerprint=seal_fingerprint,
        )
        return Client(
            self.target, tls=self.tls(requester), token=token, keys=keys, catalogue=self.catalogue
        )


@pytest.fixture(scope="session")
def requester_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, RequesterKeys]:
    """Real 2048-bit Paillier keys for each test requester, generated once per session."""
    directory = tmp_path_factory.mktemp("requester-keys")
    return {name: load_or_create_keys(directory / f"{name}.key") for name in PLATFORM_REQUESTERS}


def start_federation(
    base: Path,
    *,
    catalogue: Catalogue,
    data: SeedReport,
    certs: Path,
    issuer_keys: IssuerKeyPaths,
    keys: dict[str, RequesterKeys],
    departments: Sequence[str],
    deadline_s: float = 3.0,
    extra_endpoints: Sequence[NodeEndpoint] = (),
    node_policies: Mapping[str, Path] | None = None,
    central_policy: Path | None = None,
    central_policy_bundle: Path | None = None,
    node_policy_bundles: Mapping[str, Path] | None = None,
    policy_trust: Sequence[Path] = (),
    policy_poll_s: float = DEFAULT_POLL_S,
    crl: Path | None = None,
    token_deny_list: Path | None = None,
    revocation_poll_s: float = REVOCATION_POLL_S,
    today: Callable[[], date] = china_today,
    transparency: bool = False,
    checkpoint_every: int = 1000,
    witness: bool = False,
    metrics_listen: str | None = None,
) -> Federation:
    """`crl` and `token_deny_list` go to every node and the coordinator; `today` is every
    node's calendar (a test clock makes a case fall overdue). With `transparency`, every node
    and the coordinator sign their audit log's checkpoints with the log.key `certs init` made
    (the roster is `certs`/logs.toml), one every `checkpoint_every` entries. With `witness`
    too, the coordinator witnesses the nodes' logs with its witness.key, in the rounds the
    test drives (`witness_node_logs`)."""
    # every federation serves copies of the seeded files: a running node holds its database
    # (DuckDB's one writer, for live imports), and other tests start node processes on the
    # session's seed; tests that change records reach the served copy through federation.data
    copies = base / "data"
    copies.mkdir(parents=True, exist_ok=True)
    databases = dict(data.databases)
    for dept in departments:
        source = data.databases[DepartmentId(dept)]
        databases[DepartmentId(dept)] = Path(shutil.copy2(source, copies / source.name))
    data = dataclasses.replace(data, databases=databases)
    nodes: dict[str, RunningServer] = {}
    configs: dict[str, NodeConfig] = {}
    for dept in departments:
        config = NodeConfig(
            department=dept,
            db=data.databases[DepartmentId(dept)],
            tls=TlsFiles.from_cert_paths(cert_paths(certs, role=PeerRole.NODE, name=dept)),
            issuer_public_key=issuer_keys.public,
            state_dir=base / "state" / dept,
            policy=(node_policies or {}).get(dept, DEFAULT_NODE_POLICY),
            # small tables: every in-process node builds one per requester key in this one
            # process; 6-bit windows take ~0.05 s and 6 MB instead of ~0.5 s and 54 MB
            table_window_bits=6,
            policy_bundle=(node_policy_bundles or {}).get(dept),
            policy_trust=tuple(policy_trust),
            policy_poll_s=policy_poll_s,
            crl=crl,
            token_deny_list=token_deny_list,
            revocation_poll_s=revocation_poll_s,
            # every node verifies consents with the consent.pub 'certs init' made
            consent_public_key=certs / "coordinator" / CONSENT_PUBLIC_KEY_FILE,
            **_log_keys(certs, PeerRole.NODE, dept, on=transparency, every=checkpoint_every),
            metrics_listen=metrics_listen,
        )
        configs[dept] = config
        nodes[dept] = start_node(config, catalogue=catalogue, today=today)
    endpoints = [NodeEndpoint(DepartmentId(d), f"127.0.0.1:{s.port}") for d, s in nodes.items()]
    nodes_toml = base / "nodes.toml"
    nodes_toml.write_text(render_nodes([*endpoints, *extra_endpoints]))
    coordinator = start_coordinator(
        CoordinatorConfig(
            nodes=nodes_toml,
            tls=TlsFiles.from_cert_paths(
                cert_paths(certs, role=PeerRole.COORDINATOR, name="coordinator")
            ),
            issuer_public_key=issuer_keys.public,
            state_dir=base / "state" / "coordinator",
            deadline_s=deadline_s,
            policy=central_policy or DEFAULT_CENTRAL_POLICY,
            policy_bundle=central_policy_bundle,
            policy_trust=tuple(policy_trust),
            policy_poll_s=policy_poll_s,
            crl=crl,
            token_deny_list=token_deny_list,
            revocation_poll_s=revocation_poll_s,
            # the key whose consent.pub the nodes were given
            consent_key=certs / "coordinator" / CONSENT_KEY_FILE,
            metrics_listen=metrics_listen,
            **_log_keys(
                certs, PeerRole.COORDINATOR, "coordinator", on=transparency, every=checkpoint_every
            ),
            # no background rounds: the tests drive every round (witness_node_logs)
            witness_key=(
                certs / "coordinator" / WITNESS_KEY_FILE if transparency and witness else None
            ),
            witness_interval_s=0 if transparency and witness else DEFAULT_WITNESS_INTERVAL_S,
        ),
        catalogue=catalogue,
    )
    return Federation(
        catalogue=catalogue,
        data=data,
        certs=certs,
        issuer=TokenIssuer.from_file(issuer_keys.private),
        issuer_keys=issuer_keys,
        nodes=nodes,
        node_configs=configs,
        coordinator=coordinator,
        state_dir=base / "state",
        keys=keys,
    )


def _log_keys(certs: Path, role: PeerRole, name: str, *, on: bool, every: int) -> dict[str, Any]:
    """A peer's log key and the roster, as its config takes them (nothing when not `on`)."""
    if not on:
        return {}
    # the coordinator's config names the roster `logs` (it also witnesses with it, given a
    # witness key; none is given here)
    roster = "logs" if role is PeerRole.COORDINATOR else "log_roster"
    return {
        "log_key": peer_dir(certs, role=role, name=name) / LOG_KEY_FILE,
        roster: certs / ROSTER_FILE,
        "checkpoint_every": every,
    }


def _signed_size(path: Path) -> int:
    """The size of the latest checkpoint beside the log at `path` (0 without one)."""
    try:
        note = latest_path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return 0
    return int(note.split("\n")[1])


def _cosigned_size(path: Path) -> int:
    """The largest checkpoint size the log at `path` holds a witness cosignature for."""
    try:
        records = cosignatures_path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return 0
    return max((int(json.loads(r)["size"]) for r in records if r.strip()), default=0)


def witness_node_logs(federation: Federation) -> None:
    """Once every node and the coordinator signed a checkpoint of what their logs hold now
    (their checkpointers run in the background: `checkpoint_every=1`), run the coordinator's
    witness rounds until every node holds a cosignature covering it (a federation started with
    `transparency` and `witness`)."""
    witnessing = federation.coordinator.witnessing
    assert witnessing is not None, "start_federation(transparency=True, witness=True)"
    logs = {name: federation.state_dir / name / "audit.jsonl" for name in federation.nodes}
    coordinator_log = federation.state_dir / "coordinator" / "audit.jsonl"
    sizes = {name: len(path.read_bytes().splitlines()) for name, path in logs.items()}
    coordinator_size = len(coordinator_log.read_bytes().splitlines())
    wait_until(
        lambda: (
            all(_signed_size(logs[n]) >= sizes[n] for n in logs)
            and _signed_size(coordinator_log) >= coordinator_size
        ),
        what="every log's checkpointer to sign what its log holds",
        poll_s=0.1,
    )

    def cosigned() -> bool:
        witnessing.witness_once()
        return all(_cosigned_size(logs[n]) >= sizes[n] for n in logs)

    wait_until(cosigned, what="the coordinator to cosign every node's checkpoint", poll_s=0.1)


def stop_federation(federation: Federation) -> None:
    federation.coordinator.stop()
    for server in federation.nodes.values():
        server.stop(grace=0.5)


@pytest.fixture(scope="session")
def list_officers(
    tmp_path_factory: pytest.TempPathFactory, platform_certs: Path
) -> dict[str, TlsFiles]:
    """Operator certificates named after court and tax (their list officers), issued once by
    the platform CA into a directory of their own (platform_certs stays as it is)."""
    out = tmp_path_factory.mktemp("list-officers")
    return {
        dept: TlsFiles.from_cert_paths(
            issue_certificate(platform_certs, role=PeerRole.OPERATOR, name=dept, out_dir=out / dept)
        )
        for dept in ("court", "tax")
    }


@pytest.fixture(scope="session")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> SeedReport:
    return seed(
        tmp_path_factory.mktemp("seed"), persons=PERSONS, enterprises=ENTERPRISES, as_of=AS_OF
    )


@pytest.fixture(scope="session")
def federation(
    tmp_path_factory: pytest.TempPathFactory,
    seeded: SeedReport,
    platform_certs: Path,
    issuer_keys: IssuerKeyPaths,
    requester_keys: dict[str, RequesterKeys],
) -> Iterator[Federation]:
    """Ten department nodes (8 serving persons, 6 enterprises) and a coordinator, all mTLS."""
    fed = start_federation(
        tmp_path_factory.mktemp("federation"),
        catalogue=restricted_catalogue(PLATFORM_DEPARTMENTS),
        data=seeded,
        certs=platform_certs,
        issuer_keys=issuer_keys,
        keys=requester_keys,
        departments=PLATFORM_DEPARTMENTS,
    )
    yield fed
    stop_federation(fed)


@pytest.fixture(scope="session")
def registrar(federation: Federation) -> Iterator[Client]:
    """A platform service allowed to record consents."""
    client = federation.client(
        "registrar",
        role=Role.PLATFORM_SERVICE,
        purposes=["court_enforcement", "consent_management"],
    )
    client.register_key()
    yield client
    client.close()


@pytest.fixture(scope="session")
def agency(federation: Federation) -> Iterator[Client]:
    """A credit agency querying for loan underwriting and credit reports."""
    client = federation.client(
        "agency-1", role=Role.CREDIT_AGENCY, purposes=["loan_underwriting", "credit_report"]
    )
    client.register_key()
    yield client
    client.close()


def consent_for(
    registrar: Client,
    subject: str,
    *,
    grantee: str = "agency-1",
    purpose: str = "loan_underwriting",
) -> str:
    record = registrar.grant_consent(
        subject_id=subject,
        grantee=grantee,
        purpose=purpose,
        expires_at=datetime.now(UTC) + timedelta(days=1),
    )
    return record.consent_id

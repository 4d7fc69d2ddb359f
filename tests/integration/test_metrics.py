"""Prometheus metrics of real servers over mTLS, and gRPC reflection on every server.

The nodes and the coordinator run with `metrics_listen` on 127.0.0.1:0; the test makes real
calls through the SDK, scrapes each endpoint over HTTP, parses it with the official client's
text parser, and checks the counts moved as the calls should move them, that no subject or
requester id appears anywhere in the exposition, and that a standard reflection client
(grpcio-reflection's ProtoReflectionDescriptorDatabase) lists every server's services.
"""

from __future__ import annotations

import csv
import socket
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from prometheus_client.parser import text_string_to_metric_families

from certs import PeerRole, cert_paths, issue_certificate
from coordinator.config import NodeEndpoint
from osmanthus.core import signing
from osmanthus.core.errors import OsmanthusError
from osmanthus.core.tls import TlsFiles, secure_channel
from osmanthus.core.types import DepartmentId, Role
from province.server import ProvinceConfig, start_province
from sdk import RequesterKeys
from tests.conftest import IssuerKeyPaths
from tests.integration.conftest import (
    Federation,
    restricted_catalogue,
    start_federation,
    stop_federation,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

IN_PROCESS = ("court", "tax", "samr", "eco", "hrss")
#: in the catalogue, but its node is down: enterprise answers go without it (partial)
DOWN = "customs"
#: person-category owners the catalogue needs; enterprise queries never ask them
PERSON_OWNERS = ("civility", "blood", "volunteer")
AGENCY = "agency-1"
#: a purpose no policy names: it must be counted as "other", never as itself
ODD_PURPOSE = "zz_not_a_purpose_9f3c"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        return str(response.read().decode("utf-8"))


def samples(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels`."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def families(text: str) -> set[str]:
    return {family.name for family in text_string_to_metric_families(text)}


@dataclass
class Metered:
    federation: Federation
    firms: list[str]

    @property
    def coordinator_port(self) -> int:
        endpoint = self.federation.coordinator.server.metrics
        assert endpoint is not None
        return endpoint.port

    def node_port(self, department: str) -> int:
        endpoint = self.federation.nodes[department].metrics
        assert endpoint is not None
        return endpoint.port


@pytest.fixture(scope="module")
def metered(
    tmp_path_factory: pytest.TempPathFactory,
    federation: Federation,
    platform_certs: Path,
    issuer_keys: IssuerKeyPaths,
    requester_keys: dict[str, RequesterKeys],
) -> Iterator[Metered]:
    departments = (*IN_PROCESS, DOWN, *PERSON_OWNERS)
    fed = start_federation(
        tmp_path_factory.mktemp("metered"),
        catalogue=restricted_catalogue(departments),
        data=federation.data,
        certs=platform_certs,
        issuer_keys=issuer_keys,
        keys=requester_keys,
        departments=IN_PROCESS,
        deadline_s=3.0,
        extra_endpoints=[NodeEndpoint(DepartmentId(DOWN), f"127.0.0.1:{_closed_port()}")],
        transparency=True,
        checkpoint_every=1,
        metrics_listen="127.0.0.1:0",
    )
    with federation.data.subjects_file.open() as f:
        firms = [r["subject_id"] for r in csv.DictReader(f) if r["subject_kind"] == "enterprise"]
    try:
        yield Metered(fed, firms)
    finally:
        stop_federation(fed)


def test_metrics_are_off_unless_asked_for(federation: Federation) -> None:
    assert federation.coordinator.server.metrics is None
    assert all(server.metrics is None for server in federation.nodes.values())


def test_a_query_moves_the_rpc_decision_partial_and_audit_counts(metered: Metered) -> None:
    fed = metered.federation
    before = scrape(metered.coordinator_port)
    firm = metered.firms[2]
    with fed.client(AGENCY, role=Role.CREDIT_AGENCY, purposes=["credit_report"]) as client:
        client.register_key()
        answer = client.enterprise_score(firm, purpose="credit_report")
    assert answer.partial and DOWN in {m.department for m in answer.missing}
    after = scrape(metered.coordinator_port)

    def moved(name: str, **labels: str) -> float:
        return samples(after, name, **labels) - samples(before, name, **labels)

    coordinator = "osmanthus.v1.CoordinatorService"
    assert (
        moved("osmanthus_grpc_server_handled_total", grpc_service=coordinator, grpc_code="OK") >= 2
    )
    assert moved("osmanthus_grpc_server_handling_seconds_count", grpc_service=coordinator) >= 2
    # the nodes run in this process: one registry, so the coordinator's endpoint shows their
    # RPCs too (in production each process has its own)
    assert (
        moved("osmanthus_grpc_server_handled_total", grpc_service="osmanthus.v1.NodeService") >= 3
    )
    assert moved("osmanthus_queries_total", purpose="credit_report", decision="allow") == 1
    assert moved("osmanthus_partial_answers_total") == 1
    assert moved("osmanthus_missing_departments_total", department=DOWN) == 1
    assert moved("osmanthus_audit_appends_total", log="audit.jsonl") >= 2
    # no subject id, requester id or query id is ever a label
    for raw in (firm, AGENCY, answer.query_id):
        assert raw not in after
    assert {
        "osmanthus_encryption_table_builds",
        "osmanthus_epsilon_spent",
        "osmanthus_ingest_rows",
        "osmanthus_ingest_in_progress",
        "osmanthus_build_info",
    } <= families(after)


def test_a_refusal_counts_as_a_deny_under_other_and_by_its_status_code(metered: Metered) -> None:
    fed = metered.federation
    before = scrape(metered.coordinator_port)
    firm = metered.firms[3]
    client = fed.client(AGENCY, role=Role.CREDIT_AGENCY, purposes=[ODD_PURPOSE])
    with client, pytest.raises(OsmanthusError):
        client.register_key()
        client.enterprise_score(firm, purpose=ODD_PURPOSE)
    after = scrape(metered.coordinator_port)
    assert samples(after, "osmanthus_queries_total", purpose="other", decision="deny") > samples(
        before, "osmanthus_queries_total", purpose="other", decision="deny"
    )
    refused = sum(
        samples(after, "osmanthus_grpc_server_handled_total", grpc_code=code)
        - samples(before, "osmanthus_grpc_server_handled_total", grpc_code=code)
        for code in ("PERMISSION_DENIED", "UNAUTHENTICATED", "FAILED_PRECONDITION")
    )
    assert refused >= 1
    for raw in (ODD_PURPOSE, firm, AGENCY):
        assert raw not in after


def test_each_log_exports_its_checkpoint_age(metered: Metered) -> None:
    port = metered.node_port(IN_PROCESS[0])

    def ages() -> dict[str, float]:
        found: dict[str, float] = {}
        for family in text_string_to_metric_families(scrape(port)):
            for sample in family.samples:
                if sample.name == "osmanthus_audit_checkpoint_age_seconds":
                    found[sample.labels["origin"]] = sample.value
        return found

    # every node and the coordinator sign checkpoints (checkpoint_every=1) once their log grew
    with metered.federation.client(
        AGENCY, role=Role.CREDIT_AGENCY, purposes=["credit_report"]
    ) as client:
        client.register_key()
        client.enterprise_score(metered.firms[4], purpose="credit_report")
    wait_until(
        lambda: {f"{d}.node.osmanthus/audit" for d in IN_PROCESS} <= set(ages()),
        what="a checkpoint age for every node's log",
    )
    assert all(0 <= age < 3600 for age in ages().values())

    def signed_entries() -> bool:
        text = scrape(port)
        return any(
            samples(text, "osmanthus_audit_checkpoint_size", origin=f"{d}.node.osmanthus/audit")
            >= 1
            for d in IN_PROCESS
        )

    # a node that answered has a checkpoint over its entries, once its checkpointer ran
    wait_until(signed_entries, what="a checkpoint covering a node's audit entries")
    text = scrape(port)
    for department in IN_PROCESS:
        origin = f"{department}.node.osmanthus/audit"
        assert samples(text, "osmanthus_audit_tree_size", origin=origin) >= samples(
            text, "osmanthus_audit_checkpoint_size", origin=origin
        )


def _reflected_services(port: int, tls: TlsFiles, *, server_cert: Path) -> set[str]:
    """What a standard reflection client lists, over mTLS (as grpcurl with -cacert, -cert and
    -key and -authority set to the name in the server's certificate)."""
    certificate = x509.load_pem_x509_certificate(server_cert.read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    server_name = names.value.get_values_for_type(x509.DNSName)[0]
    with secure_channel(f"127.0.0.1:{port}", tls, server_name=server_name) as channel:
        return set(ProtoReflectionDescriptorDatabase(channel).get_services())


def test_a_standard_reflection_client_lists_each_servers_services(
    metered: Metered, tmp_path: Path, platform_certs: Path
) -> None:
    fed = metered.federation
    tls = fed.tls(AGENCY)
    standard = {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}
    certs = fed.certs
    coordinator = _reflected_services(
        fed.coordinator.port,
        tls,
        server_cert=cert_paths(certs, role=PeerRole.COORDINATOR, name="coordinator").cert,
    )
    assert {"osmanthus.v1.CoordinatorService", "osmanthus.v1.TransparencyService"} | standard <= (
        coordinator
    )
    node = _reflected_services(
        fed.nodes[IN_PROCESS[0]].port,
        tls,
        server_cert=cert_paths(certs, role=PeerRole.NODE, name=IN_PROCESS[0]).cert,
    )
    assert {
        "osmanthus.v1.NodeService",
        "osmanthus.v1.ListOfficeService",
        "osmanthus.v1.CaseOfficeService",
        "osmanthus.v1.TransparencyService",
    } | standard <= node
    # the provincial receiver, with metrics on and no witness: its RPCs are counted all the same
    receiver_tls = TlsFiles.from_cert_paths(
        issue_certificate(platform_certs, role=PeerRole.NODE, name="province", out_dir=tmp_path)
    )
    senders = tmp_path / "senders.toml"
    (tmp_path / "keys").mkdir()
    signing.write_key_pair(tmp_path / "keys", "suzhou-sync", what="sender key")
    senders.write_text(
        '[[sender]]\nid = "suzhou"\npublic_keys = ["keys/suzhou-sync.pub"]\n'
        'certificates = ["sync-1"]\n',
        encoding="utf-8",
    )
    receiver = start_province(
        ProvinceConfig(
            senders=senders,
            state_dir=tmp_path / "state",
            tls=receiver_tls,
            metrics_listen="127.0.0.1:0",
        )
    )
    try:
        assert {"osmanthus.v1.ProvinceService"} | standard <= _reflected_services(
            receiver.port, tls, server_cert=receiver_tls.cert
        )
        assert receiver.metrics is not None
        text = scrape(receiver.metrics.port)
        reflection = "grpc.reflection.v1alpha.ServerReflection"
        assert samples(text, "osmanthus_grpc_server_handled_total", grpc_service=reflection) >= 1
    finally:
        receiver.stop(grace=0.5)

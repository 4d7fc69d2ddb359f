"""osmanthus.core.metrics: bounded labels, the policy's purposes, the portal's HTTP counts."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from coordinator.server import DEFAULT_CENTRAL_POLICY
from osmanthus.core import metrics
from osmanthus.core.catalogue import load_catalogue
from osmanthus.core.errors import ConfigError
from osmanthus.core.metrics import (
    MAX_LABEL_VALUES,
    OTHER,
    REGISTRY,
    UNMATCHED_ROUTE,
    BoundedLabel,
    HttpMetricsMiddleware,
    parse_listen,
    purposes_named,
)


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_the_purposes_are_the_ones_the_central_policy_names() -> None:
    named = purposes_named(DEFAULT_CENTRAL_POLICY.read_text(encoding="utf-8"))
    assert {"self_query", "credit_report", "loan_underwriting", "court_enforcement"} <= named
    assert all(" " not in purpose and purpose for purpose in named)


def test_a_purpose_the_policy_does_not_name_counts_as_other() -> None:
    metrics.bind_purposes(lambda: 'permit(principal, action, resource) when '
                          '{ context.purpose == "credit_report" };')  # fmt: skip
    assert metrics.purpose_label("credit_report") == "credit_report"
    assert metrics.purpose_label("91320500MA1XYZ1234") == OTHER
    assert metrics.purpose_label("") == "none"
    before = _value("osmanthus_queries_total", shape="total", purpose=OTHER, decision="deny")
    metrics.query_decided("total", "anything-a-requester-typed", "deny")
    after = _value("osmanthus_queries_total", shape="total", purpose=OTHER, decision="deny")
    assert after == before + 1
    metrics.query_decided("not-a-shape", "credit_report", "maybe")
    assert _value("osmanthus_queries_total", shape=OTHER, purpose="credit_report", decision=OTHER)


def test_a_configuration_bound_label_stops_growing_at_its_cap() -> None:
    label = BoundedLabel(cap=2)
    assert label("court") == "court"
    assert label("tax") == "tax"
    assert label("samr") == OTHER
    assert label("court") == "court"
    assert label("has space") == OTHER


#: departments of a city at full scale (about 65 of them hold enterprise records)
CITY_DEPARTMENTS = 88


def test_the_default_cap_keeps_every_department_of_a_city_apart() -> None:
    assert MAX_LABEL_VALUES >= 256
    label = BoundedLabel()
    names = [f"dept-{n:02d}" for n in range(CITY_DEPARTMENTS)]
    assert [label(name) for name in names] == names
    assert [label(name) for name in names] == names  # seen again: still their own series
    assert len(load_catalogue().departments) <= MAX_LABEL_VALUES


def test_ingest_progress_is_counted_by_department() -> None:
    metrics.ingest_started("housing")
    assert _value("osmanthus_ingest_in_progress", department="housing") == 1
    metrics.ingest_rows(500, department="housing")
    metrics.ingest_rows(2, department="housing", kind="withdrawal")
    metrics.ingest_finished("housing", loaded=True)
    assert _value("osmanthus_ingest_in_progress", department="housing") == 0
    assert _value("osmanthus_ingest_rows_total", department="housing", kind="new") >= 500
    assert _value("osmanthus_ingest_rows_total", department="housing", kind="withdrawal") >= 2
    assert _value("osmanthus_ingest_files_total", department="housing", result="loaded") >= 1
    assert _value("osmanthus_ingest_last_success_timestamp_seconds", department="housing") > 0


@pytest.mark.parametrize("listen", ["9464", "127.0.0.1", ":9464", "host:port", "[::1]:99999"])
def test_a_listen_address_that_is_not_host_port_is_refused_by_name(listen: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_listen(listen)
    assert caught.value.field == "metrics_listen"


def test_an_ipv6_listen_address_is_read_without_its_brackets() -> None:
    assert parse_listen("[::1]:0") == ("::1", 0)


def _case(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"case {request.path_params['case_id']}")


def test_the_portal_counts_requests_by_route_template_never_by_path() -> None:
    app = Starlette(routes=[Route("/cases/{case_id}", _case), Route("/", _case_root)])
    client = TestClient(HttpMetricsMiddleware(app))
    template = {"route": "/cases/{case_id}", "method": "GET", "status": "200"}
    before = _value("osmanthus_http_requests_total", **template)
    unmatched = {"route": UNMATCHED_ROUTE, "method": "GET", "status": "404"}
    before_unmatched = _value("osmanthus_http_requests_total", **unmatched)
    assert client.get("/cases/320503199001011234").status_code == 200
    assert client.get("/cases/another-subject").status_code == 200
    assert client.get("/no/such/320503199001011234").status_code == 404
    assert client.post("/cases/x").status_code == 405
    assert _value("osmanthus_http_requests_total", **template) == before + 2
    assert _value("osmanthus_http_requests_total", **unmatched) == before_unmatched + 1
    assert _value(
        "osmanthus_http_requests_total", route="/cases/{case_id}", method="POST", status="405"
    )
    endpoint = metrics.serve("127.0.0.1:0")
    try:
        with urllib.request.urlopen(endpoint.url, timeout=10) as response:
            text = response.read().decode("utf-8")
    finally:
        endpoint.close()
    assert "320503199001011234" not in text
    assert "another-subject" not in text
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {"osmanthus_http_requests", "osmanthus_http_request_seconds"} <= names


def _case_root(request: Request) -> PlainTextResponse:
    return PlainTextResponse("cases")

"""Red and black lists at a real department node over mutual TLS: the list officer publishes
and withdraws, nobody else may, only the coordinator reads the public view, and a black-list
entry in view raises its flag in FLAGS answers until it is withdrawn.

Windows are relative to the node's real date (China time): yesterday, today, tomorrow. Every
subject here is one the seed does not hold, and the module withdraws whatever it left in view,
so the shared federation answers as before for every other test.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from certs import PeerRole, cert_paths
from node.officer import ListOfficer
from node.server import LIST_OFFICE_SERVICE_NAME
from osmanthus import cli
from osmanthus.core.clock import china_today
from osmanthus.core.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from osmanthus.core.grpc_errors import error_from_rpc
from osmanthus.core.ids import make_resident_id, make_uscc, organisation_code_check_char
from osmanthus.core.lists import EntryId, EntryStatus, NewEntry, WithdrawReason
from osmanthus.core.tls import TlsFiles, node_server_name, secure_channel
from osmanthus.core.types import SubjectId, SubjectKind
from osmanthus.core.wire.lists import PublicPage, PublicQuery
from osmanthus.v1 import node_pb2_grpc
from sdk import Client
from tests.integration.conftest import Federation, consent_for
from tests.integration.test_scores_match_plaintext import subjects

COURT = "court"
PERSON = SubjectKind.PERSON
ENTERPRISE = SubjectKind.ENTERPRISE
#: the measures the court's judgement_defaulter flag triggers, and one it does not
COURT_MEASURES = ("bank_loan", "land_approval", "high_consumption")
OTHER_MEASURE = "customs_facilitation"
PREFIX = "LN-"


def _firm(n: int) -> SubjectId:
    first8 = f"W{n:07d}"
    return make_uscc(
        authority="9",
        category="1",
        region="320505",
        organisation=first8 + organisation_code_check_char(first8),
    )


@pytest.fixture(scope="module")
def unseeded(federation: Federation) -> dict[str, SubjectId]:
    """Subjects no department holds a record of: only a list entry can flag them."""
    chosen = {
        "firm": _firm(4242),
        "firm2": _firm(4243),
        "firm3": _firm(4244),
        "person": make_resident_id(region="320505", birth=date(1961, 2, 28), sequence=913),
        "person2": make_resident_id(region="320505", birth=date(1962, 3, 1), sequence=914),
    }
    seeded = set(subjects(federation, "person")) | set(subjects(federation, "enterprise"))
    assert not seeded & set(chosen.values())
    return chosen


def _target(federation: Federation) -> str:
    return f"127.0.0.1:{federation.nodes[COURT].port}"


@pytest.fixture(scope="module")
def officer(
    federation: Federation, list_officers: dict[str, TlsFiles], unseeded: dict[str, SubjectId]
) -> Iterator[ListOfficer]:
    with ListOfficer(_target(federation), department=COURT, tls=list_officers[COURT]) as client:
        yield client
        # leave nothing of this module in public view
        for subject_key, kind in (
            ("firm", ENTERPRISE),
            ("firm2", ENTERPRISE),
            ("firm3", ENTERPRISE),
            ("person", PERSON),
            ("person2", PERSON),
        ):
            for entry in client.history(kind, unseeded[subject_key]):
                if entry.status in (EntryStatus.IN_VIEW, EntryStatus.SCHEDULED):
                    client.withdraw(
                        entry.entry.entry_id, reason=WithdrawReason.ERROR, reference="test cleanup"
                    )


def _entry(
    entry_id: str,
    subject: SubjectId,
    *,
    kind: SubjectKind = ENTERPRISE,
    start: date,
    end: date,
    list_id: str = "judgement_defaulters",
) -> NewEntry:
    return NewEntry(
        entry_id=EntryId(PREFIX + entry_id),
        list=list_id,
        subject_kind=kind,
        subject_id=subject,
        subject_name="Test subject",
        legal_basis="",
        reason="failed to perform an effective judgement",
        window_start=start,
        window_end=end,
    )


def _public(federation: Federation, tls: TlsFiles, query: PublicQuery) -> PublicPage:
    from osmanthus.core.wire import lists as lists_wire

    with secure_channel(_target(federation), tls, server_name=node_server_name(COURT)) as channel:
        stub = node_pb2_grpc.NodeServiceStub(channel)
        try:
            reply = stub.PublicEntries(lists_wire.public_query_to_proto(query), timeout=10)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
    return lists_wire.public_page_from_proto(reply)


def _coordinator_tls(federation: Federation) -> TlsFiles:
    return TlsFiles.from_cert_paths(
        cert_paths(federation.certs, role=PeerRole.COORDINATOR, name="coordinator")
    )


def test_the_officer_publishes_and_the_window_decides_what_is_in_view(
    federation: Federation, officer: ListOfficer, unseeded: dict[str, SubjectId]
) -> None:
    today = china_today()
    yesterday, tomorrow = today - timedelta(days=1), today + timedelta(days=1)
    firm = unseeded["firm2"]
    entries = [
        _entry("window-past", firm, start=today - timedelta(days=30), end=yesterday),
        _entry("window-now", firm, start=yesterday, end=tomorrow),
        _entry("window-today", firm, start=today, end=today),
        _entry("window-next", firm, start=tomorrow, end=tomorrow + timedelta(days=30)),
    ]
    result = officer.publish(entries)
    assert (result.published, result.unchanged) == (4, 0)
    # a retried upload changes nothing
    again = officer.publish(entries)
    assert (again.published, again.unchanged) == (0, 4)
    history = {str(e.entry.entry_id): e for e in officer.history(ENTERPRISE, firm)}
    assert {k: v.status for k, v in history.items()} == {
        "LN-window-past": EntryStatus.EXPIRED,
        "LN-window-now": EntryStatus.IN_VIEW,
        "LN-window-today": EntryStatus.IN_VIEW,
        "LN-window-next": EntryStatus.SCHEDULED,
    }
    assert history["LN-window-now"].entry.legal_basis.startswith("Provisions of the Supreme")
    page = _public(
        federation,
        _coordinator_tls(federation),
        PublicQuery(subject_kind=ENTERPRISE, subject_id=firm),
    )
    assert [e.entry_id for e in page.entries] == ["LN-window-now", "LN-window-today"]
    assert page.next_page_token == ""
    # the same entry id with other fields is refused; nothing of that publication is stored
    changed = _entry("window-now", firm, start=yesterday, end=tomorrow + timedelta(days=1))
    with pytest.raises(InvalidArgument) as caught:
        officer.publish([_entry("window-new", firm, start=today, end=today), changed])
    assert caught.value.field == "entries[1].entry_id"
    assert "LN-window-new" not in {e.entry.entry_id for e in officer.history(ENTERPRISE, firm)}
    # a withdrawn entry stays withdrawn: the same fields again are refused, not "unchanged"
    officer.withdraw("LN-window-today", reason=WithdrawReason.ERROR, reference="typo")
    with pytest.raises(FailedPrecondition) as withdrawn:
        officer.publish([entries[2]])
    assert withdrawn.value.field == "entries[0].entry_id"
    assert "withdrawn on" in withdrawn.value.message
    assert "publish under a new id" in withdrawn.value.message


def test_the_list_store_and_its_wal_are_the_node_users_only(
    federation: Federation, officer: ListOfficer, unseeded: dict[str, SubjectId]
) -> None:
    today = china_today()
    officer.publish([_entry("modes", unseeded["firm2"], start=today, end=today)])
    state = federation.node_configs[COURT].state_dir
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
    files = sorted(state.glob("lists.duckdb*"))
    assert state / "lists.duckdb" in files
    for path in files:
        assert stat.S_IMODE(os.stat(path).st_mode) & 0o077 == 0, path.name


def test_a_full_resident_id_outside_subject_id_is_refused(
    officer: ListOfficer, unseeded: dict[str, SubjectId]
) -> None:
    today = china_today()
    person = unseeded["person2"]
    leaky = NewEntry(
        entry_id=EntryId(PREFIX + "leaky"),
        list="judgement_defaulters",
        subject_kind=PERSON,
        subject_id=person,
        subject_name="Test subject",
        legal_basis="",
        reason=f"owner {person} failed to pay",
        window_start=today,
        window_end=today,
    )
    with pytest.raises(InvalidArgument) as caught:
        officer.publish([leaky])
    assert caught.value.field == "entries[0].reason"
    assert person not in caught.value.message
    assert leaky.entry_id not in {e.entry.entry_id for e in officer.history(PERSON, person)}


def test_a_persons_id_is_masked_in_the_public_view_only(
    federation: Federation, officer: ListOfficer, unseeded: dict[str, SubjectId]
) -> None:
    today = china_today()
    person = unseeded["person2"]
    officer.publish([_entry("mask", person, kind=PERSON, start=today, end=today)])
    (full,) = officer.history(PERSON, person)
    assert full.entry.subject_id == person
    (shown,) = _public(
        federation,
        _coordinator_tls(federation),
        PublicQuery(subject_kind=PERSON, subject_id=person),
    ).entries
    assert shown.subject_id == person[:6] + "*" * 10 + person[-2:]
    assert shown.subject_name == "Test subject" and shown.department == COURT


def test_only_the_departments_list_officer_may_use_the_list_office(
    federation: Federation,
    list_officers: dict[str, TlsFiles],
    unseeded: dict[str, SubjectId],
) -> None:
    today = china_today()
    entry = _entry("intruder", unseeded["firm3"], start=today, end=today)

    def files(role: PeerRole, name: str) -> TlsFiles:
        return TlsFiles.from_cert_paths(cert_paths(federation.certs, role=role, name=name))

    strangers = {
        "another department's officer": list_officers["tax"],
        "the coordinator": _coordinator_tls(federation),
        "a requester": files(PeerRole.REQUESTER, "agency-1"),
        "the platform operator": files(PeerRole.OPERATOR, "operator"),
        "the court's own node": files(PeerRole.NODE, COURT),
    }
    for who, tls in strangers.items():
        with ListOfficer(_target(federation), department=COURT, tls=tls) as stranger:
            for call in (
                lambda: stranger.publish([entry]),
                lambda: stranger.withdraw(
                    entry.entry_id, reason=WithdrawReason.ERROR, reference="x"
                ),
                lambda: stranger.history(ENTERPRISE, unseeded["firm3"]),
            ):
                with pytest.raises(PermissionDenied) as caught:
                    call()
                assert "an operator certificate named 'court'" in caught.value.message, who
    # the public view is the coordinator's alone: not even the officer's
    with pytest.raises(PermissionDenied, match="only the platform coordinator"):
        _public(
            federation,
            list_officers[COURT],
            PublicQuery(subject_kind=ENTERPRISE, subject_id=unseeded["firm3"]),
        )
    with ListOfficer(_target(federation), department=COURT, tls=list_officers[COURT]) as court:
        assert court.history(ENTERPRISE, unseeded["firm3"]) == ()


def _restricted(agency: Client, firm: str) -> dict[str, bool]:
    result = agency.check_restrictions(
        firm, measures=[*COURT_MEASURES, OTHER_MEASURE], purpose="credit_report", kind=ENTERPRISE
    )
    return dict(result.restricted)


def test_a_black_list_entry_in_view_raises_its_flag_until_it_is_withdrawn(
    federation: Federation,
    officer: ListOfficer,
    agency: Client,
    registrar: Client,
    unseeded: dict[str, SubjectId],
) -> None:
    today = china_today()
    firm = unseeded["firm"]
    clear = dict.fromkeys([*COURT_MEASURES, OTHER_MEASURE], False)
    assert _restricted(agency, firm) == clear
    # an entry whose window starts tomorrow flags nothing yet
    officer.publish(
        [_entry("flag-next", firm, start=today + timedelta(days=1), end=today + timedelta(days=9))]
    )
    assert _restricted(agency, firm) == clear
    officer.publish([_entry("flag-now", firm, start=today - timedelta(days=1), end=today)])
    assert _restricted(agency, firm) == {
        **dict.fromkeys(COURT_MEASURES, True),
        OTHER_MEASURE: False,
    }
    withdrawn = officer.withdraw(
        "LN-flag-now", reason=WithdrawReason.REPAIRED, reference="(2026) Su05 repair 1"
    )
    assert withdrawn.status is EntryStatus.WITHDRAWN
    assert [e.event for e in withdrawn.events] == ["published", "withdrawn"]
    assert _restricted(agency, firm) == clear
    with pytest.raises(FailedPrecondition, match="withdrawn on"):
        officer.withdraw("LN-flag-now", reason=WithdrawReason.ERROR, reference="again")
    # a person's flag too, asked under the person's consent
    person = unseeded["person"]
    officer.publish([_entry("flag-person", person, kind=PERSON, start=today, end=today)])
    result = agency.check_restrictions(
        person,
        measures=["bank_loan"],
        purpose="loan_underwriting",
        consent_id=consent_for(registrar, person),
    )
    assert dict(result.restricted) == {"bank_loan": True}


def test_the_node_audits_every_list_office_call_without_subject_ids(
    federation: Federation, officer: ListOfficer, unseeded: dict[str, SubjectId]
) -> None:
    officer.history(ENTERPRISE, unseeded["firm"])
    text = (federation.node_configs[COURT].state_dir / "audit.jsonl").read_text("ascii")
    entries = [json.loads(line) for line in text.splitlines()]
    purposes = {e["purpose"] for e in entries if e["requester"].startswith("operator:")}
    assert {"list_publication", "list_withdrawal", "list_history"} <= purposes
    assert not any(s in text for s in unseeded.values())
    denied = [e for e in entries if e["purpose"] == "list_publication" and e["decision"] == "deny"]
    assert {e["requester"] for e in denied} >= {"operator:tax", "coordinator:coordinator"}


def test_the_list_office_answers_health_checks(
    federation: Federation, list_officers: dict[str, TlsFiles]
) -> None:
    with secure_channel(
        _target(federation), list_officers[COURT], server_name=node_server_name(COURT)
    ) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=LIST_OFFICE_SERVICE_NAME), timeout=5
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_the_cli_publishes_a_file_withdraws_and_shows_the_history(
    federation: Federation,
    list_officers: dict[str, TlsFiles],
    unseeded: dict[str, SubjectId],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    today = china_today()
    firm = unseeded["firm3"]
    tls = list_officers[COURT]
    connection = [
        "--node",
        _target(federation),
        "--department",
        COURT,
        "--ca",
        str(tls.ca),
        "--cert",
        str(tls.cert),
        "--key",
        str(tls.key),
    ]
    header = "entry_id,list,subject_kind,subject_id,subject_name,reason,window_start,window_end\n"
    good = tmp_path / "court.csv"
    good.write_text(
        header
        + f"LN-cli-1,judgement_defaulters,enterprise,{firm},Firm 3,unpaid,{today},{today}\n"
        + f"LN-cli-2,judgement_defaulters,enterprise,{firm},Firm 3,unpaid,"
        f"{today},{today + timedelta(days=5)}\n",
        encoding="utf-8",
    )

    def lists(*arguments: str) -> int:
        return cli.main(["lists", *arguments, *connection])

    assert lists("publish", str(good)) == 0
    assert "2 entries published, 0 already published unchanged" in capsys.readouterr().out
    bad = tmp_path / "bad.csv"
    bad.write_text(
        header + f"LN-cli-3,serious_dishonest,enterprise,{firm},Firm 3,x,{today},{today}\n",
        encoding="utf-8",
    )
    assert lists("publish", str(bad)) == 3
    err = capsys.readouterr().err
    assert (
        "nothing was published" in err
        and "line 2: list: serious_dishonest is published by samr" in err
    )
    # the same id with another window: the node refuses it, and the CLI names the file's line
    changed = tmp_path / "changed.csv"
    changed.write_text(
        header + f"LN-cli-1,judgement_defaulters,enterprise,{firm},Firm 3,unpaid,{today},"
        f"{today + timedelta(days=1)}\n",
        encoding="utf-8",
    )
    assert lists("publish", str(changed)) == 3
    assert f"{changed}, line 2: entry 'LN-cli-1' is already published" in capsys.readouterr().err
    assert lists("withdraw", "LN-cli-2", "--reason", "repaired", "--reference", "R-7") == 0
    assert "withdrawn from public view: LN-cli-2" in capsys.readouterr().out
    assert lists("withdraw", "LN-cli-1", "--reason", "revoked", "--reference", "R-8") == 3
    assert "judgement_defaulters is a black list" in capsys.readouterr().err
    assert lists("history", "--kind", "enterprise", firm) == 0
    out = capsys.readouterr().out
    assert "LN-cli-1  judgement_defaulters (black)  in_view" in out
    assert "LN-cli-2  judgement_defaulters (black)  withdrawn" in out
    assert "withdrawn    repaired, reference R-7" in out
    # another department's officer is refused: exit 4
    tax = list_officers["tax"]
    stranger = [
        *connection[:4],
        "--ca",
        str(tax.ca),
        "--cert",
        str(tax.cert),
        "--key",
        str(tax.key),
    ]
    assert cli.main(["lists", "history", "--kind", "enterprise", firm, *stranger]) == 4
    assert "an operator certificate named 'court'" in capsys.readouterr().err

"""Enterprise credit reports against the federation: a report states the aggregate it came from."""

from __future__ import annotations

import functools
import io
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pypdf import PdfReader

from coordinator.server import DEFAULT_CENTRAL_POLICY
from node.officer import ListOfficer
from osmanthus.cli import main
from osmanthus.core.catalogue import ListColour
from osmanthus.core.clock import china_today
from osmanthus.core.lists import EntryId, EntryStatus, NewEntry, WithdrawReason
from osmanthus.core.signing import generate_key_pair, key_id, load_private_key
from osmanthus.core.tls import TlsFiles
from osmanthus.core.types import Role, Shape, SubjectId, SubjectKind
from sdk import Client, RequesterKeys, load_or_create_keys
from sdk.report import (
    TamperedReport,
    build_enterprise_report,
    render_html,
    render_pdf,
    sign_report,
    verify_report_html,
    verify_report_pdf,
)
from tests.conftest import IssuerKeyPaths
from tests.integration.conftest import (
    Federation,
    restricted_catalogue,
    restricted_catalogue_toml,
    start_federation,
    stop_federation,
)
from tests.integration.test_flags import expected as expected_restrictions
from tests.integration.test_scores_match_plaintext import (
    Reference,
    check,
    reference,  # noqa: F401  (the module-scoped fixture)
    subjects,
    utc_today,
)
from tests.unit.report.conftest import ALTERED, bold_font, incremental_update, show_instead

PURPOSE = "credit_report"
ENTERPRISE = SubjectKind.ENTERPRISE


@pytest.fixture(scope="module")
def firms(federation: Federation, reference: Reference) -> list[str]:  # noqa: F811
    """An enterprise with a restriction in force and one without, by the plaintext."""
    measures = tuple(m.id for m in federation.catalogue.measures)
    today = utc_today()
    flagged: list[str] = []
    clean: list[str] = []
    for firm in subjects(federation, "enterprise"):
        answer = expected_restrictions(
            federation.catalogue, reference, "enterprise", firm, measures
        )
        (flagged if any(answer.values()) else clean).append(firm)
    assert flagged and clean, "the seed must flag some enterprise and leave some clean"
    # the flagged firm with the most deductions makes the breakdown worth checking
    flagged.sort(key=lambda f: -reference.result("enterprise", f, today).deductions)
    return [flagged[0], clean[0]]


def _node(federation: Federation, department: str) -> str:
    return f"127.0.0.1:{federation.nodes[department].port}"


@pytest.fixture(scope="module")
def listed(
    federation: Federation, list_officers: dict[str, TlsFiles], firms: list[str]
) -> Iterator[dict[str, NewEntry]]:
    """The first firm on the court's black list and on the tax bureau's red list, published
    through their nodes by their list officers, in view today; withdrawn at the end, so the
    shared federation answers as before for every other module."""
    today = china_today()
    firm = SubjectId(firms[0])
    entries = {
        "court": NewEntry(
            entry_id=EntryId("RP-court-zhi-0001"),
            list="judgement_defaulters",
            subject_kind=ENTERPRISE,
            subject_id=firm,
            subject_name="Report Test Trading Co. 报告测试贸易公司",
            legal_basis="",  # the list's own
            reason="failed to perform an effective judgement",
            window_start=today - timedelta(days=1),
            window_end=today + timedelta(days=30),
        ),
        "tax": NewEntry(
            entry_id=EntryId("RP-tax-a-0001"),
            list="a_level_taxpayers",
            subject_kind=ENTERPRISE,
            subject_id=firm,
            subject_name="Report Test Trading Co. 报告测试贸易公司",
            legal_basis="",
            reason="rated A for the 2025 tax year",
            window_start=today,
            window_end=today + timedelta(days=300),
        ),
    }
    officers = {
        dept: ListOfficer(_node(federation, dept), department=dept, tls=list_officers[dept])
        for dept in entries
    }
    try:
        for dept, entry in entries.items():
            officers[dept].publish([entry])
        yield entries
    finally:
        for officer in officers.values():
            for held in officer.history(ENTERPRISE, firm):
                if held.status in (EntryStatus.IN_VIEW, EntryStatus.SCHEDULED):
                    officer.withdraw(
                        held.entry.entry_id, reason=WithdrawReason.ERROR, reference="test cleanup"
                    )
            officer.close()


def test_the_report_states_the_aggregate_and_the_plaintext(
    federation: Federation,
    agency: Client,
    reference: Reference,  # noqa: F811
    firms: list[str],
    listed: dict[str, NewEntry],
) -> None:
    catalogue = federation.catalogue
    measures = [m.id for m in catalogue.measures]
    # the court's entry sets its flag: the measures that flag triggers apply as well
    (court_flag,) = [f for f in catalogue.flags if f.id == "judgement_defaulter"]
    key = Ed25519PrivateKey.generate()
    for firm in firms:
        lists = agency.search_lists(kind=ENTERPRISE, subject=firm)
        card = agency.enterprise_score(firm, purpose=PURPOSE, shape=Shape.BREAKDOWN)
        flags = agency.check_restrictions(firm, measures=measures, purpose=PURPOSE, kind=ENTERPRISE)
        report = build_enterprise_report(
            score=card,
            restrictions=flags,
            lists=lists,
            catalogue=catalogue,
            issuer="agency-1",
            issued_at=datetime.now(UTC),
        )
        signed = sign_report(report, private_key=key)
        page, pdf = render_html(signed), render_pdf(signed)
        shown = verify_report_html(page, public_key=key.public_key())
        # the PDF states the same: its attachment, and its bytes are that report's rendering
        assert verify_report_pdf(pdf, public_key=key.public_key()) == shown
        text = " ".join(
            " ".join(p.extract_text(extraction_mode="layout").split())
            for p in PdfReader(io.BytesIO(pdf)).pages
        )
        assert not shown.lists_missing and "did not answer the list search" not in page
        # the report read back from the page equals the SDK's own aggregate
        assert (shown.subject_id, shown.grade, shown.score) == (firm, card.grade, card.score)
        assert shown.deductions == card.deductions and shown.base == card.base
        assert {b.name: b.points for b in shown.bonuses} == dict(card.bonuses)
        assert {r.measure: r.in_force for r in shown.restrictions} == dict(flags.restricted)
        assert [d.department for d in shown.answered] == [s.department for s in card.answered]
        assert not shown.missing
        assert (shown.score_query_id, shown.restrictions_query_id) == (
            card.query_id,
            flags.query_id,
        )
        # and the aggregate equals the plaintext of the departments' own files
        check(reference, "enterprise", firm, Shape.BREAKDOWN, functools.partial(lambda c: c, card))
        expected = expected_restrictions(catalogue, reference, "enterprise", firm, tuple(measures))
        if firm != firms[0]:
            # no entry: the section says so, and the restrictions are the records' alone
            assert shown.list_entries == () and shown.facilitation == ()
            assert "None: this enterprise is on no red or black list in public view" in page
            assert "None: this enterprise is on no red or black list" in text
            assert {r.measure: r.in_force for r in shown.restrictions} == expected
            continue
        # the entries published at the court's and the tax bureau's nodes, as published
        court, tax = listed["court"], listed["tax"]
        assert [(e.entry_id, e.department, e.list, e.colour) for e in shown.list_entries] == [
            (court.entry_id, "court", court.list, ListColour.BLACK),
            (tax.entry_id, "tax", tax.list, ListColour.RED),
        ]
        black, red = shown.list_entries
        assert (black.window_start, black.window_end) == (court.window_start, court.window_end)
        assert black.reason == court.reason and black.subject_name == court.subject_name
        (court_list,) = [t for t in catalogue.lists if t.id == court.list]
        assert black.legal_basis == court_list.legal_basis
        assert black.list_name == court_list.name
        assert (red.facilitation_class, red.window_end) == ("A-level taxpayer", tax.window_end)
        assert shown.facilitation == (
            f"A-level taxpayer (a_level_taxpayers, until {tax.window_end})",
        )
        for words in (
            f"Entry {court.entry_id} of judgement_defaulters.",
            f"Entry {tax.entry_id} of a_level_taxpayers.",
            f"Reason: {court.reason}.",
            f"A-level taxpayer (a_level_taxpayers, until {tax.window_end})",
        ):
            assert words in page, words
        # the PDF's table cells wrap: its text holds the short values whole
        for words in (
            "BLACK",
            "RED",
            court.entry_id,
            tax.entry_id,
            f"Facilitation classes (red lists) A-level taxpayer (a_level_taxpayers, until "
            f"{tax.window_end})",
        ):
            assert words in text, words
        assert '<span data-field="list_entry.0.colour">BLACK</span>' in page
        # the black entry feeds the court's flag: the measures it triggers are in force
        assert {r.measure: r.in_force for r in shown.restrictions} == {
            m: expected[m] or m in court_flag.measures for m in measures
        }
        assert any(r.in_force for r in shown.restrictions if r.measure in court_flag.measures)
    assert firms[0] != firms[1]


@pytest.fixture(scope="module")
def cli_files(federation: Federation, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("report-cli")
    keys = load_or_create_keys(work / "agency.key")
    token = federation.token("agency-1", role=Role.CREDIT_AGENCY, purposes=[PURPOSE], keys=keys)
    (work / "token").write_text(token + "\n")
    catalogue = work / "catalogue.toml"
    catalogue.write_text(
        restricted_catalogue_toml([d.id for d in federation.catalogue.departments])
    )
    private, public = work / "gusu-credit.key", work / "gusu-credit.pub"
    generate_key_pair(private_path=private, public_path=public, what="report signing key")
    return {
        "work": work,
        "keys": work / "agency.key",
        "token": work / "token",
        "catalogue": catalogue,
        "signing_key": private,
        "public_key": public,
    }


def _argv(
    federation: Federation, files: dict[str, Path], code: str, out: Path, fmt: str = "html"
) -> list[str]:
    return [
        "report", "enterprise", code,
        "--out", str(out),
        "--format", fmt,
        "--signing-key", str(files["signing_key"]),
        "--issuer", "Gusu Credit 姑苏征信",
        "--coordinator", federation.target,
        "--requester", "agency-1",
        "--certs-dir", str(federation.certs),
        "--token-file", str(files["token"]),
        "--keys", str(files["keys"]),
        "--catalogue", str(files["catalogue"]),
    ]  # fmt: skip


def test_cli_writes_a_report_that_verifies_and_refuses_a_tampered_one(
    federation: Federation,
    agency: Client,
    firms: list[str],
    listed: dict[str, NewEntry],
    cli_files: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    firm = firms[0]
    out = cli_files["work"] / "report.html"
    assert main(_argv(federation, cli_files, firm, out)) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    written = capsys.readouterr().out
    page = out.read_text(encoding="utf-8")
    public = load_private_key(cli_files["signing_key"]).public_key()
    report = verify_report_html(page, public_key=public)
    # signed with the one envelope: the JWS names the key by its RFC 7638 thumbprint
    assert key_id(public) in page
    card = agency.enterprise_score(firm, purpose=PURPOSE)
    assert (report.grade, report.score, report.deductions) == (
        card.grade,
        card.score,
        card.deductions,
    )
    assert report.issuer == "Gusu Credit 姑苏征信" and report.report_id in written
    # the list search went through the same client: both entries, the class, no gap
    assert [e.entry_id for e in report.list_entries] == [e.entry_id for e in listed.values()]
    lists_line = (
        "list entries  judgement_defaulters (black), a_level_taxpayers (red); facilitation "
        f"A-level taxpayer (a_level_taxpayers, until {listed['tax'].window_end})\n"
    )
    assert lists_line in written
    verify = ["report", "verify", str(out), "--key", str(cli_files["public_key"])]
    assert main(verify) == 0
    printed = capsys.readouterr().out
    assert "verified" in printed and report.report_id in printed and firm in printed
    assert f"grade         {report.grade} (score {report.score})" in printed
    assert lists_line in printed
    # a tampered copy: the visible grade changed
    other = "A" if report.grade != "A" else "D"
    tampered = cli_files["work"] / "tampered.html"
    tampered.write_text(
        page.replace(f'data-field="grade">{report.grade}<', f'data-field="grade">{other}<'),
        encoding="utf-8",
    )
    assert main(["report", "verify", str(tampered), "--key", str(cli_files["public_key"])]) == 4
    assert ALTERED in capsys.readouterr().err
    with pytest.raises(TamperedReport):
        verify_report_html(tampered.read_text(encoding="utf-8"), public_key=public)
    # a format that --out's suffix contradicts is a usage error, before any query
    with pytest.raises(SystemExit) as exit_info:
        main(_argv(federation, cli_files, firm, cli_files["work"] / "r.pdf", "html"))
    assert exit_info.value.code == 2
    assert "--format html does not match --out r.pdf" in capsys.readouterr().err
    assert not (cli_files["work"] / "r.pdf").exists()
    # a purpose the token does not carry is refused by the federation
    refused = [*_argv(federation, cli_files, firm, cli_files["work"] / "r2.html")]
    refused += ["--purpose", "loan_underwriting"]
    assert main(refused) == 4
    assert not (cli_files["work"] / "r2.html").exists()


def test_cli_writes_a_pdf_report_that_verifies_and_refuses_a_tampered_one(
    federation: Federation,
    agency: Client,
    firms: list[str],
    cli_files: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    firm = firms[0]
    out = cli_files["work"] / "report.pdf"
    argv = _argv(federation, cli_files, firm, out)
    # no --format: the suffix of --out chooses PDF
    del argv[argv.index("--format") : argv.index("--format") + 2]
    assert main(argv) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    written = capsys.readouterr().out
    data = out.read_bytes()
    assert data.startswith(b"%PDF-") and "pdf report" in written
    public = load_private_key(cli_files["signing_key"]).public_key()
    report = verify_report_pdf(data, public_key=public)
    card = agency.enterprise_score(firm, purpose=PURPOSE)
    assert (report.subject_id, report.grade, report.score, report.deductions) == (
        firm,
        card.grade,
        card.score,
        card.deductions,
    )
    assert {b.name: b.points for b in report.bonuses} == dict(card.bonuses)
    assert report.issuer == "Gusu Credit 姑苏征信" and report.report_id in written
    assert [d.department for d in report.answered] == [s.department for s in card.answered]
    assert not report.missing
    verify = ["report", "verify", str(out), "--key", str(cli_files["public_key"])]
    assert main(verify) == 0
    printed = capsys.readouterr().out
    assert "verified" in printed and report.report_id in printed and firm in printed
    assert f"grade         {report.grade} (score {report.score})" in printed
    # a tampered copy: one digit of the score changed in the page's content stream
    score = str(report.score)
    other = str((int(score[0]) + 1) % 10) + score[1:]
    tampered = cli_files["work"] / "tampered.pdf"
    tampered.write_bytes(show_instead(data, "score", score, other))
    assert main(["report", "verify", str(tampered), "--key", str(cli_files["public_key"])]) == 4
    assert ALTERED in capsys.readouterr().err
    with pytest.raises(TamperedReport):
        verify_report_pdf(tampered.read_bytes(), public_key=public)
    # another grade drawn over the page by an incremental update, the original bytes untouched
    overlay = f"q 1 1 1 rg 60 660 40 45 re f Q BT /{bold_font(data)} 40 Tf (A) Tj ET"
    updated = incremental_update(data, overlay.encode())
    assert updated.startswith(data)
    tampered.write_bytes(updated)
    assert main(["report", "verify", str(tampered), "--key", str(cli_files["public_key"])]) == 4
    assert "bytes were appended" in capsys.readouterr().err


@pytest.fixture(scope="module")
def limited(
    tmp_path_factory: pytest.TempPathFactory,
    federation: Federation,
    platform_certs: Path,
    issuer_keys: IssuerKeyPaths,
    requester_keys: dict[str, RequesterKeys],
) -> Iterator[Federation]:
    """court, samr and eco, with one list search a minute per requester."""
    base = tmp_path_factory.mktemp("report-limited")
    text = DEFAULT_CENTRAL_POLICY.read_text(encoding="utf-8")
    policy = base / "central.cedar"
    policy.write_text(
        text.replace(
            '@id("central-list-search")\n@rate_limit("60/minute")',
            '@id("central-list-search")\n@rate_limit("1/minute")',
        ),
        encoding="utf-8",
    )
    assert policy.read_text(encoding="utf-8") != text
    departments = ("court", "samr", "eco")
    fed = start_federation(
        base,
        catalogue=restricted_catalogue(departments),
        data=federation.data,
        certs=platform_certs,
        issuer_keys=issuer_keys,
        keys=requester_keys,
        departments=departments,
        central_policy=policy,
    )
    yield fed
    stop_federation(fed)


def test_cli_a_rate_limited_list_search_writes_no_report(
    limited: Federation,
    firms: list[str],
    cli_files: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    with limited.client("agency-1", role=Role.CREDIT_AGENCY, purposes=[PURPOSE]) as agency:
        agency.search_lists(kind=ENTERPRISE, subject=firms[1])  # the one search of the minute
    work = cli_files["work"]
    keys = load_or_create_keys(cli_files["keys"])
    token = limited.token("agency-1", role=Role.CREDIT_AGENCY, purposes=[PURPOSE], keys=keys)
    (work / "limited.token").write_text(token + "\n")
    out = work / "limited.pdf"
    argv = _argv(limited, cli_files, firms[1], out, "pdf")
    argv[argv.index("--token-file") + 1] = str(work / "limited.token")
    # (the catalogue stays the main federation's: the search is refused before it matters)
    assert main(argv) == 4
    error = capsys.readouterr().err
    assert "lists: the red and black list search was refused" in error
    assert "agency-1 may be granted 1/minute under rule 'central-list-search'" in error
    assert "retry in" in error and "no report was written and nothing else was asked" in error
    assert not out.exists()

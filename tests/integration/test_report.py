"""Enterprise credit reports against the federation: a report states the aggregate it came from."""

from __future__ import annotations

import functools
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from osmanthus.bundle import generate_publisher_key, load_private_key
from osmanthus.cli import main
from osmanthus.types import Role, Shape, SubjectKind
from sdk import Client, load_or_create_keys
from sdk.report import (
    TamperedReport,
    build_enterprise_report,
    render_html,
    render_pdf,
    sign_report,
    verify_report_html,
    verify_report_pdf,
)
from tests.integration.conftest import Federation, restricted_catalogue_toml
from tests.integration.test_flags import expected as expected_restrictions
from tests.integration.test_scores_match_plaintext import (
    Reference,
    check,
    reference,  # noqa: F401  (the module-scoped fixture)
    subjects,
    utc_today,
)
from tests.unit.test_report import ALTERED, incremental_update, show_instead

PURPOSE = "credit_report"


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


def test_the_report_states_the_aggregate_and_the_plaintext(
    federation: Federation,
    agency: Client,
    reference: Reference,  # noqa: F811
    firms: list[str],
) -> None:
    catalogue = federation.catalogue
    measures = [m.id for m in catalogue.measures]
    key = Ed25519PrivateKey.generate()
    for firm in firms:
        card = agency.enterprise_score(firm, purpose=PURPOSE, shape=Shape.BREAKDOWN)
        flags = agency.check_restrictions(
            firm, measures=measures, purpose=PURPOSE, kind=SubjectKind.ENTERPRISE
        )
        report = build_enterprise_report(
            score=card,
            restrictions=flags,
            catalogue=catalogue,
            issuer="agency-1",
            issued_at=datetime.now(UTC),
        )
        signed = sign_report(report, private_key=key)
        shown = verify_report_html(render_html(signed), public_key=key.public_key())
        # the PDF states the same: its attachment, and its bytes are that report's rendering
        assert verify_report_pdf(render_pdf(signed), public_key=key.public_key()) == shown
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
        assert {r.measure: r.in_force for r in shown.restrictions} == expected_restrictions(
            catalogue, reference, "enterprise", firm, tuple(measures)
        )
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
    private, public = generate_publisher_key(out_dir=work, name="gusu-credit")
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
    card = agency.enterprise_score(firm, purpose=PURPOSE)
    assert (report.grade, report.score, report.deductions) == (
        card.grade,
        card.score,
        card.deductions,
    )
    assert report.issuer == "Gusu Credit 姑苏征信" and report.report_id in written
    verify = ["report", "verify", str(out), "--key", str(cli_files["public_key"])]
    assert main(verify) == 0
    printed = capsys.readouterr().out
    assert "verified" in printed and report.report_id in printed and firm in printed
    assert f"grade         {report.grade} (score {report.score})" in printed
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
    updated = incremental_update(data, b"q 1 1 1 rg 60 660 40 45 re f Q BT /F2 40 Tf (A) Tj ET")
    assert updated.startswith(data)
    tampered.write_bytes(updated)
    assert main(["report", "verify", str(tampered), "--key", str(cli_files["public_key"])]) == 4
    assert "bytes were appended" in capsys.readouterr().err

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
    sign_report,
    verify_report_html,
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
        page = render_html(sign_report(report, private_key=key))
        shown = verify_report_html(page, public_key=key.public_key())
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


def _argv(federation: Federation, files: dict[str, Path], code: str, out: Path) -> list[str]:
    return [
        "report", "enterprise", code,
        "--out", str(out),
        "--format", "html",
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
    assert "the page shows grade" in capsys.readouterr().err
    with pytest.raises(TamperedReport):
        verify_report_html(tampered.read_text(encoding="utf-8"), public_key=public)
    # PDF is refused by name, before any query
    pdf = _argv(federation, cli_files, firm, cli_files["work"] / "r.pdf")
    pdf[pdf.index("html")] = "pdf"
    assert main(pdf) == 3
    assert "PDF needs" in capsys.readouterr().err
    # a purpose the token does not carry is refused by the federation
    refused = [*_argv(federation, cli_files, firm, cli_files["work"] / "r2.html")]
    refused += ["--purpose", "loan_underwriting"]
    assert main(refused) == 4
    assert not (cli_files["work"] / "r2.html").exists()

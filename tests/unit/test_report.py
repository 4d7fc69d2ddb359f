"""Enterprise credit reports: building, rendering, and every way a tampered page is refused."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from osmanthus.bundle import key_id_of
from osmanthus.catalogue import Catalogue, load_catalogue
from osmanthus.cli import main
from osmanthus.errors import InvalidArgument
from osmanthus.ids import make_uscc
from osmanthus.score import Breakdown, grade, score
from osmanthus.types import DepartmentId, DepartmentStatus, Shape, SubjectKind
from sdk.report import (
    CODE_PATTERN,
    EMBED_ID,
    REPORT_ID_PATTERN,
    EnterpriseReport,
    MalformedReport,
    SignedReport,
    TamperedReport,
    build_enterprise_report,
    canonical_content,
    render_html,
    sign_report,
    verification_code,
    verify_report_html,
)
from sdk.results import EnterpriseScore, RestrictionResult

FIRM = make_uscc(authority="9", category="1", region="320500", organisation="M000100Y4")
WHEN = datetime(2026, 11, 26, 9, 30, 15, 123456, tzinfo=UTC)


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return load_catalogue()


def _status(department: str, detail: str = "answered", rules: str = "2026.1") -> DepartmentStatus:
    return DepartmentStatus(department=DepartmentId(department), detail=detail, rules_version=rules)


def make_score(
    catalogue: Catalogue, *, deductions: int = 25, owner_missing: bool = True
) -> EnterpriseScore:
    model = catalogue.model(SubjectKind.ENTERPRISE)
    bonuses: dict[str, int | None] = {c.name: min(7, c.cap) for c in model.categories}
    missing: tuple[DepartmentStatus, ...] = ()
    if owner_missing:
        # the environmental credit's owner did not answer: its category is unknown
        bonuses["environmental_credit"] = None
        missing = (_status("eco", "deadline exceeded", ""),)
    value = score(model, Breakdown(deductions=deductions, bonuses=bonuses))
    return EnterpriseScore(
        subject_id=FIRM,
        score=value,
        base=model.base,
        deductions=deductions,
        bonuses=bonuses,
        shape=Shape.BREAKDOWN,
        answered=tuple(_status(d) for d in ("court", "tax", "hrss", "samr", "customs")),
        missing=missing,
        query_id="q-score-1",
        grade=grade(model, value),
    )


def make_restrictions(catalogue: Catalogue, in_force: set[str]) -> RestrictionResult:
    return RestrictionResult(
        subject_id=FIRM,
        restricted={m.id: m.id in in_force for m in catalogue.measures},
        answered=(_status("court"), _status("tax")),
        query_id="q-flags-1",
    )


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def signed(catalogue: Catalogue, key: Ed25519PrivateKey) -> SignedReport:
    report = build_enterprise_report(
        score=make_score(catalogue),
        restrictions=make_restrictions(catalogue, {"bank_loan", "government_procurement"}),
        catalogue=catalogue,
        issuer="Gusu Credit Agency 姑苏征信",
        issued_at=WHEN,
    )
    return sign_report(report, private_key=key)


@pytest.fixture(scope="module")
def page(signed: SignedReport) -> str:
    return render_html(signed)


def test_the_report_holds_the_aggregate_it_came_from(catalogue: Catalogue) -> None:
    card = make_score(catalogue)
    flags = make_restrictions(catalogue, {"bank_loan"})
    report = build_enterprise_report(
        score=card, restrictions=flags, catalogue=catalogue, issuer="agency", issued_at=WHEN
    )
    assert REPORT_ID_PATTERN.fullmatch(report.report_id)
    assert (report.subject_id, report.grade, report.score) == (FIRM, card.grade, card.score)
    assert report.base == card.base and report.deductions == card.deductions
    assert {b.name: b.points for b in report.bonuses} == dict(card.bonuses)
    model = catalogue.model(SubjectKind.ENTERPRISE)
    assert [(b.label, b.cap) for b in report.bonuses] == [
        (c.label, c.cap) for c in model.categories
    ]
    assert {r.measure: r.in_force for r in report.restrictions} == dict(flags.restricted)
    assert [r.measure for r in report.in_force] == ["bank_loan"]
    assert report.restrictions[0].name == catalogue.measure("bank_loan").name
    assert [d.department for d in report.answered] == [s.department for s in card.answered]
    assert [(d.department, d.detail) for d in report.missing] == [("eco", "deadline exceeded")]
    assert report.answered[0].name == catalogue.department("court").name
    assert (report.score_query_id, report.restrictions_query_id) == ("q-score-1", "q-flags-1")
    assert report.restrictions_answered == ("court", "tax")
    # the time of the query, in UTC to the second
    assert report.issued_at == WHEN.replace(microsecond=0)
    assert report.grade_scale == model.grades
    # a fresh id for every report
    again = build_enterprise_report(
        score=card, restrictions=flags, catalogue=catalogue, issuer="agency", issued_at=WHEN
    )
    assert again.report_id != report.report_id


def test_a_report_needs_one_graded_breakdown_and_every_measure(catalogue: Catalogue) -> None:
    card = make_score(catalogue)
    flags = make_restrictions(catalogue, set())

    def build(**changes: object) -> EnterpriseReport:
        args: dict[str, object] = {
            "score": card,
            "restrictions": flags,
            "catalogue": catalogue,
            "issuer": "agency",
            "issued_at": WHEN,
            **changes,
        }
        return build_enterprise_report(**args)  # type: ignore[arg-type]

    total = EnterpriseScore(**{**card.__dict__, "shape": Shape.TOTAL, "deductions": None})
    with pytest.raises(InvalidArgument, match="graded BREAKDOWN score, not total"):
        build(score=total)
    partial = RestrictionResult(
        subject_id=FIRM, restricted={"bank_loan": False}, answered=(), query_id="q"
    )
    with pytest.raises(InvalidArgument, match="every measure of the catalogue; not asked: "):
        build(restrictions=partial)
    other = make_uscc(authority="9", category="1", region="320500", organisation="M000200YX")
    with pytest.raises(InvalidArgument, match="the restrictions are for"):
        build(restrictions=RestrictionResult(**{**flags.__dict__, "subject_id": other}))
    with pytest.raises(InvalidArgument, match="time zone"):
        build(issued_at=datetime(2026, 11, 26, 9, 30))
    for bad in ("", " agency", "a\nb", "x" * 201):
        with pytest.raises(InvalidArgument) as info:
            build(issuer=bad)
        assert info.value.field == "issuer"
    # a time in another zone is stated in UTC
    east8 = timezone(timedelta(hours=8))
    assert build(issued_at=WHEN.astimezone(east8)).issued_at == WHEN.replace(microsecond=0)


def test_the_signature_covers_canonical_content_and_the_code_derives_from_it(
    signed: SignedReport, key: Ed25519PrivateKey
) -> None:
    content = canonical_content(signed.report)
    assert signed.content == content
    # sorted keys, no spaces, UTF-8 (the Chinese name is not \\u-escaped)
    assert (
        content
        == json.dumps(
            json.loads(content), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()
    )
    assert "姑苏征信".encode() in content
    key.public_key().verify(signed.signature, content)
    assert CODE_PATTERN.fullmatch(signed.verification_code)
    assert signed.verification_code == verification_code(content)
    assert verification_code(content + b" ") != signed.verification_code


def test_the_page_shows_the_report_and_verifies(
    signed: SignedReport, page: str, key: Ed25519PrivateKey
) -> None:
    r = signed.report
    assert f'data-field="grade">{r.grade}<' in page
    assert f'data-field="score">{r.score}<' in page
    assert r.report_id in page and signed.verification_code in page
    assert "2026-11-26T09:30:15Z" in page
    assert "not answered" in page  # the category whose owner was missing
    assert "IN FORCE" in page and "deadline exceeded" in page
    assert "<script" not in page.replace(f'<script type="application/json" id="{EMBED_ID}">', "")
    verified = verify_report_html(page, public_key=key.public_key())
    assert verified == r
    # the content read back is byte for byte what was signed
    assert canonical_content(verified) == signed.content


def _tamper_envelope(page: str, change: dict[str, str]) -> str:
    start = page.index(f'id="{EMBED_ID}">') + len(f'id="{EMBED_ID}">')
    end = page.index("</script>", start)
    envelope = json.loads(page[start:end])
    envelope.update(change)
    return page[:start] + json.dumps(envelope) + page[end:]


def test_every_tampering_fails(signed: SignedReport, page: str, key: Ed25519PrivateKey) -> None:
    public = key.public_key()
    r = signed.report
    other = "B" if r.grade != "B" else "A"

    def refused(tampered: str, field: str, words: str) -> None:
        assert tampered != page
        with pytest.raises(TamperedReport, match=words) as info:
            verify_report_html(tampered, public_key=public)
        assert info.value.field == field
        assert info.value.exit_code == 4

    # a value shown on the page
    refused(
        page.replace(f'data-field="grade">{r.grade}<', f'data-field="grade">{other}<'),
        "grade",
        f"the page shows grade '{other}', the signed report says '{r.grade}'",
    )
    refused(
        page.replace(f'data-field="score">{r.score}<', f'data-field="score">{r.score + 30}<'),
        "score",
        "the page shows score",
    )
    refused(
        page.replace(">IN FORCE<", ">not in force<", 1),
        "restriction.bank_loan",
        "restriction.bank_loan",
    )
    refused(
        page.replace(r.report_id + "</span>", "rpt_" + "A" * 22 + "</span>"),
        "report_id",
        "report_id",
    )
    code = signed.verification_code
    fake_code = ("A" if code[0] != "A" else "B") + code[1:]
    refused(page.replace(f">{code}<", f">{fake_code}<"), "verification_code", "verification_code")
    # a second copy of a value, altered, is caught too
    refused(
        page.replace(
            "<h2>Breakdown", f'<p><span data-field="grade">{other}</span></p><h2>Breakdown'
        ),
        "grade",
        "grade",
    )
    # the embedded content, re-encoded after an edit
    content = json.loads(signed.content)
    content["grade"] = other
    forged = json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
    refused(
        _tamper_envelope(page, {"content": base64.b64encode(forged).decode()}),
        "signature",
        "signature does not match",
    )
    # one byte of the signature
    flipped = bytearray(signed.signature)
    flipped[5] ^= 0x01
    refused(
        _tamper_envelope(page, {"signature": base64.b64encode(bytes(flipped)).decode()}),
        "signature",
        "signature does not match",
    )
    # the embedded verification code
    refused(
        _tamper_envelope(page, {"verification_code": fake_code}),
        "verification_code",
        "is not the content's",
    )
    # another key: named by id, and also when the id is rewritten to match
    stranger = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(TamperedReport, match="signed with key") as info:
        verify_report_html(page, public_key=stranger)
    assert info.value.field == "key"
    with pytest.raises(TamperedReport, match="signature does not match"):
        verify_report_html(
            _tamper_envelope(page, {"key_id": key_id_of(stranger)}), public_key=stranger
        )


def test_a_report_signed_by_another_key_with_its_content_fails(
    signed: SignedReport, key: Ed25519PrivateKey
) -> None:
    """A forger re-signs altered content with its own key: the issuer's key refuses it."""
    forger = Ed25519PrivateKey.generate()
    forged = sign_report(signed.report, private_key=forger)
    with pytest.raises(TamperedReport, match="signed with key"):
        verify_report_html(render_html(forged), public_key=key.public_key())


def test_not_a_report_is_malformed(page: str, key: Ed25519PrivateKey) -> None:
    public = key.public_key()
    for text, words in (
        ("<html><body>hello</body></html>", "holds 0 embedded reports"),
        (page.replace("</body>", page[page.index("<script") :]), "holds 2 embedded reports"),
        (_tamper_envelope(page, {"format": "other/1"}), "is not 'osmanthus-signed-report/1'"),
        (_tamper_envelope(page, {"signature": "not base64!"}), "is not base64"),
    ):
        with pytest.raises(MalformedReport, match=words) as info:
            verify_report_html(text, public_key=public)
        assert info.value.exit_code == 3


def test_signed_but_inconsistent_content_is_malformed(
    signed: SignedReport, key: Ed25519PrivateKey
) -> None:
    """An issuer whose software signs a grade that its score does not earn is not believed."""
    content = json.loads(signed.content)
    content["grade"] = "A" if content["grade"] != "A" else "D"
    bad = json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
    page = render_html(signed)
    page = _tamper_envelope(
        page,
        {
            "content": base64.b64encode(bad).decode(),
            "signature": base64.b64encode(key.sign(bad)).decode(),
            "verification_code": verification_code(bad),
        },
    )
    with pytest.raises(MalformedReport, match="is not the grade of score") as info:
        verify_report_html(page, public_key=key.public_key())
    assert info.value.field == "grade"


def test_hostile_strings_are_escaped_and_still_verify(catalogue: Catalogue) -> None:
    hostile = '<script>alert("x")</script>&amp;</script><img src=x onerror=1>'
    card = make_score(catalogue)
    card = EnterpriseScore(
        **{
            **card.__dict__,
            "answered": (*card.answered, _status("court", rules='"><b>x</b>')),
            "missing": (_status("eco", hostile, ""),),
        }
    )
    report = build_enterprise_report(
        score=card,
        restrictions=make_restrictions(catalogue, set()),
        catalogue=catalogue,
        issuer="Agency </script><script>alert(1)</script>",
        issued_at=WHEN,
    )
    key = Ed25519PrivateKey.generate()
    page = render_html(sign_report(report, private_key=key))
    assert "<script>" not in page and "<img" not in page and "<b>" not in page
    assert page.count("</script>") == 1
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    verified = verify_report_html(page, public_key=key.public_key())
    assert verified.issuer == report.issuer and verified.missing[0].detail == hostile


def test_cli_keygen_and_verify(
    tmp_path: Path, page: str, key: Ed25519PrivateKey, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", "keygen", "--out-dir", str(tmp_path), "--name", "issuer"]) == 0
    assert (tmp_path / "issuer.key").stat().st_mode & 0o777 == 0o600
    assert "issuer.pub" in capsys.readouterr().out
    # a page signed by the fixture key does not verify against the new key
    report = tmp_path / "report.html"
    report.write_text(page, encoding="utf-8")
    argv = ["report", "verify", str(report), "--key", str(tmp_path / "issuer.pub")]
    assert main(argv) == 4
    assert "signed with key" in capsys.readouterr().err
    # with the right key it does, and the values printed come from the signed content
    (tmp_path / "fixture.pub").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    argv[-1] = str(tmp_path / "fixture.pub")
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "verified" in out and FIRM in out and "姑苏征信" in out
    assert re.search(r"code\s+[A-Z2-7]{4}-", out)
    report.write_text(page.replace('data-field="grade">', 'data-field="grade">Z'), encoding="utf-8")
    assert main(argv) == 4
    report.write_text("<html></html>", encoding="utf-8")
    assert main(argv) == 3
    assert main(["report", "verify", str(tmp_path / "absent.html"), "--key", argv[-1]]) == 3

"""Enterprise credit reports: the signed content (canonical JSON under the one signing envelope),
and content that is signed but is no report this version reads."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import cast

import jwt
import pytest
import reportlab
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from osmanthus.cli import main
from osmanthus.core import signing
from sdk.report import (
    CODE_PATTERN,
    EMBED_ID,
    RENDERER,
    LegacyReport,
    MalformedReport,
    RendererMismatch,
    ReportRenderer,
    SignedReport,
    TamperedReport,
    canonical_content,
    render_html,
    render_pdf,
    sign_report,
    verification_code,
    verify_report,
    verify_report_html,
    verify_report_pdf,
)
from tests.unit.report.conftest import (
    _envelope_of,
    _tamper_envelope,
    _with_attachments,
    refused_as_altered,
)


def test_the_signature_covers_canonical_content_and_the_code_derives_from_it(
    signed: SignedReport, key: Ed25519PrivateKey
) -> None:
    content = canonical_content(signed.report)
    assert signed.content == content
    # RFC 8785: sorted keys, no spaces, UTF-8 (the Chinese name is not \\u-escaped)
    assert content == signing.canonical_json(json.loads(content))
    assert (
        content
        == json.dumps(
            json.loads(content), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()
    )
    assert "姑苏征信".encode() in content
    # the one envelope: a detached JWS of the credit report type, naming the key's thumbprint
    public = key.public_key()
    assert signed.key_id == signing.key_id(public)
    assert signing.signature_key_id(signed.signature) == signed.key_id
    assert (
        signing.verify(
            content,
            signed.signature,
            payload_type=signing.CREDIT_REPORT_TYPE,
            trusted_keys={signed.key_id: public},
        )
        == signed.key_id
    )
    # a report's signature is no policy bundle's, however its bytes are arranged
    with pytest.raises(signing.MalformedSignature, match="type"):
        signing.verify(
            content,
            signed.signature,
            payload_type=signing.POLICY_BUNDLE_TYPE,
            trusted_keys={signed.key_id: public},
        )
    assert CODE_PATTERN.fullmatch(signed.verification_code)
    assert signed.verification_code == verification_code(content)
    assert verification_code(content + b" ") != signed.verification_code


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
    (header, _, value) = cast(str, _envelope_of(page)["signature"]).split(".")
    policy_header = base64.urlsafe_b64encode(
        json.dumps({**json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4))),
                    "typ": signing.POLICY_BUNDLE_TYPE}).encode()
    ).rstrip(b"=").decode()  # fmt: skip
    for text, words in (
        ("<html><body>hello</body></html>", "holds 0 embedded reports"),
        (page.replace("</body>", page[page.index("<script") :]), "holds 2 embedded reports"),
        (_tamper_envelope(page, {"format": "other/1"}), 'exactly "payload" and "signature"'),
        (_tamper_envelope(page, {"signature": "not base64!"}), "is not a detached JWS"),
        (_tamper_envelope(page, {"signature": f"{header}.x.{value}"}), "payload part empty"),
        (_tamper_envelope(page, {"payload": [1]}), "signed content is not a JSON object"),
        (_tamper_envelope(page, {"payload": {"n": 2**60}}), "integer beyond"),
        # a signature over a policy bundle is none over a report
        (_tamper_envelope(page, {"signature": f"{policy_header}..{value}"}), "type"),
    ):
        with pytest.raises(MalformedReport, match=words) as info:
            verify_report_html(text, public_key=public)
        assert info.value.exit_code == 3
        assert not isinstance(info.value, TamperedReport)


#: the envelope of a report signed before the one envelope: the content in base64, a raw
#: Ed25519 signature over it in base64, and a 16-hex key id
def _legacy_envelope(signed: SignedReport, key: Ed25519PrivateKey) -> dict[str, object]:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {
        "format": "osmanthus-signed-report/1",
        "content": base64.b64encode(signed.content).decode(),
        "signature": base64.b64encode(key.sign(signed.content)).decode(),
        "key_id": hashlib.sha256(raw).hexdigest()[:16],
        "verification_code": signed.verification_code,
    }


def test_a_report_in_the_earlier_format_is_refused_with_how_to_reissue_it(
    signed: SignedReport,
    page: str,
    pdf: bytes,
    key: Ed25519PrivateKey,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Reports signed before the one envelope (raw Ed25519, 16-hex key ids) are not verified:
    the refusal says so and how to have the report issued again, for a page and a PDF alike."""
    old = _legacy_envelope(signed, key)
    old_page = page[: page.index(f'id="{EMBED_ID}">') + len(f'id="{EMBED_ID}">')]
    old_page += "\n" + json.dumps(old, sort_keys=True, indent=1) + "\n</script>\n</body>\n</html>\n"
    old_pdf = _with_attachments(pdf, json.dumps(old).encode())
    for verify, data in ((verify_report_html, old_page), (verify_report_pdf, old_pdf),
                         (verify_report, old_page.encode()), (verify_report, old_pdf)):  # fmt: skip
        with pytest.raises(LegacyReport, match="issued in the earlier format") as info:
            verify(data, public_key=key.public_key())
        assert isinstance(info.value, signing.LegacyFormat)
        assert isinstance(info.value, MalformedReport)
        assert "'osmanthus report enterprise" in info.value.message
        assert info.value.field == "format" and info.value.exit_code == 3
    (tmp_path / "issuer.pub").write_bytes(signing.public_pem(key.public_key()))
    (tmp_path / "old.html").write_text(old_page, encoding="utf-8")
    argv = ["report", "verify", str(tmp_path / "old.html"), "--key", str(tmp_path / "issuer.pub")]
    assert main(argv) == 3
    error = capsys.readouterr().err
    assert "format: the report was issued in the earlier format" in error
    assert "ask the issuer to issue it again" in error


def test_signed_but_inconsistent_content_is_malformed(
    signed: SignedReport, key: Ed25519PrivateKey
) -> None:
    """An issuer whose software signs a grade that its score does not earn is not believed."""
    content = json.loads(signed.content)
    content["grade"] = "A" if content["grade"] != "A" else "D"
    page = _resigned(render_html(signed), content, key)
    with pytest.raises(MalformedReport, match="is not the grade of score") as info:
        verify_report_html(page, public_key=key.public_key())
    assert info.value.field == "grade"


def _resigned(page: str, content: bytes | dict[str, object], key: Ed25519PrivateKey) -> str:
    """The page with its envelope carrying `content` (JSON), genuinely signed by `key`."""
    payload = json.loads(content) if isinstance(content, bytes) else content
    signature = signing.sign(
        signing.canonical_json(payload),
        payload_type=signing.CREDIT_REPORT_TYPE,
        private_key=key,
    )
    return _tamper_envelope(page, {"payload": payload, "signature": signature})


def _jws_over(data: bytes, key: Ed25519PrivateKey) -> str:
    """A detached JWS of the report type over `data` as given: what signing.sign, which signs
    canonical JSON only, would not make."""
    token: str = jwt.api_jws.PyJWS().encode(
        data,
        key,
        algorithm="EdDSA",
        headers={"typ": signing.CREDIT_REPORT_TYPE, "kid": signing.key_id(key.public_key())},
        is_payload_detached=True,
    )
    return token


def test_signed_content_must_be_canonical(signed: SignedReport, key: Ed25519PrivateKey) -> None:
    """The code printed is the signed bytes' only if those bytes are what Osmanthus signs: the
    content's RFC 8785 form, which the verifier computes itself."""
    page = render_html(signed)
    content = json.loads(signed.content)
    for other in (
        json.dumps(content, sort_keys=True).encode(),  # spaces
        json.dumps(content, sort_keys=True, separators=(",", ":")).encode(),  # \\u escapes
        json.dumps(  # key order
            dict(reversed(content.items())), separators=(",", ":"), ensure_ascii=False
        ).encode(),
    ):
        assert other != signed.content and json.loads(other) == content
        # a signature over another serialisation of the same content does not verify
        tampered = _tamper_envelope(page, {"signature": _jws_over(other, key)})
        with pytest.raises(TamperedReport, match="signature does not match") as info:
            verify_report_html(tampered, public_key=key.public_key())
        assert info.value.field == "signature" and info.value.exit_code == 4
    # signed content whose values this version writes otherwise (a time without zero padding):
    # its report's canonical content, and so its code, would not be the signed bytes'
    content["issued_at"] = content["issued_at"].replace("T09:", "T9:")
    with pytest.raises(MalformedReport, match="not in the form Osmanthus signs") as malformed:
        verify_report_html(_resigned(page, content, key), public_key=key.public_key())
    assert malformed.value.field == "content" and malformed.value.exit_code == 3


def test_a_report_of_another_renderer_is_told_apart_from_an_altered_one(
    signed: SignedReport, key: Ed25519PrivateKey
) -> None:
    old = ReportRenderer(html="osmanthus-report-html/0", pdf="osmanthus-report-pdf/0 reportlab/4.0")
    assert RENDERER.html.startswith("osmanthus-report-html/")
    assert RENDERER.pdf.endswith(f" reportlab/{reportlab.Version}")
    assert signed.report.renderer == RENDERER
    assert json.loads(signed.content)["renderer"] == {"html": RENDERER.html, "pdf": RENDERER.pdf}
    earlier = sign_report(dataclasses.replace(signed.report, renderer=old), private_key=key)
    page, pdf = render_html(earlier), render_pdf(earlier)
    # drawn the same way by this version: nothing to tell apart, the file is the rendering
    assert verify_report_html(page, public_key=key.public_key()) == earlier.report
    assert verify_report_pdf(pdf, public_key=key.public_key()) == earlier.report
    # drawn differently: the version that issued it must check it (exit 3, not 4)
    drawn_otherwise = page.replace("<h2>", "<h2 class='section'>")
    with pytest.raises(RendererMismatch, match="drawn by renderer osmanthus-report-html/0; this "
                       f"is {re.escape(RENDERER.html)}") as info:  # fmt: skip
        verify_report_html(drawn_otherwise, public_key=key.public_key())
    assert info.value.field == "renderer" and info.value.exit_code == 3
    with pytest.raises(RendererMismatch, match=re.escape(f"this is {RENDERER.pdf}")):
        verify_report_pdf(pdf + b"%\n", public_key=key.public_key())
    # the same change to a report that names this renderer is an alteration
    refused_as_altered(
        verify_report_html, render_html(signed).replace("<h2>", "<h2 class='s'>"), key
    )
    # a report in an earlier content format (which named no renderer)
    content = json.loads(signed.content)
    content["format"] = "osmanthus-enterprise-report/1"
    del content["renderer"]
    first = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    with pytest.raises(RendererMismatch, match="verify it with the version that issued it") as info:
        verify_report_html(_resigned(page, first, key), public_key=key.public_key())
    assert info.value.field == "format" and info.value.exit_code == 3
    # a renderer field that names no renderer is malformed
    content = json.loads(signed.content)
    for bad, field in (({"html": "x"}, "renderer.pdf"), ({**content["renderer"], "svg": "x"},
                       "renderer.svg"), ({"html": "", "pdf": "x"}, "renderer.html")):  # fmt: skip
        content["renderer"] = bad
        wrong = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        with pytest.raises(MalformedReport) as malformed:
            verify_report_html(_resigned(page, wrong.encode(), key), public_key=key.public_key())
        assert malformed.value.field == field
        assert not isinstance(malformed.value, RendererMismatch)


def test_signed_list_entries_are_parsed_strictly(
    signed: SignedReport, key: Ed25519PrivateKey
) -> None:
    """Content that the issuer's key signed but that is not a well-formed report: unknown
    fields, wrong types, impossible entries. Each refused as malformed, naming the field."""
    page = render_html(signed)

    def malformed(change: Callable[[dict[str, object]], object], field: str, words: str) -> None:
        content = json.loads(signed.content)
        change(content)
        data = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        with pytest.raises(MalformedReport, match=words) as info:
            verify_report_html(_resigned(page, data.encode(), key), public_key=key.public_key())
        assert info.value.field == field and info.value.exit_code == 3
        assert not isinstance(info.value, RendererMismatch)

    def entry(i: int, **values: object) -> Callable[[dict[str, object]], object]:
        return lambda c: cast(list[dict[str, object]], c["list_entries"])[i].update(values)

    malformed(entry(0, note="x"), "list_entries[0].note", "is not a field of it")
    malformed(entry(1, colour="green"), "list_entries[1].colour", "is not red or black")
    malformed(entry(1, colour=None), "list_entries[1].colour", "not of the expected type")
    malformed(entry(0, window_end=20291126), "list_entries[0].window_end", "expected type")
    malformed(entry(0, window_end="2029-11-31"), "list_entries[0].window_end", "is not a date")
    malformed(entry(0, window_end="29-11-26"), "list_entries[0].window_end", "is not a date")
    malformed(entry(0, facilitation_class=1), "list_entries[0].facilitation_class", "type")
    malformed(entry(0, facilitation_class=""), "list_entries[0].facilitation_class", "class name")
    malformed(entry(1, facilitation_class="AA"), "list_entries[1].colour", "grants no facilitation")
    malformed(
        entry(1, window_start="2026-11-20", window_end="2026-11-10"),
        "list_entries[1].window_end",
        "before it starts",
    )
    malformed(
        entry(1, window_start="2020-01-01", window_end="2021-01-01"),
        "list_entries[1]",
        "not on 2026-11-26, the day of the query",
    )
    malformed(lambda c: c.pop("list_entries"), "list_entries", "missing from the signed content")
    malformed(lambda c: c.update(list_entries={}), "list_entries", "expected type")
    malformed(lambda c: c.update(list_entries=["x"]), "list_entries[0]", "is not an object")
    malformed(lambda c: c.update(list_departments=[1]), "list_departments", "department ids")
    malformed(
        lambda c: c.update(lists_missing=[{"department": "eco"}]),
        "lists_missing[0].name",
        "missing from the signed content",
    )
    malformed(
        lambda c: c.update(lists_missing=[{**dict.fromkeys(
            ("department", "name", "detail", "rules_version"), "x"), "extra": 1}]),
        "lists_missing[0].extra",
        "is not a field of it",
    )  # fmt: skip
    malformed(lambda c: c.update(lists_found=[]), "lists_found", "is not a field of an enterprise")
    # a report in the previous content format, which had no lists: another version's
    content = json.loads(signed.content)
    content["format"] = "osmanthus-enterprise-report/2"
    for name in ("list_entries", "list_departments", "lists_missing"):
        del content[name]
    data = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    with pytest.raises(RendererMismatch, match="verify it with the version that issued it"):
        verify_report_html(_resigned(page, data.encode(), key), public_key=key.public_key())

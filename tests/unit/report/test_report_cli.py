"""Enterprise credit reports at the command line: `osmanthus report keygen` and `report verify`
(exit 0, 3 or 4), and `report enterprise`'s check of --format against --out."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from osmanthus.cli import main
from sdk.report import EMBED_ID, SignedReport
from tests.unit.report.conftest import ALTERED, FIRM, bold_font, incremental_update, show_instead


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
    assert (
        "list entries  customs_advanced_certified (red), judgement_defaulters (black); "
        "facilitation AA (customs_advanced_certified, until 2029-11-26)\n"
    ) in out
    report.write_text(page.replace('data-field="grade">', 'data-field="grade">Z'), encoding="utf-8")
    assert main(argv) == 4
    assert ALTERED in capsys.readouterr().err
    report.write_text("<html></html>", encoding="utf-8")
    assert main(argv) == 3
    # an envelope nested too deep for Python's JSON parser: refused, not a crash (exit 1)
    start = page.index(f'id="{EMBED_ID}">') + len(f'id="{EMBED_ID}">')
    end = page.index("</script>", start)
    report.write_text(page[:start] + "[" * 100_000 + "]" * 100_000 + page[end:], encoding="utf-8")
    assert main(argv) == 3
    assert "not JSON" in capsys.readouterr().err
    assert main(["report", "verify", str(tmp_path / "absent.html"), "--key", argv[-1]]) == 3


def test_cli_verifies_pdf_and_html_and_checks_the_format(
    tmp_path: Path,
    signed: SignedReport,
    pdf: bytes,
    page: str,
    key: Ed25519PrivateKey,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "issuer.pub").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    key_args = ["--key", str(tmp_path / "issuer.pub")]
    # the file's content decides, not its name
    (tmp_path / "report.bin").write_bytes(pdf)
    (tmp_path / "report.pdf").write_text(page, encoding="utf-8")
    for name in ("report.bin", "report.pdf"):
        assert main(["report", "verify", str(tmp_path / name), *key_args]) == 0
        out = capsys.readouterr().out
        assert "verified" in out and FIRM in out and "姑苏征信" in out
    score = signed.report.score
    tampered = show_instead(pdf, "score", str(score), str(score + 1))
    (tmp_path / "tampered.pdf").write_bytes(tampered)
    assert main(["report", "verify", str(tmp_path / "tampered.pdf"), *key_args]) == 4
    assert ALTERED in capsys.readouterr().err
    # a note drawn over the grade by an incremental update
    drawing = f"BT /{bold_font(pdf)} 40 Tf (A) Tj ET".encode()
    (tmp_path / "updated.pdf").write_bytes(incremental_update(pdf, drawing))
    assert main(["report", "verify", str(tmp_path / "updated.pdf"), *key_args]) == 4
    assert "bytes were appended" in capsys.readouterr().err
    # the code printed is the signed content's
    assert main(["report", "verify", str(tmp_path / "report.bin"), *key_args]) == 0
    assert f"code          {signed.verification_code}" in capsys.readouterr().out
    (tmp_path / "garbage.pdf").write_bytes(b"\x00\xff" * 10)
    assert main(["report", "verify", str(tmp_path / "garbage.pdf"), *key_args]) == 3
    # --format against --out's suffix: a usage error before anything is read or asked
    enterprise = ["report", "enterprise", FIRM, "--signing-key", "absent.key", "--coordinator",
                  "127.0.0.1:1", "--requester", "agency-1", "--keys", "absent"]  # fmt: skip
    for out, fmt in (("r.html", "pdf"), ("r.pdf", "html"), ("r.HTM", "pdf")):
        with pytest.raises(SystemExit) as exit_info:
            main([*enterprise, "--out", str(tmp_path / out), "--format", fmt])
        assert exit_info.value.code == 2
        assert f"--format {fmt} does not match --out {out}" in capsys.readouterr().err

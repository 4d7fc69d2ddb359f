"""The `osmanthus` command: help for every subcommand, exit codes, and the offline subcommands."""

from __future__ import annotations

import argparse
from pathlib import Path

import jwt
import pytest

from osmanthus.cli import build_parser, main


def _all_subcommands() -> list[list[str]]:
    paths: list[list[str]] = []

    def walk(parser: argparse.ArgumentParser, prefix: list[str]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    paths.append([*prefix, name])
                    walk(sub, [*prefix, name])

    walk(build_parser(), [])
    return paths


SUBCOMMANDS = _all_subcommands()


def test_every_operator_task_has_a_subcommand() -> None:
    names = {" ".join(p) for p in SUBCOMMANDS}
    for expected in (
        "demo",
        "seed",
        "certs init",
        "certs issue",
        "keys create",
        "token keygen",
        "token issue",
        "node serve",
        "node import",
        "coordinator serve",
        "policy validate",
        "health",
    ):
        assert expected in names


@pytest.mark.parametrize("path", SUBCOMMANDS, ids=lambda p: " ".join(p))
def test_help_explains_the_command_and_exit_codes(
    path: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*path, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "exit codes:" in out
    assert "usage: osmanthus " + " ".join(path) in out
    # a description an operator can act on, not just a usage line
    assert len(out.split("\n\n")[1]) > 20


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["token", "issue", "--requester", "x"])
    assert exit_info.value.code == 2
    assert "required" in capsys.readouterr().err


def test_keys_and_token_issue_produce_a_bound_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "agency.key"
    assert main(["keys", "create", "--out", str(key)]) == 0
    fingerprint = capsys.readouterr().out.strip()
    assert len(fingerprint) == 64 and key.stat().st_mode & 0o777 == 0o600
    assert main(["keys", "create", "--out", str(key)]) == 3  # never replace a key
    assert "already exists" in capsys.readouterr().err
    private, public = tmp_path / "issuer.key", tmp_path / "issuer.pub"
    assert main(["token", "keygen", "--private", str(private), "--public", str(public)]) == 0
    capsys.readouterr()
    rc = main(
        [
            "token", "issue", "--issuer-key", str(private), "--requester", "agency-1",
            "--role", "credit_agency", "--purpose", "loan_underwriting",
            "--key-fingerprint", fingerprint, "--ttl", "15m",
        ]
    )  # fmt: skip
    assert rc == 0
    claims = jwt.decode(capsys.readouterr().out.strip(), options={"verify_signature": False})
    assert claims["sub"] == "agency-1" and claims["key_fp"] == fingerprint
    assert claims["exp"] - claims["iat"] == 15 * 60


def test_bad_duration_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["token", "issue", "--issuer-key", "k", "--requester", "a", "--role", "bank",
              "--purpose", "p", "--key-fingerprint", "f", "--ttl", "soon"])  # fmt: skip
    assert exit_info.value.code == 2
    assert "is not a duration" in capsys.readouterr().err


def test_policy_validate_reports_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = Path(__file__).resolve().parents[2]
    assert main(["policy", "validate", str(root / "policies" / "central.cedar")]) == 0
    bad = tmp_path / "bad.cedar"
    bad.write_text("permit (principal, action, resource)\nwhen { context.purpose == };\n")
    assert main(["policy", "validate", str(bad)]) == 3
    err = capsys.readouterr().err
    assert "bad.cedar" in err and "line 2" in err


def test_node_serve_with_missing_database_exits_3(
    tmp_path: Path, platform_certs: Path, issuer_keys: object, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(
        [
            "node", "serve", "--department", "psb", "--db", str(tmp_path / "none.duckdb"),
            "--certs-dir", str(platform_certs), "--issuer-public-key", str(issuer_keys.public),  # type: ignore[attr-defined]
            "--state-dir", str(tmp_path / "state"),
        ]
    )  # fmt: skip
    assert rc == 3
    assert "none.duckdb does not exist" in capsys.readouterr().err


def test_node_serve_refuses_another_departments_certificate(
    tmp_path: Path, platform_certs: Path, issuer_keys: object, capsys: pytest.CaptureFixture[str]
) -> None:
    certs = platform_certs
    rc = main(
        [
            "node", "serve", "--department", "psb", "--db", str(tmp_path / "psb.duckdb"),
            "--ca", str(certs / "ca.pem"), "--cert", str(certs / "nodes" / "tax" / "cert.pem"),
            "--key", str(certs / "nodes" / "tax" / "key.pem"),
            "--issuer-public-key", str(issuer_keys.public),  # type: ignore[attr-defined]
            "--state-dir", str(tmp_path / "state"),
        ]
    )  # fmt: skip
    assert rc == 3
    assert "not the node of department 'psb'" in capsys.readouterr().err

"""OSMANTHUS_* variables as the servers' options: read, overridden, required, refused when bad."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest

from osmanthus.cli import build_parser, main

NODE = [
    "node",
    "serve",
    "--department",
    "psb",
    "--db",
    "psb.duckdb",
    "--issuer-public-key",
    "i.pub",
]
SYNC = ["sync", "run", "--config", "sync.toml"]


@pytest.fixture(autouse=True)
def _no_osmanthus_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("OSMANTHUS_")]:
        monkeypatch.delenv(name)


def _usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_a_server_reads_its_options_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OSMANTHUS_STATE_DIR", "/state/psb")
    monkeypatch.setenv("OSMANTHUS_LISTEN", "0.0.0.0:50051")
    monkeypatch.setenv("OSMANTHUS_TABLE_CACHE_MB", "64")
    monkeypatch.setenv("OSMANTHUS_POLICY_POLL", "0.5")
    monkeypatch.setenv("OSMANTHUS_POLICY_TRUST", "office.pub, backup.pub")
    monkeypatch.setenv("OSMANTHUS_CERTS_DIR", "/certs")
    monkeypatch.setenv("OSMANTHUS_LOG_LEVEL", "DEBUG")
    args = build_parser().parse_args(NODE)
    assert args.state_dir == Path("/state/psb")
    assert args.listen == "0.0.0.0:50051"
    assert args.table_cache_mb == 64
    assert args.policy_poll == 0.5
    assert args.policy_trust == [Path("office.pub"), Path("backup.pub")]
    assert args.certs_dir == Path("/certs")
    assert args.log_level == "DEBUG"
    # the options the environment leaves out keep their defaults
    assert args.policy_bundle is None and args.ready_file is None


def test_flags_and_durations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OSMANTHUS_EVERY", "1h")
    for word, quiet in (("1", True), ("TRUE", True), ("yes", True), ("0", False), ("no", False)):
        monkeypatch.setenv("OSMANTHUS_QUIET", word)
        args = build_parser().parse_args(SYNC)
        assert args.quiet is quiet and args.every == timedelta(hours=1)


def test_the_command_line_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OSMANTHUS_STATE_DIR", "/from/env")
    monkeypatch.setenv("OSMANTHUS_LISTEN", "0.0.0.0:1")
    monkeypatch.setenv("OSMANTHUS_POLICY_TRUST", "a.pub,b.pub")
    monkeypatch.setenv("OSMANTHUS_LOG_LEVEL", "DEBUG")
    argv = ["--log-level", "ERROR", *NODE, "--state-dir", "/from/cli", "--policy-trust", "c.pub"]
    args = build_parser().parse_args([*argv, "--listen=127.0.0.1:2"])
    assert args.state_dir == Path("/from/cli")
    assert args.listen == "127.0.0.1:2"
    assert args.policy_trust == [Path("c.pub")]  # replaced, not added to
    assert args.log_level == "ERROR"
    # an option typed as its default still wins, and so does an abbreviated one
    args = build_parser().parse_args([*NODE, "--listen", "127.0.0.1:50051", "--state", "/s"])
    assert args.listen == "127.0.0.1:50051" and args.state_dir == Path("/s")


def test_options_that_exclude_each_other(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OSMANTHUS_EVERY", "1h")
    # --once on the command line sets aside OSMANTHUS_EVERY
    args = build_parser().parse_args([*SYNC, "--once"])
    assert args.once is True and args.every is None
    monkeypatch.setenv("OSMANTHUS_ONCE", "false")  # off: as if unset
    assert build_parser().parse_args(SYNC).every == timedelta(hours=1)
    monkeypatch.setenv("OSMANTHUS_ONCE", "true")
    err = _usage_error(SYNC, capsys)
    assert "OSMANTHUS_ONCE and OSMANTHUS_EVERY" in err
    # set aside, so not read at all: not even a bad value matters
    monkeypatch.setenv("OSMANTHUS_EVERY", "often")
    assert build_parser().parse_args([*SYNC, "--once"]).every is None


def test_a_required_option_may_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "required: --state-dir" in _usage_error(NODE, capsys)
    monkeypatch.setenv("OSMANTHUS_STATE_DIR", "")  # empty: unset
    assert "required: --state-dir" in _usage_error(NODE, capsys)
    monkeypatch.setenv("OSMANTHUS_STATE_DIR", "/state/psb")
    monkeypatch.setenv("OSMANTHUS_DEPARTMENT", "tax")
    monkeypatch.setenv("OSMANTHUS_DB", "tax.duckdb")
    monkeypatch.setenv("OSMANTHUS_ISSUER_PUBLIC_KEY", "issuer.pub")
    args = build_parser().parse_args(["node", "serve"])
    assert (args.department, args.db, args.state_dir) == (
        "tax",
        Path("tax.duckdb"),
        Path("/state/psb"),
    )
    monkeypatch.setenv("OSMANTHUS_NODES", "nodes.toml")
    args = build_parser().parse_args(["coordinator", "serve"])
    assert args.nodes == Path("nodes.toml") and args.issuer_public_key == Path("issuer.pub")
    monkeypatch.setenv("OSMANTHUS_SENDERS", "senders.toml")
    monkeypatch.setenv("OSMANTHUS_OPERATOR", "ops-1,ops-2")
    args = build_parser().parse_args(["province", "serve"])
    assert args.senders == Path("senders.toml") and args.operator == ["ops-1", "ops-2"]
    monkeypatch.setenv("OSMANTHUS_CONFIG", "/etc/osmanthus/sync.toml")
    assert build_parser().parse_args(["sync", "run"]).config == Path("/etc/osmanthus/sync.toml")


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("OSMANTHUS_POLICY_POLL", "soon", "invalid float value: 'soon'"),
        ("OSMANTHUS_TABLE_CACHE_MB", "lots", "invalid int value: 'lots'"),
        ("OSMANTHUS_LOG_LEVEL", "LOUD", "invalid choice: 'LOUD'"),
        ("OSMANTHUS_POLICY_TRUST", "a.pub,,b.pub", "an empty item"),
    ],
)
def test_a_bad_value_names_the_variable(
    variable: str,
    value: str,
    problem: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(variable, value)
    err = _usage_error([*NODE, "--state-dir", "s"], capsys)
    assert f"environment variable {variable}" in err and problem in err


def test_a_bad_flag_or_duration_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OSMANTHUS_QUIET", "maybe")
    err = _usage_error(SYNC, capsys)
    assert "environment variable OSMANTHUS_QUIET (--quiet): 'maybe' is not on or off" in err
    monkeypatch.delenv("OSMANTHUS_QUIET")
    monkeypatch.setenv("OSMANTHUS_EVERY", "often")
    assert "environment variable OSMANTHUS_EVERY (--every)" in _usage_error(SYNC, capsys)
    # through main() too: a usage error, exit 2, before anything runs
    with pytest.raises(SystemExit) as exit_info:
        main(SYNC)
    assert exit_info.value.code == 2


def test_a_bad_variable_a_command_line_option_overrides_is_not_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OSMANTHUS_POLICY_POLL", "soon")
    assert (
        build_parser().parse_args([*NODE, "--state-dir", "s", "--policy-poll", "3"]).policy_poll
        == 3
    )


def test_other_commands_do_not_read_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OSMANTHUS_OUT", "/tmp/out")
    monkeypatch.setenv("OSMANTHUS_CONFIG", "sync.toml")
    assert "required: --out" in _usage_error(["seed"], capsys)
    assert "required: --config" in _usage_error(["sync", "status"], capsys)

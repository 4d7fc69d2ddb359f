"""The `osmanthus` help: each default shown once and only when there is one, version, exit codes."""

from __future__ import annotations

import argparse
import os
import re

import pytest

from osmanthus import __version__
from osmanthus.cli import build_parser, main
from osmanthus.cli.exit_codes import EXIT_CODE_HELP, ExitCode, exit_codes_epilog


def _all_commands() -> list[list[str]]:
    """Every command path, the top level ([]) and the groups included."""
    paths: list[list[str]] = [[]]

    def walk(parser: argparse.ArgumentParser, prefix: list[str]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    paths.append([*prefix, name])
                    walk(sub, [*prefix, name])

    walk(build_parser(), [])
    return paths


COMMANDS = _all_commands()
#: where a help entry states a default: "(default: ...", "(default today)", "; default: ..."
_STATED_DEFAULT = re.compile(r"[(;]\s*default\b")


def _help(path: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*path, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def _entries(help_text: str) -> list[str]:
    """Each option's or positional's help entry, its continuation lines joined."""
    body = help_text.split("\nexit codes:")[0]
    return [" ".join(e.split()) for e in re.split(r"\n(?=  \S)", body) if e.startswith("  ")]


@pytest.fixture(autouse=True)
def _no_osmanthus_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("OSMANTHUS_")]:
        monkeypatch.delenv(name)


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "osmanthus")
def test_help_shows_a_default_only_when_there_is_one_and_only_once(
    path: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    out = _help(path, capsys)
    assert "(default: None)" not in out
    assert "(default: [])" not in out
    assert "(default: False)" not in out
    assert "(default: )" not in out
    for entry in _entries(out):
        assert len(_STATED_DEFAULT.findall(entry)) <= 1, entry


def test_help_shows_real_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    entries = _entries(_help(["node", "serve"], capsys))
    assert any(
        e.startswith("--listen LISTEN") and "(default: 127.0.0.1:50051)" in e for e in entries
    )
    assert any(e.startswith("--policy-poll") and e.count("(default: 2.0)") == 1 for e in entries)
    # required: no default to show
    state_dir = next(e for e in entries if e.startswith("--state-dir"))
    assert "default" not in state_dir
    token = _entries(_help(["token", "issue"], capsys))
    assert any(e.startswith("--ttl") and "(default: 1:00:00)" in e for e in token)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"osmanthus {__version__}\n"


def test_exit_codes_are_one_registry_printed_under_every_help(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert [int(code) for code in ExitCode] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 130]
    assert set(EXIT_CODE_HELP) == set(ExitCode)
    epilog = exit_codes_epilog()
    assert epilog.startswith("exit codes:\n")
    for code in ExitCode:
        assert re.search(rf"^  {int(code)} +\S", epilog, re.MULTILINE)
    for path in (["node", "serve"], ["policy", "test"], ["lists"]):
        assert epilog in _help(path, capsys)


def test_only_the_servers_name_their_variables(capsys: pytest.CaptureFixture[str]) -> None:
    servers = (["node", "serve"], ["coordinator", "serve"], ["province", "serve"], ["sync", "run"])
    for path in servers:
        out = _help(path, capsys)
        assert "environment:" in out
        for entry in _entries(out):
            if entry.startswith("-") and not entry.startswith("-h"):
                assert "[env: OSMANTHUS_" in entry, entry
    assert "[env: OSMANTHUS_STATE_DIR]" in _help(["node", "serve"], capsys)
    assert "[env: OSMANTHUS_ISSUER_PUBLIC_KEY]" in _help(["coordinator", "serve"], capsys)
    for path in (["seed"], ["node", "import"], ["batch", "score"], ["sync", "status"]):
        assert "[env:" not in _help(path, capsys)

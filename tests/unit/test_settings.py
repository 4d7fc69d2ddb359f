"""Configuration files as typed models (osmanthus.core.settings), and the three service files
that use them: the coordinator's nodes.toml, the receiver's senders.toml, the job's sync.toml."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import Field

from coordinator.config import NodeEndpoint, load_nodes, render_nodes
from osmanthus.core import signing
from osmanthus.core.catalogue import Catalogue, load_catalogue
from osmanthus.core.errors import ConfigError
from osmanthus.core.settings import (
    Duration,
    RelativePath,
    Settings,
    SettingsError,
    dotted,
    load_settings,
)
from osmanthus.core.types import DepartmentId
from province.senders import load_senders
from syncjob.config import Delivery, load_config
from tests.unit.test_syncjob import FULL, _platform

# --- the helper, with a model of its own ---------------------------------------------------------


class _Part(Settings):
    name: str
    file: RelativePath
    every: Duration = timedelta(0)


class _Whole(Settings):
    title: str = Field(description="what the file is called")
    part: list[_Part] = Field(default_factory=list)


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _load(path: Path) -> _Whole:
    return load_settings(path, _Whole, what="test file", field="test")


def test_a_file_that_cannot_be_read_is_named_with_the_option_that_gave_it(tmp_path: Path) -> None:
    cases = {
        tmp_path / "missing.toml": "test file {} does not exist",
        tmp_path: "cannot read test file {}",
        _write(tmp_path / "gbk.toml", "title = '名称'".encode("gbk")): "{} is not UTF-8 text",
        _write(tmp_path / "broken.toml", "title = \n"): "{} is not valid TOML",
    }
    for path, words in cases.items():
        with pytest.raises(ConfigError) as info:
            _load(path)
        assert words.format(path) in info.value.message
        assert info.value.field == "test"


def test_paths_are_relative_to_the_file_not_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(
        tmp_path / "etc" / "x.toml",
        f'title = "t"\n[[part]]\nname = "a"\nfile = "data/a.csv"\n'
        f'[[part]]\nname = "b"\nfile = "{tmp_path / "abs.csv"}"\nevery = "12h"\n',
    )
    monkeypatch.chdir(tmp_path)
    loaded = load_settings(Path("etc/x.toml"), _Whole, what="test file", field="test")
    assert loaded.part[0].file == tmp_path / "etc" / "data" / "a.csv"
    assert loaded.part[1].file == tmp_path / "abs.csv"  # an absolute path is kept
    assert loaded.part[1].every.total_seconds() == 12 * 3600


def test_every_problem_is_listed_at_once_each_named_by_its_path(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "x.toml",
        '[[part]]\nname = "a"\nfile = "f"\n'
        '[[part]]\nname = 7\nfile = "f"\nevery = "soon"\ncolour = "red"\n',
    )
    with pytest.raises(SettingsError) as info:
        _load(path)
    assert info.value.problems == (
        # an unknown key first: a misspelt key is the likeliest reason for a missing one
        ("part[1].colour", "unknown setting (known: every, file, name)"),
        ("title", "is required (what the file is called)"),
        ("part[1].name", "must be a string, not an integer"),
        ("part[1].every", "'soon' is not a duration like 90s, 15m, 12h or 30d"),
    )
    assert info.value.field == "part[1].colour"
    assert info.value.message.startswith(f"{path} has 4 problems:\n  part[1].colour: unknown")
    # the message names every path already: str() does not repeat the first in front
    assert str(info.value) == info.value.message


def test_one_problem_is_one_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "x.toml", 'title = ["t"]\n')
    with pytest.raises(SettingsError) as info:
        _load(path)
    assert str(info.value) == f"{path}: title: must be a string, not an array"
    assert info.value.field == "title"


def test_values_are_taken_as_written(tmp_path: Path) -> None:
    # strict: no number for a string, no string for a table
    path = _write(tmp_path / "x.toml", 'title = 3\npart = "a"\n')
    with pytest.raises(SettingsError) as info:
        _load(path)
    assert dict(info.value.problems) == {
        "title": "must be a string, not an integer",
        "part": "must be an array, not a string",
    }


def test_a_long_list_of_problems_is_counted_after_the_first_twenty(tmp_path: Path) -> None:
    text = 'title = "t"\n' + "".join(f'[[part]]\nname = "p{i}"\n' for i in range(25))
    with pytest.raises(SettingsError) as info:
        _load(_write(tmp_path / "x.toml", text))
    assert len(info.value.problems) == 25
    assert info.value.message.endswith("  … and 5 more")


def test_dotted_paths() -> None:
    assert dotted(("statistics", 1, "epsilon")) == "statistics[1].epsilon"
    assert dotted(("coordinator", "token_file")) == "coordinator.token_file"
    assert dotted(("sender", 0, "public_keys", 2)) == "sender[0].public_keys[2]"


# --- sync.toml -----------------------------------------------------------------------------------


def _sync(tmp_path: Path, *changes: tuple[str, str]) -> Path:
    if not (tmp_path / "certs").exists():
        _platform(tmp_path)
    text = FULL
    for old, new in changes:
        assert old in text
        text = text.replace(old, new, 1)
    return _write(tmp_path / "sync.toml", text)


def test_sync_an_unknown_key_in_an_array_of_tables_is_named_by_its_index(tmp_path: Path) -> None:
    path = _sync(tmp_path, ('epsilon = "0.05"', 'epsilom = "0.05"'))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.field == "statistics[0].epsilom"
    assert info.value.message == (
        f"{path} has 2 problems:\n"
        "  statistics[0].epsilom: unknown setting (known: epsilon, every, name, statistics, "
        "subject_kind, subjects)\n"
        "  statistics[0].epsilon: is required"
    )


def test_sync_several_problems_are_refused_together(tmp_path: Path) -> None:
    path = _sync(
        tmp_path,
        ('epsilon = "0.05"', 'epsilon = "-1"'),
        ('token_file = "sync-1.jwt"\n', ""),
        ("[delivery]", "[delivery]\nretries = 3"),
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.message == (
        f"{path} has 3 problems:\n"
        "  delivery.retries: unknown setting (known: backoff_initial, backoff_max, retry_for)\n"
        "  coordinator.token_file: is required (the job's platform token, role sync_job)\n"
        "  statistics[0].epsilon: ε must be a positive number, got '-1'"
    )


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        (("[grades]", "[lists]\nenabled = 1\n[grades]"), "lists.enabled", "true or false"),
        (('epsilon = "0.05"', "epsilon = 0.05"), "statistics[0].epsilon", 'like "0.05"'),
        (('every = "12h"', "every = 12"), "grades.every", "a duration"),
        (("[province]", "[provincial]"), "provincial", "unknown setting"),
        (('statistics = ["deductions"]', "statistics = [1]"), "statistics[0].statistics[0]", ""),
        (('name = "enterprises.all"', 'name = "x" \nname2 = 1'), "statistics[0].name2", ""),
        (('sender = "suzhou"', "sender = []"), "sender", "must be a string, not an array"),
        (('target = "127.0.0.1:50060"', 'target = " "'), "province.target", "must not be empty"),
    ],
)
def test_sync_a_wrong_type_is_named_by_its_path(
    tmp_path: Path, change: tuple[str, str], field: str, words: str
) -> None:
    path = _sync(tmp_path, change)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.field == field
    assert words in info.value.message and str(path) in info.value.message


def test_sync_tls_files_are_certs_dir_or_all_of_ca_cert_and_key(tmp_path: Path) -> None:
    certs = _platform(tmp_path)
    given = f'ca = "{certs}/ca.pem"\ncert = "c.pem"\nkey = "k.pem"'
    config = load_config(_sync(tmp_path, ('certs_dir = "certs"', given)))
    assert config.coordinator.tls.cert == tmp_path / "c.pem"
    assert config.province.tls == config.coordinator.tls
    refused = {
        # both ways at once: which one was meant?
        (('certs_dir = "certs"', f'certs_dir = "certs"\n{given}'),): "coordinator.certs_dir",
        (('certs_dir = "certs"', 'ca = "ca.pem"\ncert = "c.pem"'),): "coordinator.key",
        (('certs_dir = "certs"', ""),): "coordinator.certs_dir",
        (("[province]", '[province]\ncert = "c.pem"'),): "province.ca",
        # a province table naming certificates of its own must name existing ones
        (("[province]", '[province]\ncerts_dir = "elsewhere"'),): "province.certs_dir",
    }
    for changes, field in refused.items():
        with pytest.raises(ConfigError) as info:
            load_config(_sync(tmp_path, *changes))
        assert info.value.field == field, info.value.message


def test_sync_the_province_may_be_reached_with_certificates_of_its_own(tmp_path: Path) -> None:
    other = tmp_path / "other"
    _platform(other)
    config = load_config(_sync(tmp_path, ("[province]", '[province]\ncerts_dir = "other/certs"')))
    assert config.province.tls.ca == tmp_path / "other" / "certs" / "ca.pem"
    assert config.coordinator.tls.ca == tmp_path / "certs" / "ca.pem"


def test_sync_defaults_where_a_table_is_left_out(tmp_path: Path) -> None:
    delivery = FULL[FULL.index("[delivery]") :]
    grades = FULL[FULL.index("[grades]") : FULL.index("[[statistics]]")]
    config = load_config(_sync(tmp_path, (delivery, ""), (grades, "")))
    assert config.delivery == Delivery()
    assert config.enterprises is None and config.grades_every == timedelta(days=1)
    assert config.lists_enabled and config.lists_every == timedelta(0)
    assert config.catalogue is None


# --- nodes.toml ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return load_catalogue()


def test_nodes_render_and_load_back(tmp_path: Path, catalogue: Catalogue) -> None:
    endpoints = [
        NodeEndpoint(DepartmentId("psb"), "psb-node.gov.example:50051"),
        NodeEndpoint(DepartmentId("tax"), "[::1]:50052"),
    ]
    path = _write(tmp_path / "nodes.toml", render_nodes(endpoints))
    assert load_nodes(path, catalogue=catalogue) == tuple(endpoints)


@pytest.mark.parametrize(
    ("text", "problems"),
    [
        ("", {"node": "is required (one [[node]] table per department node)"}),
        (
            '[[node]]\ndepartment = "psb"\naddress = "a:1"\n'
            '[[node]]\ndepartment = "psb"\naddress = "b:1"\n',
            {"node[1].department": "department 'psb' is listed twice"},
        ),
        (
            '[[node]]\ndepartment = "psb"\naddress = "a:1"\n'
            '[[node]]\ndepartment = "nowhere"\naddress = "a"\nport = 1\n'
            '[[node]]\ndepartment = "tax"\naddress = "a:70000"\n'
            "[[node]]\naddress = 50051\n",
            {
                "node[1].port": "unknown setting (known: address, department)",
                "node[1].department": "department 'nowhere' is not in the catalogue",
                "node[1].address": "'a' is not host:port",
                "node[2].address": "the port must be 1 to 65535",
                "node[3].department": "is required",
                "node[3].address": "must be a string, not an integer",
            },
        ),
        (
            'nodes = []\n[[node]]\ndepartment = "psb"\n',
            {"nodes": "unknown setting (known: node)", "node[0].address": "is required"},
        ),
    ],
)
def test_nodes_problems_are_named_by_their_path(
    tmp_path: Path, catalogue: Catalogue, text: str, problems: dict[str, str]
) -> None:
    path = _write(tmp_path / "nodes.toml", text)
    with pytest.raises(SettingsError) as info:
        load_nodes(path, catalogue=catalogue)
    found = dict(info.value.problems)
    for at, words in problems.items():
        assert words in found.pop(at), (at, info.value.message)
    assert info.value.field == next(iter(problems))
    assert not found  # and no other
    assert str(path) in info.value.message


def test_nodes_a_missing_registry_is_named(tmp_path: Path, catalogue: Catalogue) -> None:
    with pytest.raises(ConfigError) as info:
        load_nodes(tmp_path / "nodes.toml", catalogue=catalogue)
    assert info.value.field == "nodes" and "node registry" in info.value.message
    assert "does not exist" in info.value.message


# --- senders.toml --------------------------------------------------------------------------------


def test_senders_an_unknown_key_in_a_sender_is_named_with_the_others(tmp_path: Path) -> None:
    signing.write_key_pair(tmp_path / "keys", "k", what="sender key")
    path = _write(
        tmp_path / "senders.toml",
        '[[sender]]\nid = "suzhou"\npublic_keys = ["keys/k.pub"]\ncertificates = ["sync-1"]\n'
        '[[sender]]\nid = "wuxi"\npublic_key = ["keys/k.pub"]\ncertificates = ["sync-2"]\n',
    )
    with pytest.raises(ConfigError) as info:
        load_senders(path)
    assert info.value.field == "sender[1].public_key"
    assert info.value.message == (
        f"{path} has 2 problems:\n"
        "  sender[1].public_key: unknown setting (known: certificates, id, public_keys)\n"
        "  sender[1].public_keys: is required (the Ed25519 public key files the sender signs "
        "with)"
    )


def test_senders_key_files_are_relative_to_the_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    signing.write_key_pair(tmp_path / "etc" / "keys", "k", what="sender key")
    _write(
        tmp_path / "etc" / "senders.toml",
        '[[sender]]\nid = "suzhou"\npublic_keys = ["keys/k.pub"]\ncertificates = ["sync-1"]\n',
    )
    monkeypatch.chdir(tmp_path)
    assert not os.path.exists("keys")
    (sender,) = load_senders(Path("etc/senders.toml")).senders
    assert sender.id == "suzhou" and len(sender.keys) == 1

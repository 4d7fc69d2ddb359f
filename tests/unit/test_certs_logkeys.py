"""Transparency log and witness keys in the certificates directory, and the roster logs.toml."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from certs import PeerRole, init_platform
from certs.logkeys import create_log_key, roster_path
from osmanthus.cli import main
from osmanthus.core.errors import ConfigError, InvalidArgument
from osmanthus.core.logkeyfiles import read_signer
from osmanthus.core.logkeys import LogRoster, log_origin, witness_name
from osmanthus.core.signednote import (
    Checkpoint,
    CosignatureSigner,
    NoteSigner,
    open_note,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_platform_makes_every_log_key_the_witness_key_and_the_roster(tmp_path: Path) -> None:
    init_platform(tmp_path, departments=["psb", "tax"], requesters=["bank-1"])
    roster = LogRoster.load(roster_path(tmp_path))
    assert roster.origins() == sorted(
        [
            "coordinator.osmanthus/audit",
            "psb.node.osmanthus/audit",
            "tax.node.osmanthus/audit",
        ]
    )
    assert sorted(roster.witnesses) == ["coordinator.osmanthus/witness"]
    assert _mode(roster_path(tmp_path)) == 0o644
    for directory, origin in [
        ("nodes/psb", "psb.node.osmanthus/audit"),
        ("coordinator", "coordinator.osmanthus/audit"),
    ]:
        key = tmp_path / directory / "log.key"
        assert _mode(key) == 0o600
        assert _mode(tmp_path / directory / "log.pub") == 0o644
        signer = read_signer(NoteSigner, key, expected_name=origin, field="log_key")
        # what the key signs verifies with the roster's key, and only for its origin
        body = Checkpoint(origin=origin, size=0, root_hash=bytes(32)).body()
        assert open_note(signer.sign(body), [roster.log_verifier(origin)]).text == body
    witness = read_signer(
        CosignatureSigner,
        tmp_path / "coordinator" / "witness.key",
        expected_name="coordinator.osmanthus/witness",
        field="witness_key",
    )
    assert roster.witnesses[witness.name].verifier_key == witness.verifier_key
    # no log key for requesters and operators
    assert not (tmp_path / "requesters" / "bank-1" / "log.key").exists()
    assert not (tmp_path / "operator" / "log.key").exists()


def test_keys_are_kept_when_the_platform_is_made_again(tmp_path: Path) -> None:
    init_platform(tmp_path, departments=["psb"], requesters=[])
    before = (tmp_path / "nodes" / "psb" / "log.key").read_bytes()
    witness = (tmp_path / "coordinator" / "witness.key").read_bytes()
    init_platform(tmp_path, departments=["psb", "tax"], requesters=[], overwrite=True)
    assert (tmp_path / "nodes" / "psb" / "log.key").read_bytes() == before
    assert (tmp_path / "coordinator" / "witness.key").read_bytes() == witness
    assert "tax.node.osmanthus/audit" in LogRoster.load(roster_path(tmp_path)).logs


def test_a_public_key_without_its_private_key_is_refused(tmp_path: Path) -> None:
    init_platform(tmp_path, departments=["psb"], requesters=[])
    (tmp_path / "nodes" / "psb" / "log.key").unlink()
    with pytest.raises(ConfigError, match="restore the key from backup"):
        create_log_key(tmp_path, role=PeerRole.NODE, name="psb")
    # a lost .pub is written again from the key
    (tmp_path / "coordinator" / "log.pub").unlink()
    paths = create_log_key(tmp_path, role=PeerRole.COORDINATOR, name="coordinator")
    assert not paths.created and (tmp_path / "coordinator" / "log.pub").is_file()


def test_a_roster_listing_another_key_for_the_log_is_refused(tmp_path: Path) -> None:
    init_platform(tmp_path, departments=["psb"], requesters=[])
    node = tmp_path / "nodes" / "psb"
    for name in ("log.key", "log.pub"):
        (node / name).unlink()
    # a new key for a log the roster lists with the old one: witnesses would refuse it
    with pytest.raises(ConfigError, match="lists another key for log"):
        create_log_key(tmp_path, role=PeerRole.NODE, name="psb")


def test_requesters_and_operators_have_no_log_key(tmp_path: Path) -> None:
    init_platform(tmp_path, departments=["psb"], requesters=[])
    with pytest.raises(InvalidArgument) as error:
        create_log_key(tmp_path, role=PeerRole.REQUESTER, name="bank-1")
    assert error.value.field == "role"


def test_cli_log_key_adds_a_department_and_a_witness_to_the_roster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    init_platform(tmp_path, departments=["psb"], requesters=[])
    assert main(["certs", "log-key", "--ca-dir", str(tmp_path), "--role", "node",
                 "--name", "housing"]) == 0  # fmt: skip
    assert "written" in capsys.readouterr().out
    assert main(["certs", "log-key", "--ca-dir", str(tmp_path), "--role", "node",
                 "--name", "province", "--witness"]) == 0  # fmt: skip
    roster = LogRoster.load(roster_path(tmp_path))
    assert log_origin(PeerRole.NODE, "housing") in roster.logs
    assert witness_name(PeerRole.NODE, "province") in roster.witnesses
    assert not (tmp_path / "nodes" / "province" / "log.key").exists()
    # again: kept, not replaced
    key = (tmp_path / "nodes" / "housing" / "log.key").read_bytes()
    assert main(["certs", "log-key", "--ca-dir", str(tmp_path), "--role", "node",
                 "--name", "housing"]) == 0  # fmt: skip
    assert "kept" in capsys.readouterr().out
    assert (tmp_path / "nodes" / "housing" / "log.key").read_bytes() == key


def test_a_key_named_for_another_log_is_refused(tmp_path: Path) -> None:
    init_platform(tmp_path, departments=["psb", "tax"], requesters=[])
    with pytest.raises(ConfigError, match=re.escape("not of 'tax.node.osmanthus/audit'")):
        read_signer(
            NoteSigner,
            tmp_path / "nodes" / "psb" / "log.key",
            expected_name="tax.node.osmanthus/audit",
            field="log_key",
        )


@pytest.mark.parametrize(
    ("directory", "file", "kind", "name", "mode"),
    [
        ("nodes/psb", "log.key", NoteSigner, "psb.node.osmanthus/audit", 0o644),
        ("nodes/psb", "log.key", NoteSigner, "psb.node.osmanthus/audit", 0o640),
        ("coordinator", "witness.key", CosignatureSigner, "coordinator.osmanthus/witness", 0o604),
    ],
)
def test_a_key_file_other_users_may_read_is_refused(
    tmp_path: Path, directory: str, file: str, kind: type[NoteSigner], name: str, mode: int
) -> None:
    """The attack: a log.key (or witness.key) readable by the group or everyone lets any local
    user sign a rewritten history (or cosign a fork). The key is refused, not used with a
    warning, and the message names the file, its mode and the chmod to run."""
    init_platform(tmp_path, departments=["psb"], requesters=[])
    key = tmp_path / directory / file
    key.chmod(mode)
    with pytest.raises(ConfigError) as refused:
        read_signer(kind, key, expected_name=name, field="key")
    message = refused.value.message
    assert f"{key}: mode {mode:04o}" in message
    assert f"chmod 600 {key}" in message
    assert "PRIVATE+KEY" not in message
    # the fix is the chmod the message names
    key.chmod(0o600)
    assert read_signer(kind, key, expected_name=name, field="key").name == name

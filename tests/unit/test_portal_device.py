"""A portal device's credentials directory: what DeviceCredentials.load accepts and refuses."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from osmanthus.core.errors import ConfigError
from osmanthus.core.subjectseal import public_bytes, seal_fingerprint
from osmanthus.core.types import Role
from portal.backend import (
    PAILLIER_FILE,
    SEALING_KEY_FILE,
    TOKEN_FILE,
    DeviceCredentials,
    create_sealing_key,
    load_sealing_key,
)
from sdk.keys import RequesterKeys, load_or_create_keys
from tests.conftest import IssuerKeyPaths
from tests.forge import unsafe_forge_token


@pytest.fixture(scope="module")
def paillier(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RequesterKeys]:
    path = tmp_path_factory.mktemp("paillier") / PAILLIER_FILE
    return path, load_or_create_keys(path)


def device_dir(
    tmp_path: Path,
    issuer_keys: IssuerKeyPaths,
    paillier: tuple[Path, RequesterKeys],
    *,
    role: Role = Role.KIOSK,
    purposes: tuple[str, ...] = ("self_query",),
    bind_seal: bool = True,
) -> Path:
    directory = tmp_path / "device"
    directory.mkdir()
    for name in ("ca.pem", "cert.pem"):
        (directory / name).write_text("PEM")
    (directory / "key.pem").write_text("PEM")
    (directory / "key.pem").chmod(0o600)
    key = create_sealing_key(directory / SEALING_KEY_FILE)
    source, keys = paillier
    (directory / PAILLIER_FILE).write_bytes(source.read_bytes())
    (directory / PAILLIER_FILE).chmod(0o600)
    # signed with the issuer's key without its checks: TokenIssuer refuses a device token for
    # another purpose or without a sealing key, and the device must refuse one all the same
    token = unsafe_forge_token(
        issuer_keys.private,
        requester="kiosk-1",
        role=role.value,
        purposes=purposes,
        key_fingerprint=keys.fingerprint,
        ttl=datetime.timedelta(hours=1),
        seal_fingerprint=seal_fingerprint(public_bytes(key)) if bind_seal else None,
    )
    (directory / TOKEN_FILE).write_text(token + "\n")
    (directory / TOKEN_FILE).chmod(0o600)
    return directory


def test_a_complete_device_directory_loads(tmp_path, issuer_keys, paillier) -> None:
    credentials = DeviceCredentials.load(device_dir(tmp_path, issuer_keys, paillier))
    assert credentials.device_id == "kiosk-1" and credentials.role is Role.KIOSK
    assert credentials.paillier_keys.fingerprint == paillier[1].fingerprint
    assert (tmp_path / "device" / SEALING_KEY_FILE).stat().st_mode & 0o777 == 0o600


def test_a_token_not_bound_to_the_sealing_key_is_refused(tmp_path, issuer_keys, paillier) -> None:
    directory = device_dir(tmp_path, issuer_keys, paillier, bind_seal=False)
    with pytest.raises(ConfigError, match="seal_fp"):
        DeviceCredentials.load(directory)


@pytest.mark.parametrize(
    ("role", "purposes"),
    [(Role.CREDIT_AGENCY, ("self_query",)), (Role.KIOSK, ("self_query", "loan_underwriting"))],
)
def test_a_token_for_anything_but_self_query_by_a_device_is_refused(
    tmp_path, issuer_keys, paillier, role, purposes
) -> None:
    directory = device_dir(tmp_path, issuer_keys, paillier, role=role, purposes=purposes)
    with pytest.raises(ConfigError, match="token"):
        DeviceCredentials.load(directory)


def test_a_sealing_key_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / SEALING_KEY_FILE
    create_sealing_key(path)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_sealing_key(path)
    with pytest.raises(ConfigError):
        create_sealing_key(path)  # never over an existing key

"""Session-scoped fixtures shared by unit and integration tests."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pytest

from certs import init_platform
from osmanthus.core.tokens import generate_issuer_keypair

#: departments with node certificates in the session's platform (8 personal + customs, eco)
PLATFORM_DEPARTMENTS = (
    "psb",
    "court",
    "tax",
    "hrss",
    "blood",
    "civility",
    "volunteer",
    "samr",
    "customs",
    "eco",
)
#: kiosk-1 and portal-1 are the subjects' portal devices (issue 15): role kiosk and role portal
PLATFORM_REQUESTERS = (
    "agency-1",
    "bank-1",
    "registrar",
    "sync-1",
    "library-1",
    "kiosk-1",
    "portal-1",
)


class IssuerKeyPaths(NamedTuple):
    private: Path
    public: Path


@pytest.fixture(scope="session")
def platform_certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A certs directory laid out by init_platform, made once per session; do not modify it."""
    out = tmp_path_factory.mktemp("platform-certs")
    init_platform(out, departments=PLATFORM_DEPARTMENTS, requesters=PLATFORM_REQUESTERS)
    return out


@pytest.fixture(scope="session")
def issuer_keys(tmp_path_factory: pytest.TempPathFactory) -> IssuerKeyPaths:
    """Paths of an Ed25519 token-issuer key pair, made once per session."""
    directory = tmp_path_factory.mktemp("issuer-keys")
    paths = IssuerKeyPaths(private=directory / "issuer.key", public=directory / "issuer.pub")
    generate_issuer_keypair(paths.private, paths.public)
    return paths

"""The SDK stands alone: the base distribution installs into a fresh virtualenv and `import sdk`
works there without the server stack (no DuckDB, Cedar, reportlab, pypdf, ...).

The wheel is built from this tree; its dependencies come from .venv/wheelhouse, which
`scripts/dev.py` fills when it installs the project, so nothing here reaches the network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WHEELHOUSE = ROOT / ".venv" / "wheelhouse"
#: what a requester must never have to install: the servers' and tools' dependencies
SERVER_STACK = (
    "duckdb",
    "cedarpy",
    "reportlab",
    "pypdf",
    "tqdm",
    "prometheus_client",
    "grpc_health",
    "phe",
    "pydantic",
)

pytestmark = pytest.mark.slow

PROBE = """
import importlib.util, json, sys, time
started = time.perf_counter()
import sdk
seconds = time.perf_counter() - started
from sdk import Client, TlsFiles, load_or_create_keys, PersonScore, InvalidArgument
from importlib.resources import files
print(json.dumps({
    "loaded": sorted({m.split(".")[0] for m in sys.modules}),
    "installed": {n: importlib.util.find_spec(n) is not None for n in %r},
    "typed": [p for p in ("sdk", "osmanthus") if (files(p) / "py.typed").is_file()],
    # package data travels in the wheel: the report fonts (used once the extra is installed)
    "fonts": sorted(f.name for f in (files("sdk") / "report" / "fonts").iterdir()),
    "import_s": seconds,
}))
"""


@pytest.fixture(scope="module")
def base_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not WHEELHOUSE.is_dir():
        pytest.fail(f"{WHEELHOUSE} is missing: run `python3 scripts/dev.py test`, which makes it")
    work = tmp_path_factory.mktemp("base-install")
    dist = work / "dist"
    # this tree's wheel, built without fetching a build backend (the dev venv has setuptools)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("osmanthus-*.whl")
    env = work / "env"
    venv.EnvBuilder(with_pip=True).create(env)
    # the base distribution only: no extra, and no index (nothing but the wheelhouse)
    install = [str(env / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-index"]
    installed = subprocess.run(
        [*install, "--disable-pip-version-check", "--find-links", str(WHEELHOUSE), str(wheel)],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("PIP_")},
    )
    assert installed.returncode == 0, installed.stderr
    return env


def test_the_base_install_imports_the_sdk_and_none_of_the_server_stack(base_env: Path) -> None:
    probe = subprocess.run(
        [str(base_env / "bin" / "python"), "-c", PROBE % (SERVER_STACK,)],
        capture_output=True,
        text=True,
        cwd=base_env,  # not the source tree: the installed package is what is imported
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    # none of it is even installed, and so none of it was imported
    assert found["installed"] == dict.fromkeys(SERVER_STACK, False)
    assert not set(SERVER_STACK) & set(found["loaded"])
    assert found["typed"] == ["sdk", "osmanthus"]
    assert "NotoSansCJKsc-Regular.subset.ttf" in found["fonts"] and "OFL.txt" in found["fonts"]


def test_the_command_works_for_a_requester_and_names_the_extra_a_server_needs(
    base_env: Path, tmp_path: Path
) -> None:
    osmanthus = str(base_env / "bin" / "osmanthus")
    version = subprocess.run([osmanthus, "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("osmanthus ")
    # a requester makes its Paillier key with the base install alone
    keys = subprocess.run(
        [osmanthus, "keys", "create", "--out", str(tmp_path / "agency.key")],
        capture_output=True,
        text=True,
    )
    assert keys.returncode == 0, keys.stderr
    assert len(keys.stdout.strip()) == 64
    # a server says which extra it needs instead of failing on an import
    seed = subprocess.run(
        [osmanthus, "seed", "--out", str(tmp_path / "data")], capture_output=True, text=True
    )
    assert seed.returncode == 3, seed.stderr
    assert "pip install 'osmanthus[node]'" in seed.stderr

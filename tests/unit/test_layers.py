"""The package layers hold, and the import contracts that guard them catch a breach.

CI runs `lint-imports` on the tree (scripts/dev.py); these tests run it on copies of the tree
with one forbidden import planted, to show each contract fails when it should and names the
import that breaks it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("osmanthus", "sdk", "node", "coordinator", "province", "syncjob", "portal", "certs")
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _copy_tree(into: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, into / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", into / "pyproject.toml")
    return into


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=tree,
        # the copy, not the installed tree, is what is analysed
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )


def _plant(tree: Path, module: str, line: str) -> None:
    path = tree / module
    text = path.read_text(encoding="utf-8")
    marker = "from __future__ import annotations\n"
    assert marker in text, module
    path.write_text(text.replace(marker, marker + "\n" + line + "\n", 1), encoding="utf-8")


def test_the_tree_keeps_every_contract(tmp_path: Path) -> None:
    result = _lint(_copy_tree(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        # the core imports no service package and no application
        ("osmanthus/core/errors.py", "import node.store", "applications > sync job"),
        ("osmanthus/core/audit.py", "import osmanthus.cli.app", "applications > sync job"),
        # node and coordinator never import each other
        ("node/service.py", "import coordinator.nodes", "applications > sync job"),
        # the SDK imports only the core
        ("sdk/client.py", "import coordinator.service", "applications > sync job"),
        # the sync job uses the SDK, never a server's internals
        ("syncjob/job.py", "import province.store", "the sync job is a requester"),
        # the portal likewise, and it never reaches into the sync job either
        ("portal/oidc.py", "import node.store", "the portal is a requester"),
        ("portal/oidc.py", "import syncjob.job", "applications > sync job"),
        # the SDK needs the base install alone, the sync job its own extra
        ("sdk/keys.py", "import duckdb", "the SDK needs only the base install"),
        ("syncjob/roster.py", "import cedarpy", "the sync job needs its own extra only"),
    ],
)
def test_a_planted_import_breaks_its_contract(
    tmp_path: Path, module: str, line: str, contract: str
) -> None:
    tree = _copy_tree(tmp_path)
    _plant(tree, module, line)
    result = _lint(tree)
    assert result.returncode != 0, f"{line} in {module} went unnoticed"
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken
    imported = line.split()[1]
    assert imported.split(".")[0] in broken

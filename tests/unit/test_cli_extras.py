"""A command whose optional dependency is missing names the extra to install and exits 3."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from osmanthus.cli.extras import extra_for

NODE_SERVE = ["node", "serve", "--department", "psb", "--db", "psb.duckdb"]


def _run_without(module: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """`osmanthus ARGV` in a fresh interpreter in which `module` cannot be imported."""
    script = (
        "import sys\n"
        f"sys.modules[{module!r}] = None  # as if its extra were not installed\n"
        "from osmanthus.cli import main\n"
        f"raise SystemExit(main({argv!r}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OSMANTHUS_")}
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.mark.parametrize(
    ("module", "argv", "extra"),
    [
        (
            "duckdb",
            [*NODE_SERVE, "--issuer-public-key", "issuer.pub", "--state-dir", "state"],
            "node",
        ),
        ("cedarpy", ["policy", "validate", "central.cedar"], "policy"),
    ],
)
def test_a_missing_extra_is_named_with_exit_3(module: str, argv: list[str], extra: str) -> None:
    done = _run_without(module, argv)
    command = " ".join(a for a in argv[:2] if not a.startswith("-"))
    assert done.returncode == 3, done.stderr
    assert done.stderr.strip() == (
        f"error: 'osmanthus {command}' needs the '{extra}' extra: "
        f"pip install 'osmanthus[{extra}]' (missing module: {module})"
    )
    assert "Traceback" not in done.stderr


def test_the_extra_is_the_commands_own_else_the_smallest_that_has_the_module() -> None:
    assert extra_for("duckdb", command_extra="coordinator") == "coordinator"
    assert extra_for("tqdm", command_extra="node") == "node"
    # the command's extra does not supply the module: the smallest extra that does
    assert extra_for("cedarpy", command_extra="reports") == "policy"
    assert extra_for("reportlab", command_extra=None) == "reports"
    # every server's metrics and the sync job's: the first of the fallback order
    assert extra_for("prometheus_client", command_extra=None) == "portal"
    assert extra_for("prometheus_client", command_extra="sync") == "sync"
    # not an optional dependency: a bug, reported as an internal error
    assert extra_for("yaml", command_extra="node") is None


#: the import name of each distribution an extra names in pyproject.toml
_IMPORT_NAME = {
    "grpcio-health-checking": "grpc_health",
    "grpcio-reflection": "grpc_reflection",
    "prometheus-client": "prometheus_client",
    "python-multipart": "python_multipart",
}


def test_the_table_of_extras_is_the_one_pyproject_declares() -> None:
    import re
    import tomllib
    from pathlib import Path

    from osmanthus.cli.extras import EXTRA_MODULES

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    declared = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    for extra, requirements in declared["optional-dependencies"].items():
        if extra in ("all", "dev", "bench"):
            continue
        names = {re.split(r"[<>=\[ ;]", r, maxsplit=1)[0] for r in requirements}
        assert {_IMPORT_NAME.get(n, n) for n in names} == EXTRA_MODULES[extra], extra

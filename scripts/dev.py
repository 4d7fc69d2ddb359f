#!/usr/bin/env python3
"""Bootstrap .venv from pyproject.toml and run the demo or the full check suite (stdlib only)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
PY = VENV / "bin" / "python"
STAMP = VENV / ".osmanthus-installed"
#: wheels of the base distribution's dependencies, so the test that installs the SDK alone into
#: a fresh virtualenv needs no network (tests talk to 127.0.0.1 only)
WHEELHOUSE = VENV / "wheelhouse"
#: every package of ours that strict mypy checks
TYPED_PACKAGES = (
    "osmanthus",
    "node",
    "coordinator",
    "sdk",
    "certs",
    "province",
    "syncjob",
    "portal",
    "bench",
)
USAGE = "usage: python3 scripts/dev.py demo [demo options] | test [pytest options]"


def _digest() -> str:
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()


def ensure_venv() -> None:
    """Create .venv and install the project with its dev extra, again whenever pyproject changes."""
    if STAMP.exists() and STAMP.read_text().strip() == _digest() and PY.exists():
        return
    if not PY.exists():
        print("creating .venv …", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("installing osmanthus and its dependencies into .venv …", flush=True)
    pip = [str(PY), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", f"{ROOT}[dev]"], check=True)
    wheel = [str(PY), "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*wheel, "--wheel-dir", str(WHEELHOUSE), str(ROOT)], check=True)
    STAMP.write_text(_digest())


def run(*argv: str) -> int:
    print("$", " ".join(argv), flush=True)
    return subprocess.run(argv, cwd=ROOT).returncode


def run_to_the_end(*argv: str) -> int:
    """Like `run`, but a Ctrl-C does not cut the command short: it reaches the command too (one
    process group) and the demo then stops every process it started; this waits for that."""
    print("$", " ".join(argv), flush=True)
    process = subprocess.Popen(argv, cwd=ROOT)
    while True:
        try:
            return process.wait()
        except KeyboardInterrupt:
            continue


def check_generated() -> int:
    """Regenerate the protobuf modules and fail if that changed anything committed."""
    gen = ROOT / "osmanthus" / "v1"
    before = {p.name: p.read_bytes() for p in gen.glob("*_pb2*.py*")}
    rc = run(str(PY), "scripts/gen_protos.py")
    after = {p.name: p.read_bytes() for p in gen.glob("*_pb2*.py*")}
    if rc or before != after:
        changed = sorted(
            set(before) ^ set(after) | {k for k in before if before[k] != after.get(k)}
        )
        print(f"generated protobuf code is stale: {changed}; run scripts/gen_protos.py and commit")
        return 1
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"demo", "test"}:
        print(USAGE, file=sys.stderr)
        return 2
    ensure_venv()
    env_bin = str(VENV / "bin")
    os.environ["PATH"] = env_bin + os.pathsep + os.environ.get("PATH", "")
    if argv[0] == "demo":
        return run_to_the_end(str(VENV / "bin" / "osmanthus"), "demo", *argv[1:])
    steps = [
        check_generated,
        lambda: run(str(PY), "-m", "ruff", "check", "."),
        lambda: run(str(PY), "-m", "ruff", "format", "--check", "."),
        lambda: run(str(PY), "-m", "mypy", *TYPED_PACKAGES),
        # the package layers and the SDK's base install (pyproject [tool.importlinter])
        lambda: run(str(VENV / "bin" / "lint-imports")),
        lambda: run(str(PY), "-m", "pytest", *argv[1:]),
    ]
    for step in steps:
        rc = step()
        if rc:
            return rc
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""A real headless Chromium for the portal's browser tests: Debian's /usr/bin/chromium, driven by
Playwright for Python (whose own browser download is not available here).

In CI (the `CI` environment variable set, as `.ci/run` does) a missing browser fails the tests;
on a developer's machine without Chromium they are skipped with a message saying how to run them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

#: Debian's package; the path the issue names
CHROMIUM = Path("/usr/bin/chromium")


def _browser_path() -> Path | None:
    if CHROMIUM.exists():
        return CHROMIUM
    found = shutil.which("chromium")
    return Path(found) if found else None


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    path = _browser_path()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(
                "CI is set but no Chromium is installed: .ci/run installs it "
                "(apt-get install -y chromium fonts-noto-cjk)"
            )
        pytest.skip(
            "no Chromium here (and CI unset): install Debian's chromium and fonts-noto-cjk "
            "to run the portal's browser tests"
        )
    return path


@pytest.fixture(scope="session")
def browser(chromium_path: Path) -> Iterator[Browser]:
    """One headless Chromium for the session; each test opens its own context (no shared
    cookies or storage)."""
    args = ["--no-sandbox"] if os.geteuid() == 0 else []  # Chromium's sandbox refuses root
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(chromium_path), args=args)
        try:
            yield instance
        finally:
            instance.close()

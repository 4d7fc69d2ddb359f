"""`import sdk` loads no report code: the report names load sdk.report on first use, and without
the 'reports' extra they say which extra to install."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import sdk
import sdk.report

ROOT = Path(__file__).resolve().parents[2]
#: what the base install lacks, and `import sdk` must not import
EXTRAS_ONLY = ("reportlab", "pypdf", "cedarpy", "duckdb")
#: the report names the SDK has always offered
REPORT_NAMES = (
    "EnterpriseReport",
    "MalformedReport",
    "RendererMismatch",
    "ReportError",
    "ReportListEntry",
    "ReportRenderer",
    "SignedReport",
    "TamperedReport",
    "build_enterprise_report",
    "render_html",
    "render_pdf",
    "sign_report",
    "verify_report",
    "verify_report_html",
    "verify_report_pdf",
)


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


def test_import_sdk_loads_no_report_code() -> None:
    probe = _python(
        "import json, sys, sdk\n"
        f"extras = set({EXTRAS_ONLY!r})\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & extras)))\n"
        "print(json.dumps('sdk.report' in sys.modules))"
    )
    assert probe.returncode == 0, probe.stderr
    loaded, report_loaded = (json.loads(line) for line in probe.stdout.splitlines())
    assert loaded == [] and report_loaded is False


def test_the_report_names_are_the_report_packages() -> None:
    for name in REPORT_NAMES:
        assert name in sdk.__all__ and name in dir(sdk)
        assert getattr(sdk, name) is getattr(sdk.report, name)
    with pytest.raises(AttributeError, match="no attribute 'render_docx'"):
        sdk.render_docx  # type: ignore[attr-defined]  # noqa: B018


@pytest.mark.parametrize("missing", ["reportlab", "pypdf"])
def test_without_the_extra_a_report_name_says_which_to_install(missing: str) -> None:
    # a None entry in sys.modules makes Python refuse the import, as on a base install
    probe = _python(
        f"import sys\nsys.modules[{missing!r}] = None\n"
        "import sdk\n"
        "from sdk import Client\n"
        "try:\n"
        "    from sdk import render_pdf\n"
        "except ModuleNotFoundError as exc:\n"
        "    print(exc.name)\n"
        "    print(exc)\n"
    )
    assert probe.returncode == 0, probe.stderr
    name, message = probe.stdout.splitlines()
    assert name == missing
    assert message == (
        "credit reports need the 'reports' extra: pip install 'osmanthus[reports]' "
        f"(missing module: {missing})"
    )


def test_without_the_extra_the_report_commands_name_it(tmp_path: Path) -> None:
    probe = _python(
        "import sys\nsys.modules['reportlab'] = None\n"
        "from osmanthus.cli import main\n"
        f"sys.exit(main(['report', 'verify', {str(tmp_path / 'r.pdf')!r}, '--key', 'x.pub']))"
    )
    assert probe.returncode == 3, probe.stderr
    assert "needs the 'reports' extra: pip install 'osmanthus[reports]'" in probe.stderr


def test_no_report_module_is_over_a_thousand_lines() -> None:
    for module in (ROOT / "sdk" / "report").glob("*.py"):
        lines = module.read_text(encoding="utf-8").count("\n")
        assert lines <= 1000, f"{module.name} has {lines} lines: split it by concern"

"""Which optional-dependency extra ('pip install osmanthus[...]') supplies a missing module."""

from __future__ import annotations

#: the modules each extra of pyproject.toml installs that the base install lacks (import names)
EXTRA_MODULES: dict[str, frozenset[str]] = {
    "node": frozenset(
        {"duckdb", "cedarpy", "grpc_health", "grpc_reflection", "prometheus_client", "tqdm"}
    ),
    # psycopg: the PostgreSQL state of coordinator replicas (--state-url)
    "coordinator": frozenset(
        {
            "duckdb",
            "cedarpy",
            "grpc_health",
            "grpc_reflection",
            "prometheus_client",
            "pydantic",
            "psycopg",
        }
    ),
    "province": frozenset(
        {"duckdb", "grpc_health", "grpc_reflection", "pydantic", "prometheus_client"}
    ),
    "sync": frozenset({"duckdb", "prometheus_client", "tqdm", "pydantic"}),
    "batch": frozenset({"duckdb", "tqdm"}),
    "policy": frozenset({"cedarpy"}),
    "reports": frozenset({"reportlab", "pypdf"}),
    "portal": frozenset(
        {"starlette", "jinja2", "uvicorn", "python_multipart", "prometheus_client"}
    ),
}
EXTRA_MODULES["all"] = frozenset().union(*EXTRA_MODULES.values())

#: for a command that declares no extra (or whose extra lacks the module): the smallest first
_FALLBACK_ORDER = (
    "policy",
    "reports",
    "portal",
    "batch",
    "province",
    "coordinator",
    "sync",
    "node",
    "all",
)


def extra_for(module: str, *, command_extra: str | None) -> str | None:
    """The extra to install for `module` (a top-level import name), or None if no extra has it.

    The command's own extra when it supplies the module, else the smallest extra that does.
    """
    if command_extra is not None and module in EXTRA_MODULES.get(command_extra, ()):
        return command_extra
    return next((extra for extra in _FALLBACK_ORDER if module in EXTRA_MODULES[extra]), None)


def missing_module(exc: ModuleNotFoundError) -> str | None:
    """The top-level name of the module an import did not find, e.g. grpc_health."""
    return exc.name.partition(".")[0] if exc.name else None

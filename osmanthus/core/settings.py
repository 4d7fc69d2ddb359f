"""Configuration files as typed models: a TOML file in, a validated model or one ConfigError out.

The services' configuration files (the coordinator's nodes.toml, the receiver's senders.toml, the
sync job's sync.toml) are pydantic models built on `Settings`: unknown keys are refused, so a
misspelt setting is never silently ignored, and values are taken as written (strict: no "3" for
3, no 1 for true). `load_settings` reads and validates a file and turns every problem pydantic
found into one `SettingsError` that names the file and each problem's path in it, e.g.

    sync.toml has 2 problems:
      statistics[1].epsilon: ε must be a positive number, got '-1'
      coordinator.token_file: is required

Only the service configuration modules import this one (and so pydantic): the SDK never does.
"""

from __future__ import annotations

import datetime
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Final, TypeVar, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationError,
    ValidationInfo,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, PydanticCustomError

from osmanthus.core.durations import parse_duration
from osmanthus.core.errors import ConfigError, InvalidArgument

M = TypeVar("M", bound=BaseModel)

#: the error type of `problem`: a model validator's finding about a setting below its model
_PROBLEM: Final = "osmanthus_setting"
#: more than this many problems in one file are counted, not listed
_SHOWN: Final = 20
#: what a strict type error expects, in the words of a TOML file
_EXPECTED: Final = {
    "string_type": "a string",
    "bool_type": "true or false",
    "int_type": "a whole number",
    "float_type": "a number",
    "list_type": "an array",
    "tuple_type": "an array",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
}


class Settings(BaseModel):
    """A table of a configuration file: unknown keys refused, values as written, read-only."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class SettingsError(ConfigError):
    """A configuration file's problems, each named by its path in the file (`problems`).

    `field` is the first problem's path; the message names the file and lists every problem.
    """

    def __init__(self, file: Path, problems: Sequence[tuple[str, str]]) -> None:
        if not problems:
            raise ValueError("a SettingsError needs at least one problem")
        self.file = file
        #: (path in the file, e.g. "statistics[1].epsilon", problem in plain words)
        self.problems = tuple(problems)
        lines = [f"{at}: {text}" if at else text for at, text in self.problems]
        if len(lines) == 1:
            message = f"{file}: {lines[0]}"
        else:
            shown = lines[:_SHOWN]
            if len(lines) > _SHOWN:
                shown.append(f"… and {len(lines) - _SHOWN} more")
            message = f"{file} has {len(lines)} problems:\n" + "\n".join(f"  {s}" for s in shown)
        super().__init__(message, field=self.problems[0][0] or None)

    def __str__(self) -> str:
        # the message names every problem's path already: ConfigError's "field: " prefix would
        # repeat the first one in front of the file name
        return self.message


def read_toml(path: Path, *, what: str, field: str) -> dict[str, Any]:
    """The TOML document in `path`; ConfigError naming the file (`what`, e.g. "node registry")
    if it is missing, unreadable, not UTF-8 or not TOML. `field` names the option that gave it.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist", field=field) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}", field=field) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8", field=field
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}", field=field) from None


def load_settings(
    path: Path,
    model: type[M],
    *,
    what: str,
    field: str,
    context: Mapping[str, Any] | None = None,
) -> M:
    """`path` read (see `read_toml`) and validated as `model`; SettingsError listing every problem.

    Validators find the file's directory in their context as "base" (relative paths are
    relative to the file), and whatever else `context` gives them.
    """
    document = read_toml(path, what=what, field=field)
    try:
        return model.model_validate(
            document, context={**(context or {}), "base": path.resolve().parent}
        )
    except ValidationError as exc:
        raise SettingsError(path, problems(exc, model)) from None


def problems(error: ValidationError, model: type[BaseModel]) -> list[tuple[str, str]]:
    """Each problem in `error` as (path in the file, problem in plain words), unknown keys first:
    a misspelt key is the likeliest reason the key it was meant to be is missing."""
    found: list[tuple[bool, str, str]] = []
    for detail in error.errors(include_url=False):
        loc = tuple(detail["loc"])
        context = detail.get("ctx") or {}
        if detail["type"] == _PROBLEM:
            loc += tuple(context["at"])
            text = str(context["problem"])
        else:
            text = _words(detail, model)
        found.append((detail["type"] != "extra_forbidden", dotted(loc), text))
    found.sort(key=lambda item: item[0])
    return [(at, text) for _, at, text in found]


def problem(message: str, *at: str | int) -> PydanticCustomError:
    """What a model validator raises about a setting below its model, `at` the keys (and array
    indexes) down to it, so that the error names e.g. statistics[1].name, not the whole file."""
    return PydanticCustomError(_PROBLEM, "{problem}", {"problem": message, "at": at})


def dotted(loc: Sequence[str | int]) -> str:
    """("statistics", 1, "epsilon") → "statistics[1].epsilon"."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def toml_kind(value: object) -> str:
    """What a TOML value is, in the words the TOML specification uses."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return "a date or time"
    return type(value).__name__


def _words(detail: ErrorDetails, model: type[BaseModel]) -> str:
    kind = detail["type"]
    loc = tuple(detail["loc"])
    context = detail.get("ctx") or {}
    if kind == "extra_forbidden":
        table = _model_at(model, loc[:-1])
        known = sorted(table.model_fields) if table is not None else []
        return f"unknown setting (known: {', '.join(known)})"
    if kind == "missing":
        info = _field_at(model, loc)
        return f"is required ({info.description})" if info and info.description else "is required"
    if kind == "value_error" and "error" in context:
        return str(context["error"])
    if kind in ("too_short", "string_too_short") and context.get("min_length") == 1:
        return "must not be empty"
    if kind in _EXPECTED:
        return f"must be {_EXPECTED[kind]}, not {toml_kind(detail['input'])}"
    return detail["msg"]


def _model_at(model: type[BaseModel], loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The model of the table at `loc` (array indexes skipped); None if `loc` leaves the models."""
    current = model
    for part in loc:
        if isinstance(part, int):
            continue
        info = current.model_fields.get(part)
        inner = _inner_model(info.annotation) if info is not None else None
        if inner is None:
            return None
        current = inner
    return current


def _field_at(model: type[BaseModel], loc: Sequence[str | int]) -> FieldInfo | None:
    if not loc or not isinstance(loc[-1], str):
        return None
    table = _model_at(model, loc[:-1])
    return table.model_fields.get(loc[-1]) if table is not None else None


def _inner_model(annotation: object) -> type[BaseModel] | None:
    """The model in a field's type: the type itself, or inside list[...] or ... | None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in get_args(annotation):
        inner = _inner_model(argument)
        if inner is not None:
            return inner
    return None


# --- values every configuration file has ---------------------------------------------------------


def _text(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def relative_path(value: object, info: ValidationInfo) -> Path:
    """`value`, a path string, relative to the configuration file's directory unless absolute."""
    if not isinstance(value, str):
        raise ValueError(f"must be a path (a string), not {toml_kind(value)}")
    if not value.strip():
        raise ValueError("must not be empty")
    base = (info.context or {}).get("base", Path())
    return Path(base) / value


def _duration(value: object) -> datetime.timedelta:
    if not isinstance(value, str):
        raise ValueError(
            f'must be a duration like "90s", "15m", "12h" or "30d" (a string), '
            f"not {toml_kind(value)}"
        )
    try:
        return parse_duration(value, field="duration")
    except InvalidArgument as exc:
        raise ValueError(exc.message) from None


#: a string that is not empty or blank
Text = Annotated[str, AfterValidator(_text)]
#: a path, relative to the configuration file's directory unless absolute
RelativePath = Annotated[Path, BeforeValidator(relative_path)]
#: a duration written as "90s", "15m", "12h" or "30d" (osmanthus.core.durations)
Duration = Annotated[datetime.timedelta, BeforeValidator(_duration)]

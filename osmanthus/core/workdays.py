"""Working days and the case settings a node reads: deadlines, retention, limits, its calendar.

Deadlines for objections and credit repair run in working days (工作日): Monday to Friday, less
the public holidays the State Council announces each year, plus the weekend days it makes
working days in exchange (调休). The holidays change every year, so they are configuration, in a
TOML file a department keeps up to date (`CaseSettings.load`):

    [deadlines]
    reply_working_days = 10      # the reply to the subject
    decide_working_days = 3      # the department's decision

    [retention]
    days = 1095                  # a decided case's attachments are deleted after this

    [limits]
    filings_per_subject_per_day = 5
    open_cases_per_subject = 10

    [calendar]
    holidays = ["2026-10-01", "2026-10-02"]
    working_weekend_days = ["2026-09-27"]

A day the calendar does not name is a working day from Monday to Friday.
"""

from __future__ import annotations

import datetime
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from osmanthus.core.cases import (
    DEFAULT_DECIDE_WORKING_DAYS,
    DEFAULT_FILINGS_PER_SUBJECT_PER_DAY,
    DEFAULT_OPEN_CASES_PER_SUBJECT,
    DEFAULT_REPLY_WORKING_DAYS,
    DEFAULT_RETENTION_DAYS,
)
from osmanthus.core.errors import ConfigError

#: the longest deadline a configuration may set, in working days
MAX_WORKING_DAYS: Final = 60
_SECTIONS: Final = {
    "deadlines": {"reply_working_days", "decide_working_days"},
    "retention": {"days"},
    "limits": {"filings_per_subject_per_day", "open_cases_per_subject"},
    "calendar": {"holidays", "working_weekend_days"},
}


@dataclass(frozen=True, kw_only=True)
class WorkCalendar:
    """Monday to Friday, less `holidays`, plus `working_weekend_days`."""

    holidays: frozenset[datetime.date] = frozenset()
    working_weekend_days: frozenset[datetime.date] = frozenset()

    def is_working_day(self, day: datetime.date) -> bool:
        if day in self.holidays:
            return False
        return day.weekday() < 5 or day in self.working_weekend_days

    def add_working_days(self, start: datetime.date, days: int) -> datetime.date:
        """The `days`-th working day after `start` (`start` itself not counted): a case filed
        on a Friday with 3 working days is due on Wednesday."""
        if days < 0:
            raise ValueError("days must not be negative")
        day = start
        left = days
        while left:
            day += datetime.timedelta(days=1)
            if self.is_working_day(day):
                left -= 1
        return day


@dataclass(frozen=True, kw_only=True)
class CaseSettings:
    reply_working_days: int = DEFAULT_REPLY_WORKING_DAYS
    decide_working_days: int = DEFAULT_DECIDE_WORKING_DAYS
    retention_days: int = DEFAULT_RETENTION_DAYS
    filings_per_subject_per_day: int = DEFAULT_FILINGS_PER_SUBJECT_PER_DAY
    open_cases_per_subject: int = DEFAULT_OPEN_CASES_PER_SUBJECT
    calendar: WorkCalendar = field(default_factory=WorkCalendar)

    def decide_by(self, filed: datetime.date) -> datetime.date:
        return self.calendar.add_working_days(filed, self.decide_working_days)

    def reply_by(self, filed: datetime.date) -> datetime.date:
        return self.calendar.add_working_days(filed, self.reply_working_days)

    @classmethod
    def load(cls, path: Path) -> CaseSettings:
        """Read a case settings file (the module's docstring); ConfigError naming the file
        and the key for anything unknown, mistyped or out of range."""
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the case settings: {exc}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not a TOML file: {exc}") from None
        unknown = sorted(set(raw) - set(_SECTIONS))
        if unknown:
            raise ConfigError(f"{path}: unknown section(s) {unknown}; expected {sorted(_SECTIONS)}")
        for section, keys in _SECTIONS.items():
            table = raw.get(section, {})
            if not isinstance(table, dict):
                raise ConfigError(f"{path}: [{section}] must be a table")
            extra = sorted(set(table) - keys)
            if extra:
                raise ConfigError(
                    f"{path}: [{section}] has unknown key(s) {extra}; expected {sorted(keys)}"
                )
        deadlines = raw.get("deadlines", {})
        limits = raw.get("limits", {})
        calendar = raw.get("calendar", {})
        defaults = cls()
        return cls(
            reply_working_days=_count(
                path, "deadlines.reply_working_days", deadlines, defaults.reply_working_days,
                high=MAX_WORKING_DAYS,
            ),
            decide_working_days=_count(
                path, "deadlines.decide_working_days", deadlines, defaults.decide_working_days,
                high=MAX_WORKING_DAYS,
            ),
            retention_days=_count(
                path, "retention.days", raw.get("retention", {}), defaults.retention_days,
                high=36_500,
            ),
            filings_per_subject_per_day=_count(
                path, "limits.filings_per_subject_per_day", limits,
                defaults.filings_per_subject_per_day, high=1_000,
            ),
            open_cases_per_subject=_count(
                path, "limits.open_cases_per_subject", limits, defaults.open_cases_per_subject,
                high=1_000,
            ),
            calendar=WorkCalendar(
                holidays=_dates(path, "calendar.holidays", calendar),
                working_weekend_days=_weekend_days(path, calendar),
            ),
        )  # fmt: skip


def _count(path: Path, key: str, table: dict[str, Any], default: int, *, high: int) -> int:
    value = table.get(key.split(".")[1], default)
    if type(value) is not int or not 1 <= value <= high:
        raise ConfigError(f"{path}: {key} must be a whole number from 1 to {high}, got {value!r}")
    return value


def _dates(path: Path, key: str, table: dict[str, Any]) -> frozenset[datetime.date]:
    values = table.get(key.split(".")[1], [])
    if not isinstance(values, list):
        raise ConfigError(f"{path}: {key} must be a list of dates")
    days = set()
    for value in values:
        if isinstance(value, datetime.date) and not isinstance(value, datetime.datetime):
            days.add(value)
            continue
        try:
            days.add(datetime.date.fromisoformat(value))
        except (TypeError, ValueError):
            raise ConfigError(
                f"{path}: {key} holds {value!r}, which is not a date (YYYY-MM-DD)"
            ) from None
    return frozenset(days)


def _weekend_days(path: Path, table: dict[str, Any]) -> frozenset[datetime.date]:
    days = _dates(path, "calendar.working_weekend_days", table)
    for day in sorted(days):
        if day.weekday() < 5:
            raise ConfigError(
                f"{path}: calendar.working_weekend_days holds {day}, a {day:%A}: only a "
                "Saturday or Sunday can be made a working day"
            )
    return days

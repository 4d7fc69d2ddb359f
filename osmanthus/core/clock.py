"""China Standard Time: the zone in which records, list windows, policies and reports count days.

Every party asks "what day is it" here, so that a node, the coordinator, a report and a policy
agree on when a window opens or a record expires (UTC+8 has no daylight saving time).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Final

#: UTC+8, as Chinese law and the platform's rules count calendar days
CHINA_STANDARD_TIME: Final = timezone(timedelta(hours=8), "CST")


def china_date(moment: datetime) -> date:
    """The calendar day `moment` falls on in China Standard Time; `moment` must be aware."""
    if moment.utcoffset() is None:
        raise ValueError("china_date needs a time with its UTC offset, not a naive one")
    return moment.astimezone(CHINA_STANDARD_TIME).date()


def china_today(now: datetime | None = None) -> date:
    """Today in China Standard Time (at `now`, an aware time, when given)."""
    return china_date(now if now is not None else datetime.now(UTC))


def china_date_of_naive_utc(stored: datetime) -> date:
    """The China day of a time stored as naive UTC (DuckDB TIMESTAMP columns hold them so)."""
    return china_date(stored.replace(tzinfo=UTC))

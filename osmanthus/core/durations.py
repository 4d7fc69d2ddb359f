"""Durations written as 90s, 15m, 12h or 30d: one reading for the CLI and the config files."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Final

from osmanthus.core.errors import InvalidArgument

_DURATION: Final = re.compile(r"(\d{1,9})([smhd])")
_UNITS: Final = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
#: ten years: anything longer is a typing slip, and would overflow date arithmetic
MAX_DURATION: Final = timedelta(days=3650)


def parse_duration(text: str, *, field: str) -> timedelta:
    """`text` as a timedelta; InvalidArgument naming `field` unless it reads like 90s or 12h."""
    match = _DURATION.fullmatch(text.strip()) if isinstance(text, str) else None
    if not match:
        raise InvalidArgument(f"{text!r} is not a duration like 90s, 15m, 12h or 30d", field=field)
    value = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    if value > MAX_DURATION:
        raise InvalidArgument(f"{text!r} is longer than {MAX_DURATION.days} days", field=field)
    return value

"""Rules for the short names that cross trust boundaries: purposes, requester ids, query ids."""

from __future__ import annotations

import re

from osmanthus.core.errors import InvalidArgument
from osmanthus.core.types import Purpose, QueryId, RequesterId

#: requester, department-node and operator names as they appear in certificates and tokens
PEER_NAME_PATTERN = re.compile(r"[a-z0-9_-]{1,63}")
#: purposes are policy vocabulary: lower-case words joined by '_'
PURPOSE_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,63}")
QUERY_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{8,64}")


def validate_purpose(value: object, *, field: str = "purpose") -> Purpose:
    if not isinstance(value, str) or not PURPOSE_PATTERN.fullmatch(value):
        raise InvalidArgument(
            f"{value!r} is not a purpose name (a lower-case letter, then up to 63 lower-case "
            "letters, digits or '_')",
            field=field,
        )
    return Purpose(value)


def validate_requester_id(value: object, *, field: str = "requester") -> RequesterId:
    if not isinstance(value, str) or not PEER_NAME_PATTERN.fullmatch(value):
        raise InvalidArgument(
            f"{value!r} is not a requester id (1-63 lower-case letters, digits, '-' or '_')",
            field=field,
        )
    return RequesterId(value)


def validate_query_id(value: object, *, field: str = "query_id") -> QueryId:
    if not isinstance(value, str) or not QUERY_ID_PATTERN.fullmatch(value):
        raise InvalidArgument("must be 8-64 characters of letters, digits, '-' or '_'", field=field)
    return QueryId(value)

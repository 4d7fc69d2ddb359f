"""Which failed STATS queries give their ε back: only those the records cannot have caused."""

from __future__ import annotations

import pytest

from coordinator.nodes import NodeFailure
from coordinator.stats import refundable
from osmanthus.core.errors import (
    ConfigError,
    DeadlineExceeded,
    OsmanthusError,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from osmanthus.core.types import DepartmentId

TAX = DepartmentId("tax")


def _failure(error: OsmanthusError | None) -> NodeFailure:
    return NodeFailure(TAX, "why", error)


@pytest.mark.parametrize(
    "error", [Unavailable("node down"), PermissionDenied("policy"), Unauthenticated("token")]
)
def test_failures_the_request_alone_explains_are_refunded(error: OsmanthusError) -> None:
    assert refundable([_failure(error), _failure(Unavailable("another node down"))])


@pytest.mark.parametrize(
    "error",
    [
        # a node failing on one member's records (a rule missing for a record kind)
        ConfigError("redacted"),
        # a deadline missed because some member has many records
        DeadlineExceeded("slow"),
        # an answer discarded for a wrong department name or a bad ciphertext
        None,
        OsmanthusError("unknown"),
    ],
)
def test_failures_that_may_depend_on_the_records_stay_charged(
    error: OsmanthusError | None,
) -> None:
    # refunded, a failing query would be a free membership test, repeatable without limit
    assert not refundable([_failure(Unavailable("node down")), _failure(error)])

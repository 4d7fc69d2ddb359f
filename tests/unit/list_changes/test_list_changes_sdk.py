"""A department's list change feed at the SDK: its check of the coordinator's page, withheld
events included."""

from __future__ import annotations

import dataclasses
import functools

import pytest

from osmanthus.core.errors import CryptoError
from osmanthus.core.lists import ListChange, ListChangeEvent, ListChangesPage, WithdrawReason
from osmanthus.core.wire.lists import list_changes_page_to_proto as list_changes_response
from osmanthus.v1 import lists_pb2
from tests.unit.list_changes.conftest import ID_WITH_DIGIT, OTHER, _node_withheld, checked


def test_the_sdk_takes_withheld_events_and_refuses_one_carrying_its_entry(
    honest: lists_pb2.ListChangesResponse,
) -> None:
    from osmanthus.core.wire.lists import list_changes_page_from_proto
    from sdk.client import _from_coordinator
    from sdk.listfeed import check_changes_page as _check_changes

    sdk_page = functools.partial(_from_coordinator, list_changes_page_from_proto)

    _node_withheld(honest, 2, "a text field reads as a resident identity number")
    good = checked(honest)
    _check_changes(good, department="court", after="", size=10)
    assert sdk_page(list_changes_response(good)) == good
    withheld = good.events[2]

    def page_with(event: ListChangeEvent, feed_id: str = good.feed_id) -> ListChangesPage:
        return dataclasses.replace(good, events=(*good.events[:2], event), feed_id=feed_id)

    assert (withheld.entry_id, withheld.withdraw_reason) == ("C-1", WithdrawReason.REPAIRED)
    # the SDK does not know a withheld entry's list: a withdrawal's reason of any colour goes
    red_reason = dataclasses.replace(withheld, withdraw_reason=WithdrawReason.REVOKED)
    _check_changes(page_with(red_reason), department="court", after="", size=10)
    no_id = dataclasses.replace(withheld, entry_id="")
    _check_changes(page_with(no_id), department="court", after="", size=10)
    for bad, field in (
        # a withheld withdrawal without its reason, a withheld publication with one
        (dataclasses.replace(withheld, withdraw_reason=None), "events[2]"),
        (dataclasses.replace(withheld, event=ListChange.PUBLISHED), "events[2]"),
        (dataclasses.replace(withheld, entry=good.events[0].entry), "events[2]"),
        (dataclasses.replace(good.events[0], cursor="3", withheld="x"), "events[2]"),
        (dataclasses.replace(withheld, withheld=f"see {OTHER}"), "events[2].withheld"),
        (dataclasses.replace(withheld, withheld=" padded"), "events[2].withheld"),
        # an entry id the coordinator would have withheld as ""
        (dataclasses.replace(withheld, entry_id=ID_WITH_DIGIT), "events[2].entry_id"),
        (dataclasses.replace(withheld, entry_id=f"C-{OTHER}"), "events[2].entry_id"),
        (dataclasses.replace(withheld, entry_id="C 1"), "events[2].entry_id"),
        # revocation does not take an entry off a black list
        (
            dataclasses.replace(
                good.events[0],
                cursor="3",
                event=ListChange.WITHDRAWN,
                withdraw_reason=WithdrawReason.REVOKED,
            ),
            "events[2]",
        ),
    ):
        with pytest.raises(CryptoError) as caught:
            _check_changes(page_with(bad), department="court", after="", size=10)
        assert caught.value.field == field and OTHER not in str(caught.value)
    with pytest.raises(CryptoError) as caught:
        _check_changes(page_with(withheld, "nope"), department="court", after="", size=10)
    assert caught.value.field == "feed_id"
    # on the wire an event has its entry or the withheld mark, never both nor neither
    message = list_changes_response(good)
    message.events[2].CopyFrom(list_changes_response(good).events[0])
    message.events[2].withheld = "x"
    with pytest.raises(CryptoError, match="either its entry or"):
        sdk_page(message)
    # and an entry_id beside an entry is that entry's
    message.events[2].withheld = ""
    message.events[2].entry_id = "C-2"
    with pytest.raises(CryptoError, match="is not the entry_id of the entry") as caught:
        sdk_page(message)
    assert caught.value.field == "events[2].entry_id"

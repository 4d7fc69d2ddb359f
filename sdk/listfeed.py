"""The SDK's checks on a page of a department's list change feed."""

from __future__ import annotations

from osmanthus.core.errors import CryptoError, InvalidArgument
from osmanthus.core.ids import mask_subject
from osmanthus.core.lists import (
    ListChange,
    ListChangesPage,
    check_feed_id,
    check_withheld,
    parse_change_cursor,
    reason_allowed,
    shown_value,
    withheld_entry_id,
)
from osmanthus.core.types import SubjectKind


def check_changes_page(page: ListChangesPage, *, department: str, after: str, size: int) -> None:
    """CryptoError if the coordinator's feed page is not an answer to what was asked: the
    coordinator checks what the node sends; this checks the coordinator."""
    if page.department != department:
        raise CryptoError(
            f"a page of {shown_value(page.department)}'s feed, not {department}'s",
            field="department",
        )
    try:
        check_feed_id(page.feed_id)
        for i, event in enumerate(page.events):
            if event.withheld:
                check_withheld(event.withheld, field=f"events[{i}].withheld")
    except InvalidArgument as exc:
        raise CryptoError(
            f"the coordinator sent a bad {exc.field}: it {exc.message}", field=exc.field
        ) from None
    if len(page.events) > size:
        raise CryptoError(f"{len(page.events)} events for a page of {size}", field="events")
    previous = parse_change_cursor(after)
    for i, event in enumerate(page.events):
        try:
            seq = parse_change_cursor(event.cursor, field=f"events[{i}].cursor")
        except InvalidArgument as exc:
            raise CryptoError(exc.message, field=exc.field) from None
        entry = event.entry
        # a withdrawal says why, withheld or not; a publication never does
        fits = (event.withdraw_reason is not None) == (event.event is ListChange.WITHDRAWN)
        if entry is None:
            # withheld: none of the entry's fields, only its id (when that passes the id's
            # checks) and a withdrawal's reason, of any colour: the list is not known here
            fits = fits and bool(event.withheld)
            if event.entry_id and withheld_entry_id(event.entry_id) != event.entry_id:
                raise CryptoError(
                    "the coordinator sent a withheld event naming an entry id that fails the "
                    "entry id's checks (its pattern, or it reads as a resident identity number)",
                    field=f"events[{i}].entry_id",
                )
        else:
            # entry_id is entry.entry_id: ListChangeEvent and the wire form see to that
            fits = (
                fits
                and not event.withheld
                and entry.department == department
                and (
                    event.withdraw_reason is None
                    or reason_allowed(entry.colour, event.withdraw_reason)
                )
                and (
                    entry.subject_kind is not SubjectKind.PERSON
                    or entry.subject_id == mask_subject(entry.subject_id)
                )
            )
        if seq <= previous or not fits:
            raise CryptoError(
                "the coordinator sent an event out of order, of another department, with a "
                "withdraw reason that does not fit it, with an unmasked resident id, or "
                "withheld with something of its entry",
                field=f"events[{i}]",
            )
        previous = seq
    expected = page.events[-1].cursor if page.events else after
    if page.next_cursor != expected or (page.more and not page.events):
        raise CryptoError(
            "the coordinator sent a next cursor that does not follow the page", field="next_cursor"
        )

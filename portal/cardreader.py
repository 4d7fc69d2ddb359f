"""The kiosk's identity-card reader: a protocol, and a simulated reader for the demo and tests.

A reader reports placements: each time a card is put on it, a new `CardPlacement` with a
sequence number and the resident identity number the card holds, as read. The kiosk signs a
person in once per placement (so signing out with the card still on the reader does not sign
them straight back in) and signs them out when that placement ends (the card taken away or
another put down). The number is validated (GB 11643 check character) by `check_placement`
before anyone is signed in; a card whose number fails is refused on screen and audited.

A real reader (a GA 467 / ISO 14443 type B resident-card reader through its vendor's SDK) is
wrapped in a class implementing `CardReader`; none ships here.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Protocol

from osmanthus.core.errors import InvalidArgument
from osmanthus.core.ids import validate_resident_id
from osmanthus.core.types import SubjectId

__all__ = [
    "CardPlacement",
    "CardReader",
    "CardRefused",
    "SimulatedCardReader",
    "check_placement",
]

#: anything longer than this is not a resident id; refused before validation
MAX_RAW_ID_CHARS = 64


@dataclass(frozen=True)
class CardPlacement:
    """One card put on the reader, as read (not yet validated)."""

    sequence: int
    #: the identity number as the card gave it; kept out of the repr (logs)
    raw_id: str = field(repr=False)


class CardReader(Protocol):
    """What the kiosk needs from a card reader. Implementations must be thread-safe."""

    def current(self) -> CardPlacement | None:
        """The card on the reader now, or None."""
        ...

    def wait_for_card(self, timeout_s: float) -> CardPlacement | None:
        """Block until a card is on the reader (or `timeout_s` passes); the placement or None."""
        ...

    def wait_for_removal(self, sequence: int, timeout_s: float) -> bool:
        """Block until placement `sequence` has ended (or `timeout_s`); whether it has."""
        ...


class CardRefused(InvalidArgument):
    """A card whose number is not a valid resident identity number; `rule` says which check
    failed ("check_character" or "format"), never the number or a piece of it."""

    def __init__(self, message: str, *, rule: str) -> None:
        self.rule = rule
        super().__init__(message, field="card")


def check_placement(placement: CardPlacement) -> SubjectId:
    """The validated resident id on the card, or CardRefused.

    The validator's own message can quote the region code or birth date it refused; a kiosk
    screen is public and the audit log keeps no piece of an identifier, so the refusal names
    the rule only.
    """
    raw = placement.raw_id
    if not isinstance(raw, str) or len(raw) > MAX_RAW_ID_CHARS:
        raise CardRefused("the card did not give a resident identity number", rule="format")
    try:
        return validate_resident_id(raw, field="card")
    except InvalidArgument as exc:
        if "check character" in exc.message and "ISO 7064" in exc.message:
            raise CardRefused(
                "the number on the card fails its GB 11643 check character (ISO 7064 MOD 11-2)",
                rule="check_character",
            ) from None
        raise CardRefused(
            "the number on the card is not a valid resident identity number (GB 11643)",
            rule="format",
        ) from None


class SimulatedCardReader:
    """A reader the demo and tests put cards on with `place(resident_id)` and `remove()`."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._sequence = 0
        self._card: CardPlacement | None = None

    def place(self, raw_id: str) -> CardPlacement:
        """Put a card holding `raw_id` on the reader (replacing any card there)."""
        if not isinstance(raw_id, str) or len(raw_id) > MAX_RAW_ID_CHARS:
            raise InvalidArgument(
                f"a card holds a string of at most {MAX_RAW_ID_CHARS} characters", field="card"
            )
        with self._changed:
            self._sequence += 1
            self._card = CardPlacement(self._sequence, raw_id)
            self._changed.notify_all()
            return self._card

    def remove(self) -> None:
        """Take the card away (nothing happens when there is none)."""
        with self._changed:
            self._card = None
            self._changed.notify_all()

    def current(self) -> CardPlacement | None:
        with self._changed:
            return self._card

    def wait_for_card(self, timeout_s: float) -> CardPlacement | None:
        with self._changed:
            self._changed.wait_for(lambda: self._card is not None, timeout=timeout_s)
            return self._card

    def wait_for_removal(self, sequence: int, timeout_s: float) -> bool:
        def ended() -> bool:
            return self._card is None or self._card.sequence != sequence

        with self._changed:
            return self._changed.wait_for(ended, timeout=timeout_s)

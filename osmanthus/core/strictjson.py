"""Strict JSON objects for signed documents (tokens, receipts, bundles): no key twice.

Parsers disagree on which of two duplicate keys wins, so a signed document holding one could
mean one thing to the signer and another to a verifier.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def unique_keys(what: str, shown: Callable[[str], str] = repr) -> Callable[..., dict[str, Any]]:
    """A json.loads object_pairs_hook that raises ValueError("<what> 'k' appears twice")."""

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                raise ValueError(f"{what} {shown(key)} appears twice")
            result[key] = value
        return result

    return hook

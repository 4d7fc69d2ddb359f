"""The wire contract: every RPC's request and result types and their protobuf conversions.

One module per API (`node`, `lists`, `province`, `coordinator`), each shared by both ends of its
calls, and `common` for the values they share. Outside this package only servicers touch proto
messages; everything else works on the typed values defined here.
"""

import logging
from collections.abc import Callable
from typing import Any, Final

from google.protobuf.message import DecodeError

from osmanthus.core.errors import InvalidArgument

_log = logging.getLogger(__name__)

#: the largest message any Osmanthus server accepts: requests are small (a key, an id, a chunk of
#: ids), so anything larger is refused before it is read
MAX_RECEIVE_BYTES: Final = 1 << 20


def decoded(raw: bytes, deserialize: Callable[[bytes], Any] | None) -> Any:
    """A request's bytes as the message `deserialize` reads (as they are without one).

    InvalidArgument (field "request") for bytes that are not that message in the protobuf
    binary encoding: a truncated field, a wrong wire type, a string that is not UTF-8. Servers
    decode here instead of in grpc, which answers such bytes INTERNAL (osmanthus.core.server).
    """
    if deserialize is None:
        return raw
    try:
        return deserialize(raw)
    except DecodeError as exc:
        message = getattr(getattr(deserialize, "__self__", None), "DESCRIPTOR", None)
        name = getattr(message, "full_name", "request message")
        _log.info("refused a request whose %d bytes are not a %s: %s", len(raw), name, exc)
        raise InvalidArgument(
            f"the request's bytes are not a {name} in the protobuf binary encoding ({exc})",
            field="request",
        ) from None

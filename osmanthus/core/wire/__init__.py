"""The wire contract: every RPC's request and result types and their protobuf conversions.

One module per API (`node`, `lists`, `province`, `coordinator`), each shared by both ends of its
calls, and `common` for the values they share. Outside this package only servicers touch proto
messages; everything else works on the typed values defined here.
"""

from typing import Final

#: the largest message any Osmanthus server accepts: requests are small (a key, an id, a chunk of
#: ids), so anything larger is refused before it is read
MAX_RECEIVE_BYTES: Final = 1 << 20

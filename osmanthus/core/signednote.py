"""Signs and opens C2SP signed notes (Ed25519), witness cosignatures and tlog checkpoint bodies.

Three specifications, each followed as published (sections cited at the code):

* c2sp.org/signed-note: a note is a UTF-8 text ending in a newline, a blank line, then one
  signature line per key, "— <key name> base64(4-byte key ID || signature)". Keys are named and
  identified by a key ID, the first four bytes of SHA-256(name || 0x0A || type || public key);
  type 0x01 is a plain Ed25519 signature over the text. Key texts follow golang.org/x/mod/sumdb/note
  (the reference implementation): a verifier key is "<name>+<hex key ID>+base64(type || public
  key)" and a signer key "PRIVATE+KEY+<name>+<hex key ID>+base64(type || 32-byte seed)".
* c2sp.org/tlog-cosignature: a witness's cosignature is a note signature of type 0x04 whose
  signature is an 8-byte big-endian POSIX timestamp followed by an Ed25519 signature over
  "cosignature/v1\\ntime <timestamp>\\n" and the checkpoint body.
* c2sp.org/tlog-checkpoint: the checkpoint body is the log's origin line, the tree size in
  decimal, the base64 RFC 6962 root hash, then optional non-empty extension lines.

A reader trusts only the keys it is given: `open_note` verifies every signature from a given key
(name and key ID both match), refuses the note if one of them fails, ignores signatures from
other keys, and refuses a note that no given key signed. No Python library implements these
formats, so this module is the smallest code that matches the Go reference and its test vectors
(the tests check them).
"""

from __future__ import annotations

import abc
import base64
import binascii
import hashlib
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Final, NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from osmanthus.core.errors import InvalidArgument, Unauthenticated

# --- protocol parameters -----------------------------------------------------------------------

#: signed-note "Signature types": Ed25519 signatures over the note text
ED25519_SIGNATURE_TYPE: Final = 0x01
#: signed-note "Signature types" / tlog-cosignature "Format": timestamped Ed25519 cosignatures
COSIGNATURE_SIGNATURE_TYPE: Final = 0x04
#: signed-note "Format": the key ID that starts every signature is a big-endian uint32
KEY_ID_SIZE: Final = 4
#: RFC 8032: Ed25519 public keys, private key seeds and signatures
ED25519_PUBLIC_KEY_SIZE: Final = 32
ED25519_SEED_SIZE: Final = 32
ED25519_SIGNATURE_SIZE: Final = 64
#: signed-note "Format": the separator between key name and key type in the key ID's hash input
KEY_ID_NAME_SEPARATOR: Final = b"\n"
#: signed-note "Format": a signature line starts with an em dash (U+2014) and a space
SIGNATURE_LINE_PREFIX: Final = "\u2014 "
#: signed-note "Format": the text (ending in a newline) and the signatures are separated by a
#: blank line, so the last "\n\n" in the note ends the text
TEXT_SIGNATURES_SEPARATOR: Final = b"\n\n"
#: signed-note "Format": verifiers SHOULD limit the number of signatures and MUST accept 16;
#: golang.org/x/mod/sumdb/note refuses a note with more than 100
MAX_SIGNATURES: Final = 100
#: our limits on a whole note (text and signatures) and on the text's lines; a checkpoint is a
#: few hundred bytes, so these only stop a hostile peer from making a reader parse megabytes
MAX_NOTE_BYTES: Final = 64 * 1024
MAX_TEXT_LINES: Final = 1024
#: golang.org/x/mod/sumdb/note key texts: "PRIVATE+KEY+" starts a signer key; "+" separates parts
SIGNER_KEY_PREFIX: Final = "PRIVATE+KEY+"
KEY_TEXT_SEPARATOR: Final = "+"
#: tlog-cosignature "Ed25519 signed message": the header line and the timestamp line's prefix
COSIGNATURE_HEADER: Final = "cosignature/v1\n"
COSIGNATURE_TIME_PREFIX: Final = "time "
#: tlog-cosignature "Format": timestamped_signature is a u64 timestamp, at most 2^63 - 1
COSIGNATURE_TIMESTAMP_SIZE: Final = 8
MAX_COSIGNATURE_TIMESTAMP: Final = 2**63 - 1
#: tlog-checkpoint "Note text": an RFC 6962 SHA-256 root hash, a uint64 tree size, 3 lines at least
CHECKPOINT_ROOT_HASH_SIZE: Final = 32
MAX_TREE_SIZE: Final = 2**64 - 1
CHECKPOINT_MIN_LINES: Final = 3

_HEX_KEY_ID = re.compile(r"[0-9a-fA-F]{8}")
# tlog-checkpoint "Note text": ASCII decimal with no leading zeroes (0 for the empty tree)
_CANONICAL_DECIMAL = re.compile(r"0|[1-9][0-9]*")
# RFC 4648 section 4 alphabet with padding; canonical form is checked by encoding back
_STANDARD_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


# --- names, key IDs, encodings -----------------------------------------------------------------


def _has_control_character(text: str) -> bool:
    """Whether `text` holds an ASCII control character other than newline (signed-note "Format")."""
    return any(ord(c) < 0x20 and c != "\n" for c in text)


def is_valid_key_name(name: str) -> bool:
    """Whether `name` may name a key: signed-note "Format" (non-empty, no Unicode spaces, no "+").

    Control characters are refused too, since a signed note may not contain them.
    """
    if not name or KEY_TEXT_SEPARATOR in name or _has_control_character(name):
        return False
    if any(c.isspace() for c in name):
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate is not UTF-8
        return False
    return True


def _check_key_name(name: str, *, field_name: str) -> None:
    if not isinstance(name, str) or not is_valid_key_name(name):
        raise InvalidArgument(
            "a key name must be non-empty, without spaces, '+' or control characters",
            field=field_name,
        )


def key_id(name: str, signature_type: int, public_key: bytes) -> bytes:
    """The 4-byte key ID: SHA-256(name || 0x0A || type || public key)[:4].

    signed-note "Signatures" recommends it; tlog-cosignature "Format" requires it for type 0x04.
    """
    material = name.encode("utf-8") + KEY_ID_NAME_SEPARATOR + bytes([signature_type]) + public_key
    return hashlib.sha256(material).digest()[:KEY_ID_SIZE]


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64decode_canonical(text: str) -> bytes | None:
    """Standard padded base64 (RFC 4648 section 4) in its one canonical spelling, else None."""
    if not _STANDARD_BASE64.fullmatch(text):
        return None
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    # unused low bits of the last character must be zero: one spelling per byte string
    return data if _b64encode(data) == text else None


def _public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes_raw()


def _parse_key_text(
    text: str, *, field_name: str, signature_type: int, key_size: int, kind: str
) -> tuple[str, bytes, bytes]:
    """Split "<name>+<hex key ID>+base64(type || key)" into name, key ID and key bytes.

    Checks the name, the key ID's spelling, the base64, the type byte and the key's length; the
    caller checks the key ID against the public key.
    """
    if not isinstance(text, str):
        raise InvalidArgument("a key must be text", field=field_name)
    parts = text.split(KEY_TEXT_SEPARATOR, 2)  # the name has no "+"; base64 may
    if len(parts) != 3:
        raise InvalidArgument(
            "a key text is <name>+<key ID>+<base64 type and key>", field=field_name
        )
    name, hex_id, encoded = parts
    _check_key_name(name, field_name=field_name)
    if not _HEX_KEY_ID.fullmatch(hex_id):
        raise InvalidArgument("the key ID must be 8 hexadecimal digits", field=field_name)
    material = _b64decode_canonical(encoded)
    if material is None or len(material) != 1 + key_size:
        raise InvalidArgument(
            f"the key must be standard base64 of a type byte and {key_size} key bytes",
            field=field_name,
        )
    if material[0] != signature_type:
        raise InvalidArgument(
            f"the key's type byte is 0x{material[0]:02x}, not 0x{signature_type:02x} ({kind})",
            field=field_name,
        )
    return name, bytes.fromhex(hex_id), material[1:]


# --- keys ---------------------------------------------------------------------------------------


class _Verifier:
    """A named Ed25519 public key of one signature type (the base of both verifier kinds)."""

    signature_type: ClassVar[int]
    _kind: ClassVar[str]

    def __init__(self, *, name: str, public_key: Ed25519PublicKey) -> None:
        _check_key_name(name, field_name="name")
        if not isinstance(public_key, Ed25519PublicKey):
            raise InvalidArgument("the key must be an Ed25519 public key", field="public_key")
        self.name: Final = name
        self.public_key: Final = public_key
        self.key_id: Final = key_id(name, self.signature_type, _public_bytes(public_key))

    @property
    def verifier_key(self) -> str:
        """The key as text: "<name>+<hex key ID>+base64(type || public key)"."""
        encoded = _b64encode(bytes([self.signature_type]) + _public_bytes(self.public_key))
        return KEY_TEXT_SEPARATOR.join((self.name, self.key_id.hex(), encoded))

    @classmethod
    def _from_key_text(cls, text: str) -> tuple[str, Ed25519PublicKey]:
        """Parse and check a verifier key (golang.org/x/mod/sumdb/note NewVerifier)."""
        name, expected_id, public = _parse_key_text(
            text,
            field_name="verifier_key",
            signature_type=cls.signature_type,
            key_size=ED25519_PUBLIC_KEY_SIZE,
            kind=cls._kind,
        )
        if key_id(name, cls.signature_type, public) != expected_id:
            raise InvalidArgument(
                "the key ID does not match the key's name and public key", field="verifier_key"
            )
        return name, Ed25519PublicKey.from_public_bytes(public)

    def _verify(self, message: bytes, signature: bytes) -> bool:
        if len(signature) != ED25519_SIGNATURE_SIZE:
            return False
        try:
            self.public_key.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.verifier_key!r})"


class NoteVerifier(_Verifier):
    """A key that checks plain Ed25519 note signatures (signed-note type 0x01)."""

    signature_type = ED25519_SIGNATURE_TYPE
    _kind = "Ed25519 note"

    @classmethod
    def from_key_text(cls, text: str) -> NoteVerifier:
        """Parse a verifier key; refuses a bad name, a wrong key ID, a type byte other than 0x01."""
        name, key = cls._from_key_text(text)
        return cls(name=name, public_key=key)

    def verify(self, text: str | bytes, signature: bytes) -> bool:
        """Whether `signature` (64 bytes, without the key ID) signs the note text `text`."""
        return self._verify(_text_bytes(text), signature)


class CosignatureVerifier(_Verifier):
    """A witness's key that checks tlog-cosignature/v1 cosignatures (signed-note type 0x04)."""

    signature_type = COSIGNATURE_SIGNATURE_TYPE
    _kind = "Ed25519 cosignature"

    @classmethod
    def from_key_text(cls, text: str) -> CosignatureVerifier:
        """Parse a verifier key; refuses a bad name, a wrong key ID, a type byte other than 0x04."""
        name, key = cls._from_key_text(text)
        return cls(name=name, public_key=key)

    def verify(self, text: str | bytes, signature: bytes) -> bool:
        """Whether `signature` (timestamp || Ed25519 signature) cosigns the checkpoint `text`."""
        if len(signature) != COSIGNATURE_TIMESTAMP_SIZE + ED25519_SIGNATURE_SIZE:
            return False
        timestamp = int.from_bytes(signature[:COSIGNATURE_TIMESTAMP_SIZE], "big")
        if timestamp > MAX_COSIGNATURE_TIMESTAMP:
            return False
        message = cosignature_message(_text_bytes(text), timestamp)
        return self._verify(message, signature[COSIGNATURE_TIMESTAMP_SIZE:])


class _Signer(abc.ABC):
    """A named Ed25519 private key of one signature type (the base of both signer kinds)."""

    signature_type: ClassVar[int]
    _kind: ClassVar[str]

    def __init__(self, *, name: str, private_key: Ed25519PrivateKey) -> None:
        _check_key_name(name, field_name="name")
        if not isinstance(private_key, Ed25519PrivateKey):
            raise InvalidArgument("the key must be an Ed25519 private key", field="private_key")
        self.name: Final = name
        self._private_key = private_key
        self.public_key: Final = private_key.public_key()
        self.key_id: Final = key_id(name, self.signature_type, _public_bytes(self.public_key))

    @property
    def verifier_key(self) -> str:
        """The matching verifier key as text, to hand to whoever checks this signer's notes."""
        encoded = _b64encode(bytes([self.signature_type]) + _public_bytes(self.public_key))
        return KEY_TEXT_SEPARATOR.join((self.name, self.key_id.hex(), encoded))

    def signer_key_text(self) -> str:
        """The private key as "PRIVATE+KEY+<name>+<hex key ID>+base64(type || seed)": a secret."""
        seed = self._private_key.private_bytes_raw()
        encoded = _b64encode(bytes([self.signature_type]) + seed)
        return SIGNER_KEY_PREFIX + KEY_TEXT_SEPARATOR.join((self.name, self.key_id.hex(), encoded))

    @classmethod
    def _from_key_text(cls, text: str) -> tuple[str, Ed25519PrivateKey]:
        """Parse and check a signer key (golang.org/x/mod/sumdb/note NewSigner).

        Messages never quote the key text: it is a secret.
        """
        if not isinstance(text, str) or not text.startswith(SIGNER_KEY_PREFIX):
            raise InvalidArgument(
                f"a signer key starts with {SIGNER_KEY_PREFIX!r}", field="signer_key"
            )
        name, expected_id, seed = _parse_key_text(
            text[len(SIGNER_KEY_PREFIX) :],
            field_name="signer_key",
            signature_type=cls.signature_type,
            key_size=ED25519_SEED_SIZE,
            kind=cls._kind,
        )
        private_key = Ed25519PrivateKey.from_private_bytes(seed)
        # the key ID hashes the public key, so it is checked after deriving it from the seed
        public = _public_bytes(private_key.public_key())
        if key_id(name, cls.signature_type, public) != expected_id:
            raise InvalidArgument(
                "the key ID does not match the key's name and public key", field="signer_key"
            )
        return name, private_key

    @abc.abstractmethod
    def _signature(self, text: bytes, timestamp: int | None) -> bytes:
        """The signature bytes of this key's type over `text` (a note's or a checkpoint's)."""

    def _signature_line(self, text: bytes, timestamp: int | None) -> str:
        return _format_signature_line(self.name, self.key_id + self._signature(text, timestamp))

    def _checked_text(self, text: str) -> bytes:
        data = _text_bytes(text)
        _check_text(data)
        self._check_text_content(data)
        return data

    def _sign(self, text: str, timestamp: int | None) -> bytes:
        data = self._checked_text(text)
        line = self._signature_line(data, timestamp)
        return data + b"\n" + line.encode("utf-8")

    def _countersign(self, signed_note: bytes, timestamp: int | None) -> bytes:
        text, lines = _split_note(signed_note)
        self._check_text_content(text)
        # as golang.org/x/mod/sumdb/note Sign: an earlier signature by this key is replaced
        kept = [line for line in lines if (line.name, line.key_id) != (self.name, self.key_id)]
        if len(kept) + 1 > MAX_SIGNATURES:
            raise InvalidArgument(
                f"the note would carry more than {MAX_SIGNATURES} signatures",
                field="note.signatures",
            )
        new = self._signature_line(text, timestamp)
        return text + b"\n" + "".join([*(line.text for line in kept), new]).encode("utf-8")

    # a hook with a default, not an abstract method: a plain note signer accepts any text
    def _check_text_content(self, text: bytes) -> None:  # noqa: B027
        """Refuse a text this kind of signer must not sign (checkpoints only, for witnesses)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.verifier_key!r})"


class NoteSigner(_Signer):
    """Signs notes with a named Ed25519 key (signed-note type 0x01, "Ed25519 signatures")."""

    signature_type = ED25519_SIGNATURE_TYPE
    _kind = "Ed25519 note"

    @classmethod
    def from_key_text(cls, text: str) -> NoteSigner:
        """Parse a signer key "PRIVATE+KEY+..."; refuses a wrong key ID or type byte."""
        name, key = cls._from_key_text(text)
        return cls(name=name, private_key=key)

    def _signature(self, text: bytes, timestamp: int | None) -> bytes:
        return self._private_key.sign(text)

    def signature_line(self, text: str) -> str:
        """The one signature line "— <name> <base64>\\n" for `text`, without the note around it."""
        return self._signature_line(self._checked_text(text), None)

    def sign(self, text: str) -> bytes:
        """The signed note: `text` (ending in a newline), a blank line, this key's signature."""
        return self._sign(text, None)

    def countersign(self, signed_note: bytes) -> bytes:
        """Add this key's signature to a signed note, keeping its other signatures as they are.

        The other signatures are not verified here (the reader does that); one earlier signature
        by this very key is replaced.
        """
        return self._countersign(signed_note, None)


class CosignatureSigner(_Signer):
    """A witness's key: cosigns checkpoints per tlog-cosignature/v1 (signed-note type 0x04).

    Only a checkpoint body (c2sp.org/tlog-checkpoint) is cosigned; the caller passes the time the
    cosignature states (POSIX seconds), or the current time is used.
    """

    signature_type = COSIGNATURE_SIGNATURE_TYPE
    _kind = "Ed25519 cosignature"

    @classmethod
    def from_key_text(cls, text: str) -> CosignatureSigner:
        """Parse a type 0x04 signer key "PRIVATE+KEY+..."; refuses a wrong key ID or type."""
        name, key = cls._from_key_text(text)
        return cls(name=name, private_key=key)

    def _check_text_content(self, text: bytes) -> None:
        parse_checkpoint(text.decode("utf-8"))

    def _signature(self, text: bytes, timestamp: int | None) -> bytes:
        when = int(time.time()) if timestamp is None else timestamp
        if isinstance(when, bool) or not isinstance(when, int):
            raise InvalidArgument("the timestamp must be whole POSIX seconds", field="timestamp")
        if not 0 <= when <= MAX_COSIGNATURE_TIMESTAMP:
            raise InvalidArgument(
                f"the timestamp must be between 0 and {MAX_COSIGNATURE_TIMESTAMP}",
                field="timestamp",
            )
        signature = self._private_key.sign(cosignature_message(text, when))
        return when.to_bytes(COSIGNATURE_TIMESTAMP_SIZE, "big") + signature

    def signature_line(self, checkpoint_text: str, *, timestamp: int | None = None) -> str:
        """The one cosignature line for a checkpoint body, without the note around it."""
        return self._signature_line(self._checked_text(checkpoint_text), timestamp)

    def sign(self, checkpoint_text: str, *, timestamp: int | None = None) -> bytes:
        """The checkpoint body, a blank line and this witness's cosignature."""
        return self._sign(checkpoint_text, timestamp)

    def countersign(self, signed_checkpoint: bytes, *, timestamp: int | None = None) -> bytes:
        """Add this witness's cosignature to a signed checkpoint, keeping its other signatures.

        The caller has verified the log's signature (and the consistency proof) before cosigning.
        """
        return self._countersign(signed_checkpoint, timestamp)


def cosignature_message(checkpoint_text: bytes, timestamp: int) -> bytes:
    """What a v1 cosignature signs (tlog-cosignature "Ed25519 signed message")."""
    header = f"{COSIGNATURE_HEADER}{COSIGNATURE_TIME_PREFIX}{timestamp}\n"
    return header.encode("ascii") + checkpoint_text


# --- notes --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Note:
    """An opened note: its text and the names of the given keys whose signatures verified.

    `cosigned_at` holds, for each verified cosignature, the POSIX time the witness stated.
    """

    text: str
    signatures: tuple[str, ...]
    cosigned_at: Mapping[str, int] = field(default_factory=dict, compare=False, hash=False)


class _SignatureLine(NamedTuple):
    name: str
    key_id: bytes
    signature: bytes
    text: str  # the whole line, newline included


def _text_bytes(text: str | bytes) -> bytes:
    if isinstance(text, bytes):
        return text
    if not isinstance(text, str):
        raise InvalidArgument("the note text must be text", field="text")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidArgument("the note text is not valid UTF-8", field="text") from e


def _check_encoding(data: bytes, *, field_name: str) -> str:
    """Check a note text or whole note: size, UTF-8, control characters (signed-note "Format")."""
    if len(data) > MAX_NOTE_BYTES:
        raise InvalidArgument(f"longer than {MAX_NOTE_BYTES} bytes", field=field_name)
    try:
        decoded = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidArgument("not valid UTF-8", field=field_name) from e
    if _has_control_character(decoded):
        raise InvalidArgument(
            "holds an ASCII control character other than newline", field=field_name
        )
    return decoded


def _check_text(data: bytes) -> None:
    """Check a text to sign: as a note, and ending in a newline (signed-note "Format")."""
    decoded = _check_encoding(data, field_name="text")
    if not decoded.endswith("\n"):
        raise InvalidArgument("a note text must end with a newline", field="text")
    if decoded.count("\n") > MAX_TEXT_LINES:
        raise InvalidArgument(f"more than {MAX_TEXT_LINES} lines", field="text")


def _format_signature_line(name: str, raw: bytes) -> str:
    return f"{SIGNATURE_LINE_PREFIX}{name} {_b64encode(raw)}\n"


def _split_note(data: bytes) -> tuple[bytes, list[_SignatureLine]]:
    """Split a signed note into its text and its signature lines, checking only their syntax."""
    if not isinstance(data, bytes | bytearray):
        raise InvalidArgument("a signed note must be bytes", field="note")
    data = bytes(data)
    _check_encoding(data, field_name="note")
    split = data.rfind(TEXT_SIGNATURES_SEPARATOR)
    if split < 0:
        raise InvalidArgument(
            "no blank line separates the text from the signatures", field="note.signatures"
        )
    text, block = data[: split + 1], data[split + 2 :]
    if text.count(b"\n") > MAX_TEXT_LINES:
        raise InvalidArgument(f"more than {MAX_TEXT_LINES} lines", field="note.text")
    if not block or not block.endswith(b"\n"):
        raise InvalidArgument(
            "the signatures must be one or more lines, each ending in a newline",
            field="note.signatures",
        )
    lines: list[_SignatureLine] = []
    # split on newline only: str.splitlines would also split on U+2028 and friends
    for number, raw_line in enumerate(block.decode("utf-8")[:-1].split("\n"), 1):
        if len(lines) >= MAX_SIGNATURES:
            raise InvalidArgument(f"more than {MAX_SIGNATURES} signatures", field="note.signatures")
        lines.append(_parse_signature_line(raw_line + "\n", number))
    return text, lines


def _parse_signature_line(line: str, number: int) -> _SignatureLine:
    """One "— <name> base64(key ID || signature)\\n" line (signed-note "Signatures")."""
    where = f"signature line {number}"
    if not line.endswith("\n") or not line.startswith(SIGNATURE_LINE_PREFIX):
        raise InvalidArgument(
            f"{where} must be an em dash, a space, a key name, a space and base64",
            field="note.signatures",
        )
    name, space, encoded = line[len(SIGNATURE_LINE_PREFIX) : -1].partition(" ")
    if not space or not is_valid_key_name(name):
        raise InvalidArgument(f"{where} has no valid key name", field="note.signatures")
    raw = _b64decode_canonical(encoded)
    if raw is None or len(raw) <= KEY_ID_SIZE:
        raise InvalidArgument(
            f"{where} ({name}) is not standard base64 of a key ID and a signature",
            field="note.signatures",
        )
    return _SignatureLine(name, raw[:KEY_ID_SIZE], raw[KEY_ID_SIZE:], line)


def open_note(data: bytes, verifiers: Iterable[NoteVerifier | CosignatureVerifier]) -> Note:
    """Parse a signed note and verify it against the given keys (signed-note "Signatures").

    A signature from a given key (same name and key ID) must verify, or the note is refused; a
    signature from any other key is ignored; a note no given key signed is refused. Repeated
    signatures by one key count once, as in golang.org/x/mod/sumdb/note.
    """
    known: dict[tuple[str, bytes], NoteVerifier | CosignatureVerifier] = {}
    for verifier in verifiers:
        if not isinstance(verifier, NoteVerifier | CosignatureVerifier):
            raise InvalidArgument(
                "a verifier must be a note or cosignature verifier", field="verifiers"
            )
        ident = (verifier.name, verifier.key_id)
        other = known.setdefault(ident, verifier)
        if other.verifier_key != verifier.verifier_key:
            raise InvalidArgument(
                f"two different keys share the name and key ID {verifier.name}+"
                f"{verifier.key_id.hex()}",
                field="verifiers",
            )
    text, lines = _split_note(data)
    verified: list[str] = []
    cosigned_at: dict[str, int] = {}
    seen: set[tuple[str, bytes]] = set()
    unknown = 0
    for line in lines:
        ident = (line.name, line.key_id)
        found = known.get(ident)
        if found is None:
            unknown += 1  # signed-note: verifiers MUST ignore signatures from unknown keys
            continue
        if ident in seen:
            continue
        seen.add(ident)
        if not found.verify(text, line.signature):
            raise Unauthenticated(
                f"the signature of key {line.name}+{line.key_id.hex()} does not verify",
                field="note.signatures",
            )
        verified.append(line.name)
        if isinstance(found, CosignatureVerifier):
            stamp = line.signature[:COSIGNATURE_TIMESTAMP_SIZE]
            cosigned_at[line.name] = int.from_bytes(stamp, "big")
    if not verified:
        raise Unauthenticated(
            f"the note is signed by none of the trusted keys ({unknown} signature(s) from "
            "other keys ignored)",
            field="note.signatures",
        )
    return Note(text=text.decode("utf-8"), signatures=tuple(verified), cosigned_at=cosigned_at)


# --- checkpoints --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A log's tree head: the text of a checkpoint note (tlog-checkpoint "Note text")."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.origin, str) or not self.origin:
            raise InvalidArgument("the origin line must be non-empty", field="checkpoint.origin")
        if "\n" in self.origin or _has_control_character(self.origin):
            raise InvalidArgument(
                "the origin must not hold newlines or control characters",
                field="checkpoint.origin",
            )
        if isinstance(self.size, bool) or not isinstance(self.size, int):
            raise InvalidArgument("the tree size must be an integer", field="checkpoint.size")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise InvalidArgument(
                f"the tree size must be between 0 and {MAX_TREE_SIZE}", field="checkpoint.size"
            )
        if (
            not isinstance(self.root_hash, bytes)
            or len(self.root_hash) != CHECKPOINT_ROOT_HASH_SIZE
        ):
            raise InvalidArgument(
                f"the root hash must be {CHECKPOINT_ROOT_HASH_SIZE} bytes",
                field="checkpoint.root_hash",
            )
        if not isinstance(self.extensions, tuple):
            raise InvalidArgument(
                "the extension lines must be a tuple", field="checkpoint.extensions"
            )
        for line in self.extensions:
            if not isinstance(line, str) or not line:
                raise InvalidArgument(
                    "extension lines must be non-empty", field="checkpoint.extensions"
                )
            if "\n" in line or _has_control_character(line):
                raise InvalidArgument(
                    "extension lines must not hold newlines or control characters",
                    field="checkpoint.extensions",
                )
        if len(self.extensions) + CHECKPOINT_MIN_LINES > MAX_TEXT_LINES:
            raise InvalidArgument(
                f"more than {MAX_TEXT_LINES} lines", field="checkpoint.extensions"
            )

    def body(self) -> str:
        """The note text: origin, size, base64 root hash and extension lines, each ending in \\n."""
        lines = (self.origin, str(self.size), _b64encode(self.root_hash), *self.extensions)
        return "".join(f"{line}\n" for line in lines)


def parse_checkpoint(text: str) -> Checkpoint:
    """Parse a checkpoint body (tlog-checkpoint "Note text"), refusing anything malformed."""
    if not isinstance(text, str):
        raise InvalidArgument("a checkpoint must be text", field="checkpoint")
    if not text.endswith("\n"):
        raise InvalidArgument("a checkpoint must end with a newline", field="checkpoint")
    lines = text[:-1].split("\n")
    if len(lines) < CHECKPOINT_MIN_LINES:
        raise InvalidArgument(
            "a checkpoint has an origin, a tree size and a root hash line", field="checkpoint"
        )
    origin, size_text, root_text, *extensions = lines
    if not _CANONICAL_DECIMAL.fullmatch(size_text):
        raise InvalidArgument(
            "the tree size must be a decimal number without sign or leading zeros",
            field="checkpoint.size",
        )
    root = _b64decode_canonical(root_text)
    if root is None or len(root) != CHECKPOINT_ROOT_HASH_SIZE:
        raise InvalidArgument(
            f"the root hash must be standard base64 of {CHECKPOINT_ROOT_HASH_SIZE} bytes",
            field="checkpoint.root_hash",
        )
    return Checkpoint(
        origin=origin, size=int(size_text), root_hash=root, extensions=tuple(extensions)
    )

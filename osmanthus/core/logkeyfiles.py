"""Reads and writes the key files of transparency logs and witnesses (log.key, witness.key, .pub).

A log's note signing key and a witness's cosigning key are each one line of text in the format of
golang.org/x/mod/sumdb/note (osmanthus.core.signednote): the private file holds the signer key
text ("PRIVATE+KEY+<name>+<key ID>+...", mode 0600), the public file the verifier key text (mode
0644). `certs` writes them (certs/logkeys.py); the node, the coordinator and witnesses read them
here, checking that the key is named as the peer's log or witness must be.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Final, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from osmanthus.core.errors import ConfigError, InvalidArgument
from osmanthus.core.files import write_atomically
from osmanthus.core.signednote import (
    CosignatureSigner,
    CosignatureVerifier,
    NoteSigner,
    NoteVerifier,
)

PRIVATE_MODE: Final = 0o600
PUBLIC_MODE: Final = 0o644
#: a key file holds one key text of a few hundred bytes; anything larger is not a key file
MAX_KEY_FILE_BYTES: Final = 4096

_S = TypeVar("_S", NoteSigner, CosignatureSigner)
_V = TypeVar("_V", NoteVerifier, CosignatureVerifier)


def _read_text(path: Path, *, what: str, field: str) -> tuple[str, int]:
    """The file's one line of text and its mode; ConfigError naming the file if unusable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(f"{what} file {path} does not exist", field=field) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file {path}: {exc.strerror}", field=field) from None
    try:
        with os.fdopen(fd, "rb") as handle:
            mode = stat.S_IMODE(os.fstat(handle.fileno()).st_mode)
            data = handle.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file {path}: {exc.strerror}", field=field) from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise ConfigError(f"{path} is not a {what} file: it is too large", field=field)
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a {what} file: not ASCII text", field=field) from None
    return text, mode


def read_signer(kind: type[_S], path: Path, *, expected_name: str | None, field: str) -> _S:
    """The signer key in `path` (a NoteSigner or CosignatureSigner), named `expected_name`.

    A file other users may read (mode & 0o077) is refused, naming its mode and the chmod to
    run: whoever can read a log key can sign a rewritten history as the log, whoever can read a
    witness key can cosign a fork. Messages never quote the file's content (a secret).
    """
    what = "log signing key" if kind is NoteSigner else "witness key"
    text, mode = _read_text(path, what=what, field=field)
    if mode & 0o077:
        who = "a rewritten history as the log" if kind is NoteSigner else "forks as the witness"
        raise ConfigError(
            f"{path}: mode {mode:04o} lets other users read the {what}; whoever reads it can "
            f"sign {who}. It must be {PRIVATE_MODE:04o}: check who has read it (replace the "
            f"key if anyone may have), then run: chmod 600 {path}",
            field=field,
        )
    try:
        signer = kind.from_key_text(text)
    except InvalidArgument as exc:
        raise ConfigError(f"{path} is not a {what} file: {exc.message}", field=field) from None
    if expected_name is not None and signer.name != expected_name:
        raise ConfigError(
            f"{path} holds the key of {signer.name!r}, not of {expected_name!r}: each log signs "
            "with a key named after its origin, each witness with one named <peer>/witness",
            field=field,
        )
    return signer


def read_verifier(kind: type[_V], path: Path, *, field: str) -> _V:
    """The verifier key text in `path` (a .pub file)."""
    what = "log public key" if kind is NoteVerifier else "witness public key"
    text, _ = _read_text(path, what=what, field=field)
    try:
        return kind.from_key_text(text)
    except InvalidArgument as exc:
        raise ConfigError(f"{path} is not a {what} file: {exc.message}", field=field) from None


def load_or_create_signer(
    kind: type[_S], private: Path, public: Path, *, name: str, field: str
) -> tuple[_S, bool]:
    """(the signer in `private`, whether it was made now): kept if it exists (its .pub written
    again if missing, and checked if present), made if neither file exists.

    A .pub without its private key is refused: whatever was signed with the lost key verifies
    only against that .pub, so the key must be restored from backup, not replaced silently.
    """
    if private.exists():
        signer = read_signer(kind, private, expected_name=name, field=field)
        if public.exists():
            published, _ = _read_text(public, what="public key", field=field)
            if published != signer.verifier_key:
                raise ConfigError(
                    f"{public} is not the public half of {private}: restore the matching pair "
                    "from backup (or remove the .pub to write it again from the key)",
                    field=field,
                )
        else:
            write_atomically(
                public, (signer.verifier_key + "\n").encode("ascii"), mode=PUBLIC_MODE, field=field
            )
        return signer, False
    if public.exists():
        raise ConfigError(
            f"{private} is missing but {public} exists: restore the key from backup. A new key "
            f"would leave everything signed with the old one unverifiable against {public.name}; "
            f"to replace the pair knowingly, remove {public} first",
            field=field,
        )
    signer = kind(name=name, private_key=Ed25519PrivateKey.generate())
    private.parent.mkdir(parents=True, exist_ok=True)
    # the private key first, linked into place (never over an existing file): a crash between
    # the two leaves a key without its .pub, which the next run writes again
    write_atomically(
        private,
        (signer.signer_key_text() + "\n").encode("ascii"),
        mode=PRIVATE_MODE,
        overwrite=False,
        field=field,
    )
    write_atomically(
        public, (signer.verifier_key + "\n").encode("ascii"), mode=PUBLIC_MODE, field=field
    )
    return signer, True

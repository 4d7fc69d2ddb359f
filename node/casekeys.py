"""The keys of a node's cases: the attachments' keys at rest and the case key cases are sealed to.

They live in the node's state directory, each created when first needed (files 0600, written
whole: a temporary file, fsync, then a hard link into place, so a crash never leaves a short
key file behind and two starts never make two keys):

- `cases.key` (32 bytes): the key-wrapping key. Each case with attachments has its own random
  AES-256-GCM data key, wrapped under `cases.key` in `case-keys/<case id>.key` (a directory
  0700), outside the database. The attachments are encrypted under their case's data key (NIST
  SP 800-38D; a random 96-bit nonce per attachment, AAD = a domain, the case id and the
  attachment's index, so a ciphertext moved to another case or position does not decrypt).
  Deleting a case's attachments at the end of the retention period deletes its key file
  (crypto-shredding): the ciphertext DuckDB may keep in freed blocks, or a backup of the
  database, no longer decrypts under anything the node keeps;
- `case-seal.key` (32 bytes): the node's X25519 case key (RFC 7748). Its public half is
  published as `case_key` in every part of a subject's file this node seals, and the portal
  seals each case to it (osmanthus.core.cases.seal_case), so the coordinator forwards cases
  unread.
"""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from osmanthus.core.errors import ConfigError
from osmanthus.core.files import private_directory, sync_directory, write_atomically

CASES_KEY_FILE: Final = "cases.key"
CASE_SEAL_KEY_FILE: Final = "case-seal.key"
#: the directory of the cases' own data keys, one file `<case id>.key` per case
CASE_KEYS_DIR: Final = "case-keys"
_CASE_KEY_SUFFIX: Final = ".key"
KEY_BYTES: Final = 32
#: AES-GCM's recommended IV length (NIST SP 800-38D §8.2.2: 96 bits, drawn at random; far
#: fewer than 2^32 attachments are ever encrypted under one key)
GCM_NONCE_BYTES: Final = 12
#: domain separation of the attachments' AAD
ATTACHMENT_AAD_DOMAIN: Final = b"osmanthus-case-attachment/v1"
#: domain separation of a wrapped data key's AAD (then the case id)
CASE_KEY_AAD_DOMAIN: Final = b"osmanthus-case-key/v1"
#: a wrapped data key: nonce, the key encrypted, the GCM tag
_WRAPPED_BYTES: Final = GCM_NONCE_BYTES + KEY_BYTES + 16
_FILE_MODE: Final = 0o600


def load_or_create_key(path: Path, *, what: str) -> bytes:
    """The 32 bytes in `path`, created at random (mode 0600) when the file does not exist;
    ConfigError naming the file when it is the wrong size or others may read it.

    A new key is written whole to a temporary file, synced, and hard-linked into place
    (osmanthus.core.files.write_atomically without overwrite): a crash leaves either no key
    file or a whole one, and of two processes starting at once one writes the key and the
    other reads it."""
    if path.exists():
        return _read_key(path, what=what)
    key = secrets.token_bytes(KEY_BYTES)
    try:
        write_atomically(path, key, mode=_FILE_MODE, overwrite=False, field="state_dir")
    except ConfigError:
        if path.exists():  # another process made it meanwhile: use that one
            return _read_key(path, what=what)
        raise
    return key


def _read_key(path: Path, *, what: str) -> bytes:
    info = path.stat()
    if info.st_mode & 0o077:
        raise ConfigError(
            f"{path}: mode {info.st_mode & 0o777:04o} lets other users read {what}; it must be "
            f"0600 (check who has read it, then run: chmod 600 {path})"
        )
    data = path.read_bytes()
    if len(data) != KEY_BYTES:
        raise ConfigError(
            f"{path}: {what} holds {len(data)} bytes, expected {KEY_BYTES}; restore it from the "
            "backup (without it the cases it protects cannot be read)"
        )
    return data


def case_seal_key(state_dir: Path) -> X25519PrivateKey:
    """The node's X25519 case key (created on first start)."""
    raw = load_or_create_key(state_dir / CASE_SEAL_KEY_FILE, what="the case key")
    return X25519PrivateKey.from_private_bytes(raw)


def case_key_text(private_key: X25519PrivateKey) -> str:
    """The public half as a subject-file part publishes it: raw, base64url without padding."""
    raw = private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class AttachmentCipher:
    """AES-256-GCM for attachments at rest (NIST SP 800-38D), bound to case and position."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ConfigError(f"the attachments key must be {KEY_BYTES} bytes, got {len(key)}")
        self._aead = AESGCM(key)

    @staticmethod
    def _aad(case_id: str, index: int) -> bytes:
        return b"\x00".join([ATTACHMENT_AAD_DOMAIN, case_id.encode("ascii"), str(index).encode()])

    def seal(self, case_id: str, index: int, content: bytes) -> bytes:
        nonce = secrets.token_bytes(GCM_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, content, self._aad(case_id, index))

    def open(self, case_id: str, index: int, sealed: bytes) -> bytes:
        try:
            return self._aead.decrypt(
                sealed[:GCM_NONCE_BYTES], sealed[GCM_NONCE_BYTES:], self._aad(case_id, index)
            )
        except (InvalidTag, ValueError):
            raise ConfigError(
                f"attachment {index} of case {case_id} does not decrypt under its case's key: "
                "the key file or the database was replaced or damaged; restore both from the "
                "same backup"
            ) from None


class CaseKeyring:
    """Each case's own data key (AES-256-GCM), wrapped under `cases.key`, one file per case
    in `case-keys/` (the module docstring says why: deleting the file shreds the case)."""

    def __init__(self, directory: Path, *, wrapping_key: bytes) -> None:
        if len(wrapping_key) != KEY_BYTES:
            raise ConfigError(f"{CASES_KEY_FILE} must be {KEY_BYTES} bytes")
        self.directory = directory
        self._wrap = AESGCM(wrapping_key)

    @classmethod
    def open(cls, state_dir: Path) -> CaseKeyring:
        """The keyring in `state_dir`: `cases.key` and `case-keys/`, created on first start."""
        wrapping_key = load_or_create_key(
            state_dir / CASES_KEY_FILE, what="the key the cases' keys are wrapped under"
        )
        directory = state_dir / CASE_KEYS_DIR
        private_directory(directory, what="the cases' attachment keys")
        return cls(directory, wrapping_key=wrapping_key)

    def path(self, case_id: str) -> Path:
        return self.directory / (case_id + _CASE_KEY_SUFFIX)

    @staticmethod
    def _aad(case_id: str) -> bytes:
        return CASE_KEY_AAD_DOMAIN + b"\x00" + case_id.encode("ascii")

    def create(self, case_id: str) -> AttachmentCipher:
        """A new data key for `case_id`, written (wrapped) and synced before it is used; the
        caller removes it (`shred`) if the case is not stored after all."""
        key = secrets.token_bytes(KEY_BYTES)
        nonce = secrets.token_bytes(GCM_NONCE_BYTES)
        wrapped = nonce + self._wrap.encrypt(nonce, key, self._aad(case_id))
        write_atomically(
            self.path(case_id), wrapped, mode=_FILE_MODE, overwrite=False, field="state_dir"
        )
        return AttachmentCipher(key)

    def cipher(self, case_id: str) -> AttachmentCipher:
        """The data key of `case_id`; ConfigError when its file is gone or damaged."""
        path = self.path(case_id)
        try:
            wrapped = path.read_bytes()
        except FileNotFoundError:
            raise ConfigError(
                f"{path}: the key of case {case_id}'s attachments is missing; restore the "
                f"state directory's {CASE_KEYS_DIR}/ and {CASES_KEY_FILE} from the backup of "
                "the case store"
            ) from None
        try:
            if len(wrapped) != _WRAPPED_BYTES:
                raise ValueError
            return AttachmentCipher(
                self._wrap.decrypt(
                    wrapped[:GCM_NONCE_BYTES], wrapped[GCM_NONCE_BYTES:], self._aad(case_id)
                )
            )
        except (InvalidTag, ValueError):
            raise ConfigError(
                f"{path}: the key of case {case_id}'s attachments does not unwrap under "
                f"{CASES_KEY_FILE}: one of them was replaced or damaged; restore both from the "
                "same backup"
            ) from None

    def shred(self, case_id: str) -> bool:
        """Delete the data key of `case_id` (overwritten first, then unlinked, the directory
        synced); whether there was one. What it encrypted no longer decrypts."""
        path = self.path(case_id)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            # where the file system writes in place this replaces the key's bytes on disk;
            # on copy-on-write file systems and SSDs only the unlink below is certain
            os.write(fd, bytes(os.fstat(fd).st_size))
            os.fsync(fd)
        finally:
            os.close(fd)
        path.unlink(missing_ok=True)
        sync_directory(self.directory, field="state_dir")
        return True

    def case_ids(self) -> set[str]:
        """The cases that have a key file; leftover temporary files are removed."""
        found: set[str] = set()
        for entry in self.directory.iterdir():
            if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                entry.unlink(missing_ok=True)  # a write that a crash interrupted
            elif entry.name.endswith(_CASE_KEY_SUFFIX):
                found.add(entry.name[: -len(_CASE_KEY_SUFFIX)])
        return found

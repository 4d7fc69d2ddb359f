"""The requester's Paillier key pair: generated once, stored owner-only, loaded on later runs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from osmanthus.core.crypto import DEFAULT_KEY_BITS, PrivateKey, PublicKey, generate_keypair
from osmanthus.core.errors import ConfigError
from osmanthus.core.types import KeyFingerprint


@dataclass(frozen=True)
class RequesterKeys:
    public: PublicKey
    private: PrivateKey

    @property
    def fingerprint(self) -> KeyFingerprint:
        return self.public.fingerprint


def load_or_create_keys(path: Path, *, bits: int = DEFAULT_KEY_BITS) -> RequesterKeys:
    """Load the key pair at `path`, or generate and store one there (mode 0600)."""
    if path.exists():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise ConfigError(
                f"{path} is readable by others (mode {mode:o}); run 'chmod 600 {path}'",
                field="key_path",
            )
        private = PrivateKey.from_json(path.read_text(encoding="utf-8"))
        return RequesterKeys(private.public_key, private)
    public, private = generate_keypair(bits=bits)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    # a leftover or planted .tmp (perhaps a symlink) must not decide the new file's mode or target
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(private.to_json())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return RequesterKeys(public, private)

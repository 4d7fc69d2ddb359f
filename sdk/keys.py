"""The requester's Paillier key pair: generated once, stored owner-only, loaded on later runs."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from osmanthus.core.crypto import DEFAULT_KEY_BITS, PrivateKey, PublicKey, generate_keypair
from osmanthus.core.errors import ConfigError
from osmanthus.core.files import write_atomically
from osmanthus.core.keyproof import prove_modulus
from osmanthus.core.types import KeyFingerprint


@dataclass(frozen=True)
class RequesterKeys:
    public: PublicKey
    private: PrivateKey

    @property
    def fingerprint(self) -> KeyFingerprint:
        return self.public.fingerprint

    @cached_property
    def modulus_proof(self) -> bytes:
        """The proof that the key is well formed, which RegisterKey requires.

        Made on first use and kept with the keys for their life in this process: ~0.1 s at
        2048 bits, once per process and key, is not worth a second secret-adjacent file. A key
        made before the proof existed may not admit one: a CryptoError then says to make a
        new key pair.
        """
        return prove_modulus(self.private)


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
    # never over a key that appeared meanwhile: that one may be registered already
    write_atomically(
        path, private.to_json().encode("utf-8"), mode=0o600, overwrite=False, field="key_path"
    )
    return RequesterKeys(public, private)

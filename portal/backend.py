"""What the portal asks the federation, as the registered requester device it is, and its keys.

`SubjectBackend` wraps an SDK `Client` (the device's mTLS certificate, Paillier key and token,
role kiosk or portal, purpose self_query) and the device's X25519 sealing key, which opens the
parts of a subject's file that each node sealed to it. The web app only ever calls it about the
subject of a session. `DeviceCredentials.load` reads a device's files from one directory.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from osmanthus.core.cases import CaseDraft, CaseReceipt
from osmanthus.core.catalogue import Catalogue, load_catalogue
from osmanthus.core.errors import ConfigError, PermissionDenied
from osmanthus.core.files import write_atomically
from osmanthus.core.subjectseal import public_bytes, seal_fingerprint
from osmanthus.core.tls import COORDINATOR_SERVER_NAME, TlsFiles
from osmanthus.core.tokens import SEAL_FINGERPRINT_CLAIM
from osmanthus.core.types import (
    SELF_QUERY,
    SUBJECT_DEVICE_ROLES,
    DepartmentId,
    Role,
    Shape,
    SubjectKind,
)
from portal.session import Subject
from sdk import Client
from sdk.cases import file_case
from sdk.keys import RequesterKeys, load_or_create_keys
from sdk.results import ConsentRecord, EnterpriseScore, PersonScore
from sdk.subject import SubjectFileResult

__all__ = [
    "SELF_QUERY",
    "DeviceCredentials",
    "PortalBackend",
    "SubjectBackend",
    "create_sealing_key",
    "load_sealing_key",
]

#: the roles a portal device's token may have, as they appear in its claims
DEVICE_ROLES: Final = frozenset(role.value for role in SUBJECT_DEVICE_ROLES)

# a device directory's files (docs/portal.md, "Running the portal")
CA_FILE: Final = "ca.pem"
CERT_FILE: Final = "cert.pem"
KEY_FILE: Final = "key.pem"
TOKEN_FILE: Final = "token.jwt"
PAILLIER_FILE: Final = "paillier.key"
SEALING_KEY_FILE: Final = "sealing.key"


class PortalBackend(Protocol):
    """What the web app asks about a signed-in subject (SubjectBackend is the real one)."""

    @property
    def catalogue(self) -> Catalogue:
        """The departments and score model, for labels."""
        ...

    def summary(self, subject: Subject) -> PersonScore | EnterpriseScore:
        """The subject's score with its breakdown (purpose self_query, shape BREAKDOWN)."""
        ...

    def subject_file(self, subject: Subject) -> SubjectFileResult:
        """Every party's sealed part of the subject's file, opened."""
        ...

    def consents(self, subject: Subject) -> list[ConsentRecord]:
        """The consents the subject has granted."""
        ...

    def revoke(self, subject: Subject, consent_id: str) -> ConsentRecord:
        """Revoke one of the subject's consents."""
        ...

    def file_case(
        self,
        subject: Subject,
        *,
        department: str,
        draft: CaseDraft,
        case_key: bytes,
        nonce: bytes | None = None,
    ) -> CaseReceipt:
        """File an objection or a credit-repair application at `department`, sealed to its
        `case_key` (the raw X25519 key from that department's verified part of the subject's
        file); `nonce` makes a resubmitted form the same filing (the node answers it again)."""
        ...


class SubjectBackend:
    """The federation, as a kiosk or portal device asks it about one subject at a time."""

    def __init__(
        self,
        *,
        client: Client,
        sealing_key: X25519PrivateKey,
        catalogue: Catalogue | None = None,
    ) -> None:
        self._client = client
        self._sealing_key = sealing_key
        self._catalogue = catalogue or load_catalogue()

    @property
    def catalogue(self) -> Catalogue:
        return self._catalogue

    def summary(self, subject: Subject) -> PersonScore | EnterpriseScore:
        if subject.kind is SubjectKind.PERSON:
            return self._client.person_score(subject.id, purpose=SELF_QUERY, shape=Shape.BREAKDOWN)
        return self._client.enterprise_score(subject.id, purpose=SELF_QUERY, shape=Shape.BREAKDOWN)

    def subject_file(self, subject: Subject) -> SubjectFileResult:
        return self._client.subject_file(
            subject_kind=subject.kind, subject_id=subject.id, sealing_key=self._sealing_key
        )

    def consents(self, subject: Subject) -> list[ConsentRecord]:
        records = self._client.list_consents(subject_id=subject.id)
        # the coordinator filters by subject already; a record about anyone else is a fault
        # on its side and must not reach this subject's screen
        foreign = [r for r in records if r.subject_id != subject.id]
        if foreign:
            raise PermissionDenied(
                "the coordinator answered consents of another subject; none are shown",
                field="subject_id",
            )
        return records

    def revoke(self, subject: Subject, consent_id: str) -> ConsentRecord:
        # the coordinator checks the consent is this subject's (RevokeConsentRequest.subject_id)
        record = self._client.revoke_consent(consent_id, subject_id=subject.id)
        if record.subject_id != subject.id:
            raise PermissionDenied("the consent is not this subject's", field="consent_id")
        return record

    def file_case(
        self,
        subject: Subject,
        *,
        department: str,
        draft: CaseDraft,
        case_key: bytes,
        nonce: bytes | None = None,
    ) -> CaseReceipt:
        receipt = file_case(
            self._client,
            subject_kind=subject.kind,
            subject_id=subject.id,
            department=DepartmentId(department),
            draft=draft,
            case_key=case_key,
            # the device's sealing key (the token's seal_fp): the node files only what the
            # portal proves it sealed, not a case the coordinator made with the portal's token
            sender_key=self._sealing_key,
            nonce=nonce,
        )
        # the node names the department it filed at; another one is a fault on the way
        if receipt.department != department:
            raise PermissionDenied(
                f"the receipt names department {receipt.department!r}, not {department!r}",
                field="department",
            )
        return receipt

    def close(self) -> None:
        """Close the channel to the coordinator."""
        self._client.close()


# --- the device's files ---------------------------------------------------------------------


def _check_private(path: Path, *, field: str) -> None:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist", field=field) from None
    if mode & 0o077:
        raise ConfigError(
            f"{path} is readable by others (mode {mode:04o}); run 'chmod 600 {path}'", field=field
        )


def create_sealing_key(path: Path) -> X25519PrivateKey:
    """Make a new X25519 sealing key and store it at `path` (PKCS #8 PEM, mode 0600); refuse to
    overwrite one (a token may already be bound to it)."""
    key = X25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, pem, mode=0o600, overwrite=False, field="sealing_key")
    return key


def load_sealing_key(path: Path) -> X25519PrivateKey:
    """Read the sealing key at `path`, refusing a file others can read or another key type."""
    _check_private(path, field="sealing_key")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path} is not a PEM private key: {exc}", field="sealing_key") from None
    if not isinstance(key, X25519PrivateKey):
        raise ConfigError(f"{path} holds a {type(key).__name__}, not X25519", field="sealing_key")
    return key


@dataclass(frozen=True)
class DeviceCredentials:
    """A kiosk's or the portal's credentials: mTLS files, token, Paillier and sealing keys."""

    tls: TlsFiles
    token: str
    paillier_keys: RequesterKeys
    sealing_key: X25519PrivateKey
    #: the token's `sub` (the device's requester name) and role
    device_id: str
    role: Role

    @classmethod
    def load(cls, directory: Path, *, ca: Path | None = None) -> DeviceCredentials:
        """Read a device directory: cert.pem, key.pem, token.jwt, paillier.key, sealing.key
        (all but cert.pem mode 0600) and ca.pem (or `ca`).

        The token must have role kiosk or portal and name this sealing key in `seal_fp`, and
        its key fingerprint must be the Paillier key's (the SDK checks that): a mismatch is a
        ConfigError now rather than a refusal from every node later.
        """
        tls = TlsFiles(
            ca=ca if ca is not None else directory / CA_FILE,
            cert=directory / CERT_FILE,
            key=directory / KEY_FILE,
        )
        for path, name in ((tls.ca, "ca"), (tls.cert, "cert")):
            if not path.is_file():
                raise ConfigError(f"{path} does not exist", field=name)
        _check_private(tls.key, field="key")
        token_path = directory / TOKEN_FILE
        _check_private(token_path, field="token")
        token = token_path.read_text(encoding="utf-8").strip()
        paillier_path = directory / PAILLIER_FILE
        if not paillier_path.exists():
            raise ConfigError(f"{paillier_path} does not exist", field="paillier_keys")
        keys = load_or_create_keys(paillier_path)
        sealing_key = load_sealing_key(directory / SEALING_KEY_FILE)
        device_id, role = check_device_token(token, sealing_key=sealing_key)
        return cls(tls, token, keys, sealing_key, device_id, role)

    def backend(
        self,
        *,
        target: str,
        server_name: str = COORDINATOR_SERVER_NAME,
        catalogue: Catalogue | None = None,
    ) -> SubjectBackend:
        """A SubjectBackend talking to the coordinator at `target` as this device."""
        catalogue = catalogue or load_catalogue()
        client = Client(
            target,
            tls=self.tls,
            token=self.token,
            keys=self.paillier_keys,
            server_name=server_name,
            catalogue=catalogue,
        )
        return SubjectBackend(client=client, sealing_key=self.sealing_key, catalogue=catalogue)


def check_device_token(token: str, *, sealing_key: X25519PrivateKey) -> tuple[str, Role]:
    """The device id and role of a kiosk/portal token, after checking its role, purposes and
    seal_fp against `sealing_key` (the signature is the federation's to check)."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise ConfigError(f"the token is not a JWT: {exc}", field="token") from None
    role = claims.get("role")
    if role not in DEVICE_ROLES:
        raise ConfigError(
            f"the token has role {role!r}; a portal device needs role 'kiosk' or 'portal'",
            field="token",
        )
    if claims.get("purposes") != [SELF_QUERY]:
        raise ConfigError(
            f"the token grants purposes {claims.get('purposes')!r}; a portal device's token "
            f"grants exactly [{SELF_QUERY!r}]",
            field="token",
        )
    expected = seal_fingerprint(public_bytes(sealing_key))
    if claims.get(SEAL_FINGERPRINT_CLAIM) != expected:
        raise ConfigError(
            f"the token's {SEAL_FINGERPRINT_CLAIM} does not name this sealing key "
            f"({expected[:16]}…); ask the platform for a token bound to it",
            field="token",
        )
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise ConfigError("the token names no requester (sub)", field="token")
    return sub, Role(role)

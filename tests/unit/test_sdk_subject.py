"""The SDK's reading of a subject's file: every part's signature checked against the platform
CA and its source, every part opened under its own context (the call's nonce included), the
answer's coverage checked, and any part that does not fit failing the whole file, naming its
source.

The attacks are played by a coordinator holding exactly what a coordinator holds: the request
(subject, query id it chose itself, the portal's public key and nonce), the parts it forwarded
before, and its own TLS key and certificate.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from certs import PeerRole, cert_paths, init_platform
from osmanthus.core.catalogue import Catalogue, load_catalogue
from osmanthus.core.errors import ConfigError, CryptoError, InvalidArgument
from osmanthus.core.subjectfile import COORDINATOR_SOURCE, SubjectFile
from osmanthus.core.subjectpart import PartSigner, load_trusted_cas, seal_part
from osmanthus.core.subjectseal import public_bytes
from osmanthus.core.tls import TlsFiles
from osmanthus.core.types import DepartmentId, DepartmentStatus, QueryId, SubjectKind
from osmanthus.core.wire.coordinator import SubjectFileOutcome, SubjectFileRequest
from osmanthus.core.wire.node import SealedPart
from sdk.subject import (
    MAX_PART_AGE,
    SubjectFileResult,
    file_request,
    max_response_bytes,
    open_parts,
)

PERSON = "11010519491231002X"
QUERY = QueryId("q_abcdefgh")
KEY = X25519PrivateKey.generate()
#: one request, one nonce: what every part of this module's answers is made for
REQUEST = file_request(subject_kind=SubjectKind.PERSON, subject_id=PERSON, sealing_key=KEY)


@pytest.fixture(scope="module")
def now() -> datetime:
    # the certificates were issued just now: "now" must lie within their validity
    return datetime.now(UTC)


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    # two departments serving persons: psb and tax
    return load_catalogue().restricted_to(["psb", "tax"])


def _signer(certs: Path, source: str) -> PartSigner:
    role = PeerRole.COORDINATOR if source == COORDINATOR_SOURCE else PeerRole.NODE
    return PartSigner.from_tls_files(
        TlsFiles.from_cert_paths(cert_paths(certs, role=role, name=source))
    )


@pytest.fixture(scope="module")
def signers(platform_certs: Path) -> dict[str, PartSigner]:
    return {s: _signer(platform_certs, s) for s in ("psb", "tax", "court", COORDINATOR_SOURCE)}


@pytest.fixture(scope="module")
def cas(platform_certs: Path) -> tuple[x509.Certificate, ...]:
    return load_trusted_cas(platform_certs / "ca.pem")


Part = Callable[..., SealedPart]
Opener = Callable[..., SubjectFileResult]


@pytest.fixture(scope="module")
def part(signers: dict[str, PartSigner], now: datetime) -> Part:
    def make(
        source: str,
        *,
        generated: datetime | None = None,
        subject: str = PERSON,
        signer: str | None = None,
        request: SubjectFileRequest = REQUEST,
    ) -> SealedPart:
        plain = SubjectFile(
            source=source,
            query_id=QUERY,
            subject_kind="person",
            subject_id=subject,
            as_of="2026-12-07",
            generated_at=(generated or now).isoformat().replace("+00:00", "Z"),
        )
        by = signers[signer or source]
        if signer is not None:
            # another party's key: made as if it were the source (seal_part refuses that)
            by = dataclasses.replace(by, source=source)
        return seal_part(
            subject_file=plain, recipient_key=request.recipient_key, nonce=request.nonce, signer=by
        )

    return make


def _outcome(*parts: SealedPart, missing: tuple[DepartmentStatus, ...] = ()) -> SubjectFileOutcome:
    return SubjectFileOutcome(query_id=QUERY, parts=parts, missing=missing, partial=bool(missing))


@pytest.fixture(scope="module")
def opened(catalogue: Catalogue, cas: tuple[x509.Certificate, ...], now: datetime) -> Opener:
    def open_(
        outcome: SubjectFileOutcome, request: SubjectFileRequest = REQUEST
    ) -> SubjectFileResult:
        return open_parts(
            outcome,
            request=request,
            sealing_key=KEY,
            catalogue=catalogue,
            trusted_cas=cas,
            now=now,
        )

    return open_


def test_a_whole_answer_opens_departments_first(part: Part, opened: Opener) -> None:
    result = opened(_outcome(part(COORDINATOR_SOURCE), part("tax"), part("psb")))
    assert [p.source for p in result.parts] == ["tax", "psb", COORDINATOR_SOURCE]
    assert result.coordinator.source == COORDINATOR_SOURCE
    assert not result.partial


def test_a_missing_department_with_a_reason_is_partial(part: Part, opened: Opener) -> None:
    gone = (DepartmentStatus(DepartmentId("psb"), "no answer within the 5 s deadline"),)
    result = opened(_outcome(part("tax"), part(COORDINATOR_SOURCE), missing=gone))
    assert result.partial and result.missing == gone


@pytest.mark.parametrize(
    ("parts", "missing", "partial", "expected"),
    [
        (("tax", COORDINATOR_SOURCE), (), False, "neither holds nor explains the part of 'psb'"),
        (("tax", "psb"), (), False, "no part of the coordinator's own"),
        (("tax", "psb", "court", COORDINATOR_SOURCE), (), False, "from 'court', which is not"),
        (("tax", "psb", COORDINATOR_SOURCE), ("psb",), True, "both answered and missing"),
        (("tax", COORDINATOR_SOURCE), ("psb",), False, "says it is whole"),
    ],
)
def test_an_answer_that_does_not_account_for_every_department_is_refused(
    part: Part,
    opened: Opener,
    parts: tuple[str, ...],
    missing: tuple[str, ...],
    partial: bool,
    expected: str,
) -> None:
    outcome = SubjectFileOutcome(
        query_id=QUERY,
        parts=tuple(part(s) for s in parts),
        missing=tuple(DepartmentStatus(DepartmentId(d), "down") for d in missing),
        partial=partial,
    )
    with pytest.raises(CryptoError, match=expected):
        opened(outcome)


def test_a_part_sealed_for_another_source_fails_naming_it(part: Part, opened: Opener) -> None:
    tax, psb = part("tax"), part("psb")
    relabelled = dataclasses.replace(psb, sealed=tax.sealed)
    with pytest.raises(CryptoError, match="the part from 'psb' cannot be used") as caught:
        opened(_outcome(tax, relabelled, part(COORDINATOR_SOURCE)))
    assert caught.value.field == "files[1]"
    # the whole of tax's part (signature, certificate and all) under psb's name: refused too
    with pytest.raises(CryptoError, match=r"the part from 'psb'.*names node 'tax'"):
        opened(_outcome(tax, dataclasses.replace(tax, source="psb"), part(COORDINATOR_SOURCE)))


def test_a_part_about_another_subject_fails(part: Part, opened: Opener) -> None:
    other = "11010519491231003X"
    with pytest.raises(CryptoError, match="'tax'"):
        opened(_outcome(part("tax", subject=other), part("psb"), part(COORDINATOR_SOURCE)))


def test_a_tampered_part_fails(part: Part, opened: Opener) -> None:
    tax = part("tax")
    flipped = dataclasses.replace(tax, sealed=tax.sealed[:-1] + bytes([tax.sealed[-1] ^ 1]))
    with pytest.raises(CryptoError, match=r"the part from 'tax'.*does not verify"):
        opened(_outcome(flipped, part("psb"), part(COORDINATOR_SOURCE)))


def test_an_old_answer_is_not_shown_as_todays(part: Part, opened: Opener, now: datetime) -> None:
    old = part("tax", generated=now - MAX_PART_AGE - timedelta(seconds=1))
    with pytest.raises(CryptoError, match="an old answer is not shown"):
        opened(_outcome(old, part("psb"), part(COORDINATOR_SOURCE)))


# --- the coordinator's attacks --------------------------------------------------------------------


def test_a_part_the_coordinator_fabricates_for_a_department_is_refused(
    part: Part, opened: Opener, signers: dict[str, PartSigner]
) -> None:
    # the coordinator knows the query id (it chose it), the subject, the portal's key and the
    # nonce (all in the request): it seals an empty file as "psb" to hide a bank's reads, and
    # signs it with the only key it has, its own
    fabricated = SubjectFile(
        source="psb",
        query_id=QUERY,
        subject_kind="person",
        subject_id=PERSON,
        as_of="2026-12-07",
        generated_at=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    )
    forged = seal_part(
        subject_file=fabricated,
        recipient_key=REQUEST.recipient_key,
        nonce=REQUEST.nonce,
        signer=dataclasses.replace(signers[COORDINATOR_SOURCE], source="psb"),
    )
    with pytest.raises(CryptoError, match=r"the part from 'psb'.*names coordinator") as caught:
        opened(_outcome(part("tax"), forged, part(COORDINATOR_SOURCE)))
    assert caught.value.field == "files[1]"
    # unsigned (as every part was before): refused
    bare = dataclasses.replace(forged, signature="", certificate=b"")
    with pytest.raises(CryptoError, match=r"the part from 'psb'.*no signer certificate"):
        opened(_outcome(part("tax"), bare, part(COORDINATOR_SOURCE)))
    # with psb's certificate attached but the coordinator's signature: does not verify
    borrowed = dataclasses.replace(forged, certificate=signers["psb"].certificate_pem)
    with pytest.raises(CryptoError, match=r"the part from 'psb'.*(another certificate|verify)"):
        opened(_outcome(part("tax"), borrowed, part(COORDINATOR_SOURCE)))


def test_a_part_signed_by_another_departments_node_is_refused(part: Part, opened: Opener) -> None:
    # a court node (or whoever holds its key) making psb's part
    by_court = part("psb", signer="court")
    with pytest.raises(CryptoError, match="names node 'court', not the node of 'psb'"):
        opened(_outcome(part("tax"), by_court, part(COORDINATOR_SOURCE)))
    # the coordinator's own part made by a node: refused the same way
    by_tax = part(COORDINATOR_SOURCE, signer="tax")
    with pytest.raises(CryptoError, match="names node 'tax', not the coordinator"):
        opened(_outcome(part("tax"), part("psb"), by_tax))


def test_a_genuine_part_replayed_into_a_new_call_is_refused(part: Part, opened: Opener) -> None:
    # a genuine answer to an earlier call; the coordinator reuses its query id (its choice)
    earlier = _outcome(part("tax"), part("psb"), part(COORDINATOR_SOURCE))
    opened(earlier)
    # the portal's next call carries a new nonce: the old parts answer it no longer, even
    # within MAX_PART_AGE and under the same query id
    again = file_request(subject_kind=SubjectKind.PERSON, subject_id=PERSON, sealing_key=KEY)
    assert again.nonce != REQUEST.nonce
    fresh_coordinator = part(COORDINATOR_SOURCE, request=again)
    stale = dataclasses.replace(earlier, parts=(*earlier.parts[:2], fresh_coordinator))
    with pytest.raises(CryptoError, match=r"the part from 'tax'.*does not verify") as caught:
        opened(stale, again)
    assert caught.value.field == "files[0]"


def test_a_certificate_from_another_ca_is_refused(
    part: Part, opened: Opener, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # a platform of the attacker's own, with a "psb" node certificate
    rogue = tmp_path_factory.mktemp("rogue-ca")
    init_platform(rogue, departments=["psb"], requesters=[])
    plain = SubjectFile(
        source="psb",
        query_id=QUERY,
        subject_kind="person",
        subject_id=PERSON,
        as_of="2026-12-07",
        generated_at=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    )
    forged = seal_part(
        subject_file=plain,
        recipient_key=REQUEST.recipient_key,
        nonce=REQUEST.nonce,
        signer=_signer(rogue, "psb"),
    )
    with pytest.raises(CryptoError, match="not issued by the platform CA"):
        opened(_outcome(part("tax"), forged, part(COORDINATOR_SOURCE)))


def test_an_expired_certificate_is_refused(
    part: Part,
    catalogue: Catalogue,
    cas: tuple[x509.Certificate, ...],
    signers: dict[str, PartSigner],
) -> None:
    cert = x509.load_pem_x509_certificate(signers["tax"].certificate_pem)
    later = cert.not_valid_after_utc + timedelta(days=1)
    outcome = _outcome(
        part("tax", generated=later), part("psb", generated=later),
        part(COORDINATOR_SOURCE, generated=later),
    )  # fmt: skip
    with pytest.raises(CryptoError, match=r"the part from 'tax'.*not now"):
        open_parts(
            outcome, request=REQUEST, sealing_key=KEY, catalogue=catalogue, trusted_cas=cas,
            now=later,
        )  # fmt: skip


def test_a_signature_with_another_algorithm_is_refused(part: Part, opened: Opener) -> None:
    tax = part("tax")
    header = base64.urlsafe_b64encode(
        json.dumps({"alg": "none", "b64": False, "crit": ["b64"], "typ": "x"}).encode()
    ).rstrip(b"=")
    unsigned = dataclasses.replace(tax, signature=header.decode() + "..")
    with pytest.raises(CryptoError, match="the part from 'tax'"):
        opened(_outcome(unsigned, part("psb"), part(COORDINATOR_SOURCE)))


def test_a_signer_signs_only_its_own_source(signers: dict[str, PartSigner]) -> None:
    plain = SubjectFile(
        source="psb", query_id=QUERY, subject_kind="person", subject_id=PERSON,
        as_of="2026-12-07", generated_at="2026-12-07T02:00:00Z",
    )  # fmt: skip
    with pytest.raises(InvalidArgument, match="cannot be signed by 'tax'"):
        seal_part(
            subject_file=plain, recipient_key=REQUEST.recipient_key, nonce=REQUEST.nonce,
            signer=signers["tax"],
        )  # fmt: skip


def test_the_request_is_checked_before_anything_is_sent() -> None:
    with pytest.raises(InvalidArgument) as caught:
        file_request(
            subject_kind=SubjectKind.PERSON, subject_id="110105194912310021", sealing_key=KEY
        )
    assert caught.value.field == "resident_id"
    with pytest.raises(ConfigError):
        file_request(
            subject_kind=SubjectKind.PERSON,
            subject_id=PERSON,
            sealing_key="a key",  # type: ignore[arg-type]
        )
    assert REQUEST.purpose == "self_query"
    assert REQUEST.recipient_key == public_bytes(KEY)
    assert len(REQUEST.nonce) == 32


def test_the_client_can_receive_every_departments_part() -> None:
    catalogue = load_catalogue()
    # gRPC's default limit is 4 MiB: far too small for one part per department
    assert max_response_bytes(catalogue) > (len(catalogue.departments) + 1) * 256 * 1024

"""The platform CA's CRL and the token issuer's deny list: what is written, what a server accepts.

The servers' side through a running federation is tests/integration/test_revocation.py; here
the files themselves, the checks on them and the commands that write them.
"""

from __future__ import annotations

import datetime
import json
import logging
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from certs import PeerRole, cert_paths, init_platform
from certs.revocation import (
    REVOCATIONS_FILE,
    parse_serial,
    publish_crl,
    revoke_certificate,
    revoked_entries,
)
from osmanthus.cli import main
from osmanthus.core import signing
from osmanthus.core.crl import (
    CRL_FILE,
    PeerRevocation,
    load_ca_certificate,
    open_revocation,
    verify_crl,
)
from osmanthus.core.denylist import (
    TokenDenial,
    deny_list_from_payload,
    deny_tokens,
    open_deny_list,
    reset_deny_list,
    seal_deny_list,
    write_deny_list,
)
from osmanthus.core.errors import ConfigError, InvalidArgument, Unauthenticated
from osmanthus.core.tokens import ReplayCache, TokenIssuer, TokenVerifier
from osmanthus.core.types import Role
from tests.waiting import wait_until

ISSUER = "osmanthus-platform"
FINGERPRINT = "ab" * 32


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    out = tmp_path / "ca"
    init_platform(out, departments=["tax"], requesters=["bank"])
    return out


def _crl(path: Path) -> x509.CertificateRevocationList:
    return x509.load_pem_x509_crl(path.read_bytes())


def _number(crl: x509.CertificateRevocationList) -> int:
    return int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)


def _bank_cert(ca: Path) -> Path:
    return cert_paths(ca, role=PeerRole.REQUESTER, name="bank").cert


# --- the CA's side --------------------------------------------------------------------------


def test_a_new_ca_publishes_an_empty_crl_and_keeps_its_record_private(ca: Path) -> None:
    crl = _crl(ca / CRL_FILE)
    assert _number(crl) == 1 and len(crl) == 0
    assert crl.is_signature_valid(load_ca_certificate(ca / "ca.pem").public_key())  # type: ignore[arg-type]
    assert stat.S_IMODE((ca / REVOCATIONS_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE((ca / CRL_FILE).stat().st_mode) == 0o644


def test_revoking_lists_the_serial_with_its_reason_in_a_crl_with_the_next_number(
    ca: Path,
) -> None:
    entry, published = revoke_certificate(ca, cert=_bank_cert(ca), reason="key_compromise")
    crl = _crl(ca / CRL_FILE)
    assert published.number == _number(crl) == 2
    [revoked] = list(crl)
    assert revoked.serial_number == entry.serial
    reason = revoked.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.key_compromise
    assert "CN=bank" in entry.subject
    # 'unspecified' is left out of the entry, as RFC 5280 §5.3.1 says
    other, _ = revoke_certificate(ca, serial=12345, force=True)
    unspecified = _crl(ca / CRL_FILE).get_revoked_certificate_by_serial_number(other.serial)
    assert unspecified is not None and len(unspecified.extensions) == 0


def test_a_serial_is_revoked_once_and_a_foreign_certificate_not_at_all(
    ca: Path, tmp_path: Path
) -> None:
    revoke_certificate(ca, cert=_bank_cert(ca))
    with pytest.raises(InvalidArgument, match="already revoked"):
        revoke_certificate(ca, cert=_bank_cert(ca), reason="superseded")
    other = tmp_path / "other"
    init_platform(other, departments=["tax"], requesters=["bank"])
    with pytest.raises(InvalidArgument, match="not issued by this CA"):
        revoke_certificate(ca, cert=_bank_cert(other))
    with pytest.raises(InvalidArgument, match="not a revocation reason"):
        revoke_certificate(ca, serial=7, reason="keyCompromise")
    assert len(revoked_entries(ca)) == 1


def test_the_crl_number_only_grows_even_from_a_record_restored_from_an_older_backup(
    ca: Path,
) -> None:
    old_record = (ca / REVOCATIONS_FILE).read_bytes()
    revoke_certificate(ca, cert=_bank_cert(ca))
    assert publish_crl(ca, days=7).number == 3
    (ca / REVOCATIONS_FILE).write_bytes(old_record)
    republished = publish_crl(ca)
    # servers hold number 3: a CRL numbered 2 would be ignored as a replay
    assert republished.number == 4


@pytest.mark.parametrize(
    ("text", "serial"),
    [
        ("serial=3F2A", 0x3F2A),  # as 'openssl x509 -noout -serial' prints it
        ("3F2A", 0x3F2A),
        ("0x3f2a", 0x3F2A),
        ("0X3F:2A", 0x3F2A),
        ("16170", 0x16170),  # hex, always: never read as decimal by a guess
        (" 0x01 ", 1),
    ],
)
def test_serials_are_read_in_hex_as_openssl_prints_them(text: str, serial: int) -> None:
    assert parse_serial(text) == serial


def test_a_decimal_serial_is_read_only_when_said() -> None:
    assert parse_serial("16170", decimal=True) == 16170
    assert parse_serial("serial=10", decimal=True) == 10
    with pytest.raises(InvalidArgument, match="in decimal"):
        parse_serial("3F2A", decimal=True)


@pytest.mark.parametrize(
    "text", ["", "0x", "zz", "-5", "0", f"0x{2**160:x}", "3f_2a", "+3f", "serial="]
)
def test_a_bad_serial_is_refused_by_name(text: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        parse_serial(text)
    assert refused.value.field == "serial"


def test_a_serial_this_ca_did_not_issue_is_refused_unless_forced(
    ca: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the mistake: the serial typed in decimal, or mistyped; it would revoke nothing and the
    # certificate meant would keep working
    serial = x509.load_pem_x509_certificate(_bank_cert(ca).read_bytes()).serial_number
    with pytest.raises(InvalidArgument, match="no certificate of this CA with serial") as refused:
        revoke_certificate(ca, serial=serial + 1)
    assert refused.value.field == "serial" and revoked_entries(ca) == ()
    common = ["certs", "revoke", "--ca-dir", str(ca)]
    assert main([*common, "--serial", str(serial)]) == 3  # its decimal digits read as hex
    assert "needs --decimal" in capsys.readouterr().err
    assert main([*common, "--serial", f"{serial + 1:x}"]) == 3
    assert "--force" in capsys.readouterr().err
    # as openssl prints it: found, and named in the record
    assert main([*common, "--serial", f"serial={serial:X}"]) == 0
    [entry] = revoked_entries(ca)
    assert entry.serial == serial and "CN=bank" in entry.subject
    assert main([*common, "--serial", "1234", "--decimal", "--force"]) == 0
    assert {e.serial for e in revoked_entries(ca)} == {serial, 1234}


# --- what a server accepts ------------------------------------------------------------------


def _signed_crl(
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    *,
    number: int | None = 5,
    this_update: datetime.datetime | None = None,
) -> bytes:
    now = this_update or datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer)
        .last_update(now)
        .next_update(now + datetime.timedelta(days=1))
    )
    if number is not None:
        builder = builder.add_extension(x509.CRLNumber(number), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _ca_key(ca: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key((ca / "ca.key").read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def test_a_server_refuses_a_crl_of_another_key_issuer_without_number_or_from_the_future(
    ca: Path,
) -> None:
    cert = load_ca_certificate(ca / "ca.pem")
    stranger = ec.generate_private_key(ec.SECP256R1())
    other_name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "another CA")])
    cases = {
        "signature does not verify": _signed_crl(stranger, cert.subject),
        "not by the platform CA": _signed_crl(_ca_key(ca), other_name),
        "no CRL number": _signed_crl(_ca_key(ca), cert.subject, number=None),
        "the clock": _signed_crl(
            _ca_key(ca),
            cert.subject,
            this_update=datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=2),
        ),
        "not an X.509 CRL": b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
    }
    for problem, data in cases.items():
        with pytest.raises(ConfigError, match=problem):
            verify_crl(data, ca=cert, origin="crl.pem")
    # DER is read as well as PEM
    der = x509.load_pem_x509_crl((ca / CRL_FILE).read_bytes()).public_bytes(
        serialization.Encoding.DER
    )
    assert verify_crl(der, ca=cert, origin="crl.der").number == 1


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _tlv(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _der_length(len(body)) + body


def _edited_and_signed(
    key: ec.EllipticCurvePrivateKey, der: bytes, old: bytes, new: bytes
) -> bytes:
    """The CRL `der` with `old` replaced by `new` in its signed part, signed again by `key`:
    content the CA signed that the parser cannot read (RFC 5280 §5.1: CertificateList)."""
    tbs = x509.load_der_x509_crl(der).tbs_certlist_bytes
    assert old in tbs
    tbs = tbs.replace(old, new)
    algorithm = _tlv(0x30, _tlv(0x06, bytes.fromhex("2a8648ce3d040302")))  # ecdsa-with-SHA256
    signature = key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    return _tlv(0x30, tbs + algorithm + _tlv(0x03, b"\x00" + signature))


def test_a_validly_signed_crl_the_parser_cannot_read_is_refused_not_fatal(
    ca: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # the parser reads extensions and entries only when asked: a bad reason code or a CRL
    # number of the wrong type raised ValueError past verify_crl, killing a server at start
    # and leaving the watcher's counters untouched
    key, cert = _ca_key(ca), load_ca_certificate(ca / "ca.pem")
    revoke_certificate(ca, cert=_bank_cert(ca), reason="key_compromise")
    der = x509.load_pem_x509_crl((ca / CRL_FILE).read_bytes()).public_bytes(
        serialization.Encoding.DER
    )
    number = _number(_crl(ca / CRL_FILE))
    bad_reason = _edited_and_signed(key, der, bytes.fromhex("0a0101"), bytes.fromhex("0a0163"))
    bad_number = _edited_and_signed(
        key, der, bytes.fromhex(f"040302010{number}"), bytes.fromhex("0403040100")
    )
    for data in (bad_reason, bad_number):
        with pytest.raises(ConfigError, match="not a CRL this server can read") as refused:
            verify_crl(data, ca=cert, origin="crl.der")
        assert refused.value.field == "crl"
    # at start: exit 3 with the message, not a traceback
    broken = tmp_path / "broken.der"
    broken.write_bytes(bad_reason)
    with pytest.raises(ConfigError, match="Unsupported reason code"):
        PeerRevocation.open(broken, ca_path=ca / "ca.pem")
    # while running: refused, counted and logged; the CRL in force stays
    revocation = PeerRevocation.open(ca / CRL_FILE, ca_path=ca / "ca.pem", interval_s=0.05)
    with caplog.at_level(logging.WARNING, logger="osmanthus.core.crl"):
        (ca / CRL_FILE).write_bytes(bad_number)
        status = revocation.check_now()
    assert (status.number, status.rejected) == (number, 1)
    assert "not a CRL this server can read" in caplog.text


def test_a_crl_dated_ahead_of_the_clock_is_looked_at_again_and_put_in_force_later(
    ca: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cert = load_ca_certificate(ca / "ca.pem")
    now = datetime.datetime.now(datetime.UTC)
    clock = [now]
    revocation = PeerRevocation(
        path=ca / CRL_FILE,
        ca=cert,
        crl=verify_crl((ca / CRL_FILE).read_bytes(), ca=cert, origin="crl.pem"),
        interval_s=0.05,
        clock=lambda: clock[0],
    )
    # a CRL from a CA machine whose clock is two hours ahead: refused now, right later
    ahead = _signed_crl(_ca_key(ca), cert.subject, this_update=now + datetime.timedelta(hours=2))
    with caplog.at_level(logging.WARNING, logger="osmanthus.core.crl"):
        (ca / CRL_FILE).write_bytes(ahead)
        assert revocation.check_now().rejected == 1
        assert revocation.check_now().rejected == 1  # looked at again: not counted again
        clock[0] = now + datetime.timedelta(hours=2)
        # the file is unchanged: only the retry offers it again
        wait_until(lambda: revocation.check_now().number == 5, what="the CRL put in force once due")
    assert revocation.status.rejected == 1
    assert sum("looked at again later" in r.getMessage() for r in caplog.records) == 1


def test_a_ca_bundle_is_refused_with_a_crl(ca: Path, tmp_path: Path) -> None:
    # the attack: a bundle of the platform CA and another; the CRL of one answered for both
    other = tmp_path / "other"
    init_platform(other, departments=["tax"], requesters=["bank"])
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes((ca / "ca.pem").read_bytes() + (other / "ca.pem").read_bytes())
    with pytest.raises(ConfigError, match="holds 2 certificates") as refused:
        PeerRevocation.open(ca / CRL_FILE, ca_path=bundle)
    assert refused.value.field == "ca"


def test_a_server_puts_a_newer_crl_in_force_and_logs_a_refused_one_once(
    ca: Path, caplog: pytest.LogCaptureFixture
) -> None:
    revocation = PeerRevocation.open(ca / CRL_FILE, ca_path=ca / "ca.pem", interval_s=0.05)
    old = (ca / CRL_FILE).read_bytes()
    entry, _ = revoke_certificate(ca, cert=_bank_cert(ca))
    assert revocation.check_now().number == 2
    in_force = (ca / CRL_FILE).read_bytes()
    with pytest.raises(Unauthenticated, match="revoked by the platform CA"):
        revocation.check_certificate_pem(_bank_cert(ca).read_bytes(), whose="bank")
    with caplog.at_level(logging.WARNING, logger="osmanthus.core.crl"):
        (ca / CRL_FILE).write_bytes(old)
        assert revocation.check_now().rejected == 1
        # the same content looked at again is not logged again
        assert revocation.check_now().rejected == 1
        (ca / CRL_FILE).unlink()
        revocation.check_now()
        revocation.check_now()
        # the CRL in force put back is no news, and no refusal
        (ca / CRL_FILE).write_bytes(in_force)
        status = revocation.check_now()
        assert (status.number, status.rejected, status.last_problem) == (2, 1, "")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert "not above the number in force (2)" in lines[0]
    assert "No such file" in lines[1] and "stays in force" in lines[1]
    assert revocation.revoked(entry.serial) is not None


def test_a_stale_crl_still_revokes_and_is_warned_about(
    ca: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cert = load_ca_certificate(ca / "ca.pem")
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=3)
    (ca / CRL_FILE).write_bytes(_signed_crl(_ca_key(ca), cert.subject, this_update=past))
    with caplog.at_level(logging.WARNING, logger="osmanthus.core.crl"):
        revocation = PeerRevocation.open(ca / CRL_FILE, ca_path=ca / "ca.pem")
    assert revocation.crl.number == 5
    assert any("was due for an update" in r.getMessage() for r in caplog.records)


# --- the deny list --------------------------------------------------------------------------


def _verifier(public: Ed25519PrivateKey, denial: TokenDenial | None) -> TokenVerifier:
    return TokenVerifier(
        public_key=public.public_key(), replay_cache=ReplayCache(), deny_list=denial
    )


def _token(key: Ed25519PrivateKey, requester: str, at: datetime.datetime) -> str:
    issuer = TokenIssuer(private_key=key, clock=lambda: at)
    return issuer.issue(
        requester=requester,
        role=Role.BANK,
        purposes=["loan_underwriting"],
        key_fingerprint=FINGERPRINT,
        ttl=datetime.timedelta(hours=1),
    )


def test_a_requester_cut_off_refuses_its_earlier_tokens_and_not_later_ones(
    tmp_path: Path,
) -> None:
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "deny.json"
    public = tmp_path / "issuer.pub"
    public.write_bytes(signing.public_pem(key.public_key()))
    write_deny_list(path, private_key=key, issuer=ISSUER)
    denial = TokenDenial.open(path, public_key_path=public, issuer=ISSUER, interval_s=0.05)
    verifier = _verifier(key, denial)
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    early = _token(key, "bank", now - datetime.timedelta(minutes=5))
    other = _token(key, "agency", now - datetime.timedelta(minutes=5))
    single = _token(key, "agency", now - datetime.timedelta(minutes=4))
    assert verifier.verify(early).requester == "bank"

    deny_tokens(
        path,
        private_key=key,
        issuer=ISSUER,
        requester="bank",
        issued_before=now - datetime.timedelta(minutes=1),
        reason="contract ended",
    )
    jti = verifier.verify(single).jti
    deny = deny_tokens(path, private_key=key, issuer=ISSUER, jti=jti, reason="leaked")
    assert denial.check_now().sequence == deny.sequence == 3

    with pytest.raises(Unauthenticated, match="contract ended"):
        verifier.verify(early)  # verified before: the cached signature does not bypass it
    with pytest.raises(Unauthenticated, match=f"token jti {jti}.*leaked"):
        verifier.verify(single)
    assert verifier.verify(other).requester == "agency"
    assert verifier.verify(_token(key, "bank", now)).requester == "bank"
    # a cut-off never moves back, whatever a later revocation says
    again = deny_tokens(
        path,
        private_key=key,
        issuer=ISSUER,
        requester="bank",
        issued_before=now - datetime.timedelta(days=1),
        reason="again",
    )
    assert again.requesters["bank"].issued_before == now - datetime.timedelta(minutes=1)


def test_a_deny_list_is_refused_when_forged_changed_foreign_or_malformed(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "deny.json"
    deny = deny_tokens(
        path, private_key=key, issuer=ISSUER, requester="bank", reason="r", create=True
    )
    data = path.read_bytes()
    with pytest.raises(ConfigError, match="not trusted here"):
        open_deny_list(
            data, public_key=Ed25519PrivateKey.generate().public_key(), issuer=ISSUER, origin="x"
        )
    changed = json.loads(data)
    changed["payload"]["requesters"] = []
    with pytest.raises(ConfigError, match="changed after it was signed"):
        open_deny_list(
            json.dumps(changed).encode(), public_key=key.public_key(), issuer=ISSUER, origin="x"
        )
    with pytest.raises(ConfigError, match="of issuer 'osmanthus-platform'"):
        open_deny_list(data, public_key=key.public_key(), issuer="another", origin="x")
    # the issuer's tools refuse to build on a list that does not verify
    with pytest.raises(ConfigError, match="not trusted here"):
        deny_tokens(
            path, private_key=Ed25519PrivateKey.generate(), issuer=ISSUER, jti="a" * 32, reason="r"
        )
    payload = deny.payload()
    for broken, field in (
        ({**payload, "sequence": 0}, "sequence"),
        ({**payload, "extra": 1}, "payload"),
        (
            {**payload, "requesters": [{**payload["requesters"][0], "requester": "Bank!"}]},
            "requesters[0].requester",
        ),
        (
            {
                **payload,
                "requesters": [
                    {**payload["requesters"][0], "issued_before": "2026-01-01T00:00:00"}
                ],
            },
            "requesters[0].issued_before",
        ),
        (
            {
                **payload,
                "tokens": [{"jti": "short", "reason": "r", "added_at": payload["issued_at"]}],
            },
            "tokens[0].jti",
        ),
    ):
        with pytest.raises(InvalidArgument) as refused:
            deny_list_from_payload(broken)
        assert refused.value.field == field
    # sealed by another key, it is still a well-formed list: only the signature tells
    assert seal_deny_list(deny, private_key=key) == data


def test_a_deny_list_is_never_started_again_at_a_lower_sequence(tmp_path: Path) -> None:
    # the attack: the list is lost or replaced by one another key signed; a list made again at
    # sequence 1 is ignored by every server, which holds a higher one, and so is every
    # revocation added to it afterwards
    key, old_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    path = tmp_path / "deny.json"
    with pytest.raises(ConfigError, match="does not exist") as missing:
        deny_tokens(path, private_key=key, issuer=ISSUER, requester="bank", reason="r")
    assert missing.value.field == "deny_list" and not path.exists()

    for _ in range(4):
        write_deny_list(path, private_key=old_key, issuer=ISSUER)
    deny_tokens(path, private_key=old_key, issuer=ISSUER, requester="bank", reason="ended")
    # a new issuer key: the old list does not verify and nothing is built on it
    with pytest.raises(ConfigError, match="not trusted here"):
        deny_tokens(path, private_key=key, issuer=ISSUER, jti="a" * 32, reason="r")
    with pytest.raises(ConfigError, match="not trusted here"):
        write_deny_list(path, private_key=key, issuer=ISSUER)
    # a deliberate reset numbers the new list above the old one and keeps its entries
    reset = reset_deny_list(path, private_key=key, issuer=ISSUER)
    assert reset.old_sequence == 5 and reset.deny.sequence == 6 and reset.entries_kept
    assert "not trusted here" in reset.problem
    now_listed = open_deny_list(
        path.read_bytes(), public_key=key.public_key(), issuer=ISSUER, origin="x"
    )
    assert now_listed.sequence == 6 and set(now_listed.requesters) == {"bank"}
    # a damaged payload: the sequence still counts, the entries it cannot read are given up
    damaged = json.loads(path.read_bytes())
    damaged["payload"]["requesters"] = "garbage"
    path.write_text(json.dumps(damaged))
    again = reset_deny_list(path, private_key=key, issuer=ISSUER)
    assert again.deny.sequence == 7 and not again.entries_kept and not again.deny.requesters
    # without a readable sequence there is nothing to number above: refused, file untouched
    path.write_text('{"payload": {}, "signature": ""}')
    with pytest.raises(ConfigError, match="sequence cannot be read"):
        reset_deny_list(path, private_key=key, issuer=ISSUER)
    assert path.read_text() == '{"payload": {}, "signature": ""}'


def test_the_token_commands_refuse_to_restart_a_deny_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    private, public = tmp_path / "issuer.key", tmp_path / "issuer.pub"
    assert main(["token", "keygen", "--private", str(private), "--public", str(public)]) == 0
    deny = tmp_path / "deny.json"
    common = ["--issuer-key", str(private), "--deny-list", str(deny)]
    assert main(["token", "revoke", *common, "--requester", "bank"]) == 3
    assert "--create" in capsys.readouterr().err and not deny.exists()
    assert main(["token", "revoke", *common, "--requester", "bank", "--create"]) == 0
    assert main(["token", "deny-list", *common]) == 0  # sequence 2
    other = tmp_path / "other.key"
    assert main(["token", "keygen", "--private", str(other), "--public", str(tmp_path / "o")]) == 0
    signed_by_other = ["--issuer-key", str(other), "--deny-list", str(deny)]
    capsys.readouterr()
    assert main(["token", "revoke", *signed_by_other, "--jti", "x" * 24]) == 3
    assert main(["token", "deny-list", *signed_by_other]) == 3
    assert main(["token", "deny-list", *signed_by_other, "--reset"]) == 0
    out = capsys.readouterr()
    assert "WARNING" in out.err and "READ WITHOUT VERIFICATION" in out.err
    assert "sequence 3" in out.out


# --- the commands ---------------------------------------------------------------------------


def test_the_commands_revoke_a_certificate_and_withdraw_tokens(
    ca: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["certs", "revoke", "--ca-dir", str(ca), "--cert", str(_bank_cert(ca)),
                 "--reason", "key_compromise"]) == 0  # fmt: skip
    assert "CRL number 2, 1 revoked" in capsys.readouterr().out
    assert main(["certs", "revoke", "--ca-dir", str(ca), "--cert", str(_bank_cert(ca))]) == 3
    assert main(["certs", "crl", "--ca-dir", str(ca), "--days", "7"]) == 0
    assert _number(_crl(ca / CRL_FILE)) == 3

    private, public = tmp_path / "issuer.key", tmp_path / "issuer.pub"
    assert main(["token", "keygen", "--private", str(private), "--public", str(public)]) == 0
    deny = tmp_path / "deny.json"
    common = ["--issuer-key", str(private), "--deny-list", str(deny)]
    assert main(["token", "deny-list", *common]) == 0
    assert main(["token", "revoke", *common, "--requester", "bank",
                 "--issued-before", "2026-11-26T09:30:00Z"]) == 0  # fmt: skip
    assert main(["token", "revoke", *common, "--jti", "x" * 24, "--reason", "leaked"]) == 0
    assert main(["token", "revoke", *common, "--jti", "x" * 24, "--issued-before",
                 "2026-11-26T09:30:00Z"]) == 3  # fmt: skip
    listed = open_deny_list(
        deny.read_bytes(),
        public_key=signing.load_public_key(public),
        issuer=ISSUER,
        origin=str(deny),
    )
    assert listed.sequence == 3 and set(listed.requesters) == {"bank"}
    assert set(listed.tokens) == {"x" * 24}
    with pytest.raises(SystemExit) as usage:
        main(["token", "revoke", *common, "--requester", "bank", "--issued-before", "today"])
    assert usage.value.code == 2


def test_a_server_does_not_start_on_a_crl_that_fails_and_warns_when_given_none(
    ca: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cert = load_ca_certificate(ca / "ca.pem")
    forged = tmp_path / "crl.pem"
    forged.write_bytes(_signed_crl(ec.generate_private_key(ec.SECP256R1()), cert.subject))
    with pytest.raises(ConfigError, match="signature does not verify"):
        PeerRevocation.open(forged, ca_path=ca / "ca.pem")
    with caplog.at_level(logging.WARNING, logger="osmanthus.core.crl"):
        assert open_revocation(None, ca_path=ca / "ca.pem") is None
    assert "a revoked certificate is accepted until it expires" in caplog.text


def test_a_server_does_not_start_on_a_certs_dir_without_its_crl(
    ca: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the attack: the CRL is lost on the way to a host (a copy of --certs-dir without it); a
    # server that starts without it accepts every revoked certificate
    from osmanthus.cli import build_parser
    from osmanthus.cli.options import crl_file

    (ca / CRL_FILE).unlink()
    serve = ["node", "serve", "--department", "tax", "--db", str(tmp_path / "tax.duckdb"),
             "--issuer-public-key", str(tmp_path / "issuer.pub"),
             "--state-dir", str(tmp_path / "state"), "--certs-dir", str(ca)]  # fmt: skip
    assert main(serve) == 3
    err = capsys.readouterr().err
    assert f"{ca / CRL_FILE} does not exist" in err and "--no-crl" in err
    with pytest.raises(ConfigError) as refused:
        crl_file(build_parser().parse_args(serve))
    assert refused.value.field == "crl"
    # said out loud, it may run without one; --crl elsewhere is taken as given
    assert crl_file(build_parser().parse_args([*serve, "--no-crl"])) is None
    given = tmp_path / "elsewhere.pem"
    assert crl_file(build_parser().parse_args([*serve, "--crl", str(given)])) == given
    with pytest.raises(SystemExit):
        build_parser().parse_args([*serve, "--crl", str(given), "--no-crl"])

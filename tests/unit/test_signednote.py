"""C2SP signed notes, cosignatures and checkpoints: known answers, round trips and every refusal."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from osmanthus.core.errors import InvalidArgument, Unauthenticated
from osmanthus.core.signednote import (
    MAX_SIGNATURES,
    MAX_TEXT_LINES,
    Checkpoint,
    CosignatureSigner,
    CosignatureVerifier,
    NoteSigner,
    NoteVerifier,
    open_note,
    parse_checkpoint,
)

# golang.org/x/mod/sumdb/note note_test.go (TestNewVerifier, TestSign, TestOpen)
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_SIG = (
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6"
    "KE6RyyBwJnAM=\n"
)
ENOCH_SIG = (
    "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33W"
    "Wd1RvMc+QQ=\n"
)
# transparency-dev/formats note/note_cosigv1_test.go: a witness's published type 0x04 key
REMORA_COSIGNER_VKEY = "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2"

SEED = bytes(range(32))
KEY = Ed25519PrivateKey.from_private_bytes(SEED)
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
ROOT = hashlib.sha256(b"root").digest()
CHECKPOINT = Checkpoint(origin="osmanthus.example/node-1", size=42, root_hash=ROOT)


def _spec_key_id(name: str, signature_type: int, public: bytes) -> bytes:
    """signed-note "Signatures": SHA-256(name || 0x0A || type || public key)[:4], from scratch."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([signature_type]) + public).digest()[:4]


def _public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


# --- known answers ------------------------------------------------------------------------------


def test_go_signer_key_signs_the_go_note_byte_for_byte() -> None:
    signer = NoteSigner.from_key_text(PETER_SKEY)
    assert signer.name == "PeterNeumann"
    assert signer.verifier_key == PETER_VKEY
    assert signer.signer_key_text() == PETER_SKEY
    # Ed25519 is deterministic, so the published signature comes out again
    assert signer.sign(GO_TEXT) == (GO_TEXT + "\n" + PETER_SIG).encode()


def test_go_verifier_key_id_is_the_spec_hash() -> None:
    verifier = NoteVerifier.from_key_text(PETER_VKEY)
    public = base64.b64decode(PETER_VKEY.split("+")[2])[1:]
    assert verifier.key_id == _spec_key_id("PeterNeumann", 0x01, public)
    assert verifier.key_id.hex() == "c74f20a3"
    assert verifier.verifier_key == PETER_VKEY


def test_go_note_opens_with_one_or_both_keys() -> None:
    peter = NoteVerifier.from_key_text(PETER_VKEY)
    enoch = NoteVerifier.from_key_text(ENOCH_VKEY)
    data = (GO_TEXT + "\n" + PETER_SIG + ENOCH_SIG).encode()
    note = open_note(data, [peter])
    assert note.text == GO_TEXT
    assert note.signatures == ("PeterNeumann",)
    assert open_note(data, [peter, enoch]).signatures == ("PeterNeumann", "EnochRoot")


def test_go_note_with_a_corrupted_known_signature_is_refused() -> None:
    peter = NoteVerifier.from_key_text(PETER_VKEY)
    corrupted = PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]
    with pytest.raises(Unauthenticated) as caught:
        open_note((GO_TEXT + "\n" + corrupted).encode(), [peter])
    assert caught.value.field == "note.signatures"
    assert "PeterNeumann+c74f20a3" in caught.value.message


def test_fixed_seed_keys_are_what_the_spec_algorithm_gives() -> None:
    signer = NoteSigner(name="osmanthus.example/node-1", private_key=KEY)
    expected_id = _spec_key_id("osmanthus.example/node-1", 0x01, _public(KEY))
    assert signer.key_id == expected_id
    assert signer.verifier_key == (
        f"osmanthus.example/node-1+{expected_id.hex()}+"
        + base64.b64encode(b"\x01" + _public(KEY)).decode()
    )
    assert signer.signer_key_text() == (
        f"PRIVATE+KEY+osmanthus.example/node-1+{expected_id.hex()}+"
        + base64.b64encode(b"\x01" + SEED).decode()
    )
    signed = signer.sign("hello\n")
    signature = KEY.sign(b"hello\n")
    line = "— osmanthus.example/node-1 " + base64.b64encode(expected_id + signature).decode()
    assert signed == ("hello\n\n" + line + "\n").encode()


def test_fixed_seed_cosigner_key_and_message_follow_tlog_cosignature() -> None:
    signer = CosignatureSigner(name="witness.example/w1", private_key=KEY)
    expected_id = _spec_key_id("witness.example/w1", 0x04, _public(KEY))
    assert signer.key_id == expected_id
    assert signer.verifier_key == (
        f"witness.example/w1+{expected_id.hex()}+"
        + base64.b64encode(b"\x04" + _public(KEY)).decode()
    )
    body = CHECKPOINT.body()
    signed = signer.sign(body, timestamp=1679315147)
    message = b"cosignature/v1\ntime 1679315147\n" + body.encode()
    raw = expected_id + (1679315147).to_bytes(8, "big") + KEY.sign(message)
    line = "— witness.example/w1 " + base64.b64encode(raw).decode() + "\n"
    assert signed == (body + "\n" + line).encode()


def test_published_cosigner_key_parses_and_its_id_is_the_spec_hash() -> None:
    verifier = CosignatureVerifier.from_key_text(REMORA_COSIGNER_VKEY)
    public = base64.b64decode(REMORA_COSIGNER_VKEY.split("+")[2])[1:]
    assert verifier.key_id == _spec_key_id("remora.n621.de", 0x04, public)
    assert verifier.verifier_key == REMORA_COSIGNER_VKEY
    # a type 0x04 key is not a note key, and a type 0x01 key is not a cosigner key
    with pytest.raises(InvalidArgument, match="type byte"):
        NoteVerifier.from_key_text(REMORA_COSIGNER_VKEY)
    with pytest.raises(InvalidArgument, match="type byte"):
        CosignatureVerifier.from_key_text(PETER_VKEY)


# --- key texts ----------------------------------------------------------------------------------


def test_every_mangled_go_verifier_key_is_refused() -> None:
    # golang.org/x/mod/sumdb/note TestNewVerifier: every proper substring, every byte bumped
    refused = 0
    for i in range(len(PETER_VKEY) + 1):
        for j in range(i + 1, len(PETER_VKEY) + 1):
            if (i, j) != (0, len(PETER_VKEY)):
                with pytest.raises(InvalidArgument):
                    NoteVerifier.from_key_text(PETER_VKEY[i:j])
                refused += 1
    for i in range(len(PETER_VKEY)):
        bumped = PETER_VKEY[:i] + chr(ord(PETER_VKEY[i]) + 1) + PETER_VKEY[i + 1 :]
        with pytest.raises(InvalidArgument):
            NoteVerifier.from_key_text(bumped)
        refused += 1
    assert refused > 2000


def test_every_mangled_go_signer_key_is_refused_without_quoting_it() -> None:
    for i in range(len(PETER_SKEY)):
        bumped = PETER_SKEY[:i] + chr(ord(PETER_SKEY[i]) + 1) + PETER_SKEY[i + 1 :]
        with pytest.raises(InvalidArgument) as caught:
            NoteSigner.from_key_text(bumped)
        assert caught.value.field == "signer_key"
        assert bumped not in str(caught.value)
        assert "AYEKFALV" not in str(caught.value)
    for j in range(1, len(PETER_SKEY)):
        with pytest.raises(InvalidArgument):
            NoteSigner.from_key_text(PETER_SKEY[:j])


@pytest.mark.parametrize(
    ("key_text", "problem"),
    [
        # golang.org/x/mod/sumdb/note: wrong length key and unknown algorithm, hashes adjusted
        (
            "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
            "32 key bytes",
        ),
        ("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "type byte"),
        ("PeterNeumann+00000000+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "key ID"),
        ("PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "8 hexadecimal"),
        ("Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "key name"),
        ("+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "key name"),
        ("PeterNeumann+c74f20a3", "<name>"),
        ("rekor.sigstore.dev+12345678+THIS_IS_NOT_BASE64!", "base64"),
    ],
)
def test_bad_verifier_keys_are_refused(key_text: str, problem: str) -> None:
    with pytest.raises(InvalidArgument, match=problem) as caught:
        NoteVerifier.from_key_text(key_text)
    assert caught.value.field == "verifier_key"


def test_a_cosigner_key_text_round_trips_and_keeps_its_type() -> None:
    signer = CosignatureSigner(name="witness.example/w1", private_key=KEY)
    again = CosignatureSigner.from_key_text(signer.signer_key_text())
    assert again.verifier_key == signer.verifier_key
    with pytest.raises(InvalidArgument, match="type byte"):
        NoteSigner.from_key_text(signer.signer_key_text())


@pytest.mark.parametrize("name", ["", "a b", "a+b", "a\tb", "a\u00a0b", "a\u3000b", "a\x01b"])
def test_bad_key_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        NoteSigner(name=name, private_key=KEY)
    assert caught.value.field == "name"
    with pytest.raises(InvalidArgument):
        CosignatureVerifier(name=name, public_key=KEY.public_key())


# --- notes --------------------------------------------------------------------------------------


def test_round_trip_and_countersignature() -> None:
    node = NoteSigner(name="node-1", private_key=KEY)
    auditor = NoteSigner(name="auditor", private_key=OTHER_KEY)
    text = "line one\n\nline three after a blank line\n"
    signed = auditor.countersign(node.sign(text))
    verifiers = [NoteVerifier.from_key_text(s.verifier_key) for s in (node, auditor)]
    note = open_note(signed, verifiers)
    assert note.text == text
    assert note.signatures == ("node-1", "auditor")
    # signing again with the same key replaces its signature rather than adding a second one
    assert node.countersign(signed).count("— node-1 ".encode()) == 1


def test_signatures_from_unknown_keys_are_ignored() -> None:
    node = NoteSigner(name="node-1", private_key=KEY)
    stranger = NoteSigner(name="stranger", private_key=OTHER_KEY)
    # same name as a known key but another key: a different key ID, so also unknown
    impostor = NoteSigner(name="node-1", private_key=OTHER_KEY)
    signed = impostor.countersign(stranger.countersign(node.sign("text\n")))
    note = open_note(signed, [NoteVerifier.from_key_text(node.verifier_key)])
    assert note.signatures == ("node-1",)


def test_a_note_signed_only_by_unknown_keys_is_refused() -> None:
    stranger = NoteSigner(name="stranger", private_key=OTHER_KEY)
    node = NoteVerifier(name="node-1", public_key=KEY.public_key())
    with pytest.raises(Unauthenticated, match="none of the trusted keys") as caught:
        open_note(stranger.sign("text\n"), [node])
    assert caught.value.field == "note.signatures"
    with pytest.raises(Unauthenticated):
        open_note(stranger.sign("text\n"), [])


def test_a_tampered_text_is_refused() -> None:
    node = NoteSigner(name="node-1", private_key=KEY)
    signed = node.sign(CHECKPOINT.body())
    tampered = signed.replace(b"\n42\n", b"\n43\n")
    with pytest.raises(Unauthenticated, match="does not verify"):
        open_note(tampered, [NoteVerifier.from_key_text(node.verifier_key)])


def test_a_wrong_key_with_the_right_name_and_id_is_refused() -> None:
    node = NoteSigner(name="node-1", private_key=KEY)
    signed = node.sign("text\n")
    other = NoteSigner(name="node-1", private_key=OTHER_KEY)
    # splice the other key's signature under node-1's key ID
    own_line = signed.decode().split("\n\n")[1]
    raw = base64.b64decode(own_line.split(" ")[2])
    forged = raw[:4] + OTHER_KEY.sign(b"text\n")
    forged_note = b"text\n\n" + f"— node-1 {base64.b64encode(forged).decode()}\n".encode()
    assert other.key_id != node.key_id
    with pytest.raises(Unauthenticated, match="does not verify"):
        open_note(forged_note, [NoteVerifier.from_key_text(node.verifier_key)])


def test_too_many_signatures_are_refused() -> None:
    peter = NoteVerifier.from_key_text(PETER_VKEY)
    assert open_note((GO_TEXT + "\n" + PETER_SIG * MAX_SIGNATURES).encode(), [peter])
    with pytest.raises(InvalidArgument, match="more than 100") as caught:
        open_note((GO_TEXT + "\n" + PETER_SIG * (MAX_SIGNATURES + 1)).encode(), [peter])
    assert caught.value.field == "note.signatures"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        # golang.org/x/mod/sumdb/note TestOpen's malformed notes
        (GO_TEXT, "note.signatures"),
        (GO_TEXT + "\n", "note.signatures"),
        (GO_TEXT + "\n" + PETER_SIG[:-1], "note.signatures"),
        ("\x01" + GO_TEXT + "\n" + PETER_SIG, "note"),
        (GO_TEXT + "\n" + "— Bad Name " + PETER_SIG.split(" ")[2], "note.signatures"),
        (GO_TEXT + "\n" + PETER_SIG + "Unexpected line.\n", "note.signatures"),
        # and more
        (GO_TEXT + "\n" + PETER_SIG.replace("—", "-"), "note.signatures"),
        (GO_TEXT + "\n" + "— PeterNeumann\n", "note.signatures"),
        (GO_TEXT + "\n" + "— PeterNeumann AAAA\n", "note.signatures"),  # key ID, no signature
        (GO_TEXT + "\n" + "— PeterNeumann x08go/ZJ!!!\n", "note.signatures"),
        (GO_TEXT + "\n" + "— PeterNeumann x08go/ZJkx==\n", "note.signatures"),  # not canonical
        ("a\rb\n\n" + PETER_SIG, "note"),
        ("x" * 70_000 + "\n\n" + PETER_SIG, "note"),
        ("x\n" * (MAX_TEXT_LINES + 1) + "\n" + PETER_SIG, "note.text"),
    ],
)
def test_malformed_notes_are_refused(data: str, field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        open_note(data.encode(), [NoteVerifier.from_key_text(PETER_VKEY)])
    assert caught.value.field == field


def test_invalid_utf8_is_refused() -> None:
    data = b"\xff" + (GO_TEXT + "\n" + PETER_SIG).encode()
    with pytest.raises(InvalidArgument, match="UTF-8") as caught:
        open_note(data, [NoteVerifier.from_key_text(PETER_VKEY)])
    assert caught.value.field == "note"


@pytest.mark.parametrize("text", ["no final newline", "tab\there\n", "\x00\n", "x\n" * 1025])
def test_bad_texts_are_not_signed(text: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        NoteSigner(name="node-1", private_key=KEY).sign(text)
    assert caught.value.field == "text"


def test_two_different_keys_under_one_name_and_id_are_refused() -> None:
    verifier = NoteVerifier.from_key_text(PETER_VKEY)
    impostor = NoteVerifier(name="PeterNeumann", public_key=KEY.public_key())
    object.__setattr__(impostor, "key_id", verifier.key_id)  # a key ID collision
    with pytest.raises(InvalidArgument, match="share the name") as caught:
        open_note((GO_TEXT + "\n" + PETER_SIG).encode(), [verifier, impostor])
    assert caught.value.field == "verifiers"
    # the same key twice is no ambiguity
    assert open_note((GO_TEXT + "\n" + PETER_SIG).encode(), [verifier, verifier])


# --- cosignatures -------------------------------------------------------------------------------


def test_cosignature_round_trip_over_a_log_signed_checkpoint() -> None:
    log = NoteSigner(name=CHECKPOINT.origin, private_key=KEY)
    witness = CosignatureSigner(name="witness.example/w1", private_key=OTHER_KEY)
    log_verifier = NoteVerifier.from_key_text(log.verifier_key)
    witness_verifier = CosignatureVerifier.from_key_text(witness.verifier_key)
    signed = log.sign(CHECKPOINT.body())
    cosigned = witness.countersign(signed, timestamp=1_700_000_000)
    note = open_note(cosigned, [log_verifier, witness_verifier])
    assert note.signatures == (CHECKPOINT.origin, "witness.example/w1")
    assert note.cosigned_at == {"witness.example/w1": 1_700_000_000}
    assert parse_checkpoint(note.text) == CHECKPOINT
    # the witness alone also opens it; the log's key alone ignores the cosignature
    assert open_note(cosigned, [witness_verifier]).signatures == ("witness.example/w1",)
    assert open_note(cosigned, [log_verifier]).cosigned_at == {}


def test_a_cosignature_with_a_tampered_timestamp_is_refused() -> None:
    witness = CosignatureSigner(name="witness.example/w1", private_key=OTHER_KEY)
    line = witness.signature_line(CHECKPOINT.body(), timestamp=1_700_000_000)
    raw = bytearray(base64.b64decode(line.split(" ")[2]))
    raw[4 + 7] ^= 1  # the last byte of the 8-byte timestamp
    tampered = f"— witness.example/w1 {base64.b64encode(raw).decode()}\n"
    verifier = CosignatureVerifier.from_key_text(witness.verifier_key)
    assert open_note((CHECKPOINT.body() + "\n" + line).encode(), [verifier])
    with pytest.raises(Unauthenticated, match="does not verify"):
        open_note((CHECKPOINT.body() + "\n" + tampered).encode(), [verifier])


def test_a_cosignature_does_not_verify_as_a_note_signature_with_the_same_key() -> None:
    witness = CosignatureSigner(name="w", private_key=KEY)
    plain = NoteVerifier(name="w", public_key=KEY.public_key())
    assert plain.key_id != witness.key_id  # the type byte separates them
    with pytest.raises(Unauthenticated):
        open_note(witness.sign(CHECKPOINT.body(), timestamp=1), [plain])


def test_cosigners_sign_only_checkpoints_and_valid_times() -> None:
    witness = CosignatureSigner(name="w", private_key=KEY)
    with pytest.raises(InvalidArgument) as caught:
        witness.sign("not a checkpoint\n", timestamp=1)
    assert caught.value.field == "checkpoint"
    for bad in (-1, 2**63, True):
        with pytest.raises(InvalidArgument) as caught:
            witness.sign(CHECKPOINT.body(), timestamp=bad)
        assert caught.value.field == "timestamp"
    # without a timestamp the cosigner states the current time
    note = open_note(
        witness.sign(CHECKPOINT.body()), [CosignatureVerifier.from_key_text(witness.verifier_key)]
    )
    assert note.cosigned_at["w"] > 1_700_000_000


# --- checkpoints --------------------------------------------------------------------------------


def test_checkpoint_body_and_parse_round_trip() -> None:
    with_extensions = Checkpoint(
        origin="example.com/log", size=0, root_hash=ROOT, extensions=("ext one", "ext two")
    )
    body = with_extensions.body()
    assert body == (
        "example.com/log\n0\n" + base64.b64encode(ROOT).decode() + "\next one\next two\n"
    )
    assert parse_checkpoint(body) == with_extensions
    assert parse_checkpoint(CHECKPOINT.body()) == CHECKPOINT


def test_the_spec_example_checkpoint_parses() -> None:
    body = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    checkpoint = parse_checkpoint(body)
    assert checkpoint.origin == "example.com/behind-the-sofa"
    assert checkpoint.size == 20852163
    assert checkpoint.body() == body


ROOT_LINE = base64.b64encode(ROOT).decode()


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (f"o\n1\n{ROOT_LINE}", "checkpoint"),  # no final newline
        ("o\n1\n", "checkpoint"),
        (f"\n1\n{ROOT_LINE}\n", "checkpoint.origin"),
        (f"o\x01\n1\n{ROOT_LINE}\n", "checkpoint.origin"),
        (f"o\n01\n{ROOT_LINE}\n", "checkpoint.size"),
        (f"o\n+1\n{ROOT_LINE}\n", "checkpoint.size"),
        (f"o\n-1\n{ROOT_LINE}\n", "checkpoint.size"),
        (f"o\n1_0\n{ROOT_LINE}\n", "checkpoint.size"),
        (f"o\n\u0661\n{ROOT_LINE}\n", "checkpoint.size"),  # an Arabic-Indic digit one
        (f"o\n 1\n{ROOT_LINE}\n", "checkpoint.size"),
        (f"o\n\n{ROOT_LINE}\n", "checkpoint.size"),
        (f"o\n{2**64}\n{ROOT_LINE}\n", "checkpoint.size"),
        ("o\n1\n" + base64.b64encode(ROOT[:31]).decode() + "\n", "checkpoint.root_hash"),
        ("o\n1\n" + base64.urlsafe_b64encode(b"\xff" * 32).decode() + "\n", "checkpoint.root_hash"),
        ("o\n1\n" + ROOT_LINE.rstrip("=") + "\n", "checkpoint.root_hash"),
        ("o\n1\n" + ROOT_LINE[:-2] + "B=\n", "checkpoint.root_hash"),  # non-zero padding bits
        (f"o\n1\n{ROOT_LINE}\n\n", "checkpoint.extensions"),
        (f"o\n1\n{ROOT_LINE}\nok\n\nafter\n", "checkpoint.extensions"),
    ],
)
def test_malformed_checkpoints_are_refused(text: str, field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_checkpoint(text)
    assert caught.value.field == field


def test_bad_checkpoint_fields_are_refused_at_construction() -> None:
    with pytest.raises(InvalidArgument) as caught:
        Checkpoint(origin="o", size=-1, root_hash=ROOT)
    assert caught.value.field == "checkpoint.size"
    with pytest.raises(InvalidArgument) as caught:
        Checkpoint(origin="o", size=1, root_hash=ROOT[:16])
    assert caught.value.field == "checkpoint.root_hash"
    with pytest.raises(InvalidArgument) as caught:
        Checkpoint(origin="a\nb", size=1, root_hash=ROOT)
    assert caught.value.field == "checkpoint.origin"
    with pytest.raises(InvalidArgument) as caught:
        Checkpoint(origin="o", size=1, root_hash=ROOT, extensions=("a\nb",))
    assert caught.value.field == "checkpoint.extensions"

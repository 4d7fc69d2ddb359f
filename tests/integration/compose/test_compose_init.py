"""compose's init job, run here: the certificates, keys, token and data it makes, each private key
in volumes only init and its own service mount, and what a second run keeps, renews or refuses.

The coordinator's private keys (TLS key.pem, consent.key, log.key, witness.key) live in a volume
that only init and the coordinator mount; every node mounts the shared `certs` volume, which holds
only their public half. Likewise the sync job's keys and token are in a volume only init and the
sync job mount, and the provincial receiver's TLS and witness keys in one only init and the
receiver mount. The roster of logs and witnesses (logs.toml) is public and in every volume that
a service needing it mounts.
"""

from __future__ import annotations

import csv
import json
import os
import stat
import time
import tomllib
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from certs import DEFAULT_OPERATOR_NAME, PeerRole, cert_paths
from osmanthus.core import signing
from osmanthus.core.catalogue import Catalogue
from osmanthus.core.crl import load_ca_certificate, verify_crl
from osmanthus.core.denylist import open_deny_list
from osmanthus.core.logkeys import LogRoster, log_origin, witness_name
from osmanthus.core.peers import COORDINATOR_NAME
from osmanthus.core.signednote import CosignatureSigner, NoteSigner
from osmanthus.core.syncbatch import sender_key_id
from osmanthus.core.tokens import DEFAULT_ISSUER, ReplayCache, TokenIssuer, TokenVerifier
from osmanthus.core.types import Role, SubjectKind
from province.senders import load_senders
from sdk.batchjob import read_ids
from sdk.keys import load_or_create_keys
from syncjob.config import SyncConfig
from tests.integration.compose.conftest import (
    Compose,
    Host,
    _host,
    _listen_port,
    _run_init,
    _sync_config,
    _sync_toml,
)

#: the purposes init grants the sync job's token
SYNC_PURPOSES = ("credit_rescoring", "statistics")


def _coordinator_files(host: Host) -> dict[str, bytes]:
    """The coordinator's files as init made them in the secrets volume."""
    made = host.volume("secrets") / "ca" / "coordinator"
    return {name: (made / name).read_bytes() for name in _COORDINATOR_FILES}


_COORDINATOR_FILES = (
    "cert.pem",
    "key.pem",
    "consent.key",
    "consent.pub",
    "log.key",
    "log.pub",
    "witness.key",
    "witness.pub",
)
_COORDINATOR_PRIVATE = ("key.pem", "consent.key", "log.key", "witness.key")
#: the reference provincial receiver's certificate and witness key name
PROVINCE = "province"


def _host_sync_config(compose: Compose, host: Host) -> SyncConfig:
    return _sync_config(compose, host, out=host.root / "sync.host.toml")


def _issuer(host: Host) -> TokenVerifier:
    return TokenVerifier.from_file(
        host.volume("secrets") / "issuer.pub", replay_cache=ReplayCache()
    )


def test_init_makes_certificates_issuer_key_and_data_and_a_second_run_keeps_them(
    compose: Compose, initialised: Host, catalogue: Catalogue
) -> None:
    certs, secrets, data = (initialised.volume(v) for v in ("certs", "secrets", "data"))
    keys = initialised.volume("coordinator-keys")
    for dept in catalogue.departments:
        assert (data / f"{dept.id}.duckdb").is_file()
        cert_paths(certs, role=PeerRole.NODE, name=dept.id)  # raises if any file is missing
    cert_paths(certs, role=PeerRole.OPERATOR, name="operator")
    # the departments' nodes and no other: the provincial receiver's key is not for them
    assert sorted(p.name for p in (certs / "nodes").iterdir()) == sorted(
        d.id for d in catalogue.departments
    )
    # the services' volume carries no CA key, no issuer key and no requester keys, and of the
    # coordinator only what is public
    assert not (certs / "ca.key").exists()
    assert not list(certs.rglob("issuer.key"))
    assert not (certs / "requesters").exists()
    assert sorted(p.name for p in (certs / "coordinator").iterdir()) == ["cert.pem", "consent.pub"]
    for requester in compose.init.spec["environment"]["REQUESTERS"].split():
        cert_paths(secrets / "ca", role=PeerRole.REQUESTER, name=requester)
    # the coordinator's own volume has its whole identity, private files owner-only
    made = _coordinator_files(initialised)
    assert {p.name: p.read_bytes() for p in keys.iterdir()} == made
    for name in _COORDINATOR_PRIVATE:
        assert stat.S_IMODE((keys / name).stat().st_mode) == 0o600
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700

    kept = [certs / "ca.pem", certs / "issuer.pub", secrets / "issuer.key", data / "psb.duckdb"]
    kept += [keys / name for name in _COORDINATOR_FILES]
    sync = _host_sync_config(compose, initialised)
    assert sync.enterprises is not None
    kept += [sync.paillier_keys, sync.token_file, sync.signing_key, sync.enterprises]
    kept += [sync.signing_key.with_suffix(".pub"), sync.coordinator.tls.key]
    # every log and witness key where the services read it, and the roster listing them
    kept += [certs / "nodes" / d.id / "log.key" for d in catalogue.departments]
    kept += [certs / "logs.toml", _province_file(compose, initialised, "witness.key")]
    before = {p: p.read_bytes() for p in kept}
    again = _run_init(compose, initialised)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already exists: kept" in again.stdout
    assert {p: p.read_bytes() for p in kept} == before


def _province_file(compose: Compose, host: Host, name: str) -> Path:
    """A file of the receiver's node directory, as its service mounts it."""
    province = compose.province
    certs_dir = Path(host.mounted(province).map(province.option("--certs-dir")))
    return certs_dir / "nodes" / PROVINCE / name


def _expected_roster(catalogue: Catalogue) -> tuple[set[str], set[str]]:
    """The origins of every log and the names of both witnesses the compose roster must list."""
    origins = {log_origin(PeerRole.NODE, d.id) for d in catalogue.departments}
    origins.add(log_origin(PeerRole.COORDINATOR, COORDINATOR_NAME))
    witnesses = {
        witness_name(PeerRole.COORDINATOR, COORDINATOR_NAME),
        witness_name(PeerRole.NODE, PROVINCE),
    }
    return origins, witnesses


def _check_log_keys(compose: Compose, host: Host, catalogue: Catalogue) -> LogRoster:
    """Every roster copy a service reads is the same and lists every department's log, the
    coordinator's and both witnesses, each with the key its peer signs with; every private key
    owner-only. Returns the roster."""
    province, coordinator = compose.province, compose.coordinator
    copies = [
        Path(host.mounted(coordinator).map(coordinator.option("--logs"))),
        Path(host.mounted(province).map(province.option("--logs"))),
        *(Path(host.mounted(n).map(n.option("--logs"))) for n in compose.nodes.values()),
    ]
    sync_config = _host_sync_config(compose, host)
    assert sync_config.logs is not None, "sync.toml carries no checkpoints"
    copies.append(sync_config.logs)
    made = host.volume("secrets") / "ca" / "logs.toml"
    for copy in copies:
        assert copy.read_bytes() == made.read_bytes(), copy
    roster = LogRoster.load(made)
    origins, witnesses = _expected_roster(catalogue)
    assert set(roster.origins()) == origins
    assert {w.name for w in roster.witness_verifiers()} == witnesses

    keys: list[tuple[str, Path]] = []
    for dept, node in compose.nodes.items():
        keys.append(
            (log_origin(PeerRole.NODE, dept), Path(host.mapper(node).map(node.option("--log-key"))))
        )
    keys.append(
        (
            log_origin(PeerRole.COORDINATOR, COORDINATOR_NAME),
            Path(host.mapper(coordinator).map(coordinator.option("--log-key"))),
        )
    )
    for origin, path in keys:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        signer = NoteSigner.from_key_text(path.read_text(encoding="ascii").strip())
        assert signer.name == origin
        assert roster.log_verifier(origin).verifier_key == signer.verifier_key, origin
    witness_keys = {
        witness_name(PeerRole.COORDINATOR, COORDINATOR_NAME): Path(
            host.mapper(coordinator).map(coordinator.option("--witness-key"))
        ),
        witness_name(PeerRole.NODE, PROVINCE): Path(
            host.mapper(province).map(province.option("--witness-key"))
        ),
    }
    listed = {w.name: w.verifier_key for w in roster.witness_verifiers()}
    for name, path in witness_keys.items():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        cosigner = CosignatureSigner.from_key_text(path.read_text(encoding="ascii").strip())
        assert cosigner.name == name
        assert listed[name] == cosigner.verifier_key, name
    return roster


def test_init_makes_every_log_and_witness_key_and_the_roster_every_service_reads(
    compose: Compose, initialised: Host, catalogue: Catalogue
) -> None:
    _check_log_keys(compose, initialised, catalogue)
    # the coordinator's private log and witness keys never reach the shared volume
    shared = initialised.volume("certs") / "coordinator"
    assert not (shared / "log.key").exists() and not (shared / "witness.key").exists()


def test_init_gives_a_ca_made_before_transparency_logs_every_key_and_keeps_them(
    compose: Compose, tmp_path: Path, catalogue: Catalogue
) -> None:
    host = _host(tmp_path)
    first = _run_init(compose, host, SEED_SYNTHETIC="0")
    assert first.returncode == 0, first.stdout + first.stderr
    # a CA from before transparency logs: no log or witness key anywhere, no roster
    ca = host.volume("secrets") / "ca"
    for pattern in ("log.key", "log.pub", "witness.key", "witness.pub", "logs.toml"):
        for path in ca.rglob(pattern):
            path.unlink()
    upgraded = _run_init(compose, host, SEED_SYNTHETIC="0")
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    roster = _check_log_keys(compose, host, catalogue)
    made = {p: p.read_bytes() for p in ca.rglob("*.key") if p.name in ("log.key", "witness.key")}
    assert len(made) == len(catalogue.departments) + 3  # the coordinator's two, the province's

    # run again: every key and the roster kept, and no key made or written again
    again = _run_init(compose, host, SEED_SYNTHETIC="0")
    assert again.returncode == 0, again.stdout + again.stderr
    assert {p: p.read_bytes() for p in made} == made
    assert _check_log_keys(compose, host, catalogue).dumps() == roster.dumps()
    # ('certs log-key' says this whether it made a key or kept one)
    assert "logs.toml lists it" not in again.stdout

    # a lost roster is written again from the keys, which are kept
    (ca / "logs.toml").unlink()
    rebuilt = _run_init(compose, host, SEED_SYNTHETIC="0")
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert {p: p.read_bytes() for p in made} == made
    assert _check_log_keys(compose, host, catalogue).dumps() == roster.dumps()

    # a lost log key is never replaced by a new one: the checkpoints it signed would not verify
    lost = ca / "nodes" / catalogue.departments[0].id / "log.key"
    lost.unlink()
    refused = _run_init(compose, host, SEED_SYNTHETIC="0")
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "restore" in refused.stderr
    assert not lost.exists()


def test_init_prepares_the_sync_job_and_the_receiver_each_in_a_volume_of_its_own(
    compose: Compose, initialised: Host
) -> None:
    sync, province = compose.sync, compose.province
    raw = tomllib.loads(_sync_toml(compose, initialised))
    # the targets are the compose services, as nodes.toml names the nodes
    assert raw["coordinator"]["target"] == (
        f"{compose.coordinator.name}:{_listen_port(compose.coordinator)}"
    )
    assert raw["province"]["target"] == f"{province.name}:{_listen_port(province)}"
    assert not sync.read_only(sync.mount_of(raw["state_dir"])), "the job's state must be writable"
    config = _host_sync_config(compose, initialised)  # maps every path through sync's mounts
    environment = compose.init.spec["environment"]
    assert config.requester == environment["SYNC_REQUESTER"]
    assert config.sender == environment["SYNC_SENDER"]
    certified = cert_paths(
        initialised.volume("secrets") / "ca", role=PeerRole.REQUESTER, name=config.requester
    )
    assert config.coordinator.tls.cert.read_bytes() == certified.cert.read_bytes()
    assert config.province.tls == config.coordinator.tls

    # an unattended job's token: role sync_job, its two purposes, bound to its own Paillier key
    claims = _issuer(initialised).verify(config.token_file.read_text(encoding="utf-8").strip())
    assert claims.requester == config.requester
    assert claims.role is Role.SYNC_JOB
    assert claims.purposes == set(SYNC_PURPOSES)
    assert claims.key_fingerprint == load_or_create_keys(config.paillier_keys).fingerprint
    days = int(environment["SYNC_TOKEN_DAYS"])
    assert claims.expires_at - claims.issued_at == timedelta(days=days)

    # grades and statistics over every enterprise of the seeded records, ε small and daily
    with (initialised.volume("data") / "subjects.csv").open(newline="") as f:
        firms = [r["subject_id"] for r in csv.DictReader(f) if r["subject_kind"] == "enterprise"]
    assert config.enterprises is not None
    assert list(read_ids(config.enterprises)) == firms
    assert config.lists_enabled
    assert config.grades_every == timedelta(days=1)
    [cohort] = config.statistics
    assert cohort.subject_kind is SubjectKind.ENTERPRISE
    assert cohort.subjects == config.enterprises
    assert 0 < cohort.epsilon <= Decimal("0.01")
    assert cohort.every == timedelta(days=1)

    # the receiver knows the city by the job's certificate and public key, and serves with the
    # node certificate `province` from its own volume
    senders = load_senders(Path(initialised.mounted(province).map(province.option("--senders"))))
    [sender] = senders.senders
    assert sender.id == config.sender
    assert sender.certificates == {config.requester}
    public = signing.load_private_key(config.signing_key).public_key()
    assert list(sender.keys) == [sender_key_id(public)]
    certs_dir = Path(initialised.mounted(province).map(province.option("--certs-dir")))
    cert_paths(certs_dir, role=PeerRole.NODE, name="province")
    # the operator certificate its health check probes with
    cert_paths(certs_dir, role=PeerRole.OPERATOR, name=DEFAULT_OPERATOR_NAME)

    # both volumes and every private file in them owner-only
    for service, flag in ((sync, "--config"), (province, "--senders")):
        volume = initialised.volume(service.mounts()[service.mount_of(service.option(flag))])
        assert stat.S_IMODE(volume.stat().st_mode) == 0o700, volume
    for private in (
        config.token_file,
        config.paillier_keys,
        config.signing_key,
        config.coordinator.tls.key,
        cert_paths(certs_dir, role=PeerRole.NODE, name="province").key,
    ):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600, private


def _plant_token(host: Host, config: SyncConfig, *, issued_ago: timedelta, days: int) -> bytes:
    """A token as init would have issued it `issued_ago`, written as the job's token now."""
    then = datetime.now(UTC) - issued_ago
    token = TokenIssuer.from_file(host.volume("secrets") / "issuer.key", clock=lambda: then).issue(
        requester=config.requester,
        role=Role.SYNC_JOB,
        purposes=SYNC_PURPOSES,
        key_fingerprint=load_or_create_keys(config.paillier_keys).fingerprint,
        ttl=timedelta(days=days),
    )
    config.token_file.write_text(token + "\n", encoding="ascii")
    return config.token_file.read_bytes()


def _check_fresh_token(host: Host, config: SyncConfig, *, days: int) -> None:
    token = config.token_file
    claims = _issuer(host).verify(token.read_text(encoding="utf-8").strip())
    assert datetime.now(UTC) - claims.issued_at < timedelta(minutes=1)
    assert claims.expires_at - claims.issued_at == timedelta(days=days)
    assert claims.key_fingerprint == load_or_create_keys(config.paillier_keys).fingerprint
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert not token.with_name(token.name + ".tmp").exists()


def test_init_renews_the_sync_token_two_thirds_through_the_life_the_token_itself_states(
    compose: Compose, initialised: Host
) -> None:
    config = _host_sync_config(compose, initialised)
    key = config.paillier_keys.read_bytes()
    # a day's lifetime: 'find -mtime' counts whole days and would keep this token to its expiry
    two_thirds = timedelta(days=1) * 2 / 3

    young = _plant_token(initialised, config, issued_ago=two_thirds - timedelta(hours=1), days=1)
    # the file's time says nothing: a restored volume may give any token any
    month_ago = time.time() - timedelta(days=30).total_seconds()
    os.utime(config.token_file, (month_ago, month_ago))
    kept = _run_init(compose, initialised, SYNC_TOKEN_DAYS="1")
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert config.token_file.read_bytes() == young
    assert f"token {config.token_file} kept" in kept.stdout

    old = _plant_token(initialised, config, issued_ago=two_thirds + timedelta(hours=1), days=1)
    renewed = _run_init(compose, initialised, SYNC_TOKEN_DAYS="1")
    assert renewed.returncode == 0, renewed.stdout + renewed.stderr
    assert config.token_file.read_bytes() != old
    assert "two thirds through its life" in renewed.stdout
    _check_fresh_token(initialised, config, days=1)
    assert config.paillier_keys.read_bytes() == key

    # a young token of another lifetime than the setting's is renewed with the setting's
    default = _run_init(compose, initialised)
    assert default.returncode == 0, default.stdout + default.stderr
    days = int(compose.init.spec["environment"]["SYNC_TOKEN_DAYS"])
    _check_fresh_token(initialised, config, days=days)


def test_init_renews_a_young_sync_token_the_current_issuer_key_does_not_verify(
    compose: Compose, initialised: Host
) -> None:
    # the secrets volume made anew (a new issuer key) while sync-config, and its token, survive
    config = _host_sync_config(compose, initialised)
    before = config.token_file.read_bytes()
    deny = initialised.volume("secrets") / "token-deny.json"
    old_sequence = json.loads(deny.read_bytes())["payload"]["sequence"]
    for name in ("issuer.key", "issuer.pub"):
        (initialised.volume("secrets") / name).unlink()
    done = _run_init(compose, initialised)
    assert done.returncode == 0, done.stdout + done.stderr
    assert config.token_file.read_bytes() != before
    assert "does not verify" in done.stdout
    # the deny list is signed again above the sequence the servers hold, never started at 1
    resigned = open_deny_list(
        deny.read_bytes(),
        public_key=signing.load_public_key(initialised.volume("secrets") / "issuer.pub"),
        issuer="osmanthus-platform",
        origin=str(deny),
    )
    assert resigned.sequence == old_sequence + 1
    assert "READ WITHOUT VERIFICATION" in done.stdout + done.stderr
    days = int(compose.init.spec["environment"]["SYNC_TOKEN_DAYS"])
    _check_fresh_token(initialised, config, days=days)  # against the new issuer.pub
    issued = initialised.volume("secrets") / "issuer.pub"
    assert (initialised.volume("certs") / "issuer.pub").read_bytes() == issued.read_bytes()


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("SYNC_TOKEN_DAYS", "08"),  # sh arithmetic would read it as octal, and fail
        ("SYNC_TOKEN_DAYS", "0"),
        ("SYNC_TOKEN_DAYS", "366"),
        ("SYNC_TOKEN_DAYS", "99999999999999999999"),
        ("SYNC_TOKEN_DAYS", "1d"),
        ("SYNC_SENDER", 'suzhou"\nsigning_key = "/tmp/k'),
        ("SYNC_SENDER", "../suzhou"),
        ("SYNC_SENDER", "Suzhou"),
        ("SYNC_SENDER", "s" * 64),
        ("SYNC_REQUESTER", "sync 1"),
    ],
)
def test_init_refuses_a_bad_sync_setting_before_it_writes_anything(
    compose: Compose, tmp_path: Path, setting: str, value: str
) -> None:
    host = _host(tmp_path)
    done = _run_init(compose, host, **{setting: value})
    assert done.returncode == 3, done.stdout + done.stderr
    assert f"init: error: {setting}={value}:" in done.stderr
    assert not (host.root / "volumes").exists(), "init wrote before it checked its settings"


def test_each_private_key_is_only_in_volumes_that_init_and_its_own_service_mount(
    compose: Compose, initialised: Host
) -> None:
    ca = initialised.volume("secrets") / "ca"
    init, coordinator = compose.init.name, compose.coordinator.name
    sync, province = compose.sync, compose.province
    config = _host_sync_config(compose, initialised)
    province_certs = Path(initialised.mounted(province).map(province.option("--certs-dir")))
    owners: dict[str, tuple[Path, set[str]]] = {
        "the CA key": (ca / "ca.key", {init}),
        "the token issuer key": (initialised.volume("secrets") / "issuer.key", {init}),
        "the coordinator's TLS key": (ca / "coordinator" / "key.pem", {init, coordinator}),
        "the consent-receipt key": (ca / "coordinator" / "consent.key", {init, coordinator}),
        "the coordinator's log key": (ca / "coordinator" / "log.key", {init, coordinator}),
        "the coordinator's witness key": (ca / "coordinator" / "witness.key", {init, coordinator}),
        "the receiver's witness key": (
            ca / "nodes" / PROVINCE / "witness.key",
            {init, province.name},
        ),
        # Caveat (docs/caveats.md): the nodes' keys, TLS as log keys, share the certs volume
        # that every node and the coordinator mount
        "a node's log key": (
            ca / "nodes" / next(iter(compose.nodes)) / "log.key",
            {init, coordinator, *(n.name for n in compose.nodes.values())},
        ),
        "the sync job's TLS key": (config.coordinator.tls.key, {init, sync.name}),
        "the sync job's Paillier key": (config.paillier_keys, {init, sync.name}),
        "the sync job's token": (config.token_file, {init, sync.name}),
        "the sync signing key": (config.signing_key, {init, sync.name}),
        "the receiver's TLS key": (
            cert_paths(province_certs, role=PeerRole.NODE, name="province").key,
            {init, province.name},
        ),
    }
    for requester in compose.init.spec["environment"]["REQUESTERS"].split():
        owners[f"{requester}'s TLS key"] = (ca / "requesters" / requester / "key.pem", {init})
    # by content, so that a renamed or relocated copy is found too
    secrets = {path.read_bytes(): label for label, (path, _) in owners.items()}
    holding: dict[str, set[str]] = {label: set() for label in owners}
    for volume in (initialised.root / "volumes").iterdir():
        for path in volume.rglob("*"):
            # keys are small; the department databases need not be read
            if path.is_file() and path.stat().st_size < 64 * 1024:
                label = secrets.get(path.read_bytes())
                if label is not None:
                    holding[label].add(volume.name)
    for label, (_, allowed) in owners.items():
        users = {
            s.name for s in compose.services.values() if holding[label] & set(s.mounts().values())
        }
        assert users == allowed, f"{label} is in {sorted(holding[label])}, mounted by {users}"


def test_no_node_mounts_a_volume_holding_a_coordinator_private_key(
    compose: Compose, initialised: Host
) -> None:
    # by content, so that a renamed or relocated copy is found too
    secret = {_coordinator_files(initialised)[name] for name in _COORDINATOR_PRIVATE}
    holding = set()
    for volume in (initialised.root / "volumes").iterdir():
        for path in volume.rglob("*"):
            if path.is_file() and (path.name == "consent.key" or path.read_bytes() in secret):
                holding.add(volume.name)
    assert holding == {"secrets", "coordinator-keys"}
    for service in compose.services.values():
        mounted = holding & set(service.mounts().values())
        if service.name not in (compose.init.name, compose.coordinator.name):
            assert not mounted, f"{service.name} mounts {mounted}, which hold coordinator keys"


def test_init_removes_private_keys_an_earlier_version_put_in_the_shared_volume(
    compose: Compose, initialised: Host
) -> None:
    shared = initialised.volume("certs") / "coordinator"
    made = _coordinator_files(initialised)
    for name in _COORDINATOR_PRIVATE:
        (shared / name).write_bytes(made[name])
    # a receiver certificate issued by hand into the CA directory, which init copied whole
    receiver = initialised.volume("certs") / "nodes" / "province"
    receiver.mkdir()
    for name in ("cert.pem", "key.pem"):
        source = initialised.volume("secrets") / "ca" / "nodes" / "province" / name
        (receiver / name).write_bytes(source.read_bytes())
    done = _run_init(compose, initialised)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in shared.iterdir()) == ["cert.pem", "consent.pub"]
    assert not receiver.exists()


def test_init_writes_a_lost_consent_pub_from_the_key_and_never_replaces_a_lost_key(
    compose: Compose, tmp_path: Path
) -> None:
    host = _host(tmp_path)
    first = _run_init(compose, host, SEED_SYNTHETIC="0")
    assert first.returncode == 0, first.stdout + first.stderr
    made = _coordinator_files(host)
    coordinator_dir = host.volume("secrets") / "ca" / "coordinator"

    (coordinator_dir / "consent.pub").unlink()
    again = _run_init(compose, host, SEED_SYNTHETIC="0")
    assert again.returncode == 0, again.stdout + again.stderr
    assert _coordinator_files(host) == made
    assert (host.volume("certs") / "coordinator" / "consent.pub").read_bytes() == made[
        "consent.pub"
    ]

    (coordinator_dir / "consent.key").unlink()
    lost = _run_init(compose, host, SEED_SYNTHETIC="0")
    assert lost.returncode == 3, lost.stdout + lost.stderr
    assert "restore the consent signing key from backup" in lost.stderr
    assert not (coordinator_dir / "consent.key").exists()
    assert (coordinator_dir / "consent.pub").read_bytes() == made["consent.pub"]
    # the copy the coordinator used is untouched
    assert (host.volume("coordinator-keys") / "consent.key").read_bytes() == made["consent.key"]


def test_init_refuses_to_seed_over_department_data_it_did_not_make(
    compose: Compose, tmp_path: Path
) -> None:
    host = _host(tmp_path)
    foreign = host.volume("data") / "psb.duckdb"
    foreign.parent.mkdir(parents=True)
    foreign.write_bytes(b"records imported by the department")
    done = _run_init(compose, host)
    assert done.returncode == 3
    assert f"{host.volume('data')} holds {foreign}" in done.stderr
    assert "SEED_SYNTHETIC=0" in done.stderr
    assert foreign.read_bytes() == b"records imported by the department"
    assert not (host.volume("data") / "court.duckdb").exists()


def test_every_server_follows_the_crl_and_deny_list_init_publishes_and_a_second_run_keeps(
    compose: Compose, tmp_path: Path
) -> None:
    host = _host(tmp_path)
    done = _run_init(compose, host, SEED_SYNTHETIC="0")
    assert done.returncode == 0, done.stdout + done.stderr
    servers = [*compose.nodes.values(), compose.coordinator, compose.province]
    followed: dict[str, bytes] = {}
    for server in servers:
        mounted = host.mounted(server)
        flags = ("--crl",) if server is compose.province else ("--crl", "--token-deny-list")
        for flag in flags:
            path = Path(mounted.map(server.option(flag)))
            followed[f"{server.name} {flag}"] = path.read_bytes()
            if flag == "--crl":
                ca = load_ca_certificate(path.with_name("ca.pem"))
                assert verify_crl(path.read_bytes(), ca=ca, origin=str(path)).revoked == {}
            else:
                public = signing.load_public_key(path.with_name("issuer.pub"))
                deny = open_deny_list(
                    path.read_bytes(), public_key=public, issuer=DEFAULT_ISSUER, origin=str(path)
                )
                assert not deny.requesters and not deny.tokens
    again = _run_init(compose, host, SEED_SYNTHETIC="0")
    assert again.returncode == 0, again.stdout + again.stderr
    for server in servers:
        mounted = host.mounted(server)
        for name, data in followed.items():
            if name.startswith(server.name + " "):
                flag = name.split(" ", 1)[1]
                assert Path(mounted.map(server.option(flag))).read_bytes() == data

#!/bin/sh
# Prepares the compose volumes: platform CA and certificates, token issuer key, consent-receipt
# key, transparency log and witness keys with their roster (logs.toml), synthetic records, and
# what the provincial sync job and the reference provincial receiver need.
#
# Run by the `init` service before any node or the coordinator starts. Every step keeps what an
# earlier run completed, so `docker compose up` may run it any number of times; it never replaces
# the CA, the issuer key, the consent-receipt key, a log or witness key or department data. Paths
# and sizes come from the environment:
#
#   SECRETS_DIR       CA private key and token issuer private key (mounted only here)  /secrets
#   CERTS_DIR         what every service mounts: CA certificate and CRL, node and        /certs
#                     operator certificates and keys (each node's log.key beside its
#                     key.pem), issuer public key and token deny list, logs.toml (the
#                     public roster of logs and witnesses), and only the public
#                     half of the coordinator: coordinator/cert.pem and consent.pub
#                     (no CA key, no requester keys, no coordinator private key)
#   COORDINATOR_KEYS_DIR  what only the coordinator mounts: its certificate, TLS key     /keys
#                     (key.pem), consent-receipt key pair (consent.key, consent.pub),
#                     log signing key pair (log.key, log.pub) and witness key pair
#                     (witness.key, witness.pub)
#   DATA_DIR          department DuckDB files                                            /data
#   REPLICA_KEYS_DIR  coordinator replicas (docker-compose.replicas.yml): for each NAME    /replica-keys
#                     of COORDINATOR_REPLICAS, NAME/ holds what only that replica
#                     mounts: the coordinator's certificate, TLS key and consent-receipt
#                     key pair, and the replica's own log key pair (log.key, log.pub,
#                     named NAME.coordinator.osmanthus/audit); not the witness key
#   SYNC_DIR          what only the sync job mounts: its requester certificate and key,  /sync
#                     token, Paillier key, signing key pair, sync.toml, rosters,
#                     logs.toml (the logs whose checkpoints it carries to the witness)
#   PROVINCE_DIR      what only the provincial receiver mounts: its node certificate     /province
#                     and key, its witness key pair, the operator certificate for
#                     probes, senders.toml, logs.toml and the sync job's public
#                     signing key
#   REQUESTERS        space-separated requester ids to certify                          (none)
#   COORDINATOR_REPLICAS  space-separated names of the coordinator replicas besides      (none)
#                     `coordinator` (each is also its compose service name and host)
#   SYNC_REQUESTER    the sync job's requester id (certified whatever REQUESTERS says)   sync-1
#   SYNC_SENDER       the city's sender id in its batches and in senders.toml            suzhou
#   SYNC_TOKEN_DAYS   lifetime of the sync job's token in days (1 to 365); init issues   30
#                     a new one once the one it holds is two thirds through its life,
#                     or does not verify against the current issuer key
#   SEED_SYNTHETIC    1: fill an empty DATA_DIR with synthetic records; 0: leave it      1
#   SEED_PERSONS      synthetic persons                                                  2000
#   SEED_ENTERPRISES  synthetic enterprises                                              300
set -eu

SECRETS_DIR="${SECRETS_DIR:-/secrets}"
CERTS_DIR="${CERTS_DIR:-/certs}"
COORDINATOR_KEYS_DIR="${COORDINATOR_KEYS_DIR:-/keys}"
DATA_DIR="${DATA_DIR:-/data}"
SYNC_DIR="${SYNC_DIR:-/sync}"
PROVINCE_DIR="${PROVINCE_DIR:-/province}"
REPLICA_KEYS_DIR="${REPLICA_KEYS_DIR:-/replica-keys}"
REQUESTERS="${REQUESTERS:-}"
COORDINATOR_REPLICAS="${COORDINATOR_REPLICAS:-}"
SYNC_REQUESTER="${SYNC_REQUESTER:-sync-1}"
SYNC_SENDER="${SYNC_SENDER:-suzhou}"
SYNC_TOKEN_DAYS="${SYNC_TOKEN_DAYS:-30}"
SEED_SYNTHETIC="${SEED_SYNTHETIC:-1}"
SEED_PERSONS="${SEED_PERSONS:-2000}"
SEED_ENTERPRISES="${SEED_ENTERPRISES:-300}"

say() { echo "init: $*"; }
fail() {
    echo "init: error: $*" >&2
    exit 3
}
# Checked before anything is made, so that a bad setting leaves the volumes as they were. The
# days are matched as text: sh arithmetic reads a leading 0 as octal ("08" is an error) and
# overflows on long numbers. The ids end up in file names and in TOML strings, so they get the
# pattern of a certificate or sender name, which needs no quoting in either.
MAX_TOKEN_DAYS=365
case $SYNC_TOKEN_DAYS in
[1-9] | [1-9][0-9] | [1-9][0-9][0-9]) days_ok=$((SYNC_TOKEN_DAYS <= MAX_TOKEN_DAYS)) ;;
*) days_ok=0 ;;
esac
if [ "$days_ok" != 1 ]; then
    fail "SYNC_TOKEN_DAYS=$SYNC_TOKEN_DAYS: give the sync token lifetime in whole days," \
        "1 to $MAX_TOKEN_DAYS, without leading zeros"
fi
# the characters spelt out: a range such as a-z may match more letters in some locales
check_name() {
    case $2 in
    "" | *[!abcdefghijklmnopqrstuvwxyz0123456789_-]*) ;;
    *) [ ${#2} -gt 63 ] || return 0 ;;
    esac
    fail "$1=$2: use 1 to 63 lower-case letters, digits, '-' or '_'"
}
check_name SYNC_SENDER "$SYNC_SENDER"
check_name SYNC_REQUESTER "$SYNC_REQUESTER"
for replica in $COORDINATOR_REPLICAS; do
    check_name COORDINATOR_REPLICAS "$replica"
done

ca="$SECRETS_DIR/ca"

# --- platform CA and the certificates of every catalogue department ------------------------------
if [ -f "$ca/.complete" ]; then
    say "platform CA in $ca already exists: kept"
else
    # Without the marker the CA was never finished, so it was never copied to CERTS_DIR and
    # nothing trusts it yet: replacing it is safe.
    # shellcheck disable=SC2086  # REQUESTERS is a space-separated list, split on purpose
    osmanthus certs init --out "$ca" --overwrite --requesters $REQUESTERS
    touch "$ca/.complete"
fi
# Requesters added to REQUESTERS after the first run get their certificate now; so does the sync
# job, which is not in REQUESTERS so that overriding the list cannot leave it without one.
for requester in $REQUESTERS $SYNC_REQUESTER; do
    if [ ! -f "$ca/requesters/$requester/cert.pem" ]; then
        osmanthus certs issue --ca-dir "$ca" --role requester --name "$requester"
    fi
done
# The reference provincial receiver serves with a node certificate named `province`: the platform
# CA issues server certificates to nodes and the coordinator only (docs/province.md, Caveats).
if [ ! -f "$ca/nodes/province/cert.pem" ]; then
    osmanthus certs issue --ca-dir "$ca" --role node --name province
fi
# 'certs init' makes the coordinator's consent-receipt key; a CA made before receipts lacks it.
# An existing key is never replaced: receipts handed out verify only against it. A consent.pub
# without its consent.key means the key was lost, and 'certs consent-key' refuses (exit 3) to
# make a new one: restore the key from backup. A consent.key without its consent.pub (keygen
# stopped between the two files, or the public file was lost) gets its public half back.
if [ ! -f "$ca/coordinator/consent.key" ]; then
    osmanthus certs consent-key --ca-dir "$ca"
elif [ ! -f "$ca/coordinator/consent.pub" ]; then
    osmanthus certs consent-key --ca-dir "$ca" --restore-public
fi

# Each peer's transparency log key, the coordinator's witness key and the provincial receiver's
# ('certs init' makes all but the receiver's; a CA made before transparency logs, or a department
# certified later, lacks them), and logs.toml listing their public halves. An existing key is
# never replaced: the checkpoints and cosignatures it signed verify only against it. 'certs
# log-key' refuses (exit 3) a .pub without its key (restore the key from backup) and a roster
# that lists another key for the peer. It is run only for a key that is missing or that the
# roster does not list, so a complete CA costs no process per peer.
# usage: log_key ROLE NAME [--witness]
log_key() {
    if [ "$1" = coordinator ]; then
        key_dir="$ca/coordinator"
    else
        key_dir="$ca/nodes/$2"
    fi
    if [ "${3:-}" = --witness ]; then
        key_file=witness
    else
        key_file=log
    fi
    if [ -f "$key_dir/$key_file.key" ] && [ -f "$key_dir/$key_file.pub" ] &&
        [ -f "$ca/logs.toml" ] &&
        grep -qxF "key = \"$(cat "$key_dir/$key_file.pub")\"" "$ca/logs.toml"; then
        return 0
    fi
    osmanthus certs log-key --ca-dir "$ca" --role "$1" --name "$2" ${3:+"$3"}
}
for node in "$ca"/nodes/*; do
    if [ "${node##*/}" != province ]; then
        log_key node "${node##*/}"
    fi
done
log_key coordinator coordinator
log_key coordinator coordinator --witness
# Each coordinator replica writes an audit log of its own, so it signs it with a key and an
# origin of its own (NAME.coordinator.osmanthus/audit): two logs under one origin and key look
# like a fork to every witness. No witness key: a replica with the coordinator's witness key
# and a witness state of its own could cosign a node's split view twice.
for replica in $COORDINATOR_REPLICAS; do
    key_dir="$ca/coordinator/replicas/$replica"
    if [ -f "$key_dir/log.key" ] && [ -f "$key_dir/log.pub" ] && [ -f "$ca/logs.toml" ] &&
        grep -qxF "key = \"$(cat "$key_dir/log.pub")\"" "$ca/logs.toml"; then
        continue
    fi
    osmanthus certs log-key --ca-dir "$ca" --role coordinator --name coordinator \
        --replica "$replica"
done
# the reference provincial receiver witnesses every log: the sync job carries it the checkpoints
log_key node province --witness

# The CA's CRL: 'certs init' writes the first (empty) one; a CA made before revocation gets it
# here. An existing CRL is kept: 'osmanthus certs revoke' and 'certs crl' replace it.
if [ ! -f "$ca/crl.pem" ]; then
    osmanthus certs crl --ca-dir "$ca"
fi

# --- token issuer key pair ------------------------------------------------------------------------
if [ -f "$SECRETS_DIR/issuer.pub" ]; then
    say "token issuer key in $SECRETS_DIR already exists: kept"
else
    # The public key is written after the private one, so without it keygen never finished and
    # no token was signed with a leftover private key.
    osmanthus token keygen --overwrite \
        --private "$SECRETS_DIR/issuer.key" --public "$SECRETS_DIR/issuer.pub"
fi
# The issuer's deny list, empty at first; 'osmanthus token revoke' adds to it. An existing one is
# kept, never deleted: the servers hold its sequence, and a new list at sequence 1 would be
# ignored by all of them with every revocation in it. A list left from an earlier issuer key does
# not verify and is refused by every server: it is signed again for the current key at its
# sequence + 1 ('token deny-list --reset', which says so loudly and keeps its entries).
deny="$SECRETS_DIR/token-deny.json"
if [ -f "$deny" ] && ! python - "$deny" "$SECRETS_DIR/issuer.pub" <<'PY'
import sys
from pathlib import Path

from osmanthus.core.denylist import open_deny_list
from osmanthus.core.errors import OsmanthusError
from osmanthus.core.signing import load_public_key
from osmanthus.core.tokens import DEFAULT_ISSUER

path, public = sys.argv[1:]
try:
    open_deny_list(Path(path).read_bytes(), public_key=load_public_key(Path(public)),
                   issuer=DEFAULT_ISSUER, origin=path)
except OsmanthusError as exc:
    print(f"init: {exc}", file=sys.stderr)
    sys.exit(1)
PY
then
    say "WARNING: token deny list $deny does not verify against the issuer key: signing it again"
    osmanthus token deny-list --reset --issuer-key "$SECRETS_DIR/issuer.key" --deny-list "$deny"
fi
if [ ! -f "$deny" ]; then
    osmanthus token deny-list --issuer-key "$SECRETS_DIR/issuer.key" --deny-list "$deny"
fi

# Copied aside and moved in, so a server following the file never reads half of it.
publish() {
    cp "$1" "$2.tmp"
    mv "$2.tmp" "$2"
}

# --- what the services mount ----------------------------------------------------------------------
# Copied on every run, so a certificate re-issued into SECRETS_DIR reaches the services at their
# next restart. The CA key and the requesters' keys stay in SECRETS_DIR.
# Every node mounts CERTS_DIR, so the coordinator's private keys never go there: with them a node
# could forge consent receipts, sign checkpoints and cosignatures as the coordinator and pose as
# it. Nor do the provincial receiver's keys: with them a node could pose as the province to the
# sync job, or cosign checkpoints as the province's witness. Volumes filled by earlier versions of
# this script may hold them (the receiver's when its certificate was issued by hand into the CA
# directory, which used to be copied whole); they are removed first.
rm -f "$CERTS_DIR/coordinator/key.pem" "$CERTS_DIR/coordinator/consent.key" \
    "$CERTS_DIR/coordinator/log.key" "$CERTS_DIR/coordinator/witness.key"
rm -rf "$CERTS_DIR/nodes/province" "$CERTS_DIR/coordinator/replicas"
mkdir -p "$CERTS_DIR/coordinator" "$CERTS_DIR/nodes"
for part in ca.pem operator; do
    cp -R "$ca/$part" "$CERTS_DIR/"
done
for node in "$ca"/nodes/*; do
    if [ "${node##*/}" != province ]; then
        cp -R "$node" "$CERTS_DIR/nodes/"
    fi
done
cp "$ca/coordinator/cert.pem" "$ca/coordinator/consent.pub" "$CERTS_DIR/coordinator/"
cp "$SECRETS_DIR/issuer.pub" "$CERTS_DIR/issuer.pub"
# what every server follows without a restart: run init again after a revocation to pass it on
publish "$ca/crl.pem" "$CERTS_DIR/crl.pem"
publish "$deny" "$CERTS_DIR/token-deny.json"
# public: the nodes keep the cosignatures of the witnesses it lists, the coordinator witnesses the
# logs it lists
publish "$ca/logs.toml" "$CERTS_DIR/logs.toml"
say "certificates, CRL, issuer public key, token deny list, consent.pub and logs.toml in $CERTS_DIR"
# only init and the coordinator mount this one
mkdir -p "$COORDINATOR_KEYS_DIR"
chmod 0700 "$COORDINATOR_KEYS_DIR"
for part in cert.pem key.pem consent.key consent.pub log.key log.pub witness.key witness.pub; do
    cp "$ca/coordinator/$part" "$COORDINATOR_KEYS_DIR/$part"
done
# owner-only whatever mode an earlier copy left: the coordinator refuses a key others may read
chmod 0600 "$COORDINATOR_KEYS_DIR/key.pem" "$COORDINATOR_KEYS_DIR/consent.key" \
    "$COORDINATOR_KEYS_DIR/log.key" "$COORDINATOR_KEYS_DIR/witness.key"
say "coordinator certificate, TLS key, consent-receipt, log and witness key pairs in" \
    "$COORDINATOR_KEYS_DIR"
# Each replica's directory (its own volume in docker-compose.replicas.yml): the coordinator's
# certificate, TLS and consent keys, which the replicas share, and its own log key; never the
# first coordinator's log key or the witness key, and no replica's key in another's volume.
for replica in $COORDINATOR_REPLICAS; do
    replica_keys="$REPLICA_KEYS_DIR/$replica"
    mkdir -p "$replica_keys"
    chmod 0700 "$replica_keys"
    rm -f "$replica_keys/witness.key" "$replica_keys/witness.pub"
    for part in cert.pem key.pem consent.key consent.pub; do
        cp "$ca/coordinator/$part" "$replica_keys/$part"
    done
    cp "$ca/coordinator/replicas/$replica/log.key" "$ca/coordinator/replicas/$replica/log.pub" \
        "$replica_keys/"
    chmod 0600 "$replica_keys/key.pem" "$replica_keys/consent.key" "$replica_keys/log.key"
    say "coordinator replica $replica: certificate, TLS key, consent-receipt key pair and its" \
        "own log key pair in $replica_keys"
done

# --- synthetic department records -----------------------------------------------------------------
mkdir -p "$DATA_DIR"
if [ "$SEED_SYNTHETIC" != 1 ]; then
    say "SEED_SYNTHETIC=$SEED_SYNTHETIC: no synthetic records; import each department's records"
elif [ -f "$DATA_DIR/.seeded" ]; then
    say "synthetic records in $DATA_DIR already exist: kept"
else
    for existing in "$DATA_DIR"/*.duckdb; do
        if [ -e "$existing" ]; then
            fail "$DATA_DIR holds $existing but init did not finish seeding it: refusing to mix" \
                "synthetic and other records. Set SEED_SYNTHETIC=0 to keep imported data, or" \
                "delete the *.duckdb files an interrupted seed left behind and run init again."
        fi
    done
    # Seeded into a staging directory and moved in with the marker last, so an interrupted run
    # never leaves a data directory that looks complete.
    staging="$DATA_DIR/.seeding"
    rm -rf "$staging"
    osmanthus seed --quiet --out "$staging" \
        --persons "$SEED_PERSONS" --enterprises "$SEED_ENTERPRISES"
    touch "$staging/.seeded"
    mv "$staging"/* "$staging/.seeded" "$DATA_DIR/"
    rmdir "$staging"
fi

# --- the provincial sync job ----------------------------------------------------------------------
# SYNC_DIR belongs to the job: only init and the sync service mount it. The job's Paillier key and
# signing key are made here, not in SECRETS_DIR: they are the job's, not the platform's, which
# certifies the job and issues its token but needs no key that decrypts what the job asks or
# signs the city's batches.
mkdir -p "$SYNC_DIR/tls/requesters" "$SYNC_DIR/keys" "$SYNC_DIR/rosters"
chmod 0700 "$SYNC_DIR"
cp "$ca/ca.pem" "$SYNC_DIR/tls/ca.pem"
cp -R "$ca/requesters/$SYNC_REQUESTER" "$SYNC_DIR/tls/requesters/"
publish "$ca/logs.toml" "$SYNC_DIR/logs.toml"

paillier="$SYNC_DIR/$SYNC_REQUESTER.paillier"
token="$SYNC_DIR/$SYNC_REQUESTER.jwt"
if [ -f "$paillier" ]; then
    say "sync job's Paillier key $paillier already exists: kept"
else
    # a token names the fingerprint of one key: a token left from a lost key is useless
    rm -f "$token"
    say "sync job's Paillier key $paillier made: $(osmanthus keys create --out "$paillier")"
fi
# The job reads its token file before every run, so a token renewed here reaches a running job
# without a restart. Whether to renew is read from the token itself, not from the file's time
# (a restored volume resets that): a token is renewed once it is two thirds through its life, so
# run init more often than a third of SYNC_TOKEN_DAYS (docs/deployment.md), or the job's runs fail
# as unauthenticated once it has expired. It is renewed at once when it does not verify against
# the current issuer key (the secrets volume was recreated while sync-config was kept), names
# another Paillier key (that file was lost), grants other than what is issued below, or was
# issued for a lifetime other than SYNC_TOKEN_DAYS (the setting was changed).
purposes="credit_rescoring statistics"
# Prints "keep: WHY" or "renew: WHY"; a file it needs but cannot read fails init (exit 3).
token_verdict() {
    # shellcheck disable=SC2086  # purposes is a space-separated list, split on purpose
    python - "$token" "$SECRETS_DIR/issuer.pub" "$paillier" "$SYNC_REQUESTER" \
        "$SYNC_TOKEN_DAYS" $purposes <<'PY'
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from osmanthus.core.crypto import PrivateKey
from osmanthus.core.errors import OsmanthusError, Unauthenticated
from osmanthus.core.tokens import ReplayCache, TokenVerifier
from osmanthus.core.types import Role

token_file, issuer_pub, paillier, requester, days, *purposes = sys.argv[1:]


def verdict() -> str:
    token_path = Path(token_file)
    # undecodable bytes are kept as such, so that the verifier calls the token malformed
    token = token_path.read_bytes().decode(errors="replace").strip() if token_path.exists() else ""
    if not token:
        return "renew: there was none"
    verifier = TokenVerifier.from_file(Path(issuer_pub), replay_cache=ReplayCache())
    try:
        claims = verifier.verify(token)
    except Unauthenticated as exc:
        return f"renew: it does not verify against {issuer_pub}: {exc}"
    key = PrivateKey.from_json(Path(paillier).read_text(encoding="utf-8"))
    granted = (claims.requester, claims.role, claims.purposes, claims.key_fingerprint)
    if granted != (requester, Role.SYNC_JOB, frozenset(purposes), key.public_key.fingerprint):
        return "renew: its requester, role, purposes or Paillier key are not those init issues"
    lifetime = claims.expires_at - claims.issued_at
    if lifetime != timedelta(days=int(days)):
        return f"renew: it was issued for {lifetime / timedelta(days=1):g} days, not {days}"
    renew_at = claims.issued_at + lifetime * 2 / 3
    if datetime.now(UTC) >= renew_at:
        return f"renew: it is two thirds through its life since {renew_at:%Y-%m-%d %H:%M} UTC"
    return (
        f"keep: it expires {claims.expires_at:%Y-%m-%d %H:%M} UTC; the first run of init"
        f" from {renew_at:%Y-%m-%d %H:%M} UTC renews it"
    )


try:
    print(verdict())
except (OsmanthusError, OSError, ValueError) as exc:
    print(f"init: error: deciding whether to renew {token_file}: {exc}", file=sys.stderr)
    sys.exit(3)
PY
}
verdict=$(token_verdict)
case $verdict in
keep:*)
    say "sync job's token $token kept: ${verdict#keep: }"
    ;;
*)
    fingerprint=$(osmanthus keys fingerprint "$paillier")
    # one --purpose flag for each of the purposes token_verdict compares with
    set --
    for purpose in $purposes; do
        set -- "$@" --purpose "$purpose"
    done
    # written aside and moved in, so a running job never reads half a token
    (
        umask 077
        osmanthus token issue --issuer-key "$SECRETS_DIR/issuer.key" \
            --requester "$SYNC_REQUESTER" --role sync_job "$@" \
            --key-fingerprint "$fingerprint" --ttl "${SYNC_TOKEN_DAYS}d" >"$token.tmp"
    )
    mv "$token.tmp" "$token"
    say "sync job's token $token issued for $SYNC_TOKEN_DAYS days (${verdict#renew: })"
    ;;
esac

signing="$SYNC_DIR/keys/$SYNC_SENDER-sync"
if [ -f "$signing.pub" ]; then
    say "sync signing key $signing.key already exists: kept"
else
    # The public half is written after the private one, so without it keygen never finished and
    # the province never registered a leftover private key.
    rm -f "$signing.key"
    osmanthus province keygen --out-dir "$SYNC_DIR/keys" --name "$SYNC_SENDER-sync"
fi

# The enterprises to grade, and the cohort of the statistics: every enterprise of the synthetic
# records. With imported records, put a CSV with a subject_id column here and run init again.
roster="$SYNC_DIR/rosters/enterprises.csv"
if [ -f "$roster" ]; then
    say "enterprise roster $roster already exists: kept"
elif [ -f "$DATA_DIR/subjects.csv" ]; then
    if ! awk -F, '
        { sub(/\r$/, "") }
        NR == 1 {
            for (i = 1; i <= NF; i++) column[$i] = i
            if (!("subject_kind" in column) || !("subject_id" in column)) exit 3
            print "subject_id"
            next
        }
        $column["subject_kind"] == "enterprise" { print $column["subject_id"] }
    ' "$DATA_DIR/subjects.csv" >"$roster.tmp"; then
        rm -f "$roster.tmp"
        fail "$DATA_DIR/subjects.csv has no subject_kind and subject_id header"
    fi
    mv "$roster.tmp" "$roster"
fi

# sync.toml is made from the files above on every run. Its paths are where the sync service
# mounts them (docker-compose.yml: this volume at /sync, its own state volume at /state), its
# targets the compose services. A deployment that reports to the real provincial platform gives
# the job a file of its own instead (docs/deployment.md).
{
    cat <<TOML
# Written by deploy/init.sh on every run: an edit here is lost (see docs/deployment.md).
sender = "$SYNC_SENDER"
signing_key = "/sync/keys/$SYNC_SENDER-sync.key"
state_dir = "/state/sync"

[coordinator]
target = "coordinator:50050"
requester = "$SYNC_REQUESTER"
token_file = "/sync/$SYNC_REQUESTER.jwt"
paillier_keys = "/sync/$SYNC_REQUESTER.paillier"
certs_dir = "/sync/tls"

[province]
target = "province:50060"

[lists]
every = "0s"

# every run, each log's latest checkpoint (read through the coordinator) to the receiver's witness
[checkpoints]
logs = "/sync/logs.toml"
TOML
    if [ -n "$COORDINATOR_REPLICAS" ]; then
        printf '\n# each coordinator replica serves its own log: read there\n[checkpoints.replicas]\n'
        for replica in $COORDINATOR_REPLICAS; do
            printf '%s = "%s:50050"\n' "$replica" "$replica"
        done
    fi
    if [ -f "$roster" ]; then
        cat <<TOML

[grades]
enterprises = "/sync/rosters/enterprises.csv"
every = "1d"

# ε 0.01 a day for one statistic spends 3.65 a year of the central policy's 50. Against a few
# hundred enterprises the noise drowns the sum: it shows the stream, not a usable value.
[[statistics]]
name = "enterprises.all"
subject_kind = "enterprise"
subjects = "/sync/rosters/enterprises.csv"
epsilon = "0.01"
statistics = ["deductions"]
every = "1d"
TOML
    else
        # to stderr: stdout is the file
        say "no enterprise roster in $SYNC_DIR/rosters: the sync job reports list changes only" >&2
    fi
} >"$SYNC_DIR/sync.toml.tmp"
mv "$SYNC_DIR/sync.toml.tmp" "$SYNC_DIR/sync.toml"
say "sync job's certificate, keys, token and sync.toml in $SYNC_DIR"

# --- the reference provincial receiver ------------------------------------------------------------
# PROVINCE_DIR belongs to the receiver: only init and the province service mount it. It holds the
# receiver's certificate and key, its witness key (beside them), the operator certificate for its
# health check and for 'province batches', senders.toml and logs.toml (the logs it witnesses); of
# the sync job only the public signing key.
mkdir -p "$PROVINCE_DIR/tls/nodes" "$PROVINCE_DIR/senders"
chmod 0700 "$PROVINCE_DIR"
cp "$ca/ca.pem" "$PROVINCE_DIR/tls/ca.pem"
cp -R "$ca/nodes/province" "$PROVINCE_DIR/tls/nodes/"
cp -R "$ca/operator" "$PROVINCE_DIR/tls/"
publish "$ca/crl.pem" "$PROVINCE_DIR/tls/crl.pem"
publish "$ca/logs.toml" "$PROVINCE_DIR/logs.toml"
cp "$signing.pub" "$PROVINCE_DIR/senders/$SYNC_SENDER-sync.pub"
cat >"$PROVINCE_DIR/senders.toml.tmp" <<TOML
# Written by deploy/init.sh on every run: an edit here is lost (see docs/deployment.md).
[[sender]]
id = "$SYNC_SENDER"
public_keys = ["senders/$SYNC_SENDER-sync.pub"]
certificates = ["$SYNC_REQUESTER"]
TOML
mv "$PROVINCE_DIR/senders.toml.tmp" "$PROVINCE_DIR/senders.toml"
say "provincial receiver's certificate, witness key, senders.toml, logs.toml and the city's" \
    "public key in $PROVINCE_DIR"
say "done"

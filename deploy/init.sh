#!/bin/sh
# Prepares the compose volumes: platform CA and certificates, token issuer key, consent-receipt
# key, synthetic records.
#
# Run by the `init` service before any node or the coordinator starts. Every step keeps what an
# earlier run completed, so `docker compose up` may run it any number of times; it never replaces
# the CA, the issuer key, the consent-receipt key or department data. Paths and sizes come from
# the environment:
#
#   SECRETS_DIR       CA private key and token issuer private key (mounted only here)  /secrets
#   CERTS_DIR         what every service mounts: CA certificate, node and operator      /certs
#                     certificates and keys, issuer public key, and only the public
#                     half of the coordinator: coordinator/cert.pem and consent.pub
#                     (no CA key, no requester keys, no coordinator private key)
#   COORDINATOR_KEYS_DIR  what only the coordinator mounts: its certificate, TLS key     /keys
#                     (key.pem) and consent-receipt key pair (consent.key, consent.pub)
#   DATA_DIR          department DuckDB files                                            /data
#   REQUESTERS        space-separated requester ids to certify                          (none)
#   SEED_SYNTHETIC    1: fill an empty DATA_DIR with synthetic records; 0: leave it      1
#   SEED_PERSONS      synthetic persons                                                  2000
#   SEED_ENTERPRISES  synthetic enterprises                                              300
set -eu

SECRETS_DIR="${SECRETS_DIR:-/secrets}"
CERTS_DIR="${CERTS_DIR:-/certs}"
COORDINATOR_KEYS_DIR="${COORDINATOR_KEYS_DIR:-/keys}"
DATA_DIR="${DATA_DIR:-/data}"
REQUESTERS="${REQUESTERS:-}"
SEED_SYNTHETIC="${SEED_SYNTHETIC:-1}"
SEED_PERSONS="${SEED_PERSONS:-2000}"
SEED_ENTERPRISES="${SEED_ENTERPRISES:-300}"

say() { echo "init: $*"; }
fail() {
    echo "init: error: $*" >&2
    exit 3
}

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
# Requesters added to REQUESTERS after the first run get their certificate now.
for requester in $REQUESTERS; do
    if [ ! -f "$ca/requesters/$requester/cert.pem" ]; then
        osmanthus certs issue --ca-dir "$ca" --role requester --name "$requester"
    fi
done
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

# --- token issuer key pair ------------------------------------------------------------------------
if [ -f "$SECRETS_DIR/issuer.pub" ]; then
    say "token issuer key in $SECRETS_DIR already exists: kept"
else
    # The public key is written after the private one, so without it keygen never finished and
    # no token was signed with a leftover private key.
    osmanthus token keygen --overwrite \
        --private "$SECRETS_DIR/issuer.key" --public "$SECRETS_DIR/issuer.pub"
fi

# --- what the services mount ----------------------------------------------------------------------
# Copied on every run, so a certificate re-issued into SECRETS_DIR reaches the services at their
# next restart. The CA key and the requesters' keys stay in SECRETS_DIR.
# Every node mounts CERTS_DIR, so the coordinator's private keys never go there: with them a node
# could forge consent receipts and pose as the coordinator. Volumes filled by earlier versions of
# this script hold them; they are removed first.
rm -f "$CERTS_DIR/coordinator/key.pem" "$CERTS_DIR/coordinator/consent.key"
mkdir -p "$CERTS_DIR/coordinator"
for part in ca.pem nodes operator; do
    cp -R "$ca/$part" "$CERTS_DIR/"
done
cp "$ca/coordinator/cert.pem" "$ca/coordinator/consent.pub" "$CERTS_DIR/coordinator/"
cp "$SECRETS_DIR/issuer.pub" "$CERTS_DIR/issuer.pub"
say "certificates, issuer public key and consent.pub in $CERTS_DIR"
# only init and the coordinator mount this one
mkdir -p "$COORDINATOR_KEYS_DIR"
chmod 0700 "$COORDINATOR_KEYS_DIR"
for part in cert.pem key.pem consent.key consent.pub; do
    cp "$ca/coordinator/$part" "$COORDINATOR_KEYS_DIR/$part"
done
say "coordinator certificate, TLS key and consent-receipt key pair in $COORDINATOR_KEYS_DIR"

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
say "done"

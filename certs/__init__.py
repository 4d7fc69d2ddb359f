"""Platform CA tooling: the certificate authority and the mutual-TLS certificates it issues.

How peers are named (roles, SPIFFE ids, the certificate directory's layout) is the core's
(osmanthus.core.peers): servers read it without this package. Re-exported here for operators'
scripts that already import it from `certs`.
"""

from certs.authority import (
    MAX_VALIDITY_DAYS,
    ConsentKeyPaths,
    consent_key_paths,
    create_consent_key,
    init_platform,
    issue_certificate,
    restore_consent_public_key_file,
)
from osmanthus.core.peers import (
    CA_CERT_FILE,
    CA_KEY_FILE,
    CERT_FILE,
    COORDINATOR_DNS_NAME,
    COORDINATOR_NAME,
    DEFAULT_OPERATOR_NAME,
    KEY_FILE,
    NODE_DNS_SUFFIX,
    SPIFFE_PREFIX,
    TRUST_DOMAIN,
    CertPaths,
    PeerRole,
    cert_paths,
    node_dns_name,
    parse_spiffe_uri,
    peer_dir,
    spiffe_uri,
    validate_name,
)

__all__ = [
    "CA_CERT_FILE",
    "CA_KEY_FILE",
    "CERT_FILE",
    "COORDINATOR_DNS_NAME",
    "COORDINATOR_NAME",
    "DEFAULT_OPERATOR_NAME",
    "KEY_FILE",
    "MAX_VALIDITY_DAYS",
    "NODE_DNS_SUFFIX",
    "SPIFFE_PREFIX",
    "TRUST_DOMAIN",
    "CertPaths",
    "ConsentKeyPaths",
    "PeerRole",
    "cert_paths",
    "consent_key_paths",
    "create_consent_key",
    "init_platform",
    "issue_certificate",
    "node_dns_name",
    "parse_spiffe_uri",
    "peer_dir",
    "restore_consent_public_key_file",
    "spiffe_uri",
    "validate_name",
]

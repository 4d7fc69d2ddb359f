"""osmanthus.core.status: the catalogue's fingerprint and an audit log's standing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from osmanthus.core.audit import AuditLog
from osmanthus.core.catalogue import load_catalogue
from osmanthus.core.status import AuditStanding, audit_standing, catalogue_digest
from tests.integration.conftest import restricted_catalogue

_PRINT_DIGEST = (
    "from osmanthus.core.catalogue import load_catalogue;"
    "from osmanthus.core.status import catalogue_digest;"
    "print(catalogue_digest(load_catalogue()))"
)


def test_the_catalogue_digest_is_the_same_in_every_process() -> None:
    # sets iterate in string-hash order, which differs from one process to the next
    digests = set()
    for seed in ("1", "2", "3"):
        out = subprocess.run(
            [sys.executable, "-c", _PRINT_DIGEST],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        )
        digests.add(out.stdout.strip())
    assert digests == {catalogue_digest(load_catalogue())}


def test_another_catalogue_has_another_digest() -> None:
    assert catalogue_digest(restricted_catalogue(["psb", "tax"])) != catalogue_digest(
        load_catalogue()
    )


def test_a_log_without_a_key_has_no_checkpoint(tmp_path: Path) -> None:
    log = AuditLog(path=tmp_path / "audit.jsonl", salt=b"s" * 32)
    try:
        standing = audit_standing(log, None)
    finally:
        log.close()
    assert standing == AuditStanding(entries=0, checkpoints=False)
    assert standing.unsigned_entries == 0

"""A process that owns a key-holding pool, for tests that kill it: `python THIS KIND KEY_FILE`.

It loads the requester's private key from KEY_FILE (PrivateKey.to_json), starts a pool of two
workers of KIND and gives it work, so that both workers run; then it prints one JSON line,
{"workers": [pids], "forked": pid or null}, and waits for its stdin to close. KIND is

- decryptor: a `ParallelDecryptor` (the SDK's batch decryption);
- zero-tests: a `ZeroTestPool` (the coordinator's zero tests);
- decryptor-and-fork: a `ParallelDecryptor`, then a child made by os.fork that lives on
  (until stdin closes): it must not keep the workers alive after this process dies;
- unowned: a plain ProcessPoolExecutor on a fork server whose workers hold the key, as the
  pools were before their workers died with their owner (the tests' positive control).
"""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from osmanthus.core.crypto import PARALLEL_MIN_PER_WORKER, PrivateKey
from osmanthus.core.lifeline import pool_context
from osmanthus.core.workers import (
    ZERO_TEST_MIN_PARALLEL,
    ParallelDecryptor,
    ZeroTestPool,
    _decrypt_in_worker,
    _init_worker,
)

WORKERS = 2
#: lists given to a pool until it runs WORKERS processes: a pool starts another worker only when
#: work arrives while the ones it has are busy, which the first list or two nearly always brings
MAX_ROUNDS = 1000


def main(kind: str, key_file: Path) -> int:
    private = PrivateKey.from_json(key_file.read_text())
    public = private.public_key
    forked = None
    # kept referenced until this process ends: the pools must not be collected meanwhile
    pools: list[object] = []
    if kind in ("decryptor", "decryptor-and-fork"):
        decryptor = ParallelDecryptor(private, workers=WORKERS)
        pools.append(decryptor)
        values = list(range(PARALLEL_MIN_PER_WORKER * WORKERS))
        ciphertexts = [public.encrypt(v) for v in values]
        for _ in range(MAX_ROUNDS):
            assert decryptor.decrypt(ciphertexts) == values
            if len(decryptor.worker_pids()) == WORKERS:
                break
        workers = decryptor.worker_pids()
        if kind == "decryptor-and-fork":
            forked = os.fork()
            if forked == 0:
                os.read(0, 1)  # until the test closes stdin
                os._exit(0)
    elif kind == "zero-tests":
        zero_tests = ZeroTestPool(workers=WORKERS)
        pools.append(zero_tests)
        total = public.encrypt(5)
        for _ in range(MAX_ROUNDS):
            tests = zero_tests.blinded_zero_tests(
                public, total, range(ZERO_TEST_MIN_PARALLEL), fresh_zero=lambda: public.encrypt(0)
            )
            assert [private.is_zero(c) for c in tests].count(True) == 1
            if len(zero_tests.worker_pids()) == WORKERS:
                break
        workers = zero_tests.worker_pids()
    elif kind == "unowned":
        executor = ProcessPoolExecutor(
            max_workers=WORKERS,
            mp_context=pool_context(),
            initializer=_init_worker,
            initargs=private._worker_args(),
        )
        pools.append(executor)
        c = public.encrypt(7).value
        for _ in range(MAX_ROUNDS):
            assert list(executor.map(_decrypt_in_worker, [[c]] * WORKERS)) == [[7]] * WORKERS
            if len(executor._processes) == WORKERS:
                break
        workers = sorted(executor._processes)
    else:
        print(f"unknown kind {kind!r}", file=sys.stderr)
        return 2
    print(json.dumps({"workers": workers, "forked": forked}), flush=True)
    sys.stdin.read()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], Path(sys.argv[2])))

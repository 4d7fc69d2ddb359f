"""Paillier work on several cores: `ParallelDecryptor` (requester) and `ZeroTestPool` (coordinator).

Both keep one pool of worker processes for their life. A decryption worker holds the requester's
private key and a zero-test worker a secret blinding table, so every pool is an `OwnedPool`
(osmanthus/core/lifeline.py): its workers, the fork server and the resource tracker exit as soon
as the process that owns them dies, even by `kill -9`.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from types import TracebackType
from typing import Any, TypeVar

import gmpy2

from osmanthus.core.crypto import (
    PARALLEL_MIN_PER_WORKER,
    Ciphertext,
    FastEncryptor,
    PrivateKey,
    PublicKey,
    _fixed_base_powers,
    resolve_workers,
)
from osmanthus.core.errors import CryptoError, FailedPrecondition
from osmanthus.core.lifeline import OwnedPool

_log = logging.getLogger(__name__)

_R = TypeVar("_R")

#: zero tests below this many are made in the calling process: a pool trip costs more
ZERO_TEST_MIN_PARALLEL = 24

#: the private key of a decryption worker process, set once by its pool's initializer
_worker_key: PrivateKey | None = None


def _init_worker(n: int, p: int, q: int) -> None:
    global _worker_key
    _worker_key = PrivateKey(public_key=PublicKey(n=n), p=p, q=q)


def _decrypt_in_worker(values: list[int]) -> list[int]:
    key = _worker_key
    if key is None:
        raise CryptoError("this decryption worker never received its key", field="workers")
    return [key._decrypt_value(value) for value in values]


def _is_zero_in_worker(values: list[int]) -> list[bool]:
    key = _worker_key
    if key is None:
        raise CryptoError("this decryption worker never received its key", field="workers")
    return [key._is_zero_value(value) for value in values]


#: a zero-test worker's fast encryptors, by modulus, for the fresh E(0) of each test
_worker_blinders: OrderedDict[int, FastEncryptor] = OrderedDict()
#: requester keys a zero-test worker keeps a table for (~54 MB each at 2048 bits)
_WORKER_BLINDER_KEYS = 2


def _zero_tests_in_worker(n: int, base: int, exponents: list[int]) -> list[int]:
    """base^e · E(0) for each e: the power and its fresh randomness, on this worker's core."""
    modulus = gmpy2.mpz(n) * n
    blinder = _worker_blinders.get(n)
    if blinder is None:
        # its own secret r0 and table, built once per key in this worker
        blinder = FastEncryptor(public_key=PublicKey(n=n))
        _worker_blinders[n] = blinder
        while len(_worker_blinders) > _WORKER_BLINDER_KEYS:
            _worker_blinders.popitem(last=False)
    _worker_blinders.move_to_end(n)
    return [
        int(c * blinder.encrypt(0).value % modulus)
        for c in _fixed_base_powers(gmpy2.mpz(base), exponents, modulus)
    ]


def _slices(values: list[int], count: int) -> list[list[int]]:
    """`values` cut into `count` contiguous slices whose lengths differ by at most one."""
    size, extra = divmod(len(values), count)
    slices, start = [], 0
    for index in range(count):
        end = start + size + (1 if index < extra else 0)
        slices.append(values[start:end])
        start = end
    return slices


class ParallelDecryptor:
    """Decrypts list after list of ciphertexts on several cores with one pool of processes.

    Each worker process receives the private key once, from the pool's initializer when it
    starts; a task carries ciphertext values only and its result plaintexts only. A list
    shorter than PARALLEL_MIN_PER_WORKER × workers is decrypted in the calling process, as is
    every list when workers is 1 (no process is started then). Worker processes start with the
    first long list. Close the decryptor (or use it as a context manager) to stop them.

    Worker processes are started by a fork server (spawned where there is none), so a program
    that uses this from its main script needs the usual `if __name__ == "__main__":` guard.
    They exit when this process dies, even by `kill -9` (osmanthus/core/lifeline.py).
    """

    def __init__(self, private_key: PrivateKey, *, workers: int | None = None) -> None:
        self._key = private_key
        self.workers = resolve_workers(workers)
        self._lock = threading.Lock()
        self._closed = False
        self._pool: OwnedPool | None = None
        if self.workers > 1:
            # the workers exit with this process, however it ends (lifeline.py)
            self._pool = OwnedPool(
                workers=self.workers,
                initializer=_init_worker,
                initargs=private_key._worker_args(),
            )
            # a decryptor dropped without close() must not leave processes holding the key
            self._finalizer = weakref.finalize(
                self, self._pool.shutdown, wait=False, cancel_futures=True
            )

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"ParallelDecryptor({self._key!r}, workers={self.workers}, {state})"

    def worker_pids(self) -> list[int]:
        """Process ids of the workers started so far (none before the first long list)."""
        pool = self._pool
        return pool.pids() if pool is not None else []

    def decrypt(self, ciphertexts: Sequence[Ciphertext]) -> list[int]:
        """Plaintexts in [0, n) of `ciphertexts`, in their order."""
        return self._map(ciphertexts, _decrypt_in_worker, self._key._decrypt_value)

    def zero_flags(self, ciphertexts: Sequence[Ciphertext]) -> list[bool]:
        """Whether each ciphertext decrypts to 0 (see `PrivateKey.is_zero`), in order."""
        return self._map(ciphertexts, _is_zero_in_worker, self._key._is_zero_value)

    def _map(
        self,
        ciphertexts: Sequence[Ciphertext],
        in_worker: Callable[[list[int]], list[_R]],
        in_process: Callable[[int], _R],
    ) -> list[_R]:
        with self._lock:
            if self._closed:
                raise FailedPrecondition(
                    "the parallel decryptor is closed; create a new one", field="decryptor"
                )
            values = self._key._values_of(ciphertexts)
            pool = self._pool
            if pool is None or len(values) < PARALLEL_MIN_PER_WORKER * self.workers:
                parts = None
            else:
                # one slice per worker: finer slices would balance a worker slowed by other
                # load, but each task's trip through the pool's queues and threads cost more
                # than that gained when measured (24 ciphertexts, 2 workers: 1 slice each
                # ~5-15 % faster than 2 to 12)
                try:
                    # submitted under the lock so that close() cannot stop the pool in between
                    parts = pool.map(in_worker, _slices(values, self.workers))
                except BrokenProcessPool as exc:
                    raise _broken(exc) from exc
        if parts is None:
            return [in_process(value) for value in values]
        try:
            return [result for part in parts for result in part]
        except BrokenProcessPool as exc:
            raise _broken(exc) from exc

    def decrypt_signed(self, ciphertexts: Sequence[Ciphertext]) -> list[int]:
        """Signed plaintexts (see `PrivateKey.decrypt_signed`) of `ciphertexts`, in order."""
        return [
            self._key._signed(m, field=f"ciphertexts[{i}]")
            for i, m in enumerate(self.decrypt(ciphertexts))
        ]

    def close(self) -> None:
        """Stop the worker processes after the calls in progress; later calls are refused."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._pool is not None:
            self._finalizer.detach()
            self._pool.shutdown(wait=True)

    def __enter__(self) -> ParallelDecryptor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class ZeroTestPool:
    """Makes re-randomised zero tests (`PublicKey.zero_tests` × a fresh E(0)) on several cores.

    The random multipliers are drawn in the calling process; each worker raises the one base
    to its share of them and multiplies each by a fresh E(0) of its own fixed-base table (built
    once per key per worker). Lists shorter than ZERO_TEST_MIN_PARALLEL stay in the caller,
    which re-randomises them with `fresh_zero`.
    """

    def __init__(self, *, workers: int | None = None) -> None:
        self.workers = resolve_workers(workers)
        self._lock = threading.Lock()
        self._closed = False
        self._pool: OwnedPool | None = None
        if self.workers > 1:
            # the workers' blinding tables are secret too: they exit with this process
            self._pool = OwnedPool(workers=self.workers)
            self._finalizer = weakref.finalize(
                self, self._pool.shutdown, wait=False, cancel_futures=True
            )

    def worker_pids(self) -> list[int]:
        """Process ids of the workers started so far (none before the first long list)."""
        pool = self._pool
        return pool.pids() if pool is not None else []

    def blinded_zero_tests(
        self,
        public_key: PublicKey,
        ciphertext: Ciphertext,
        values: Sequence[int],
        *,
        fresh_zero: Callable[[], Ciphertext],
    ) -> list[Ciphertext]:
        """E(m) → [E(r_v · (m − v)) · E(0)]: zero tests safe to hand to the key's holder."""
        with self._lock:
            if self._closed:
                raise FailedPrecondition("the zero-test pool is closed", field="zero_tests")
            pool = self._pool
        if pool is None or len(values) < ZERO_TEST_MIN_PARALLEL:
            return [
                public_key.add(test, fresh_zero())
                for test in public_key.zero_tests(ciphertext, values)
            ]

        def in_process(base: int, exponents: list[int]) -> list[Any]:
            n2 = public_key._nsquare
            return [
                c * fresh_zero().value % n2
                for c in _fixed_base_powers(gmpy2.mpz(base), exponents, n2)
            ]

        def powers(base: int, exponents: list[int]) -> list[Any]:
            try:
                parts = pool.map(
                    _zero_tests_in_worker,
                    [public_key.n] * self.workers,
                    [base] * self.workers,
                    _slices(exponents, self.workers),
                )
                return [power for part in parts for power in part]
            except (BrokenProcessPool, RuntimeError):
                # a worker died (or the pool is closing): answer this query here, and start a
                # fresh pool for the next one rather than fail every THRESHOLD until a restart
                _log.warning("zero-test workers failed; continuing in process", exc_info=True)
                self._replace(pool)
                return in_process(base, exponents)

        return public_key._zero_tests_with(ciphertext, values, powers)

    def _replace(self, broken: OwnedPool) -> None:
        with self._lock:
            if self._closed or self._pool is not broken:
                return
            self._finalizer.detach()
            broken.shutdown(wait=False, cancel_futures=True)
            self._pool = OwnedPool(workers=self.workers)
            self._finalizer = weakref.finalize(
                self, self._pool.shutdown, wait=False, cancel_futures=True
            )

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._pool is not None:
            self._finalizer.detach()
            self._pool.shutdown(wait=True)

    def __enter__(self) -> ZeroTestPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _broken(exc: BrokenProcessPool) -> CryptoError:
    return CryptoError(
        "a decryption worker process stopped unexpectedly (killed, or out of memory); "
        f"close this decryptor and create a new one ({exc})",
        field="workers",
    )

"""Routing of job keys to workers: rendezvous (highest random weight) hashing. Pure, no I/O.

Every worker gets a score for a key, a 64-bit BLAKE2b digest of ``worker_id NUL key``; the
key belongs to the worker with the highest score (ties, which need a 64-bit collision, go to
the smaller worker id). The owner depends only on the *set* of workers, never on their order
or creation time, which gives the properties the pool relies on (proved by the hypothesis
tests in ``tests/pool/test_routing.py``):

- the same membership gives the same owner on every node;
- adding worker ``w`` moves keys only to ``w`` (a key moves iff ``w`` outscores its owner);
- removing worker ``w`` moves only ``w``'s keys (every other key keeps its highest scorer);
- each worker's share is a binomial draw with mean ``keys / workers``.

The cost is one hash per worker per key. Each worker's hash state after ``worker_id NUL`` is
made once and copied per key, and scores are compared as their 8-byte big-endian digests
(the same order as the integers): a rebalance routes every local key again, 100k keys over
5 workers in about 0.15 s instead of 0.6 s.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Mapping
from typing import Any


@functools.lru_cache(maxsize=4096)
def _prefix(worker_id: str) -> Any:
    """The BLAKE2b state after ``worker_id NUL`` (copied for each key, never updated)."""
    return hashlib.blake2b(worker_id.encode("utf-8", "surrogateescape") + b"\0", digest_size=8)


def _encode(key: str) -> bytes:
    return key.encode("utf-8", "surrogateescape")


def score(worker_id: str, key: str) -> int:
    """The weight of ``worker_id`` for ``key`` (a 64-bit unsigned integer)."""
    h = _prefix(worker_id).copy()
    h.update(_encode(key))
    return int.from_bytes(h.digest(), "big")


def _best(data: bytes, prefixes: list[tuple[str, Any]]) -> str | None:
    """The owner among ``prefixes`` (sorted by worker id) of the key encoded as ``data``."""
    best: str | None = None
    best_digest = b""  # below every 8-byte digest
    for worker, prefix in prefixes:
        h = prefix.copy()
        h.update(data)
        digest = h.digest()
        # Strictly greater: on a tie the earlier, i.e. smaller, worker id stays.
        if digest > best_digest:
            best, best_digest = worker, digest
    return best


def _prefixes(workers: Iterable[str]) -> list[tuple[str, Any]]:
    return [(worker, _prefix(worker)) for worker in sorted(set(workers))]


def owner(key: str, workers: Iterable[str]) -> str | None:
    """The worker that owns ``key`` among ``workers``, or ``None`` when there is none."""
    return _best(_encode(key), _prefixes(workers))


def assign(keys: Iterable[str], workers: Iterable[str]) -> dict[str, str | None]:
    """The owner of each key (see :func:`owner`)."""
    prefixes = _prefixes(workers)
    return {key: _best(_encode(key), prefixes) for key in keys}


def moves(placement: Mapping[str, str], workers: Iterable[str]) -> dict[str, str | None]:
    """The keys of ``placement`` (key -> current worker) whose owner is not their worker.

    Returns:
        Each misplaced key mapped to its owner under ``workers`` (``None`` if there is no
        worker at all).
    """
    prefixes = _prefixes(workers)
    out: dict[str, str | None] = {}
    for key, current in placement.items():
        target = _best(_encode(key), prefixes)
        if target != current:
            out[key] = target
    return out


def misplaced(
    keys: Iterable[str], current: str, workers: Iterable[str]
) -> list[tuple[str, str | None]]:
    """The keys of ``keys`` (all held by worker ``current``) whose owner under ``workers`` is
    another worker, each with that owner (``None`` if there is no worker at all)."""
    prefixes = _prefixes(workers)
    out: list[tuple[str, str | None]] = []
    for key in keys:
        target = _best(_encode(key), prefixes)
        if target != current:
            out.append((key, target))
    return out

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

The cost is one hash per worker per key, negligible for pools of up to hundreds of workers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping


def score(worker_id: str, key: str) -> int:
    """The weight of ``worker_id`` for ``key`` (a 64-bit unsigned integer)."""
    digest = hashlib.blake2b(
        worker_id.encode("utf-8", "surrogateescape")
        + b"\0"
        + key.encode("utf-8", "surrogateescape"),
        digest_size=8,
    ).digest()
    return int.from_bytes(digest, "big")


def owner(key: str, workers: Iterable[str]) -> str | None:
    """The worker that owns ``key`` among ``workers``, or ``None`` when there is none."""
    best: str | None = None
    best_score = -1
    for worker in workers:
        s = score(worker, key)
        if s > best_score or (s == best_score and best is not None and worker < best):
            best, best_score = worker, s
    return best


def assign(keys: Iterable[str], workers: Iterable[str]) -> dict[str, str | None]:
    """The owner of each key (see :func:`owner`)."""
    members = sorted(set(workers))
    return {key: owner(key, members) for key in keys}


def moves(placement: Mapping[str, str], workers: Iterable[str]) -> dict[str, str | None]:
    """The keys of ``placement`` (key -> current worker) whose owner is not their worker.

    Returns:
        Each misplaced key mapped to its owner under ``workers`` (``None`` if there is no
        worker at all).
    """
    members = sorted(set(workers))
    out: dict[str, str | None] = {}
    for key, current in placement.items():
        target = owner(key, members)
        if target != current:
            out[key] = target
    return out

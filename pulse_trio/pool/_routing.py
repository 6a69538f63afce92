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
(the same order as the integers). A rebalance routes every local key again: with what is
known already (the workers a key's worker outscored when it was routed, see
:class:`Rechecker`), a join costs one hash per key instead of one per member.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Mapping, Sequence
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


def _best(data: bytes, prefixes: Sequence[tuple[str, Any]]) -> tuple[str | None, bytes]:
    """The owner among ``prefixes`` (sorted by worker id) of the key encoded as ``data``, and
    its score as a digest (``None, b""`` without workers)."""
    best: str | None = None
    best_digest = b""  # below every 8-byte digest
    for worker, prefix in prefixes:
        h = prefix.copy()
        h.update(data)
        digest = h.digest()
        # Strictly greater: on a tie the earlier, i.e. smaller, worker id stays.
        if digest > best_digest:
            best, best_digest = worker, digest
    return best, best_digest


@functools.lru_cache(maxsize=64)
def _member_prefixes(members: frozenset[str]) -> tuple[tuple[str, Any], ...]:
    return tuple((worker, _prefix(worker)) for worker in sorted(members))


def _prefixes(workers: Iterable[str]) -> tuple[tuple[str, Any], ...]:
    """The members' hash states, sorted by worker id (made once per membership: a dispatch
    routes every job)."""
    return _member_prefixes(frozenset(workers))


def owner_digest(key: str, workers: Iterable[str]) -> tuple[str | None, bytes]:
    """:func:`owner`, with the owner's score as its 8-byte digest (``b""`` when none)."""
    return _best(_encode(key), _prefixes(workers))


#: What routing learned of a key's owner: the workers it outscores (the membership it was
#: routed in) and its score as a digest (see ``_worker._LocalJob.beats``).
Routed = tuple[frozenset[str], bytes]


def route(key: str, members: frozenset[str]) -> tuple[str | None, Routed | None]:
    """The owner of ``key`` among ``members``, and what routing learned (``None`` without
    an owner)."""
    owner, digest = owner_digest(key, members)
    return owner, None if owner is None else (members, digest)


def owner(key: str, workers: Iterable[str]) -> str | None:
    """The worker that owns ``key`` among ``workers``, or ``None`` when there is none."""
    return _best(_encode(key), _prefixes(workers))[0]


def assign(keys: Iterable[str], workers: Iterable[str]) -> dict[str, str | None]:
    """The owner of each key (see :func:`owner`)."""
    prefixes = _prefixes(workers)
    return {key: _best(_encode(key), prefixes)[0] for key in keys}


def moves(placement: Mapping[str, str], workers: Iterable[str]) -> dict[str, str | None]:
    """The keys of ``placement`` (key -> current worker) whose owner is not their worker.

    Returns:
        Each misplaced key mapped to its owner under ``workers`` (``None`` if there is no
        worker at all).
    """
    prefixes = _prefixes(workers)
    out: dict[str, str | None] = {}
    for key, current in placement.items():
        target = _best(_encode(key), prefixes)[0]
        if target != current:
            out[key] = target
    return out


class Rechecker:
    """Routes the keys of one worker under one membership, using what is known already.

    A key whose worker is known to outscore a set of workers (``beats``: routing computed it,
    with the worker's ``digest``) only needs the scores of the members not in that set: the
    owner is the worker or one of those. A join then costs one hash per key, not one per
    member. Keys with nothing known are routed in full.
    """

    def __init__(self, worker: str, workers: Iterable[str]) -> None:
        self.worker = worker
        self.members = frozenset(workers)
        self._all = _prefixes(self.members)
        self._extra: dict[frozenset[str], tuple[tuple[str, Any], ...]] = {}

    def route(
        self, key: str, beats: frozenset[str] | None, digest: bytes
    ) -> tuple[str | None, bytes]:
        """The owner of ``key`` and its digest. ``beats`` (or ``None``): workers that the worker
        is known to outscore for ``key``, whose score is ``digest``."""
        data = _encode(key)
        if beats is None or not digest or self.worker not in self.members:
            return _best(data, self._all)
        extra = self._extra.get(beats)
        if extra is None:
            extra = self._extra[beats] = _prefixes(self.members - beats)
        other, other_digest = _best(data, extra)
        if other is not None and (
            other_digest > digest or (other_digest == digest and other < self.worker)
        ):
            return other, other_digest
        return self.worker, digest

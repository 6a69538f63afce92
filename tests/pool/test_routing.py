"""Properties of the routing function (SPEC guarantee 2), proved with hypothesis."""

from __future__ import annotations

import hashlib
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from pulse_trio.pool._routing import Rechecker, assign, moves, owner, owner_digest, score

worker_ids = st.text(min_size=1, max_size=12)
keys = st.text(min_size=1, max_size=20)
memberships = st.sets(worker_ids, min_size=1, max_size=12)


@given(members=memberships, ks=st.lists(keys, max_size=50), seed=st.integers())
def test_same_membership_same_owner_whatever_the_order(
    members: set[str], ks: list[str], seed: int
) -> None:
    ordered = sorted(members)
    shuffled = list(members)
    random.Random(seed).shuffle(shuffled)
    for key in ks:
        assert owner(key, ordered) == owner(key, shuffled)
        assert owner(key, ordered) in members


@given(members=memberships, new=worker_ids, ks=st.lists(keys, max_size=80))
def test_adding_a_worker_moves_keys_only_to_it(members: set[str], new: str, ks: list[str]) -> None:
    before = assign(ks, members)
    after = assign(ks, members | {new})
    for key in ks:
        if before[key] != after[key]:
            assert after[key] == new


@given(members=memberships, ks=st.lists(keys, max_size=80), data=st.data())
def test_removing_a_worker_moves_only_its_keys(
    members: set[str], ks: list[str], data: st.DataObject
) -> None:
    gone = data.draw(st.sampled_from(sorted(members)))
    before = assign(ks, members)
    after = assign(ks, members - {gone})
    for key in ks:
        if before[key] != gone:
            assert after[key] == before[key]
        else:
            assert after[key] != gone


@given(members=memberships, ks=st.lists(keys, max_size=40))
def test_moves_lists_exactly_the_misplaced_keys(members: set[str], ks: list[str]) -> None:
    placement = {key: sorted(members)[0] for key in ks}
    planned = moves(placement, members)
    for key in ks:
        target = owner(key, members)
        assert (key in planned) == (target != placement[key])


def test_no_worker_no_owner() -> None:
    assert owner("k", []) is None


@settings(max_examples=20, deadline=None)
@given(count=st.integers(min_value=2, max_value=8), salt=st.text(max_size=5))
def test_balance_within_bound(count: int, salt: str) -> None:
    """Stated bound: with 4,000 keys every worker gets between 0.75x and 1.25x its fair share
    (a binomial tail beyond ~6 standard deviations for 8 workers)."""
    members = [f"{salt}worker-{i}" for i in range(count)]
    placed = assign([f"job:{i}" for i in range(4000)], members)
    share = 4000 / count
    for worker in members:
        got = sum(1 for w in placed.values() if w == worker)
        assert 0.75 * share <= got <= 1.25 * share, (worker, got, share)


def _reference_score(worker: str, key: str) -> int:
    """The documented score, computed from scratch: BLAKE2b-64 of ``worker NUL key``."""
    data = (
        worker.encode("utf-8", "surrogateescape") + b"\0" + key.encode("utf-8", "surrogateescape")
    )
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


@given(members=memberships, ks=st.lists(keys, max_size=20))
def test_scores_and_owners_are_the_documented_ones(members: set[str], ks: list[str]) -> None:
    """Every node of a pool, whatever its version, must route alike: the cached hash states
    give the documented scores, and the owner is the highest score (smaller id on a tie)."""
    for key in ks:
        scores = {w: _reference_score(w, key) for w in members}
        for w in members:
            assert score(w, key) == scores[w]
        best = max(scores.values())
        expected = min(w for w in members if scores[w] == best)
        assert owner(key, members) == expected
        assert owner_digest(key, members) == (expected, best.to_bytes(8, "big"))


@given(members=memberships, ks=st.lists(keys, max_size=20), data=st.data())
def test_rechecking_with_what_is_known_routes_like_routing_in_full(
    members: set[str], ks: list[str], data: st.DataObject
) -> None:
    """A key's owner under an earlier membership (any subset of workers, plus workers that
    left since) is rechecked against the new members only, with the same result."""
    known = data.draw(st.sets(st.sampled_from(sorted(members)), min_size=1))
    gone = data.draw(st.sets(worker_ids, max_size=3))
    before = known | gone
    for key in ks:
        worker, digest = owner_digest(key, before)
        assert worker is not None
        checker = Rechecker(worker, frozenset(members))
        got = checker.route(key, frozenset(before), digest)
        if worker in members:
            assert got == owner_digest(key, members)
        assert checker.route(key, None, b"") == owner_digest(key, members)


def test_a_recheck_tie_goes_to_the_smaller_worker_id() -> None:
    """Equal digests (a 64-bit collision, made here by handing the known worker the other's
    digest) go to the smaller id, as in full routing."""
    key = "k"
    _, digest_b = owner_digest(key, ["b"])
    assert Rechecker("c", frozenset({"b", "c"})).route(key, frozenset({"c"}), digest_b)[0] == "b"
    assert Rechecker("a", frozenset({"a", "b"})).route(key, frozenset({"a"}), digest_b)[0] == "a"

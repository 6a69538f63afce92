"""Model-based test of rmap: random writes from several replicas, lost writes and killed
connections; after each step Redis matches a pure model and every replica converges to it."""

from __future__ import annotations

import json
from typing import Any

import anyio
from hypothesis import note
from hypothesis import strategies as st
from hypothesis.stateful import invariant, rule

from pulse_trio import rmap

from .._admin import AdminClient
from ._harness import PortalMachine, run_machine

KEYS = st.sampled_from(["a", "b", "c/d", "é"])
VALUES = st.text(alphabet='xy/,é"\\ ', max_size=6)
COUNTERS = st.sampled_from(["n1", "n2"])
LISTS = st.sampled_from(["l1", "l2"])
ITEMS = st.lists(st.sampled_from(["p", "q", "r/s", ""]), max_size=3)
REPLICAS = 3
CONVERGE_TIMEOUT = 10.0


class RMapMachine(PortalMachine):
    """Replicas of one map (health checks every minute: never what repairs them) vs a dict."""

    def __init__(self) -> None:
        super().__init__()
        self.name = self.prefix
        self.admin = AdminClient.of(self.client)  # the same connections, with test helpers
        self.replicas: list[rmap.Map] = [
            self.enter(rmap.join(self.client, self.name, ping_interval=60.0)).value
            for _ in range(REPLICAS)
        ]
        self.model: dict[str, str] = {}

    @rule(i=st.integers(0, REPLICAS - 1), key=KEYS, value=VALUES)
    def set(self, i: int, key: str, value: str) -> None:
        note(f"replica {i}: set {key!r}={value!r}")
        previous = self.call(self.replicas[i].set, key, value)
        assert previous == self.model.get(key)
        self.model[key] = value

    @rule(i=st.integers(0, REPLICAS - 1), key=KEYS)
    def delete(self, i: int, key: str) -> None:
        note(f"replica {i}: delete {key!r}")
        assert self.call(self.replicas[i].delete, key) == self.model.pop(key, None)

    @rule(i=st.integers(0, REPLICAS - 1), key=KEYS, test=VALUES, value=VALUES)
    def test_and_set(self, i: int, key: str, test: str, value: str) -> None:
        found = self.call(self.replicas[i].test_and_set, key, test, value)
        note(f"replica {i}: test_and_set {key!r} {test!r}->{value!r} found {found!r}")
        assert found == self.model.get(key)
        if found == test:
            self.model[key] = value

    @rule(i=st.integers(0, REPLICAS - 1), key=COUNTERS, delta=st.integers(-5, 5))
    def inc(self, i: int, key: str, delta: int) -> None:
        note(f"replica {i}: inc {key!r} by {delta}")
        expected = int(self.model.get(key, "0")) + delta
        assert self.call(self.replicas[i].inc, key, delta) == expected
        self.model[key] = str(expected)

    @rule(i=st.integers(0, REPLICAS - 1), key=LISTS, items=ITEMS, unique=st.booleans())
    def append(self, i: int, key: str, items: list[str], unique: bool) -> None:
        note(f"replica {i}: append {key!r} {items!r} unique={unique}")
        current = json.loads(self.model[key]) if key in self.model else []
        for item in items:
            if not unique or item not in current:
                current.append(item)
        fn = self.replicas[i].append_unique_values if unique else self.replicas[i].append_values
        result = self.call(fn, key, *items)
        assert result == current
        if current:
            self.model[key] = json.dumps(current, ensure_ascii=False, separators=(",", ":"))
            self.model[key] = self.model[key].replace("/", "\\/")

    @rule(i=st.integers(0, REPLICAS - 1), key=LISTS, items=ITEMS)
    def remove(self, i: int, key: str, items: list[str]) -> None:
        note(f"replica {i}: remove {key!r} {items!r}")
        remaining, removed = self.call(self.replicas[i].remove_values, key, *items)
        if key not in self.model:
            assert (remaining, removed) == (None, False)
            return
        current = json.loads(self.model[key])
        kept = [item for item in current if item not in items]
        assert removed == (len(kept) != len(current))
        if not kept:
            assert remaining is None
            del self.model[key]
        else:
            assert remaining == kept
            self.model[key] = json.dumps(kept, ensure_ascii=False, separators=(",", ":"))
            self.model[key] = self.model[key].replace("/", "\\/")

    @rule(i=st.integers(0, REPLICAS - 1), destroy=st.booleans())
    def reset(self, i: int, destroy: bool) -> None:
        note(f"replica {i}: {'destroy' if destroy else 'reset'}")
        self.call(self.replicas[i].destroy if destroy else self.replicas[i].reset)
        self.model.clear()

    @rule(key=KEYS, value=VALUES, i=st.integers(0, REPLICAS - 1), other=KEYS)
    def lost_write(self, key: str, value: str, i: int, other: str) -> None:
        """A write whose notification never reached anyone, then an ordinary one: the
        replicas must notice the gap in revisions. (Health checks are slowed down to a
        minute here so that they cannot be what repairs the replicas.)"""
        note(f"lost write {key!r}={value!r}, then replica {i} sets {other!r}")
        self.call(self.admin.hset, f"map:{self.name}:content", {key: value})
        self.call(self.admin.hincrby, f"map:{self.name}:content", "=rev", 1)
        self.model[key] = value
        self.set(i, other, "after-gap")

    @rule()
    def kill_subscriptions(self) -> None:
        note("CLIENT KILL TYPE pubsub")
        self.call(lambda: self.admin.client_kill(type_="pubsub"))

    @invariant()
    def redis_matches_model_and_replicas_converge(self) -> None:
        raw = self.call(self.admin.hgetall, f"map:{self.name}:content")
        stored = {k.decode(): v.decode() for k, v in raw.items() if not k.startswith(b"=")}
        assert stored == self.model

        async def converged() -> None:
            with anyio.fail_after(CONVERGE_TIMEOUT):
                while any(r.map() != stored for r in self.replicas):
                    await anyio.sleep(0.005)

        try:
            self.call(converged)
        except TimeoutError:
            views = [r.map() for r in self.replicas]
            raise AssertionError(f"replicas {views} did not converge to {stored}") from None


def test_replicas_always_converge_to_redis(server_url: str, anyio_backend: Any) -> None:
    run_machine(RMapMachine, server_url, anyio_backend, max_examples=12, steps=25)

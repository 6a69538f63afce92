"""The map machine: state an application derives from a replicated map, under lost
notifications and killed subscriptions (see :mod:`._machine`)."""

from __future__ import annotations

from typing import Any, ClassVar

import anyio
import anyio.abc
import anyio.from_thread
from hypothesis import strategies as st
from hypothesis.stateful import (
    initialize,
    invariant,
    rule,
)

import pulse_trio

from .. import rmap
from ..rmap._protocol import content_key
from ._faults import ConnectionKind, kill_connections
from ._machine import DeploymentMachine, _configured_rule
from ._proxy import FaultProxy


class MapMachine(DeploymentMachine):
    """Replicas of one map written concurrently, each feeding the application's derived
    state, with lost notifications and killed or half-open subscriptions.

    :attr:`replica_count` replicas join one map, each with its own client through its own
    :class:`~pulse_trio.testing.FaultProxy`. For each replica, the application's
    :meth:`follow` runs in the background (typically ``async with replica.subscribe()``, and
    rebuild or update its state on every change). The machine sets and deletes keys (from
    :attr:`keys`, values from :attr:`values`) through random replicas, several at once too,
    and injects faults: a write whose notification is lost, every subscription killed, one
    replica's subscription gone half-open, one replica's connections cut.

    After every step the replicas converge to what Redis holds (the library's guarantee);
    then, within :attr:`derive_within` seconds, :meth:`derived` of every replica must equal
    :meth:`expected` of that content: the application's derived state converges too.

    Override :meth:`follow`, :meth:`derived` and :meth:`expected`.

    Attributes:
        map_name: The map's name.
        replicas: The replicas (:class:`pulse_trio.rmap.Map`), by index.
    """

    #: The keys written (few: so that writes collide).
    keys: ClassVar[st.SearchStrategy[str]] = st.sampled_from(["a", "b", "c"])
    #: The values written.
    values: ClassVar[st.SearchStrategy[str]] = st.text("xyz", max_size=3)
    #: How many replicas join.
    replica_count: ClassVar[int] = 3
    #: How long the replicas may take to converge to Redis after a step, seconds.
    converge_within: ClassVar[float] = 10.0
    #: How long the derived states may take to follow the converged replicas, seconds.
    derive_within: ClassVar[float] = 1.0

    def __init__(self) -> None:
        super().__init__()
        self.map_name = f"{self.prefix}-map"
        self.replicas: list[rmap.Map] = []
        self._proxies: list[FaultProxy] = []
        self._clients: list[pulse_trio.Client] = []

    # -------------------------------------------------------- the application's part

    async def follow(self, index: int, replica: rmap.Map) -> None:
        """The application's code keeping derived state from ``replica`` (runs in the
        background from the replica's join to the end of the example)."""
        raise NotImplementedError(f"{type(self).__name__} must define async follow()")

    def derived(self, index: int) -> object:
        """The application's derived state of replica ``index`` now."""
        raise NotImplementedError(f"{type(self).__name__} must define derived(index)")

    def expected(self, content: dict[str, str]) -> object:
        """What the derived state must be for the map ``content``."""
        raise NotImplementedError(f"{type(self).__name__} must define expected(content)")

    # ---------------------------------------------------------------- machinery

    async def _stored(self) -> dict[str, str]:
        raw = await self.client.execute("HGETALL", content_key(self.map_name))
        pairs = raw.items() if isinstance(raw, dict) else zip(raw[::2], raw[1::2], strict=True)
        return {
            key.decode("utf-8", "surrogateescape"): value.decode("utf-8", "surrogateescape")
            for key, value in pairs
            if not key.startswith(b"=")
        }

    def _replica(self, index: int) -> rmap.Map:
        return self.replicas[index % len(self.replicas)]

    # --------------------------------------------------------------------- rules

    @initialize()
    def join_replicas(self) -> None:
        """Every replica joins (each with its own client and proxy); :meth:`follow` starts."""
        for index in range(self.replica_count):
            proxy = self.enter(FaultProxy(self.url))
            client = self.enter(
                pulse_trio.connect(proxy.url, client_name=f"{self.prefix}-r{index}")
            )
            replica = self.enter(
                rmap.join(client, self.map_name, ping_interval=0.2, ping_timeout=0.5)
            )
            self._proxies.append(proxy)
            self._clients.append(client)
            self.replicas.append(replica)
            self.spawn(self.follow, index, replica)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        index = st.integers(0, 7)
        keys, values = cls.keys, cls.values
        cls.set = _configured_rule(MapMachine._set, index=index, key=keys, value=values)
        cls.delete = _configured_rule(MapMachine._delete, index=index, key=keys)
        cls.concurrent_writes = _configured_rule(
            MapMachine._concurrent_writes,
            writes=st.lists(st.tuples(index, keys, st.none() | values), min_size=2, max_size=4),
        )
        cls.lost_notification = _configured_rule(
            MapMachine._lost_notification,
            key=keys,
            value=values,
            index=index,
            then_key=keys,
            then_value=values,
        )

    def _set(self, index: int, key: str, value: str) -> None:
        """Set a key through a replica."""
        self.call(self._replica(index).set, key, value)

    def _delete(self, index: int, key: str) -> None:
        """Delete a key through a replica."""
        self.call(self._replica(index).delete, key)

    def _concurrent_writes(self, writes: list[tuple[int, str, str | None]]) -> None:
        """Several writes through different replicas at the same time: ``(replica, key,
        value)``, a value of ``None`` deleting the key."""

        async def write_all() -> None:
            async with anyio.create_task_group() as tg:
                for index, key, value in writes:
                    replica = self._replica(index)
                    if value is None:
                        tg.start_soon(replica.delete, key)
                    else:
                        tg.start_soon(replica.set, key, value)

        self.call(write_all)

    def _lost_notification(
        self, key: str, value: str, index: int, then_key: str, then_value: str
    ) -> None:
        """A write of ``key`` whose notification reaches no replica (written behind their
        back, with the revision bumped), then an ordinary write through a replica: the
        replicas must notice the gap in revisions."""
        hash_key = content_key(self.map_name)
        raw_key, raw_value = (t.encode("utf-8", "surrogateescape") for t in (key, value))

        async def write() -> None:
            await self.client.execute("HSET", hash_key, raw_key, raw_value)
            await self.client.execute("HINCRBY", hash_key, "=rev", 1)

        self.call(write)
        self.call(self._replica(index).set, then_key, then_value)

    @rule()
    def kill_subscriptions(self) -> None:
        """Kill every replica's subscribed connection (they resubscribe and resync)."""
        for client in self._clients:
            self.call(kill_connections, client, ConnectionKind.PUBSUB)

    @rule(index=st.integers(0, 7))
    def half_open_subscription(self, index: int) -> None:
        """One replica's subscription goes silent (a half-open connection): its health
        check replaces it."""
        proxy = self._proxies[index % len(self._proxies)]
        self.call(proxy.freeze_subscribers)

    @rule(index=st.integers(0, 7))
    def cut_connections(self, index: int) -> None:
        """Close every connection of one replica's client (it reconnects)."""
        self.call(self._proxies[index % len(self._proxies)].cut)

    def teardown(self) -> None:
        """Leave the replicas once every subscription is up (leaving one while it
        resubscribes races with its resync), then everything else."""

        async def connected() -> None:
            with anyio.move_on_after(self.converge_within):
                while not all(r.statistics().connected for r in self.replicas):  # noqa: ASYNC110
                    await anyio.sleep(0.01)

        try:
            self.call(connected)
        finally:
            super().teardown()

    @invariant()
    def derived_state_converges(self) -> None:
        """The replicas converge to Redis, then every derived state to :meth:`expected`."""
        self.verify(self._converges)

    def _converges(self) -> None:
        async def converged() -> dict[str, str] | None:
            with anyio.move_on_after(self.converge_within):
                while True:
                    stored = await self._stored()
                    if all(replica.map() == stored for replica in self.replicas):
                        return stored
                    await anyio.sleep(0.01)
            return None

        stored = self.call(converged)
        if stored is None:
            views = [replica.map() for replica in self.replicas]
            raise AssertionError(
                f"the replicas {views} did not converge to Redis within {self.converge_within}s"
            )
        expected = self.expected(stored)

        def check() -> None:
            self.raise_failures()
            for index in range(len(self.replicas)):
                derived = self.derived(index)
                assert derived == expected, (
                    f"replica {index}: derived state {derived!r} != expected {expected!r} "
                    f"for the map {stored!r}"
                )

        self.wait_for(check, self.derive_within)

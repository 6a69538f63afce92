"""Redis Cluster: slot routing, MOVED/ASK redirections, slot map refresh after a failover.

- :func:`key_slot` computes a key's hash slot (CRC16/XMODEM of the key, or of its hash tag:
  the part between the first ``{`` and the next ``}`` when not empty) modulo 16384.
- :func:`command_key` finds the key that routes a command (the first key of most commands;
  the first KEYS entry of ``EVAL``/``EVALSHA``/``FCALL``; the first stream after ``STREAMS``
  of ``XREAD``/``XREADGROUP``); callers pass ``key=`` where the position is not standard.
- :class:`Cluster` keeps the slot map (from ``CLUSTER SLOTS``) and one :class:`~._node.Node`
  per primary, each with its multiplexed connection. A ``MOVED`` reply updates the slot at
  once, schedules a full refresh and resends the command to the new owner; an ``ASK`` reply
  sends ``ASKING`` and the command back to back on the target's multiplexed connection (no
  other request can come between them: both are queued in the same synchronous step).
  A node that cannot be reached triggers a refresh (after a failover the promoted replica
  owns its slots); the request is retried on the new owner when that is safe (not written,
  or idempotent). A ``TRYAGAIN`` reply (a command declaring several keys of a slot that is
  migrating, when some are missing: Redis did not run it) is retried from the slot's owner
  with a growing pause until the migration ends, for at most ``command_timeout``.
"""

from __future__ import annotations

import binascii
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any, Final

import anyio
import anyio.abc

from .._errors import ClosedError, RedisUnavailableError
from .._retry import backoff_delay
from ._direct import DirectConnection
from ._node import Node
from ._requests import IDEMPOTENT_COMMANDS, safe_to_retry
from ._resp import Arg, ResponseError, encode_command, encode_text
from ._settings import Address, ConnectionSettings

logger = logging.getLogger("pulse_trio.redis")

#: Hash slots of a Redis Cluster.
SLOTS: Final = 16384
#: Redirections (MOVED/ASK) and CLUSTERDOWN retries for one command before giving up.
MAX_REDIRECTS: Final = 5
#: Least time between two slot map refreshes, in seconds.
REFRESH_INTERVAL: Final = 0.1
#: Pause before retrying a command answered CLUSTERDOWN, in seconds.
RETRY_PAUSE: Final = 0.05
#: First and longest pause before retrying a command answered TRYAGAIN (a multi-key command
#: on a slot that is migrating), in seconds: the pause doubles (jittered) between tries,
#: for at most the client's ``command_timeout`` in all.
TRYAGAIN_PAUSE: Final = 0.01
TRYAGAIN_PAUSE_MAX: Final = 0.2

_NO_KEY = frozenset(
    {"PING", "ECHO", "TIME", "INFO", "CLUSTER", "SCRIPT", "CLIENT", "CONFIG", "DBSIZE",
     "PUBLISH", "ACL", "COMMAND", "HELLO", "FLUSHALL", "FLUSHDB", "ROLE", "LASTSAVE"}
)  # fmt: skip
_NUMKEYS_AT_2 = frozenset({"EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO"})
_STREAMS = frozenset({"XREAD", "XREADGROUP"})
_ASKING = encode_command(("ASKING",))
_REDIRECTS = frozenset({"MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN"})


def _as_bytes(value: Arg) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return encode_text(value)
    if isinstance(value, memoryview):
        return value.tobytes()
    return str(value).encode()


def key_slot(key: Arg) -> int:
    """The hash slot of ``key`` (hash tags honoured)."""
    raw = _as_bytes(key)
    start = raw.find(b"{")
    if start >= 0:
        end = raw.find(b"}", start + 1)
        if end > start + 1:
            raw = raw[start + 1 : end]
    return binascii.crc_hqx(raw, 0) % SLOTS


def _upper(name: Arg) -> str:
    if isinstance(name, bytes):
        return name.decode("ascii", "replace").upper()
    return str(name).upper()


def command_key(args: Sequence[Arg]) -> Arg | None:
    """The key that routes ``args`` on a cluster, or ``None`` when any node will do."""
    name = _upper(args[0])
    if name in _NO_KEY or len(args) < 2:
        return None
    if name in _NUMKEYS_AT_2:
        return args[3] if len(args) > 3 and int(args[2]) > 0 else None
    if name in _STREAMS:
        for i, arg in enumerate(args):
            if _upper(arg) == "STREAMS" and i + 1 < len(args):
                return args[i + 1]
        return None
    return args[1]


def _redirect_target(message: str) -> tuple[int, Address]:
    """``MOVED 3999 127.0.0.1:6381`` -> (3999, Address)."""
    _, slot, where = message.split(" ", 2)
    host, _, port = where.rpartition(":")
    return int(slot), Address(host or "127.0.0.1", int(port))


class Cluster:
    """The topology of a Redis Cluster (see the module docstring).

    Args:
        task_group: Where the nodes' connection tasks run (the client's).
        seeds: Addresses to ask for the slot map first.
        settings: Connection settings of every node.
        max_blocking: Dedicated connections per node.
    """

    def __init__(
        self,
        task_group: anyio.abc.TaskGroup,
        seeds: Sequence[Address],
        settings: ConnectionSettings,
        *,
        max_blocking: int,
    ) -> None:
        self._tg = task_group
        self._seeds = list(seeds)
        self._settings = settings
        self._max_blocking = max_blocking
        self._nodes: dict[Address, Node] = {}
        self._slots: list[Address | None] = [None] * SLOTS
        self._refresh_lock = anyio.Lock()
        self._last_refresh = -REFRESH_INTERVAL
        self.refreshes = 0
        #: Commands sent again after a TRYAGAIN reply (a slot migrating).
        self.tryagains = 0

    def __repr__(self) -> str:
        return f"<Cluster nodes={sorted(map(str, self._nodes))} refreshes={self.refreshes}>"

    def node_at(self, address: Address) -> Node:
        """The node for ``address`` (created on first use; connections open lazily)."""
        node = self._nodes.get(address)
        if node is None:

            async def resolve() -> Address:
                return address

            node = Node(
                self._tg, resolve, self._settings, max_blocking=self._max_blocking,
                name=str(address), address=address, on_error=self._note_error,
            )  # fmt: skip
            self._nodes[address] = node
        return node

    def node_for(self, key: Arg | None) -> Node:
        """The primary serving ``key``'s slot (any known primary for ``None``)."""
        address = self._slots[key_slot(key)] if key is not None else None
        if address is None:
            address = next((a for a in self._slots if a is not None), self._seeds[0])
        return self.node_at(address)

    def primaries(self) -> list[Node]:
        """A node per primary of the current slot map."""
        return [self.node_at(a) for a in dict.fromkeys(a for a in self._slots if a is not None)]

    async def start(self) -> None:
        """Load the slot map (raises RedisUnavailableError if no seed answers)."""
        await self.refresh(force=True)

    async def refresh(self, *, force: bool = False, avoid: Address | None = None) -> None:
        """Reload the slot map with ``CLUSTER SLOTS`` from the first node that answers.

        At most one refresh runs at a time, and at most one per :data:`REFRESH_INTERVAL`
        unless ``force``.

        Raises:
            RedisUnavailableError: No known node answered.
        """
        async with self._refresh_lock:
            now = anyio.current_time()
            if not force and now - self._last_refresh < REFRESH_INTERVAL:
                return
            self._last_refresh = now
            candidates = [a for a in dict.fromkeys([*self._nodes, *self._seeds]) if a != avoid]
            if avoid is not None:
                candidates.append(avoid)
            problems = []
            for address in candidates:
                try:
                    reply = await self.node_at(address).request(
                        encode_command(("CLUSTER", "SLOTS")), retry=True
                    )
                except RedisUnavailableError as exc:
                    problems.append(f"{address}: {exc}")
                    continue
                if isinstance(reply, ResponseError):
                    problems.append(f"{address}: {reply}")
                    continue
                self._apply_slots(reply, address)
                self.refreshes += 1
                return
            raise RedisUnavailableError(
                "no cluster node answered CLUSTER SLOTS: " + "; ".join(problems)
            )

    def _apply_slots(self, reply: list[Any], asked: Address) -> None:
        slots: list[Address | None] = [None] * SLOTS
        for entry in reply:
            start, end, primary = entry[0], entry[1], entry[2]
            host = primary[0].decode() if primary[0] else asked.host
            address = Address(host, int(primary[1]))
            self.node_at(address)
            for slot in range(int(start), int(end) + 1):
                slots[slot] = address
        self._slots = slots
        owners = set(slots)
        for address in [a for a in self._nodes if a not in owners]:
            node = self._nodes.pop(address)
            self._tg.start_soon(node.retire)

    async def request(self, args: Sequence[Arg], payload: bytes, key: Arg | None) -> Any:
        """Send to the owner of the command's slot, following redirections."""
        if key is None:
            key = command_key(args)
        retry = _upper(args[0]) in IDEMPOTENT_COMMANDS
        node = self.node_for(key)
        asking = False
        reply: Any = None
        redirects = 0
        tries_again = 0
        give_up_at = 0.0
        while redirects <= MAX_REDIRECTS:
            redirects += 1
            try:
                if asking:
                    mux = await node.multiplexed()
                    mux.queue_unanswered(_ASKING)
                    reply = await mux.request(payload)
                else:
                    reply = await node.request(payload, retry=retry)
            except RedisUnavailableError as exc:
                # The node is gone (a failover?): ask the others who owns the slot now.
                before = self.node_for(key)
                await self._refresh_quietly(avoid=node.address)
                after = self.node_for(key)
                if after is before or not safe_to_retry(exc, idempotent=retry):
                    raise
                node, asking = after, False
                continue
            if type(reply) is not ResponseError:
                return reply
            asking = False
            if reply.code == "MOVED":
                slot, address = _redirect_target(reply.message)
                self._slots[slot] = address
                node = self.node_at(address)
                self._tg.start_soon(self._refresh_quietly)
            elif reply.code == "ASK":
                _, address = _redirect_target(reply.message)
                node, asking = self.node_at(address), True
            elif reply.code == "TRYAGAIN":
                # The slot is migrating and the command's keys are split or partly missing:
                # Redis ran nothing. Start over from the slot's owner once the pause is over,
                # until the migration ends (not counted as redirections: time bounds it).
                now = anyio.current_time()
                if tries_again == 0:
                    give_up_at = now + self._settings.command_timeout
                if now >= give_up_at:
                    return reply
                pause = backoff_delay(tries_again, base=TRYAGAIN_PAUSE, cap=TRYAGAIN_PAUSE_MAX)
                tries_again += 1
                self.tryagains += 1
                await anyio.sleep(min(pause, give_up_at - now))
                node, redirects = self.node_for(key), 0
            elif reply.code == "CLUSTERDOWN":
                await anyio.sleep(RETRY_PAUSE)
            else:
                return reply
        return reply

    async def request_many(
        self, commands: Sequence[Sequence[Arg]], payloads: list[bytes]
    ) -> list[Any]:
        """One pipeline per slot owner, in parallel; redirected replies are resent singly."""
        groups: dict[Node, list[int]] = {}
        for i, command in enumerate(commands):
            groups.setdefault(self.node_for(command_key(command)), []).append(i)
        replies: list[Any] = [None] * len(commands)
        failures: list[Exception] = []

        async def send(node: Node, indices: list[int]) -> None:
            try:
                got = await node.request_many([payloads[i] for i in indices])
            except Exception as exc:  # raised below, outside the task group
                failures.append(exc)
                return
            for i, reply in zip(indices, got, strict=True):
                replies[i] = reply

        async with anyio.create_task_group() as tg:
            for node, indices in groups.items():
                tg.start_soon(send, node, indices)
        if failures:
            raise failures[0]
        for i, reply in enumerate(replies):
            if type(reply) is ResponseError and reply.code in _REDIRECTS:
                replies[i] = await self.request(commands[i], payloads[i], None)
        return replies

    @contextlib.asynccontextmanager
    async def blocking(self, key: Arg | None) -> AsyncIterator[DirectConnection]:
        """A pooled direct connection to the owner of ``key``'s slot.

        A ``MOVED`` reply to a command on it (see :meth:`_note_error`), or a node that cannot
        be reached, updates the slot map; the error still reaches the caller, whose next
        call goes to the new owner.
        """
        try:
            async with self.node_for(key).blocking() as conn:
                yield conn
        except RedisUnavailableError:
            self._tg.start_soon(self._refresh_quietly)
            raise

    def _note_error(self, error: ResponseError) -> None:
        """Learn from an error reply on a direct connection (``MOVED``: the slot moved)."""
        if error.code == "MOVED":
            slot, address = _redirect_target(error.message)
            self._slots[slot] = address
            self._tg.start_soon(self._refresh_quietly)

    async def _refresh_quietly(self, avoid: Address | None = None) -> None:
        """A refresh in the background: a failure is logged, the client's closing (a refresh
        scheduled by a ``MOVED`` just before the block exited) ends it silently."""
        try:
            await self.refresh(avoid=avoid)
        except RedisUnavailableError as exc:
            logger.warning("cluster slot map refresh failed: %s", exc)
        except ClosedError:
            pass

    async def open_subscriber(self) -> DirectConnection:
        """A direct connection to the first primary that accepts one (for subscriptions)."""
        problems = []
        for address in dict.fromkeys([*(a for a in self._slots if a), *self._seeds]):
            try:
                return await self.node_at(address).open_direct()
            except RedisUnavailableError as exc:
                problems.append(str(exc))
        raise RedisUnavailableError("no cluster node accepted a connection: " + "; ".join(problems))

    async def aclose(self) -> None:
        """Close every node's connections."""
        for node in list(self._nodes.values()):
            await node.aclose()

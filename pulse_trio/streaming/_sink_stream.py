"""One stream of a sink instance: its group, its read loop, its reclaim loop.

A :class:`StreamConsumer` owns everything one sink instance does on one stream: creating the
consumer group, registering the instance's consumer (membership map), reading new entries
(``XREADGROUP ... >`` on a blocking connection), reclaiming idle entries of gone or slow
instances under a lease, moving entries to the dead letters, deleting stale consumers, and
unregistering on leaving. What the instance's streams share (consumer name, options, buffer,
counters, keep-alive map, scripts) is :class:`~._sink_core.SinkCore`.

Who mutates what: a consumer's fields are written only by its own tasks (``run`` and the
loops it starts) and, before they start, by :meth:`create_group`; the core's buffer and
counters by the consumers' tasks and the sink's iteration.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, cast

import anyio
import anyio.abc
import anyio.lowlevel

from .._boundary import (
    as_dict,
    is_group_exists,
    is_group_missing,
    is_transient,
    is_wrong_type,
    map_redis_errors,
    read_reply,
    text,
    to_pulse_error,
)
from .._retry import backoff_delay
from ..rmap._ops import MapOps
from ._event import Event, MalformedEntryError, decode_entry, stream_key, wrong_type_error
from ._io import info_maps, is_redirect, stream_errors
from ._options import StreamRef, lease_key, membership_map_name
from ._sink_core import CLEANUP_TIMEOUT, MAX_RETRY_DELAY, SinkCore, later_id, uninterrupted
from ._sink_policy import ConsumerInfo, dead_letter_fields, stale_consumers


class StreamConsumer:
    """This sink instance on one stream (see the module docstring)."""

    def __init__(self, core: SinkCore, stream: StreamRef, start_id: str) -> None:
        self.core = core
        self.stream = stream
        self.name = stream.name
        self.key = stream.key
        self.start_id = start_id
        self.logger = stream.logger
        self.members = MapOps.create(
            core.client,
            membership_map_name(stream.name),
            ttl=stream.ttl,
            sliding_ttl=stream.sliding_ttl,
        )
        #: Where a lost group is recreated: the newest id this instance saw (never ``$``).
        self.recovery_id = "0-0"
        #: Set when this instance's consumer was deleted from the group on leaving.
        self.released = False
        self.scope = anyio.CancelScope()
        #: Whether the keep-alive loop keeps this consumer in the membership map: from its
        #: registration until it unregisters (``listing`` orders the two, so a repair that
        #: read the map before the consumer unregistered does not list it again after).
        self.listed = False
        self.listing = anyio.Lock()
        #: Set when :meth:`run` began (its ``done`` is then set when it ends).
        self.running = False
        self.done = anyio.Event()

    def _log(self, level: int, message: str, *args: Any, **extra: Any) -> None:
        self.logger.log(level, message, *args, extra=self.core.extra(self.name, **extra))

    # ------------------------------------------------------------------ group, registration

    async def create_group(self, start_id: str) -> None:
        """``XGROUP CREATE ... MKSTREAM`` (an existing group is kept), then the stream's TTL.

        A stream this creates gets the stream's TTL as ``Stream.add`` would give it (an
        absolute TTL only when the key has none), as goa.design/pulse's sinks do.

        Raises:
            StreamError: The key holds another type.
            pulse_trio.RedisUnavailableError: Redis cannot be reached.
        """
        client, core = self.core.client, self.core
        with stream_errors(self.name, f"creating the group of sink {core.name!r}"):
            try:
                await client.execute("XGROUP", "CREATE", self.key, core.name, start_id, "MKSTREAM")
            except Exception as exc:
                if not is_group_exists(exc):
                    raise
            # The key is a stream now: its TTL and the group list go in one round trip.
            commands: list[tuple[str | int, ...]] = []
            if self.stream.ttl is not None:
                commands.append(("PEXPIRE", self.key, max(1, round(self.stream.ttl * 1000)), "NX"))
            elif self.stream.sliding_ttl is not None:
                ttl_ms = max(1, round(self.stream.sliding_ttl * 1000))
                commands.append(("PEXPIRE", self.key, ttl_ms))
            # The group's position is where a lost group is recreated if we see nothing newer.
            commands.append(("XINFO", "GROUPS", self.key))
            groups = info_maps((await client.execute_many(commands))[-1])
        for fields in groups:
            if text(cast(bytes, fields.get("name", b""))) == core.name:
                last = text(cast(bytes, fields.get("last-delivered-id") or b"0-0"))
                self.recovery_id = later_id(self.recovery_id, last)

    async def register(self) -> None:
        """Create this instance's consumer and list it in the stream's membership map."""
        core = self.core
        with stream_errors(self.name, f"registering consumer {core.consumer}"):
            await core.client.execute(
                "XGROUP", "CREATECONSUMER", self.key, core.name, core.consumer
            )
        await self.members.append(core.name, [core.consumer], unique=True)
        self.listed = True

    async def ensure_listed(self) -> None:
        """Put this consumer back in the membership map if it is missing from it.

        A destroyed stream resets its membership map, and a stale verdict by another instance
        removes the consumer; both are repaired by the next keep-alive.
        """
        core = self.core
        async with self.listing:
            if not self.listed:
                return  # not registered yet, or unregistering
            try:
                listed = await self.members.get_values(core.name) or []
            except ValueError:
                listed = []
            if core.consumer not in listed:
                await self.members.append(core.name, [core.consumer], unique=True)

    async def unregister(self) -> None:
        """Delete this instance's consumer if nothing is pending on it (called on leaving)."""
        core = self.core
        async with self.listing:  # a repair in flight lands first; no repair after this
            self.listed = False
        try:
            with map_redis_errors(f"sink {core.name!r}: deleting consumer {core.consumer}"):
                result: Any = await core.scripts["sink_delete_consumer"](
                    keys=[self.key], args=[core.name, core.consumer]
                )
            if int(result) == 0:
                self._log(
                    logging.INFO,
                    "sink %s: leaving stream %s with pending entries: other instances claim "
                    "them after the grace period",
                    core.name,
                    self.name,
                )
                return
            await self.members.remove_values(core.name, [core.consumer])
            self.released = True
        except Exception as exc:  # cleanup is best effort: log, never mask the exit's cause
            self._log(
                logging.WARNING,
                "sink %s: cleanup on stream %s failed: %r",
                core.name,
                self.name,
                exc,
                error=repr(exc),
            )

    async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Register, then read and reclaim until cancelled; unregister on the way out.

        Once started, the sink shields :attr:`scope` (see :meth:`shield`): then only the
        sink ends it, with ``scope.cancel()``.
        """
        self.running = True
        try:
            with self.scope:
                try:
                    await self.register()
                    task_status.started()
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(self._read_loop)
                        tg.start_soon(self._reclaim_loop)
                finally:
                    # Also when registering was cancelled half-way (the consumer may exist
                    # in Redis already): never leave a consumer behind that nobody owns.
                    with anyio.move_on_after(CLEANUP_TIMEOUT, shield=True):
                        await self.unregister()
        finally:
            if not self.released:
                self.core.consumer_kept = True
            self.done.set()

    def shield(self) -> None:
        """From now on only the sink stops this stream (``scope.cancel()``).

        Called once ``run`` has started: a cancellation of the sink's block must not
        unregister the consumer before the sink's ``_stop`` has sent the queued acks and
        stopped the keep-alive loop (which would list the consumer again).
        """
        self.scope.shield = True

    async def wait_done(self) -> None:
        """Wait for :meth:`run` to end (at once if it never began)."""
        if self.running:
            await self.done.wait()

    # ------------------------------------------------------------------ reading

    async def _read_loop(self) -> None:
        """``XREADGROUP ... >`` forever, each on a dedicated connection of the client's pool.

        The connection is borrowed per read: a read cancelled when the sink leaves the stream
        is unblocked by the transport (``CLIENT UNBLOCK``) and its connection reused.
        """
        core = self.core
        read = core.options.read
        command: tuple[str | int, ...] = (
            "XREADGROUP", "GROUP", core.name, core.consumer, "COUNT", read.max_polled,
            "BLOCK", read.block_ms, *(("NOACK",) if core.options.no_ack else ()),
            "STREAMS", self.key, ">",
        )  # fmt: skip
        failures = 0
        while True:
            try:
                async with core.client.blocking(key=self.key) as conn:
                    reply = await conn.execute(*command)
            except Exception as exc:
                if is_wrong_type(exc):
                    raise wrong_type_error(self.name) from exc
                missing = is_group_missing(exc)
                if not missing and not is_transient(exc) and not is_redirect(exc):
                    raise to_pulse_error(exc, f"sink {core.name!r}: reading {self.name!r}") from exc
                delay = backoff_delay(failures, cap=MAX_RETRY_DELAY)
                failures += 1
                core.counts["retries"] += 1
                self._log(
                    logging.WARNING,
                    "sink %s: reading stream %s failed (%r); %s in %.2fs",
                    core.name,
                    self.name,
                    exc,
                    "recreating the group" if missing else "retrying",
                    delay,
                    error=repr(exc),
                    delay=delay,
                )
                await anyio.sleep(delay)
                if missing:
                    with uninterrupted():
                        await self._recreate_group()
                continue
            failures = 0
            if not reply:
                continue
            entries = [
                (text(entry_id), fields, 1)
                for batch in read_reply(reply).values()
                for entry_id, fields in batch
            ]
            await self._deliver(entries)

    async def _recreate_group(self) -> None:
        """Recreate a lost group at the newest id seen (not ``$``: nothing newer is lost)."""
        try:
            await self.create_group(self.recovery_id)
            await self.register()
        except Exception as exc:
            if not is_transient(exc) and not is_group_missing(exc):
                raise
            return
        self._log(
            logging.WARNING,
            "sink %s: recreated the group of stream %s after %s",
            self.core.name,
            self.name,
            self.recovery_id,
            recovery_id=self.recovery_id,
        )

    async def _deliver(self, entries: Sequence[tuple[str, Mapping[Any, Any], int]]) -> None:
        """Hand entries to the user's iteration; ack what must not stay pending."""
        core = self.core
        options = core.options
        events: list[Event] = []
        skipped: list[str] = []
        for entry_id, fields, deliveries in entries:
            self.recovery_id = later_id(self.recovery_id, entry_id)
            try:
                event = decode_entry(
                    entry_id,
                    fields,
                    stream_name=self.name,
                    sink_name=core.name,
                    deliveries=deliveries,
                )
            except MalformedEntryError as exc:
                self._log(
                    logging.WARNING,
                    "sink %s: skipping malformed entry %s of stream %s: %s",
                    core.name,
                    entry_id,
                    self.name,
                    exc,
                    event_id=entry_id,
                )
                skipped.append(entry_id)
                continue
            if options.max_deliveries is not None and deliveries > options.max_deliveries:
                try:
                    with uninterrupted():
                        await self._give_up(event)
                except Exception as exc:
                    if not is_transient(exc):
                        raise
                    # Still pending: the next reclaim round tries again.
                    self._log(
                        logging.WARNING,
                        "sink %s: moving event %s to the dead letters failed: %r",
                        core.name,
                        entry_id,
                        exc,
                        event_id=entry_id,
                        error=repr(exc),
                    )
                continue
            if not options.read.filter.matches(event.topic):
                skipped.append(entry_id)
                continue
            events.append(event)
        if skipped and not options.no_ack:
            try:
                with uninterrupted(), stream_errors(self.name, "acknowledging skipped entries"):
                    await core.client.execute("XACK", self.key, core.name, *skipped)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                # Still pending: reclaimed after the grace period and skipped again then.
                self._log(
                    logging.WARNING,
                    "sink %s: acknowledging skipped entries failed: %r",
                    core.name,
                    exc,
                    error=repr(exc),
                )
        core.counts["skipped"] += len(skipped)
        for event in events:
            key = (event.stream_name, event.id)
            if key in core.in_buffer:
                continue  # claimed back while still waiting here: queued once is enough
            core.in_buffer.add(key)
            await core.buffer.put(event)
        # The consumer, woken by the events, runs now, before the next read is written.
        await anyio.lowlevel.checkpoint()

    async def _give_up(self, event: Event) -> None:
        """Move an event delivered ``max_deliveries`` times to the dead-letter stream."""
        core = self.core
        delivered = event.deliveries - 1
        target = core.options.dead_letter
        # A key of the wrong type here is the dead-letter stream's (the read loop reports
        # the stream's own).
        with stream_errors(
            target or self.name,
            f"dead-lettering event {event.id} of stream {self.name!r}"
            if target
            else f"dropping event {event.id} after max_deliveries",
        ):
            if target is None:
                await core.client.execute("XACK", self.key, core.name, event.id)
            else:
                fields = dead_letter_fields(
                    event_id=event.id,
                    stream_name=self.name,
                    sink_name=core.name,
                    event_name=event.event_name,
                    payload=event.payload,
                    topic=event.topic,
                    deliveries=delivered,
                )
                if core.cluster:
                    # The two keys may live in different slots: add, then ack (a crash in
                    # between means the entry is dead-lettered again later, never lost).
                    await core.client.execute("XADD", stream_key(target), "*", *fields)
                    await core.client.execute("XACK", self.key, core.name, event.id)
                else:
                    await core.scripts["sink_dead_letter"](
                        keys=[self.key, stream_key(target)],
                        args=[core.name, event.id, *fields],
                    )
        core.counts["dead_lettered"] += 1
        core.cell(self.name).dead_lettered += 1
        self._log(
            logging.WARNING,
            "sink %s: event %s of stream %s delivered %d times without ack: %s",
            core.name,
            event.id,
            self.name,
            delivered,
            f"moved to dead-letter stream {target!r}" if target else "dropped",
            event_id=event.id,
            deliveries=delivered,
            dead_letter=target,
        )

    # ------------------------------------------------------------------ reclaiming

    async def _reclaim_loop(self) -> None:
        """Periodically claim idle entries and delete stale consumers (one holder at a time)."""
        core = self.core
        period = core.options.timing.reclaim_period
        deadline = anyio.current_time()
        while True:
            deadline = max(deadline + period, anyio.current_time())
            await anyio.sleep_until(deadline)
            try:
                await self._reclaim_once()
            except Exception as exc:
                if is_wrong_type(exc):
                    continue  # the read loop reports a key of the wrong type
                if not (is_transient(exc) or is_group_missing(exc)):
                    raise
                core.counts["retries"] += 1
                self._log(
                    logging.DEBUG,
                    "sink %s: reclaim on stream %s skipped: %r",
                    core.name,
                    self.name,
                    exc,
                    error=repr(exc),
                )

    async def _reclaim_once(self) -> None:
        core = self.core
        timing = core.options.timing
        # An instance that cannot take more events leaves the work to the others.
        free = core.free_buffer()
        if free <= 0:
            return
        with uninterrupted():
            holds: Any = await core.scripts["sink_lease"](
                keys=[lease_key(core.name, self.name)],
                args=[core.consumer, str(timing.lease_ttl_ms)],
            )
        if int(holds) != 1:
            return
        cursor = "0-0"
        while free > 0:
            with uninterrupted():
                reply: Any = await core.scripts["sink_claim"](
                    keys=[self.key],
                    args=[
                        core.name,
                        core.consumer,
                        str(timing.grace_ms),
                        cursor,
                        str(min(free, core.options.read.max_polled)),
                    ],
                )
            raw_cursor, raw_claimed = cast(list[Any], reply)
            cursor = text(raw_cursor)
            claimed = []
            for raw_id, deliveries, flat in raw_claimed:
                fields = as_dict(flat)
                claimed.append((text(raw_id), fields, int(deliveries)))
            if claimed:
                self._log(
                    logging.INFO,
                    "sink %s: claimed %d idle entries of stream %s",
                    core.name,
                    len(claimed),
                    self.name,
                    count=len(claimed),
                )
                await self._deliver(claimed)
            if cursor == "0-0":
                break
            free = core.free_buffer()
        with uninterrupted():
            await self._delete_stale()

    async def _delete_stale(self) -> None:
        """Delete consumers whose instance is gone, once nothing is pending on them."""
        core = self.core
        raw = await core.client.execute("XINFO", "CONSUMERS", self.key, core.name)
        consumers = []
        for fields in info_maps(raw):
            consumers.append(
                ConsumerInfo(
                    name=text(cast(bytes, fields["name"])),
                    pending=int(cast(int, fields.get("pending") or 0)),
                    idle_ms=int(cast(int, fields.get("idle") or 0)),
                )
            )
        if all(c.name == core.consumer for c in consumers):
            return
        keepalives, _, _ = await core.keepalive.read_all()
        stale = stale_consumers(
            consumers,
            keepalives,
            now_ns=await core.redis_time_ns(),
            stale_after=core.options.timing.stale_after,
            self_name=core.consumer,
        )
        pending = {c.name: c.pending for c in consumers}
        for name in stale:
            if pending[name]:
                continue  # its entries are claimed first, by a later round if not this one
            result: Any = await core.scripts["sink_delete_consumer"](
                keys=[self.key], args=[core.name, name]
            )
            if int(result) != 1:
                continue
            self._log(
                logging.INFO,
                "sink %s: deleted stale consumer %s of stream %s",
                core.name,
                name,
                self.name,
                stale_consumer=name,
            )
            await self.members.remove_values(core.name, [name])
            seen = keepalives.get(name)
            if seen is not None:
                # Only the value judged stale: an instance that came back keeps its entry.
                await core.keepalive.test_and_delete(name, seen)

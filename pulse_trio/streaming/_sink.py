"""Sinks: a consumer group that delivers each event to one instance of the sink, at least once.

Wire format (goa.design/pulse, so Go and Python instances can share one sink):

- consumer group = the sink's name, on each stream key ``pulse:stream:<stream>``;
- each instance is a consumer with a fresh ULID name;
- membership: replicated map ``stream:<stream>:sinks``, key = sink name, value = JSON list of
  consumer names;
- keep-alive: replicated map ``sink:<sink>:keepalive``, key = consumer name, value = Unix
  nanoseconds (decimal), written from the Redis clock.

Beyond the reference: idle entries are reclaimed under a lease of this sink *and* stream,
consumers are deleted only when they have no pending entries (checked atomically), a lost
group is recreated with backoff at the last id seen (never ``$``), filtered-out and malformed
entries are acknowledged, and entries delivered ``max_deliveries`` times go to a dead-letter
stream.

This module is the :class:`Sink` object (its public API and lifecycle); what it does on each
stream is in ``_sink_stream.py`` (what its streams share in ``_sink_core.py``), the pure
rules (timing, staleness, names) in ``_sink_policy.py``.
"""

from __future__ import annotations

import anyio
import anyio.abc
import attrs

from .. import _metrics
from .._boundary import Client, as_dict, is_transient, raise_pulse_error, text
from .._lifecycle import Service, State
from .._lua import bind_script
from .._retry import backoff_delay
from ..rmap._ops import MapOps
from ._buffer import EventBuffer
from ._event import STREAM_KEY_PREFIX, Event, StartPosition, check_ack, start_to_id, stream_key
from ._options import SinkOptions, StreamRef, keepalive_map_name, validate_start
from ._sink_core import CLEANUP_TIMEOUT, MAX_RETRY_DELAY, SinkCore, uninterrupted
from ._sink_policy import new_consumer_name
from ._sink_stream import StreamConsumer

_SCRIPTS = ("sink_claim", "sink_delete_consumer", "sink_lease", "sink_dead_letter")


@attrs.frozen
class SinkStatistics:
    """Counters of one sink instance since its block started (:meth:`Sink.statistics`).

    Attributes:
        consumer: The instance's consumer name.
        streams: The streams it reads.
        delivered: Events the iteration returned, redeliveries included.
        redelivered: Of those, events claimed from the group's pending entries
            (``deliveries > 1``).
        skipped: Entries acknowledged without being delivered (filtered out or malformed).
        dead_lettered: Entries moved to the dead-letter stream (or dropped) after
            ``max_deliveries``.
        acked: Entries :meth:`Sink.ack` acknowledged (as Redis counted them).
        buffered: Events read and waiting for the iteration.
        retries: Transient failures the background tasks retried.
    """

    consumer: str
    streams: tuple[str, ...]
    delivered: int
    redelivered: int
    skipped: int
    dead_lettered: int
    acked: int
    buffered: int
    retries: int


class Sink(Service):
    """One instance of a sink: iterate it for events, acknowledge what you processed.

    Created by :meth:`Stream.open_sink <pulse_trio.streaming.Stream.open_sink>`, never
    directly, and entered with ``async with``. All instances with the same name share one
    consumer group per stream: each event goes to one of them. When the block starts, the
    group exists, this instance's consumer is registered (membership and keep-alive maps) and
    reading has begun.

    Delivery is at least once. An event that is not acknowledged within the ack grace period
    after it was read (time spent in this instance's buffer counts) may be claimed by any
    instance, this one included, and delivered again with ``deliveries`` increased. Ack within
    the grace period to avoid duplicates.

    After the block, iteration ends, :meth:`ack` still works and
    :meth:`add_stream`/:meth:`remove_stream` raise :class:`pulse_trio.ClosedError`.

    Cancellation:
        The read loop and reclaim loop of each stream and the instance's keep-alive run in a
        task group owned by the block; leaving the block (also by cancellation, also while an
        ``XREADGROUP`` is blocked) stops them before it returns. On leaving, the instance's
        consumer is deleted only if nothing is pending on it; otherwise it is left for the
        other instances, which claim its entries after the grace period and then delete it.
        A failure of a background task that is not a transient Redis error ends the block
        with that error (in an exception group); an exception of the block's own code comes
        out as it is.

    Connections:
        Per stream, one dedicated connection of the client's pool (``client.blocking()``),
        borrowed for each blocking ``XREADGROUP`` and given back when it returns; every other
        command (keep-alive, membership, claims, acks) goes on the client's shared
        multiplexed connection.
    """

    _kind = "sink"
    _factory = "Stream.open_sink(name)"

    def __init__(self, stream: StreamRef, name: str, options: SinkOptions) -> None:
        self._client: Client = stream.client
        self._name = name
        self._options = options
        self._logger = stream.logger
        self._first = stream
        #: The buffer's receiving side (made when entered: see :meth:`_prepare`).
        self._buffer: EventBuffer | None = None
        self._core = SinkCore(
            client=stream.client,
            name=name,
            consumer=new_consumer_name(),
            options=options,
            logger=stream.logger,
            keepalive=MapOps.create(stream.client, keepalive_map_name(name)),
            scripts={script: bind_script(stream.client, script) for script in _SCRIPTS},
        )
        self._streams: dict[str, StreamConsumer] = {}
        # Acknowledgements queued by ack_nowait, per stream key; sent by _ack_loop.
        self._ack_queue: dict[str, list[str]] = {}
        # The keep-alive loop is stopped (and waited for) before the consumers unregister:
        # a tick after that would write the keep-alive and membership entry back.
        self._keepalive_done: anyio.Event | None = None
        self._ack_wakeup: anyio.Event
        self._ack_lock: anyio.Lock
        self._keepalive_scope: anyio.CancelScope

    # ------------------------------------------------------------------ public API

    @property
    def name(self) -> str:
        """The sink's name (the consumer group's name)."""
        return self._name

    @property
    def consumer(self) -> str:
        """This instance's consumer name (a ULID, fresh for each instance)."""
        return self._core.consumer

    @property
    def streams(self) -> tuple[str, ...]:
        """The names of the streams this instance reads, in the order they were added."""
        return tuple(self._streams)

    def _buffered(self) -> int:
        return 0 if self._buffer is None else len(self._buffer)

    def __repr__(self) -> str:
        buffered = self._buffered()
        return (
            f"<Sink {self._name!r} {self._state.value} consumer={self.consumer} "
            f"streams={list(self._streams)} buffered={buffered}>"
        )

    def __aiter__(self) -> Sink:
        return self

    async def __anext__(self) -> Event:
        """Wait for the next event; the iteration ends when the sink was left.

        An event already buffered is returned at once: without a checkpoint (a scheduling
        point, where a cancellation is delivered), except for every 16th in a row, so a loop
        that awaits nothing else per event still lets other tasks run.

        Raises:
            StopAsyncIteration: The sink's block has exited.
            pulse_trio.ClosedError: The sink was never entered.
        """
        if self._buffer is None:
            self._check_open("iteration")
            raise StopAsyncIteration  # entered, and left before the buffer was made
        try:
            event = await self._buffer.take()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None
        counts = self._core.counts
        self._core.in_buffer.discard((event.stream_name, event.id))
        counts["delivered"] += 1
        cell = self._core.cells.get(event.stream_name) or self._core.cell(event.stream_name)
        cell.delivered += 1
        if event.deliveries > 1:
            counts["redelivered"] += 1
            cell.redelivered += 1
        return event

    def statistics(self) -> SinkStatistics:
        """Return this instance's counters (a frozen snapshot; no I/O)."""
        counts = self._core.counts
        return SinkStatistics(
            consumer=self.consumer,
            streams=self.streams,
            delivered=counts["delivered"],
            redelivered=counts["redelivered"],
            skipped=counts["skipped"],
            dead_lettered=counts["dead_lettered"],
            acked=counts["acked"],
            buffered=self._buffered(),
            retries=counts["retries"],
        )

    def _by_stream_key(self, events: tuple[Event, ...]) -> dict[str, list[str]]:
        by_key: dict[str, list[str]] = {}
        for event in events:
            if not isinstance(event, Event):
                raise TypeError(f"ack takes streaming.Event objects, not {type(event).__name__}")
            # Checked here, in the caller's task, so that an event built by hand with a bad id
            # or stream name never joins (and fails) a batch shared with other callers'.
            check_ack(event, self._name)
            by_key.setdefault(stream_key(event.stream_name), []).append(event.id)
        return by_key

    async def _xack(self, by_key: dict[str, list[str]]) -> int:
        """One round trip: XACK per stream, pipelined when there are several."""
        try:
            if len(by_key) == 1:
                ((key, ids),) = by_key.items()
                acked = int(await self._client.execute("XACK", key, self._name, *ids))
                self._core.cell(key.removeprefix(STREAM_KEY_PREFIX)).acked += acked
            else:
                replies = await self._client.execute_many(
                    [("XACK", key, self._name, *ids) for key, ids in by_key.items()]
                )
                acked = 0
                for key, result in zip(by_key, replies, strict=True):
                    acked += int(result)
                    self._core.cell(key.removeprefix(STREAM_KEY_PREFIX)).acked += int(result)
        except Exception as exc:  # map_redis_errors, with the message built only on failure
            count = sum(len(ids) for ids in by_key.values())
            raise_pulse_error(exc, f"sink {self._name!r}: ack of {count} event(s)")
        self._core.counts["acked"] += acked
        return acked

    async def ack(self, *events: Event) -> int:
        """Acknowledge events: they will not be delivered again.

        Events of several streams are acknowledged in one pipelined round trip. Acknowledging
        after the block was left still works (the entries are then not reclaimed by others).

        Args:
            *events: Events this sink delivered.

        Returns:
            How many entries were still pending and are now acknowledged (0 with
            ``no_ack=True``, where nothing is pending). Informational only: an entry another
            instance acknowledged first is not counted.

        Raises:
            TypeError: An argument is not an :class:`~pulse_trio.streaming.Event`.
            InvalidEventError: An event was not delivered by a sink of this name, or (built by
                hand) has an id that is not a stream id or a stream name that breaks the
                naming rule; nothing is sent (a ``ValueError``).
            pulse_trio.RedisUnavailableError: Redis could not be reached, or the connection was
                lost with the request (the events may stay pending: ack them again, which is
                harmless, or they are redelivered after the grace period).
            pulse_trio.RedisCommandError: Redis refused the acknowledgement.
        """
        by_key = self._by_stream_key(events)
        if not by_key or self._options.no_ack:
            await anyio.lowlevel.checkpoint()
            return 0
        return await self._xack(by_key)

    def ack_nowait(self, *events: Event) -> None:
        """Queue events for acknowledgement, without a round trip here.

        The sink's own task sends the queued acknowledgements in one batch as soon as the
        previous one returned (no timer: no added latency when idle, one round trip per batch
        under load), retries them after transient failures, and flushes what is left before
        the sink leaves its streams. Delivery stays at least once: acknowledgements lost with
        the process (a crash before the flush) mean the events are delivered again.

        Args:
            *events: Events this sink delivered.

        Raises:
            TypeError: An argument is not an :class:`~pulse_trio.streaming.Event`.
            InvalidEventError: An event was not delivered by a sink of this name, or (built by
                hand) has an id that is not a stream id or a stream name that breaks the
                naming rule; nothing is sent (a ``ValueError``).
            pulse_trio.ClosedError: The sink is not open (use :meth:`ack` after the block).
        """
        by_key = self._by_stream_key(events)
        if self._state is not State.OPEN:
            self._check_open("ack_nowait")
            raise self._closed_error(
                f"sink {self._name!r} is closing: ack_nowait is not possible, use `await ack()`"
            )
        if not by_key or self._options.no_ack:
            return
        for key, ids in by_key.items():
            self._ack_queue.setdefault(key, []).extend(ids)
        self._ack_wakeup.set()

    async def _flush_acks(self) -> None:
        """Send every queued acknowledgement (one round trip per batch)."""
        async with self._ack_lock:
            while self._ack_queue:
                batch, self._ack_queue = self._ack_queue, {}
                try:
                    await self._xack(batch)
                except BaseException:
                    for key, ids in batch.items():  # keep them for the next attempt
                        self._ack_queue.setdefault(key, [])[:0] = ids
                    raise

    async def _try_flush_acks(self) -> None:
        """:meth:`_flush_acks`, logging a failure (the acks stay queued for the ack loop)."""
        try:
            await self._flush_acks()
        except Exception as exc:
            self._logger.warning(
                "sink %s: %d queued acknowledgements were not sent (%r): redelivered "
                "after the grace period unless sent later",
                self._name,
                sum(len(ids) for ids in self._ack_queue.values()),
                exc,
                extra=self._core.extra(error=repr(exc)),
            )

    async def _ack_loop(self) -> None:
        """Send the acknowledgements queued by :meth:`ack_nowait` as soon as possible."""
        failures = 0
        while True:
            await self._ack_wakeup.wait()
            self._ack_wakeup = anyio.Event()
            try:
                await self._flush_acks()
                failures = 0
            except Exception as exc:
                if not is_transient(exc):
                    raise
                delay = backoff_delay(failures, cap=MAX_RETRY_DELAY)
                failures += 1
                self._core.counts["retries"] += 1
                self._logger.warning(
                    "sink %s: queued acknowledgements failed (%r); retrying in %.2fs",
                    self._name,
                    exc,
                    delay,
                    extra=self._core.extra(error=repr(exc), delay=delay),
                )
                await anyio.sleep(delay)
                self._ack_wakeup.set()

    async def add_stream(self, stream: object, start: StartPosition | None = None) -> None:
        """Also read ``stream`` (a no-op if a stream of that name is read already).

        The sink's group is created on it if needed (at ``start``, default: the sink's own
        start position), this instance's consumer registered, and reading begins before this
        returns. If the call fails or is cancelled, the stream is not read.

        Args:
            stream: The :class:`~pulse_trio.streaming.Stream`; it must use the sink's client.
            start: Where a newly created group starts; ignored if the group exists.

        Raises:
            TypeError: ``stream`` is not a stream.
            ValueError: Bad ``start``, or ``stream`` uses another client.
            StreamError: The stream's key holds a value that is not a stream.
            pulse_trio.RedisUnavailableError: Redis cannot be reached.
            pulse_trio.RedisCommandError: Redis rejected a command (for example the stream
                was destroyed again while its group was being created: call again).
            pulse_trio.ClosedError: The sink is not open.
        """
        ref = StreamRef.of(stream)
        start_id = self._options.start_id if start is None else start_to_id(validate_start(start))
        if ref.client is not self._client:
            raise ValueError(f"stream {ref.name!r} uses another client than sink {self._name!r}")
        tg = self._check_open("add_stream")
        if ref.name in self._streams:
            await anyio.lowlevel.checkpoint()
            return
        consumer = StreamConsumer(self._core, ref, start_id)
        self._streams[ref.name] = consumer
        try:
            await consumer.create_group(start_id)
            await tg.start(consumer.run)
        except BaseException:
            if self._streams.get(ref.name) is consumer:
                del self._streams[ref.name]
            # Cancelled just after it started, the stream's task would go on reading in the
            # sink's task group: stop it, and let it unregister before saying it failed.
            consumer.scope.cancel()
            with anyio.move_on_after(CLEANUP_TIMEOUT, shield=True):
                await consumer.wait_done()
            raise
        consumer.shield()

    async def remove_stream(self, stream: object) -> None:
        """Stop reading a stream (by object or name); a no-op if it is not read.

        Acknowledgements queued by :meth:`ack_nowait` are sent first. This instance's consumer
        is then deleted from that stream's group if it has no pending entries, otherwise left
        for the other instances to claim them. The group itself stays,
        so re-adding the stream later resumes where the sink left off.

        Raises:
            TypeError: ``stream`` is neither a stream nor a name.
            pulse_trio.ClosedError: The sink is not open.
        """
        name = stream if isinstance(stream, str) else StreamRef.of(stream).name
        self._check_open("remove_stream")
        if name not in self._streams:
            await anyio.lowlevel.checkpoint()
            return
        # Queued acknowledgements first, as when the sink leaves: what was processed is not
        # pending any more, so the consumer can be deleted from the group.
        await self._try_flush_acks()
        consumer = self._streams.pop(name, None)
        if consumer is None:
            return
        consumer.scope.cancel()
        await consumer.wait_done()

    # ------------------------------------------------------------------ lifecycle

    async def _prepare(self) -> None:
        # Synchronisation primitives and the buffer belong to the event loop: made here, not
        # in __init__ (the sink may be built outside the loop, as open_sink does no I/O, and
        # one never entered must hold nothing to close).
        self._buffer = self._core.buffer = EventBuffer(self._options.read.buffer_size)
        self._ack_wakeup = anyio.Event()
        self._ack_lock = anyio.Lock()
        # Shielded like each stream's tasks: only _stop ends the loop, in its order.
        self._keepalive_scope = anyio.CancelScope(shield=True)
        first = StreamConsumer(self._core, self._first, self._options.start_id)
        # The group first, outside any task group, so that a wrong-type key raises plainly.
        await first.create_group(first.start_id)
        # Before the consumer exists: Go instances delete consumers without a keep-alive.
        await self._core.write_keepalive()
        self._streams[first.name] = first

    async def _start(self, tg: anyio.abc.TaskGroup) -> None:
        (first,) = self._streams.values()
        await tg.start(first.run)
        first.shield()
        self._keepalive_done = anyio.Event()
        tg.start_soon(self._keepalive_loop, self._keepalive_done)
        tg.start_soon(self._ack_loop)
        if _metrics.ENABLED:
            tg.start_soon(self._refresh_gauges)
        self._logger.info(
            "sink %s: instance %s reading stream %s",
            self._name,
            self.consumer,
            first.name,
            extra=self._core.extra(first.name),
        )

    async def _refresh_gauges(self) -> None:
        """Metrics: every :data:`~pulse_trio._metrics.GAUGE_INTERVAL` seconds, read the
        pending count and lag of this sink's group and the length of each of its streams
        (one pipelined ``XINFO GROUPS`` + ``XLEN`` per stream). A failed reading (Redis away,
        an ACL without ``XINFO``) is skipped: metrics never stop a sink."""
        while True:
            await anyio.sleep(_metrics.GAUGE_INTERVAL)
            for consumer in list(self._streams.values()):
                try:
                    groups, length = await self._client.execute_many(
                        [("XINFO", "GROUPS", consumer.key), ("XLEN", consumer.key)]
                    )
                    if isinstance(groups, Exception) or isinstance(length, Exception):
                        continue  # the stream is gone, or XINFO is denied: no reading
                    cell = self._core.cell(consumer.name)
                    cell.length = int(length)
                    for group in groups:
                        info = {text(k): v for k, v in as_dict(group).items()}
                        if text(info.get("name", b"")) == self._name:
                            cell.pending = int(info.get("pending") or 0)
                            lag = info.get("lag")
                            cell.lag = None if lag is None else int(lag)
                except Exception as exc:  # metrics never stop a sink
                    self._logger.debug("sink %s: metrics reading failed: %r", self._name, exc)

    async def _stop(self) -> None:
        try:
            await self._stop_in_order()
        finally:
            # The keep-alive loop and the streams' tasks are shielded from the block's
            # cancellation: whatever happened above, they must end now.
            self._keepalive_scope.cancel()
            for consumer in self._streams.values():
                consumer.scope.cancel()

    async def _stop_in_order(self) -> None:
        core = self._core
        with anyio.move_on_after(2 * CLEANUP_TIMEOUT, shield=True):
            # Queued acknowledgements first: then nothing stays pending that was processed,
            # and the consumers can be deleted.
            await self._try_flush_acks()
            # No keep-alive tick from now on (it would re-list the consumers being removed).
            self._keepalive_scope.cancel()
            if self._keepalive_done is not None:
                await self._keepalive_done.wait()
            # Each stream unregisters its consumer on the way out; wait for all of them
            # before deciding whether the keep-alive may go.
            for consumer in list(self._streams.values()):
                consumer.scope.cancel()
            for consumer in list(self._streams.values()):
                await consumer.wait_done()
            if core.consumer_kept:
                return
            try:
                await core.keepalive.delete(core.consumer)
            except Exception as exc:
                self._logger.warning(
                    "sink %s: removing the keep-alive failed: %r",
                    self._name,
                    exc,
                    extra=core.extra(error=repr(exc)),
                )

    def _finish(self) -> None:
        if self._buffer is not None:
            self._buffer.close()
        self._logger.info(
            "sink %s: instance %s left", self._name, self.consumer, extra=self._core.extra()
        )

    async def _keepalive_loop(self, done: anyio.Event) -> None:
        """Write the keep-alive every grace/3 and keep this consumer in the membership lists."""
        try:
            with self._keepalive_scope:
                await self._keep_alive()
        finally:
            done.set()

    async def _keep_alive(self) -> None:
        core = self._core
        period = self._options.timing.keepalive_period
        deadline = anyio.current_time()
        failures = 0
        while True:
            deadline = max(deadline + period, anyio.current_time())
            await anyio.sleep_until(deadline)
            try:
                with uninterrupted():
                    await core.write_keepalive()
                    for consumer in list(self._streams.values()):
                        await consumer.ensure_listed()
                failures = 0
            except Exception as exc:
                if not is_transient(exc):
                    raise
                failures += 1
                core.counts["retries"] += 1
                self._logger.warning(
                    "sink %s: keep-alive failed (%r), %d in a row",
                    self._name,
                    exc,
                    failures,
                    extra=core.extra(error=repr(exc), failures=failures),
                )

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
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, cast

import anyio
import anyio.abc
import attrs
import coredis
from coredis.exceptions import (
    NoScriptError,
    ResponseError,
    StreamConsumerGroupError,
    StreamDuplicateConsumerGroupError,
    UnblockedError,
    WrongTypeError,
)

from .. import rmap
from .._boundary import TRANSIENT_ERRORS, leaves
from .._errors import ClosedError, RedisUnavailableError
from .._lua import bind_script
from .._names import validate_duration, validate_name
from .._retry import backoff_delay
from .._tasks import owned_task_group
from ._event import (
    NEWEST,
    Event,
    MalformedEntryError,
    StartPosition,
    TopicFilter,
    decode_entry,
    id_key,
    start_to_id,
    stream_key,
    wrong_type_error,
)
from ._sink_policy import (
    ConsumerInfo,
    SinkTiming,
    dead_letter_fields,
    new_consumer_name,
    stale_consumers,
)
from ._stream import (
    DEFAULT_BLOCK,
    DEFAULT_BUFFER_SIZE,
    DEFAULT_MAX_POLLED,
    Stream,
)

#: Default ack grace period, in seconds.
DEFAULT_ACK_GRACE_PERIOD = 20.0
#: Longest time the cleanup on leaving (consumer deletion, membership) may take, in seconds.
CLEANUP_TIMEOUT = 5.0
#: Longest pause between two attempts to recreate a lost group, in seconds.
MAX_RETRY_DELAY = 5.0
#: Longest time a short background command (keep-alive, lease, claim, ack of skipped entries)
#: may delay leaving the block, in seconds; it then fails as a transient error.
COMMAND_TIMEOUT = 2.0

Client = coredis.Redis[Any] | coredis.RedisCluster[Any]


def keepalive_map_name(sink: str) -> str:
    """The replicated map holding the keep-alives of a sink's instances."""
    return f"sink:{sink}:keepalive"


def membership_map_name(stream: str) -> str:
    """The replicated map listing, per sink, the consumers reading a stream."""
    return f"stream:{stream}:sinks"


def lease_key(sink: str, stream: str) -> str:
    """The key of the reclaim lease of one sink on one stream."""
    return f"pulse:sink:{sink}:lease:{stream}"


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _retryable(exc: BaseException) -> bool:
    """Transient Redis trouble (also as reported by rmap writes): try again later.

    ``NoScriptError`` counts too: after a server restart coredis reloads a script once, and
    a restart racing with that reload lets NOSCRIPT through; the next call loads it again.
    """
    parts = leaves(exc)
    return bool(parts) and all(
        isinstance(part, (*TRANSIENT_ERRORS, RedisUnavailableError, NoScriptError))
        for part in parts
    )


def _group_missing(exc: BaseException) -> bool:
    """The stream key or the consumer group is gone (destroyed stream, lost state)."""
    if isinstance(exc, StreamConsumerGroupError | UnblockedError):
        return True
    message = str(exc)
    return isinstance(exc, ResponseError) and (
        "NOGROUP" in message or "no such key" in message.lower()
    )


def _uninterrupted() -> contextlib.AbstractContextManager[anyio.CancelScope]:
    """A scope in which short background commands finish even if the sink is being left.

    coredis loses a pool slot (and leaks the buffers of a connection) when a command is
    cancelled while it opens a new connection, so quick non-blocking commands are shielded
    from cancellation, with a deadline. The blocking XREADGROUP is never shielded.
    """
    return anyio.fail_after(COMMAND_TIMEOUT, shield=True)


def _later_id(a: str, b: str) -> str:
    return a if id_key(a) >= id_key(b) else b


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


@attrs.define(eq=False)
class _StreamState:
    """One stream a sink reads; mutated only by the sink's own tasks."""

    name: str
    key: str
    start_id: str
    ttl: float | None
    sliding_ttl: float | None
    logger: logging.Logger
    #: Where a lost group is recreated: the newest id this instance saw (never ``$``).
    recovery_id: str = "0-0"
    members: rmap.Map | None = None
    #: Set when this instance's consumer was deleted from the group on leaving.
    released: bool = False
    scope: anyio.CancelScope = attrs.field(factory=anyio.CancelScope)
    done: anyio.Event = attrs.field(factory=anyio.Event)


@attrs.frozen
class _Options:
    start_id: str
    block_ms: int
    max_polled: int
    buffer_size: int
    timing: SinkTiming
    no_ack: bool
    filter: TopicFilter
    max_deliveries: int | None
    dead_letter: str | None


def _positive_int(what: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be an int >= 1, got {value!r}")
    return value


def _build_options(
    stream: Stream,
    *,
    start: StartPosition,
    block: float,
    max_polled: int,
    buffer_size: int,
    ack_grace_period: float,
    no_ack: bool,
    topic: str | None,
    topic_pattern: str | None,
    max_deliveries: int | None,
    dead_letter: Stream | str | None,
) -> _Options:
    start_id = start_to_id(start)
    block_s = validate_duration("block", block)
    grace = validate_duration("ack_grace_period", ack_grace_period, allow_zero=False)
    assert block_s is not None
    assert grace is not None
    if max_deliveries is not None:
        _positive_int("max_deliveries", max_deliveries)
        if no_ack:
            raise ValueError(
                f"max_deliveries={max_deliveries!r} needs acknowledgements: with no_ack=True "
                "events are never redelivered"
            )
    dead_letter_name: str | None = None
    if dead_letter is not None:
        dead_letter_name = validate_name(
            "dead-letter stream",
            dead_letter.name if isinstance(dead_letter, Stream) else dead_letter,
        )
        if max_deliveries is None:
            raise ValueError(
                f"dead_letter={dead_letter_name!r} needs max_deliveries: say after how many "
                "deliveries an event is moved there"
            )
        if dead_letter_name == stream.name:
            raise ValueError(
                f"dead_letter={dead_letter_name!r} must differ from the stream the sink reads"
            )
    return _Options(
        start_id=start_id,
        block_ms=round(block_s * 1000),
        max_polled=_positive_int("max_polled", max_polled),
        buffer_size=_positive_int("buffer_size", buffer_size),
        timing=SinkTiming.from_grace(grace),
        no_ack=bool(no_ack),
        filter=TopicFilter.build(topic, topic_pattern),
        max_deliveries=max_deliveries,
        dead_letter=dead_letter_name,
    )


class Sink:
    """One instance of a sink: iterate it for events, acknowledge what you processed.

    Created by :func:`open_sink` (or :meth:`Stream.open_sink`), never directly. All instances
    with the same name share one consumer group per stream: each event goes to one of them.

    Delivery is at least once. An event that is not acknowledged within the ack grace period
    after it was read (time spent in this instance's buffer counts) may be claimed by any
    instance, this one included, and delivered again with ``deliveries`` increased. Ack within
    the grace period to avoid duplicates.

    Attributes are read-only; the sink's tasks own its state. The instance's background
    tasks live in the task group of its ``async with`` block (see :func:`open_sink`,
    Cancellation); after the block, iteration ends, :meth:`ack` still works and
    :meth:`add_stream`/:meth:`remove_stream` raise :class:`pulse_trio.ClosedError`.
    """

    def __init__(self, stream: Stream, name: str, options: _Options) -> None:
        self._client: Client = stream.client
        self._name = name
        self._consumer = new_consumer_name()
        self._options = options
        self._timing = options.timing
        self._logger = stream.logger
        self._streams: dict[str, _StreamState] = {}
        self._send, self._receive = anyio.create_memory_object_stream[Event](options.buffer_size)
        self._tg: anyio.abc.TaskGroup | None = None
        self._keepalive: rmap.Map | None = None
        self._closed = False
        # (stream, id) of the events waiting in the buffer: a reclaim round that claims one of
        # them back (this instance is slow) does not queue it a second time.
        self._in_buffer: set[tuple[str, str]] = set()
        self._counts: Counter[str] = Counter()
        # Set when a stream was left with this consumer still in its group (entries pending,
        # or cleanup failed): the keep-alive then stays, so others judge it by its age.
        self._consumer_kept = False
        self._claim = bind_script(self._client, "sink_claim")
        self._delete_consumer = bind_script(self._client, "sink_delete_consumer")
        self._lease = bind_script(self._client, "sink_lease")
        self._move_to_dead_letter = bind_script(self._client, "sink_dead_letter")
        self._time = bind_script(self._client, "sink_time")

    # ------------------------------------------------------------------ public API

    @property
    def name(self) -> str:
        """The sink's name (the consumer group's name)."""
        return self._name

    @property
    def consumer(self) -> str:
        """This instance's consumer name (a ULID, fresh for each instance)."""
        return self._consumer

    @property
    def streams(self) -> tuple[str, ...]:
        """The names of the streams this instance reads, in the order they were added."""
        return tuple(self._streams)

    @property
    def closed(self) -> bool:
        """Whether the sink's ``async with`` block has exited."""
        return self._closed

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        buffered = self._receive.statistics().current_buffer_used
        return (
            f"<Sink {self._name!r} {state} consumer={self._consumer} "
            f"streams={list(self._streams)} buffered={buffered}>"
        )

    def __aiter__(self) -> Sink:
        return self

    async def __anext__(self) -> Event:
        """Wait for the next event; the iteration ends when the sink was left."""
        try:
            event = await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None
        self._in_buffer.discard((event.stream_name, event.id))
        self._counts["delivered"] += 1
        if event.deliveries > 1:
            self._counts["redelivered"] += 1
        return event

    def statistics(self) -> SinkStatistics:
        """Return this instance's counters (a frozen snapshot; no I/O)."""
        counts = self._counts
        return SinkStatistics(
            consumer=self._consumer,
            streams=self.streams,
            delivered=counts["delivered"],
            redelivered=counts["redelivered"],
            skipped=counts["skipped"],
            dead_lettered=counts["dead_lettered"],
            acked=counts["acked"],
            buffered=self._receive.statistics().current_buffer_used,
            retries=counts["retries"],
        )

    async def ack(self, *events: Event) -> int:
        """Acknowledge events: they will not be delivered again.

        Events of several streams are acknowledged in one pipelined round trip. Acknowledging
        after the block was left still works (the entries are then not reclaimed by others).

        Args:
            *events: Events this sink delivered.

        Returns:
            How many entries were still pending and are now acknowledged (0 with
            ``no_ack=True``, where nothing is pending). Informational only: an entry another
            instance acknowledged first is not counted, and neither is one whose XACK coredis
            had to retry after a lost connection (acknowledging is idempotent).

        Raises:
            ValueError: An event was not delivered by a sink of this name.
        """
        by_key: dict[str, list[str]] = {}
        for event in events:
            if event.sink_name != self._name:
                raise ValueError(
                    f"event {event.id} of stream {event.stream_name!r} was delivered by "
                    f"{'a reader' if event.sink_name is None else repr(event.sink_name)}, "
                    f"not by sink {self._name!r}"
                )
            by_key.setdefault(stream_key(event.stream_name), []).append(event.id)
        if not by_key or self._options.no_ack:
            return 0
        if len(by_key) == 1:
            ((key, ids),) = by_key.items()
            acked = int(await self._client.xack(key, self._name, ids))
        else:
            async with self._client.pipeline(transaction=False) as pipe:
                for key, ids in by_key.items():
                    pipe.xack(key, self._name, ids)
            acked = sum(int(result) for result in pipe.results or ())
        self._counts["acked"] += acked
        return acked

    async def add_stream(self, stream: Stream, start: StartPosition | None = None) -> None:
        """Also read ``stream`` (a no-op if a stream of that name is read already).

        The sink's group is created on it if needed (at ``start``, default: the sink's own
        start position), this instance's consumer registered, and reading begins before this
        returns.

        Args:
            stream: The stream; it must use the sink's client.
            start: Where a newly created group starts; ignored if the group exists.

        Raises:
            ValueError: Bad ``start``, or ``stream`` uses another client.
            StreamError: The stream's key holds a value that is not a stream.
            pulse_trio.RedisUnavailableError: Redis cannot be reached.
            pulse_trio.ClosedError: The sink's block has exited.
        """
        start_id = self._options.start_id if start is None else start_to_id(start)
        if not isinstance(stream, Stream):
            raise TypeError(f"add_stream needs a Stream, not {type(stream).__name__}")
        if stream.client is not self._client:
            raise ValueError(f"stream {stream.name!r} uses another client than sink {self._name!r}")
        if self._closed or self._tg is None:
            raise ClosedError(f"sink {self._name!r} was left: add_stream is not possible")
        if stream.name in self._streams:
            return
        state = self._new_state(stream, start_id)
        self._streams[stream.name] = state
        try:
            await self._create_group(state, state.start_id)
            await self._tg.start(self._run_stream, state)
        except BaseException:
            if self._streams.get(stream.name) is state:
                del self._streams[stream.name]
            raise

    async def remove_stream(self, stream: Stream | str) -> None:
        """Stop reading a stream (by object or name); a no-op if it is not read.

        This instance's consumer is deleted from that stream's group if it has no pending
        entries, otherwise left for the other instances to claim them. The group itself stays,
        so re-adding the stream later resumes where the sink left off.

        Raises:
            pulse_trio.ClosedError: The sink's block has exited.
        """
        name = stream.name if isinstance(stream, Stream) else validate_name("stream", stream)
        if self._closed:
            raise ClosedError(f"sink {self._name!r} was left: remove_stream is not possible")
        state = self._streams.pop(name, None)
        if state is None:
            return
        state.scope.cancel()
        await state.done.wait()

    # ------------------------------------------------------------------ setup / teardown

    def _new_state(self, stream: Stream, start_id: str) -> _StreamState:
        return _StreamState(
            name=stream.name,
            key=stream.key,
            start_id=start_id,
            ttl=stream.ttl,
            sliding_ttl=stream.sliding_ttl,
            logger=stream.logger,
        )

    def _extra(self, state: _StreamState | None = None, **more: Any) -> dict[str, Any]:
        extra: dict[str, Any] = {"sink": self._name, "consumer": self._consumer}
        if state is not None:
            extra["stream"] = state.name
        extra.update(more)
        return extra

    async def _create_group(self, state: _StreamState, start_id: str) -> None:
        """``XGROUP CREATE ... MKSTREAM``; an existing group is kept as it is.

        Raises:
            StreamError: The key holds another type.
            pulse_trio.RedisUnavailableError: Redis cannot be reached.
        """
        try:
            with contextlib.suppress(StreamDuplicateConsumerGroupError):  # BUSYGROUP
                await self._client.xgroup_create(state.key, self._name, start_id, mkstream=True)
            # The group's position is where a lost group is recreated if we see nothing newer.
            groups = await self._client.xinfo_groups(state.key)
        except WrongTypeError as exc:
            raise wrong_type_error(state.name) from exc
        except TRANSIENT_ERRORS as exc:
            raise RedisUnavailableError(
                f"sink {self._name!r}: cannot create its group on stream {state.name!r}, "
                f"Redis is unreachable ({exc}); retry later"
            ) from exc
        for group in groups:
            fields = {_text(k): v for k, v in group.items()}
            if _text(cast(bytes, fields.get("name", b""))) == self._name:
                last = _text(cast(bytes, fields.get("last-delivered-id") or b"0-0"))
                state.recovery_id = _later_id(state.recovery_id, last)

    async def _register(self, state: _StreamState) -> None:
        """Create this instance's consumer and list it in the stream's membership map."""
        assert state.members is not None
        await self._client.xgroup_createconsumer(state.key, self._name, self._consumer)
        await state.members.append_unique_values(self._name, self._consumer)

    async def _unregister(self, state: _StreamState) -> None:
        """Delete this instance's consumer if nothing is pending on it (called on leaving)."""
        assert state.members is not None
        try:
            result: Any = await self._delete_consumer(
                keys=[state.key], args=[self._name, self._consumer]
            )
            if int(result) == 0:
                state.logger.info(
                    "sink %s: leaving stream %s with pending entries: other instances claim "
                    "them after the grace period",
                    self._name,
                    state.name,
                    extra=self._extra(state),
                )
                return
            await state.members.remove_values(self._name, self._consumer)
            state.released = True
        except Exception as exc:  # cleanup is best effort: log, never mask the exit's cause
            state.logger.warning(
                "sink %s: cleanup on stream %s failed: %r",
                self._name,
                state.name,
                exc,
                extra=self._extra(state, error=repr(exc)),
            )

    async def _run_stream(
        self,
        state: _StreamState,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Own everything of one stream: membership map, read loop, reclaim loop."""
        try:
            with state.scope:
                async with rmap.join(
                    self._client,
                    membership_map_name(state.name),
                    ttl=state.ttl,
                    sliding_ttl=state.sliding_ttl,
                    logger=state.logger,
                ) as members:
                    state.members = members
                    await self._register(state)
                    task_status.started()
                    try:
                        async with anyio.create_task_group() as tg:
                            tg.start_soon(self._read_loop, state)
                            tg.start_soon(self._reclaim_loop, state)
                    finally:
                        with anyio.move_on_after(CLEANUP_TIMEOUT, shield=True):
                            await self._unregister(state)
        finally:
            if not state.released:
                self._consumer_kept = True
            state.done.set()

    # ------------------------------------------------------------------ time and keep-alive

    async def _redis_time_ns(self) -> int:
        """The Redis server's clock in Unix nanoseconds (one clock for every instance)."""
        seconds, micros = cast(list[Any], await self._time(keys=[], args=[]))
        return int(seconds) * 1_000_000_000 + int(micros) * 1000

    async def _write_keepalive(self) -> None:
        assert self._keepalive is not None
        await self._keepalive.set(self._consumer, str(await self._redis_time_ns()))

    async def _keepalive_loop(self) -> None:
        """Write the keep-alive every grace/3 and keep this consumer in the membership lists."""
        period = self._timing.keepalive_period
        deadline = anyio.current_time()
        failures = 0
        while True:
            deadline = max(deadline + period, anyio.current_time())
            await anyio.sleep_until(deadline)
            try:
                with _uninterrupted():
                    await self._refresh_registration()
                failures = 0
            except Exception as exc:
                if not _retryable(exc):
                    raise
                failures += 1
                self._counts["retries"] += 1
                self._logger.warning(
                    "sink %s: keep-alive failed (%r), %d in a row",
                    self._name,
                    exc,
                    failures,
                    extra=self._extra(error=repr(exc), failures=failures),
                )

    async def _refresh_registration(self) -> None:
        """Write the keep-alive; make sure this consumer is listed in every membership map."""
        await self._write_keepalive()
        # A destroyed stream resets its membership map; a stale verdict by another
        # instance removes this consumer: put it back (a local check, no I/O if listed).
        for state in list(self._streams.values()):
            members = state.members
            if members is None or members.closed:
                continue
            try:
                listed = members.get_values(self._name) or []
            except ValueError:
                listed = []
            if self._consumer not in listed:
                await members.append_unique_values(self._name, self._consumer)

    # ------------------------------------------------------------------ reading

    async def _read_loop(self, state: _StreamState) -> None:
        """``XREADGROUP ... >`` forever on the stream's own blocking connection."""
        failures = 0
        opts = self._options
        while True:
            try:
                reply = await self._client.xreadgroup(
                    self._name,
                    self._consumer,
                    streams={state.key: ">"},
                    count=opts.max_polled,
                    block=opts.block_ms,
                    noack=opts.no_ack or None,
                )
            except WrongTypeError as exc:
                raise wrong_type_error(state.name) from exc
            except Exception as exc:
                missing = _group_missing(exc)
                if not missing and not _retryable(exc):
                    raise
                delay = backoff_delay(failures, cap=MAX_RETRY_DELAY)
                failures += 1
                self._counts["retries"] += 1
                state.logger.warning(
                    "sink %s: reading stream %s failed (%r); %s in %.2fs",
                    self._name,
                    state.name,
                    exc,
                    "recreating the group" if missing else "retrying",
                    delay,
                    extra=self._extra(state, error=repr(exc), delay=delay),
                )
                await anyio.sleep(delay)
                if missing:
                    with _uninterrupted():
                        await self._recreate_group(state)
                continue
            failures = 0
            if not reply:
                continue
            entries = [
                (_text(entry.identifier), entry.field_values, 1)
                for batch in reply.values()
                for entry in batch
            ]
            await self._deliver(state, entries)

    async def _recreate_group(self, state: _StreamState) -> None:
        """Recreate a lost group at the newest id seen (not ``$``: nothing newer is lost)."""
        try:
            await self._create_group(state, state.recovery_id)
            assert state.members is not None
            await self._register(state)
        except Exception as exc:
            if not _retryable(exc) and not _group_missing(exc):
                raise
            return
        state.logger.warning(
            "sink %s: recreated the group of stream %s after %s",
            self._name,
            state.name,
            state.recovery_id,
            extra=self._extra(state, recovery_id=state.recovery_id),
        )

    async def _deliver(
        self, state: _StreamState, entries: Sequence[tuple[str, Mapping[Any, Any], int]]
    ) -> None:
        """Hand entries to the user's iteration; ack what must not stay pending."""
        opts = self._options
        events: list[Event] = []
        skipped: list[str] = []
        for entry_id, fields, deliveries in entries:
            state.recovery_id = _later_id(state.recovery_id, entry_id)
            try:
                event = decode_entry(
                    entry_id,
                    fields,
                    stream_name=state.name,
                    sink_name=self._name,
                    deliveries=deliveries,
                )
            except MalformedEntryError as exc:
                state.logger.warning(
                    "sink %s: skipping malformed entry %s of stream %s: %s",
                    self._name,
                    entry_id,
                    state.name,
                    exc,
                    extra=self._extra(state, event_id=entry_id),
                )
                skipped.append(entry_id)
                continue
            if opts.max_deliveries is not None and deliveries > opts.max_deliveries:
                try:
                    with _uninterrupted():
                        await self._give_up(state, event)
                except Exception as exc:
                    if not _retryable(exc):
                        raise
                    # Still pending: the next reclaim round tries again.
                    state.logger.warning(
                        "sink %s: moving event %s to the dead letters failed: %r",
                        self._name,
                        entry_id,
                        exc,
                        extra=self._extra(state, event_id=entry_id, error=repr(exc)),
                    )
                continue
            if not opts.filter.matches(event.topic):
                skipped.append(entry_id)
                continue
            events.append(event)
        if skipped and not opts.no_ack:
            try:
                with _uninterrupted():
                    await self._client.xack(state.key, self._name, skipped)
            except Exception as exc:
                if not _retryable(exc):
                    raise
                # Still pending: reclaimed after the grace period and skipped again then.
                state.logger.warning(
                    "sink %s: acknowledging skipped entries failed: %r",
                    self._name,
                    exc,
                    extra=self._extra(state, error=repr(exc)),
                )
        self._counts["skipped"] += len(skipped)
        for event in events:
            key = (event.stream_name, event.id)
            if key in self._in_buffer:
                continue  # claimed back while still waiting here: queued once is enough
            self._in_buffer.add(key)
            await self._send.send(event)

    async def _give_up(self, state: _StreamState, event: Event) -> None:
        """Move an event delivered ``max_deliveries`` times to the dead-letter stream."""
        delivered = event.deliveries - 1
        target = self._options.dead_letter
        if target is None:
            await self._client.xack(state.key, self._name, [event.id])
        else:
            fields = dead_letter_fields(
                event_id=event.id,
                stream_name=state.name,
                sink_name=self._name,
                event_name=event.event_name,
                payload=event.payload,
                topic=event.topic,
                deliveries=delivered,
            )
            if isinstance(self._client, coredis.RedisCluster):
                # The two keys may live in different slots: add, then ack (a crash in between
                # means the entry is dead-lettered again later, never lost).
                mapping = dict(zip(fields[::2], fields[1::2], strict=True))
                await self._client.xadd(stream_key(target), cast(Any, mapping))
                await self._client.xack(state.key, self._name, [event.id])
            else:
                await self._move_to_dead_letter(
                    keys=[state.key, stream_key(target)],
                    args=[self._name, event.id, *fields],
                )
        self._counts["dead_lettered"] += 1
        state.logger.warning(
            "sink %s: event %s of stream %s delivered %d times without ack: %s",
            self._name,
            event.id,
            state.name,
            delivered,
            f"moved to dead-letter stream {target!r}" if target else "dropped",
            extra=self._extra(state, event_id=event.id, deliveries=delivered, dead_letter=target),
        )

    # ------------------------------------------------------------------ reclaiming

    def _free_buffer(self) -> int:
        used = self._send.statistics().current_buffer_used
        return self._options.buffer_size - used

    async def _reclaim_loop(self, state: _StreamState) -> None:
        """Periodically claim idle entries and delete stale consumers (one holder at a time)."""
        period = self._timing.reclaim_period
        deadline = anyio.current_time()
        while True:
            deadline = max(deadline + period, anyio.current_time())
            await anyio.sleep_until(deadline)
            try:
                await self._reclaim_once(state)
            except Exception as exc:
                if isinstance(exc, WrongTypeError) or not (_retryable(exc) or _group_missing(exc)):
                    # The read loop reports a wrong-type key; anything else is a bug.
                    if isinstance(exc, WrongTypeError) or "WRONGTYPE" in str(exc):
                        continue
                    raise
                self._counts["retries"] += 1
                state.logger.debug(
                    "sink %s: reclaim on stream %s skipped: %r",
                    self._name,
                    state.name,
                    exc,
                    extra=self._extra(state, error=repr(exc)),
                )

    async def _reclaim_once(self, state: _StreamState) -> None:
        # An instance that cannot take more events leaves the work to the others.
        free = self._free_buffer()
        if free <= 0:
            return
        with _uninterrupted():
            holds: Any = await self._lease(
                keys=[lease_key(self._name, state.name)],
                args=[self._consumer, str(self._timing.lease_ttl_ms)],
            )
        if int(holds) != 1:
            return
        cursor = "0-0"
        while free > 0:
            with _uninterrupted():
                reply: Any = await self._claim(
                    keys=[state.key],
                    args=[
                        self._name,
                        self._consumer,
                        str(self._timing.grace_ms),
                        cursor,
                        str(min(free, self._options.max_polled)),
                    ],
                )
            raw_cursor, raw_claimed = cast(list[Any], reply)
            cursor = _text(raw_cursor)
            claimed = []
            for raw_id, deliveries, flat in raw_claimed:
                fields = dict(zip(flat[::2], flat[1::2], strict=True))
                claimed.append((_text(raw_id), fields, int(deliveries)))
            if claimed:
                state.logger.info(
                    "sink %s: claimed %d idle entries of stream %s",
                    self._name,
                    len(claimed),
                    state.name,
                    extra=self._extra(state, count=len(claimed)),
                )
                await self._deliver(state, claimed)
            if cursor == "0-0":
                break
            free = self._free_buffer()
        with _uninterrupted():
            await self._delete_stale(state)

    async def _delete_stale(self, state: _StreamState) -> None:
        """Delete consumers whose instance is gone, once nothing is pending on them."""
        assert self._keepalive is not None
        assert state.members is not None
        raw = await self._client.xinfo_consumers(state.key, self._name)
        consumers = []
        for item in raw:
            fields = {_text(k): v for k, v in item.items()}
            consumers.append(
                ConsumerInfo(
                    name=_text(cast(bytes, fields["name"])),
                    pending=int(cast(int, fields.get("pending") or 0)),
                    idle_ms=int(cast(int, fields.get("idle") or 0)),
                )
            )
        if all(c.name == self._consumer for c in consumers):
            return
        keepalives = self._keepalive.map()
        stale = stale_consumers(
            consumers,
            keepalives,
            now_ns=await self._redis_time_ns(),
            stale_after=self._timing.stale_after,
            self_name=self._consumer,
        )
        pending = {c.name: c.pending for c in consumers}
        for name in stale:
            if pending[name]:
                continue  # its entries are claimed first, by a later round if not this one
            result: Any = await self._delete_consumer(keys=[state.key], args=[self._name, name])
            if int(result) != 1:
                continue
            state.logger.info(
                "sink %s: deleted stale consumer %s of stream %s",
                self._name,
                name,
                state.name,
                extra=self._extra(state, stale_consumer=name),
            )
            await state.members.remove_values(self._name, name)
            seen = keepalives.get(name)
            if seen is not None:
                # Only the value judged stale: an instance that came back keeps its entry.
                await self._keepalive.test_and_delete(name, seen)


def open_sink(
    stream: Stream,
    name: str,
    *,
    start: StartPosition = NEWEST,
    block: float = DEFAULT_BLOCK,
    max_polled: int = DEFAULT_MAX_POLLED,
    buffer_size: int = DEFAULT_BUFFER_SIZE,
    ack_grace_period: float = DEFAULT_ACK_GRACE_PERIOD,
    no_ack: bool = False,
    topic: str | None = None,
    topic_pattern: str | None = None,
    max_deliveries: int | None = None,
    dead_letter: Stream | str | None = None,
) -> contextlib.AbstractAsyncContextManager[Sink]:
    """Return an instance of the sink ``name`` on ``stream``, to enter with ``async with``.

    Every instance with the same name (Python or Go, any process) shares the stream's consumer
    group ``name``: each event is delivered to one instance, at least once, and must be
    acknowledged with :meth:`Sink.ack`. When the block starts, the group exists, this
    instance's consumer is registered (membership and keep-alive maps) and reading has begun.

    Args:
        stream: The stream to read (more can be added with :meth:`Sink.add_stream`).
        name: The sink's name: 1 to 512 characters, none of space, NUL, ``*``, ``?``, ``[``,
            ``]``.
        start: Where the group starts when this instance creates it: ``NEWEST`` (default:
            events added after creation), ``OLDEST``, an event id (strictly after it) or a
            timezone-aware datetime. An existing group keeps its position.
        block: Seconds each ``XREADGROUP`` waits for events (0: without limit). Leaving the
            block never waits for it.
        max_polled: Most entries read per ``XREADGROUP`` (its ``COUNT``).
        buffer_size: Events read ahead and held for the iteration; a full buffer pauses
            reading (and reclaiming) of this instance.
        ack_grace_period: Seconds an event may stay unacknowledged after it was read before
            any instance may claim it and deliver it again. Keep-alives are written every
            third of it; an instance silent for twice this long is considered gone. All
            instances of a sink should use the same value.
        no_ack: Read with ``NOACK``: events are never pending, never redelivered (at most
            once); :meth:`Sink.ack` does nothing.
        topic: Deliver only events with exactly this topic.
        topic_pattern: Deliver only events whose topic matches this regular expression
            (searched, not anchored; ignored when ``topic`` is given). Events filtered out
            are acknowledged.
        max_deliveries: Deliver an event at most this many times; the next time it would be
            delivered it is moved to ``dead_letter`` (or dropped when there is none) and
            acknowledged. ``None``: redeliver without limit.
        dead_letter: The stream (or its name) receiving events that reached
            ``max_deliveries``, with fields ``n``, ``p``, ``t`` as in the original plus
            ``original_id``, ``original_stream``, ``sink`` and ``deliveries``.

    Returns:
        An async context manager yielding the :class:`Sink` (enter it once).

    Raises:
        pulse_trio.InvalidNameError: Bad sink or dead-letter stream name (before any I/O).
        ValueError: Bad option (before any I/O): a negative ``block``, a non-positive
            ``ack_grace_period``, ``max_polled``/``buffer_size``/``max_deliveries`` below 1,
            an invalid ``topic_pattern``, a ``dead_letter`` without ``max_deliveries``, or
            ``max_deliveries`` with ``no_ack``.
        StreamError: The stream's key holds a value that is not a stream (also later, from
            the block, if the key is replaced by one).
        pulse_trio.RedisUnavailableError: Redis cannot be reached when the block is entered.

    Cancellation:
        The read loop, reclaim loop and keep-alive of the instance run in a task group owned
        by this block; leaving the block (also by cancellation, also while an ``XREADGROUP``
        is blocked) stops them before it returns. On leaving, the instance's consumer is
        deleted only if nothing is pending on it; otherwise it is left for the other
        instances, which claim its entries after the grace period and then delete it. A
        failure of a background task that is not a transient Redis error ends the block with
        that error (in an exception group); an exception of the block's own code comes out
        as it is.

    Connections:
        One dedicated pool connection per stream for the blocking read, one per stream for
        the membership map's subscription, and one for the keep-alive map's: ``2 * streams +
        1`` while the block runs.
    """
    name = validate_name("sink", name)
    options = _build_options(
        stream,
        start=start,
        block=block,
        max_polled=max_polled,
        buffer_size=buffer_size,
        ack_grace_period=ack_grace_period,
        no_ack=no_ack,
        topic=topic,
        topic_pattern=topic_pattern,
        max_deliveries=max_deliveries,
        dead_letter=dead_letter,
    )
    return _run_sink(stream, name, options)


@contextlib.asynccontextmanager
async def _run_sink(stream: Stream, name: str, options: _Options) -> AsyncIterator[Sink]:
    sink = Sink(stream, name, options)
    first = sink._new_state(stream, options.start_id)
    try:
        # The group first, outside any task group, so that a wrong-type key raises plainly.
        await sink._create_group(first, first.start_id)
        async with rmap.join(sink._client, keepalive_map_name(name), logger=sink._logger) as ka:
            sink._keepalive = ka
            # Before the consumer exists: Go instances delete consumers without a keep-alive.
            await sink._write_keepalive()
            try:
                async with owned_task_group() as tg:
                    sink._tg = tg
                    sink._streams[first.name] = first
                    await tg.start(sink._run_stream, first)
                    tg.start_soon(sink._keepalive_loop)
                    sink._logger.info(
                        "sink %s: instance %s reading stream %s",
                        name,
                        sink._consumer,
                        first.name,
                        extra=sink._extra(first),
                    )
                    try:
                        yield sink
                    finally:
                        sink._closed = True
            finally:
                sink._closed = True
                if not sink._consumer_kept:
                    with anyio.move_on_after(CLEANUP_TIMEOUT, shield=True):
                        try:
                            await ka.delete(sink._consumer)
                        except Exception as exc:
                            sink._logger.warning(
                                "sink %s: removing the keep-alive failed: %r",
                                name,
                                exc,
                                extra=sink._extra(error=repr(exc)),
                            )
    finally:
        sink._closed = True
        sink._send.close()
        sink._receive.close()
        sink._logger.info("sink %s: instance %s left", name, sink._consumer, extra=sink._extra())

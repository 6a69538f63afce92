"""``Reader``: an independent cursor over one or more streams (plain ``XREAD``, fan-out).

Who mutates what: the reader's cursors (``_ReadGroup.cursors``) are added and removed by
:meth:`Reader.add_stream` / :meth:`Reader.remove_stream` (user tasks); a cursor's ``last_id``
is advanced only by the read loop of its group, after the entry was handed to the buffer (or
skipped). Every change of the set of streams cancels the group's in-flight ``XREAD`` so that
the next one, started at once, reads the new set.
"""

from __future__ import annotations

from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import attrs

from .._boundary import (
    is_cluster,
    is_transient,
    is_wrong_type,
    read_reply,
    text,
    to_pulse_error,
)
from .._errors import ClosedError
from .._lifecycle import Service, State
from .._retry import backoff_delay
from ._buffer import EventBuffer
from ._event import (
    STREAM_KEY_PREFIX,
    Event,
    MalformedEntryError,
    StartPosition,
    decode_entry,
    wrong_type_error,
)
from ._io import is_redirect, resolve_start
from ._options import ReadOptions, StreamLike, StreamRef, key_slot, validate_start


@attrs.define(eq=False)
class _Cursor:
    """Where the reader is in one stream: the id of the last entry delivered or skipped."""

    name: str
    key: str
    last_id: str


@attrs.define(eq=False)
class _ReadGroup:
    """Streams read by one ``XREAD`` loop (all of them, or one hash slot's on a cluster)."""

    slot: int | None
    cursors: dict[str, _Cursor] = attrs.field(factory=dict)
    changed: anyio.Event = attrs.field(factory=anyio.Event)
    scope: anyio.CancelScope | None = None

    def notify(self) -> None:
        """Wake the loop and interrupt its in-flight ``XREAD``: the set of streams changed."""
        self.changed.set()
        self.changed = anyio.Event()
        if self.scope is not None:
            self.scope.cancel()


@attrs.frozen
class ReaderStatistics:
    """A snapshot of a reader's progress, from :meth:`Reader.statistics`.

    Attributes:
        cursors: Per stream read, the id of the last event delivered or skipped (a copy).
        delivered: Events handed to the buffer so far.
        skipped: Entries skipped (filtered out by topic, or malformed).
        buffered: Events in the buffer, read from Redis but not consumed yet.
        retries: Reads that failed with a transient error and were retried.
    """

    cursors: dict[str, str]
    delivered: int
    skipped: int
    buffered: int
    retries: int


class Reader(Service):
    """An independent cursor over one or more streams: sees every event after its start.

    Create it with :meth:`Stream.open_reader` and enter it with ``async with``; iterate it
    with ``async for``::

        async with stream.open_reader(start=streaming.OLDEST) as reader:
            async for event in reader:
                ...

    Guarantees:
        - Every event of a stream added after the reader's start position is delivered
          exactly once per reader, in the stream's order, unless it matches no topic filter,
          is malformed (logged and skipped), or was trimmed (``max_len``) or removed before
          the reader got to it. Events of different streams are not ordered relative to each
          other.
        - ``NEWEST`` is resolved to the stream's last id when the block is entered (and when
          :meth:`add_stream` is called): nothing added after that is missed, even across
          reconnects and server restarts (the cursor is kept in the reader).

    Back-pressure: events are read ahead into a buffer of ``buffer_size`` events; when it is
    full the reader stops reading from Redis until the consumer catches up. A slow consumer
    slows only its own reader.

    Connections: while it waits for events the reader borrows one dedicated connection of the
    client's pool (``client.blocking()``) for each ``XREAD``, and gives it back when the read
    returns (on Redis Cluster: one per hash slot its streams live in).

    Options (``start``, ``block``, ``max_polled``, ``buffer_size``, ``topic``,
    ``topic_pattern``) are given to :meth:`Stream.open_reader`, which checks them before any
    I/O. The object has no public constructor and can be entered once.

    Cancellation:
        The read loops run in the reader's own task group, entered with the block. Leaving
        the block cancels them at once, interrupting a blocking ``XREAD`` (the transport
        unblocks it with ``CLIENT UNBLOCK`` and returns its connection to the pool).
        Transient Redis errors (and, on a cluster, a ``MOVED`` answer) are retried with
        jittered exponential backoff and logged; any other error
        (for example :class:`StreamError` when a stream's key holds another type, or
        :class:`pulse_trio.RedisCommandError`) cancels the
        block and is raised from ``async with`` inside an exception group (``except*``). An
        exception raised by the block's own code comes out as it is.
        Errors while entering (the stream is looked at then, whatever the start) are raised
        as they are: :class:`StreamError`, or :class:`pulse_trio.RedisUnavailableError` when
        Redis cannot be reached.
    """

    _kind = "reader"
    _factory = "Stream.open_reader()"

    def __init__(self, stream: StreamLike, options: ReadOptions) -> None:
        self._stream = stream
        self._first = StreamRef.of(stream)
        self._options = options
        self._start_position = options.start
        self._max_polled = options.max_polled
        self._filter = options.filter
        self._client = self._first.client
        self._logger = self._first.logger
        self._cluster = is_cluster(self._client)
        self._block_ms = options.block_ms
        self._groups: dict[int | None, _ReadGroup] = {}
        self._buffer: EventBuffer | None = None
        self._delivered = 0
        self._skipped = 0
        self._retries = 0

    # -- public API ---------------------------------------------------------------------

    @property
    def stream(self) -> StreamLike:
        """The stream the reader was opened on."""
        return self._stream

    @property
    def streams(self) -> tuple[str, ...]:
        """Names of the streams currently read."""
        return tuple(name for group in self._groups.values() for name in group.cursors)

    def cursors(self) -> dict[str, str]:
        """The id of the last event delivered or skipped, per stream read."""
        return {
            name: cursor.last_id
            for group in self._groups.values()
            for name, cursor in group.cursors.items()
        }

    def statistics(self) -> ReaderStatistics:
        """Return a snapshot of the reader's progress."""
        buffered = 0
        if self._buffer is not None and self._state is State.OPEN:
            buffered = len(self._buffer)
        return ReaderStatistics(
            cursors=self.cursors(),
            delivered=self._delivered,
            skipped=self._skipped,
            buffered=buffered,
            retries=self._retries,
        )

    def __repr__(self) -> str:
        return (
            f"<Reader of {list(self.streams) or [self._first.name]!r} {self._state.value} "
            f"delivered={self._delivered} skipped={self._skipped}>"
        )

    def __aiter__(self) -> Reader:
        return self

    async def __anext__(self) -> Event:
        """Wait for the next event.

        An event already buffered is returned at once: without a checkpoint (a scheduling
        point, where a cancellation is delivered), except for every 16th in a row, so a loop
        that awaits nothing else per event still lets other tasks run.

        Raises:
            StopAsyncIteration: The reader's block has exited.
            ClosedError: The reader was never entered.
        """
        if self._buffer is None:
            raise ClosedError("the reader is not open: use it inside `async with`")
        try:
            return await self._buffer.take()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def add_stream(self, stream: object, start: StartPosition | None = None) -> None:
        """Start reading another stream too; a no-op if a stream of that name is read.

        Args:
            stream: The :class:`~pulse_trio.streaming.Stream` to add. Its entries are read
                through this reader's client.
            start: Where to start in it; the reader's own ``start`` option when ``None``.
                ``NEWEST`` is resolved now: every event added after this call returns is
                delivered.

        Raises:
            TypeError: ``stream`` is not a stream.
            ValueError: ``start`` is invalid.
            ClosedError: The reader is not open.
            StreamError: The stream's key holds a value that is not a stream.
            pulse_trio.RedisUnavailableError: Redis could not be reached.
        """
        ref = StreamRef.of(stream)
        position = self._start_position if start is None else validate_start(start)
        self._check_open("add_stream")
        if ref.name in self.streams:
            await anyio.lowlevel.checkpoint()
            return
        last_id = await resolve_start(self._client, ref.name, ref.key, position)
        self._check_open("add_stream")
        if ref.name in self.streams:  # added by a concurrent call meanwhile
            return
        self._add_cursor(_Cursor(ref.name, ref.key, last_id))
        self._logger.debug(
            "reader added stream %r after %s",
            ref.name,
            last_id,
            extra={"stream": ref.name, "cursor": last_id},
        )

    async def remove_stream(self, stream: object) -> bool:
        """Stop reading a stream, given as a :class:`~pulse_trio.streaming.Stream` or by name.

        Events of that stream already in the buffer are still delivered.

        Returns:
            Whether the stream was being read.

        Raises:
            TypeError: ``stream`` is neither a stream nor a name.
            ClosedError: The reader is not open.
        """
        name = stream if isinstance(stream, str) else StreamRef.of(stream).name
        self._check_open("remove_stream")
        await anyio.lowlevel.checkpoint()
        for group in self._groups.values():
            if group.cursors.pop(name, None) is not None:
                group.notify()
                self._logger.debug("reader removed stream %r", name, extra={"stream": name})
                return True
        return False

    # -- lifecycle ----------------------------------------------------------------------

    def _group_for(self, key: str) -> _ReadGroup:
        slot = key_slot(key) if self._cluster else None
        group = self._groups.get(slot)
        if group is None:
            group = self._groups[slot] = _ReadGroup(slot)
            if self._task_group is not None:
                self._task_group.start_soon(self._read_loop, group, name=f"reader-{slot}")
        return group

    def _add_cursor(self, cursor: _Cursor) -> None:
        group = self._group_for(cursor.key)
        group.cursors[cursor.name] = cursor
        group.notify()

    async def _prepare(self) -> None:
        # Resolved before the task group exists, so that an error here (wrong key type,
        # server down) is raised as itself, not wrapped in an exception group.
        first = self._first
        self._first_id = await resolve_start(
            self._client, first.name, first.key, self._start_position
        )
        self._buffer = EventBuffer(self._options.buffer_size)

    async def _start(self, tg: anyio.abc.TaskGroup) -> None:
        first = self._first
        # The task group is set: adding the cursor starts its group's read loop.
        self._add_cursor(_Cursor(first.name, first.key, self._first_id))
        self._logger.debug(
            "reader of %r opened after %s",
            first.name,
            self._first_id,
            extra={"stream": first.name, "cursor": self._first_id},
        )

    def _finish(self) -> None:
        if self._buffer is not None:
            self._buffer.close()

    # -- the read loop ------------------------------------------------------------------

    async def _read_loop(
        self,
        group: _ReadGroup,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        assert self._buffer is not None
        buffer = self._buffer
        failures = 0  # transient failures in a row, for the backoff
        task_status.started()
        while True:
            if not group.cursors:
                # Every stream was removed: wait for add_stream rather than sending an XREAD
                # without streams (a syntax error).
                await group.changed.wait()
                continue
            # Snapshot and scope are set up with no checkpoint in between, so a concurrent
            # add/remove either changes the snapshot or cancels this very XREAD.
            snapshot = dict(group.cursors)
            keys = [cursor.key for cursor in snapshot.values()]
            ids = [cursor.last_id for cursor in snapshot.values()]
            reply: Any = None
            failure: BaseException | None = None
            with anyio.CancelScope() as scope:
                group.scope = scope
                try:
                    # One XREAD per borrowed connection: a cancelled read (the streams
                    # changed, or the block is left) is unblocked by the transport and its
                    # connection goes back to the pool.
                    async with self._client.blocking(key=keys[0]) as conn:
                        reply = await conn.execute(
                            "XREAD", "COUNT", self._max_polled, "BLOCK", self._block_ms,
                            "STREAMS", *keys, *ids,
                        )  # fmt: skip
                except Exception as exc:
                    if is_transient(exc) or is_redirect(exc):
                        failure = exc
                    else:
                        if is_wrong_type(exc):
                            await self._raise_wrong_type(snapshot, exc)
                        raise to_pulse_error(exc, f"reading streams {sorted(snapshot)}") from exc
                finally:
                    group.scope = None
            if scope.cancelled_caught:
                continue  # the set of streams changed
            if failure is not None:
                delay = backoff_delay(failures)
                failures += 1
                self._retries += 1
                self._logger.warning(
                    "reading %s failed (%s: %s); retry %d in %.2fs",
                    sorted(snapshot),
                    type(failure).__name__,
                    str(failure),
                    failures,
                    delay,
                    extra={"streams": sorted(snapshot), "retry_in": delay, "attempt": failures},
                )
                await anyio.sleep(delay)
                continue
            failures = 0
            if reply:
                await self._deliver(group, snapshot, read_reply(reply), buffer)
                # The consumer, woken by the events, runs now, before the next read is
                # written (a send syscall it would otherwise wait behind).
                await anyio.lowlevel.checkpoint()

    async def _deliver(
        self,
        group: _ReadGroup,
        snapshot: dict[str, _Cursor],
        reply: dict[bytes, list[tuple[bytes, dict[bytes, bytes]]]],
        buffer: EventBuffer,
    ) -> None:
        for raw_key, entries in reply.items():
            name = text(raw_key).removeprefix(STREAM_KEY_PREFIX)
            cursor = snapshot.get(name)
            if cursor is None:
                continue
            for raw_id, fields in entries:
                if group.cursors.get(name) is not cursor:
                    break  # removed (or removed and re-added) meanwhile
                entry_id = text(raw_id)
                try:
                    event = decode_entry(entry_id, fields, stream_name=name)
                except MalformedEntryError as exc:
                    self._skipped += 1
                    self._logger.warning(
                        "skipping malformed entry %s of stream %r: %s",
                        entry_id,
                        name,
                        exc,
                        extra={"stream": name, "event_id": entry_id},
                    )
                else:
                    if self._filter.matches(event.topic):
                        await buffer.put(event)  # the checkpoint follows the batch
                        self._delivered += 1
                    else:
                        self._skipped += 1
                cursor.last_id = entry_id

    async def _raise_wrong_type(self, snapshot: dict[str, _Cursor], exc: Exception) -> None:
        for cursor in snapshot.values():
            raw_kind = await self._client.execute("TYPE", cursor.key)
            kind = "none" if raw_kind is None else text(raw_kind)
            if kind not in ("stream", "none"):
                raise wrong_type_error(cursor.name) from exc
        raise to_pulse_error(exc, f"reading streams {sorted(snapshot)}") from exc

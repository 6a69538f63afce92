"""The one lifecycle shape of every pulse-trio object that runs background work.

A map replica, a reader, a sink and a pool node are each a class that is its own async
context manager (:class:`Service`): built by a factory function (``rmap.join``,
``Stream.open_reader``, ``Stream.open_sink``, ``pool.open_node``) that validates every option
before any I/O and returns the object, not yet entered; ``async with`` then opens it, runs its
background tasks in a task group the object owns, and closes it. The state is explicit
(:class:`State`), the object can be entered once, and it has no public constructor, so an
object that only works inside its block cannot be built and used outside one.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import AsyncIterator
from typing import Any, ClassVar, Self, TypeVar

import anyio
import anyio.abc

from ._errors import ClosedError
from ._tasks import owned_task_group

_T = TypeVar("_T")


class NoPublicConstructor(type):
    """Metaclass of classes that only a factory function of pulse-trio may instantiate.

    ``Cls(...)`` raises :class:`TypeError` naming the factory to use; the factory calls
    ``Cls._create(...)``.
    """

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        factory = getattr(cls, "_factory", "its factory function")
        raise TypeError(
            f"{cls.__module__}.{cls.__qualname__} has no public constructor: use {factory}"
        )

    def _create(cls: type[_T], *args: Any, **kwargs: Any) -> _T:
        return super().__call__(*args, **kwargs)  # type: ignore[misc, no-any-return]


class State(enum.Enum):
    """Where a :class:`Service` is in its life. It only ever moves forward."""

    #: Built, not entered yet: methods that need the background tasks raise.
    NEW = "new"
    #: ``async with`` is setting it up (before the block's body starts).
    OPENING = "opening"
    #: The block's body runs; everything works.
    OPEN = "open"
    #: The body has ended; the object is handing over and stopping its tasks.
    CLOSING = "closing"
    #: The block has exited; background tasks are gone.
    CLOSED = "closed"


class Service(anyio.AsyncContextManagerMixin, metaclass=NoPublicConstructor):
    """Base of the objects that own a task group: enter once, close by leaving the block.

    Subclasses implement the steps of the shape; the base owns the order, the state and the
    task group:

    1. :meth:`_prepare` (state ``OPENING``): I/O that must succeed before any task runs. It
       runs outside the task group, so its errors come out of ``async with`` unwrapped.
    2. :meth:`_start` (``OPENING``): start the background tasks in the owned task group,
       with ``await tg.start(...)`` for anything that must be true when the body starts.
    3. the block's body (``OPEN``);
    4. :meth:`_stop` (``CLOSING``): graceful hand-over while the tasks still run (called
       also when :meth:`_start` or the body failed or was cancelled: shield what must
       finish);
    5. the task group is cancelled and exited; then :meth:`_finish` (``CLOSED``), sync,
       always, to release whoever waits on the object.

    An exception of the body comes out as it is; failures of background tasks come out as an
    exception group (see :func:`pulse_trio._tasks.owned_task_group`).
    """

    #: What the object is, for messages ("map", "reader", "sink", "node").
    _kind: ClassVar[str] = "object"
    #: How users create one, for the ``TypeError`` of the constructor.
    _factory: ClassVar[str] = "its factory function"

    _state: State = State.NEW
    _task_group: anyio.abc.TaskGroup | None = None

    @property
    def state(self) -> State:
        """Where the object is in its life (see :class:`State`)."""
        return self._state

    @property
    def closed(self) -> bool:
        """Whether the object's ``async with`` block has exited."""
        return self._state is State.CLOSED

    def _closed_error(self, message: str) -> ClosedError:
        """The error raised by operations outside the block (subclasses narrow its type)."""
        return ClosedError(message)

    def _check_open(self, operation: str) -> anyio.abc.TaskGroup:
        """Raise unless the block runs (or is being set up); return the owned task group."""
        if self._state is State.NEW:
            raise self._closed_error(
                f"{self._kind} is not open: {operation} works inside its `async with` block"
            )
        if self._state in (State.CLOSING, State.CLOSED) or self._task_group is None:
            raise self._closed_error(
                f"{self._kind} was closed: {operation} is not possible any more"
            )
        return self._task_group

    async def _prepare(self) -> None:
        """I/O before the task group exists (errors come out of ``async with`` unwrapped)."""

    async def _start(self, tg: anyio.abc.TaskGroup) -> None:
        """Start the background tasks in ``tg``; the body starts when this returns."""

    async def _stop(self) -> None:
        """Graceful hand-over after the body, while the background tasks still run."""

    def _finish(self) -> None:
        """Release waiters and buffers once the tasks are gone (sync, never fails)."""

    @contextlib.asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncIterator[Self]:
        if self._state is not State.NEW:
            raise RuntimeError(
                f"a {self._kind} can be entered only once (it is {self._state.value}); "
                "open a new one"
            )
        self._state = State.OPENING
        try:
            await self._prepare()
            async with owned_task_group() as tg:
                self._task_group = tg
                try:
                    await self._start(tg)
                    self._state = State.OPEN
                    yield self
                finally:
                    self._state = State.CLOSING
                    await self._stop()
        finally:
            self._state = State.CLOSED
            self._task_group = None
            self._finish()

"""The one way the state machines of this folder are set up and run.

Hypothesis drives a machine from the test's thread, synchronously; pulse-trio's objects live
in an event loop. So each example gets its own loop in a helper thread (a blocking portal on
the test's AnyIO backend), an entered client on the shared server, and a name prefix of its
own; the machine's rules call into the loop through the portal, and :meth:`teardown` leaves
everything the example entered, newest first, then the client, then stops the loop.

Usage::

    class MyMachine(PortalMachine):
        @rule()
        def step(self) -> None:
            self.call(some_async_function, arg)


    def test_my_machine(server_url: str, anyio_backend: object) -> None:
        run_machine(MyMachine, server_url, anyio_backend, max_examples=10, steps=20)

A machine that needs its own teardown checks (liveness) overrides :meth:`teardown` and calls
``super().teardown()`` in a ``finally:``.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Any, ClassVar, Generic, TypeVar, cast, overload

import anyio.from_thread
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, run_state_machine_as_test

import pulse_trio

T = TypeVar("T")
M = TypeVar("M", bound="PortalMachine")


def backend_and_options(anyio_backend: object) -> tuple[str, dict[str, Any]]:
    """Split a value of the ``anyio_backend`` fixture (``"trio"`` or ``("asyncio", {...})``)."""
    if isinstance(anyio_backend, str):
        return anyio_backend, {}
    name, options = cast(tuple[str, dict[str, Any]], anyio_backend)
    return name, dict(options)


class Entered(Generic[T]):
    """An object a machine entered in its portal, which a rule may leave before teardown.

    Leaving is idempotent: teardown leaves whatever the rules did not.
    """

    def __init__(self, context: AbstractContextManager[T]) -> None:
        self._context = context
        self.value: T = context.__enter__()
        self.open = True

    def leave(self) -> None:
        """Run the object's ``__aexit__`` in the portal (once)."""
        if self.open:
            self.open = False
            self._context.__exit__(None, None, None)


class PortalMachine(RuleBasedStateMachine):
    """Base of the machines: per example a portal, an entered client and a unique prefix.

    Attributes:
        portal: The example's event loop (in a helper thread).
        client: A client entered in that loop (``pulse_trio.connect(url)``).
        prefix: A name prefix no other example uses.
    """

    #: Set by :func:`run_machine` on a subclass made for one test.
    url: ClassVar[str]
    backend: ClassVar[tuple[str, dict[str, Any]]]

    def __init__(self) -> None:
        super().__init__()
        self._stack = contextlib.ExitStack()
        try:
            self.portal = self._stack.enter_context(
                anyio.from_thread.start_blocking_portal(*self.backend)
            )
            self.client: Any = self._stack.enter_context(
                self.portal.wrap_async_context_manager(pulse_trio.connect(self.url))
            )
        except BaseException:
            self._stack.close()
            raise
        self.prefix = "sm" + uuid.uuid4().hex[:8]

    @overload
    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T: ...
    @overload
    def call(self, fn: Callable[..., T], *args: Any) -> T: ...
    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` in the example's loop (awaited if async) and return its result."""
        return self.portal.call(fn, *args)

    def enter(self, context: AbstractAsyncContextManager[T]) -> Entered[T]:
        """Enter ``context`` in the example's loop; teardown leaves it if no rule did."""
        entered = Entered(self.portal.wrap_async_context_manager(context))
        self._stack.callback(entered.leave)
        return entered

    def teardown(self) -> None:
        """Leave everything entered (newest first), then the client, then stop the loop."""
        self._stack.close()


def run_machine(
    machine: type[M],
    url: str,
    anyio_backend: object,
    *,
    max_examples: int,
    steps: int,
) -> None:
    """Run ``machine`` against the server at ``url`` on the test's AnyIO backend.

    Args:
        machine: The machine class (a :class:`PortalMachine`); it is not modified.
        url: The server's URL.
        anyio_backend: The value of the ``anyio_backend`` fixture.
        max_examples: Examples (sequences of steps) to run: bounds the test's runtime.
        steps: Steps per example at most.
    """
    configured = type(
        machine.__name__,
        (machine,),
        {"url": url, "backend": backend_and_options(anyio_backend)},
    )
    run_state_machine_as_test(
        configured,
        settings=settings(
            max_examples=max_examples,
            stateful_step_count=steps,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )

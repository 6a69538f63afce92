"""The one way the state machines of this folder are set up and run, on the public harness
(:class:`pulse_trio.testing.machines.DeploymentMachine`).

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

from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Any, Generic, TypeVar, cast

from pulse_trio.testing.machines import DeploymentMachine

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


class PortalMachine(DeploymentMachine):
    """Base of the machines: pulse_trio.testing's public harness (a loop per example in a
    helper thread, an entered client, a unique prefix), with :meth:`enter` returning an
    :class:`Entered` that a rule may leave before teardown.

    Attributes:
        portal: The example's event loop (in a helper thread).
        client: A client entered in that loop (``pulse_trio.connect(url)``).
        prefix: A name prefix no other example uses.
    """

    client: Any

    def enter(self, context: AbstractAsyncContextManager[T]) -> Entered[T]:  # type: ignore[override]
        """Enter ``context`` in the example's loop; teardown leaves it if no rule did."""
        entered = Entered(self.portal.wrap_async_context_manager(context))
        self._stack.callback(entered.leave)
        return entered


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
    machine.run(
        url, backend=backend_and_options(anyio_backend), max_examples=max_examples, steps=steps
    )

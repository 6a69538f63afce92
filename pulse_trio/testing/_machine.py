"""The base of the state machines of :mod:`pulse_trio.testing.machines` (see its docstring
for how a machine runs): :class:`DeploymentMachine`, with the per-example event loop, client
and name prefix, the fault steps every machine shares, and the rule helpers."""

from __future__ import annotations

import contextlib
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, ClassVar, TypeVar, cast, overload

import anyio
import anyio.abc
import anyio.from_thread
from hypothesis import HealthCheck, Phase, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    rule,
    run_state_machine_as_test,
)

import pulse_trio

from ._faults import ConnectionKind, kill_connections

T = TypeVar("T")
Backend = str | tuple[str, dict[str, Any]]


def _split_backend(backend: object) -> tuple[str, dict[str, Any]]:
    """``"trio"``, ``"asyncio"``, or ``(name, options)`` as the AnyIO pytest plugin gives it."""
    if isinstance(backend, str):
        return backend, {}
    if (
        isinstance(backend, tuple)
        and len(backend) == 2
        and isinstance(backend[0], str)
        and isinstance(backend[1], dict)
    ):
        return backend[0], dict(backend[1])
    raise ValueError(f"backend must be 'trio', 'asyncio' or (name, options), not {backend!r}")


def _configured_rule(
    function: Callable[..., None], **strategies: st.SearchStrategy[Any]
) -> Callable[..., None]:
    """A rule running ``function`` with arguments from ``strategies``: made per machine
    class, so that a subclass's strategies (class attributes) are the ones drawn from, and
    the failing steps print with their arguments (``state.set(index=0, key='a', ...)``)."""

    def step(self: Any, **arguments: Any) -> None:
        function(self, **arguments)

    step.__name__ = step.__qualname__ = function.__name__.lstrip("_")
    step.__doc__ = function.__doc__
    make_rule: Any = rule
    return make_rule(**strategies)(step)  # type: ignore[no-any-return]


class DeploymentMachine(RuleBasedStateMachine):
    """Base of the machines: an event loop, a client and a unique prefix per example.

    Subclass one of :class:`SinkMachine`, :class:`PoolMachine`, :class:`MapMachine`, or this
    class for a machine of your own (with Hypothesis' ``@rule``/``@invariant``), and run it
    with :meth:`run`.

    Attributes:
        portal: The example's event loop (an AnyIO blocking portal in a helper thread).
        client: A :class:`pulse_trio.Client` opened in that loop, named :attr:`prefix`.
        prefix: A name prefix no other example uses (valid in every kind of name).
    """

    #: The server's URL (set by :meth:`run`).
    url: ClassVar[str] = ""
    #: The AnyIO backend of the examples' loops (set by :meth:`run`).
    backend: ClassVar[Backend] = "trio"

    def __init__(self) -> None:
        super().__init__()
        if not self.url:
            raise RuntimeError(
                f"{type(self).__name__} has no server URL: run it with "
                f"{type(self).__name__}.run(url)"
            )
        self.prefix = "pm" + uuid.uuid4().hex[:10]
        self._stack = contextlib.ExitStack()
        self._tasks: list[anyio.CancelScope] = []
        self._failures: list[BaseException] = []
        self._violation: AssertionError | None = None
        try:
            name, options = _split_backend(self.backend)
            self.portal = self._stack.enter_context(
                anyio.from_thread.start_blocking_portal(name, options)
            )
            self.client: pulse_trio.Client = DeploymentMachine.enter(
                self, pulse_trio.connect(self.url, client_name=self.prefix)
            )
        except BaseException:
            self._stack.close()
            raise

    # ------------------------------------------------------------------ running code

    @overload
    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T: ...
    @overload
    def call(self, fn: Callable[..., T], *args: Any) -> T: ...
    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` in the example's event loop (awaited if it is async); return
        its result."""
        return self.portal.call(fn, *args)

    def enter(self, context: AbstractAsyncContextManager[T]) -> T:
        """Enter ``context`` in the example's loop; it is left when the example ends."""
        return self._stack.enter_context(self.portal.wrap_async_context_manager(context))

    def spawn(self, fn: Callable[..., Awaitable[object]], *args: Any) -> anyio.CancelScope:
        """Run ``fn(*args)`` in the background in the example's loop until it returns or the
        example ends. An exception it raises fails the next step.

        Returns:
            Its cancel scope (cancel it to stop the task).
        """

        async def run(*, task_status: anyio.abc.TaskStatus[anyio.CancelScope]) -> None:
            with anyio.CancelScope() as scope:
                task_status.started(scope)
                try:
                    await fn(*args)
                except Exception as exc:
                    self._failures.append(exc)

        _, scope = self.portal.start_task(run)
        self._tasks.append(scope)
        return cast(anyio.CancelScope, scope)

    def raise_failures(self) -> None:
        """Raise the first exception of a background task (:meth:`spawn`), if any."""
        if self._failures:
            failure = self._failures[0]
            raise AssertionError(f"a background task failed: {failure!r}") from failure

    def verify(self, check: Callable[[], None]) -> None:
        """Run ``check`` (an invariant); if it fails, keep its :class:`AssertionError`
        and raise it at the end of the example.

        The steps that follow still run (unchecked): a failure then ends every run at the
        same point, whichever step a timing-dependent violation showed in first, which
        keeps Hypothesis' replays and shrinking consistent on a real, concurrent system.
        Background failures (:meth:`spawn`) are checked first.
        """
        if self._violation is not None:
            return
        try:
            self.raise_failures()
            check()
        except AssertionError as exc:
            self._violation = exc
            note(f"invariant failed (raised at the end): {exc}")

    def wait_for(self, check: Callable[[], None], within: float) -> None:
        """Call ``check`` until it does not raise :class:`AssertionError`, for at most
        ``within`` seconds; then once more, letting its error out.

        ``check`` runs in the test's thread (it may use :meth:`call`).
        """
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                check()
            except AssertionError:
                time.sleep(0.02)
            else:
                return
        check()

    def sleep(self, seconds: float) -> None:
        """Let ``seconds`` pass in the example's loop (model time passing: a timeout, a
        grace period)."""
        self.call(anyio.sleep, seconds)

    def kill_connections(self, kind: ConnectionKind | str, client: Any = None) -> int:
        """Kill the connections of one kind of :attr:`client` (or of ``client``); see
        :func:`pulse_trio.testing.kill_connections`."""
        return self.call(kill_connections, client or self.client, ConnectionKind(kind))

    def teardown(self) -> None:
        """Stop the background tasks, leave everything entered (newest first), close the
        client, stop the loop; then raise the first invariant that failed (:meth:`verify`)."""
        try:
            tasks, self._tasks = self._tasks, []

            def cancel() -> None:
                for scope in tasks:
                    scope.cancel()

            if tasks:
                self.portal.call(cancel)
        finally:
            self._stack.close()
        violation = self._violation
        if violation is not None:
            # One place raises every failure, whichever check and step it came from: to
            # Hypothesis they are one bug, however the timing of a run moved it.
            frame = traceback.extract_tb(violation.__traceback__)[-1]
            raise AssertionError(
                f"{violation} (checked at {frame.filename}:{frame.lineno}; see the "
                f"note after the step it failed after)"
            )

    # ------------------------------------------------------------------ running it

    @classmethod
    def run(
        cls,
        url: str,
        *,
        backend: object = "trio",
        max_examples: int = 10,
        steps: int = 15,
        settings_: settings | None = None,
    ) -> None:
        """Run the machine against the server at ``url``; raise what Hypothesis raises.

        On a failure, Hypothesis shrinks the run and reports the shortest failing sequence
        of steps (printed, and attached to the exception as notes).

        Args:
            url: The server (``pulse_server`` fixture, or any ``redis://`` URL you own:
                the machines write under unique prefixes and do not flush).
            backend: ``"trio"``, ``"asyncio"``, or the ``anyio_backend`` fixture's value.
            max_examples: How many sequences of steps to try (bounds the runtime).
            steps: The most steps per sequence.
            settings_: Hypothesis settings to use instead (``max_examples`` and ``steps``
                are then ignored).
        """
        configured = type(cls.__name__, (cls,), {"url": url, "backend": backend})
        configured.__qualname__ = cls.__qualname__
        run_state_machine_as_test(
            configured,
            settings=settings_
            or settings(
                max_examples=max_examples,
                stateful_step_count=steps,
                deadline=None,
                # One shrunk failure, not a group of look-alikes (a failing check may fail
                # in a step or at the end of the example).
                report_multiple_bugs=False,
                # No "explain" phase: it traces every line of the examples it re-runs, which
                # slows a real, multi-threaded deployment down by an order of magnitude.
                phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            ),
        )


# ---------------------------------------------------------------------------- sinks

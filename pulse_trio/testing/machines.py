"""Hypothesis state machines that run an application's code against a real deployment.

Each machine drives real pulse-trio objects on a real server, injects the faults that make
distributed code go wrong (redeliveries, killed instances, partitions, lost notifications,
killed connections), and calls the application's code and its invariants. An application
subclasses one machine, plugs in its handler and its checks, and runs it::

    class Orders(SinkMachine):
        def __init__(self) -> None:
            super().__init__()
            self.gateway = FakeGateway()

        async def handle(self, event: Event) -> None:
            await charge_order(self.gateway, event)          # the application's handler

        def check(self) -> None:                             # after every step
            assert all(n <= 1 for n in self.gateway.charges.values())


    def test_orders_are_charged_once(pulse_server: str) -> None:
        Orders.run(pulse_server, max_examples=10, steps=15)

:class:`SinkMachine` runs a sink handler (events added at random; acks dropped, instances
crashed and grace periods expired, so events are redelivered). :class:`PoolMachine` runs a
pool's job handler (jobs dispatched and stopped; workers added and removed; nodes opened,
closed and partitioned). :class:`MapMachine` runs the code that derives state from a
replicated map (concurrent writers; lost notifications, killed and half-open subscriptions),
and checks that every replica's derived state converges.

When an invariant fails, Hypothesis shrinks the run to a shortest sequence of steps that
still fails and reports it (``state = Orders(); state.add_events(...); ...``).

How it runs: Hypothesis drives a machine synchronously, from the test's thread; pulse-trio's
objects live in an event loop. Each example (one sequence of steps) gets its own event loop
in a helper thread (an AnyIO blocking portal, on the backend given to :meth:`run`), its own
client and a unique name prefix (:attr:`DeploymentMachine.prefix`); the application's async
code runs in that loop (:meth:`DeploymentMachine.call`). Everything an example opened is
closed at its end. Keys written under the prefix are left on the server: run machines on the
``pulse_server`` fixture, which flushes it after the test.

Requires Hypothesis (the ``testing`` extra).
"""

from ._machine import DeploymentMachine as DeploymentMachine
from ._map_machine import MapMachine as MapMachine
from ._pool_machine import PoolMachine as PoolMachine
from ._pool_machine import PoolNode as PoolNode
from ._sink_machine import SinkInstance as SinkInstance
from ._sink_machine import SinkMachine as SinkMachine

__all__ = (
    "DeploymentMachine",
    "MapMachine",
    "PoolMachine",
    "PoolNode",
    "SinkInstance",
    "SinkMachine",
)

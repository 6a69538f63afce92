"""A sink handler that charges orders, tested by :class:`~pulse_trio.testing.machines.SinkMachine`.

Sinks deliver each event at least once: an event whose ack was lost, or whose instance
died before acking, comes again. A handler that charges an order on every delivery charges
some orders twice. The machine finds this in the buggy handler, and shrinks the run to a
few steps; the idempotent handler passes.

Run: ``pytest examples/testing/test_sink_orders.py`` (needs ``pulse-trio[testing]``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable

import anyio
import pytest
from hypothesis import strategies as st

from pulse_trio.streaming import Event
from pulse_trio.testing.machines import SinkMachine

# --- the application ------------------------------------------------------------------------


class PaymentGateway:
    """A stand-in for a payment provider: it records every charge and, as real providers
    do, ignores a charge whose idempotency key it has already seen."""

    def __init__(self) -> None:
        self.charges: Counter[str] = Counter()
        self._keys: set[str] = set()

    async def charge(self, order_id: str, *, idempotency_key: str | None = None) -> None:
        """Charge ``order_id`` (a network call: it takes a while)."""
        await anyio.sleep(0.001)
        if idempotency_key is not None:
            if idempotency_key in self._keys:
                return
            self._keys.add(idempotency_key)
        self.charges[order_id] += 1


async def charge_order(gateway: PaymentGateway, event: Event) -> None:
    """Charge the order of an ``order.placed`` event, once, however often it is delivered."""
    order_id = event.payload.decode()
    await gateway.charge(order_id, idempotency_key=f"order-{order_id}")


async def charge_order_every_time(gateway: PaymentGateway, event: Event) -> None:
    """BUG (planted): charges the order again on every delivery of its event."""
    await gateway.charge(event.payload.decode())


# --- the machine ----------------------------------------------------------------------------

Handler = Callable[[PaymentGateway, Event], Awaitable[None]]


class Orders(SinkMachine):
    """``order.placed`` events consumed by :func:`charge_order`; each order charged once."""

    events = st.tuples(st.just("order.placed"), st.integers(1, 50).map(lambda n: b"%d" % n))
    handler: Handler = staticmethod(charge_order)
    ack_grace_period = 0.1  # redeliveries come fast: short examples

    def __init__(self) -> None:
        super().__init__()
        self.gateway = PaymentGateway()

    async def handle(self, event: Event) -> None:
        await self.handler(self.gateway, event)

    def check(self) -> None:
        for order_id, count in self.gateway.charges.items():
            assert count <= 1, f"order {order_id} charged {count} times"

    def check_settled(self) -> None:
        placed = {payload.decode() for _, _, payload in self.added}
        assert set(self.gateway.charges) == placed, "every placed order is charged"


class OrdersChargedOnEveryDelivery(Orders):
    """The same machine over the buggy handler."""

    handler: Handler = staticmethod(charge_order_every_time)


def test_each_order_is_charged_once(pulse_server: str) -> None:
    Orders.run(pulse_server, max_examples=5, steps=6)


def test_the_machine_finds_the_double_charge(pulse_server: str) -> None:
    with pytest.raises(AssertionError, match=r"charged \d+ times") as failure:
        OrdersChargedOnEveryDelivery.run(pulse_server, max_examples=30, steps=6)
    steps = "\n".join(getattr(failure.value, "__notes__", []))
    print(steps)  # the shortest failing sequence of steps that Hypothesis found
    assert "state.add_events(" in steps

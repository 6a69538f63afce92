"""Dead letters: a sink with ``max_deliveries`` moves a poison event to another stream.

Run it with ``python examples/dead_letter.py`` (an embedded server), or against your own
server with ``--redis-url redis://localhost:6379/0`` (or ``PULSE_REDIS_URL``).

The billing sink fails on one malformed order. An event that is not acknowledged is
delivered again after ``ack_grace_period``; with ``max_deliveries=2``, instead of a third
delivery it is appended to the ``dead_letter`` stream (same name, payload and topic) and
acknowledged, so it blocks nothing and can be inspected or replayed later.
"""

from __future__ import annotations

import json

import anyio
from _server import example_client

from pulse_trio import streaming

GRACE = 0.2  # seconds before an unacknowledged event is delivered again


def charge(order: bytes) -> str:
    """Bill an order; fails on a malformed one."""
    amount = json.loads(order)["amount"]  # KeyError / JSONDecodeError on a poison order
    return f"charged {amount}"


async def billing(sink: streaming.Sink) -> None:
    """Consume the sink: acknowledge what was billed, leave failures unacknowledged."""
    async for event in sink:
        try:
            result = charge(event.payload)
        except (ValueError, KeyError) as exc:
            print(f"  billing: {event.payload!r} failed ({exc!r}), delivery {event.deliveries}")
            continue  # not acknowledged: delivered again after the grace period
        await sink.ack(event)
        print(f"  billing: {event.payload.decode()} {result}")


async def main() -> None:
    """Add orders, one of them poison; see it reach the dead-letter stream."""
    async with example_client("dead_letter") as client:
        orders = streaming.Stream(client, "dead_letter:orders")
        dead = streaming.Stream(client, "dead_letter:orders-dead")
        async with (
            dead.open_reader(start=streaming.OLDEST) as dead_letters,
            orders.open_sink(
                "dead_letter:billing", ack_grace_period=GRACE, max_deliveries=2, dead_letter=dead
            ) as sink,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(billing, sink)
            await orders.add_many(
                [
                    ("order.placed", b'{"amount": 30}'),
                    ("order.placed", b'{"amonut": 12}'),  # the poison event
                    ("order.placed", b'{"amount": 5}'),
                ]
            )
            with anyio.fail_after(10):
                letter = await anext(dead_letters)
            print(
                f"dead-letter stream {letter.stream_name!r} got {letter.event_name} "
                f"{letter.payload!r} after {sink.statistics().delivered} deliveries in all"
            )
            tg.cancel_scope.cancel()
        (billing_info,) = (await orders.info()).sinks
        print(f"sink {billing_info.name!r}: {billing_info.pending} events pending")
        await orders.destroy()
        await dead.destroy()


if __name__ == "__main__":
    anyio.run(main, backend="trio")

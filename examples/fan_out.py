"""Fan-out: two readers of one stream each see every event.

Run it with ``python examples/fan_out.py`` (an embedded server), or against your own server
with ``--redis-url redis://localhost:6379/0`` (or ``PULSE_REDIS_URL``).

A reader keeps its own cursor, so every reader sees every event, in order: here an audit log
and a search indexer both follow the ``orders`` stream. (A sink, by contrast, splits events
between its instances: see ``signup_flow.py``.)
"""

from __future__ import annotations

import anyio
from _server import example_client

from pulse_trio import streaming

ORDERS = 5


async def follow(name: str, reader: streaming.Reader) -> None:
    """Print what ``reader`` delivers until it has seen every order."""
    seen = []
    async for event in reader:
        seen.append(event.payload.decode())
        print(f"{name:>8} got {event.event_name} {event.payload.decode()}")
        if len(seen) == ORDERS:
            break
    print(f"{name:>8} saw all {len(seen)} events: {seen}")


async def main() -> None:
    """Open two readers, add events, let both read them all."""
    async with example_client("fan_out") as client:
        orders = streaming.Stream(client, "fan_out:orders")
        async with (
            orders.open_reader() as audit,  # start=NEWEST: what is added from now on
            orders.open_reader() as indexer,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(follow, "audit", audit)
            tg.start_soon(follow, "indexer", indexer)
            for n in range(1, ORDERS + 1):
                await orders.add("order.placed", f"order-{n}".encode())
        await orders.destroy()


if __name__ == "__main__":
    anyio.run(main, backend="trio")

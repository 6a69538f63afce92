"""Event sourcing: rebuild state by replaying a stream, from the start or from a time.

Run it with ``python examples/event_sourcing.py`` (an embedded server), or against your own
server with ``--redis-url redis://localhost:6379/0`` (or ``PULSE_REDIS_URL``).

A bank account is the sum of its events. A reader started at ``streaming.OLDEST`` replays the
whole history to rebuild the balance; a reader started at a ``datetime`` replays only what
happened from that moment on (events created at or after that millisecond).
"""

from __future__ import annotations

from datetime import datetime

import anyio
from _server import example_client

from pulse_trio import streaming

YESTERDAY = [("deposited", 100), ("withdrew", 30), ("deposited", 50)]
TODAY = [("withdrew", 20), ("deposited", 5)]


async def replay(stream: streaming.Stream, start: streaming.StartPosition) -> list[streaming.Event]:
    """Every event of ``stream`` from ``start`` up to the last one now in it."""
    last_id = (await stream.info()).last_id
    events = []
    async with stream.open_reader(start=start) as reader:
        async for event in reader:
            events.append(event)
            if event.id == last_id:
                break
    return events


def balance(events: list[streaming.Event]) -> int:
    """The balance these events add up to."""
    sign = {"deposited": 1, "withdrew": -1}
    return sum(sign[e.event_name] * int(e.payload) for e in events)


async def main() -> None:
    """Record two days of events, then rebuild the account twice."""
    async with example_client("event_sourcing") as client:
        account = streaming.Stream(client, "event_sourcing:account-42", max_len=0)  # keep all
        await account.add_many([(name, str(amount).encode()) for name, amount in YESTERDAY])
        await anyio.sleep(0.01)  # so that "today" starts in a later millisecond
        await account.add_many([(name, str(amount).encode()) for name, amount in TODAY])

        history = await replay(account, streaming.OLDEST)
        for event in history:
            print(f"  {event.created_at:%H:%M:%S.%f} {event.event_name} {event.payload.decode()}")
        print(f"replayed from OLDEST: {len(history)} events, balance {balance(history)}")

        today_began: datetime = history[len(YESTERDAY)].created_at
        today = await replay(account, today_began)
        print(
            f"replayed from {today_began:%H:%M:%S.%f}: {len(today)} events, "
            f"change today {balance(today):+d}"
        )
        await account.destroy()


if __name__ == "__main__":
    anyio.run(main, backend="trio")

"""Fan-in: one reader over several streams, with ``add_stream``.

Run it with ``python examples/fan_in.py`` (an embedded server), or against your own server
with ``--redis-url redis://localhost:6379/0`` (or ``PULSE_REDIS_URL``).

Each region writes its own stream of sensor readings; one dashboard reader follows all of
them. ``reader.add_stream`` takes effect at once (also while the reader waits), and events
carry ``stream_name`` so the consumer knows where each came from. Events of one stream come
in order; events of different streams are not ordered relative to each other.
"""

from __future__ import annotations

import anyio
from _server import example_client

from pulse_trio import streaming

REGIONS = ("eu", "us", "asia")
READINGS_PER_REGION = 3


async def main() -> None:
    """Read three streams through one reader."""
    async with example_client("fan_in") as client:
        streams = [streaming.Stream(client, f"fan_in:sensors-{region}") for region in REGIONS]
        first, *others = streams
        async with first.open_reader(start=streaming.OLDEST) as dashboard:
            for stream in others:
                await dashboard.add_stream(stream)  # starts at the reader's start (OLDEST)
            print(f"the dashboard reads {sorted(dashboard.streams)}")

            for n in range(READINGS_PER_REGION):
                for region, stream in zip(REGIONS, streams, strict=True):
                    await stream.add("reading", f"{region} {20 + n}C".encode(), topic=region)

            per_stream: dict[str, int] = {}
            async for event in dashboard:
                per_stream[event.stream_name] = per_stream.get(event.stream_name, 0) + 1
                print(f"  {event.stream_name}: {event.payload.decode()}")
                if sum(per_stream.values()) == len(REGIONS) * READINGS_PER_REGION:
                    break
            print(f"one reader got {sum(per_stream.values())} events: {per_stream}")
        for stream in streams:
            await stream.destroy()


if __name__ == "__main__":
    anyio.run(main, backend="trio")

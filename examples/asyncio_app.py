"""An asyncio application: pulse-trio without Trio, through AnyIO.

Run it with ``python examples/asyncio_app.py`` (an embedded server), or against your own
server with ``--redis-url redis://localhost:6379/0`` (or ``PULSE_REDIS_URL``).

pulse-trio is written against AnyIO, so a plain asyncio program uses it as it is:
``asyncio.run``, ``asyncio.TaskGroup``, ``asyncio.timeout``. Here a click counter reads a
stream of clicks and keeps the totals in a replicated map that the rest of the app reads
locally.
"""

from __future__ import annotations

import asyncio

from _server import example_client

from pulse_trio import rmap, streaming

CLICKS = ["home", "pricing", "home", "docs", "home"]


async def count_clicks(reader: streaming.Reader, totals: rmap.Map) -> int:
    """Count each click into ``totals`` (``inc`` is atomic across replicas)."""
    counted = 0
    async for event in reader:
        page = event.payload.decode()
        print(f"  click on {page}: {await totals.inc(page)} so far")
        counted += 1
        if counted == len(CLICKS):
            return counted
    return counted


async def main() -> None:
    """Produce clicks in one asyncio task, count them in another."""
    print(f"running on asyncio ({type(asyncio.get_running_loop()).__name__})")
    async with example_client("asyncio_app") as client:
        clicks = streaming.Stream(client, "asyncio_app:clicks")
        async with (
            rmap.join(client, "asyncio_app:totals") as totals,
            clicks.open_reader() as reader,
        ):
            async with asyncio.timeout(10), asyncio.TaskGroup() as tg:
                counter = tg.create_task(count_clicks(reader, totals))
                for page in CLICKS:
                    await clicks.add("click", page.encode())
            print(f"the counter task counted {counter.result()} clicks")
            async with totals.subscribe() as changes:
                while sum(int(v) for v in totals.map().values()) < len(CLICKS):
                    await anext(changes)  # until this replica applied every count
            print(f"totals, read locally: {dict(sorted(totals.map().items()))}")
            await totals.destroy()
        await clicks.destroy()


if __name__ == "__main__":
    asyncio.run(main())

"""A sink instance in a process of its own, for tests that kill it.

Usage: ``python sink_process.py URL STREAM SINK GRACE``

Opens the sink (group created at OLDEST), prints ``ready <consumer>`` once it runs, then
``event <id>`` for every event it receives, flushing each line. It never acknowledges
anything and runs until it is killed.
"""

from __future__ import annotations

import sys

import anyio

import pulse_trio
from pulse_trio.streaming import OLDEST, Stream


async def main(url: str, stream_name: str, sink_name: str, grace: float) -> None:
    async with pulse_trio.connect(url) as client:
        stream = Stream(client, stream_name)
        async with stream.open_sink(
            sink_name, start=OLDEST, ack_grace_period=grace, block=0.1
        ) as sink:
            print("ready", sink.consumer, flush=True)
            async for event in sink:
                print("event", event.id, flush=True)


if __name__ == "__main__":
    url, stream_name, sink_name, grace = sys.argv[1:5]
    anyio.run(main, url, stream_name, sink_name, float(grace), backend="trio")

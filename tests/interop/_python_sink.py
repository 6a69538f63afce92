"""A Python sink instance in its own process, for crash tests (the test SIGKILLs it).

Usage: ``python _python_sink.py <redis url> <stream> <sink> <grace seconds>``. Prints JSON
lines like the Go peer: ``{"type": "ready", "consumer": ...}`` once registered, then one
``{"type": "event", ...}`` per delivered event. It never acknowledges anything.
"""

from __future__ import annotations

import base64
import json
import sys

import anyio

import pulse_trio
from pulse_trio import streaming


def emit(line: dict[str, object]) -> None:
    """Print one JSON line and flush it."""
    print(json.dumps(line), flush=True)


async def main(url: str, stream_name: str, sink_name: str, grace: float) -> None:
    """Run one non-acking sink instance until killed."""
    async with pulse_trio.connect(url) as client:
        stream = streaming.Stream(client, stream_name)
        async with stream.open_sink(
            sink_name, start=streaming.OLDEST, block=0.1, ack_grace_period=grace
        ) as sink:
            emit({"type": "ready", "consumer": sink.consumer})
            async for event in sink:
                emit(
                    {
                        "type": "event",
                        "id": event.id,
                        "name": event.event_name,
                        "payload": base64.b64encode(event.payload).decode(),
                    }
                )


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), backend="trio")

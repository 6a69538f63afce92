"""The dashboard's ASGI application: a sampler that reads snapshots, and a JSON endpoint.

One concept: what the browser sees. :func:`sample_forever` takes a
:func:`pulse_trio.admin.snapshot` every ``interval`` seconds and keeps the last
:data:`HISTORY_SECONDS` of stream lengths and sink lags (the charts); the app serves the
page (``/``, ``/pools``, ``/streams``, ``/maps``: one HTML file, the script draws the page
the path names), ``/static/*`` and ``/api/snapshot``, which the page polls. Every route is a
``GET``: the dashboard never writes.
"""

from __future__ import annotations

import collections
import math
import time
from importlib import resources
from typing import Any, Final

import anyio
import attrs

from .. import admin
from .._boundary import Client

#: Seconds of history kept for the charts.
HISTORY_SECONDS: Final = 600.0
#: Default seconds between two snapshots.
DEFAULT_INTERVAL: Final = 1.0


@attrs.define
class History:
    """The last snapshots' numbers, for the charts, and the last snapshot itself.

    Attributes:
        samples: ``(time, {stream: length}, {(stream, sink): (lag, pending)})`` per snapshot,
            oldest first, at most :data:`HISTORY_SECONDS` old.
        latest: The last snapshot as JSON-ready data (``None`` before the first).
        error: The error of the last attempt, ``""`` when it succeeded.
    """

    samples: collections.deque[tuple[float, dict[str, int], dict[str, tuple[int, int]]]] = (
        attrs.field(factory=collections.deque)
    )
    latest: Any = None
    error: str = ""

    def add(self, snap: admin.Snapshot, now: float) -> None:
        """Record ``snap`` taken at ``now`` (``time.monotonic()``)."""
        lengths = {s.name: s.length for s in snap.streams}
        sinks = {
            f"{s.name}/{k.name}": (k.lag if k.lag is not None else -1, k.pending)
            for s in snap.streams
            for k in s.sinks
        }
        self.samples.append((now, lengths, sinks))
        while self.samples and self.samples[0][0] < now - HISTORY_SECONDS:
            self.samples.popleft()
        self.latest = admin.to_json(snap)
        self.error = ""

    def series(self) -> dict[str, Any]:
        """Per stream its growth rate (entries/s, from the length), per sink its lag and
        pending count: ``[seconds ago, value]`` points, oldest first."""
        if not self.samples:
            return {"rates": {}, "lags": {}, "pending": {}}
        now = self.samples[-1][0]
        rates: dict[str, list[list[float]]] = {}
        lags: dict[str, list[list[float]]] = {}
        pending: dict[str, list[list[float]]] = {}
        previous: tuple[float, dict[str, int], dict[str, tuple[int, int]]] | None = None
        for sample in self.samples:
            at, lengths, sinks = sample
            age = round(at - now, 1)
            if previous is not None and at > previous[0]:
                for name, length in lengths.items():
                    before = previous[1].get(name, length)
                    rate = max(0, length - before) / (at - previous[0])
                    rates.setdefault(name, []).append([age, round(rate, 2)])
            for key, (lag, held) in sinks.items():
                if lag >= 0:
                    lags.setdefault(key, []).append([age, lag])
                pending.setdefault(key, []).append([age, held])
            previous = sample
        return {"rates": rates, "lags": lags, "pending": pending}


async def sample_forever(
    client: Client, history: History, *, interval: float = DEFAULT_INTERVAL
) -> None:
    """Take a snapshot every ``interval`` seconds into ``history``, forever; a failure is
    kept in ``history.error`` (shown by the page) and the next attempt follows."""
    if not (isinstance(interval, int | float) and math.isfinite(interval) and interval > 0):
        raise ValueError(f"interval must be a positive number of seconds, got {interval!r}")
    while True:
        try:
            snap = await admin.snapshot(client)
        except Exception as exc:  # shown on the page; the next round tries again
            history.error = f"{type(exc).__name__}: {exc}"
        else:
            history.add(snap, time.monotonic())
        await anyio.sleep(interval)


def _static(name: str) -> bytes:
    return (resources.files(__package__) / "static" / name).read_bytes()


def create_app(history: History, *, title: str = "pulse-trio") -> Any:
    """The Starlette application that serves ``history`` (fed by :func:`sample_forever`).

    Args:
        history: What the sampler records.
        title: Shown in the page's header (for example the redacted Redis URL).

    Returns:
        An ASGI application (read-only: ``GET`` routes only).

    Raises:
        ImportError: Starlette is missing (install ``pulse-trio[dashboard]``).
    """
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    page = _static("index.html").replace(b"{{title}}", _escape(title).encode())
    files = {
        "app.js": (_static("app.js"), "text/javascript; charset=utf-8"),
        "style.css": (_static("style.css"), "text/css; charset=utf-8"),
    }
    headers = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}

    async def index(request: Request) -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers=headers)

    async def static(request: Request) -> Response:
        found = files.get(request.path_params["name"])
        if found is None:
            return Response("not found", status_code=404)
        body, media_type = found
        return Response(body, media_type=media_type, headers=headers)

    async def snapshot(request: Request) -> Response:
        return JSONResponse(
            {"snapshot": history.latest, "error": history.error, "series": history.series()},
            headers=headers,
        )

    async def favicon(request: Request) -> Response:
        return Response(status_code=204)

    routes = [Route(path, index, methods=["GET"]) for path in ("/", "/pools", "/streams", "/maps")]
    routes += [
        Route("/static/{name}", static, methods=["GET"]),
        Route("/api/snapshot", snapshot, methods=["GET"]),
        Route("/favicon.ico", favicon, methods=["GET"]),
    ]
    return Starlette(routes=routes)


def _escape(value: str) -> str:
    return (
        value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )

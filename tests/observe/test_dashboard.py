"""The dashboard without a browser: its history (charts' data), its routes (read-only), and
the command's bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

import pytest

pytest.importorskip("starlette", reason="the dashboard extra is missing")

from pulse_trio import admin
from pulse_trio.dashboard import History, create_app


def _snapshot(length: int, lag: int | None, pending: int) -> admin.Snapshot:
    sink = admin.SinkSnapshot("mail", (), pending, lag, "0-0", None, 0)
    stream = admin.StreamSnapshot("orders", length, None, None, (sink,), False)
    return admin.Snapshot(datetime(2026, 1, 1, tzinfo=UTC), (), (stream,), ())


def test_history_series_gives_rates_and_lags_oldest_first() -> None:
    history = History()
    history.add(_snapshot(10, 3, 1), now=100.0)
    history.add(_snapshot(20, 5, 2), now=102.0)
    history.add(_snapshot(20, None, 2), now=104.0)
    series = history.series()
    assert series["rates"]["orders"] == [[-2.0, 5.0], [0.0, 0.0]]
    assert series["lags"]["orders/mail"] == [[-4.0, 3], [-2.0, 5]]  # unknown lag left out
    assert series["pending"]["orders/mail"] == [[-4.0, 1], [-2.0, 2], [0.0, 2]]
    assert history.latest["streams"][0]["sinks"][0]["lag"] is None


def test_history_keeps_ten_minutes() -> None:
    history = History()
    for second in range(0, 700, 10):
        history.add(_snapshot(second, 0, 0), now=float(second))
    assert history.samples[0][0] >= 690 - 600


async def call(app: Any, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    """One request straight to the ASGI app: (status, headers, body)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], headers, body


@pytest.mark.anyio
async def test_routes_are_read_only_and_serve_local_files() -> None:
    history = History()
    history.add(_snapshot(1, 0, 0), now=1.0)
    app = create_app(history, title="<t>")
    status, _, page = await call(app, "GET", "/streams")
    assert status == 200
    assert b"&lt;t&gt; dashboard" in page  # the title is escaped
    assert b"http" not in page  # nothing is loaded from elsewhere
    _, headers, _ = await call(app, "GET", "/static/app.js")
    assert headers["content-type"].startswith("text/javascript")
    assert (await call(app, "GET", "/static/__init__.py"))[0] == 404
    status, _, body = await call(app, "GET", "/api/snapshot")
    assert json.loads(body)["snapshot"]["streams"][0]["name"] == "orders"
    for method in ("POST", "PUT", "DELETE"):
        assert (await call(app, method, "/api/snapshot"))[0] == 405


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "70000"], "out of range"),
        (["--interval", "0"], "0.1 to 3600"),
        (["--redis-url", "http://x"], "invalid Redis URL"),
    ],
)
def test_bad_input_is_a_usage_error(args: list[str], message: str) -> None:
    command = [sys.executable, "-m", "pulse_trio", "dashboard", "--redis-url", "redis://x"]
    done = subprocess.run(command + args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr

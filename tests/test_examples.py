"""Every example of ``examples/`` runs on its own and does what it says.

Each example runs as a subprocess (``python examples/NAME.py``) on the embedded server it
starts itself; its output must show that it did its job. A few also run with ``--redis-url``
(and ``PULSE_REDIS_URL``) against one shared server, which must hold the same keys after as
before.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

import pulse_trio

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TIMEOUT = 60  # seconds per example; each takes a few on an idle machine

Check = str | Callable[[str], None]


def _rate_limited(out: str) -> None:
    windows = [(int(a), int(d)) for a, d in re.findall(r"(\d+) allowed, +(\d+) denied", out)]
    assert len(windows) >= 3, out
    assert all(allowed <= 10 for allowed, _ in windows), out  # the limit held in every window
    assert sum(denied for _, denied in windows) > 0, out  # and it was reached


def _jobs_moved(out: str) -> None:
    removed = re.search(r"remove (worker-\d), which runs (\[.*\]):", out)
    assert removed, out
    moving = ast.literal_eval(removed[2])
    other = "worker-1" if removed[1] == "worker-2" else "worker-2"
    assert moving, out
    assert f"restarted: {sorted((other, key) for key in moving)}" in out, out
    assert out.count("(moved here)") == len(moving), out
    for key in moving:
        assert f"{removed[1]}: stopped {key} (fetched" in out, out  # stopped on the old worker


def _flags_seen(out: str) -> None:
    woken = re.findall(r"service woken \((\w+)\)", out)
    assert woken == ["CHANGE", "CHANGE", "CHANGE", "DELETE", "RESET"], out


# What each example's output must hold (a string: a regular expression found in it).
EXPECTED: dict[str, list[Check]] = {
    "signup_flow": [
        r"analytics: sign-up #4: linus",
        r"sent the welcome mail of ada",
        r"sent the welcome mail of grace",
        r"sent the welcome mail of alan",
        r"welcome-mail is off, nothing for linus",
        re.escape(
            "done: 4 sign-ups, 4 acknowledged by the sink (0 pending), jobs left in the pool: []"
        ),
        lambda out: None if "welcome mail of linus" not in out else pytest.fail("linus was mailed"),
    ],
    "fan_out": [r"audit saw all 5 events", r"indexer saw all 5 events"],
    "fan_in": [
        r"one reader got 9 events: .*'fan_in:sensors-eu': 3",
        r"'fan_in:sensors-us': 3",
        r"'fan_in:sensors-asia': 3",
    ],
    "event_sourcing": [
        r"replayed from OLDEST: 5 events, balance 105",
        r"replayed from [\d:.]+: 2 events, change today -15",
    ],
    "distributed_cache": [
        r"computed 2 times for 4 lookups",
        re.escape("both replicas are empty: A={} B={}"),
        r"computed 3 times in all",
    ],
    "rate_limiter": [r"at most \d+ calls in one window \(limit 10\)", _rate_limited],
    "feature_flags": [_flags_seen, re.escape("its flags now: {}")],
    "long_running_jobs": [
        r"stop_job\('mailbox:ada'\):\n  worker-\d: stopped mailbox:ada",
        re.escape("the pool's jobs: ['mailbox:alan', 'mailbox:grace', 'mailbox:linus']"),
        _jobs_moved,
    ],
    "scheduler": [
        r"started report:eu",
        r"started report:us",
        r"started report:asia",
        r"stopped report:eu",
        re.escape("the pool runs ['report:asia', 'report:us']"),
        r"6 ticks, each to one node: \[('node-[ab]',? ?){6}\]",
    ],
    "dead_letter": [
        r"failed \(KeyError\('amount'\)\), delivery 1",
        r"failed \(KeyError\('amount'\)\), delivery 2",
        r"charged 30",
        r"charged 5",
        re.escape(
            """dead-letter stream 'dead_letter:orders-dead' got order.placed b'{"amonut": 12}'"""
        ),
        r"sink 'dead_letter:billing': 0 events pending",
    ],
    "asyncio_app": [
        r"running on asyncio",
        r"the counter task counted 5 clicks",
        re.escape("totals, read locally: {'docs': '1', 'home': '3', 'pricing': '1'}"),
    ],
    "rmap_demo": [r"bob sees", r"'hits': '3'"],
}


# The only lines an example may write to stderr (its log): anything else, a traceback or a
# warning of a retry or a failed task, fails the test.
STDERR_ALLOWED = {
    "dead_letter": r"sink dead_letter:billing: event \S+ of stream dead_letter:orders "
    r"delivered 2 times without ack: moved to dead-letter stream 'dead_letter:orders-dead'",
}


def _run(name: str, *args: str, env: dict[str, str] | None = None) -> str:
    """Run ``examples/<name>.py``; return its output after asserting it succeeded."""
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        env=env if env is not None else _env(),
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    allowed = STDERR_ALLOWED.get(name, r"(?!)")  # (?!) matches nothing
    unexpected = [line for line in done.stderr.splitlines() if not re.fullmatch(allowed, line)]
    assert not unexpected, done.stderr
    if name in STDERR_ALLOWED:
        assert re.search(allowed, done.stderr), done.stderr
    return done.stdout


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PULSE_REDIS_URL"}
    return env | extra


def _check(out: str, checks: list[Check]) -> None:
    for check in checks:
        if isinstance(check, str):
            assert re.search(check, out), f"{check!r} not found in:\n{out}"
        else:
            check(out)


def test_every_example_is_tested() -> None:
    """A new example cannot be forgotten here (``_``-files are helpers, not examples)."""
    found = {p.stem for p in EXAMPLES.glob("*.py") if not p.name.startswith("_")}
    assert found == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs(name: str) -> None:
    out = _run(name)
    assert "embedded server at redis://" in out or name == "rmap_demo"
    _check(out, EXPECTED[name])


# --- against a server of the user's ------------------------------------------------------


def _keys(url: str) -> set[bytes]:
    async def scan() -> set[bytes]:
        found: set[bytes] = set()
        async with pulse_trio.connect(url) as client:
            cursor = b"0"
            while True:
                cursor, batch = await client.execute("SCAN", cursor, "COUNT", 1000)
                found.update(batch)
                if cursor == b"0":
                    return found

    return anyio.run(scan, backend="trio")


@pytest.mark.parametrize(
    ("name", "how"),
    [("signup_flow", "flag"), ("scheduler", "flag"), ("dead_letter", "env")],
)
def test_example_on_a_real_server_leaves_no_keys(server_url: str, name: str, how: str) -> None:
    before = _keys(server_url)
    if how == "flag":
        out = _run(name, "--redis-url", server_url)
    else:
        out = _run(name, env=_env(PULSE_REDIS_URL=server_url))
    assert "embedded server" not in out
    _check(out, EXPECTED[name])
    cleaned = re.search(r"cleaned up (\S+): (\d+) keys of this example removed", out)
    assert cleaned, out
    assert cleaned[1] == server_url
    assert int(cleaned[2]) > 0  # it did create keys, and removed them
    assert _keys(server_url) == before


def test_example_refuses_a_server_holding_its_keys(server_url: str) -> None:
    async def plant() -> None:
        async with pulse_trio.connect(server_url) as client:
            await client.execute("SET", "fan_out:leftover", "x")

    async def remove() -> None:
        async with pulse_trio.connect(server_url) as client:
            await client.execute("DEL", "fan_out:leftover")

    anyio.run(plant, backend="trio")
    try:
        done = subprocess.run(
            [sys.executable, str(EXAMPLES / "fan_out.py"), "--redis-url", server_url],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
            env=_env(),
        )
        assert done.returncode == 1
        assert "already holds keys matching *fan_out:*" in done.stderr
        assert "Traceback" not in done.stderr
    finally:
        anyio.run(remove, backend="trio")

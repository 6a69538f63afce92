"""``pulse-trio demo``: on an embedded server, on a given server (which it leaves as it found
it), on asyncio, and through ``python -m pulse_trio``."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from typing import Any

import pytest

from pulse_trio.cli import main

#: The demo's own bound; it takes well under a second here.
DEMO_LIMIT = 30.0


def _check_story(out: str) -> None:
    assert "mailer and analytics see welcome-mail=on" in out
    assert "analytics read all 6 events" in out
    split = re.search(
        r"email sink split: email-1: (\d+), email-2: (\d+); pending after acks: 0", out
    )
    assert split is not None, out
    assert int(split[1]) + int(split[2]) == 6
    before = dict(re.findall(r"(node-[ab]) runs (\d+):", out))
    assert sum(int(v) for v in before.values()) == 6
    moved = re.findall(r"welcome:\w+: node-a -> node-b", out)
    assert len(moved) == int(before.get("node-a", 0))
    assert "node-b now runs all 6 jobs" in out
    assert "summary" in out
    assert re.search(r"done in [\d.]+ s", out)


def test_demo_embedded(capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    assert main(["demo"]) == 0
    elapsed = time.monotonic() - started
    out = capsys.readouterr().out
    assert "starting an embedded Redis server" in out
    _check_story(out)
    assert elapsed < DEMO_LIMIT


def test_demo_asyncio(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--asyncio"]) == 0
    out = capsys.readouterr().out
    assert "(on asyncio)" in out
    _check_story(out)


def _scan(url: str) -> set[bytes]:
    # Bytes: other tests on the shared server leave keys that are not UTF-8.
    done = subprocess.run(["redis-cli", "-u", url, "--scan"], capture_output=True, check=True)
    return set(done.stdout.split(b"\n"))


def test_demo_with_a_url_leaves_the_keyspace_as_it_was(
    capsys: pytest.CaptureFixture[str], server_url: str, unique: str
) -> None:
    subprocess.run(["redis-cli", "-u", server_url, "SET", f"{unique}:mine", "1"], check=True)
    before = _scan(server_url)
    assert f"{unique}:mine".encode() in before
    assert main(["demo", "--redis-url", server_url]) == 0
    out = capsys.readouterr().out
    assert "every name starts with 'demo-" in out
    assert "embedded" not in out
    _check_story(out)
    assert _scan(server_url) == before


def test_demo_through_python_m(server_url: str, monkeypatch: Any) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pulse_trio", "demo"],
        capture_output=True,
        text=True,
        timeout=DEMO_LIMIT + 30,
        check=False,
        env={"PULSE_REDIS_URL": server_url, "PATH": "/usr/bin:/bin:/usr/local/bin"},
    )
    assert done.returncode == 0, done.stderr
    _check_story(done.stdout)


def test_demo_pause_leaves_time_to_inspect(capsys: pytest.CaptureFixture[str]) -> None:
    """``--pause`` stops half-way; ``inspect`` then sees the demo's live pool, stream and map."""
    with subprocess.Popen(
        [sys.executable, "-m", "pulse_trio", "demo", "--pause"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as demo:
        assert demo.stdout is not None
        assert demo.stdin is not None
        lines: list[str] = []
        while not (line := demo.stdout.readline()).startswith("  then press Enter"):
            assert line, f"the demo ended early: {''.join(lines)}"
            lines.append(line)
        (command,) = [line.strip() for line in lines if "pulse-trio inspect --redis-url" in line]
        url = command.split()[-1]
        capsys.readouterr()
        status = main(["inspect", "--json", "--redis-url", url])
        data = json.loads(capsys.readouterr().out)
        demo.stdin.write("\n")
        demo.stdin.flush()
        rest, err = demo.communicate(timeout=DEMO_LIMIT)
    assert status == 0
    assert demo.returncode == 0, err
    (pool,) = data["pools"]
    assert len(pool["nodes"]) == 3  # node-a, node-b and web's client-only node
    assert sum(len(w["jobs"]) for w in pool["workers"]) == 6
    (users,) = [s for s in data["streams"] if s["name"].endswith("-users")]
    assert users["length"] == 6
    assert {s["pending"] for s in users["sinks"]} == {0}
    (flags,) = [m for m in data["maps"] if m["name"].endswith("-flags")]
    assert flags["values"] == {"welcome-mail": "on"}
    _check_story("".join(lines) + rest)


def test_demo_without_a_server_binary(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PULSE_REDIS_URL", raising=False)
    monkeypatch.setenv("PULSE_TRIO_SERVER", "/nonexistent/redis-server")
    assert main(["demo"]) == 1
    err = capsys.readouterr().err
    assert err == (
        "pulse-trio: error: PULSE_TRIO_SERVER='/nonexistent/redis-server' is not an executable "
        "file\n"
    )

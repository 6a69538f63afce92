"""Done-when: an application outside this repository installs ``pulse-trio[testing]`` and uses
the fixtures, the proxy, the strategies and a machine in its own tests.

The test makes a fresh virtual environment, installs the package from this checkout with
its ``testing`` and ``embedded`` extras (plus pytest-trio, to show both plugins work), writes
a small sample project (a sink handler and its tests) and runs that project's tests with the
environment's own pytest.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

APP = '''
"""A sample application: a sink handler that counts orders, idempotently."""

from pulse_trio.streaming import Event


class Ledger:
    def __init__(self) -> None:
        self.orders: dict[str, int] = {}

    async def record(self, event: Event) -> None:
        self.orders.setdefault(event.payload.decode(), len(self.orders))
'''

TESTS = """
import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pulse_trio
from pulse_trio.streaming import Event, Stream
from pulse_trio.testing import FaultProxy, kill_blocking, strategies
from pulse_trio.testing.machines import SinkMachine

from app import Ledger


@pytest.mark.anyio
async def test_client_fixture(pulse_client: pulse_trio.Client, pulse_name: str) -> None:
    stream = Stream(pulse_client, pulse_name)
    assert await stream.add("order.placed", b"1")
    assert await kill_blocking(pulse_client) == 0


@pytest.mark.trio
async def test_with_pytest_trio(pulse_client: pulse_trio.Client) -> None:
    assert await pulse_client.execute("PING") == b"PONG"


@pytest.mark.anyio
async def test_proxy(pulse_proxy: FaultProxy) -> None:
    async with pulse_trio.connect(pulse_proxy.url, command_timeout=0.5) as client:
        pulse_proxy.freeze()
        with pytest.raises(pulse_trio.RedisUnavailableError):
            await client.execute("PING")
        pulse_proxy.heal()
        assert await client.execute("PING") == b"PONG"


@settings(max_examples=20)
@given(strategies.names(max_size=64), strategies.payloads())
def test_strategies(name: str, payload: bytes) -> None:
    from pulse_trio._names import validate_name

    assert validate_name("stream", name) == name
    assert isinstance(payload, bytes)


class Orders(SinkMachine):
    events = st.tuples(st.just("order.placed"), st.sampled_from([b"1", b"2"]))
    ack_grace_period = 0.1

    def __init__(self) -> None:
        super().__init__()
        self.ledger = Ledger()

    async def handle(self, event: Event) -> None:
        await self.ledger.record(event)

    def check_settled(self) -> None:
        placed = {payload.decode() for _, _, payload in self.added}
        assert set(self.ledger.orders) == placed


def test_machine(pulse_server: str) -> None:
    Orders.run(pulse_server, max_examples=3, steps=5)
"""


def _run(args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    environment.pop("VIRTUAL_ENV", None)
    return subprocess.run(
        args,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=environment,
    )


@pytest.mark.installs
def test_an_application_installs_the_harness_and_its_tests_pass(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    made = _run([sys.executable, "-m", "venv", str(venv)], tmp_path, 120)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    installed = _run(
        [
            str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
            f"{ROOT}[testing,embedded]", "pytest-trio", "anyio",
        ],
        tmp_path,
        300,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stdout + installed.stderr
    project = tmp_path / "project"
    project.mkdir()
    (project / "app.py").write_text(textwrap.dedent(APP))
    (project / "test_app.py").write_text(textwrap.dedent(TESTS))
    (project / "pytest.ini").write_text("[pytest]\nfilterwarnings = error\n")
    ran = _run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider"], project, 300)
    assert ran.returncode == 0, ran.stdout[-4000:] + ran.stderr[-2000:]
    assert "7 passed" in ran.stdout, ran.stdout[-2000:]

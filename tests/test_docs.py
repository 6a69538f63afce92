"""The documentation stays true to the code.

- The README's and the docs pages' complete programs (``anyio.run(main``) run as written.
- Every keyword-only option of every entry point is in ``docs/configuration.md`` with its
  default, and the page lists no option the code does not have.
- The replicated-map demo runs.
"""

from __future__ import annotations

import inspect
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

import pulse_trio
from pulse_trio import pool, rmap, streaming

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = (ROOT / "README.md").read_text()


def _programs(text: str) -> list[str]:
    return [
        block
        for block in re.findall(r"```python\n(.*?)```", text, flags=re.S)
        if "anyio.run(main" in block
    ]


RUNNABLE = _programs(README)
DOC_PROGRAMS = [
    pytest.param(block, id=f"{page.stem}-{number}")
    for page in sorted(DOCS.glob("*.md"))
    for number, block in enumerate(_programs(page.read_text()), start=1)
]


def _run(source: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", source],
        input="\n",  # a program that waits for Enter (the tutorial's last one) goes on at once
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        env=env,
    )


def test_readme_has_runnable_examples() -> None:
    assert len(RUNNABLE) >= 2


@pytest.mark.parametrize("source", RUNNABLE, ids=lambda s: s.splitlines()[2][:40])
def test_readme_example_runs(source: str) -> None:
    done = _run(source)
    assert done.returncode == 0, done.stderr


def test_docs_have_runnable_programs() -> None:
    pages = {param.id.rsplit("-", 1)[0] for param in DOC_PROGRAMS}  # type: ignore[union-attr]
    assert {"tutorial", "rmap", "streaming", "pool"} <= pages


@pytest.mark.parametrize("source", DOC_PROGRAMS)
def test_docs_program_runs(source: str, server_url: str) -> None:
    # Programs that need a server that outlives them read PULSE_REDIS_URL (the tutorial's
    # inspect step); the others start an embedded one.
    done = _run(source, env={**os.environ, "PULSE_REDIS_URL": server_url})
    assert done.returncode == 0, done.stderr


def _acl_setuser() -> list[str]:
    """The ``ACL SETUSER`` command of docs/transport.md, as arguments."""
    text = (DOCS / "transport.md").read_text()
    line = next(x for x in text.splitlines() if x.startswith("redis-cli ACL SETUSER "))
    return shlex.split(line)[1:]


def _redis(url: str, *commands: list[str]) -> None:
    async def run() -> None:
        async with pulse_trio.connect(url) as client:
            for command in commands:
                await client.execute(*command)

    anyio.run(run)


def test_the_documented_acl_user_runs_the_tutorial(server_url: str) -> None:
    setuser = _acl_setuser()
    user = "docs-acl-user"
    setuser[2] = user
    password = next(arg[1:] for arg in setuser if arg.startswith(">"))
    program = next(block for block in _programs((DOCS / "tutorial.md").read_text())
                   if "PULSE_REDIS_URL" in block)  # fmt: skip
    url = server_url.replace("redis://", f"redis://{user}:{password}@", 1)
    _redis(server_url, setuser)
    try:
        done = _run(program, env={**os.environ, "PULSE_REDIS_URL": url})
    finally:
        _redis(server_url, ["ACL", "DELUSER", user])
    assert done.returncode == 0, done.stderr


# --- the configuration reference -------------------------------------------------------

#: Each entry point of the configuration page: its section heading and the callable.
ENTRY_POINTS: dict[str, Callable[..., Any]] = {
    "pulse_trio.connect(url, *, ...)": pulse_trio.connect,
    "pulse_trio.embedded(*, ...)": pulse_trio.embedded,
    "rmap.join(client, name, *, ...)": rmap.join,
    "streaming.Stream(client, name, *, ...)": streaming.Stream,
    "Stream.add(event_name, payload, *, ...)": streaming.Stream.add,
    "Stream.open_reader(*, ...)": streaming.Stream.open_reader,
    "Stream.open_sink(name, *, ...)": streaming.Stream.open_sink,
    "pool.open_node(client, name, *, ...)": pool.open_node,
}


def _documented_options() -> dict[str, dict[str, str]]:
    """``{section heading: {option: default as written}}`` from docs/configuration.md."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in (DOCS / "configuration.md").read_text().splitlines():
        heading = re.fullmatch(r"## `(.+)`", line)
        if heading:
            current = sections.setdefault(heading.group(1), {})
            continue
        row = re.fullmatch(r"\| `(\w+)` \| `([^`]*)` \|.*\|", line)
        if row and current is not None:
            current[row.group(1)] = row.group(2)
    return sections


def _shown(default: object) -> str:
    if isinstance(default, streaming.Start):
        return f"streaming.{default.name}"
    return repr(default)


def test_configuration_sections_match_the_entry_points() -> None:
    assert set(_documented_options()) == set(ENTRY_POINTS)


@pytest.mark.parametrize("heading", list(ENTRY_POINTS))
def test_configuration_lists_every_option_with_its_default(heading: str) -> None:
    parameters = inspect.signature(ENTRY_POINTS[heading]).parameters.values()
    in_code = {p.name: _shown(p.default) for p in parameters if p.kind is p.KEYWORD_ONLY}
    assert in_code, heading
    assert _documented_options()[heading] == in_code


# --- the demo ----------------------------------------------------------------------------


@pytest.mark.parametrize("flags", [[], ["--asyncio"]])
def test_rmap_demo_runs(flags: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "rmap_demo.py"), *flags],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "bob sees" in done.stdout
    assert "'hits': '3'" in done.stdout

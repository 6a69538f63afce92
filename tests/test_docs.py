"""The README's complete examples and the demo run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
RUNNABLE = [
    block
    for block in re.findall(r"```python\n(.*?)```", README, flags=re.S)
    if "anyio.run(main" in block
]


def test_readme_has_runnable_examples() -> None:
    assert len(RUNNABLE) >= 2


@pytest.mark.parametrize("source", RUNNABLE, ids=lambda s: s.splitlines()[2][:40])
def test_readme_example_runs(source: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", source], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


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

"""Fixtures of the state machines: they kill connections, so coredis's leaks are collected."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .._util import coredis_leaks_collected


@pytest.fixture(autouse=True)
def _collect_coredis_leaks() -> Iterator[None]:
    """The machines kill connections at random: see :func:`coredis_leaks_collected`."""
    with coredis_leaks_collected():
        yield

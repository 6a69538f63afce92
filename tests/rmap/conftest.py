"""rmap fixtures: the same tests run on a standalone server and on a 3-master cluster."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(
    params=[
        pytest.param("standalone"),
        pytest.param("cluster", marks=pytest.mark.cluster),
    ]
)
def redis(request: pytest.FixtureRequest) -> Any:
    """An open, flushed client (an AdminClient): on one server, or on a 3-master cluster."""
    if request.param == "cluster":
        return request.getfixturevalue("cluster_client")
    return request.getfixturevalue("client")

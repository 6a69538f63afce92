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
    """An entered, flushed client: standalone ``coredis.Redis`` or ``coredis.RedisCluster``."""
    if request.param == "cluster":
        return request.getfixturevalue("cluster_client")
    return request.getfixturevalue("client")

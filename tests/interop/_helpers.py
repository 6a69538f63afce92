"""Waiting helpers of the interop tests (polling with deadlines, collecting events)."""

from __future__ import annotations

from typing import Any

from .._util import collecting as collecting
from .._util import consuming as consuming
from .._util import wait_count as wait_count
from .._util import wait_until as wait_until


async def consumer_names(client: Any, stream: str, group: str) -> set[str]:
    """The consumers of ``group`` on ``pulse:stream:<stream>`` (XINFO CONSUMERS)."""
    raw = await client.xinfo_consumers(f"pulse:stream:{stream}", group)
    names = set()
    for item in raw:
        fields = {k.decode() if isinstance(k, bytes) else k: v for k, v in item.items()}
        name = fields["name"]
        names.add(name.decode() if isinstance(name, bytes) else name)
    return names

"""Loading of the Lua scripts shipped in ``pulse_trio/lua/``.

Each script is read once from the package (``importlib.resources``) and run through coredis's
:class:`~coredis.commands.script.Script`, which calls EVALSHA and falls back to loading the
script when the server answers NOSCRIPT (after a restart or ``SCRIPT FLUSH``).
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import coredis
from coredis.commands.script import Script


@functools.cache
def script_source(name: str) -> str:
    """Return the source of ``pulse_trio/lua/<name>.lua`` (cached for the process)."""
    return resources.files("pulse_trio").joinpath("lua", f"{name}.lua").read_text("utf-8")


def bind_script(client: coredis.Redis[Any] | coredis.RedisCluster[Any], name: str) -> Script[Any]:
    """Return a callable script for ``client``; no I/O happens until it is called.

    Args:
        client: The coredis client that runs the script.
        name: The file name without ``.lua``.
    """
    return client.register_script(script_source(name))

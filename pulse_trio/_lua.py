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


def bind_script(
    client: coredis.Redis[Any] | coredis.RedisCluster[Any], name: str, *, prelude: str | None = None
) -> Script[Any]:
    """Return a callable script for ``client``; no I/O happens until it is called.

    Args:
        client: The coredis client that runs the script.
        name: The file name without ``.lua``.
        prelude: The name of a shared script whose source is put before this one's (the
            functions several scripts share), or ``None``.
    """
    source = script_source(name)
    if prelude is not None:
        source = script_source(prelude) + "\n" + source
    return client.register_script(source)

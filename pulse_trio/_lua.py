"""Loading of the Lua scripts shipped in ``pulse_trio/lua/``.

Each script is read once from the package (``importlib.resources``) and run with
:meth:`pulse_trio.Client.execute_script`, which calls EVALSHA and falls back to EVAL when the
server answers NOSCRIPT (after a restart or ``SCRIPT FLUSH``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from importlib import resources
from typing import Any

import attrs

from ._redis import Client, Script
from ._redis._resp import Arg


@functools.cache
def script_source(name: str) -> str:
    """Return the source of ``pulse_trio/lua/<name>.lua`` (cached for the process)."""
    return resources.files("pulse_trio").joinpath("lua", f"{name}.lua").read_text("utf-8")


@attrs.frozen
class BoundScript:
    """A script bound to a client: ``await script(keys=[...], args=[...])`` runs it."""

    client: Client
    script: Script

    async def __call__(self, keys: Sequence[Arg] = (), args: Sequence[Arg] = ()) -> Any:
        """Run the script and return its raw reply (see :meth:`Client.execute_script`)."""
        return await self.client.execute_script(self.script, keys, args)


def bind_script(client: Client, name: str, *, prelude: str | None = None) -> BoundScript:
    """Return a callable script for ``client``; no I/O happens until it is called.

    Args:
        client: The client that runs the script.
        name: The file name without ``.lua``.
        prelude: The name of a shared script whose source is put before this one's (the
            functions several scripts share), or ``None``.
    """
    source = script_source(name)
    if prelude is not None:
        source = script_source(prelude) + "\n" + source
    return BoundScript(client, Script.of(source))

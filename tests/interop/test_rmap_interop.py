"""Replicated maps shared by the Go peer and pulse_trio.rmap.

Go writes -> Python replicas follow every change (content, revision, notifications), and
the raw hash and published messages are byte for byte what Python's own writes produce;
Python writes -> a Go replica follows.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import anyio.abc
import pytest

from pulse_trio import rmap

from .._util import recording
from ._helpers import wait_until
from ._peer import GoProcess

pytestmark = pytest.mark.anyio

#: (op, arguments) in the Go peer's command vocabulary; applied from either side.
OPS: list[tuple[str, dict[str, Any]]] = [
    ("set", {"key": "a", "value": "1"}),
    ("set", {"key": "path", "value": "é/€ x,y"}),
    ("set", {"key": "a", "value": "2"}),
    ("set", {"key": "a", "value": "2"}),  # same value: still a write
    ("set", {"key": "empty", "value": ""}),
    ("inc", {"key": "n", "delta": 5}),
    ("inc", {"key": "n", "delta": -7}),
    ("append", {"key": "l", "values": ["a/b", "c", "ü"]}),
    ("append", {"key": "l", "values": ["c"]}),
    ("remove", {"key": "l", "values": ["c"]}),
    ("delete", {"key": "a"}),
    ("delete", {"key": "absent"}),  # no write, no notification
    ("reset", {}),
    ("set", {"key": "after", "value": "reset"}),
    ("append", {"key": "one", "values": ["x"]}),
    ("remove", {"key": "one", "values": ["x"]}),  # last item: the key is deleted
    ("destroy", {}),
    ("set", {"key": "reborn", "value": "yes"}),
]


def cjson_list(items: list[str]) -> str:
    """A list as Redis's Lua cjson stores it (compact, ``/`` escaped, UTF-8 as is)."""
    return json.dumps(items, ensure_ascii=False, separators=(",", ":")).replace("/", "\\/")


def model_apply(model: dict[str, str], op: str, args: dict[str, Any]) -> rmap.EventKind | None:
    """Apply ``op`` to the expected content; return the notification it causes (None: no write)."""
    key = args.get("key", "")
    if op == "set":
        model[key] = args["value"]
        return rmap.EventKind.CHANGE
    if op == "inc":
        model[key] = str(int(model.get(key, "0")) + args["delta"])
        return rmap.EventKind.CHANGE
    if op == "append":
        items = json.loads(model[key]) if key in model else []
        model[key] = cjson_list(items + list(args["values"]))
        return rmap.EventKind.CHANGE
    if op == "remove":
        items = [i for i in json.loads(model[key]) if i not in args["values"]]
        if items:
            model[key] = cjson_list(items)
            return rmap.EventKind.CHANGE
        del model[key]
        return rmap.EventKind.DELETE
    if op == "delete":
        if key not in model:
            return None
        del model[key]
        return rmap.EventKind.DELETE
    assert op in ("reset", "destroy")
    model.clear()
    return rmap.EventKind.RESET


async def python_apply(m: rmap.Map, op: str, args: dict[str, Any]) -> None:
    """Run ``op`` through the Python API."""
    key = args.get("key", "")
    if op == "set":
        await m.set(key, args["value"])
    elif op == "inc":
        await m.inc(key, args["delta"])
    elif op == "append":
        await m.append_values(key, *args["values"])
    elif op == "remove":
        await m.remove_values(key, *args["values"])
    elif op == "delete":
        await m.delete(key)
    elif op == "reset":
        await m.reset()
    else:
        await m.destroy()


@contextlib.asynccontextmanager
async def raw_messages(client: Any, channel: str) -> AsyncIterator[list[bytes]]:
    """Collect the raw payloads published on ``channel`` while the block runs."""
    messages: list[bytes] = []

    async def consume(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with client.pubsub(channels=[channel]) as pubsub:
            task_status.started()
            async for item in pubsub:
                kind = item["type"]
                if kind in (b"message", "message"):
                    messages.append(item["data"])

    async with anyio.create_task_group() as tg:
        await tg.start(consume)
        yield messages
        tg.cancel_scope.cancel()


def content_of(peer: GoProcess) -> tuple[dict[str, str], int]:
    """The Go replica's content and revision, from its last ready/change line."""
    last = peer.matching(lambda line: line.get("type") in ("ready", "change"))[-1]
    return last["content"], last["rev"]


async def test_go_writes_python_replicas_follow_byte_for_byte(
    client: Any, go: Callable[..., Any], unique: str
) -> None:
    go_map, py_map = f"{unique}-go", f"{unique}-py"

    # 1. Go writes; two Python replicas follow every step.
    go_hashes: list[dict[bytes, bytes]] = []
    model: dict[str, str] = {}
    rev = 0
    async with (
        rmap.join(client, go_map) as m1,
        rmap.join(client, go_map) as m2,
        recording(m1) as kinds,
        raw_messages(client, f"map:{go_map}:updates") as go_messages,
        go("map-join", go_map) as peer,
    ):
        expected_kinds: list[rmap.EventKind] = []
        for op, args in OPS:
            await peer.call(op, **args)
            kind = model_apply(model, op, args)
            if kind is not None:
                rev += 1
                expected_kinds.append(kind)

            def caught_up(rev: int = rev) -> bool:
                return m1.revision == m2.revision == len(kinds) == rev

            await wait_until(
                caught_up,
                what=f"Python replicas at revision {rev} after Go's {op} {args}",
            )
            assert m1.map() == model, (op, args)
            assert m2.map() == model, (op, args)
            assert kinds == expected_kinds, (op, args)
            # The Go replica sees its own write too.
            await peer.wait_for(
                lambda _, rev=rev: content_of(peer)[1] == rev, what=f"Go at rev {rev}"
            )
            assert content_of(peer)[0] == model
            go_hashes.append(await client.hgetall(f"map:{go_map}:content"))
        assert m1.get_values("l") is None
        await wait_until(lambda: len(go_messages) == rev, what="every Go message")

    # 2. The same operations from Python on another map: the stored bytes and the published
    # messages must be identical (Go and Python replicas can share the map either way).
    py_hashes: list[dict[bytes, bytes]] = []
    async with (
        rmap.join(client, py_map) as m,
        raw_messages(client, f"map:{py_map}:updates") as py_messages,
    ):
        for op, args in OPS:
            await python_apply(m, op, args)
            py_hashes.append(await client.hgetall(f"map:{py_map}:content"))
        await wait_until(lambda: len(py_messages) == rev, what="every Python message")
    assert py_hashes == go_hashes
    assert py_messages == go_messages
    assert go_messages[0] == b"set:\x01\x00\x00\x00a\x01\x00\x00\x001\x01\x00\x00\x001"
    assert go_messages[-2] == f"destroy:{rev - 1}".encode()


async def test_python_writes_go_replica_follows(
    client: Any, go: Callable[..., Any], unique: str
) -> None:
    model: dict[str, str] = {}
    rev = 0
    async with go("map-join", unique) as peer, rmap.join(client, unique) as m:
        for op, args in OPS:
            await python_apply(m, op, args)
            kind = model_apply(model, op, args)
            if kind is None:
                continue
            rev += 1
            change = await peer.wait_line(
                lambda line, rev=rev: line.get("type") == "change" and line["rev"] == rev,
                what=f"Go sees Python's {op} {args} at revision {rev}",
            )
            assert change["content"] == model, (op, args)
            assert change["event"] == kind.name.lower(), (op, args)
        # Every write reached Go exactly once, in order, and nothing else did.
        assert [c["rev"] for c in peer.of_type("change")] == list(range(1, rev + 1))
        assert not peer.of_type("bad-message")
        # Go reads the Python-written list the way Python does.
        await m.append_values("regions", "eu/west", "us")
        await peer.wait_for(lambda _: content_of(peer)[1] == rev + 1, what="the list")
        got = await peer.call("get", key="regions")
        assert got["values"] == ["eu/west", "us"] == m.get_values("regions")


async def test_join_existing_content_either_way(
    client: Any, go: Callable[..., Any], unique: str
) -> None:
    # Go writes first; a Python replica joining later loads the snapshot and revision.
    async with go("map-join", unique) as writer:
        await writer.call("set", key="k", value="v")
        await writer.call("append", key="l", values=["x/y"])
        await writer.call("inc", key="n", delta=3)
    async with rmap.join(client, unique) as m:
        assert m.map() == {"k": "v", "l": '["x\\/y"]', "n": "3"}
        assert m.revision == 3
        assert m.get_values("l") == ["x/y"]
        await m.set_and_wait("p", "from python")
        # A Go replica joining now loads what Python wrote, and applies what follows.
        async with go("map-join", unique) as reader:
            ready = reader.of_type("ready")[0]
            assert ready["rev"] == 4
            assert ready["content"] == m.map()
            await m.delete("k")
            change = await reader.wait_line(lambda line: line.get("type") == "change")
            assert change["kind"] == "del"
            assert change["key"] == "k"
            assert change["rev"] == 5
        await wait_until(lambda: m.revision == 5, what="Python at revision 5")
        assert m.map() == {"l": '["x\\/y"]', "n": "3", "p": "from python"}

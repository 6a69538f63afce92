"""Replicated maps shared by goa.design/pulse's rmap (through the Go peer) and pulse_trio.rmap.

Go writes -> Python replicas follow every change (content, revision, notifications), and
the raw hash and published messages are byte for byte what Python's own writes produce;
Python writes -> a Go replica follows (content, revision, notification kind). Every write
operation of the API is exercised from both sides, including Reset and Destroy.
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
from pulse_trio._redis import Message

from .._util import recording
from ._helpers import wait_until
from ._peer import GoProcess, Line

pytestmark = pytest.mark.anyio

#: (op, arguments) in the Go peer's command vocabulary; applied from either side.
OPS: list[tuple[str, dict[str, Any]]] = [
    ("set", {"key": "a", "value": "1"}),
    ("set", {"key": "path", "value": "é/€ x,y"}),
    ("set", {"key": "a", "value": "2"}),
    ("set", {"key": "a", "value": "2"}),  # same value: still a write
    ("set", {"key": "empty", "value": ""}),
    ("set-if-not-exists", {"key": "once", "value": "1"}),
    ("set-if-not-exists", {"key": "once", "value": "2"}),  # present: no write
    ("test-and-set", {"key": "once", "test": "1", "value": "3"}),
    ("test-and-set", {"key": "once", "test": "nope", "value": "4"}),  # no write
    ("test-and-set", {"key": "absent", "test": "", "value": "5"}),  # absent never matches
    ("inc", {"key": "n", "delta": 5}),
    ("inc", {"key": "n", "delta": -7}),
    ("append", {"key": "l", "values": ["a/b", "c", "ü"]}),
    ("append", {"key": "l", "values": ["c"]}),
    ("append-unique", {"key": "u", "values": ["x", "y", "x"]}),
    ("append-unique", {"key": "u", "values": ["y"]}),  # nothing new: no write
    ("remove", {"key": "l", "values": ["c"]}),
    ("remove", {"key": "l", "values": ["zz"]}),  # nothing removed: no write
    ("test-and-delete", {"key": "once", "test": "nope"}),  # no write
    ("test-and-delete", {"key": "once", "test": "3"}),
    ("delete", {"key": "a"}),
    ("delete", {"key": "absent"}),  # no write, no notification
    ("test-and-reset", {"keys": ["u"], "tests": ["nope"]}),  # no write
    ("test-and-reset", {"keys": ["u", "n"], "tests": ['["x","y"]', "-2"]}),
    ("set", {"key": "after", "value": "reset"}),
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
    if op == "set-if-not-exists":
        if key in model:
            return None
        model[key] = args["value"]
        return rmap.EventKind.CHANGE
    if op == "test-and-set":
        if model.get(key) != args["test"]:
            return None
        model[key] = args["value"]
        return rmap.EventKind.CHANGE
    if op == "inc":
        model[key] = str(int(model.get(key, "0")) + args["delta"])
        return rmap.EventKind.CHANGE
    if op in ("append", "append-unique"):
        items = json.loads(model[key]) if key in model else []
        new = list(args["values"])
        if op == "append-unique":
            new = [v for i, v in enumerate(new) if v not in items and v not in new[:i]]
            if not new:
                return None
        model[key] = cjson_list(items + new)
        return rmap.EventKind.CHANGE
    if op == "remove":
        before = json.loads(model[key])
        items = [i for i in before if i not in args["values"]]
        if items == before:
            return None
        if items:
            model[key] = cjson_list(items)
            return rmap.EventKind.CHANGE
        del model[key]
        return rmap.EventKind.DELETE
    if op in ("delete", "test-and-delete"):
        if key not in model or (op == "test-and-delete" and model[key] != args["test"]):
            return None
        del model[key]
        return rmap.EventKind.DELETE
    if op == "test-and-reset":
        if any(model.get(k) != t for k, t in zip(args["keys"], args["tests"], strict=True)):
            return None
    else:
        assert op in ("reset", "destroy"), op
    model.clear()
    return rmap.EventKind.RESET


async def python_apply(m: rmap.Map, op: str, args: dict[str, Any]) -> None:
    """Run ``op`` through the Python API."""
    key = args.get("key", "")
    if op == "set":
        await m.set(key, args["value"])
    elif op == "set-if-not-exists":
        await m.set_if_not_exists(key, args["value"])
    elif op == "test-and-set":
        await m.test_and_set(key, args["test"], args["value"])
    elif op == "inc":
        await m.inc(key, args["delta"])
    elif op == "append":
        await m.append_values(key, *args["values"])
    elif op == "append-unique":
        await m.append_unique_values(key, *args["values"])
    elif op == "remove":
        await m.remove_values(key, *args["values"])
    elif op == "delete":
        await m.delete(key)
    elif op == "test-and-delete":
        await m.test_and_delete(key, args["test"])
    elif op == "test-and-reset":
        await m.test_and_reset(dict(zip(args["keys"], args["tests"], strict=True)))
    elif op == "reset":
        await m.reset()
    else:
        assert op == "destroy", op
        await m.destroy()


@contextlib.asynccontextmanager
async def raw_messages(client: Any, channel: str) -> AsyncIterator[list[bytes]]:
    """Collect the raw payloads published on ``channel`` while the block runs."""
    messages: list[bytes] = []

    async def consume(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with client.subscribe(channel) as sub:
            task_status.started()
            async for item in sub:
                assert isinstance(item, Message), item  # no reconnection in these tests
                messages.append(item.data)

    async with anyio.create_task_group() as tg:
        await tg.start(consume)
        yield messages
        tg.cancel_scope.cancel()


def content_of(peer: GoProcess) -> tuple[dict[str, str], int]:
    """The Go replica's content and revision, from its last ready/change line."""
    last = peer.matching(lambda line: line.get("type") in ("ready", "change"))[-1]
    return last["content"], last["rev"]


def go_errors(peer: GoProcess) -> list[Line]:
    """The error entries the Go library logged (e.g. a message it could not decode)."""
    return peer.matching(lambda line: line.get("type") == "log" and line["level"] == "error")


async def test_go_writes_python_replicas_follow_byte_for_byte(
    client: Any, go: Callable[..., Any], unique: str
) -> None:
    go_map, py_map = f"{unique}-go", f"{unique}-py"

    # 1. Go writes; two Python replicas and the Go replica follow every step.
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
            # The Go replica sees its own write too (the library applies its echo).
            await peer.wait_for(
                lambda _, rev=rev: content_of(peer)[1] == rev, what=f"Go at rev {rev}"
            )
            assert content_of(peer)[0] == model, (op, args)
            go_hashes.append(await client.hgetall(f"map:{go_map}:content"))
        assert m1.get_values("l") is None
        await wait_until(lambda: len(go_messages) == rev, what="every Go message")
        changes = peer.of_type("change")
        assert [c["rev"] for c in changes] == list(range(1, rev + 1))
        assert [c["event"] for c in changes] == [k.name.lower() for k in expected_kinds]
        assert not go_errors(peer)

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
        assert not go_errors(peer)
        # Go reads the Python-written list the way Python does.
        await m.append_values("regions", "eu/west", "us")
        await peer.wait_for(lambda _: content_of(peer)[1] == rev + 1, what="the list")
        await wait_until(lambda: m.revision == rev + 1, what="Python's own echo")
        got = await peer.call("get", key="regions")
        assert got["values"] == ["eu/west", "us"] == m.get_values("regions")
        # The values the Go API returns for Python-written state are Python's.
        result = await peer.call("remove", key="regions", values=["us"])
        assert (result["values"], result["removed"]) == (["eu/west"], True)
        result = await peer.call("test-and-set", key="regions", test='["eu\\/west"]', value="v")
        assert (result["previous"], result["existed"], result["updated"]) == (
            '["eu\\/west"]',
            True,
            True,
        )
        await wait_until(lambda: m.get("regions") == "v", what="Go's swap seen by Python")


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
            assert change["event"] == "delete"
            assert change["rev"] == 5
            assert "k" not in change["content"]
            # Go's SetAndWait returns once the Go replica holds the write; Python sees it.
            result = await reader.call("set-and-wait", key="g", value="from go")
            assert result["rev"] == 6
        await wait_until(lambda: m.revision == 6, what="Python at revision 6")
        assert m.map() == {"l": '["x\\/y"]', "n": "3", "p": "from python", "g": "from go"}


async def wait_pttl_below(client: Any, key: str, limit_ms: int) -> int:
    """Poll PTTL of ``key`` until it is positive and below ``limit_ms``; return it."""
    with anyio.fail_after(10):
        while not 0 < (pttl := await client.pttl(key)) < limit_ms:
            await anyio.sleep(0.02)
    return int(pttl)


async def check_ttl_map(
    client: Any, go: Callable[..., Any], name: str, mode: str, first: str, ttl_ms: int
) -> None:
    """Writes from Go and Python to a TTL'd map, ``first`` writing first."""
    key = f"map:{name}:content"
    ttl, sliding = (ttl_ms / 1000, None) if mode == "ttl" else (None, ttl_ms / 1000)
    async with (
        go("map-join", name, f"--{mode}", str(ttl_ms)) as peer,
        rmap.join(client, name, ttl=ttl, sliding_ttl=sliding) as m,
    ):

        async def write(side: str) -> None:
            if side == "go":
                await peer.call("set", key="k", value=side)
            else:
                await m.set("k", side)

        second = "python" if first == "go" else "go"
        # The first write gives the hash its TTL...
        await write(first)
        assert ttl_ms - 1000 < await client.pttl(key) <= ttl_ms
        # ...some time passes; the other side's write keeps an absolute TTL running and
        # restarts a sliding one, as the first side's own write does.
        for side in (second, first):
            before = await wait_pttl_below(client, key, ttl_ms - 300)
            await write(side)
            after = await client.pttl(key)
            if mode == "ttl":
                assert 0 < after <= before, (side, before, after)
            else:
                assert after > before, (side, before, after)
        # Both replicas follow writes on the TTL'd map.
        await wait_until(lambda: m.get("k") == first, what="Python replica")
        await peer.wait_for(lambda _: content_of(peer)[0] == {"k": first})


@pytest.mark.parametrize("mode", ["ttl", "sliding-ttl"])
async def test_ttl_maps_either_side(
    client: Any, go: Callable[..., Any], unique: str, mode: str
) -> None:
    for first in ("go", "python"):
        await check_ttl_map(client, go, f"{unique}-{first}", mode, first, ttl_ms=5000)


#: Stored values that are JSON but not a list of strings, and two that are other text.
ODD_VALUES = {
    "object": '{"a":1}',
    "numbers": "[1,2]",
    "mixed": '["a",1]',
    "json-string": '"x"',
    "empty-list": "[]",
    "csv": "a,b",
}


async def test_list_values_that_are_not_json_lists_of_strings(
    client: Any, go: Callable[..., Any], unique: str
) -> None:
    # Both sides read such values the same way: GetValues falls back to splitting the raw
    # text on commas. They differ on writes: goa.design/pulse's scripts work on whatever
    # cjson decodes (an object or an array of numbers gets the item added, the stored JSON
    # becomes a mix); pulse_trio refuses with MapValueError and changes nothing.
    go_map, py_map = f"{unique}-go", f"{unique}-py"
    for name in (go_map, py_map):
        await client.hset(f"map:{name}:content", ODD_VALUES)
    async with go("map-join", go_map) as peer, rmap.join(client, py_map) as m:
        for key, raw in ODD_VALUES.items():
            got = await peer.call("get", key=key)
            assert got["value"] == raw == m.get(key)
            assert got["values"] == m.get_values(key), key
        assert m.get_values("numbers") == ["[1", "2]"]
        assert m.get_values("empty-list") == []

        # AppendValues / RemoveValues from Go on each value, the same from Python.
        go_append = {
            k: (await peer.call("append", key=k, values=["z"]))["values"] for k in ODD_VALUES
        }
        go_remove = await peer.call("remove", key="numbers", values=["1"])
        go_after = await client.hgetall(f"map:{go_map}:content")
        for key in ("object", "numbers", "mixed"):
            with pytest.raises(rmap.MapValueError):
                await m.append_values(key, "z")
        with pytest.raises(rmap.MapValueError):
            await m.remove_values("numbers", "1")
        for key in ("json-string", "empty-list", "csv"):
            assert await m.append_values(key, "z") == go_append[key], key
        py_after = await client.hgetall(f"map:{py_map}:content")

    # Go changed the non-list JSON values (and returned comma-split garbage)...
    assert go_after[b"numbers"] == b'[1,2,"z"]'
    assert go_after[b"mixed"] == b'["a",1,"z"]'
    assert json.loads(go_after[b"object"]) == {"a": 1, "1": "z"}
    assert go_append["numbers"] == ["[1", "2", '"z"]']
    assert (go_remove["values"], go_remove["removed"]) == (["[1", "2", '"z"]'], False)
    # ...Python left them untouched.
    for key in ("object", "numbers", "mixed"):
        assert py_after[key.encode()] == ODD_VALUES[key].encode()
    # Values that are not JSON arrays or objects are the legacy comma form on both sides.
    for key in ("json-string", "empty-list", "csv"):
        assert py_after[key.encode()] == go_after[key.encode()], key
    assert py_after[b"json-string"] == b'["\\"x\\"","z"]'
    assert py_after[b"csv"] == b'["a","b","z"]'

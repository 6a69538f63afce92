"""One shape for every object, one boundary to Redis: the defects the old shape let in.

Each test here failed before the objects shared ``pulse_trio._lifecycle.Service`` and the
Redis client was reached only through ``pulse_trio._boundary``.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
from typing import Any

import anyio
import pytest

import pulse_trio
import pulse_trio.testing
from pulse_trio import rmap, streaming
from pulse_trio._lifecycle import State
from pulse_trio._redis import ResponseError
from pulse_trio.streaming import Stream

from ._util import consuming, offline_client

pytestmark = pytest.mark.anyio


# --- defect 1: a sink's blocking read outlasts the client's command timeout ------------------


async def test_sink_blocking_read_outlasts_the_command_timeout(
    server_url: str, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Each blocking read gets its ``BLOCK`` plus ``command_timeout``: a block of 2 s on a
    client with a 0.3 s command timeout is neither cut short nor retried."""
    caplog.set_level(logging.WARNING, logger="pulse_trio")
    async with pulse_trio.connect(server_url, command_timeout=0.3) as client:
        stream = Stream(client, unique)
        async with stream.open_sink("s", block=2) as sink, consuming(sink) as events:
            await anyio.sleep(0.8)  # quiet for longer than the client's command timeout
            await stream.add("late", b"")
            with anyio.fail_after(5):
                while not events:
                    await anyio.sleep(0.01)
            assert sink.statistics().retries == 0
    assert [e.event_name for e in events] == ["late"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


# --- defect 2: every invalid option raises ValueError/TypeError naming it, before any I/O ----


@pytest.mark.parametrize("opener", ["open_sink", "open_reader"])
@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"block": None}, ValueError, "block"),
        ({"block": "1"}, ValueError, "block"),
        ({"max_polled": None}, ValueError, "max_polled"),
        ({"buffer_size": 0}, ValueError, "buffer_size"),
        ({"topic": 3}, TypeError, "topic"),
        ({"topic_pattern": 3}, TypeError, "topic_pattern"),
        ({"start": None}, ValueError, "start"),
    ],
)
async def test_invalid_options_name_the_option(
    opener: str, options: dict[str, Any], error: type[Exception], match: str
) -> None:
    offline = offline_client()
    stream = Stream(offline, "s")
    open_it = (
        stream.open_reader if opener == "open_reader" else lambda **o: stream.open_sink("x", **o)
    )
    with pytest.raises(error, match=match):
        open_it(**options)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"ack_grace_period": None}, "ack_grace_period"),
        ({"no_ack": "yes"}, "no_ack"),
        ({"max_deliveries": 0}, "max_deliveries"),
        ({"dead_letter": 5, "max_deliveries": 2}, "Stream"),
    ],
)
async def test_invalid_sink_options_name_the_option(options: dict[str, Any], match: str) -> None:
    offline = offline_client()
    with pytest.raises((ValueError, TypeError), match=match):
        Stream(offline, "s").open_sink("sink", **options)


# --- defect 3: no public constructors; a never-entered object raises at once ------------------


async def test_objects_have_no_public_constructor(client: Any, unique: str) -> None:
    stream = Stream(client, unique)
    reader = stream.open_reader()
    sink = stream.open_sink("s")
    classes: tuple[tuple[Any, tuple[Any, ...]], ...] = (
        (rmap.Map, (client, unique)),
        (streaming.Reader, (stream, reader._options)),
        (streaming.Sink, (stream, "s", sink._options)),
    )
    for cls, args in classes:
        with pytest.raises(TypeError, match="no public constructor"):
            cls(*args)


async def test_never_entered_objects_raise_at_once(client: Any, unique: str) -> None:
    m = rmap.join(client, unique)
    assert m.state is State.NEW
    with anyio.fail_after(1):
        with pytest.raises(rmap.MapClosedError, match="not open"):
            await m.set_and_wait("k", "v")
        with pytest.raises(rmap.MapClosedError, match="not open"):
            await m.set("k", "v")
        with pytest.raises(rmap.MapClosedError, match="not open"):
            async with m.subscribe():
                pass
        stream = Stream(client, unique)
        reader = stream.open_reader()
        with pytest.raises(pulse_trio.ClosedError, match="not open"):
            await reader.add_stream(Stream(client, unique + "b"))
        with pytest.raises(pulse_trio.ClosedError, match="not open"):
            await reader.__anext__()
        sink = stream.open_sink("s")
        with pytest.raises(pulse_trio.ClosedError, match="not open"):
            await sink.add_stream(Stream(client, unique + "b"))
        with pytest.raises(pulse_trio.ClosedError, match="not open"):
            await sink.__anext__()
    assert await client.exists([f"map:{unique}:content", f"pulse:stream:{unique}"]) == 0


async def test_objects_are_entered_once(client: Any, unique: str) -> None:
    stream = Stream(client, unique)
    for obj in (rmap.join(client, unique), stream.open_reader(), stream.open_sink("s")):
        async with obj:
            assert obj.state is State.OPEN
        assert obj.closed
        with pytest.raises(RuntimeError, match="entered only once"):
            async with obj:
                pass


# --- defect 4: public calls raise only pulse-trio errors, the cause chained -------------------


async def test_sink_ack_raises_pulse_errors(client: Any, unique: str) -> None:
    stream = Stream(client, unique)
    async with stream.open_sink("s", start=streaming.OLDEST) as sink:
        await stream.add("e", b"1")
        with anyio.fail_after(5):
            event = await sink.__anext__()
    # The key is replaced by a value of another type: XACK answers WRONGTYPE. (Acks work
    # after the block too.)
    await client.delete([stream.key])
    await client.set(stream.key, "not a stream")
    with pytest.raises(pulse_trio.RedisCommandError, match="wrong kind of value") as info:
        await sink.ack(event)
    assert isinstance(info.value.__cause__, ResponseError)
    assert info.value.__cause__.code == "WRONGTYPE"


async def test_sink_ack_with_redis_gone_raises_redis_unavailable(unique: str) -> None:
    async with (
        pulse_trio.testing.EmbeddedServer() as server,
        pulse_trio.connect(server.url) as client,
    ):
        stream = Stream(client, unique)
        caught: list[BaseException] = []

        async def ack_after_the_server_died() -> None:
            async with stream.open_sink("s", start=streaming.OLDEST, block=0.1) as sink:
                await stream.add("e", b"1")
                with anyio.fail_after(5):
                    event = await sink.__anext__()
                await server.kill()
                try:
                    await sink.ack(event)
                except Exception as exc:
                    caught.append(exc)

        # Leaving may fail too (the background tasks lost their server): not under test here.
        with anyio.fail_after(30):
            with contextlib.suppress(BaseExceptionGroup):
                await ack_after_the_server_died()
        assert len(caught) == 1
        assert isinstance(caught[0], pulse_trio.RedisUnavailableError)
        assert caught[0].__cause__ is not None


async def test_map_write_errors_are_pulse_errors(client: Any, unique: str) -> None:
    async with rmap.join(client, unique) as m:
        await client.delete([f"map:{unique}:content"])
        await client.set(f"map:{unique}:content", "not a hash")
        with pytest.raises(pulse_trio.RedisCommandError, match="wrong kind of value") as info:
            await m.set("k", "v")
        assert info.value.__cause__ is not None
        await client.delete([f"map:{unique}:content"])


# --- defect 5: no monkeypatch of anyone's classes; no coredis at all -----------------------


def test_importing_pulse_trio_loads_no_redis_client_library() -> None:
    """pulse-trio runs on its own transport: importing every package loads neither coredis
    nor redis-py, so it cannot patch them (the coredis pool fix is gone with coredis)."""
    code = (
        "import sys, pulse_trio, pulse_trio.rmap, pulse_trio.streaming, pulse_trio.pool, "
        "pulse_trio.testing; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('coredis', 'redis')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]", out.stdout


async def test_a_coredis_client_is_refused_with_the_way_in(server_url: str, unique: str) -> None:
    """A coredis client given to an entry point gets a TypeError that names url_of()."""
    import coredis

    mine = coredis.Redis.from_url(server_url, decode_responses=False)
    with pytest.raises(TypeError, match=r"url_of"):
        rmap.join(mine, unique)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"url_of"):
        Stream(mine, unique)  # type: ignore[arg-type]


async def test_url_of_a_coredis_client_reaches_the_same_server(server_url: str) -> None:
    """``connect(url_of(coredis_client))``: same server, database, user and client name."""
    import coredis

    mine = coredis.Redis.from_url(
        server_url + "/3", decode_responses=False, client_name="from-coredis"
    )
    url = pulse_trio.url_of(mine)
    assert url.endswith("/3?client_name=from-coredis"), url
    async with pulse_trio.connect(url) as client:
        await client.execute("SET", "where", b"db3")
        assert await client.execute("CLIENT", "GETNAME") == b"from-coredis"
    # (coredis itself is not entered: its connections leak memory streams on Trio.)
    async with pulse_trio.connect(server_url + "/3") as db3:
        assert await db3.execute("GET", "where") == b"db3"
    cluster = coredis.RedisCluster(host="10.0.0.1", port=7000, username="u", password="p w")
    assert pulse_trio.url_of(cluster) == "redis+cluster://u:p%20w@10.0.0.1:7000"
    for stream in cluster.connection_pool.cluster_layout._error_stream:
        stream.close()  # coredis 6.9 never closes them (a ResourceWarning when collected)
    with pytest.raises(TypeError, match="coredis"):
        pulse_trio.url_of(object())


# --- imports run one way in streaming -------------------------------------------------------

#: The layers of ``pulse_trio.streaming``, bottom first: a module may import only from layers
#: below its own.
STREAMING_LAYERS = (
    {"_event", "_sink_policy"},
    {"_options"},
    {"_io"},
    {"_sink_stream", "_reader"},
    {"_sink"},
    {"_stream"},
    {"__init__"},
)


def test_streaming_imports_run_one_way() -> None:
    import ast
    from pathlib import Path

    package = Path(streaming.__file__).parent
    layer_of = {name: i for i, layer in enumerate(STREAMING_LAYERS) for name in layer}
    assert set(layer_of) == {path.stem for path in package.glob("*.py")}
    for path in package.glob("*.py"):
        tree = ast.parse(path.read_text())
        top_level = set(map(id, tree.body))
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or node.level != 1:
                continue
            assert id(node) in top_level, f"{path.name}:{node.lineno}: import inside a function"
            target = (node.module or "").split(".")[0]
            assert layer_of[target] < layer_of[path.stem], (
                f"{path.name} imports {target}: imports must go down the layers"
            )


def test_pool_imports_have_no_circle() -> None:
    """No module of ``pulse_trio.pool`` imports (even under ``TYPE_CHECKING`` or inside a
    function) a module of the package that imports it back: workers and tickers see their
    node through ``_node_api``'s protocols, and the node's collaborators never import it."""
    import ast
    from pathlib import Path

    from pulse_trio import pool

    package = Path(pool.__file__).parent
    imports: dict[str, set[str]] = {}
    for path in package.glob("*.py"):
        found = imports.setdefault(path.stem, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or node.level != 1:
                continue
            if node.module:
                found.add(node.module.split(".")[0])
            else:  # from . import _routing
                found.update(alias.name for alias in node.names)

    def reachable(start: str) -> set[str]:
        seen: set[str] = set()
        todo = list(imports[start])
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(imports.get(name, ()))
        return seen

    circles = sorted(name for name in imports if name in reachable(name))
    assert not circles, f"modules of pulse_trio.pool on an import circle: {circles}"
    assert "_node" not in reachable("_worker") | reachable("_ticker")

"""One shape for every object, one boundary to Redis: the defects the old shape let in.

Each test here failed before the objects shared ``pulse_trio._lifecycle.Service`` and the
Redis client was reached only through ``pulse_trio._boundary``.
"""

from __future__ import annotations

import ast
import collections
import contextlib
import itertools
import logging
import subprocess
import sys
from collections.abc import Collection
from pathlib import Path
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
    {"_options", "_buffer"},
    {"_io"},
    {"_sink_core", "_reader"},
    {"_sink_stream"},
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


# --- the whole package: imports form no circle; no module over 600 lines without a reason -----

PACKAGE = Path(pulse_trio.__file__).parent
#: A module longer than this says why in its docstring (``longer than 600 lines because ...``).
LINE_LIMIT = 600

#: The layers of ``pulse_trio._redis`` (the transport), bottom first: a module may import only
#: from layers below its own.
TRANSPORT_LAYERS = (
    {"_resp", "_settings"},
    {"_requests", "_url", "_fast_io"},
    {"_direct"},
    {"_multiplexed", "_pubsub"},
    {"_node"},
    {"_cluster", "_sentinel"},
    {"_client"},
    {"__init__"},
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    """Every module of pulse_trio by dotted name (a package by its own name)."""
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path, modules: Collection[str]) -> list[tuple[str, int]]:
    """The modules of pulse_trio that module ``name`` imports, with the line of each import:
    every import in its source, at the top, under ``TYPE_CHECKING`` or in a function."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package[: len(package) - node.level + 1]
                base = ".".join([*parent, node.module] if node.module else parent)
            # ``from package import module`` imports the module; ``from module import name``
            # the module itself.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # ``import a.b.c``: the module a.b.c
                target = target.rpartition(".")[0]
            if target and target != name:
                found.append((target, node.lineno))
    return found


def _import_graph() -> dict[str, dict[str, int]]:
    """``graph[a][b]``: the line where module ``a`` imports module ``b``."""
    modules = _modules()
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        graph[name] = {}
        for target, line in _imports(name, path, modules):
            graph[name].setdefault(target, line)
    return graph


def _circles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in graph[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(found)


def _one_circle(graph: dict[str, dict[str, int]], component: list[str]) -> str:
    """A shortest circle through the first module of ``component``, with import lines."""
    start = component[0]
    paths = {start: [start]}
    queue = collections.deque([start])
    while queue:
        module = queue.popleft()
        for target in sorted(graph[module]):
            if target == start:
                circle = [*paths[module], start]
                return (
                    " -> ".join(f"{a} (line {graph[a][b]})" for a, b in itertools.pairwise(circle))
                    + f" -> {start}"
                )
            if target in component and target not in paths:
                paths[target] = [*paths[module], target]
                queue.append(target)
    raise AssertionError(f"no circle through {start}")  # pragma: no cover


def test_imports_form_no_circle_in_the_package() -> None:
    """No module of pulse_trio imports, directly or not, a module that imports it back (every
    import counts: at the top, under ``TYPE_CHECKING``, in a function)."""
    graph = _import_graph()
    assert "pulse_trio._redis._multiplexed" in graph["pulse_trio._redis._node"]  # sanity
    assert "pulse_trio._redis._url" in graph["pulse_trio._redis._sentinel"]
    circles = _circles(graph)
    assert not circles, "import circles in pulse_trio:\n" + "\n".join(
        f"- {', '.join(c)}\n  e.g. {_one_circle(graph, c)}" for c in circles
    )


def test_the_circle_check_sees_every_kind_of_import(tmp_path: Path) -> None:
    """The parser behind the circle check counts relative, absolute, ``TYPE_CHECKING`` and
    function-level imports (a circle hidden in either is still a circle)."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "from . import _settings\n"
        "from .._errors import PulseError\n"
        "import pulse_trio._redis._resp\n"
        "if TYPE_CHECKING:\n"
        "    from ._client import Client\n"
        "def f():\n"
        "    from ..streaming import _event\n"
    )
    path = tmp_path / "_probe.py"
    path.write_text(source)
    modules = _modules()
    found = dict(_imports("pulse_trio._redis._probe", path, modules))
    assert found == {
        "pulse_trio._redis._settings": 2,
        "pulse_trio._errors": 3,
        "pulse_trio._redis._resp": 4,
        "pulse_trio._redis._client": 6,
        "pulse_trio.streaming._event": 8,
    }
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"a": 4}}
    assert _circles(graph) == [["a", "b", "c"]]
    assert _one_circle(graph, ["a", "b", "c"]) == "a (line 1) -> b (line 2) -> c (line 3) -> a"


def test_transport_imports_run_one_way() -> None:
    package = PACKAGE / "_redis"
    layer_of = {name: i for i, layer in enumerate(TRANSPORT_LAYERS) for name in layer}
    assert set(layer_of) == {path.stem for path in package.glob("*.py")}
    modules = _modules()
    for path in sorted(package.glob("*.py")):
        for target, line in _imports(_module_name(path), path, modules):
            if not target.startswith("pulse_trio._redis."):
                continue
            stem = target.rpartition(".")[2]
            assert layer_of[stem] < layer_of[path.stem], (
                f"{path.name}:{line} imports {stem}: imports must go down the layers"
            )


def test_no_module_is_longer_than_the_limit_without_a_reason() -> None:
    offenders = []
    for path in _modules().values():
        source = path.read_text()
        lines = len(source.splitlines())
        docstring = " ".join((ast.get_docstring(ast.parse(source)) or "").split())
        if lines > LINE_LIMIT and f"longer than {LINE_LIMIT} lines because" not in docstring:
            offenders.append(f"{path.relative_to(PACKAGE.parent)} ({lines} lines)")
    assert not offenders, (
        f"modules over {LINE_LIMIT} lines whose docstring does not say why (a sentence "
        f"'... longer than {LINE_LIMIT} lines because ...'): " + ", ".join(sorted(offenders))
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

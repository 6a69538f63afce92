"""The text rule of pools (see ``pulse_trio._names``): pool and ticker names are strict
UTF-8, job keys lossless text; a refused value raises a ``ValueError`` before any I/O, an
accepted one reads back identical. And the pool's batches (admissions, acknowledgements)
keep one bad member from failing the others."""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given

import pulse_trio
from pulse_trio import _batch, pool
from pulse_trio._errors import UnencodableTextError
from pulse_trio._names import is_lossless_text, is_strict_text
from pulse_trio.pool import _dispatch, _node

from .._texts import EDGES, REDIS_SETTINGS, TEXTS, escaped, refused_before_io
from .._util import offline_client, wait_until
from ._helpers import Recorder, node

pytestmark = pytest.mark.anyio

_FORBIDDEN_IN_NAMES = set(" \0*?[]")


def _valid_name(name: str) -> bool:
    return is_strict_text(name) and not set(name) & _FORBIDDEN_IN_NAMES


async def _gather(calls: dict[str, Any]) -> dict[str, Any]:
    """Run the calls concurrently; each one's result or exception, by name."""
    results: dict[str, Any] = {}

    async def one(name: str) -> None:
        try:
            results[name] = await calls[name]()
        except Exception as exc:
            results[name] = exc

    async with anyio.create_task_group() as tg:
        for name in calls:
            tg.start_soon(one, name)
    return results


@REDIS_SETTINGS
@given(TEXTS)
async def test_job_keys(client: Any, unique: str, values: list[str]) -> None:
    offline = pool.open_node(offline_client(), "p")  # never entered: no I/O possible
    handler = Recorder()
    async with node(client, unique + uuid.uuid4().hex[:6]) as n:
        await n.add_worker(handler)
        accepted: list[str] = []
        for key in dict.fromkeys([*values, *EDGES]):
            refused = await refused_before_io(lambda: offline.dispatch_job(key, b"p"))  # noqa: B023
            assert (refused is None) == (is_lossless_text(key) and "\0" not in key)
            if refused is not None:
                assert isinstance(refused, pool.InvalidJobKeyError)
                with pytest.raises(pool.InvalidJobKeyError):
                    await n.dispatch_job(key, b"p")
                continue
            await n.dispatch_job(key, b"p")
            assert handler.running[key].key == key  # through the node stream
            info = await n.job(key)
            assert info is not None
            assert info.key == key
            assert await n.job_payload(key) == b"p"
            accepted.append(key)
        assert await n.job_keys() == sorted(accepted)
        for key in accepted:
            await n.stop_job(key)
            assert key not in handler.running
        with pytest.raises(TypeError, match="payload must be bytes"):
            await n.dispatch_job("k", "text")  # type: ignore[arg-type]


@REDIS_SETTINGS
@given(TEXTS)
async def test_pool_and_ticker_names(client: Any, unique: str, values: list[str]) -> None:
    unique += uuid.uuid4().hex[:6]
    offline = pool.open_node(offline_client(), "p")
    names = [f"{unique}{i}{value}" for i, value in enumerate([*values, *EDGES])]
    for name in names:
        try:
            pool.open_node(offline_client(), name)  # validates, no I/O
        except pulse_trio.InvalidNameError:
            assert not _valid_name(name)
        else:
            assert _valid_name(name)

        async def open_offline_ticker(name: str = name) -> None:
            offline.open_ticker(name, 1.0)

        refused = await refused_before_io(open_offline_ticker)
        assert (refused is None) == _valid_name(name)
    good = [name for name in names if _valid_name(name)]
    for name in good[:2]:  # entering a node is slow: a couple per example
        async with node(client, name, client_only=True) as n:
            assert await n.jobs() == []
            async with n.open_ticker(name, 0.05) as ticker:
                with anyio.fail_after(10):
                    tick = await ticker.__anext__()
            assert tick.name == name
        prefix = b"pulse-trio:pool:{" + escaped(name) + b"}:"
        assert any(key.startswith(prefix) for key in await client.keys("*"))


# --- batches ---------------------------------------------------------------------------------


async def test_a_bad_job_key_fails_alone(client: Any, unique: str) -> None:
    """Issue 20 as reported: four concurrent dispatches, one key with a lone surrogate."""
    async with node(client, unique) as n:
        await n.add_worker(Recorder())
        keys = ["good-a", "good-b", "\ud800", "good-c"]
        results = await _gather({k: lambda k=k: n.dispatch_job(k, b"") for k in keys})
        assert isinstance(results.pop("\ud800"), pool.InvalidJobKeyError)
        assert results == {"good-a": None, "good-b": None, "good-c": None}
        assert await n.job_keys() == ["good-a", "good-b", "good-c"]


async def test_an_admission_batch_keeps_out_an_unsendable_member(
    client: Any, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Validation bypassed, so that the bad key reaches the admission batch itself: it fails
    its own caller with a pulse-trio error, the others of the same batch are admitted."""
    monkeypatch.setattr(_node, "validate_key", lambda key: key)
    batches: list[list[str]] = []
    split = _batch.split_sendable

    def recording(items: Any, parts: Any) -> Any:
        batches.append([item.key for item in items])
        return split(items, parts)

    monkeypatch.setattr(_dispatch, "split_sendable", recording)
    async with node(client, unique) as n:
        await n.add_worker(Recorder())
        keys = [f"good-{i}" for i in range(6)]
        keys.insert(3, "\udbff")
        # As if a batch were in flight: every dispatch joins the next one.
        n._dispatcher._admitting = True
        async with anyio.create_task_group() as tg:
            tg.start_soon(_release_admissions, n, len(keys))
            results = await _gather({k: lambda k=k: n.dispatch_job(k, b"") for k in keys})
        error = results.pop("\udbff")
        assert isinstance(error, UnencodableTextError)
        assert isinstance(error, pulse_trio.PulseError)
        assert results == dict.fromkeys(keys[:3] + keys[4:])
        assert await n.job_keys() == sorted(keys[:3] + keys[4:])
    assert [sorted(batch) for batch in batches] == [sorted(keys)]  # one batch, all of them


async def _release_admissions(n: pool.Node, count: int) -> None:
    """Send the held admissions once ``count`` dispatches are queued."""
    dispatcher = n._dispatcher
    await wait_until(lambda: len(dispatcher._admissions) == count, what="every dispatch queued")
    dispatcher._admitting = False
    dispatcher._admissions_ready.set()


class _Failing(Recorder):
    """Fails the start of ``bad`` with a message that holds a lone surrogate."""

    async def start(self, job: pool.Job) -> None:
        if job.key == "bad":
            raise RuntimeError("cannot start \ud800")
        await super().start(job)


async def test_an_acknowledgement_batch_with_an_unencodable_message(
    client: Any, unique: str
) -> None:
    """Start outcomes from several jobs go in one acknowledgement batch; a handler's error
    message with a lone surrogate is made writable in the worker's task, so that outcome
    reaches its caller and the batch carries the others."""
    handler = _Failing()
    sent: list[int] = []
    async with node(client, unique) as n:
        await n.add_worker(handler)
        acks = n._acks
        send = acks._send

        async def recording(batch: list[str]) -> Any:
            sent.append(len(batch) // 7)
            return await send(batch)

        acks._send = recording  # type: ignore[method-assign]
        acks._flushing = True  # hold the acknowledgements: they pile up in one batch
        keys = ["a", "b", "bad", "c"]
        async with anyio.create_task_group() as tg:
            results: dict[str, Any] = {}

            async def dispatch(key: str) -> None:
                try:
                    await n.dispatch_job(key, b"")
                    results[key] = None
                except Exception as exc:
                    results[key] = exc

            for key in keys:
                tg.start_soon(dispatch, key)
            await wait_until(lambda: len(acks._acks) == 7 * len(keys), what="every outcome queued")
            await anyio.lowlevel.checkpoint()
            acks._flushing = False
            acks._acks_ready.set()
        error = results.pop("bad")
        assert isinstance(error, pool.JobStartError)
        assert error.handler_message == "cannot start \\ud800"
        assert results == {"a": None, "b": None, "c": None}
        assert sorted(handler.running) == ["a", "b", "c"]
    assert sent[0] == len(keys), sent

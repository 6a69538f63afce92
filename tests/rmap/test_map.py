"""Every method and return value of SPEC section 3, on a real server (and cluster)."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import coredis
import pytest

import pulse_trio
from pulse_trio import rmap
from pulse_trio.rmap import EventKind
from pulse_trio.rmap._sync import Synchronizer
from pulse_trio.testing import EmbeddedServer

from .._slots import migrating, url
from .._util import wait_until

pytestmark = pytest.mark.anyio


async def test_join_loads_existing_content_and_two_replicas_converge(redis: Any) -> None:
    async with rmap.join(redis, "cfg") as a:
        await a.set_and_wait("x", "1")
        await a.set_and_wait("y", "2")
    async with rmap.join(redis, "cfg") as b, rmap.join(redis, "cfg") as c:
        assert b.map() == {"x": "1", "y": "2"}
        assert b.revision == 2
        await b.set("z", "3")
        await c.delete("x")
        await wait_until(lambda: b.map() == c.map() == {"y": "2", "z": "3"})
        assert b.revision == c.revision == 4


async def test_reads(redis: Any) -> None:
    async with rmap.join(redis, "reads") as m:
        assert m.name == "reads"
        assert m.get("a") is None
        assert m.get_values("a") is None
        assert len(m) == 0
        assert m.revision == 0
        await m.set_and_wait("a", "1")
        await m.append_values("l", "p", "q")
        await wait_until(lambda: "l" in m)
        assert m.get("a") == "1"
        assert m.get_values("l") == ["p", "q"]
        assert sorted(m.keys()) == ["a", "l"]
        assert m.map() == {"a": "1", "l": '["p","q"]'}
        assert len(m) == 2
        assert "a" in m
        assert "b" not in m
        assert m.revision == 2
        copy = m.map()
        copy["a"] = "changed"
        assert m.get("a") == "1"
        assert "revision=2" in repr(m)
        stats = m.statistics()
        assert stats.keys == 2
        assert stats.connected


async def test_set_returns_previous_value_and_empty_string_is_a_value(redis: Any) -> None:
    async with rmap.join(redis, "set") as m:
        assert await m.set("k", "") is None
        assert await m.set("k", "v1") == ""
        assert await m.set_and_wait("k", "v2") == "v1"
        assert m.get("k") == "v2"
        assert await m.set_and_wait("e", "") is None
        assert m.get("e") == ""
        assert "e" in m


async def test_set_and_wait_is_visible_at_once(redis: Any) -> None:
    async with rmap.join(redis, "saw") as m:
        for i in range(20):
            await m.set(f"k{i}", str(i))
        assert await m.set_and_wait("last", "x") is None
        assert m.get("last") == "x"
        assert m.get("k19") == "19"  # earlier writes too: notifications are in order


async def test_set_and_wait_cancelled(redis: Any) -> None:
    async with rmap.join(redis, "sawc") as m:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await m.set_and_wait("k", "v")
        assert scope.cancelled_caught
        assert m.statistics().connected


async def test_set_if_not_exists(redis: Any) -> None:
    async with rmap.join(redis, "sine") as m:
        assert await m.set_if_not_exists("k", "a") is True
        assert await m.set_if_not_exists("k", "b") is False
        await wait_until(lambda: m.get("k") == "a")
        rev = m.revision
        assert await m.set_and_wait("other", "x") is None
        assert m.revision == rev + 1  # the refused write bumped nothing
        assert m.get("k") == "a"


async def test_test_and_set(redis: Any) -> None:
    async with rmap.join(redis, "tas") as m:
        assert await m.test_and_set("k", "", "v") is None  # absent never matches
        await m.set_and_wait("k", "v1")
        assert await m.test_and_set("k", "nope", "v2") == "v1"
        assert await m.test_and_set("k", "v1", "v2") == "v1"
        await wait_until(lambda: m.get("k") == "v2")
        assert await redis.hget("map:tas:content", "k") == b"v2"


async def test_inc(redis: Any) -> None:
    async with rmap.join(redis, "inc") as m:
        assert await m.inc("n") == 1
        assert await m.inc("n", 41) == 42
        assert await m.inc("n", -1) == 41
        assert await m.inc("n", -41) == 0
        assert await m.inc("n", 0) == 0
        await wait_until(lambda: m.get("n") == "0" and m.revision == 5)
        await m.set("s", "abc")
        with pytest.raises(rmap.MapValueError, match=r"key s is not an integer"):
            await m.inc("s")
        with pytest.raises(TypeError):
            await m.inc("n", 1.5)  # type: ignore[arg-type]
        assert await redis.hget("map:inc:content", "s") == b"abc"
        assert await redis.hget("map:inc:content", "=rev") == b"6"  # the failed inc: no bump


async def test_inc_overflow_changes_nothing(redis: Any) -> None:
    async with rmap.join(redis, "incof") as m:
        await m.inc("n", 2**63 - 1)
        with pytest.raises(rmap.MapValueError, match="nothing was changed"):
            await m.inc("n")
        assert await redis.hget("map:incof:content", "n") == str(2**63 - 1).encode()


async def test_append_values(redis: Any) -> None:
    async with rmap.join(redis, "app") as m:
        assert await m.append_values("l", "bar") == ["bar"]
        assert await redis.hget("map:app:content", "l") == b'["bar"]'
        assert await m.append_values("l", "baz", "bar") == ["bar", "baz", "bar"]
        assert await m.append_values("l") == ["bar", "baz", "bar"]  # nothing to add: no write
        assert await m.append_values("missing") == []
        await wait_until(lambda: m.get_values("l") == ["bar", "baz", "bar"])
        assert m.revision == 2


async def test_append_unique_values(redis: Any) -> None:
    async with rmap.join(redis, "appu") as m:
        assert await m.append_unique_values("l", "a", "b", "c") == ["a", "b", "c"]
        assert await redis.hget("map:appu:content", "l") == b'["a","b","c"]'
        assert await m.append_unique_values("l", "d", "e", "a", "d") == ["a", "b", "c", "d", "e"]
        assert await m.append_unique_values("l", "a", "b") == ["a", "b", "c", "d", "e"]
        assert await m.append_unique_values("x", "y", "z") == ["y", "z"]
        await wait_until(lambda: m.revision == 3)


async def test_remove_values(redis: Any) -> None:
    async with rmap.join(redis, "rem") as m:
        assert await m.remove_values("l", "x") == (None, False)
        await m.append_values("l", "bar", "baz", "bar")
        assert await m.remove_values("l", "nope") == (["bar", "baz", "bar"], False)
        assert await m.remove_values("l") == (["bar", "baz", "bar"], False)
        assert await m.remove_values("l", "bar") == (["baz"], True)  # every occurrence
        await wait_until(lambda: m.revision == 2)
        async with m.subscribe() as changes:
            assert await m.remove_values("l", "baz") == (None, True)  # key deleted
            with anyio.fail_after(5):
                assert await changes.__anext__() is EventKind.DELETE
        assert "l" not in m
        assert await redis.hexists("map:rem:content", "l") is False


async def test_list_values_with_slashes_and_unicode(redis: Any) -> None:
    async with rmap.join(redis, "slash") as m:
        assert await m.append_values("l", "a/b", "c", "é") == ["a/b", "c", "é"]
        assert await redis.hget("map:slash:content", "l") == '["a\\/b","c","é"]'.encode()
        await wait_until(lambda: m.get_values("l") == ["a/b", "c", "é"])


async def test_list_operations_on_a_non_list_value(redis: Any) -> None:
    async with rmap.join(redis, "nonlist") as m:
        await m.set("obj", '{"a": 1}')
        await m.set("nums", "[1, 2]")
        for key in ("obj", "nums"):
            with pytest.raises(rmap.MapValueError, match="not a JSON list of strings"):
                await m.append_values(key, "x")
            with pytest.raises(rmap.MapValueError):
                await m.remove_values(key, "x")
        assert await redis.hget("map:nonlist:content", "obj") == b'{"a": 1}'
        # Legacy comma-separated values (old Go versions) are read as lists.
        await m.set("csv", "a,b")
        assert await m.append_values("csv", "c") == ["a", "b", "c"]


async def test_delete(redis: Any) -> None:
    async with rmap.join(redis, "del") as m:
        assert await m.delete("k") is None
        assert await redis.exists(["map:del:content"]) == 0  # nothing written, no bump
        await m.set("k", "v")
        assert await m.delete("k") == "v"
        await wait_until(lambda: m.revision == 2)
        assert "k" not in m


async def test_test_and_delete(redis: Any) -> None:
    async with rmap.join(redis, "tad") as m:
        assert await m.test_and_delete("k", "v") is None
        await m.set("k", "v")
        assert await m.test_and_delete("k", "other") == "v"
        assert await redis.hget("map:tad:content", "k") == b"v"
        assert await m.test_and_delete("k", "v") == "v"
        await wait_until(lambda: m.revision == 2)
        assert "k" not in m


async def test_test_and_reset(redis: Any) -> None:
    async with rmap.join(redis, "tar") as m:
        await m.set("a", "1")
        await m.set("b", "2")
        await m.set_and_wait("c", "3")
        assert await m.test_and_reset({"a": "1", "b": "x"}) is False
        assert await m.test_and_reset({"a": "1", "missing": ""}) is False
        assert len(m) == 3
        assert await m.test_and_reset({"a": "1", "b": "2", "c": "3"}) is True
        await wait_until(lambda: len(m) == 0)
        await m.set_and_wait("d", "4")
        assert await m.test_and_reset({}) is True  # empty mapping: unconditional
        await wait_until(lambda: len(m) == 0)


async def test_reset_keeps_a_tombstone_and_revisions_increase(redis: Any) -> None:
    async with rmap.join(redis, "rst") as m:
        await m.set("a", "1")
        await m.reset()
        await wait_until(lambda: len(m) == 0 and m.revision == 2)
        assert await redis.hgetall("map:rst:content") == {b"=rev": b"2", b"=kind": b"reset"}
        await m.set_and_wait("b", "2")
        assert m.map() == {"b": "2"}
        assert m.revision == 3


async def test_reset_of_a_large_map_with_an_absolute_ttl(redis: Any) -> None:
    """A reset leaves only the tombstone, however many fields (they are deleted in batches),
    and an absolute TTL starts again, as for a new hash."""
    fields = [x for i in range(2500) for x in (f"k{i}", "v")]
    await redis.execute("HSET", "map:big:content", *fields)
    async with rmap.join(redis, "big", ttl=60.0) as m:
        assert len(m) == 2500
        await m.set("a", "1")
        await redis.execute("PEXPIRE", "map:big:content", 5000)
        await m.reset()
        assert await redis.hgetall("map:big:content") == {b"=rev": b"2", b"=kind": b"reset"}
        assert 5000 < await redis.pttl("map:big:content") <= 60_000
        await wait_until(lambda: len(m) == 0)


@pytest.mark.cluster
async def test_reset_while_the_maps_slot_migrates(cluster_client: Any, unique: str) -> None:
    """The slot is MIGRATING, the hash still on the source: Redis refuses there a script's
    command on a key it lacks, so a reset that deleted the hash and wrote it again stopped
    halfway (the map gone, no tombstone, no message). It completes, and the hash then moves."""
    key = f"map:{unique}:content"
    async with rmap.join(cluster_client, unique) as m, rmap.join(cluster_client, unique) as other:
        await m.set("a", "1")
        await m.set_and_wait("b", "2")
        async with migrating(cluster_client, key) as source:
            await m.reset()
            async with pulse_trio.connect(url(source)) as src:
                assert await src.execute("HGETALL", key) == {b"=rev": b"3", b"=kind": b"reset"}
            await wait_until(lambda: len(other) == 0 and other.revision == 3)
        await m.set_and_wait("c", "3")
        await wait_until(lambda: other.map() == {"c": "3"})


@pytest.mark.cluster
async def test_deleting_the_last_field_while_the_maps_slot_migrates(
    cluster_client: Any, unique: str
) -> None:
    """A hash another tool wrote (no ``=rev``) with one field: deleting it while the slot is
    MIGRATING bumps the revision before the field goes, so the hash never vanishes inside
    the script (which Redis would stop halfway on the source)."""
    key = f"map:{unique}:content"
    await cluster_client.execute("HSET", key, "solo", "v")
    async with rmap.join(cluster_client, unique) as m:
        assert m.map() == {"solo": "v"}
        async with migrating(cluster_client, key) as source:
            assert await m.delete("solo") == "v"
            async with pulse_trio.connect(url(source)) as src:
                assert await src.execute("HGETALL", key) == {b"=rev": b"1", b"=kind": b"del"}
            await wait_until(lambda: len(m) == 0)
        await m.set_and_wait("c", "3")
        assert m.map() == {"c": "3"}


async def test_destroy_then_reuse(redis: Any) -> None:
    async with rmap.join(redis, "dst") as m, rmap.join(redis, "dst") as other:
        await m.set("a", "1")
        async with other.subscribe() as changes:
            await m.destroy()
            with anyio.fail_after(5):
                kinds = [await changes.__anext__()]
                while other.revision < 2:
                    kinds.append(await changes.__anext__())
            assert EventKind.RESET in kinds
        assert await redis.hgetall("map:dst:content") == {b"=rev": b"2", b"=kind": b"destroy"}
        assert len(other) == 0
        await m.set_and_wait("b", "2")
        await wait_until(lambda: other.map() == {"b": "2"})


async def test_subscribe_receives_each_kind(redis: Any) -> None:
    async with rmap.join(redis, "sub") as m, m.subscribe() as changes:
        await m.set("a", "1")
        with anyio.fail_after(5):
            assert await changes.__anext__() is EventKind.CHANGE
        await m.delete("a")
        with anyio.fail_after(5):
            assert await changes.__anext__() is EventKind.DELETE
        await m.reset()
        with anyio.fail_after(5):
            assert await changes.__anext__() is EventKind.RESET


async def test_coalescing_keeps_the_strongest_missed_kind(redis: Any) -> None:
    async with rmap.join(redis, "coal") as m, m.subscribe() as changes:
        await m.set("a", "1")
        await m.reset()
        await m.set("b", "2")
        await m.set_and_wait("c", "3")
        # Four notifications while the consumer was busy: one is pending, the strongest.
        assert changes.pending is EventKind.RESET
        with anyio.fail_after(5):
            assert await changes.__anext__() is EventKind.RESET
        assert changes.pending is None
        await m.delete("b")
        await m.set_and_wait("d", "4")
        with anyio.fail_after(5):
            assert await changes.__anext__() is EventKind.DELETE


async def test_notifications_are_applied_by_the_subscriber_connections_reader(
    redis: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without waking the map's own task: its handler applies them in the reader task."""
    taken: list[bool] = []
    take = Synchronizer._take

    def spy(self: Synchronizer, message: Any) -> bool:
        result = take(self, message)
        taken.append(result)
        return result

    monkeypatch.setattr(Synchronizer, "_take", spy)
    async with rmap.join(redis, "fast") as m, rmap.join(redis, "fast") as writer:
        for i in range(10):
            await writer.set_and_wait(f"k{i}", str(i))
        await wait_until(lambda: len(m) == 10, what="the replica applied every write")
        assert m.map() == {f"k{i}": str(i) for i in range(10)}
        assert m.revision == writer.revision == 10
    # Both replicas saw the writes, mostly (on an idle loop all) through the handler.
    assert taken.count(True) >= 10


async def test_subscriptions_end_when_the_map_is_left(redis: Any) -> None:
    received: list[EventKind] = []
    async with rmap.join(redis, "subend") as m, anyio.create_task_group() as tg:

        async def consume() -> None:
            async with m.subscribe() as changes:
                async for kind in changes:
                    received.append(kind)

        tg.start_soon(consume)
        await wait_until(lambda: m.statistics().subscribers == 1)
        await m.set_and_wait("a", "1")
        await wait_until(lambda: received == [EventKind.CHANGE])
        m._replica.release_all()  # what leaving the block does first; the consumer's loop ends
    assert received == [EventKind.CHANGE]


async def test_writes_after_leaving_raise_and_reads_keep_the_last_state(redis: Any) -> None:
    async with rmap.join(redis, "closed") as m:
        await m.set_and_wait("a", "1")
    assert m.closed
    assert m.get("a") == "1"
    assert m.map() == {"a": "1"}
    for write in (
        m.set("a", "2"),
        m.set_and_wait("a", "2"),
        m.inc("n"),
        m.delete("a"),
        m.reset(),
        m.destroy(),
        m.test_and_reset({}),
    ):
        with pytest.raises(rmap.MapClosedError):
            await write
    with pytest.raises(pulse_trio.ClosedError):
        await m.append_values("l", "x")
    with pytest.raises(rmap.MapClosedError):
        async with m.subscribe():
            pass
    assert await redis.hget("map:closed:content", "a") == b"1"


async def test_set_and_wait_raises_when_the_map_is_left_while_waiting(client: Any) -> None:
    waiter_error: list[BaseException] = []
    async with rmap.join(client, "sawclose") as m:
        m._replica.apply = lambda message: None  # type: ignore[method-assign]  # hold notifications back

        async def wait_for_write() -> None:
            try:
                await m.set_and_wait("k", "v")
            except rmap.MapClosedError as exc:
                waiter_error.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_for_write)
            await wait_until(lambda: bool(m._replica.waiters))
            m._replica.release_all()  # what leaving the block does first
    assert len(waiter_error) == 1
    assert "left while waiting" in str(waiter_error[0])


async def test_invalid_names_and_keys_raise_before_any_io(client: Any) -> None:
    redis = client
    nowhere: Any = object()  # validation must fail before the client is touched
    for bad in ["", "a b", "x*", "q?", "[", "]", "nul\x00", "n" * 513]:
        with pytest.raises(pulse_trio.InvalidNameError, match="invalid map name") as info:
            async with rmap.join(nowhere, bad):
                pass
        assert isinstance(info.value, ValueError)
    async with rmap.join(redis, "keys") as m:
        for bad_key in ["", "a=b", "=rev"]:
            for call in (
                m.set(bad_key, "v"),
                m.set_and_wait(bad_key, "v"),
                m.set_if_not_exists(bad_key, "v"),
                m.test_and_set(bad_key, "a", "b"),
                m.inc(bad_key),
                m.append_values(bad_key, "v"),
                m.append_unique_values(bad_key, "v"),
                m.remove_values(bad_key, "v"),
                m.delete(bad_key),
                m.test_and_delete(bad_key, "v"),
                m.test_and_reset({bad_key: "v"}),
            ):
                with pytest.raises(rmap.InvalidKeyError, match="invalid map key"):
                    await call
        with pytest.raises(TypeError, match="must be a str"):
            await m.set("k", b"bytes")  # type: ignore[arg-type]
        assert await redis.exists(["map:keys:content"]) == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ttl": -1}, "ttl must be"),
        ({"ttl": 0}, "ttl must be > 0"),
        ({"sliding_ttl": float("nan")}, "sliding_ttl must be"),
        ({"ttl": 1, "sliding_ttl": 1}, "not both"),
        ({"ping_interval": 0}, "ping_interval"),
    ],
)
async def test_invalid_options(kwargs: dict[str, Any], match: str) -> None:
    nowhere: Any = object()  # validation must fail before the client is touched
    with pytest.raises(ValueError, match=match):
        async with rmap.join(nowhere, "m", **kwargs):
            pass


async def test_a_coredis_client_is_refused_before_any_io(server_url: str) -> None:
    # Never entered: join must refuse it without a round trip, and say how to get a Client.
    coredis_client = coredis.Redis.from_url(server_url)
    with pytest.raises(TypeError, match=r"pulse_trio\.connect\(pulse_trio\.url_of"):
        rmap.join(coredis_client, "m")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"must be a pulse_trio\.Client"):
        rmap.join(object(), "m")  # type: ignore[arg-type]


async def test_join_fails_clearly_when_redis_is_down(own_server: EmbeddedServer) -> None:
    # The client connected while the server was up (connect() itself fails on a dead one).
    async with pulse_trio.connect(own_server.url) as redis:
        await own_server.stop()
        with pytest.raises(pulse_trio.RedisUnavailableError, match="cannot join map"):
            async with rmap.join(redis, "m"):
                pass


async def test_absolute_ttl_is_set_once(redis: Any) -> None:
    async with rmap.join(redis, "ttl", ttl=2.0) as m:
        await m.set("a", "1")
        first = await redis.pttl("map:ttl:content")
        assert 0 < first <= 2000
        await anyio.sleep(0.2)
        await m.set("b", "2")
        second = await redis.pttl("map:ttl:content")
        assert 0 < second < first


async def test_sliding_ttl_is_refreshed(redis: Any) -> None:
    async with rmap.join(redis, "sttl", sliding_ttl=2.0) as m:
        await m.set("a", "1")
        await anyio.sleep(0.2)
        before = await redis.pttl("map:sttl:content")
        await m.set("b", "2")
        after = await redis.pttl("map:sttl:content")
        assert 0 < before < after <= 2000


async def test_no_ttl_by_default(redis: Any) -> None:
    async with rmap.join(redis, "nottl") as m:
        await m.set("a", "1")
        assert await redis.pttl("map:nottl:content") == -1


async def test_logs_through_the_given_logger(redis: Any, caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.rmap.custom")
    with caplog.at_level(logging.DEBUG, logger="test.rmap.custom"):
        async with rmap.join(redis, "logs", logger=logger) as m:
            await m.set_and_wait("a", "1")
    records = [r for r in caplog.records if r.name == "test.rmap.custom"]
    messages = [r.getMessage() for r in records]
    assert any("joined" in msg for msg in messages)
    assert any("applied set rev 1" in msg for msg in messages)
    assert any("left" in msg for msg in messages)
    assert all(getattr(r, "map", None) == "logs" for r in records)

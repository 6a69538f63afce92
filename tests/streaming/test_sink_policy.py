"""The sink's pure decisions: timing, staleness, consumer names, dead-letter fields."""

from __future__ import annotations

import pytest

from pulse_trio.streaming._sink_policy import (
    ConsumerInfo,
    SinkTiming,
    dead_letter_fields,
    new_consumer_name,
    stale_consumers,
)

NOW = 1_800_000_000 * 10**9  # Unix ns
STALE = 40.0  # seconds (2 x a 20 s grace period)


def test_timing_from_the_default_grace_period() -> None:
    timing = SinkTiming.from_grace(20.0)
    assert timing.keepalive_period == pytest.approx(20.0 / 3)
    assert timing.reclaim_period == 2.0  # capped
    assert timing.lease_ttl == 4.0
    assert timing.stale_after == 40.0
    assert timing.grace_ms == 20_000
    assert timing.lease_ttl_ms == 4_000


def test_timing_of_short_grace_periods() -> None:
    timing = SinkTiming.from_grace(0.2)
    assert timing.reclaim_period == pytest.approx(0.05)
    assert timing.lease_ttl == pytest.approx(0.1)
    # The keep-alive is written well within the stale threshold, and the lease outlives
    # one reclaim period so its holder keeps it.
    assert timing.keepalive_period * 3 < timing.stale_after
    assert timing.lease_ttl > timing.reclaim_period
    tiny = SinkTiming.from_grace(0.001)
    assert tiny.reclaim_period == 0.01
    assert tiny.grace_ms == 1


def consumer(name: str, idle_s: float, pending: int = 0) -> ConsumerInfo:
    return ConsumerInfo(name=name, pending=pending, idle_ms=int(idle_s * 1000))


def ago(seconds: float) -> str:
    return str(NOW - int(seconds * 1e9))


def stale(consumers: list[ConsumerInfo], keepalives: dict[str, str]) -> list[str]:
    return stale_consumers(consumers, keepalives, now_ns=NOW, stale_after=STALE, self_name="me")


def test_a_consumer_with_an_old_keepalive_and_no_activity_is_stale() -> None:
    assert stale([consumer("dead", 100)], {"dead": ago(41)}) == ["dead"]


def test_a_fresh_keepalive_protects_an_idle_consumer() -> None:
    # A live instance whose user is slow stops reading, but keeps writing its keep-alive.
    assert stale([consumer("slow", 1000)], {"slow": ago(39)}) == []


def test_recent_activity_protects_a_consumer_without_keepalive() -> None:
    # Just created by another instance: its keep-alive has not reached this replica yet.
    assert stale([consumer("new", 0.5)], {}) == []
    assert stale([consumer("new", 39.9)], {}) == []
    assert stale([consumer("orphan", 40.1)], {}) == ["orphan"]


def test_recent_activity_protects_a_consumer_with_an_old_keepalive() -> None:
    assert stale([consumer("reading", 1)], {"reading": ago(1000)}) == []


def test_own_consumer_is_never_stale() -> None:
    assert stale([consumer("me", 1000)], {"me": ago(1000)}) == []


def test_unparsable_keepalive_is_left_alone() -> None:
    assert stale([consumer("odd", 1000)], {"odd": "yesterday"}) == []


def test_order_is_kept() -> None:
    found = stale(
        [consumer("b", 100), consumer("live", 100), consumer("a", 100)],
        {"b": ago(50), "live": ago(1), "a": ago(60)},
    )
    assert found == ["b", "a"]


def test_consumer_names_are_ulids() -> None:
    name = new_consumer_name(now_ms=0, entropy=bytes(10))
    assert name == "0" * 26
    name = new_consumer_name(now_ms=1, entropy=b"\xff" * 10)
    assert name == "0000000001" + "Z" * 16
    names = {new_consumer_name() for _ in range(1000)}
    assert len(names) == 1000
    assert all(len(n) == 26 and set(n) <= set("0123456789ABCDEFGHJKMNPQRSTVWXYZ") for n in names)
    # Sortable by creation time.
    assert new_consumer_name(now_ms=1000) < new_consumer_name(now_ms=2000)
    with pytest.raises(ValueError, match="ULID"):
        new_consumer_name(entropy=b"short")


def test_dead_letter_fields() -> None:
    fields = dead_letter_fields(
        event_id="1-2",
        stream_name="orders",
        sink_name="mails",
        event_name="created",
        payload=b"\x00",
        topic="eu",
        deliveries=3,
    )
    assert dict(zip(fields[::2], fields[1::2], strict=True)) == {
        "n": "created",
        "p": b"\x00",
        "t": "eu",
        "original_id": "1-2",
        "original_stream": "orders",
        "sink": "mails",
        "deliveries": "3",
    }
    no_topic = dead_letter_fields(
        event_id="1-2",
        stream_name="o",
        sink_name="m",
        event_name="",
        payload=b"",
        topic=None,
        deliveries=1,
    )
    assert "t" not in no_topic[::2]

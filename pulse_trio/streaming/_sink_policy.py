"""Pure decisions of sinks: timing derived from the grace period, staleness, consumer names.

Nothing here does I/O, so each rule is tested on its own (tests/streaming/test_sink_policy.py).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping

import attrs

#: Crockford's base32 alphabet, as used by ULIDs.
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
#: A keep-alive is written this many times per ack grace period.
KEEPALIVES_PER_GRACE = 3
#: Reclaim rounds (claim idle entries, delete stale consumers) per ack grace period.
RECLAIMS_PER_GRACE = 4
#: Longest pause between two reclaim rounds, in seconds, whatever the grace period.
MAX_RECLAIM_PERIOD = 2.0
#: Shortest pause between two periodic actions, in seconds (very short grace periods).
MIN_PERIOD = 0.01
#: A consumer whose keep-alive is older than this many grace periods is stale. goa.design/pulse
#: uses 2 with a keep-alive every grace period, so Go instances are never seen as stale.
STALE_GRACE_PERIODS = 2.0


@attrs.frozen
class SinkTiming:
    """The periods a sink derives from its ack grace period (all in seconds).

    Attributes:
        grace: Idle time after which an unacknowledged entry may be claimed by any instance.
        keepalive_period: How often an instance writes its keep-alive.
        reclaim_period: How often an instance tries to take the reclaim lease.
        lease_ttl: How long the lease lasts unless renewed: two reclaim periods, so the holder
            keeps it while alive and another instance takes over soon after it died.
        stale_after: Age of a keep-alive (and idle time of a consumer) after which the
            consumer is stale, i.e. its instance is gone.
    """

    grace: float
    keepalive_period: float
    reclaim_period: float
    lease_ttl: float
    stale_after: float

    @classmethod
    def from_grace(cls, grace: float) -> SinkTiming:
        """Derive every period from the ack grace period ``grace`` (seconds, > 0)."""
        reclaim = max(MIN_PERIOD, min(grace / RECLAIMS_PER_GRACE, MAX_RECLAIM_PERIOD))
        return cls(
            grace=grace,
            keepalive_period=max(MIN_PERIOD, grace / KEEPALIVES_PER_GRACE),
            reclaim_period=reclaim,
            lease_ttl=2 * reclaim,
            stale_after=STALE_GRACE_PERIODS * grace,
        )

    @property
    def grace_ms(self) -> int:
        """The grace period in whole milliseconds (at least 1), as XAUTOCLAIM wants it."""
        return max(1, round(self.grace * 1000))

    @property
    def lease_ttl_ms(self) -> int:
        """The lease duration in whole milliseconds (at least 1)."""
        return max(1, round(self.lease_ttl * 1000))


@attrs.frozen
class ConsumerInfo:
    """One consumer of a group, as ``XINFO CONSUMERS`` reports it.

    Attributes:
        name: The consumer's name.
        pending: Entries delivered to it and not acknowledged.
        idle_ms: Milliseconds since it last interacted with the group (read, claim).
    """

    name: str
    pending: int
    idle_ms: int


def stale_consumers(
    consumers: Iterable[ConsumerInfo],
    keepalives: Mapping[str, str],
    *,
    now_ns: int,
    stale_after: float,
    self_name: str,
) -> list[str]:
    """Return the consumers whose instances are gone, in the order given.

    A consumer is stale when all of these hold:

    - it is not this instance's own consumer;
    - it has not touched the group for ``stale_after`` (``idle_ms``): this protects a consumer
      just created by another instance whose keep-alive has not reached this replica yet,
      and any instance that is still reading;
    - its keep-alive is missing, or older than ``stale_after`` by the Redis clock ``now_ns``.
      A keep-alive that is not a decimal integer is never considered stale (someone else's
      format: leave it alone).

    A stale consumer is deleted only once it has no pending entries (the caller claims them
    first), so this decision never loses an entry.

    Args:
        consumers: The group's consumers.
        keepalives: Consumer name to keep-alive (Unix nanoseconds, decimal).
        now_ns: The current time in Unix nanoseconds (Redis ``TIME``).
        stale_after: Threshold in seconds.
        self_name: This instance's consumer name.
    """
    threshold_ns = int(stale_after * 1e9)
    threshold_ms = stale_after * 1000
    stale: list[str] = []
    for consumer in consumers:
        if consumer.name == self_name or consumer.idle_ms < threshold_ms:
            continue
        keepalive = keepalives.get(consumer.name)
        if keepalive is not None:
            try:
                written_ns = int(keepalive)
            except ValueError:
                continue
            if now_ns - written_ns < threshold_ns:
                continue
        stale.append(consumer.name)
    return stale


def new_consumer_name(*, now_ms: int | None = None, entropy: bytes | None = None) -> str:
    """Return a fresh consumer name: a ULID (26 characters of Crockford base32).

    Like goa.design/pulse, each sink instance gets its own; ULIDs sort by creation time.

    Args:
        now_ms: Unix milliseconds for the time part (default: now).
        entropy: 10 random bytes (default: from ``os.urandom``).
    """
    if now_ms is None:
        now_ms = time.time_ns() // 1_000_000
    if entropy is None:
        entropy = os.urandom(10)
    if len(entropy) != 10 or not 0 <= now_ms < 2**48:
        raise ValueError("a ULID needs 10 bytes of entropy and a 48-bit millisecond time")
    value = (now_ms << 80) | int.from_bytes(entropy, "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def dead_letter_fields(
    *,
    event_id: str,
    stream_name: str,
    sink_name: str,
    event_name: str,
    payload: bytes,
    topic: str | None,
    deliveries: int,
) -> list[str | bytes]:
    """Return the fields of a dead-letter entry, alternating names and values.

    The entry is itself a pulse event (``n``, ``p`` and, when there is a topic, ``t`` as in
    the original), so readers and sinks of the dead-letter stream decode it as usual, plus:
    ``original_id`` (the entry's id in its stream), ``original_stream`` (that stream's name),
    ``sink`` (the sink that gave up) and ``deliveries`` (how many times it was delivered
    without an ack, decimal).
    """
    fields: list[str | bytes] = ["n", event_name, "p", payload]
    if topic:
        fields += ["t", topic]
    fields += [
        "original_id",
        event_id,
        "original_stream",
        stream_name,
        "sink",
        sink_name,
        "deliveries",
        str(deliveries),
    ]
    return fields

"""The pool's protocol without I/O: key names, messages, membership, job records.

See ``docs/pool-protocol.md`` for the design. Everything here is pure: the I/O layer
(:mod:`._redis`) moves these values to and from Redis.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import attrs

from .._boundary import text
from .._names import text_problem
from ._errors import InvalidJobKeyError

#: Prefix of every key of a pool; ``{<name>}`` is the Redis Cluster hash tag, so all the keys
#: of one pool share a slot and every pool script runs on a cluster.
KEY_PREFIX = "pulse-trio:pool:"
#: Longest job key, in characters.
MAX_KEY_LENGTH = 1024
_KEY_RE = re.compile(r"[^\x00]{1,1024}")
KEY_RULE = "1 to 1024 characters, no NUL"


def validate_key(key: object) -> str:
    """Return ``key`` if it is a valid job key, else raise.

    A job key is 1 to 1024 characters, no NUL, of lossless text (it survives
    ``encode("utf-8", "surrogateescape")`` and back: see :mod:`pulse_trio._names`).

    Raises:
        TypeError: ``key`` is not a ``str``.
        InvalidJobKeyError: ``key`` breaks the rule (a ``ValueError``).
    """
    if not isinstance(key, str):
        raise TypeError(f"job key must be a str, not {type(key).__name__}")
    if _KEY_RE.fullmatch(key) is None:
        raise InvalidJobKeyError(key, f"must be {KEY_RULE}")
    problem = text_problem(key, lossless=True)
    if problem is not None:
        raise InvalidJobKeyError(key, problem)
    return key


def validate_payload(payload: object) -> bytes:
    """Return ``payload`` as bytes; anything but ``bytes``/``bytearray``/``memoryview`` is a
    ``TypeError``."""
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, bytearray | memoryview):
        return bytes(payload)
    raise TypeError(f"payload must be bytes, not {type(payload).__name__}")


def jobs_key(pool: str) -> str:
    """The pool's jobs hash, KEYS[1] of every pool script (the others derive from it)."""
    return f"{KEY_PREFIX}{{{pool}}}:jobs"


def guard_key(pool: str) -> str:
    """KEYS[2] of every pool script: a key of the pool's slot that never exists.

    Declared so that Redis refuses every pool script with ``TRYAGAIN`` while the pool's slot
    migrates between Redis Cluster masters (a script declaring a missing key is not run on
    a ``MIGRATING`` or ``IMPORTING`` slot), instead of running it on a node that holds only
    part of the pool's keys. Nothing ever writes it.
    """
    return f"{KEY_PREFIX}{{{pool}}}:guard"


def node_stream_key(pool: str, node_id: str) -> str:
    """The stream of one node: starts, stops and notifications for its workers, replies to
    its callers, membership and shutdown messages."""
    return f"{KEY_PREFIX}{{{pool}}}:node:{node_id}"


def next_id(entry_id: str) -> str:
    """The smallest stream id after ``entry_id`` (for ``XTRIM MINID``)."""
    ms, _, seq = entry_id.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


@attrs.frozen
class Membership:
    """Workers of the pool as Redis last reported them.

    Attributes:
        epoch: Bumped by Redis on every change of the worker set.
        workers: Worker id -> the id of the node that runs it.
    """

    epoch: str = "-1"
    workers: Mapping[str, str] = attrs.field(factory=dict)

    @functools.cached_property
    def worker_set(self) -> frozenset[str]:
        """The worker ids, as one set shared by everything routed with this membership."""
        return frozenset(self.workers)

    @classmethod
    def from_flat(cls, flat: Sequence[Any]) -> Membership:
        """Parse ``epoch, worker, node, worker, node, ...``."""
        values = [text(v) for v in flat]
        if not values:
            return cls()
        pairs = values[1:]
        return cls(values[0], dict(zip(pairs[0::2], pairs[1::2], strict=True)))

    @classmethod
    def from_message(cls, encoded: str) -> Membership:
        """Parse the newline-joined form that membership messages carry."""
        return cls.from_flat(encoded.split("\n"))


@attrs.frozen
class Job:
    """A job as its worker's handler sees it.

    Attributes:
        key: The job's key, unique in the pool.
        payload: The bytes given to ``dispatch_job``.
        created_at: When the job was admitted (UTC, Redis's clock).
        requeued: ``True`` when this start moves or recovers a job that had started before
            (rebalance, dead worker, retry), ``False`` for the start of a fresh dispatch.
        node_id: The node that dispatched the job.
        worker_id: The worker that runs it.
    """

    key: str
    payload: bytes
    created_at: datetime
    requeued: bool
    node_id: str
    worker_id: str


@attrs.frozen
class JobInfo:
    """What the pool records about a job (see :meth:`Node.jobs`).

    Attributes:
        key: The job key.
        state: ``pending`` (sent to a worker), ``starting`` (taken by it), ``running``,
            ``stopping``, ``unassigned`` (waiting for a worker), ``retry`` (its start failed;
            it is retried after a delay) or ``failed`` (it failed too often; stop it to
            remove it).
        worker_id: The worker it is assigned to, or ``None``.
        failures: How many starts failed since the job last ran.
        error: The last start error, or ``""``.
        created_at: When it was admitted (UTC, Redis's clock).
    """

    key: str
    state: str
    worker_id: str | None
    failures: int
    error: str
    created_at: datetime


def ms_to_datetime(ms: int) -> datetime:
    """A Redis-clock millisecond timestamp as a UTC datetime."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def parse_record(key: str, raw: bytes | str) -> JobInfo:
    """Decode one job record (JSON written by the pool scripts; text decoded losslessly, so
    bytes that are not UTF-8 never raise here)."""
    data = json.loads(text(raw))
    return JobInfo(
        key=key,
        state=str(data.get("s", "")),
        worker_id=str(data.get("w") or "") or None,
        failures=int(data.get("f") or 0),
        error=str(data.get("e") or ""),
        created_at=ms_to_datetime(int(data.get("c") or 0)),
    )


class MalformedMessageError(ValueError):
    """A node stream entry that this version cannot decode (logged and skipped)."""


@attrs.frozen
class Message:
    """One decoded entry of a node stream.

    Attributes:
        id: The stream entry id.
        type: ``s`` start, ``x`` stop, ``n`` notify, ``r`` reply, ``m`` membership,
            ``q`` shutdown.
        fields: The other fields, decoded as text except ``p`` (payload bytes).
    """

    id: str
    type: str
    fields: Mapping[str, str]
    payload: bytes = b""


_REQUIRED = {
    "s": ("k", "w", "g", "c", "q", "o"),
    "x": ("k", "w", "g", "d", "r"),
    "n": ("k", "w", "g", "d", "r"),
    "r": ("d", "o"),
    "m": ("M",),
    "q": (),
}


def decode_message(entry_id: str, raw: Mapping[Any, Any]) -> Message:
    """Decode a node stream entry; raise :class:`MalformedMessageError` if it is not one."""
    fields: dict[str, str] = {}
    payload = b""
    for name, value in raw.items():
        field = text(name)
        if field == "p":
            payload = value if isinstance(value, bytes) else str(value).encode()
        else:
            fields[field] = text(value)
    kind = fields.pop("t", None)
    if kind not in _REQUIRED:
        raise MalformedMessageError(f"unknown message type {kind!r} in entry {entry_id}")
    missing = [f for f in _REQUIRED[kind] if f not in fields]
    if missing:
        raise MalformedMessageError(f"entry {entry_id} ({kind}) lacks fields {missing}")
    problem = _field_problem(kind, fields)
    if problem is not None:
        raise MalformedMessageError(f"entry {entry_id} ({kind}): {problem}")
    return Message(entry_id, kind, fields, payload)


#: The latest millisecond timestamp a datetime can hold (the end of year 9999).
_MAX_MS = 253_402_300_799_999
_FLAGS = ("0", "1")


def _field_problem(kind: str, fields: Mapping[str, str]) -> str | None:
    """What is wrong with the values of a message's fields (written by another tool: every
    value the node acts on is checked here, so that acting on it cannot fail)."""
    if kind in ("s", "x", "n"):
        try:
            validate_key(fields["k"])
        except ValueError as exc:
            return f"bad job key: {exc}"
    if kind == "s":
        created = fields["c"]
        if (
            not (created.isascii() and created.isdigit() and len(created) <= 15)
            or int(created) > _MAX_MS
        ):
            return f"bad creation time {created[:30]!r}"
        if fields["q"] not in _FLAGS:
            return f"bad requeued flag {fields['q'][:30]!r}"
    elif kind == "r" and fields["o"] not in _FLAGS:
        return f"bad outcome flag {fields['o'][:30]!r}"
    elif kind == "m":
        flat = fields["M"].split("\n")
        epoch = flat[0]
        if not (epoch.lstrip("-").isascii() and epoch.lstrip("-").isdigit()):
            return f"bad membership epoch {epoch[:30]!r}"
        if len(flat) % 2 != 1:
            return "a worker without its node in the membership"
    return None


def reply_spec(token: str, node_id: str) -> str:
    """How a worker names the caller to answer (see pool_ack.lua)."""
    return f"{token}\0{node_id}"

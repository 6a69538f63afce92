"""Kill a client's connections of one kind, from the server's side (``CLIENT KILL``).

A :class:`pulse_trio.Client` holds three kinds of connections per server (see
:func:`pulse_trio.connect`): one *multiplexed* connection shared by ordinary commands,
pooled *blocking* connections for blocking reads (readers, sinks, pool nodes), and one
*pub/sub* connection per subscription (each map replica, each pool node). Killing one kind
exercises the matching recovery path: a request retried on a new multiplexed connection, a
blocking read resumed on a fresh connection, a subscription restored (and a map resynced).
"""

from __future__ import annotations

import enum

from .._errors import RedisUnavailableError
from .._redis import Client

#: Commands after which a connection counts as a blocking one (its last command).
BLOCKING_COMMANDS = frozenset(
    {
        "xread", "xreadgroup", "blpop", "brpop", "brpoplpush", "blmove", "blmpop",
        "bzpopmin", "bzpopmax", "bzmpop", "wait", "waitaof",
    }
)  # fmt: skip


class ConnectionKind(enum.Enum):
    """The kinds of connections a client holds."""

    #: The connection every ordinary command shares (one per server).
    MULTIPLEXED = "multiplexed"
    #: Dedicated connections lent to blocking reads (``XREAD``/``XREADGROUP`` ``BLOCK``).
    BLOCKING = "blocking"
    #: Subscribed connections (``SUBSCRIBE``, ``PSUBSCRIBE``, ``SSUBSCRIBE``).
    PUBSUB = "pubsub"


def _text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _fields(line: str) -> dict[str, str]:
    return dict(part.partition("=")[::2] for part in line.split(" ") if "=" in part)


def _kind_of(entry: dict[str, str]) -> ConnectionKind:
    """Classify one ``CLIENT LIST`` entry."""
    subscriptions = sum(int(entry.get(field, "0") or 0) for field in ("sub", "psub", "ssub"))
    if "P" in entry.get("flags", "") or subscriptions:
        return ConnectionKind.PUBSUB
    command = entry.get("cmd", "").partition("|")[0].lower()
    if "b" in entry.get("flags", "") or command in BLOCKING_COMMANDS:
        return ConnectionKind.BLOCKING
    return ConnectionKind.MULTIPLEXED


async def client_connections(client: Client) -> list[tuple[ConnectionKind, dict[str, str]]]:
    """List the connections of the servers ``client`` talks to, each with its kind.

    Returns:
        ``(kind, fields)`` per connection of every primary: ``fields`` are the ``CLIENT
        LIST`` fields (``id``, ``addr``, ``laddr``, ``name``, ``cmd``, ``flags``...), and
        ``fields["self"]`` is ``"1"`` for the multiplexed connection of ``client`` itself.
    """
    own = {
        entry.get("laddr", ""): entry.get("id", "")
        for entry in (
            _fields(_text(reply).strip())
            for reply in await client.execute_on_primaries("CLIENT", "INFO")
        )
    }
    found: list[tuple[ConnectionKind, dict[str, str]]] = []
    for reply in await client.execute_on_primaries("CLIENT", "LIST"):
        for line in _text(reply).splitlines():
            entry = _fields(line)
            if not entry:
                continue
            is_self = own.get(entry.get("laddr", "")) == entry.get("id")
            entry["self"] = "1" if is_self else "0"
            kind = ConnectionKind.MULTIPLEXED if is_self else _kind_of(entry)
            found.append((kind, entry))
    return found


async def kill_connections(
    client: Client, kind: ConnectionKind | str, *, every_client: bool = False
) -> int:
    """Kill ``client``'s connections of one ``kind`` on every server it talks to.

    Which connections are ``client``'s: its multiplexed connection is recognised exactly
    (it is the one asking); its blocking and pub/sub connections are recognised by the
    client's name (``pulse_trio.connect(url, client_name=...)``: the fixtures and machines
    of :mod:`pulse_trio.testing` name their clients). With ``every_client=True`` the
    connections of that kind of every client of the servers are killed instead (like
    ``CLIENT KILL TYPE``).

    Args:
        client: An open client; it issues the ``CLIENT`` commands itself.
        kind: A :class:`ConnectionKind`, or its value (``"multiplexed"``, ``"blocking"``,
            ``"pubsub"``).
        every_client: Kill that kind of connection of every client, not only ``client``'s.

    Returns:
        How many connections were killed.

    Raises:
        ValueError: Unknown ``kind``; or blocking/pub/sub connections of a client without a
            name, and ``every_client`` is false (they cannot be told from other clients').
        RedisUnavailableError: A server could not be reached.
    """
    kind = ConnectionKind(kind)
    name = client.settings.client_name
    if kind is not ConnectionKind.MULTIPLEXED and not name and not every_client:
        raise ValueError(
            f"cannot tell this client's {kind.value} connections from other clients': "
            "connect with client_name=..., or pass every_client=True"
        )
    victims: list[dict[str, str]] = []
    for found, entry in await client_connections(client):
        if found is not kind:
            continue
        if every_client or entry["self"] == "1" or (name and entry.get("name") == name):
            victims.append(entry)
    # Our own connection last: once it is killed, the next request reconnects.
    victims.sort(key=lambda entry: entry["self"])
    killed = 0
    for entry in victims:
        # SKIPME no: the new-style CLIENT KILL skips the caller by default.
        args = ["CLIENT", "KILL", "ID", entry["id"], "SKIPME", "no"]
        if client.is_cluster and entry.get("laddr"):
            args += ["LADDR", entry["laddr"]]
        try:
            if client.is_cluster:
                replies = await client.execute_on_primaries(*args)
                killed += sum(int(reply) for reply in replies)
            else:
                killed += int(await client.execute(*args))
        except RedisUnavailableError:
            if entry["self"] != "1":
                raise
            killed += 1  # the reply was lost with the connection it killed
    return killed


async def kill_multiplexed(client: Client) -> int:
    """Kill ``client``'s multiplexed connection on every server (see :func:`kill_connections`)."""
    return await kill_connections(client, ConnectionKind.MULTIPLEXED)


async def kill_blocking(client: Client, *, every_client: bool = False) -> int:
    """Kill ``client``'s blocking connections (see :func:`kill_connections`)."""
    return await kill_connections(client, ConnectionKind.BLOCKING, every_client=every_client)


async def kill_pubsub(client: Client, *, every_client: bool = False) -> int:
    """Kill ``client``'s pub/sub connections (see :func:`kill_connections`)."""
    return await kill_connections(client, ConnectionKind.PUBSUB, every_client=every_client)


__all__ = [
    "BLOCKING_COMMANDS",
    "ConnectionKind",
    "client_connections",
    "kill_blocking",
    "kill_connections",
    "kill_multiplexed",
    "kill_pubsub",
]

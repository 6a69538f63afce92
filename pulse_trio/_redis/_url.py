"""Redis URLs: :func:`parse_url` and what it returns, :class:`ParsedURL` (no I/O).

The client (:func:`~._client.open_client`) builds its connections from it, and Sentinel
(:mod:`._sentinel`) reads the sentinels, the service and their credentials from it.
"""

from __future__ import annotations

from urllib.parse import parse_qs, unquote, urlsplit

import attrs

from ._settings import Address


def _parse_hosts(netloc: str, default_port: int) -> tuple[str | None, str | None, list[Address]]:
    userinfo, _, hostlist = netloc.rpartition("@")
    username: str | None = None
    password: str | None = None
    if userinfo:
        user, sep, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if sep else None
    addresses = []
    for item in hostlist.split(","):
        if not item:
            continue
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") else default_port
        else:
            host, sep, port_text = item.rpartition(":")
            if not sep:
                host, port_text = item, ""
            port = int(port_text) if port_text else default_port
        if not 0 < port < 65536:
            raise ValueError(f"invalid port {port} in {item!r}: must be 1 to 65535")
        addresses.append(Address(host or "127.0.0.1", port))
    return username, password, addresses


@attrs.frozen
class ParsedURL:
    """What a Redis URL says (see :func:`parse_url`)."""

    kind: str  # "standalone", "cluster" or "sentinel"
    addresses: tuple[Address, ...]
    username: str | None
    password: str | None
    db: int
    tls: bool
    service: str | None = None
    options: dict[str, str] = attrs.field(factory=dict)


def parse_url(url: str) -> ParsedURL:
    """Parse a ``redis://``, ``rediss://``, ``unix://``, ``redis+cluster://``,
    ``rediss+cluster://``, ``redis+sentinel://`` or ``rediss+sentinel://`` URL.

    - ``redis://[user[:password]@]host[:port][/db][?client_name=x]``
    - ``unix://[user[:password]@]/path/to/socket[?db=n]``
    - ``redis+cluster://[user[:password]@]host:port[,host:port...]`` (seeds)
    - ``redis+sentinel://[user[:password]@]host:port[,host:port...]/service[/db]`` (the
      sentinels; the credentials are the data servers'; ``?sentinel_password=...``)

    Raises:
        ValueError: The scheme is none of those, or the URL is malformed.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if scheme == "unix":
        username, password, _ = _parse_hosts(parts.netloc, 0)
        db = int(options.get("db", "0"))
        return ParsedURL(
            "standalone", (Address(path=unquote(parts.path)),), username, password, db, False,
            options=options,
        )  # fmt: skip
    base, _, variant = scheme.partition("+")
    if base not in ("redis", "rediss") or variant not in ("", "cluster", "sentinel"):
        raise ValueError(
            f"unsupported URL scheme {parts.scheme!r} in {url!r}: use redis://, rediss://, "
            "unix://, redis+cluster://, rediss+cluster://, redis+sentinel:// or "
            "rediss+sentinel://"
        )
    default_port = 26379 if variant == "sentinel" else 6379
    username, password, addresses = _parse_hosts(parts.netloc, default_port)
    if not addresses:
        addresses = [Address("127.0.0.1", default_port)]
    segments = [s for s in parts.path.split("/") if s]
    service = None
    if variant == "sentinel":
        if not segments:
            raise ValueError(f"{url!r}: a Sentinel URL names the service: .../service_name")
        service = unquote(segments.pop(0))
    db = int(segments[0]) if segments else int(options.get("db", "0"))
    return ParsedURL(
        {"": "standalone", "cluster": "cluster", "sentinel": "sentinel"}[variant],
        tuple(addresses),
        username,
        password,
        db,
        base == "rediss",
        service,
        options,
    )

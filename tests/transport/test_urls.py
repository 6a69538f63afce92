"""URL parsing, Unix sockets, and the reconnection backoff."""

from __future__ import annotations

from pathlib import Path

import pytest

from pulse_trio import EmbeddedServer
from pulse_trio._redis import open_client, parse_url
from pulse_trio._redis._settings import Address, Backoff


def test_parse_standalone_urls() -> None:
    parsed = parse_url("redis://al%40ice:p%3Ass@example.com:6380/2?client_name=me")
    assert parsed.kind == "standalone"
    assert parsed.addresses == (Address("example.com", 6380),)
    assert (parsed.username, parsed.password, parsed.db, parsed.tls) == ("al@ice", "p:ss", 2, False)
    assert parsed.options["client_name"] == "me"
    assert parse_url("rediss://:only-password@h").password == "only-password"
    assert parse_url("rediss://:only-password@h").username is None
    assert parse_url("rediss://h").tls
    assert parse_url("redis://[::1]:7000").addresses == (Address("::1", 7000),)
    assert parse_url("redis://").addresses == (Address("127.0.0.1", 6379),)


def test_parse_unix_cluster_and_sentinel_urls() -> None:
    unix = parse_url("unix://u:pw@/run/redis.sock?db=3")
    assert unix.addresses == (Address(path="/run/redis.sock"),)
    assert (unix.username, unix.password, unix.db) == ("u", "pw", 3)
    cluster = parse_url("redis+cluster://a:7000,b:7001")
    assert cluster.kind == "cluster"
    assert cluster.addresses == (Address("a", 7000), Address("b", 7001))
    sentinel = parse_url("rediss+sentinel://u:pw@s1,s2:5000/my-service/4?sentinel_password=x")
    assert sentinel.kind == "sentinel"
    assert sentinel.addresses == (Address("s1", 26379), Address("s2", 5000))
    assert (sentinel.service, sentinel.db, sentinel.tls) == ("my-service", 4, True)
    assert sentinel.options["sentinel_password"] == "x"


@pytest.mark.parametrize(
    ("url", "match"),
    [("http://h", "unsupported URL scheme"), ("redis+sentinel://h:1", "names the service")],
)
def test_bad_urls(url: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_url(url)


def test_backoff_grows_with_jitter_and_resets() -> None:
    backoff = Backoff(initial=0.1, maximum=1.0)
    delays = [backoff.next_delay() for _ in range(8)]
    for n, delay in enumerate(delays):
        ceiling = min(1.0, 0.1 * 2**n)
        assert ceiling / 2 <= delay <= ceiling
    assert len(set(delays)) > 1
    backoff.reset()
    assert backoff.next_delay() <= 0.1


@pytest.mark.anyio
async def test_unix_socket(tmp_path: Path, unique: str) -> None:
    path = tmp_path / "redis.sock"
    async with (
        EmbeddedServer(extra_args=["--unixsocket", str(path), "--unixsocketperm", "700"]),
        open_client(f"unix://{path}?db=5") as client,
    ):
        assert await client.execute("SET", unique, "over unix") == b"OK"
        info = await client.execute("CLIENT", "INFO")
        assert b" db=5 " in info
        assert str(path).encode() in info  # addr=<socket path>:0
        async with client.subscribe(f"{unique}:c") as sub:
            await sub.ping()

"""What the commands share: errors with exit statuses, the connection, the console."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio

import pulse_trio
from pulse_trio._boundary import leaves
from pulse_trio._redis import ProtocolError, ResponseError, parse_url

#: Seconds allowed to connect to the server and check that it is Redis.
CONNECT_TIMEOUT = 10.0


class CliError(Exception):
    """An error the command reports as one line, with its exit status."""

    status = 1


class UsageError(CliError):
    """The command line itself is wrong (exit status 2)."""

    status = 2


class NotFoundError(CliError):
    """A name given on the command line names nothing (exit status 1)."""


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def describe(exc: BaseException) -> str:
    """One line saying what went wrong (the first leaf of an exception group)."""
    leaf = leaves(exc)[0] if isinstance(exc, BaseExceptionGroup) else exc
    if isinstance(leaf, CliError):
        return str(leaf)
    chain: list[BaseException] = []
    current: BaseException | None = leaf
    while current is not None and len(chain) < 10:
        chain.append(current)
        current = current.__cause__ or current.__context__
    for item in chain:
        if isinstance(item, ProtocolError) or "invalid data from the server" in str(item):
            return (
                "the server does not speak the Redis protocol (is the URL's host and port a "
                f"Redis server?): {leaf}"
            )
    for item in chain:
        if isinstance(item, ResponseError):
            code = item.code
            if code in ("WRONGPASS", "NOAUTH"):
                return (
                    f"Redis refused the credentials ({item.message}): check the user and "
                    "password in the URL"
                )
            if code == "NOPERM":
                return f"Redis denied a command to this user (ACL): {item.message}"
            return f"Redis answered an error: {item.message}"
    return str(leaf) or type(leaf).__name__


def check_url(url: str) -> str:
    """Raise :class:`UsageError` if ``url`` is not a Redis URL pulse-trio understands."""
    try:
        parse_url(url)
    except ValueError as exc:
        raise UsageError(f"invalid Redis URL {redact(url)!r}: {exc}") from exc
    return url


@contextlib.asynccontextmanager
async def connected(url: str) -> AsyncIterator[pulse_trio.Client]:
    """An open client for ``url``, after checking that the server answers as Redis does.

    Raises:
        CliError: The server cannot be reached, refuses the credentials, or is not Redis.
    """
    check_url(url)
    where = redact(url)
    entered = False
    try:
        async with pulse_trio.connect(url) as client:
            entered = True
            await _check_is_redis(client, where)
            yield client
    except CliError:
        raise
    except Exception as exc:
        if entered:
            raise
        message = describe(exc)
        if isinstance(exc, pulse_trio.RedisUnavailableError) and not message.startswith(
            "the server does not"
        ):
            raise CliError(f"cannot reach Redis at {where}: {exc}") from exc
        raise CliError(f"{where}: {message}") from exc


async def _check_is_redis(client: pulse_trio.Client, where: str) -> None:
    try:
        with anyio.fail_after(CONNECT_TIMEOUT):
            pong = await client.execute("PING")
    except TimeoutError as exc:
        raise CliError(f"{where} does not answer PING: is it a Redis server?") from exc
    except Exception as exc:
        raise CliError(f"{where}: {describe(exc)}") from exc
    if pong not in (b"PONG", "PONG"):
        raise CliError(f"{where} is not a Redis server: it answered PING with {pong!r:.60}")


def add_backend_option(parser: argparse.ArgumentParser) -> None:
    """``--asyncio``: run on asyncio instead of Trio."""
    parser.add_argument(
        "--asyncio", action="store_true", help="run on asyncio instead of Trio (the default)"
    )


def run_async(args: argparse.Namespace, func: Callable[..., Awaitable[Any]], *params: Any) -> int:
    """Run ``func(*params)`` on Trio, or on asyncio with ``--asyncio``; return its status."""
    backend = "asyncio" if getattr(args, "asyncio", False) else "trio"
    status = anyio.run(func, *params, backend=backend)
    return int(status or 0)


def console(*, markup: bool = False) -> Any:
    """A rich console on stdout, wide enough for the tables when stdout is not a terminal.

    Emoji codes are never replaced, and markup is off unless ``markup`` (the text printed may
    hold names and values from Redis).
    """
    from rich.console import Console

    width = None
    if not sys.stdout.isatty():
        width = int(os.environ.get("COLUMNS") or 0) or max(shutil.get_terminal_size().columns, 120)
    return Console(file=sys.stdout, width=width, highlight=False, markup=markup, emoji=False)

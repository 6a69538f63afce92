"""``pulse-trio demo``: the user sign-up flow, with a map, a stream and a pool at once.

1. Feature flags live in a replicated map joined by three services (web, mailer,
   analytics); web flips ``welcome-mail`` on and the two others see it.
2. Web adds ``user.created`` events to a stream; an analytics reader sees every one, and an
   email sink of two instances shares them (each event goes to one instance, which acks it).
3. For each sign-up the email sink dispatches a welcome-mail job to a pool of two nodes;
   node ``a`` leaves half-way and its jobs move to node ``b``.

Everything is named with a unique prefix; against a server given by URL, every key the demo
created is removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
import attrs

import pulse_trio
from pulse_trio import admin, pool, rmap, streaming

from ._common import CliError, add_backend_option, check_url, connected, console, redact, run_async

#: The users who sign up.
USERS = ("ada", "grace", "alan", "edsger", "barbara", "donald")
#: Seconds any one step may take before the demo gives up (it takes well under one).
STEP_TIMEOUT = 20.0


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Add ``demo`` to the subcommands."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "demo",
        help="run the user sign-up flow: a replicated map, a stream and a worker pool at once",
        description="Run the user sign-up flow, narrated step by step: feature flags in a "
        "replicated map, user.created events in a stream read by an analytics reader and "
        "shared by two instances of an email sink, and welcome-mail jobs on a pool of two "
        "nodes, one of which leaves half-way. Without --redis-url (or PULSE_REDIS_URL) it "
        "starts a throwaway embedded server; with one, it names everything with a unique "
        "prefix and removes every key it created.",
    )
    parser.add_argument(
        "--pause",
        action="store_true",
        help="stop half-way, while both pool nodes run jobs, until Enter is pressed: time to "
        "run 'pulse-trio inspect' on the live deployment from another terminal",
    )
    add_backend_option(parser)
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace, url: str | None) -> int:
    """Run ``demo`` (the parsed arguments, the server's URL or ``None`` for an embedded one)."""
    if url is not None:
        check_url(url)
    return run_async(args, demo, url, "asyncio" if args.asyncio else "trio", args.pause)


class _Changes:
    """Wake waiters whenever shared demo state changes (no polling)."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = anyio.Event()

    async def wait_for(self, predicate: Callable[[], bool], what: str) -> None:
        with anyio.move_on_after(STEP_TIMEOUT):
            while not predicate():
                await self._event.wait()
            return
        raise CliError(f"demo: {what} did not happen within {STEP_TIMEOUT:g} s")


@attrs.define
class _Summary:
    flag_seen_ms: float = 0.0
    analytics_read: int = 0
    per_instance: dict[str, int] = attrs.field(factory=dict)
    pending_after: int = -1
    before: dict[str, list[str]] = attrs.field(factory=dict)
    moved: list[str] = attrs.field(factory=list)
    after: dict[str, list[str]] = attrs.field(factory=dict)
    removed_keys: int | None = None


async def demo(url: str | None, backend: str, pause: bool = False) -> int:
    """Run the demo against ``url`` (an embedded server when ``None``); with ``pause``, wait
    for a line on stdin half-way."""
    out = console(markup=True)
    started = time.monotonic()
    prefix = f"demo-{uuid.uuid4().hex[:8]}-"
    out.print(f"[bold]pulse-trio demo[/bold]: the user sign-up flow (on {backend})")
    async with contextlib.AsyncExitStack() as stack:
        embedded = url is None
        if url is None:
            out.print("starting an embedded Redis server (no --redis-url or PULSE_REDIS_URL)")
            url = await stack.enter_async_context(pulse_trio.embedded())
            out.print(f"  server at {url}")
        else:
            out.print(f"using {redact(url)}; every name starts with {prefix!r}")
        client = await stack.enter_async_context(connected(url))
        summary = _Summary()
        try:
            await _flow(client, prefix, summary, out, redact(url) if pause else None)
        except BaseException:
            with (
                anyio.CancelScope(shield=True),
                anyio.move_on_after(10),
                contextlib.suppress(Exception),
            ):
                await _clean(client, prefix)
            raise
        removed = await _clean(client, prefix)
        if not embedded:
            summary.removed_keys = removed
    _print_summary(out, summary, time.monotonic() - started)
    return 0


async def _clean(client: pulse_trio.Client, prefix: str) -> int:
    """Delete every key whose name holds ``prefix``; return how many."""
    keys = await client.scan_keys(f"*{prefix}*")
    for key in keys:
        await client.execute("DEL", key)
    return len(keys)


async def _flow(
    client: pulse_trio.Client, prefix: str, summary: _Summary, out: Any, pause_url: str | None
) -> None:
    changes = _Changes()
    running: dict[str, str] = {}  # job key -> node running it
    history: dict[str, list[str]] = {}  # job key -> nodes that ran it, in order
    handled: dict[str, int] = {}
    analytics_seen: list[str] = []

    def mailer(node_name: str) -> pool.JobHandler:
        async def send_welcome_mail(
            job: pool.Job, *, task_status: anyio.abc.TaskStatus[None]
        ) -> None:
            running[job.key] = node_name
            history.setdefault(job.key, []).append(node_name)
            changes.notify()
            task_status.started()
            try:
                await anyio.sleep_forever()  # a long-running job: follow-up mails...
            finally:
                if running.get(job.key) == node_name:
                    del running[job.key]
                changes.notify()

        return pool.job_tasks(send_welcome_mail)

    # --- 1. feature flags -----------------------------------------------------------------
    out.print("\n[bold]1. Feature flags in a replicated map[/bold]")
    flags_name = f"{prefix}flags"
    async with (
        rmap.join(client, flags_name) as web_flags,
        rmap.join(client, flags_name) as mailer_flags,
        rmap.join(client, flags_name) as analytics_flags,
        mailer_flags.subscribe() as mailer_changes,
        analytics_flags.subscribe() as analytics_changes,
    ):
        out.print(f"  web, mailer and analytics joined map {flags_name!r} (3 replicas)")
        await web_flags.set("welcome-mail", "off")
        t0 = time.monotonic()
        await web_flags.set("welcome-mail", "on")
        out.print("  web flips welcome-mail: off -> on")
        with anyio.fail_after(STEP_TIMEOUT):
            while mailer_flags.get("welcome-mail") != "on":
                await mailer_changes.__anext__()
            while analytics_flags.get("welcome-mail") != "on":
                await analytics_changes.__anext__()
        summary.flag_seen_ms = (time.monotonic() - t0) * 1000
        out.print(
            f"  mailer and analytics see welcome-mail={mailer_flags.get('welcome-mail')} "
            f"(local reads) after {summary.flag_seen_ms:.1f} ms, revision "
            f"{analytics_flags.revision}"
        )

        # --- 2. sign-ups on a stream ------------------------------------------------------
        out.print("\n[bold]2. user.created events on a stream[/bold]")
        users = streaming.Stream(client, f"{prefix}users")
        sink_name = f"{prefix}email"
        pool_name = f"{prefix}mail"
        async with (
            pool.open_node(client, pool_name) as node_b,
            pool.open_node(client, pool_name, client_only=True) as web_node,
            users.open_reader() as analytics,
            users.open_sink(sink_name, max_polled=1) as email_1,
            users.open_sink(sink_name, max_polled=1) as email_2,
            anyio.create_task_group() as tg,
        ):
            await node_b.add_worker(mailer("node-b"))
            async with pool.open_node(client, pool_name) as node_a:
                await node_a.add_worker(mailer("node-a"))
                out.print(
                    f"  analytics reads stream {users.name!r}; sink {sink_name!r} has two "
                    "instances, email-1 and email-2"
                )
                out.print(f"  pool {pool_name!r} has two nodes, node-a and node-b")

                async def read_analytics() -> None:
                    async for event in analytics:
                        analytics_seen.append(json.loads(event.payload)["user"])
                        changes.notify()

                async def send_emails(instance: str, sink: streaming.Sink) -> None:
                    async for event in sink:
                        user = json.loads(event.payload)["user"]
                        if mailer_flags.get("welcome-mail") == "on":
                            await web_node.dispatch_job(f"welcome:{user}", event.payload)
                        await sink.ack(event)
                        handled[user] = 1 if instance == "email-1" else 2
                        summary.per_instance[instance] = summary.per_instance.get(instance, 0) + 1
                        out.print(
                            f"    {instance} got user.created for {user}, dispatched "
                            f"welcome:{user} -> {running.get(f'welcome:{user}', '?')}, acked"
                        )
                        changes.notify()

                tg.start_soon(read_analytics)
                tg.start_soon(send_emails, "email-1", email_1)
                tg.start_soon(send_emails, "email-2", email_2)
                for user in USERS:
                    payload = json.dumps({"user": user, "email": f"{user}@example.com"})
                    await users.add("user.created", payload.encode())
                    await changes.wait_for(
                        functools.partial(handled.__contains__, user), f"handling {user}"
                    )
                await changes.wait_for(
                    lambda: len(analytics_seen) == len(USERS), "analytics reading every event"
                )
                summary.analytics_read = len(analytics_seen)
                out.print(f"  analytics read all {len(analytics_seen)} events")
                (info,) = await admin.streams(client, users.name)
                summary.pending_after = sum(s.pending for s in info.sinks)
                split = ", ".join(f"{k}: {v}" for k, v in sorted(summary.per_instance.items()))
                out.print(
                    f"  email sink split: {split}; pending after acks: {summary.pending_after}"
                )

                # --- 3. the pool: node-a leaves half-way ------------------------------------
                out.print("\n[bold]3. Welcome-mail jobs on a pool of two nodes[/bold]")
                await changes.wait_for(lambda: len(running) == len(USERS), "every job running")
                summary.before = _by_node(running)
                for node_name, keys in summary.before.items():
                    out.print(f"  {node_name} runs {len(keys)}: {', '.join(keys)}")
                if pause_url is not None:
                    out.print(
                        "\n  [bold]paused[/bold]: the deployment is live; from another terminal "
                        f"run\n    pulse-trio inspect --redis-url {pause_url}\n"
                        "  then press Enter to continue"
                    )
                    await anyio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
                out.print("  node-a leaves the pool (its block ends) ...")
            # node-a left: its jobs were stopped there and started again on node-b.
            await changes.wait_for(
                lambda: len(running) == len(USERS) and set(running.values()) == {"node-b"},
                "the jobs moving to node-b",
            )
            summary.after = _by_node(running)
            summary.moved = sorted(
                k for k, nodes in history.items() if nodes[:2] == ["node-a", "node-b"]
            )
            for key in summary.moved:
                out.print(f"    {key}: node-a -> node-b")
            out.print(f"  node-b now runs all {len(running)} jobs")
            out.print("  shutting the pool down (every job stopped, pool state removed)")
            await web_node.shutdown()
            tg.cancel_scope.cancel()
        await web_flags.destroy()
        await users.destroy()


def _by_node(running: dict[str, str]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for key, node in sorted(running.items()):
        grouped.setdefault(node, []).append(key)
    return dict(sorted(grouped.items()))


def _print_summary(out: Any, summary: _Summary, elapsed: float) -> None:
    from rich.table import Table

    table = Table(title="summary", title_justify="left", title_style="bold")
    table.add_column("package")
    table.add_column("what happened")
    table.add_row(
        "rmap",
        f"welcome-mail flipped on by web, seen by 2 other replicas in "
        f"{summary.flag_seen_ms:.1f} ms",
    )
    split = ", ".join(f"{k} {v}" for k, v in sorted(summary.per_instance.items()))
    table.add_row(
        "streaming",
        f"{len(USERS)} user.created events; analytics read {summary.analytics_read}; "
        f"email sink: {split}; {summary.pending_after} pending",
    )
    before = ", ".join(f"{k} {len(v)}" for k, v in summary.before.items())
    after = ", ".join(f"{k} {len(v)}" for k, v in summary.after.items())
    table.add_row(
        "pool",
        f"{len(USERS)} jobs: {before}; node-a left, {len(summary.moved)} moved; {after}",
    )
    if summary.removed_keys is not None:
        table.add_row("cleanup", f"{summary.removed_keys} leftover keys removed")
    out.print()
    out.print(table)
    out.print(f"done in {elapsed:.1f} s")

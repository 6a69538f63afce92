"""Feature flags in a replicated map, with change notifications (``m.subscribe()``).

Run it with ``python examples/feature_flags.py`` (an embedded server), or against your own
server with ``--redis-url redis://localhost:6379/0`` (or ``PULSE_REDIS_URL``).

An admin tool flips flags; a service holds its own replica, reads flags locally on every
request (no Redis round trip) and is woken by its subscription after each change, with the
kind of change (``CHANGE``, ``DELETE``, ``RESET``). A subscriber that falls behind gets one
event for several changes, so it re-reads the map when woken rather than trusting a count.
"""

from __future__ import annotations

import anyio
import anyio.abc
from _server import example_client

from pulse_trio import rmap


async def service(
    flags: rmap.Map,
    reacted: anyio.abc.ObjectSendStream[dict[str, str]],
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """React to every change of ``flags``: re-read them and reconfigure."""
    async with flags.subscribe() as changes, reacted:
        task_status.started()
        async for kind in changes:
            now = flags.map()  # a local read
            checkout = "new" if flags.get("new-checkout") == "on" else "old"
            print(f"  service woken ({kind.name}): flags {now} -> {checkout} checkout")
            await reacted.send(now)


async def main() -> None:
    """Flip flags from an admin replica; watch a service replica react."""
    async with example_client("feature_flags") as client:
        name = "feature_flags:flags"
        reacted_send, reacted = anyio.create_memory_object_stream[dict[str, str]]()
        async with (
            rmap.join(client, name) as admin,
            rmap.join(client, name) as service_flags,
            reacted,
            anyio.create_task_group() as tg,
        ):
            await tg.start(service, service_flags, reacted_send)

            async def step(what: str) -> None:
                print(f"admin: {what}")
                await reacted.receive()  # until the service has reacted

            await admin.set("new-checkout", "on")
            await step("turn new-checkout on")
            await admin.set("dark-mode", "beta-users")
            await step("roll dark-mode out to beta users")
            found = await admin.test_and_set("dark-mode", "beta-users", "everyone")
            await step(f"dark-mode: {found} -> everyone (only if still {found})")
            await admin.delete("new-checkout")
            await step("remove new-checkout")
            await admin.reset()
            await step("kill switch: reset every flag")
            await admin.destroy()
            tg.cancel_scope.cancel()  # stop the service
        print(f"the service reacted to each change; its flags now: {service_flags.map()}")


if __name__ == "__main__":
    anyio.run(main, backend="trio")

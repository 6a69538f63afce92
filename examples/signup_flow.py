"""The user sign-up flow: a replicated map, a stream with a reader and a sink, a worker pool.

Run it with ``python examples/signup_flow.py`` (an embedded server), or against your own
server with ``--redis-url redis://localhost:6379/0`` (or ``PULSE_REDIS_URL``).

- Feature flags live in a replicated map: the ``welcome-mail`` flag is read locally.
- Each sign-up adds a ``user.created`` event to the ``users`` stream.
- An analytics **reader** counts every sign-up (readers see every event).
- An email **sink** takes each event once, queues a welcome mail if the flag is on, and
  acknowledges the event.
- Welcome mails are **jobs** of a pool, keyed by user so that a user never gets two, and run
  by its workers.
"""

from __future__ import annotations

import anyio
import anyio.abc
from _server import example_client

from pulse_trio import Client, pool, rmap, streaming

USERS = ["ada", "grace", "alan", "linus"]


class SignupFlow:
    """The services of the flow, and the channel that tells ``main`` what happened."""

    def __init__(
        self, flags: rmap.Map, mailer: pool.Node, done: anyio.abc.ObjectSendStream[str]
    ) -> None:
        self.flags = flags
        self.mailer = mailer
        self.done = done

    async def analytics(self, reader: streaming.Reader) -> None:
        """Count sign-ups: a reader sees every event."""
        count = 0
        async for event in reader:
            count += 1
            print(f"  analytics: sign-up #{count}: {event.payload.decode()}")

    async def emails(self, sink: streaming.Sink) -> None:
        """Queue a welcome mail per new user (if the flag is on), then acknowledge."""
        async for event in sink:
            user = event.payload.decode()
            if self.flags.get("welcome-mail") == "on":  # a local read
                await self.mailer.dispatch_job(f"welcome:{user}", event.payload)
                print(f"  emails: queued the welcome mail of {user}")
            else:
                print(f"  emails: welcome-mail is off, nothing for {user}")
            await sink.ack(event)
            await self.done.send(f"handled {user}")

    async def welcome_mail(self, job: pool.Job, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """A pool job: send one welcome mail; returning finishes the job."""
        task_status.started()
        await anyio.sleep(0.01)  # talk to the mail server
        print(f"  mail worker: sent the welcome mail of {job.payload.decode()}")
        await self.done.send(f"mailed {job.payload.decode()}")


async def sign_up(
    users: streaming.Stream, flags: rmap.Map, done: anyio.abc.ObjectReceiveStream[str], *names: str
) -> None:
    """Add a ``user.created`` event per name; wait until the flow handled them all."""
    for name in names:
        await users.add("user.created", name.encode())
    mails = len(names) if flags.get("welcome-mail") == "on" else 0
    with anyio.fail_after(10):
        for _ in range(len(names) + mails):
            await done.receive()


async def run(client: Client) -> None:
    """Wire the three packages together and sign four users up."""
    users = streaming.Stream(client, "signup:users")
    done_send, done = anyio.create_memory_object_stream[str](len(USERS) * 2)
    async with (
        done_send,
        done,
        rmap.join(client, "signup:flags") as flags,
        pool.open_node(client, "signup:mail") as mailer,
        users.open_reader() as reader,
        users.open_sink("signup:emails") as sink,
        anyio.create_task_group() as tg,
    ):
        flow = SignupFlow(flags, mailer, done_send)
        for _ in range(2):
            await mailer.add_worker(pool.job_tasks(flow.welcome_mail))
        tg.start_soon(flow.analytics, reader)
        tg.start_soon(flow.emails, sink)

        await flags.set_and_wait("welcome-mail", "on")
        print("flag welcome-mail=on; three users sign up:")
        await sign_up(users, flags, done, *USERS[:3])
        await flags.set_and_wait("welcome-mail", "off")
        print("flag welcome-mail=off; one more user signs up:")
        await sign_up(users, flags, done, *USERS[3:])

        (emails,) = (await users.info()).sinks
        print(
            f"done: {len(USERS)} sign-ups, {sink.statistics().acked} acknowledged by the sink "
            f"({emails.pending} pending), jobs left in the pool: {await mailer.job_keys()}"
        )
        await flags.destroy()
        tg.cancel_scope.cancel()  # stop the reader and the sink
    await users.destroy()


async def main() -> None:
    """Run the flow on the example's server."""
    async with example_client("signup") as client:
        await run(client)


if __name__ == "__main__":
    anyio.run(main, backend="trio")

"""Read-only snapshots of what a live deployment holds: pools, streams and maps.

Everything is found by ``SCAN`` (never ``KEYS``), on every primary of a Redis Cluster, and
read with plain read commands: nothing here writes to Redis, joins a map or registers a
consumer, so it is safe to run against production. The ``pulse-trio inspect`` command
prints these snapshots; programs, dashboards and metrics exporters can use them too::

    async with pulse_trio.connect(url) as client:
        for pool in await admin.pools(client):
            print(pool.name, len(pool.workers), pool.queued)

What is recognised:

- **pools** of pulse-trio (keys ``pulse-trio:pool:{<name>}:*``, see
  ``docs/pool-protocol.md``) and of goa.design/pulse (its replicated maps
  ``map:<name>:workers:content``, ``map:<name>:worker-keepalive:content``, ...);
- **streams** (``pulse:stream:<name>``, goa.design/pulse's layout, shared by both) with
  their sinks (consumer groups); a stream whose entries carry ``original_stream`` and
  ``sink`` fields is a dead-letter stream, and its entries are counted against the sink
  that gave up on them;
- **maps** (``map:<name>:content``, goa.design/pulse's layout, shared by both).

A snapshot is a set of reads taken one after the other, not an atomic picture: a value read
late may reflect a change that an earlier read missed.
"""

from ._admin import JSON_VERSION as JSON_VERSION
from ._admin import MAX_DEAD_LETTERS_READ as MAX_DEAD_LETTERS_READ
from ._admin import ConsumerSnapshot as ConsumerSnapshot
from ._admin import JobSnapshot as JobSnapshot
from ._admin import Kind as Kind
from ._admin import MapSnapshot as MapSnapshot
from ._admin import NodeSnapshot as NodeSnapshot
from ._admin import PoolSnapshot as PoolSnapshot
from ._admin import SinkSnapshot as SinkSnapshot
from ._admin import Snapshot as Snapshot
from ._admin import StreamSnapshot as StreamSnapshot
from ._admin import WorkerSnapshot as WorkerSnapshot
from ._admin import maps as maps
from ._admin import pools as pools
from ._admin import snapshot as snapshot
from ._admin import streams as streams
from ._admin import to_json as to_json

__all__ = (
    "JSON_VERSION",
    "MAX_DEAD_LETTERS_READ",
    "ConsumerSnapshot",
    "JobSnapshot",
    "Kind",
    "MapSnapshot",
    "NodeSnapshot",
    "PoolSnapshot",
    "SinkSnapshot",
    "Snapshot",
    "StreamSnapshot",
    "WorkerSnapshot",
    "maps",
    "pools",
    "snapshot",
    "streams",
    "to_json",
)

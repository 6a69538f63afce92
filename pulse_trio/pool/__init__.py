"""Worker pools: jobs routed by key to long-running workers, with failover.

A pool is a name; processes join it with :func:`open_node`. Nodes run workers, each with a
:class:`JobHandler` (or :func:`job_tasks` for jobs that are tasks). A job is a unique key and
a payload; it is routed by rendezvous hashing to one worker, runs until it is stopped, and
moves (stopped first) when workers come and go. See ``docs/pool-protocol.md``.
"""

from ._errors import DispatchTimeoutError as DispatchTimeoutError
from ._errors import InvalidJobKeyError as InvalidJobKeyError
from ._errors import JobExistsError as JobExistsError
from ._errors import JobNotFoundError as JobNotFoundError
from ._errors import JobStartError as JobStartError
from ._errors import JobStopError as JobStopError
from ._errors import NotificationError as NotificationError
from ._errors import PoolClosedError as PoolClosedError
from ._errors import PoolError as PoolError
from ._errors import PoolShuttingDownError as PoolShuttingDownError
from ._errors import QueueFullError as QueueFullError
from ._node import Node as Node
from ._node import NodeStatistics as NodeStatistics
from ._node import open_node as open_node
from ._protocol import Job as Job
from ._protocol import JobInfo as JobInfo
from ._ticker import JobPlan as JobPlan
from ._ticker import JobProducer as JobProducer
from ._ticker import Tick as Tick
from ._ticker import Ticker as Ticker
from ._worker import JobHandler as JobHandler
from ._worker import Worker as Worker
from ._worker import WorkerInfo as WorkerInfo
from ._worker import job_tasks as job_tasks

__all__ = (
    "DispatchTimeoutError",
    "InvalidJobKeyError",
    "Job",
    "JobExistsError",
    "JobHandler",
    "JobInfo",
    "JobNotFoundError",
    "JobPlan",
    "JobProducer",
    "JobStartError",
    "JobStopError",
    "Node",
    "NodeStatistics",
    "NotificationError",
    "PoolClosedError",
    "PoolError",
    "PoolShuttingDownError",
    "QueueFullError",
    "Tick",
    "Ticker",
    "Worker",
    "WorkerInfo",
    "job_tasks",
    "open_node",
)

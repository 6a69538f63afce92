"""Hypothesis strategies for the values pulse-trio takes: names, keys, values, payloads.

Each ``*s()`` function returns a strategy of values pulse-trio accepts, biased towards the
boundaries (the longest names, non-ASCII text, characters next to the forbidden ones); each
``invalid_*()`` function returns a strategy of values it refuses with a clear error before
any I/O. The rules:

- **names** of maps, streams, sinks and pools (:func:`names`), **event names**
  (:func:`event_names`) and **topics** (:func:`topics`): strict UTF-8 text (no surrogate);
  names are 1 to 512 characters, none of space, NUL, ``*``, ``?``, ``[``, ``]``;
- **map keys** (:func:`map_keys`): non-empty, no ``=``; **map values** (:func:`map_values`)
  and **job keys** (:func:`job_keys`, 1 to 1024 characters, no NUL): any text that survives
  ``s.encode("utf-8", "surrogateescape").decode("utf-8", "surrogateescape")``, so also the
  text Python makes of undecodable bytes (``os.fsdecode`` style);
- **payloads** (:func:`payloads`): any ``bytes``.

Requires Hypothesis (the ``testing`` extra).
"""

from ._strategies import FORBIDDEN_IN_NAMES as FORBIDDEN_IN_NAMES
from ._strategies import MAX_JOB_KEY_LENGTH as MAX_JOB_KEY_LENGTH
from ._strategies import MAX_NAME_LENGTH as MAX_NAME_LENGTH
from ._strategies import event_names as event_names
from ._strategies import invalid_event_names as invalid_event_names
from ._strategies import invalid_job_keys as invalid_job_keys
from ._strategies import invalid_map_keys as invalid_map_keys
from ._strategies import invalid_map_values as invalid_map_values
from ._strategies import invalid_names as invalid_names
from ._strategies import invalid_topics as invalid_topics
from ._strategies import job_keys as job_keys
from ._strategies import map_keys as map_keys
from ._strategies import map_values as map_values
from ._strategies import names as names
from ._strategies import payloads as payloads
from ._strategies import round_trips as round_trips
from ._strategies import topics as topics

__all__ = (
    "FORBIDDEN_IN_NAMES",
    "MAX_JOB_KEY_LENGTH",
    "MAX_NAME_LENGTH",
    "event_names",
    "invalid_event_names",
    "invalid_job_keys",
    "invalid_map_keys",
    "invalid_map_values",
    "invalid_names",
    "invalid_topics",
    "job_keys",
    "map_keys",
    "map_values",
    "names",
    "payloads",
    "round_trips",
    "topics",
)

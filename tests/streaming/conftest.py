"""Helpers shared by the streaming tests (they live in tests/_util.py; re-exported here)."""

from __future__ import annotations

from .._util import collecting as collecting
from .._util import names as names
from .._util import wait_count as wait_count
from .._util import wait_until as wait_until
from .._util import wait_until_async as wait_until_async

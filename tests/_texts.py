"""Hypothesis strategies for text fields: lone surrogates, control characters, non-BMP
characters, next to ordinary text; and the offline check that a refusal happens before any
I/O."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

import pulse_trio

#: One character of a field under test: mostly ordinary text (so that accepted values are
#: generated too), and every kind that a rule must decide on.
CHARACTERS = st.one_of(
    st.characters(codec="utf-8", exclude_characters=" \0*?[]="),  # ordinary, any plane
    st.integers(0xD800, 0xDBFF).map(chr),  # lone high surrogates: stand for no bytes
    st.integers(0xDC80, 0xDCFF).map(chr),  # surrogate escapes: stand for one byte each
    st.integers(0xDC00, 0xDFFF).map(chr),  # low surrogates, some not escapes
    st.integers(0x00, 0x1F).map(chr),  # control characters
    st.integers(0x10000, 0x10FFFF).map(chr),  # non-BMP
    st.sampled_from(["é", "\u2028", "\ufeff", "\ud83d\ude00", "\udcc3\udca9", "😀"]),
)
TEXT = st.lists(CHARACTERS, min_size=1, max_size=8).map("".join)
#: Several values per example: one Redis set-up serves them all.
TEXTS = st.lists(TEXT, min_size=1, max_size=8)
#: Values every rule must decide on, always tried (``@example``).
EDGES = [
    "\ud800",  # lone high surrogate (issue 20)
    "\udcff",  # the escape of byte 0xff: lossless, not strict
    "\udcc3\udca9",  # escapes that spell "é": would read back as other text
    "\ud83d\ude00",  # a surrogate pair kept as two code points
    "😀",
    "tab\there",
    "é\u2028",
]

#: Hypothesis settings for tests that talk to Redis: few examples (each does real I/O), no
#: deadline (a loaded machine), the function-scoped client fixture shared by the examples.
REDIS_SETTINGS = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


async def refused_before_io(call: Callable[[], Awaitable[Any]]) -> ValueError | None:
    """Run ``call`` against an offline client (see ``tests._util.offline_client``): the
    ``ValueError`` it raised (so before any I/O), or ``None`` if it went on to I/O (the
    offline client's ``AssertionError``) or to a check that comes after validation."""
    try:
        await call()
    except ValueError as exc:
        return exc
    except AssertionError as exc:
        if "asked to talk to Redis" not in str(exc):
            raise
        return None
    except pulse_trio.ClosedError:
        return None  # validation passed; the object is not open (no I/O either)
    raise AssertionError("the offline call neither failed validation nor reached I/O")


def escaped(value: str) -> bytes:
    """The bytes a text value is stored as (the inverse of reading it)."""
    return value.encode("utf-8", "surrogateescape")

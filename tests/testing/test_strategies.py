"""pulse_trio.testing.strategies generate what the library accepts, and what it refuses; the
package imports neither pytest nor Hypothesis unless asked."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, settings

import pulse_trio
from pulse_trio._names import validate_name
from pulse_trio.pool._protocol import validate_key as validate_job_key
from pulse_trio.rmap._errors import validate_key as validate_map_key
from pulse_trio.testing import strategies


@settings(max_examples=200)
@given(strategies.names())
def test_names_are_valid_strict_utf8(name: str) -> None:
    assert validate_name("map", name) == name
    name.encode("utf-8")  # strict: no surrogate


@settings(max_examples=200)
@given(strategies.invalid_names())
def test_invalid_names_are_refused_or_not_utf8(name: object) -> None:
    try:
        validate_name("map", name)
    except pulse_trio.InvalidNameError:
        return
    assert isinstance(name, str)
    with pytest.raises(UnicodeEncodeError):
        name.encode("utf-8")


@settings(max_examples=200)
@given(strategies.map_keys(), strategies.map_values(), strategies.job_keys())
def test_keys_and_values_round_trip(key: str, value: str, job_key: str) -> None:
    assert validate_map_key(key) == key
    assert validate_job_key(job_key) == job_key
    for text in (key, value, job_key):
        assert strategies.round_trips(text)


@settings(max_examples=200)
@given(strategies.invalid_map_keys(), strategies.invalid_job_keys())
def test_invalid_keys_break_a_rule(key: object, job_key: object) -> None:
    assert not (isinstance(key, str) and key and "=" not in key and strategies.round_trips(key)), (
        key
    )
    assert not (
        isinstance(job_key, str)
        and 1 <= len(job_key) <= strategies.MAX_JOB_KEY_LENGTH
        and "\x00" not in job_key
        and strategies.round_trips(job_key)
    ), job_key


@given(strategies.event_names(), strategies.topics(), strategies.payloads())
def test_event_fields(name: str, topic: str, payload: bytes) -> None:
    name.encode("utf-8")
    assert topic
    topic.encode("utf-8")
    assert isinstance(payload, bytes)


def test_names_rejects_a_bad_bound() -> None:
    with pytest.raises(ValueError, match="max_size"):
        strategies.names(max_size=0)


def test_the_package_needs_neither_pytest_nor_hypothesis() -> None:
    code = (
        "import sys, pulse_trio.testing; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('hypothesis', '_pytest')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]", out.stdout

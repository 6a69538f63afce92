"""The text rule of maps (see ``pulse_trio._names``): map names are strict UTF-8; keys,
values and list items are lossless text. Generated text with lone surrogates, control and
non-BMP characters is either refused with a ``ValueError`` before any I/O, or written and
read back identical (by the writer's replica, through the notification, and by a new one)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import example, given

from pulse_trio import InvalidNameError, rmap
from pulse_trio._names import is_lossless_text, is_strict_text
from pulse_trio.rmap._ops import MapOps
from pulse_trio.rmap._protocol import content_key

from .._texts import EDGES, REDIS_SETTINGS, TEXTS, escaped, refused_before_io
from .._util import offline_client

pytestmark = pytest.mark.anyio


def _with_edges(values: list[str]) -> list[str]:
    return [*values, *EDGES]


@REDIS_SETTINGS
@given(TEXTS)
@example([])
async def test_keys_and_values(client: Any, unique: str, values: list[str]) -> None:
    unique += uuid.uuid4().hex[:6]  # one map per example
    offline = MapOps.create(offline_client(), "m")
    async with rmap.join(client, unique) as m:
        for i, value in enumerate(_with_edges(values)):
            key = f"k{i}-{value}"
            refused_key = await refused_before_io(lambda: offline.set(key, "v"))  # noqa: B023
            refused_value = await refused_before_io(lambda: offline.set("k", value))  # noqa: B023
            assert (refused_key is None) == ("=" not in key and is_lossless_text(key))
            assert (refused_value is None) == is_lossless_text(value)
            if refused_key is not None:
                assert isinstance(refused_key, rmap.InvalidKeyError)
                with pytest.raises(rmap.InvalidKeyError):
                    await m.set(key, "v")
                assert m.get(key) is None
            if refused_value is not None:
                assert isinstance(refused_value, rmap.InvalidValueError)
                with pytest.raises(rmap.InvalidValueError):
                    await m.set("k", value)
                continue
            if refused_key is None:
                await m.set_and_wait(key, value)
                assert m.get(key) == value  # through the notification
                stored = await client.hget(content_key(unique), escaped(key))
                assert stored == escaped(value)
    async with rmap.join(client, unique) as fresh:  # through a full read (HGETALL)
        for i, value in enumerate(_with_edges(values)):
            key = f"k{i}-{value}"
            expected = value if "=" not in key and is_lossless_text(key + value) else None
            assert fresh.get(key) == expected


@REDIS_SETTINGS
@given(TEXTS)
async def test_list_items(client: Any, unique: str, values: list[str]) -> None:
    unique += uuid.uuid4().hex[:6]  # one map per example
    offline = MapOps.create(offline_client(), "m")
    async with rmap.join(client, unique) as m:
        for i, value in enumerate(_with_edges(values)):
            key = f"list{i}"
            refused = await refused_before_io(
                lambda: offline.append(key, ("a", value), unique=False)  # noqa: B023
            )
            assert (refused is None) == is_lossless_text(value)
            if refused is not None:
                assert isinstance(refused, rmap.InvalidValueError)
                with pytest.raises(rmap.InvalidValueError):
                    await m.append_values(key, "a", value)
                assert m.get(key) is None
                continue
            assert await m.append_values(key, "a", value) == ["a", value]
            assert await m.remove_values(key, "a") == ([value], True)


@REDIS_SETTINGS
@given(TEXTS)
async def test_map_names(client: Any, unique: str, values: list[str]) -> None:
    unique += uuid.uuid4().hex[:6]  # new maps per example
    for i, value in enumerate(_with_edges(values)):
        name = f"{unique}{i}{value}"
        try:
            rmap.join(offline_client(), name)  # validates, no I/O
        except InvalidNameError:
            assert not (is_strict_text(name) and not set(name) & set(" \0*?[]"))
            continue
        assert is_strict_text(name)
        async with rmap.join(client, name) as m:
            await m.set_and_wait("k", "v")
        assert await client.hget(content_key(name).encode(), b"k") == b"v"
        async with rmap.join(client, name) as again:
            assert again.get("k") == "v"

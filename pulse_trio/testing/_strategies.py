"""The implementation of :mod:`pulse_trio.testing.strategies` (see its docstring)."""

from __future__ import annotations

from hypothesis import strategies as st

#: Longest map, stream, sink or pool name, in characters.
MAX_NAME_LENGTH = 512
#: Longest job key, in characters.
MAX_JOB_KEY_LENGTH = 1024
#: Characters a name may not contain.
FORBIDDEN_IN_NAMES = " \x00*?[]"

_ENCODABLE = st.characters(exclude_categories=["Cs"])  # no surrogate: strict UTF-8
_NAME_CHARS = st.characters(exclude_categories=["Cs"], exclude_characters=FORBIDDEN_IN_NAMES)
_BOUNDARY_NAME_CHARS = st.sampled_from(
    ["a", "Z", "0", "-", "_", ":", "/", "{", "}", "!", "\t", "\x7f", "é", "€", "\U0001f600"]
)


def _escaped_bytes(min_size: int = 0, max_size: int | None = None) -> st.SearchStrategy[str]:
    """Text Python makes of arbitrary bytes (``surrogateescape``): round-trips exactly."""
    return st.binary(min_size=min_size, max_size=max_size).map(
        lambda raw: raw.decode("utf-8", "surrogateescape")
    )


def round_trips(text: str) -> bool:
    """Whether ``text`` survives ``encode("utf-8", "surrogateescape")`` and back unchanged."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "surrogateescape") == text
    except UnicodeError:
        return False


def names(*, max_size: int = MAX_NAME_LENGTH) -> st.SearchStrategy[str]:
    """Valid names of maps, streams, sinks and pools, boundaries included.

    Args:
        max_size: Longest name to generate (at most 512). A stream's sink names and a
            map's derived names add a few characters: pass less to leave room.
    """
    if not 1 <= max_size <= MAX_NAME_LENGTH:
        raise ValueError(f"max_size must be 1 to {MAX_NAME_LENGTH}, got {max_size!r}")
    return st.one_of(
        st.text(_BOUNDARY_NAME_CHARS, min_size=1, max_size=min(max_size, 12)),
        st.text(_NAME_CHARS, min_size=1, max_size=min(max_size, 40)),
        st.builds(lambda c: c * max_size, _BOUNDARY_NAME_CHARS),  # the longest
    )


def invalid_names() -> st.SearchStrategy[object]:
    """Names every entry point refuses: empty, too long, a forbidden character, a
    surrogate (not UTF-8), or not a ``str``."""
    return st.one_of(
        st.just(""),
        st.builds(lambda c: c * (MAX_NAME_LENGTH + 1), _BOUNDARY_NAME_CHARS),
        st.builds(
            lambda head, bad, tail: head + bad + tail,
            st.text(_NAME_CHARS, max_size=5),
            st.sampled_from(FORBIDDEN_IN_NAMES),
            st.text(_NAME_CHARS, max_size=5),
        ),
        st.builds(lambda head: head + "\udc80", st.text(_NAME_CHARS, max_size=5)),
        st.sampled_from([None, 1, b"name"]),
    )


def event_names(*, max_size: int = 64) -> st.SearchStrategy[str]:
    """Valid event names: any strict UTF-8 text (the empty string too)."""
    return st.text(_ENCODABLE, max_size=max_size)


def invalid_event_names() -> st.SearchStrategy[object]:
    """Event names refused: text with a surrogate (not UTF-8), or not a ``str``."""
    return st.one_of(
        st.builds(lambda head: head + "\ud800", st.text(_ENCODABLE, max_size=5)),
        st.sampled_from([None, b"created"]),
    )


def topics(*, max_size: int = 64) -> st.SearchStrategy[str]:
    """Valid topics: non-empty strict UTF-8 text (``None``, not ``""``, means no topic)."""
    return st.text(_ENCODABLE, min_size=1, max_size=max_size)


def invalid_topics() -> st.SearchStrategy[object]:
    """Topics refused: text with a surrogate (not UTF-8), or not a ``str``."""
    return st.one_of(
        st.builds(lambda head: head + "\udcff", st.text(_ENCODABLE, max_size=5)),
        st.sampled_from([1, b"topic"]),
    )


def payloads(*, max_size: int = 256) -> st.SearchStrategy[bytes]:
    """Payloads of events and jobs: any ``bytes`` (empty, NUL, invalid UTF-8)."""
    return st.binary(max_size=max_size)


def map_keys(*, max_size: int = 32) -> st.SearchStrategy[str]:
    """Valid map keys: non-empty, no ``=``, surviving the ``surrogateescape`` round trip."""
    return st.one_of(
        st.text(_ENCODABLE, min_size=1, max_size=max_size),
        _escaped_bytes(min_size=1, max_size=max_size),
    ).filter(lambda key: "=" not in key)


def invalid_map_keys() -> st.SearchStrategy[object]:
    """Map keys refused: empty, containing ``=``, not round-tripping (a lone high
    surrogate, or escaped bytes that decode to other text), or not a ``str``."""
    return st.one_of(
        st.just(""),
        st.builds(lambda head, tail: head + "=" + tail, map_keys(), st.text(max_size=3)),
        st.sampled_from(["\ud800", "x\udcc3\udca9"]),
        st.sampled_from([None, 3, b"key"]),
    )


def map_values(*, max_size: int = 64) -> st.SearchStrategy[str]:
    """Valid map values: any text surviving the ``surrogateescape`` round trip (empty too)."""
    return st.one_of(
        st.text(_ENCODABLE, max_size=max_size),
        _escaped_bytes(max_size=max_size),
    )


def invalid_map_values() -> st.SearchStrategy[object]:
    """Map values refused: not round-tripping, or not a ``str``."""
    return st.one_of(
        st.sampled_from(["\ud800", "v\udcc3\udca9"]),
        st.sampled_from([None, 1, b"value"]),
    )


def job_keys(*, max_size: int = 48) -> st.SearchStrategy[str]:
    """Valid job keys: 1 to 1024 characters, no NUL, surviving the ``surrogateescape``
    round trip (the longest key included).

    Args:
        max_size: Longest key among the random ones (the 1024-character key is always
            possible).
    """
    return st.one_of(
        st.text(_ENCODABLE, min_size=1, max_size=max_size),
        _escaped_bytes(min_size=1, max_size=max_size),
        st.just("k" * MAX_JOB_KEY_LENGTH),
    ).filter(lambda key: "\x00" not in key)


def invalid_job_keys() -> st.SearchStrategy[object]:
    """Job keys refused: empty, too long, with a NUL, not round-tripping, or not a ``str``."""
    return st.one_of(
        st.just(""),
        st.just("k" * (MAX_JOB_KEY_LENGTH + 1)),
        st.builds(lambda head: head + "\x00", st.text(_ENCODABLE, max_size=5)),
        st.sampled_from(["\ud800", "j\udcc3\udca9"]),
        st.sampled_from([None, 7, b"job"]),
    )

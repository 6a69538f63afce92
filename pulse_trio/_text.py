"""How bytes read from Redis become text: one named policy per purpose (pure, no I/O).

- :func:`text`: lossless (UTF-8, other bytes kept as surrogates), for everything that may be
  written back or compared with what another process wrote;
- :func:`strict_text`: UTF-8 or an error, for event names and topics (an entry whose name is
  not UTF-8 is malformed);
- :func:`display`: lossy and short, for log lines and error messages.
"""

from __future__ import annotations


def text(raw: bytes | str) -> str:
    """Decode what Redis returned, losslessly: UTF-8, other bytes kept as surrogates.

    The policy for everything that may be written back or compared with what another
    process wrote (map keys and values, stream and consumer names, event fields, ids):
    ``text(b).encode("utf-8", "surrogateescape") == b`` for any bytes ``b``.
    """
    if isinstance(raw, str):
        return raw
    return raw.decode("utf-8", "surrogateescape")


def optional_text(raw: bytes | str | None) -> str | None:
    """:func:`text`, with ``None`` kept as ``None``."""
    return None if raw is None else text(raw)


def display(raw: object, limit: int = 200) -> str:
    """Text for a log line or an error message: lossy (``\\ufffd`` for bad bytes), short."""
    shown = raw[:limit].decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)[:limit]
    return shown if len(shown) < limit else shown + "..."


def strict_text(raw: bytes | str) -> str:
    """Decode text that must be UTF-8 (event names and topics): bad bytes raise.

    Raises:
        UnicodeDecodeError: ``raw`` is not UTF-8; the caller reports the entry as malformed.
    """
    return raw if isinstance(raw, str) else raw.decode("utf-8")


def writable(message: str) -> str:
    """A message to store in Redis (an error text), as strict UTF-8: surrogates, which no
    bytes could carry or which would read back as other text, are written as ``\\udXXX``
    escapes. For text that is only shown, never compared."""
    try:
        message.encode("utf-8")
    except UnicodeEncodeError:
        return message.encode("utf-8", "backslashreplace").decode("utf-8")
    return message

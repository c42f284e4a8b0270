"""The dead-letter record: a bad input, kept byte for byte, with why and where it failed.

Format (the Kafka Connect DLQ convention: payload untouched, context in headers):

* **value**: the original message value, exactly (not re-encoded, not wrapped), so a reprocessor
  re-publishes it unchanged;
* **key**: the original key (so the DLQ keeps per-key order and a re-publish lands on the same
  partition);
* **headers**: the original headers, then ``wxsub.dlq.*`` context headers (UTF-8 values):
  ``reason`` (an ``InputReason``: the InputError's, or ``internal`` for any other exception),
  ``pointer`` (JSON pointer, may be empty), ``message``, ``error`` (exception class),
  ``stage`` (which agent or command), ``topic``, ``partition``, ``offset`` (the source message),
  ``time`` (RFC 3339 UTC when it was dead-lettered) and ``attempt`` (1, or one more than the
  source's own ``attempt`` when a re-published record fails again; older ``wxsub.dlq.*`` headers
  are replaced).

Re-publishing: ``parse_dead_letter(...).original()`` gives (topic, key, value, headers) of the
source message as it was.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import NamedTuple

from wxsub.errors import InputError, InputReason

__all__ = [
    "DLQ_TOPIC",
    "HEADER_PREFIX",
    "DeadLetter",
    "Headers",
    "dead_letter",
    "parse_dead_letter",
]

#: logical topic name (``KafkaSettings.topic(DLQ_TOPIC)`` is the real one)
DLQ_TOPIC = "dlq"
HEADER_PREFIX = "wxsub.dlq."
_MAX_MESSAGE_CHARS = 1000
# a foreign exception may quote a URL; never let a token or secret reach the DLQ
_SECRET_PARAM = re.compile(r"(access_token|secret|token|key)=[^&\s'\"]+", re.IGNORECASE)

Headers = Mapping[str, bytes] | Sequence[tuple[str, bytes]] | None


class DeadLetter(NamedTuple):
    """A parsed DLQ record."""

    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]  # the source's own headers, without wxsub.dlq.*
    topic: str
    partition: int
    offset: int
    reason: str
    pointer: str
    message: str
    error: str
    stage: str
    time: datetime
    attempt: int

    def original(self) -> tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]:
        """(topic, key, value, headers) to re-publish the source message unchanged."""
        headers = [*self.headers, (HEADER_PREFIX + "attempt", str(self.attempt).encode())]
        return self.topic, self.key, self.value, headers


def dead_letter(
    raw: bytes,
    headers: Headers,
    topic: str,
    partition: int,
    offset: int,
    error: BaseException,
    stage: str,
    *,
    key: bytes | None = None,
    now: datetime | None = None,
) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
    """(key, value, headers) of the DLQ record for message ``raw`` at ``topic/partition@offset``."""
    source = _as_list(headers)
    attempt = _int(_get(source, "attempt"), 0) + 1
    kept = [(k, v) for k, v in source if not k.startswith(HEADER_PREFIX)]
    if isinstance(error, InputError):
        reason, pointer, message = error.reason, error.pointer, error.detail
    else:
        reason, pointer = InputReason.INTERNAL, ""
        message = _SECRET_PARAM.sub(r"\1=***", f"{type(error).__name__}: {error}")
    when = (now or datetime.now(UTC)).astimezone(UTC)
    context = {
        "reason": reason,
        "pointer": pointer,
        "message": _shorten(message),
        "error": type(error).__name__,
        "stage": stage,
        "topic": topic,
        "partition": str(partition),
        "offset": str(offset),
        "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "attempt": str(attempt),
    }
    out = kept + [(HEADER_PREFIX + k, v.encode("utf-8")) for k, v in context.items()]
    return key, bytes(raw), out


def parse_dead_letter(value: bytes, headers: Headers, key: bytes | None = None) -> DeadLetter:
    """Read a DLQ record back (tests, tooling, reprocessors). Raises ValueError if not one."""
    all_headers = _as_list(headers)
    ctx = {
        k[len(HEADER_PREFIX) :]: v.decode("utf-8", "replace")
        for k, v in all_headers
        if k.startswith(HEADER_PREFIX)
    }
    missing = {"reason", "topic", "partition", "offset", "stage", "time"} - set(ctx)
    if missing:
        raise ValueError(f"not a wxsub DLQ record: no {HEADER_PREFIX}{sorted(missing)[0]} header")
    return DeadLetter(
        key=key,
        value=bytes(value),
        headers=[(k, v) for k, v in all_headers if not k.startswith(HEADER_PREFIX)],
        topic=ctx["topic"],
        partition=int(ctx["partition"]),
        offset=int(ctx["offset"]),
        reason=ctx["reason"],
        pointer=ctx.get("pointer", ""),
        message=ctx.get("message", ""),
        error=ctx.get("error", ""),
        stage=ctx["stage"],
        time=datetime.fromisoformat(ctx["time"]),
        attempt=_int(ctx.get("attempt"), 1),
    )


def _as_list(headers: Headers) -> list[tuple[str, bytes]]:
    if headers is None:
        return []
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(str(k), bytes(v) if v is not None else b"") for k, v in items]


def _get(headers: list[tuple[str, bytes]], name: str) -> str | None:
    for k, v in headers:
        if k == HEADER_PREFIX + name:
            return v.decode("utf-8", "replace")
    return None


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


def _shorten(message: str) -> str:
    if len(message) <= _MAX_MESSAGE_CHARS:
        return message
    return message[: _MAX_MESSAGE_CHARS - 1] + "…"

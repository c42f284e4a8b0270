"""A record of every WeChat API call the sandbox received, and counters over them.

End-to-end tests compare the sends recorded here with an oracle; ``counters`` answer questions
like "how many 40001s were served" (a token storm) or "how many stable_token force refreshes".
Records can also be appended to a JSONL file, one per line. Tokens and secrets are never kept.
The file is flushed ``FLUSH_S`` after the first record written since the last flush (when an
event loop runs; at once otherwise) and on close: a reader of the file (bench/latency.py) sees
a record at most that late, its ``time`` unchanged, and the sandbox makes one ``write`` call per
10 ms of calls instead of one per call.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import IO, Any

import orjson

__all__ = ["FLUSH_S", "CallRecord", "Recorder"]

FLUSH_S = 0.01  # the record file's flush delay (seconds)


@dataclass(frozen=True)
class CallRecord:
    """One call. ``errcode`` None: no reply was sent (reset or drop)."""

    seq: int
    time: float  # sandbox clock, seconds since the epoch
    endpoint: str  # token | stable_token | send | gettemplate | ... (faults.ENDPOINTS)
    appid: str | None = None
    openid: str | None = None
    template_id: str | None = None
    page: str | None = None
    data: Mapping[str, Any] | None = None
    miniprogram_state: str | None = None
    lang: str | None = None
    force_refresh: bool | None = None
    errcode: int | None = None  # what was, or would have been, answered
    errmsg: str | None = None
    msgid: int | None = None
    processed: bool = False  # the call took effect (a send: credit consumed, message sent)
    dropped: bool = False  # processed, but the connection was closed instead of answering
    reset: bool = False  # connection closed before processing: nothing happened
    fault: str | None = None  # injected fault name, if any
    latency_s: float = 0.0  # injected latency
    notify_type: int | None = None  # service-card calls (cards.py)
    notify_code: str | None = None
    content_json: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The fields as a dict (shallow: ``data`` is shared, as nothing changes it; a deep copy
        by ``dataclasses.asdict`` was ~20% of the sandbox's CPU per send)."""
        return {name: getattr(self, name) for name in _FIELD_NAMES}


_FIELD_NAMES = tuple(f.name for f in fields(CallRecord))
_FILTERS = ("endpoint", "appid", "openid", "template_id", "errcode", "dropped", "processed",
            "notify_code")  # fmt: skip


class Recorder:
    """Keeps records in memory (the last ``max_records`` if set) and optionally in a file."""

    def __init__(self, path: str | Path | None = None, max_records: int | None = None) -> None:
        self._records: deque[CallRecord] = deque(maxlen=max_records)
        self.counters: Counter[str] = Counter()
        self._seq = 0
        self._file: IO[bytes] | None = open(path, "ab") if path else None
        self._flush_due: asyncio.TimerHandle | None = None

    def add(self, **fields: Any) -> CallRecord:
        """Record a call (fields of :class:`CallRecord` but ``seq``) and count it."""
        self._seq += 1
        record = CallRecord(seq=self._seq, **fields)
        self._records.append(record)
        self._count(record)
        if self._file is not None:
            # orjson writes a dataclass as the dict ``to_json`` builds, without building it
            self._file.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
            self._flush_soon()
        return record

    def _flush_soon(self) -> None:
        if self._flush_due is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._flush()
            return
        self._flush_due = loop.call_later(FLUSH_S, self._flush)

    def _flush(self) -> None:
        self._flush_due = None
        if self._file is not None:
            self._file.flush()

    def _count(self, record: CallRecord) -> None:
        counters = self.counters
        counters[f"calls.{record.endpoint}"] += 1
        if record.endpoint == "stable_token" and record.force_refresh:
            counters["calls.stable_token.force"] += 1
        if record.errcode is not None:
            counters[f"errcode.{record.errcode}"] += 1
        for flag in ("dropped", "reset"):
            if getattr(record, flag):
                counters[flag] += 1
        if record.endpoint == "send" and record.processed:
            counters["sent"] += 1

    def calls(self, **filters: Any) -> list[CallRecord]:
        """Records matching every given field (``endpoint="send", errcode=0``) and ``since``."""
        since = filters.pop("since", None)
        bad = set(filters) - set(_FILTERS)
        if bad:
            raise ValueError(f"unknown filter {sorted(bad)[0]!r}")
        return [
            r
            for r in self._records
            if (since is None or r.seq > since)
            and all(getattr(r, k) == v for k, v in filters.items())
        ]

    def __iter__(self) -> Iterator[CallRecord]:
        return iter(list(self._records))

    def __len__(self) -> int:
        return len(self._records)

    def clear(self) -> None:
        """Forget records and counters (the file keeps its lines)."""
        self._records.clear()
        self.counters.clear()

    def close(self) -> None:
        if self._flush_due is not None:
            self._flush_due.cancel()
            self._flush_due = None
        if self._file is not None:
            self._file.close()
            self._file = None

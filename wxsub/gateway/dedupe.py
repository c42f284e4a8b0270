"""De-duplication of WeChat's push retries inside one gateway process.

WeChat retries a push up to 3 times within ~15 s when it gets no ``success`` within 5 s. Each
process keeps a bounded TTL map of the messages it made durable; a retry that reaches another
replica is produced again and removed downstream, because its event ids are deterministic.
A retry that arrives while the first attempt is still producing waits for that attempt.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable

__all__ = ["PushDeduper", "TtlMap"]


class TtlMap:
    """A bounded map whose entries expire ``ttl_s`` after insertion (oldest evicted when full).

    Why not a library: cachetools would do, but this is 30 lines on an OrderedDict, and with a
    constant TTL insertion order is expiry order, so purging is a pop from the front.
    """

    def __init__(
        self, ttl_s: float, max_entries: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl_s
        self._max = max_entries
        self._clock = clock
        self._data: OrderedDict[Hashable, tuple[float, object]] = OrderedDict()

    def __len__(self) -> int:
        self._purge()
        return len(self._data)

    def get(self, key: Hashable) -> object | None:
        self._purge()
        entry = self._data.get(key)
        return None if entry is None else entry[1]

    def put(self, key: Hashable, value: object = True) -> None:
        self._purge()
        self._data.pop(key, None)
        self._data[key] = (self._clock() + self._ttl, value)
        while len(self._data) > self._max:
            self._data.popitem(last=False)

    def _purge(self) -> None:
        now = self._clock()
        while self._data:
            key, (expires, _) = next(iter(self._data.items()))
            if expires > now:
                return
            del self._data[key]


class PushDeduper:
    """Runs an action at most once per key among successful runs, while the key is remembered."""

    def __init__(self, done: TtlMap) -> None:
        self._done = done
        self._running: dict[Hashable, asyncio.Future[None]] = {}

    async def once(self, key: Hashable, action: Callable[[], Awaitable[None]]) -> bool:
        """True if this call ran ``action``; False for a duplicate. Re-raises a failed run."""
        if self._done.get(key) is not None:
            return False
        running = self._running.get(key)
        if running is not None:
            await asyncio.shield(running)
            return False
        task = asyncio.ensure_future(action())
        self._running[key] = task
        task.add_done_callback(lambda t: self._settle(key, t))
        await asyncio.shield(task)
        return True

    def _settle(self, key: Hashable, task: asyncio.Future[None]) -> None:
        self._running.pop(key, None)
        if not task.cancelled() and task.exception() is None:
            self._done.put(key)

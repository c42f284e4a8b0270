"""Walking a partition store a slice per timer tick: where expiry finds what has outlived its
retention, and where live entries are counted.

Expiry must cost nothing per event, so no index is kept for it: the values already carry the
times their retention counts from. A :class:`Sweep` walks every key of a store once per
``every_ms`` (one *pass*), at most ``per_tick`` entries per timer tick, resuming after the last
key it handed out; the stage decides per entry (``wxsub.agents.rules.retention``) and deletes in
the timer's transaction, so the deletes are changelogged (tombstones) with the rest. Between
passes a tick costs one comparison. A pass ends when the walk reaches the end of the store; it
has then counted every entry once (the live count the metrics show, sampled once per pass).

The cursor lives in memory: a partition opened anew (restart, rebalance) starts a pass at its
first tick. Passes are timed with the stage's clock (``now_ms``), so a test or a benchmark with a
fast clock runs them on simulated time.
"""

from __future__ import annotations

from dataclasses import dataclass

from wxsub.streams.store import RESERVED_PREFIX, PartitionStore

__all__ = ["Sweep"]


@dataclass
class _Pass:
    store: PartitionStore
    next_ms: int  # when the next pass may start
    active: bool = False
    cursor: bytes | None = None  # the last key handed out in this pass
    seen: int = 0  # entries handed out in this pass, less those the stage removed
    live: int | None = None  # the count of the last complete pass


class Sweep:
    """Hands out a store's entries a slice at a time, one pass per ``every_ms`` per partition."""

    def __init__(self, every_ms: int, per_tick: int) -> None:
        if every_ms <= 0 or per_tick < 1:
            raise ValueError("every_ms > 0 and per_tick >= 1")
        self.every_ms = every_ms
        self.per_tick = per_tick
        self._passes: dict[int, _Pass] = {}

    def slice(self, store: PartitionStore, now_ms: int) -> list[tuple[bytes, bytes]]:
        """The next entries of the pass over ``store`` (committed + pending), at most
        ``per_tick``; empty between passes. Write only after taking the slice."""
        state = self._passes.get(store.partition)
        if state is None or state.store is not store:  # newly opened: a pass starts now
            state = self._passes[store.partition] = _Pass(store, now_ms)
        if not state.active:
            if now_ms < state.next_ms:
                return []
            state.active, state.cursor, state.seen = True, None, 0
            state.next_ms = now_ms + self.every_ms
        out: list[tuple[bytes, bytes]] = []
        for key, value in store.scan(b"", start_after=state.cursor):
            if key.startswith(RESERVED_PREFIX):
                continue
            out.append((key, value))
            if len(out) >= self.per_tick:
                break
        state.seen += len(out)
        if len(out) < self.per_tick:  # the walk reached the end: the pass is complete
            state.active = False
            state.live = state.seen
        else:
            state.cursor = out[-1][0]
        return out

    def removed(self, store: PartitionStore, n: int = 1) -> None:
        """``n`` entries of the current slice were deleted (they are not live)."""
        state = self._passes.get(store.partition)
        if state is not None and state.store is store:
            state.seen -= n
            if not state.active and state.live is not None:
                state.live -= n

    def live(self) -> int | None:
        """Entries counted by the last complete pass of every partition still open here (None
        before any pass completed)."""
        for p, state in list(self._passes.items()):
            if state.store.closed:
                del self._passes[p]
        counts = [s.live for s in self._passes.values() if s.live is not None]
        return sum(counts) if counts else None

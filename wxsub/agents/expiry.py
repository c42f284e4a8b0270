"""What the stages share for expiry: a store's sweep, its live-entries gauge and its counter.

Each stage with a store keeps one :class:`StoreExpiry`; its timer takes a slice of the store
(``wxsub.streams.sweep``), asks ``wxsub.agents.rules.retention`` about each entry, deletes what
has ended (in the timer's transaction: tombstones in the changelog) and calls :meth:`expired`.
Entries that end at a fixed time are deleted by the stage's due timer (``DueIndex``) instead,
at that time; they are counted with :meth:`ended`. A store whose entries all end that way (the
card stage's) has no sweep decisions to make: :meth:`count` walks it only for the gauge.
Expiry reads the stage's clock (``StageEnv.clock``: the wall clock in production, moved forward
by tests and ``bench/lifecycle.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wxsub.agents.rules.retention import Reason
from wxsub.streams.metering import labelled, tally
from wxsub.streams.stage import PartitionContext
from wxsub.streams.sweep import Sweep

if TYPE_CHECKING:
    from wxsub.agents.base import StageEnv

__all__ = ["StoreExpiry"]


class StoreExpiry:
    """The sweep of one stage's store, and its metrics (``wxsub_store_entries``, set once per
    completed pass; ``wxsub_expired_total``, counted when the timer's transaction commits)."""

    def __init__(self, env: StageEnv, stage: str, store: str) -> None:
        worker = env.settings.worker
        self.store = store
        self.sweep = Sweep(int(worker.sweep_interval_s * 1000), worker.sweep_per_tick)
        metrics = env.metrics
        self._expired = metrics.expired
        self._gauge = labelled(metrics.store_entries, stage, store)
        self._gauge.set(0)  # a series from the start (the dashboard's panel has data)
        for reason in Reason.BY_STORE.get(store, ()):
            labelled(metrics.expired, store, reason)  # rare events start at 0

    def slice(self, ctx: PartitionContext, now_ms: int) -> list[tuple[bytes, bytes]]:
        """The entries to look at in this tick (none between passes)."""
        return self.sweep.slice(ctx.stores[self.store], now_ms)

    def expired(self, ctx: PartitionContext, reason: str, deleted: bool = True) -> None:
        """One entry of the slice ended for ``reason`` (``deleted``: the whole store entry)."""
        if deleted:
            self.sweep.removed(ctx.stores[self.store])
        tally(ctx, self._expired, self.store, reason)

    def ended(self, ctx: PartitionContext, reason: str) -> None:
        """One entry ended by the stage's due timer (outside the sweep's slice) for ``reason``:
        counted; the next pass of the sweep no longer sees it."""
        tally(ctx, self._expired, self.store, reason)

    def count(self, ctx: PartitionContext, now_ms: int) -> None:
        """Walk the next slice without deciding anything, then set the gauge: the live-entries
        count of a store whose entries end by due timers only."""
        self.sweep.slice(ctx.stores[self.store], now_ms)
        self.sample()

    def sample(self) -> None:
        """Set the live-entries gauge from the last complete passes."""
        live = self.sweep.live()
        if live is not None:
            self._gauge.set(live)

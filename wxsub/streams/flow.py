"""Flow control of a partition's inputs: stashing what is fetched until the partition's next
batch may start, pausing them while the stash is full, rewinding and backing off a partition
whose batch failed.

A partition's inputs keep fetching while its turn runs and while the commit interval has not
passed since its last batch started: what arrives meanwhile waits in the unit's ``stash``
(in offset order per input partition, each record once: the consumer's position is past it),
and the next batch is the stash, taken when the turn is done and the interval has passed
(turns.py). So a batch starts on time with every record fetched until then, rather than after a
resume and a fetch behind the Fetch in flight for the stage's other partitions. Two reasons to
pause a partition's input partitions, kept apart on its unit:

- ``held``: its stash holds ``max_batch`` records or more; resumed by :meth:`release` once a
  batch has taken them.
- ``paused``: backed off for a second after a failed batch; resumed by :meth:`resume_due`.

A rewind (a failed batch, :meth:`back_off`) seeks each input partition to the first record held
for it (the failed batch's, else the stash's) and drops the stash; a rebalance drops every stash
(:meth:`drop_stash`): the new assignment seeks to the positions of the last commits (poll.py).
"""

from __future__ import annotations

import time

from aiokafka import ConsumerRecord, TopicPartition

from wxsub.streams.partition import PartitionUnit, RunState

__all__ = ["InputFlow"]

Batch = dict[TopicPartition, list[ConsumerRecord]]


class InputFlow:
    """Stashes, pauses, resumes and rewinds the consumer's input partitions on behalf of units."""

    def __init__(self, state: RunState, *, interval: float, max_batch: int) -> None:
        self._state = state
        self._interval = interval  # commit_interval_ms, in seconds
        self._max_batch = max_batch

    def due(self, unit: PartitionUnit) -> float:
        """Monotonic time from which ``unit``'s next batch may start."""
        return unit.started + self._interval

    def stash(self, unit: PartitionUnit, tps: Batch) -> None:
        """Keep ``tps`` for ``unit``'s next batch; hold its inputs while the stash is full."""
        for tp, recs in tps.items():
            unit.stash.setdefault(tp, []).extend(recs)
            unit.stashed += len(recs)
        if unit.stashed >= self._max_batch:
            self.hold(unit, set(unit.stash) - unit.paused)

    def take(self, unit: PartitionUnit) -> Batch:
        """Up to ``max_batch`` records from the head of ``unit``'s stash (per input partition,
        in offset order); resumes its held inputs once fewer than that are left."""
        room = self._max_batch
        taken: Batch = {}
        for tp in list(unit.stash):
            recs = unit.stash[tp]
            if room <= 0:
                break
            if len(recs) <= room:
                taken[tp] = recs
                del unit.stash[tp]
            else:
                taken[tp], unit.stash[tp] = recs[:room], recs[room:]
            room -= len(taken[tp])
        unit.stashed -= sum(len(recs) for recs in taken.values())
        if unit.stashed < self._max_batch:
            self.release(unit)
        return taken

    def drop_stash(self, unit: PartitionUnit) -> None:
        unit.stash, unit.stashed = {}, 0

    def hold(self, unit: PartitionUnit, tps: set[TopicPartition]) -> None:
        """Pause ``tps`` until :meth:`release` of ``unit``."""
        tps -= unit.held
        self.pause(tps)
        unit.held |= tps

    def pause(self, tps: set[TopicPartition]) -> None:
        if tps and self._state.consumer is not None:
            self._state.consumer.pause(*tps)

    def release(self, unit: PartitionUnit) -> None:
        """Resume a unit's held partitions, except those backed off after a failure."""
        state = self._state
        consumer = state.consumer
        if consumer is None or state.failure is not None or not unit.held:
            return
        if state.units.get(unit.partition) is not unit:
            return
        held, unit.held = unit.held - unit.paused, set()
        resume = held & consumer.assignment()
        if resume:
            consumer.resume(*resume)

    def back_off(self, unit: PartitionUnit, tps: Batch) -> None:
        """Read ``tps`` (and whatever was stashed behind them) again from their first records,
        in a second (the others and the timers go on)."""
        first = {tp: recs for tp, recs in unit.stash.items() if recs}
        first.update((tp, recs) for tp, recs in tps.items() if recs)  # the batch's come first
        self.drop_stash(unit)
        self.rewind(first)
        unit.backoff_until = time.monotonic() + 1.0
        self.pause(set(first) - unit.paused - unit.held)
        unit.paused |= set(first)
        unit.held -= unit.paused  # resumed by ``resume_due``, not ``release``

    def resume_due(self) -> None:
        """Resume the units whose back-off is over."""
        consumer = self._state.consumer
        now = time.monotonic()
        for unit in self._state.units.values():
            if unit.paused and unit.backoff_until <= now:
                if consumer is not None:
                    consumer.resume(*(unit.paused & consumer.assignment()))
                unit.paused = set()

    def rewind(self, tps: Batch) -> None:
        consumer = self._state.consumer
        if consumer is not None:
            for tp, recs in tps.items():
                consumer.seek(tp, recs[0].offset)

"""Flow control of a partition's inputs: pausing them while a turn runs, resuming them no sooner
than the partition's pacing allows, rewinding and backing off a partition whose batch failed.

Two reasons to pause a partition's input partitions, kept apart on its unit:

- ``held``: a batch is in flight (its records must not be fetched again meanwhile), or its next
  batch is not due yet (pacing.py), or records fetched during a turn without a batch wait for it
  to end (turns.py ``follow``); resumed by :meth:`release`.
- ``paused``: backed off for a second after a failed batch; resumed by :meth:`resume_due`.
"""

from __future__ import annotations

import asyncio
import time

from aiokafka import ConsumerRecord, TopicPartition

from wxsub.streams.pacing import Pacer
from wxsub.streams.partition import PartitionUnit, RunState

__all__ = ["InputFlow"]

Batch = dict[TopicPartition, list[ConsumerRecord]]


class InputFlow:
    """Pauses, resumes and rewinds the consumer's input partitions on behalf of units."""

    def __init__(self, state: RunState, pacer: Pacer) -> None:
        self._state = state
        self._pacer = pacer

    def hold(self, unit: PartitionUnit, tps: set[TopicPartition]) -> None:
        """Pause ``tps`` until :meth:`release` of ``unit``."""
        tps -= unit.held
        self.pause(tps)
        unit.held |= tps

    def pause(self, tps: set[TopicPartition]) -> None:
        if tps and self._state.consumer is not None:
            self._state.consumer.pause(*tps)

    def release(self, unit: PartitionUnit) -> None:
        """Resume a unit's held partitions, except those backed off after a failure, once its
        pacing allows (pacing.py: about when its next batch is due)."""
        state = self._state
        consumer = state.consumer
        if consumer is None or state.failure is not None:
            return
        if state.units.get(unit.partition) is not unit:
            return
        wait = self._pacer.resume_at(unit) - time.monotonic()
        if wait > 0 and unit.held:
            asyncio.get_running_loop().call_later(wait, self._release_later, unit)
            return
        held, unit.held = unit.held - unit.paused, set()
        resume = held & consumer.assignment()
        if resume:
            consumer.resume(*resume)

    def _release_later(self, unit: PartitionUnit) -> None:
        if not unit.batching:  # else the batch in flight releases it when done
            self.release(unit)

    def back_off(self, unit: PartitionUnit, tps: Batch) -> None:
        """Read ``tps`` again from their first records, in a second (the others and the timers
        go on)."""
        self.rewind(tps)
        unit.backoff_until = time.monotonic() + 1.0
        unit.paused = set(tps)  # held already: ``release`` leaves them paused

    def resume_due(self) -> None:
        """Resume the units whose back-off is over (a busy one's with its held partitions)."""
        consumer = self._state.consumer
        now = time.monotonic()
        for unit in self._state.units.values():
            if unit.paused and unit.backoff_until <= now:
                if unit.busy is not None:  # a timer: resumed with the rest when it is done
                    unit.held |= unit.paused
                elif consumer is not None:
                    consumer.resume(*(unit.paused & consumer.assignment()))
                unit.paused = set()

    def rewind(self, tps: Batch) -> None:
        consumer = self._state.consumer
        if consumer is not None:
            for tp, recs in tps.items():
                consumer.seek(tp, recs[0].offset)

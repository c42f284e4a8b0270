"""Per-partition pipelining: each partition's turn runs as a task of its own.

A turn is a batch's transaction (then the partition's timer's, when due, or the settling of an
``Answering`` stage's work), or, for an idle partition, a timer or a ``settle`` turn (stage.py
``Settling``). While a batch's transaction runs, the partition's inputs are held paused
(flow.py) and resumed as soon as its own commit is done (and the commit interval allows), so it
fetches its next batch without waiting for the slowest partition (a transaction's round trips,
~100-300 ms on a loaded machine, vary a lot between partitions). Records fetched while a turn
runs without a batch (a timer, a settle turn) are that turn's next batch, started as soon as it
is done: read again instead, they waited behind the Fetch in flight for the stage's other
partitions (up to ``fetch_max_wait_ms``). The poll loop (poll.py) only hands out batches; a
rebalance and shut-down first wait for every turn in flight (:meth:`drain`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from aiokafka import ConsumerRecord, TopicPartition

from wxsub.streams.flow import Batch, InputFlow
from wxsub.streams.pacing import Pacer
from wxsub.streams.partition import PartitionUnit, RunState
from wxsub.streams.stage import Answering, PartitionContext, Settling, Stage
from wxsub.streams.transaction import Transactor

__all__ = ["Turns"]


class Turns:
    """Starts, runs and waits for the partitions' turns."""

    def __init__(
        self,
        stage: Stage,
        state: RunState,
        flow: InputFlow,
        transactor: Transactor,
        pacer: Pacer,
        *,
        on_commit: Callable[[int, int], None] | None,
    ) -> None:
        self._stage = stage
        self._spec = stage.spec
        self._settling = stage if isinstance(stage, Settling) else None
        self._answering = stage if isinstance(stage, Answering) else None
        self._state = state
        self._flow = flow
        self._txn = transactor
        self._pacer = pacer
        self._interval = pacer.interval  # commit_interval_ms, in seconds
        self._on_commit = on_commit

    # --- handing out turns (the poll loop, under its lock) ------------------------------------

    def dispatch(self, batch: Batch) -> None:
        """Start a turn for every idle partition number that has records."""
        pending = self._state.pending
        by_partition: dict[int, Batch] = {}
        for tp, records in batch.items():
            if records and tp not in pending:
                by_partition.setdefault(tp.partition, {})[tp] = records
        units = self._state.units
        flow = self._flow
        for p, tps in by_partition.items():
            unit = units.get(p)
            if unit is None:
                continue
            if unit.busy is None and not unit.paused:
                self._start(unit, tps)
                continue
            if not unit.batching and not unit.paused and unit.follow is None:
                # a turn without a batch (a timer, a settle turn, the wait for answers): these
                # are its next batch, started as soon as it is done (not fetched again later,
                # behind the Fetch in flight for the other partitions)
                self._hold_inputs(unit)
                unit.follow = tps
                if unit.wake is not None and not unit.wake.done():
                    unit.wake.set_result(None)
                continue
            # a backed-off unit's co-partitioned input, a turn's second batch, or records of a
            # batch's input fetched before its pause took effect: read them again later
            flow.rewind(tps)
            if unit.busy is not None:
                flow.hold(unit, set(tps) - unit.paused)
            else:
                flow.pause(set(tps) - unit.paused)
                unit.paused |= set(tps)

    def start_timers(self) -> None:
        """Give every idle partition whose timer is due, or whose work in flight waits to be
        settled, a turn of its own (no records)."""
        for unit in self._state.units.values():
            if unit.busy is None and (self._timer_due(unit) or self._settle_due(unit)):
                self._start(unit, None)

    # --- rebalance and shut-down (under the poll loop's lock) ---------------------------------

    async def drain(self) -> None:
        """Wait for every batch and timer in flight (their errors are the loop's to raise)."""
        busy = [u.busy for u in self._state.units.values() if u.busy is not None]
        if busy:
            await asyncio.wait(busy)

    async def settle_all(self) -> None:
        """Settle every partition's work in flight before the partitions may move (rebalance,
        shut-down); a partition that fails to is left to its next owner's in-doubt handling."""
        stage = self._settling
        if stage is None:
            return
        for unit in list(self._state.units.values()):
            if stage.unsettled(unit.partition):
                with contextlib.suppress(Exception):  # transact logged it
                    await self._txn.transact(unit, stage.settle)

    def cancel_in_flight(self) -> None:
        for unit in self._state.units.values():
            if unit.busy is not None:
                unit.busy.cancel()

    # --- one turn -----------------------------------------------------------------------------

    def _timer_due(self, unit: PartitionUnit) -> bool:
        interval = self._spec.timer_interval_s
        return interval > 0 and time.monotonic() - unit.last_timer >= interval

    def _settle_due(self, unit: PartitionUnit) -> bool:
        """Unsettled work and no batch for ``commit_interval_ms``: a batch would settle it."""
        stage = self._settling
        if stage is None or not stage.unsettled(unit.partition):
            return False
        return time.monotonic() >= unit.started + self._interval

    def _start(self, unit: PartitionUnit, tps: Batch | None) -> None:
        """Start a turn of ``unit``; with records, its input partitions stay paused until the
        batch is done. A timer-only turn pauses nothing up front (most find nothing due and end
        at once): records that arrive meanwhile are its next batch (``dispatch``)."""
        if tps:
            self._begin_batch(unit)
        unit.busy = asyncio.create_task(self._turn(unit, tps))

    def _hold_inputs(self, unit: PartitionUnit) -> None:
        state = self._state
        consumer = state.consumer
        assert consumer is not None
        inputs = {TopicPartition(t, unit.partition) for t in self._spec.inputs}
        self._flow.hold(unit, (inputs & consumer.assignment()) - state.pending - unit.paused)

    def _begin_batch(self, unit: PartitionUnit) -> None:
        self._hold_inputs(unit)
        self._pacer.started(unit, time.monotonic())
        unit.batching = True

    async def _turn(self, unit: PartitionUnit, tps: Batch | None) -> None:
        """A batch's transaction, then the timer's if it is due (a busy partition would
        otherwise never be idle at a timer check under load), or the settling of an
        ``Answering`` stage's work (:meth:`_settle_after`); then the batch fetched meanwhile,
        if any (``dispatch``), and so on. Once a batch has committed its inputs are released
        (when the commit interval allows): what they fetch is the turn's next batch."""
        try:
            if tps:
                await self._process(unit, tps)
            while True:
                unit.batching = False
                self._flow.release(unit)
                if self._timer_due(unit):
                    unit.last_timer = time.monotonic()
                    await self._run_timer(unit)
                elif tps:
                    await self._settle_after(unit)
                elif self._settling is not None and self._settle_due(unit):
                    await self._txn.transact(unit, self._settling.settle)
                tps, unit.follow = unit.follow, None
                if not tps:
                    break
                self._begin_batch(unit)
                await self._process(unit, tps)
        except Exception as exc:  # fenced, or an abort failed: the runner restarts
            if self._state.failure is None:
                self._state.failure = exc
        finally:
            unit.busy, unit.batching, unit.follow = None, False, None
            self._flow.release(unit)

    async def _settle_after(self, unit: PartitionUnit) -> None:
        """After a batch of an ``Answering`` stage: settle its work in flight as soon as it is
        answered, while the partition waits for its next batch, if that is within half the
        commit interval from the batch's start. Else (a long turn, slow answers: a loaded
        machine) the next batch settles them in its own transaction, as it would anyway, or if
        none comes within half an interval of the inputs' resumption, a settle turn: one more
        transaction per batch, each waiting for the answers, would slow a busy partition down.
        A batch fetched meanwhile ends the wait (``dispatch``)."""
        stage, answering = self._settling, self._answering
        p = unit.partition
        if stage is None or answering is None or not stage.unsettled(p):
            return
        wake = unit.wake = asyncio.get_running_loop().create_future()
        answered = asyncio.ensure_future(answering.answered(p))
        half = self._interval / 2
        try:
            early = unit.started + half - time.monotonic()
            await asyncio.wait(
                {answered, wake}, timeout=max(0.0, early), return_when=asyncio.FIRST_COMPLETED
            )
            if not wake.done() and not answered.done():
                now = time.monotonic()
                late = max(unit.started + self._interval, now) + half - now
                await asyncio.wait({wake}, timeout=late)
        finally:
            unit.wake = None
            answered.cancel()
        if unit.follow is None and stage.unsettled(p):
            await self._txn.transact(unit, stage.settle)

    async def _process(self, unit: PartitionUnit, tps: Batch) -> None:
        """A batch's transaction: the records past the partition's position, in one
        transaction with their input offsets; on failure rewound and backed off."""
        p = unit.partition
        # A batch fetched before a rebalance, or after aiokafka applied its own (possibly stale)
        # committed-offset reset, may start below what we committed: that part is already done.
        # Partitions we no longer own have no unit and are skipped by ``dispatch``.
        tps = {tp: _after(recs, unit.positions.get(tp)) for tp, recs in tps.items()}
        tps = {tp: recs for tp, recs in tps.items() if recs}
        if not tps:
            return
        records = [r for recs in tps.values() for r in recs]
        if len(tps) > 1:  # several co-partitioned inputs: interleave by broker append time
            records.sort(key=lambda r: r.timestamp)
        offsets = {tp: recs[-1].offset + 1 for tp, recs in tps.items()}
        stage = self._stage

        async def body(ctx: PartitionContext) -> None:
            await stage.process(ctx, records)
            await ctx.begin()
            ctx.offsets = offsets

        if await self._txn.transact(unit, body):
            unit.positions.update(offsets)
            if self._on_commit is not None:
                self._on_commit(p, len(records))
            return
        # back off this partition only (paused for a second); the others and the timers go on
        self._flow.back_off(unit, tps)

    async def _run_timer(self, unit: PartitionUnit) -> None:
        stage = self._stage

        async def body(ctx: PartitionContext) -> None:
            await stage.on_timer(ctx, int(time.time() * 1000))

        await self._txn.transact(unit, body)


def _after(records: list[ConsumerRecord], position: int | None) -> list[ConsumerRecord]:
    if position is None or not records or records[0].offset >= position:
        return records
    return [r for r in records if r.offset >= position]

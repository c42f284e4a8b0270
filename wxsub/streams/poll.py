"""The poll loop and rebalancing: one consumer-group member per stage, fetching and handing out
batches (turns.py), following the group's assignment (opening and closing partitions,
partition.py).

The poll loop and the rebalance callbacks share one lock: the loop holds it while it hands out
work and the callbacks wait under it for the work in flight, so no batch starts or runs across a
rebalance.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener

from wxsub.streams.flow import InputFlow
from wxsub.streams.membership import assignor_with
from wxsub.streams.partition import PartitionOpener, RunState
from wxsub.streams.stage import StageSpec
from wxsub.streams.turns import Turns

__all__ = ["PollLoop"]

log = logging.getLogger(__name__)

#: bytes fetched per input partition and request (aiokafka's ``max_partition_fetch_bytes``; a
#: record batch larger than this is still returned whole)
FETCH_BYTES_PER_PARTITION = 1024 * 1024


class PollLoop(ConsumerRebalanceListener):  # type: ignore[misc]
    """Runs the group consumer of one stage: fetch, hand out, follow the assignment."""

    def __init__(
        self,
        spec: StageSpec,
        state: RunState,
        opener: PartitionOpener,
        turns: Turns,
        flow: InputFlow,
        *,
        bootstrap: str,
        group_id: str,
        max_batch: int,
        poll_timeout_ms: int,
        session_timeout_ms: int,
        ready: asyncio.Event,
        stopping: asyncio.Event,
        member_data: bytes = b"",
        security: Mapping[str, Any] | None = None,
    ) -> None:
        self._security = dict(security or {})  # connection.security_kwargs
        self._spec = spec
        self._state = state
        self._opener = opener
        self._turns = turns
        self._flow = flow
        self._bootstrap = bootstrap
        self._group_id = group_id
        self._max_batch = max_batch
        self._poll_timeout_ms = poll_timeout_ms
        self._session_timeout_ms = session_timeout_ms
        self._ready = ready  # set once partitions are assigned and restored
        self._stopping = stopping
        self._lock = asyncio.Lock()
        # the range assignor; ``member_data`` rides in the group metadata (membership.py)
        self._assignor = assignor_with(member_data)

    async def run_once(self) -> None:
        """Join the group and poll until stopped or a turn failed (raised)."""
        state, turns = self._state, self._turns
        consumer = self._new_consumer()
        state.consumer = consumer
        consumer.subscribe(list(self._spec.inputs), listener=self)
        await consumer.start()
        try:
            while not self._stopping.is_set():
                state.raise_failure()
                if state.pending:
                    async with self._lock:
                        await self._open_pending()
                batch = await consumer.getmany(
                    timeout_ms=self._poll_timeout_ms, max_records=self._max_batch
                )
                async with self._lock:
                    state.raise_failure()
                    self._flow.resume_due()
                    turns.dispatch(batch)
                    turns.start_timers()
        except asyncio.CancelledError:
            turns.cancel_in_flight()
            raise
        finally:
            async with self._lock:
                await turns.drain()  # at_least_once commits through the consumer
                state.consumer = None
                await consumer.stop()

    async def teardown(self) -> None:
        """Settle (unless a turn failed) and close every partition; forget the failure."""
        state = self._state
        async with self._lock:
            await self._turns.drain()
            if state.failure is None:
                await self._turns.settle_all()
            for p in list(state.units):
                await self._close(p)
            state.failure = None
            state.pending = set()
            self._ready.clear()

    def _new_consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=self._group_id,
            client_id=f"{self._group_id}-consumer",
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            partition_assignment_strategy=(self._assignor,),
            session_timeout_ms=self._session_timeout_ms,
            heartbeat_interval_ms=max(500, self._session_timeout_ms // 4),
            rebalance_timeout_ms=120_000,
            max_poll_interval_ms=300_000,
            fetch_max_wait_ms=self._poll_timeout_ms,
            # About one batch (max_batch records of a few hundred bytes) per partition: a
            # partition whose turn runs is paused (turns.py), and aiokafka drops what it had
            # fetched beyond the batch for a paused partition and fetches it again after the
            # resume. With 4 MiB (~12 k records) per partition most of every fetch was thrown
            # away: the worker's CPU per event fell 7% at 1 MiB (bench/RESULTS.md, 2026-12-06).
            max_partition_fetch_bytes=FETCH_BYTES_PER_PARTITION,
            **self._security,
        )

    # --- rebalancing --------------------------------------------------------------------------

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Eager rebalancing revokes everything; keep units until we know the new assignment so a
        # partition that stays with us keeps its producer and stores. Every batch in flight
        # commits (or aborts) before we return (aiokafka still heartbeats during this callback).
        async with self._lock:
            self._ready.clear()
            await self._turns.drain()
            await self._turns.settle_all()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """Record the assignment and pause what is not ready; no round trips here.

        aiokafka starts the heartbeat task only after this callback returns (the group
        coordinator's ``ensure_active_group``), so time spent here counts against the session
        timeout: opening producers and restoring stores here got the member expired at every
        start-up. As in Kafka Streams, new partitions stay paused until ``_open_pending`` (the
        poll loop) has opened their units and positioned them.
        """
        state = self._state
        async with self._lock:
            consumer = state.consumer
            assert consumer is not None
            await self._turns.drain()  # nothing can have started since the revoke; to be sure
            wanted = {tp.partition for tp in assigned}
            for p, kept in list(state.units.items()):
                if p not in wanted:
                    await self._close(p)
                # the new assignment is unpaused
                kept.paused, kept.held, kept.backoff_until = set(), set(), 0.0
            pending = set()
            for tp in assigned:
                unit = state.units.get(tp.partition)
                position = unit.positions.get(tp) if unit is not None else None
                if unit is None or position is None:
                    pending.add(tp)
                    continue
                consumer.seek(tp, position)  # kept: resume where our last commit left it
            state.pending = pending
            if pending:
                consumer.pause(*pending)
            else:
                self._ready.set()

    async def _open_pending(self) -> None:
        """Open units for the partitions assigned last, position them, then resume them."""
        state = self._state
        consumer = state.consumer
        assert consumer is not None
        t0 = time.monotonic()
        pending, state.pending = state.pending & consumer.assignment(), set()
        new = sorted({tp.partition for tp in pending} - set(state.units))
        for unit in await self._opener.open(new):
            state.units[unit.partition] = unit
        # A new partition resumes at its committed offset, read after our producer's
        # InitProducerId, which returns only once the previous owner's transaction is complete
        # (markers written), so the fetch is not stale and a zombie's open transaction is aborted.
        tps = sorted(pending)
        positions = await asyncio.gather(*(self._position(tp) for tp in tps))
        for tp, position in zip(tps, positions, strict=True):
            if position is not None:
                state.units[tp.partition].positions[tp] = position
                consumer.seek(tp, position)
        consumer.resume(*tps)
        unknown = [tp for tp, position in zip(tps, positions, strict=True) if position is None]
        if unknown:
            await consumer.seek_to_beginning(*unknown)
        self._ready.set()
        log.info(
            "partitions assigned",
            extra={"stage": self._spec.name, "partitions": sorted(state.units),
                   "opened_s": round(time.monotonic() - t0, 3)},
        )  # fmt: skip

    async def _position(self, tp: TopicPartition) -> int | None:
        position = self._state.units[tp.partition].positions.get(tp)
        if position is None:
            consumer = self._state.consumer
            assert consumer is not None
            position = await consumer.committed(tp)
        return position

    async def _close(self, p: int) -> None:
        unit = self._state.units.pop(p, None)
        if unit is not None:
            await self._opener.close(unit)

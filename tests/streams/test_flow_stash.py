"""The stash of a partition's inputs (flow.py, turns.py), without a broker: what is fetched while
a turn runs or before the commit interval has passed waits for the next batch, each record once
and in offset order; a full stash pauses its inputs; a rewind drops it and seeks each input back
to the first record held for it."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition

from wxsub.streams.flow import Batch, InputFlow
from wxsub.streams.partition import PartitionUnit, RunState
from wxsub.streams.stage import PartitionContext, StageSpec
from wxsub.streams.turns import Turns

A, B = TopicPartition("a", 0), TopicPartition("b", 0)


class FakeConsumer:
    """Records pause/resume/seek; every partition of topics a and b (partition 0) assigned."""

    def __init__(self) -> None:
        self.paused: set[TopicPartition] = set()
        self.seeks: list[tuple[TopicPartition, int]] = []

    def assignment(self) -> set[TopicPartition]:
        return {A, B}

    def pause(self, *tps: TopicPartition) -> None:
        self.paused |= set(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.paused -= set(tps)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))


def recs(tp: TopicPartition, first: int, n: int) -> list[ConsumerRecord]:
    return [
        ConsumerRecord(tp.topic, tp.partition, off, off, 0, b"k", b"v", None, 1, 1, ())
        for off in range(first, first + n)
    ]


def setup(interval: float = 0.0, max_batch: int = 10) -> tuple[RunState, FakeConsumer, InputFlow]:
    state = RunState()
    consumer = FakeConsumer()
    state.consumer = consumer  # type: ignore[assignment]
    unit = PartitionUnit(partition=0, producer=None, stores={}, changelogs={})  # type: ignore[arg-type]
    state.units[0] = unit
    return state, consumer, InputFlow(state, interval=interval, max_batch=max_batch)


def offsets(batch: Batch) -> dict[TopicPartition, list[int]]:
    return {tp: [r.offset for r in rs] for tp, rs in batch.items()}


def test_take_returns_the_stash_in_order_at_most_max_batch_and_resumes_a_full_stash() -> None:
    state, consumer, flow = setup(max_batch=10)
    unit = state.units[0]
    flow.stash(unit, {A: recs(A, 0, 4)})
    flow.stash(unit, {A: recs(A, 4, 4), B: recs(B, 100, 5)})
    assert unit.stashed == 13
    assert consumer.paused == {A, B}  # full: both inputs wait
    first = flow.take(unit)
    assert offsets(first) == {A: list(range(8)), B: [100, 101]}
    assert offsets(unit.stash) == {B: [102, 103, 104]}
    assert consumer.paused == set()  # below max_batch again
    assert offsets(flow.take(unit)) == {B: [102, 103, 104]}
    assert unit.stashed == 0 and unit.stash == {}
    assert consumer.seeks == []  # nothing was read twice


def test_back_off_seeks_each_input_to_the_first_record_held_and_drops_the_stash() -> None:
    state, consumer, flow = setup()
    unit = state.units[0]
    failed = {A: recs(A, 10, 3)}
    flow.stash(unit, {A: recs(A, 13, 2), B: recs(B, 50, 2)})  # fetched while the batch ran
    flow.back_off(unit, failed)
    assert sorted(consumer.seeks) == [(A, 10), (B, 50)]
    assert unit.stash == {} and unit.stashed == 0
    assert unit.paused == {A, B} and consumer.paused == {A, B}
    unit.backoff_until = 0.0
    flow.resume_due()
    assert consumer.paused == set() and unit.paused == set()


class CountingStage:
    """Counts the records of each batch it processes; the first batch waits at a gate."""

    def __init__(self) -> None:
        self.spec = StageSpec("count", ("a",))
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()

    async def process(self, ctx: PartitionContext, records: list[ConsumerRecord]) -> None:
        self.batches.append([r.offset for r in records])
        if len(self.batches) == 1:
            await self.gate.wait()

    async def on_timer(self, ctx: PartitionContext, now_ms: int) -> None:
        return None


class FakeTransactor:
    async def transact(self, unit: PartitionUnit, body: Any) -> bool:
        await body(PartitionContext(unit.partition, {}, None, transactional=False))  # type: ignore[arg-type]
        return True


async def test_records_fetched_while_a_batch_runs_are_the_next_batch_once_it_is_due() -> None:
    state, consumer, flow = setup(interval=0.05)
    unit = state.units[0]
    stage = CountingStage()
    turns = Turns(stage, state, flow, FakeTransactor(), interval=0.05, on_commit=None)  # type: ignore[arg-type]
    turns.dispatch({A: recs(A, 0, 3)})
    assert unit.busy is not None
    await asyncio.sleep(0)
    turns.dispatch({A: recs(A, 3, 2)})  # the first batch is in flight: stashed, not rewound
    turns.dispatch({A: recs(A, 5, 1)})
    assert consumer.seeks == [] and consumer.paused == set()
    assert unit.stashed == 3
    stage.gate.set()
    await unit.busy
    assert turns.wake.is_set()  # the poll loop starts the stash when due
    turns.start_due()
    if unit.busy is None:  # the batch took less than the interval: not due yet
        assert 0 < turns.poll_timeout_ms(50) <= 50
        await asyncio.sleep(flow.due(unit) - asyncio.get_running_loop().time() + 0.01)
        turns.start_due()
    assert unit.busy is not None
    await unit.busy
    assert stage.batches == [[0, 1, 2], [3, 4, 5]]
    assert unit.positions == {A: 6}
    assert turns.poll_timeout_ms(50) == 50  # nothing stashed

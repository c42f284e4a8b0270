"""Per-partition pipelining in the stage runtime: a partition whose transaction is in flight does
not hold the others back, a failed one backs off alone, and stopping waits for work in flight."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord

from tests.fixtures.kafka_helpers import create_topic, read_all, unique_name
from tests.streams.running import running
from wxsub.streams.runtime import StageRunner
from wxsub.streams.stage import PartitionContext, StageSpec

pytestmark = pytest.mark.kafka


class GatedStage:
    """Copies each record to the output; partition 0 can be held at a gate, or fail once."""

    def __init__(self, inp: str, out: str, *, fail_first: bool = False) -> None:
        self.spec = StageSpec("gated", (inp,), stores=("seen",), timer_interval_s=0.05)
        self.out = out
        self.gate = asyncio.Event()
        self.at_gate = asyncio.Event()
        self.fail_first = fail_first
        self.timers: dict[int, int] = defaultdict(int)
        self.in_flight: set[int] = set()
        self.overlaps = 0  # a partition's work started while its previous work was in flight
        self.batches: dict[int, int] = defaultdict(int)  # committed, per partition
        self.records: dict[int, int] = defaultdict(int)

    async def process(self, ctx: PartitionContext, records: list[ConsumerRecord]) -> None:
        with self._turn(ctx.partition):
            for rec in records:
                ctx.stores["seen"].put(rec.key, rec.value)
                await ctx.send(self.out, rec.key, rec.value, partition=ctx.partition)
            if ctx.partition == 0:
                self.at_gate.set()
                await self.gate.wait()
                if self.fail_first:
                    self.fail_first = False
                    raise RuntimeError("first attempt fails")

    async def on_timer(self, ctx: PartitionContext, now_ms: int) -> None:
        with self._turn(ctx.partition):
            self.timers[ctx.partition] += 1

    @contextlib.contextmanager
    def _turn(self, p: int) -> Iterator[None]:
        if p in self.in_flight:
            self.overlaps += 1
        self.in_flight.add(p)
        try:
            yield
        finally:
            self.in_flight.discard(p)


@contextlib.asynccontextmanager
async def _running(
    bootstrap: str, tmp_path: Path, stage: GatedStage
) -> AsyncIterator[tuple[StageRunner, asyncio.Task[None]]]:
    def on_commit(p: int, n: int) -> None:
        stage.batches[p] += 1
        stage.records[p] += n

    async with running(bootstrap, tmp_path, stage, on_commit=on_commit) as (runner, task):
        try:
            yield runner, task
        finally:
            stage.gate.set()  # before the stop, which waits for the transaction at the gate


@contextlib.asynccontextmanager
async def _partition_0_held(
    bootstrap: str, tmp_path: Path, stage: GatedStage
) -> AsyncIterator[tuple[AIOKafkaProducer, StageRunner, asyncio.Task[None]]]:
    """The stage running, with partition 0's first batch waiting at the stage's gate."""
    async with _producer(bootstrap) as producer, _running(bootstrap, tmp_path, stage) as (r, t):
        await producer.send_and_wait(stage.spec.inputs[0], b"a0", key=b"a0", partition=0)
        await _until(stage.at_gate.is_set, "partition 0 reached the gate")
        yield producer, r, t


async def _topics(bootstrap: str) -> tuple[str, str]:
    inp, out = unique_name("pipe-in"), unique_name("pipe-out")
    await create_topic(bootstrap, inp, 2)
    await create_topic(bootstrap, out, 2)
    await create_topic(bootstrap, f"{inp}-gated-seen-changelog", 2, compacted=True)
    return inp, out


async def _until(pred: object, what: str, timeout: float = 60) -> None:
    assert callable(pred)
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def _producer(bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


async def _outputs(bootstrap: str, out: str) -> dict[int, list[bytes]]:
    got: dict[int, list[bytes]] = defaultdict(list)
    for rec in await read_all(bootstrap, out, isolation="read_committed"):
        got[rec.partition].append(rec.value)
    return got


async def test_partition_in_flight_does_not_hold_back_the_others(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    inp, out = await _topics(kafka_bootstrap)
    stage = GatedStage(inp, out)
    commits = stage.batches
    async with _partition_0_held(kafka_bootstrap, tmp_path, stage) as (producer, runner, _):
        # partition 0's transaction is open at the gate: partition 1 goes on, batch by batch
        for i in range(3):
            await producer.send_and_wait(inp, f"b{i}".encode(), key=b"b", partition=1)
            await _until(lambda i=i: commits[1] >= i + 1, f"partition 1 batch {i}")
        await producer.send_and_wait(inp, b"a1", key=b"a1", partition=0)
        assert commits[0] == 0
        assert stage.timers[1] > 0  # timers run on the idle partition meanwhile
        stage.gate.set()
        await _until(lambda: commits[0] >= 2, "partition 0's two batches")
    assert runner.committed_batches >= 5
    got = await _outputs(kafka_bootstrap, out)
    assert got[0] == [b"a0", b"a1"]  # the record that came while p0 was busy: after, once
    assert got[1] == [b"b0", b"b1", b"b2"]
    assert stage.overlaps == 0  # one turn at a time per partition, timers included


async def test_failed_partition_backs_off_alone_and_replays_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    inp, out = await _topics(kafka_bootstrap)
    stage = GatedStage(inp, out, fail_first=True)
    commits = stage.batches
    async with _partition_0_held(kafka_bootstrap, tmp_path, stage) as (producer, _, _):
        stage.gate.set()  # its transaction aborts: partition 0 backs off for a second
        await producer.send_and_wait(inp, b"b0", key=b"b", partition=1)
        await _until(lambda: commits[1] >= 1, "partition 1 while 0 backs off")
        await producer.send_and_wait(inp, b"a1", key=b"a1", partition=0)
        await _until(lambda: stage.records[0] >= 2, "partition 0 after its back-off")
    got = await _outputs(kafka_bootstrap, out)
    assert got[0] == [b"a0", b"a1"]  # the aborted attempt's send is gone; replayed once
    assert got[1] == [b"b0"]


async def test_stop_waits_for_the_transaction_in_flight(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    inp, out = await _topics(kafka_bootstrap)
    stage = GatedStage(inp, out)
    commits = stage.batches
    async with _partition_0_held(kafka_bootstrap, tmp_path, stage) as (_, runner, task):
        await runner.stop()
        await asyncio.sleep(0.5)
        assert not task.done()  # still waiting for partition 0's transaction
        stage.gate.set()
        await asyncio.wait_for(task, 60)
        assert commits[0] == 1
    assert (await _outputs(kafka_bootstrap, out))[0] == [b"a0"]

"""The runtime's commit interval, ``ctx.on_commit`` callbacks and Settling stages (work started
after a commit whose results a later transaction writes), on a real broker."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord

from tests.fixtures.kafka_helpers import create_topic, read_all, unique_name
from tests.streams.running import running
from wxsub.streams.runtime import StageRunner
from wxsub.streams.stage import Answering, PartitionContext, Settling, StageSpec

pytestmark = pytest.mark.kafka


class BackgroundStage:
    """Copies each record to the output; after the batch commits, starts one background job per
    record (``work_s`` long) whose result (``done:<value>``) a later transaction writes."""

    def __init__(self, inp: str, out: str, *, work_s: float, fail_first: bool = False) -> None:
        self.spec = StageSpec("bg", (inp,))
        self.out = out
        self.work_s = work_s
        self.fail_first = fail_first
        self.started: Counter[bytes] = Counter()  # background jobs started, per value
        self.jobs: dict[int, list[asyncio.Task[bytes]]] = {}
        self.settle_turns = 0

    async def process(self, ctx: PartitionContext, records: list[ConsumerRecord]) -> None:
        await self.settle(ctx)
        values = [rec.value or b"" for rec in records]
        for value in values:
            await ctx.send(self.out, value, value, partition=ctx.partition)
        ctx.on_commit(lambda: self._start(ctx.partition, values))
        if self.fail_first:  # the callback above must never run: this transaction aborts
            self.fail_first = False
            raise RuntimeError("the first transaction fails")

    async def on_timer(self, ctx: PartitionContext, now_ms: int) -> None:
        raise AssertionError("no timer in this stage")

    def unsettled(self, partition: int) -> bool:
        return partition in self.jobs

    async def settle(self, ctx: PartitionContext) -> None:
        jobs = self.jobs.get(ctx.partition)
        if jobs is None:
            return
        self.settle_turns += 1
        for value in await asyncio.gather(*jobs):
            await ctx.send(self.out, value, b"done:" + value, partition=ctx.partition)

        def forget() -> None:
            self.jobs.pop(ctx.partition, None)

        ctx.on_commit(forget)

    def _start(self, partition: int, values: list[bytes]) -> None:
        self.started.update(values)
        self.jobs[partition] = [asyncio.ensure_future(self._job(v)) for v in values]

    async def _job(self, value: bytes) -> bytes:
        await asyncio.sleep(self.work_s)
        return value


class AnsweringStage(BackgroundStage):
    """A BackgroundStage that says when its jobs are done (the runtime's Answering protocol)."""

    async def answered(self, partition: int) -> None:
        jobs = self.jobs.get(partition)
        if jobs:
            await asyncio.wait(jobs)


@contextlib.asynccontextmanager
async def _running(
    bootstrap: str, tmp_path: Path, stage: BackgroundStage, interval_ms: int = 0
) -> AsyncIterator[StageRunner]:
    async with running(
        bootstrap, tmp_path, stage, wait_ready=True, commit_interval_ms=interval_ms
    ) as (runner, _):
        yield runner


async def _topics(bootstrap: str) -> tuple[str, str]:
    inp, out = unique_name("settle-in"), unique_name("settle-out")
    await create_topic(bootstrap, inp, 1)
    await create_topic(bootstrap, out, 1)
    return inp, out


async def _outputs(bootstrap: str, out: str) -> list[bytes]:
    return [r.value for r in await read_all(bootstrap, out, isolation="read_committed")]


async def _until_outputs(bootstrap: str, out: str, n: int, timeout: float = 60) -> list[bytes]:
    deadline = time.monotonic() + timeout
    while True:
        got = await _outputs(bootstrap, out)
        if len(got) >= n or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.2)


async def _produce(bootstrap: str, topic: str, values: list[bytes], every_s: float = 0) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=value, partition=0)
            if every_s:
                await asyncio.sleep(every_s)
    finally:
        await producer.stop()


def test_the_background_stage_is_a_settling_stage() -> None:
    assert isinstance(BackgroundStage("i", "o", work_s=0), Settling)
    assert not isinstance(BackgroundStage("i", "o", work_s=0), Answering)
    assert isinstance(AnsweringStage("i", "o", work_s=0), Answering)


async def test_answered_work_is_settled_without_waiting_for_the_interval(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    inp, out = await _topics(kafka_bootstrap)
    stage = AnsweringStage(inp, out, work_s=0.05)
    values = [b"q%d" % i for i in range(5)]
    await _produce(kafka_bootstrap, inp, values)  # before the start: one batch takes them all
    # a ten-minute interval: neither a batch nor an idle settle turn comes due meanwhile, so
    # only the settling of answered work writes the results
    async with _running(kafka_bootstrap, tmp_path, stage, interval_ms=600_000):
        got = await _until_outputs(kafka_bootstrap, out, 10)
        assert stage.settle_turns == 1
        assert not stage.unsettled(0)
    assert Counter(got) == Counter(values + [b"done:" + v for v in values])


async def test_records_fetched_while_work_is_settled_are_the_next_batch(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    inp, out = await _topics(kafka_bootstrap)
    stage = AnsweringStage(inp, out, work_s=0.2)
    async with _running(kafka_bootstrap, tmp_path, stage):
        values = [b"n%d" % i for i in range(40)]
        await _produce(kafka_bootstrap, inp, values, every_s=0.01)
        got = await _until_outputs(kafka_bootstrap, out, 80)
    assert stage.started == Counter(values)  # each record processed once, none fetched twice
    assert Counter(got) == Counter(values + [b"done:" + v for v in values])


async def test_results_of_work_in_flight_are_written_when_the_partition_is_idle(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    inp, out = await _topics(kafka_bootstrap)
    stage = BackgroundStage(inp, out, work_s=0.3)
    async with _running(kafka_bootstrap, tmp_path, stage):
        values = [b"v%d" % i for i in range(5)]
        await _produce(kafka_bootstrap, inp, values)
        # no record follows and the stage has no timer: only a settle turn writes the results
        got = await _until_outputs(kafka_bootstrap, out, 10)
        assert sorted(got) == sorted(values + [b"done:" + v for v in values])
        assert stage.settle_turns >= 1
        assert not stage.unsettled(0)


async def test_a_callback_runs_only_after_its_transaction_commits(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    inp, out = await _topics(kafka_bootstrap)
    stage = BackgroundStage(inp, out, work_s=0.05, fail_first=True)
    async with _running(kafka_bootstrap, tmp_path, stage):
        values = [b"a%d" % i for i in range(4)]
        await _produce(kafka_bootstrap, inp, values)
        got = await _until_outputs(kafka_bootstrap, out, 8)
    # the aborted first transaction started no job; the replay started each exactly once
    assert stage.started == Counter(values)
    assert Counter(got) == Counter(values + [b"done:" + v for v in values])


async def test_stop_settles_the_work_in_flight_first(kafka_bootstrap: str, tmp_path: Path) -> None:
    inp, out = await _topics(kafka_bootstrap)
    stage = BackgroundStage(inp, out, work_s=1.5)
    values = [b"s%d" % i for i in range(3)]
    await _produce(kafka_bootstrap, inp, values)  # before the start: one batch takes them all
    # a minute's interval: no settle turn comes due, so only the stop can settle the jobs
    async with _running(kafka_bootstrap, tmp_path, stage, interval_ms=60_000):
        deadline = time.monotonic() + 30
        while not stage.started and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert stage.unsettled(0)  # stopped while its jobs run
    assert stage.started == Counter(values)
    assert Counter(await _outputs(kafka_bootstrap, out)) == Counter(
        values + [b"done:" + v for v in values]
    )


async def test_commit_interval_spaces_a_partitions_batches(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    inp, out = await _topics(kafka_bootstrap)
    stage = BackgroundStage(inp, out, work_s=0)
    interval = 0.4
    async with _running(kafka_bootstrap, tmp_path, stage, interval_ms=int(interval * 1000)) as r:
        began = time.monotonic()
        values = [b"c%d" % i for i in range(60)]
        await _produce(kafka_bootstrap, inp, values, every_s=0.02)
        got = await _until_outputs(kafka_bootstrap, out, 120)
        elapsed = time.monotonic() - began
        batches = r.committed_batches
    assert Counter(got) == Counter(values + [b"done:" + v for v in values])
    # batches start at least `interval` apart: a bound, whatever the machine's speed (settle
    # turns commit too, at most one after each batch)
    assert batches <= 2 * (math.floor(elapsed / interval) + 1)

"""What the lifecycle tests share: a stage run by a real StageRunner on the session broker with
a clock the test moves forward (``Clock``), its changelog read back, its local store opened."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from tests.fixtures.kafka_helpers import read_all
from tests.fixtures.sandbox import APPID, SECRET
from wxsub.agents.base import StageEnv
from wxsub.agents.rules.stats import add_rows
from wxsub.merchants import Merchants
from wxsub.schemas import encode
from wxsub.settings import AppCredentials, Secret, Settings
from wxsub.stats import read_stats
from wxsub.streams.metrics import WorkerMetrics
from wxsub.streams.runtime import StageRunner
from wxsub.streams.stage import Stage
from wxsub.streams.store import RESERVED_PREFIX, PartitionStore
from wxsub.streams.topics import changelog_name, ensure_topics

__all__ = ["DAY", "Clock", "Lifecycle", "at", "lifecycle", "metric", "sample", "stats_by_template"]

DAY = 86_400_000


class Clock:
    """The stages' clock: the wall clock plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = 0

    def __call__(self) -> int:
        return int(time.time() * 1000) + self.offset


def at(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


class Lifecycle:
    def __init__(
        self,
        bootstrap: str,
        tmp: Path,
        merchants: Merchants,
        api_base: str | None = None,
        **worker: Any,
    ) -> None:
        prefix = f"lc{os.urandom(4).hex()}."
        wechat = {"api_base": api_base} if api_base is not None else {}
        settings = Settings().with_overrides(
            kafka={"bootstrap": bootstrap, "topic_prefix": prefix, "partitions": 2},
            worker={"app_id": "lifecycle", "sweep_interval_s": 0.2, **worker},
            wechat=wechat,
        )
        if api_base is not None:  # the WeChat sandbox at api_base, with its fixture app
            apps = {APPID: AppCredentials(APPID, Secret(SECRET))}
            settings = replace(settings, wechat=replace(settings.wechat, apps=apps))
        self.settings = settings
        self.tmp = tmp
        self.clock = Clock()
        self.metrics = WorkerMetrics()
        self.env = StageEnv(self.settings, merchants, self.metrics, clock=self.clock)

    def topic(self, logical: str) -> str:
        return self.settings.kafka.topic(logical)

    def changelog(self, stage: str, store: str) -> str:
        return changelog_name(self.settings.kafka, self.settings.worker.app_id, stage, store)

    async def publish(self, records: Iterable[tuple[str, Any]]) -> None:
        """(logical topic, record) in order, keyed by the record's key (murmur2 partition)."""
        producer = AIOKafkaProducer(bootstrap_servers=self.settings.kafka.bootstrap, acks="all")
        await producer.start()
        try:
            for logical, rec in records:
                await producer.send(self.topic(logical), encode(rec), key=rec.key.encode())
            await producer.flush()
        finally:
            await producer.stop()

    async def latest(self, topic: str) -> dict[bytes, bytes | None]:
        """The latest committed value per key (None: a tombstone): what compaction keeps."""
        return {r.key: r.value for r in await read_all(self.settings.kafka.bootstrap, topic)}

    async def until(
        self, topic: str, done: Callable[[dict[bytes, bytes | None]], bool], timeout: float = 30
    ) -> dict[bytes, bytes | None]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            latest = await self.latest(topic)
            if done(latest) or loop.time() > deadline:
                return latest
            await asyncio.sleep(0.3)

    def local(self, state: str, stage: str, store: str) -> dict[bytes, bytes]:
        """Every entry of a stopped stage's local stores (all partitions) under ``state``."""
        out: dict[bytes, bytes] = {}
        for p in range(self.settings.kafka.partitions):
            path = self.tmp / state / stage / f"{store}-{p}"
            if not path.exists():
                continue
            db = PartitionStore(store, p, path)
            try:
                out |= {k: v for k, v in db.scan(b"") if not k.startswith(RESERVED_PREFIX)}
            finally:
                db.close()
        return out

    @contextlib.asynccontextmanager
    async def running(self, stage: Stage, state: str = "state") -> AsyncIterator[StageRunner]:
        """``stage`` run until the block ends, its stores under ``tmp/state``; the same app id
        (consumer group) each time, so a restart goes on from the committed offsets."""
        kafka, app_id = self.settings.kafka, self.settings.worker.app_id
        runner = StageRunner(
            stage,
            bootstrap=kafka.bootstrap,
            app_id=app_id,
            state_dir=self.tmp / state,
            changelog_topic=lambda s, n: changelog_name(kafka, app_id, s, n),
            session_timeout_ms=6000,
        )
        task = asyncio.create_task(runner.run())
        try:
            async with asyncio.timeout(60):
                await runner.ready.wait()
            yield runner
        finally:
            await runner.stop()
            await asyncio.wait_for(task, 60)


@contextlib.asynccontextmanager
async def lifecycle(
    bootstrap: str,
    tmp: Path,
    merchants: Merchants | None = None,
    api_base: str | None = None,
    **worker: Any,
) -> AsyncIterator[Lifecycle]:
    lc = Lifecycle(bootstrap, tmp, merchants or Merchants({}), api_base, **worker)
    await ensure_topics(lc.settings.kafka, lc.settings.worker.app_id)
    yield lc


def sample(lc: Lifecycle, name: str, **labels: str) -> float:
    """A metric's value in the worker's registry (0 when the series does not exist yet)."""
    return lc.metrics.registry.get_sample_value(name, labels) or 0.0


async def metric(lc: Lifecycle, name: str, want: float, **labels: str) -> float:
    """The metric once it reached ``want`` (counters move when the commit's callbacks run)."""
    for _ in range(50):
        if sample(lc, name, **labels) == want:
            break
        await asyncio.sleep(0.1)
    return sample(lc, name, **labels)


async def stats_by_template(lc: Lifecycle) -> dict[str, dict[str, int]]:
    """template -> counters, summed over days and partitions, as ``wxsub stats`` reads them."""
    table = await read_stats(lc.settings.kafka)
    out: dict[str, list[dict[str, int]]] = {}
    for key, row in table.rows.items():
        out.setdefault(key.template, []).append(dict(row))
    return {t: add_rows(rows) for t, rows in out.items()}

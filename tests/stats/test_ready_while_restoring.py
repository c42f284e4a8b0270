"""The worker's ``/health/ready`` is 503 while its partitions restore their stores, ``/health/live``
200; ready turns 200 once every assigned partition has restored (and the restored state is the
one the stage goes on from).

A worker with an empty state dir restores the stats store from its changelog. To make that
phase observable, not a race, the restore is held at its start by a gate around
``restore_all`` (the real restore runs once the gate opens)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.polling import until_tries
from tests.stats.test_stats_kafka import FIRST, SECOND, SUPPRESSED, publish, running, settings
from tests.stats.test_stats_kafka import stats_until as stats_row
from wxsub.settings import Settings, WorkerSettings
from wxsub.streams import partition
from wxsub.worker import create_worker

pytestmark = pytest.mark.kafka


async def test_worker_not_ready_while_restoring_then_ready(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = settings(kafka_bootstrap, f"rs{uuid.uuid4().hex[:6]}.", tmp_path / "state1")
    async with running(s) as url:  # fills the stats store's changelog
        await publish(s, FIRST)
        first = {"sent": 1, "granted": 2, "suppressed": SUPPRESSED}
        row = await stats_row(url, first)
        assert {k: row[k] for k in first} == first

    entered, release = asyncio.Event(), asyncio.Event()
    real_restore = partition.restore_all

    async def gated_restore(consumer: Any, stores: Any) -> None:
        entered.set()
        await release.wait()
        await real_restore(consumer, stores)

    monkeypatch.setattr(partition, "restore_all", gated_restore)
    s2 = Settings(s.kafka, WorkerSettings(**{**vars(s.worker), "state_dir": tmp_path / "state2"}))
    worker = create_worker(s2, ["stats"])
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    url = f"http://127.0.0.1:{s2.worker.web_port}"
    try:
        await asyncio.wait_for(entered.wait(), 60)  # a bound; the gate is what holds it
        assert not task.done()
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            ready = await http.get("/health/ready")
            assert ready.status_code == 503
            assert ready.json()["stages"] == {"stats": False}
            assert ready.json()["kafka"] == "ok"  # not ready because of the restore only
            assert (await http.get("/health/live")).status_code == 200

            release.set()

            async def is_ready() -> bool:
                assert not task.done()
                return (await http.get("/health/ready")).status_code == 200

            assert await until_tries(is_ready, 150, 0.2)
            body = (await http.get("/health/ready")).json()
            assert body == {"ready": True, "kafka": "ok", "stages": {"stats": True}}
        # the stage goes on from the restored store: the second batch adds to the first
        await publish(s2, SECOND)
        want = {"granted": 2, "sent": 2, "rejects": 2, "feedback": 1, "suppressed": SUPPRESSED}
        row = await stats_row(url, want)
        assert {k: row[k] for k in want} == want
    finally:
        release.set()
        stop.set()
        await asyncio.wait_for(task, 30)

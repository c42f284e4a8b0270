"""The stats stage on a real broker: outcomes -> stats topic -> /stats and ``wxsub stats``."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from tests.pipeline.harness import ROOT, free_port
from wxsub.agents.rules.stats import day_of
from wxsub.schemas.internal import Outcome, encode_internal, user_key
from wxsub.settings import KafkaSettings, Settings, WorkerSettings
from wxsub.worker import create_worker

pytestmark = pytest.mark.kafka

APP = "wxstats000000001"
TPL = "TPL_ORDER"


def settings(bootstrap: str, prefix: str, state: Path) -> Settings:
    return Settings(
        kafka=KafkaSettings(bootstrap=bootstrap, topic_prefix=prefix, partitions=3),
        worker=WorkerSettings(
            app_id=f"app-{prefix}", web_port=free_port(), state_dir=state, session_timeout_ms=6000
        ),
    )


@asynccontextmanager
async def running(s: Settings) -> AsyncIterator[str]:
    """A worker running only the stats stage; yields its base URL."""
    worker = create_worker(s, ["stats"])
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    url = f"http://127.0.0.1:{s.worker.web_port}"
    try:
        await until_healthy(url, task)
        yield url
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def until_healthy(url: str, task: asyncio.Task[None], timeout: float = 60) -> None:
    """Wait until the worker's stages have their partitions (topics exist by then)."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=url) as http:
        while time.monotonic() < deadline and not task.done():
            try:
                if (await http.get("/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError("the worker did not become healthy")


def out(reason: str, openid: str = "", stage: str = "decide", **kw: Any) -> Outcome:
    kind = kw.pop("kind", "order_status")
    return Outcome(
        f"e-{uuid.uuid4().hex[:6]}", kind, reason, stage, appid=APP, openid=openid,
        template_id=kw.pop("template_id", TPL), at=int(time.time() * 1000), **kw,
    )  # fmt: skip


async def publish(s: Settings, outcomes: Iterable[Outcome]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=s.kafka.bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        for o in outcomes:
            key = user_key(o.appid, o.openid) if o.openid else o.event_id
            await producer.send(s.kafka.topic("outcomes"), encode_internal(o), key=key.encode())
        await producer.flush()
    finally:
        await producer.stop()


async def stats_until(url: str, want: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
    """Poll /stats until the TPL row has ``want``'s values (returns the last row seen)."""
    deadline = time.monotonic() + timeout
    row: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=url) as http:
        while time.monotonic() < deadline:
            try:
                reply = await http.get("/stats", params={"appid": APP, "template": TPL})
            except httpx.TransportError:
                reply = None
            if reply is not None and reply.status_code == 200 and reply.json()["rows"]:
                row = reply.json()["rows"][0]
                if all(row.get(k) == v for k, v in want.items()):
                    return row
            await asyncio.sleep(0.5)
    return row


SUPPRESSED = {"no_credit": 2, "capped": 1}
FIRST = [
    out("applied", "u1", kind="subscription", detail="popup accept"),
    out("applied", "u2", kind="subscription", detail="popup accept"),
    out("duplicate", "u2", kind="subscription", detail="popup accept"),
    out("sent", "u1", stage="deliver", errcode=0),
    out("failed", "u2", stage="deliver", errcode=40003),
    out("no_credit", "u3"),
    out("no_credit", "u4"),
    out("capped", "u5"),
    out("applied", "u6", kind="watch"),
    out("orphan", kind="logistics", template_id=""),
]
SECOND = [
    out("applied", "u1", kind="subscription", detail="change reject"),  # after u1's send
    out("applied", "u3", kind="subscription", detail="popup reject"),  # never sent
    out("sent", "u2", stage="deliver", errcode=0),
]


async def test_stats_add_up_across_partitions_and_survive_a_new_worker(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    s = settings(kafka_bootstrap, f"st{uuid.uuid4().hex[:6]}.", tmp_path / "state1")
    async with running(s) as url:
        await publish(s, FIRST)
        first = {"sent": 1, "granted": 2, "failed": {"40003": 1}, "suppressed": SUPPRESSED}
        row = await stats_until(url, first)
        assert {k: row[k] for k in first} == first
        assert row["day"] == day_of(FIRST[0].at, None)
    # a second worker with an empty state dir: the store comes back from its changelog
    s2 = Settings(s.kafka, WorkerSettings(**{**vars(s.worker), "state_dir": tmp_path / "state2"}))
    async with running(s2) as url:
        await publish(s2, SECOND)
        want = {"granted": 2, "sent": 2, "rejects": 2, "feedback": 1, "suppressed": SUPPRESSED}
        row = await stats_until(url, want)
    assert {k: row[k] for k in want} == want
    assert row["in_doubt"] == row["receipts"] == 0

    env = {
        **os.environ,
        "WXSUB_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "WXSUB_KAFKA_TOPIC_PREFIX": s.kafka.topic_prefix,
    }
    cmd = [sys.executable, "-m", "wxsub", "stats"]
    as_json = subprocess.run([*cmd, "--json"], env=env, cwd=ROOT, capture_output=True, timeout=60)
    assert as_json.returncode == 0, as_json.stderr.decode()
    rows = {(r["template"]): r for r in orjson.loads(as_json.stdout)}
    assert rows[TPL] == row
    assert rows["-"]["suppressed"] == {"orphan": 1}  # no openid, no template configured
    table = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, timeout=60, text=True)
    assert table.returncode == 0, table.stderr
    assert f"{APP}  {TPL}" in table.stdout and "no_credit=2" in table.stdout
    assert table.stdout.splitlines()[-1].startswith("  ") or "total" in table.stdout

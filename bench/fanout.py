"""Fan-out (one price drop -> N watchers -> N intents) and restart with state for N users.

Setup writes the state straight to the changelogs, in the bytes the stages write themselves: N
``WatchState`` entries under one SKU's prefix (products' ``watches`` store) and N ``UserState``
entries with credits (decide's ``users`` store). The worker restores both on start.

* fan-out: publish one price drop; time until decide has committed N candidates (metrics:
  ``wxsub_records_total{stage="decide"}``) and N intents were produced.
* restart: after the fan-out the users store holds N users (with their dedupe and cap memory).
  Stop the worker, start it again (warm: local RocksDB kept; cold: state dir wiped, everything
  restored from the changelogs); time from process start until a probe event's intent is
  committed, and the worker's RSS.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench.common import APPID, Deployment, Worker, openid, order_event, produce, wait_until
from wxsub.agents.rules.watches import WatchState
from wxsub.schemas import encode
from wxsub.schemas.records import ProductPriceChanged, target_key
from wxsub.streams.outbox import partition_for
from wxsub.streams.topics import changelog_name

__all__ = ["run_fanout"]

STAGES = "orders,products,decide"
SKU = "sku-hot"


async def seed_watchers(dep: Deployment, n: int) -> None:
    topic = changelog_name(dep.kafka, dep.app_id, "products", "watches")
    part = partition_for(target_key(APPID, "sku", SKU).encode(), dep.partitions)

    def entries() -> Any:
        for i in range(n):
            w = WatchState(APPID, openid(i), "sku", SKU, "price_drop", None, 1, f"w-{i}")
            yield topic, w.key.encode(), orjson.dumps(w)

    await produce(dep.bootstrap, ((t, k, v) for t, k, v in entries()), partition=part)


async def run_fanout(
    bootstrap: str, workdir: Path, n: int, modes: tuple[str, ...] = ("warm", "cold")
) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    dep = Deployment(bootstrap, workdir)
    await dep.create_topics()
    t = time.perf_counter()
    await seed_watchers(dep, n)
    await dep.seed_users(n, credits=3)
    out: dict[str, Any] = {"watchers": n, "seed_s": time.perf_counter() - t}
    worker = dep.start(STAGES)
    t = time.perf_counter()
    try:
        await wait_until(worker.healthy, 600, 0.2, "restore")
        out["first_start_s"] = time.perf_counter() - t
        out.update(await _fan_out(dep, worker, n))
        worker.stop()
        for mode in modes:
            if mode == "cold":
                shutil.rmtree(workdir / "state0", ignore_errors=True)
            worker = dep.start(STAGES)
            out[f"restart_{mode}"] = await _restart(dep, worker, n, mode)
            worker.stop()
    except Exception:
        print(worker.tail())
        raise
    finally:
        worker.stop()
    return out


async def _fan_out(dep: Deployment, worker: Worker, n: int) -> dict[str, Any]:
    at = datetime.now(UTC)
    ev = ProductPriceChanged("pd-1", at, APPID, SKU, "超轻跑步鞋", 39_900, 29_900)
    cpu0, t0 = worker.cpu(), time.perf_counter()
    await produce(dep.bootstrap, [(dep.topic("products"), ev.key.encode(), encode(ev))])

    def done() -> bool:
        m = worker.metrics()
        return bool(worker.total(m, "wxsub_records_total", stage="decide") >= n)

    await wait_until(done, 120 + n / 1000, 0.5, "fan-out")
    wall, cpu = time.perf_counter() - t0, worker.cpu() - cpu0
    m = worker.metrics()
    return {
        "fanout_s": wall,
        "intents": worker.total(m, "wxsub_intents_total"),
        "fanout_per_s": n / wall,
        "fanout_cpu_us": cpu / n * 1e6,
        "rss_mib_after_fanout": worker.rss_mib(),
    }


async def _restart(dep: Deployment, worker: Worker, n: int, tag: str) -> dict[str, Any]:
    """Seconds from process start until a probe event's intent is committed; RSS then."""
    t0 = time.perf_counter()
    _, key, raw = order_event(0, openid(n - 1), int(time.time() * 1000), f"probe{tag}", steps=1)
    await produce(dep.bootstrap, [(dep.topic("order-status"), key, raw)])

    def resumed() -> bool:
        try:
            m = worker.metrics()
        except OSError:
            return False
        return bool(worker.total(m, "wxsub_records_total", stage="decide") >= 1)

    await wait_until(resumed, 600, 0.2, f"{tag} restart")
    await asyncio.sleep(0)
    return {"resume_s": time.perf_counter() - t0, "rss_mib": worker.rss_mib()}

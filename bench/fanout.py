"""Fan-out (one price drop -> N watchers -> N intents) and restart with state for N users.

Setup writes the state straight to the changelogs, in the bytes the stages write themselves: N
``WatchState`` entries under one SKU's prefix (products' ``watches`` store) and N ``UserState``
entries with credits (decide's ``users`` store). The worker restores both on start.

* fan-out: publish one price drop; time until decide has committed N candidates (metrics:
  ``wxsub_records_total{stage="decide"}``, summed over the workers) and N intents were produced.
  CPU is summed over the worker processes. Layouts (each on a deployment of its own):

  - ``one``: one ``wxsub worker --stages orders,products,decide`` (the reference row);
  - ``two``: two identical workers, as an operator scales out: each stage's consumer group
    spreads its partitions over both, so the SKU's products partition runs in one of them and
    decide's 8 partitions are split 4/4 (the fan-out is parallel in decide);
  - ``split``: ``--stages orders,products`` | ``--stages decide`` x 2.

* restart (layout ``one`` only): after the fan-out the users store holds N users (with their
  dedupe and cap memory). Stop the worker, start it again (warm: local RocksDB kept; cold: state
  dir wiped, everything restored from the changelogs); time from process start until a probe
  event's intent is committed, and the worker's RSS.

* restore rate (after the restarts): every changelog partition of the deployment restored into
  fresh stores by the runtime's own ``restore_all`` (records restored per second), beside a raw
  read of the same partitions by a consumer configured like the restore consumer that only
  counts the records; alternated raw, restore, restore, raw, medians.
* restock (``--restock STOCK``, layout ``one``): N restock watchers of another SKU, stored the
  way earlier versions stored them (no serving queue yet); a restock to STOCK units tells the
  first STOCK watchers (``restock_factor`` 1.0): the first restock includes the one-off pass
  that queues the N watches; then a stock-out and a second restock (queue only). Time until
  decide has committed the told candidates, and the intents.

``python -m bench.fanout -n 200000 --layouts one,two [--profile DIR]`` runs it alone (a
LocalKafka unless ``--bootstrap``); ``--profile`` runs every worker under pyinstrument.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bench.common import (
    APPID,
    Deployment,
    Worker,
    broker,
    openid,
    order_event,
    produce,
    wait_until,
)
from wxsub.agents.rules.watches import WatchState
from wxsub.schemas import encode
from wxsub.schemas.records import ProductPriceChanged, ProductStockChanged, target_key
from wxsub.streams.connection import client_kwargs
from wxsub.streams.outbox import partition_for
from wxsub.streams.restore import restore_all, restore_consumer
from wxsub.streams.store import PartitionStore
from wxsub.streams.topics import changelog_name

__all__ = ["LAYOUTS", "main", "run_fanout", "run_restock"]

STAGES = "orders,products,decide"
SKU = "sku-hot"
RESTOCK_SKU = "sku-back"
LAYOUTS: dict[str, tuple[str, ...]] = {
    "one": (STAGES,),
    "two": (STAGES, STAGES),
    "split": ("orders,products", "decide", "decide"),
}


async def seed_watchers(dep: Deployment, n: int, kind: str = "price_drop", sku: str = SKU) -> None:
    topic = changelog_name(dep.kafka, dep.app_id, "products", "watches")
    part = partition_for(target_key(APPID, "sku", sku).encode(), dep.partitions)

    def entries() -> Any:
        for i in range(n):
            # watched an hour ago (a watch lives watch_ttl_s; distinct times: FCFS order)
            at = int(time.time() * 1000) - 3_600_000 + i
            w = WatchState(APPID, openid(i), "sku", sku, kind, None, at, f"w-{i}")
            yield topic, w.key.encode(), orjson.dumps(w)

    await produce(
        dep.bootstrap, ((t, k, v) for t, k, v in entries()), partition=part, security=dep.security
    )


async def run_fanout(
    bootstrap: str,
    workdir: Path,
    n: int,
    modes: tuple[str, ...] = ("warm", "cold"),
    layouts: tuple[str, ...] = ("one", "two"),
    profile: Path | None = None,
) -> dict[str, Any]:
    """The fan-out per layout; the first layout's figures also at the top level (and the
    restarts, when ``one`` is run)."""
    out: dict[str, Any] = {"watchers": n, "layouts": {}}
    for layout in layouts:
        r = await _run_layout(bootstrap, workdir / layout, n, layout, modes, profile)
        out["layouts"][layout] = r
        print(f"  layout {layout} ({' | '.join(LAYOUTS[layout])}): {r['fanout_s']:.1f} s, "
              f"{r['fanout_per_s']:.0f} intents/s, {r['fanout_cpu_us']:.1f} µs CPU/intent "
              f"(summed over {len(LAYOUTS[layout])} processes: {r['cpu_us_per_process']}), "
              f"intents={r['intents']:.0f}",
              flush=True)  # fmt: skip
    first = out["layouts"][layouts[0]]
    out.update({k: v for k, v in first.items() if k not in out})
    return out


async def _run_layout(
    bootstrap: str,
    workdir: Path,
    n: int,
    layout: str,
    modes: tuple[str, ...],
    profile: Path | None,
) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    dep = Deployment(bootstrap, workdir)
    await dep.create_topics()
    t = time.perf_counter()
    await seed_watchers(dep, n)
    await dep.seed_users(n, credits=3)
    out: dict[str, Any] = {"seed_s": time.perf_counter() - t}
    stages = LAYOUTS[layout]

    def prof(i: int) -> Path | None:
        return profile / f"{layout}-{i}-{stages[i].replace(',', '+')}.txt" if profile else None

    workers = [dep.start(s, index=i, profile=prof(i)) for i, s in enumerate(stages)]
    t = time.perf_counter()
    try:
        await wait_until(lambda: all(w.healthy() for w in workers), 600, 0.2, "restore")
        out["first_start_s"] = time.perf_counter() - t
        out.update(await _fan_out(dep, workers, n))
        for w in workers:
            w.stop(60 if profile else 20)
        if layout != "one":
            return out
        for mode in modes:
            if mode == "cold":
                shutil.rmtree(workdir / "state0", ignore_errors=True)
            workers = [dep.start(STAGES)]
            out[f"restart_{mode}"] = await _restart(dep, workers[0], n, mode)
            workers[0].stop()
        if modes:
            out["restore_rate"] = await restore_rate(dep, workdir / "restore-probe")
    except Exception:
        for w in workers:
            print(w.tail())
        raise
    finally:
        for w in workers:
            w.stop()
    return out


def _sum(workers: list[Worker], name: str, tries: int = 5, **labels: str) -> float:
    """A counter summed over the workers (-1 when a scrape failed ``tries`` times: a worker's
    event loop can be busy for a while with a large batch, more so under a profiler)."""
    total = 0.0
    for w in workers:
        for attempt in range(tries):
            try:
                total += w.total(w.metrics(), name, **labels)
                break
            except OSError:
                if attempt == tries - 1:
                    return -1.0
    return total


async def _fan_out(dep: Deployment, workers: list[Worker], n: int) -> dict[str, Any]:
    at = datetime.now(UTC)
    ev = ProductPriceChanged("pd-1", at, APPID, SKU, "超轻跑步鞋", 39_900, 29_900)
    cpu0, t0 = [w.cpu() for w in workers], time.perf_counter()
    await produce(
        dep.bootstrap, [(dep.topic("products"), ev.key.encode(), encode(ev))], security=dep.security
    )

    def done() -> bool:
        return _sum(workers, "wxsub_records_total", tries=1, stage="decide") >= n

    await wait_until(done, 120 + n / 1000, 0.5, "fan-out")
    wall = time.perf_counter() - t0
    cpu = [w.cpu() - c for w, c in zip(workers, cpu0, strict=True)]
    return {
        "fanout_s": wall,
        "intents": _sum(workers, "wxsub_intents_total"),
        "fanout_per_s": n / wall,
        "fanout_cpu_us": sum(cpu) / n * 1e6,
        "cpu_us_per_process": [round(c / n * 1e6, 1) for c in cpu],
        "rss_mib_after_fanout": max(w.rss_mib() for w in workers),
    }


async def _restart(dep: Deployment, worker: Worker, n: int, tag: str) -> dict[str, Any]:
    """Seconds from process start until a probe event's intent is committed; RSS then."""
    t0 = time.perf_counter()
    _, key, raw = order_event(0, openid(n - 1), int(time.time() * 1000), f"probe{tag}", steps=1)
    await produce(dep.bootstrap, [(dep.topic("order-status"), key, raw)], security=dep.security)

    def resumed() -> bool:
        try:
            m = worker.metrics()
        except OSError:
            return False
        return bool(worker.total(m, "wxsub_records_total", stage="decide") >= 1)

    await wait_until(resumed, 600, 0.2, f"{tag} restart")
    await asyncio.sleep(0)
    return {"resume_s": time.perf_counter() - t0, "rss_mib": worker.rss_mib()}


async def _changelog_partitions(dep: Deployment) -> list[TopicPartition]:
    prefix = changelog_name(dep.kafka, dep.app_id, "", "").removesuffix("--changelog")
    admin = AIOKafkaAdminClient(**client_kwargs(dep.kafka))
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(prefix)]
        names = [t for t in names if t.endswith("-changelog")]
    finally:
        await admin.close()
    return [TopicPartition(t, p) for t in sorted(names) for p in range(dep.partitions)]


async def _raw_read(
    bootstrap: str, tps: list[TopicPartition], security: Mapping[str, Any]
) -> tuple[int, float]:
    """Records of ``tps`` read to their ends and counted (the restore consumer's settings)."""
    consumer = await restore_consumer(bootstrap, security)
    try:
        t0 = time.perf_counter()
        ends = await consumer.end_offsets(tps)
        todo = {tp: end for tp, end in ends.items() if end > 0}
        consumer.assign(list(todo))
        await consumer.seek_to_beginning(*todo)
        n = 0
        while todo:
            batch = await consumer.getmany(*todo, timeout_ms=500, max_records=10_000)
            for recs in batch.values():
                n += len(recs)
            for tp in list(todo):
                if await consumer.position(tp) >= todo[tp]:
                    del todo[tp]
                    consumer.pause(tp)
        return n, time.perf_counter() - t0
    finally:
        await consumer.stop()


async def _restore_once(
    bootstrap: str, tps: list[TopicPartition], state: Path, security: Mapping[str, Any]
) -> float:
    """The runtime's restore of ``tps`` into fresh stores (as a cold start does)."""
    shutil.rmtree(state, ignore_errors=True)
    stores = {tp: PartitionStore(tp.topic, tp.partition, state / f"{tp.topic}-{tp.partition}")
              for tp in tps}  # fmt: skip
    consumer = await restore_consumer(bootstrap, security)
    try:
        t0 = time.perf_counter()
        await restore_all(consumer, stores)
        wall = time.perf_counter() - t0
    finally:
        await consumer.stop()
        for store in stores.values():
            store.close()
    return wall


async def restore_rate(dep: Deployment, state: Path) -> dict[str, Any]:
    """Cold restore throughput against a raw read of the same changelogs (ABBA, means)."""
    tps = await _changelog_partitions(dep)
    raw_s: list[float] = []
    restore_s: list[float] = []
    records = 0
    for arm in ("raw", "restore", "restore", "raw"):
        if arm == "raw":
            records, wall = await _raw_read(dep.bootstrap, tps, dep.security)
            raw_s.append(wall)
        else:
            restore_s.append(await _restore_once(dep.bootstrap, tps, state, dep.security))
    shutil.rmtree(state, ignore_errors=True)
    raw, restore = sum(raw_s) / len(raw_s), sum(restore_s) / len(restore_s)
    return {
        "records": records,
        "raw_per_s": records / raw,
        "restore_per_s": records / restore,
        "ratio": raw / restore,
        "raw_s": raw_s,
        "restore_s": restore_s,
    }


async def run_restock(bootstrap: str, workdir: Path, n: int, stock: int) -> dict[str, Any]:
    """The stock-limited case (see the module doc): one worker, two restocks of ``stock``."""
    workdir.mkdir(parents=True, exist_ok=True)
    dep = Deployment(bootstrap, workdir)
    await dep.create_topics()
    await seed_watchers(dep, n, "restock", RESTOCK_SKU)
    await dep.seed_users(n, credits=3)
    worker = dep.start(STAGES)
    out: dict[str, Any] = {"watchers": n, "stock": stock}
    try:
        await wait_until(worker.healthy, 600, 0.2, "restore")
        for i, tag in enumerate(("first", "second")):
            now = datetime.now(UTC)
            events = [ProductStockChanged(f"rs-{i}", now, APPID, RESTOCK_SKU, "跑鞋", 0, stock)]
            if i:  # sold out in between
                events.insert(0, ProductStockChanged(f"so-{i}", now, APPID, RESTOCK_SKU, "跑鞋",
                                                     stock, 0))  # fmt: skip
            cpu0, t0 = worker.cpu(), time.perf_counter()
            await produce(dep.bootstrap, [(dep.topic("products"), e.key.encode(), encode(e))
                                          for e in events], security=dep.security)  # fmt: skip

            def told(want: int = (i + 1) * stock) -> bool:
                return _sum([worker], "wxsub_records_total", tries=1, stage="decide") >= want

            await wait_until(told, 120 + n / 1000, 0.2, f"{tag} restock")
            out[f"{tag}_s"] = time.perf_counter() - t0
            out[f"{tag}_cpu_s"] = worker.cpu() - cpu0
            out[f"{tag}_intents"] = _sum([worker], "wxsub_intents_total")
    except Exception:
        print(worker.tail())
        raise
    finally:
        worker.stop()
    print(f"  restock to {stock} of {n} watchers: first {out['first_s']:.1f} s (queues the "
          f"watches), second {out['second_s']:.1f} s; intents {out['second_intents']:.0f}",
          flush=True)  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fanout", description=__doc__)
    parser.add_argument("-n", "--watchers", type=int, default=200_000)
    parser.add_argument("--layouts", default="one,two", help=f"of {','.join(LAYOUTS)}")
    parser.add_argument("--restarts", default="", help="warm,cold (layout one only)")
    parser.add_argument("--profile", type=Path, default=None, help="pyinstrument reports here")
    parser.add_argument("--bootstrap", default=None)
    parser.add_argument("--restock", type=int, default=0, help="also the stock-limited case")
    args = parser.parse_args(argv)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # leader-election retry noise
    layouts = tuple(s for s in args.layouts.split(",") if s)
    modes = tuple(s for s in args.restarts.split(",") if s)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    with broker(args.bootstrap) as boot, tempfile.TemporaryDirectory(prefix="wxfan-") as tmp:
        r = asyncio.run(run_fanout(boot, Path(tmp), args.watchers, modes, layouts, args.profile))
        if args.restock:
            rs = asyncio.run(run_restock(boot, Path(tmp) / "restock", args.watchers, args.restock))
            print(orjson.dumps({"case": "restock", **rs}).decode())
    for layout, x in r["layouts"].items():
        print(orjson.dumps({"layout": layout, **x}).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())

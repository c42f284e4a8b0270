"""Lifecycle benchmark: a simulated month of shop traffic on a fast clock; does kept state level
off once every retention is reached, instead of growing with history?

The orders, products, decide and deliver stages run in this process on real RocksDB stores (as
``bench/agents_micro.py`` runs them: a producer stand-in builds the record batches), their
clock set to simulated time; every 10 simulated minutes (``--step-min``) each stage processes
that slice's records, then runs its timer (orphans, releases, retries, and the expiry sweep).
WeChat is a stand-in that accepts every send. Each store's changelog is kept as the broker would
after compaction (the latest value per key, tombstones removing the key) and counted as written.

Per simulated day it prints: live keys per store, the stores' live bytes (keys + values) and
on-disk bytes (SST and write-ahead log files after a flush and a full compaction, which RocksDB
does by itself as data grows: forced here each simulated day, so the number is live data), the
changelog bytes written so far and after compaction, the ``deliveries`` topic's live keys, and
the cold-restore time: opening empty stores and replaying the compacted changelogs into them
(RocksDB only; the broker fetch is not in it; the fastest of three).

Workload per day at ``--scale 1`` (the issue's shop): 100,000 orders of 200,000 users, each order
5 statuses, 5 logistics scans and 2 subscription accepts; 50,000 live watches (renewed over the
watch time-to-live, 10% unwatched), 2,000 price drops. Retentions are shortened so that a month
shows the levelling (``RETENTION``): orders 7 days, ledger 3 days, watches 10 days, unwatches
3 days, dedupe 3 days (default: stale_after_s + 1 day).

    python -m bench.lifecycle [--days 30] [--scale 0.01] [--partitions 2] [--no-expiry]
                              [--step-min 10]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import random
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from bench.agents_micro import _consumer_records, _Producer, _records
from bench.common import APPID, ORDER_TID, merchants_toml, openid
from wxsub.agents.base import StageEnv
from wxsub.agents.decide import DecideStage
from wxsub.agents.deliver import DeliverStage
from wxsub.agents.orders import OrdersStage
from wxsub.agents.products import ProductsStage
from wxsub.merchants import load_merchants
from wxsub.schemas import encode
from wxsub.schemas.records import (
    LogisticsUpdated,
    OrderItem,
    OrderStatusChanged,
    ProductPriceChanged,
    SubscriptionEvent,
    Target,
    Watch,
)
from wxsub.settings import Settings
from wxsub.streams.outbox import partition_for
from wxsub.streams.stage import PartitionContext
from wxsub.streams.store import RESERVED_PREFIX, PartitionStore
from wxsub.wechat.client import SendResult

__all__ = ["main"]

MIN, HOUR, DAY = 60_000, 3_600_000, 86_400_000
START = 1_767_225_600_000  # 2026-01-01 00:00 UTC
RETENTION = """
[apps.{appid}.retention]
order_s = 604800
order_idle_s = 1209600
delivery_s = 259200
watch_ttl_s = 864000
unwatch_s = 259200
"""
STORES = (("orders", "orders"), ("products", "watches"), ("decide", "users"), ("deliver", "ledger"))


class _Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> int:
        return self.now


class _WeChat:
    """Accepts every send (the deliver stage's client)."""

    def __init__(self) -> None:
        self.msgid = 10**17

    async def send(self, appid: str, body: Any) -> SendResult:
        self.msgid += 1
        return SendResult(self.msgid)


@dataclass
class _Log:
    """A changelog (or compacted topic) as compaction leaves it, and the bytes written to it."""

    live: dict[bytes, bytes] = field(default_factory=dict)
    written: int = 0

    def add(self, key: bytes, value: bytes | None) -> None:
        self.written += len(key) + (len(value) if value is not None else 0)
        if value is None:
            self.live.pop(key, None)
        else:
            self.live[key] = value

    def live_bytes(self) -> int:
        return sum(len(k) + len(v) for k, v in self.live.items())


class _Sim:
    def __init__(
        self, root: Path, scale: float, partitions: int, expiry: bool, step_ms: int
    ) -> None:
        self.root, self.scale, self.parts, self.step_ms = root, scale, partitions, step_ms
        self.rng = random.Random(7)
        toml = merchants_toml() + (RETENTION.format(appid=APPID) if expiry else "")
        (root / "merchants.toml").write_text(toml, encoding="utf-8")
        # without expiry: sweeps once a year of simulated time (never within the run)
        sweep_s = 600.0 if expiry else 365 * 86_400.0
        self.settings = Settings().with_overrides(
            kafka={"partitions": partitions}, worker={"sweep_interval_s": sweep_s}
        )
        self.clock = _Clock()
        from wxsub.streams.metrics import WorkerMetrics

        env = StageEnv(
            self.settings, load_merchants(root / "merchants.toml"), WorkerMetrics(), self.clock
        )
        self.env = env
        self.stages: dict[str, Any] = {
            "orders": OrdersStage(env),
            "products": ProductsStage(env),
            "decide": DecideStage(env),
            "deliver": DeliverStage(env, _WeChat()),  # type: ignore[arg-type]
        }
        self.stores = {
            (stage, p): {store: PartitionStore(store, p, root / "state" / f"{stage}-{store}-{p}")}
            for stage, store in STORES
            for p in range(partitions)
        }
        self.logs = {
            (stage, store, p): _Log() for stage, store in STORES for p in range(partitions)
        }
        self.deliveries = _Log()
        self.users = max(1, int(200_000 * scale))
        self.skus = max(1, int(20_000 * scale))
        self.n = 0
        self.events: list[tuple[int, str, bytes, bytes]] = []  # (t, logical topic, key, value)

    # --- traffic ----------------------------------------------------------------------------

    def _eid(self, hint: str) -> str:
        self.n += 1
        return f"{hint}{self.n}"

    def _add(self, t: int, topic: str, rec: Any) -> None:
        self.events.append((t, topic, rec.key.encode(), encode(rec)))

    def day_traffic(self, day: int) -> None:
        rng, base = self.rng, START + day * DAY
        for i in range(max(1, int(100_000 * self.scale))):
            t = base + rng.randrange(18 * HOUR)
            oid, user = f"d{day}o{i}", openid(rng.randrange(self.users))
            for _ in range(2):
                sub = SubscriptionEvent(self._eid("s"), _at(t - MIN), APPID, user, "popup",
                                        ORDER_TID, (t - MIN) // 1000, "accept")  # fmt: skip
                self._add(t - MIN, "subscriptions", sub)
            item = (OrderItem("sku1", "商品", 1),)
            statuses = ("created", "paid", "shipped", "delivered", "completed")
            for k, status in enumerate(statuses):
                at = t + k * HOUR
                self._add(at, "order-status", OrderStatusChanged(
                    self._eid("o"), _at(at), APPID, user, oid, status, 990, items=item))  # type: ignore[arg-type]  # fmt: skip
            for k, state in enumerate(("picked_up", "in_transit", "in_transit",
                                       "out_for_delivery", "delivered")):  # fmt: skip
                at = t + 2 * HOUR + k * 20 * MIN
                self._add(at, "logistics", LogisticsUpdated(
                    self._eid("l"), _at(at), APPID, oid, "SF1", "SF", state))  # type: ignore[arg-type]  # fmt: skip
        # watches renewed over their 10-day time-to-live: 1/10 of the live count per day
        for _ in range(max(1, int(50_000 * self.scale / 10))):
            at = base + rng.randrange(DAY)
            op: Literal["watch", "unwatch"] = "unwatch" if rng.random() < 0.1 else "watch"
            target = Target("sku", f"sku{rng.randrange(self.skus)}")
            w = Watch(self._eid("w"), _at(at), APPID, openid(rng.randrange(self.users)), op,
                      target, "price_drop")  # type: ignore[arg-type]  # fmt: skip
            self._add(at, "watches", w)
        for _ in range(max(1, int(2_000 * self.scale))):
            at = base + rng.randrange(DAY)
            sku = f"sku{rng.randrange(self.skus)}"
            self._add(at, "products", ProductPriceChanged(
                self._eid("p"), _at(at), APPID, sku, "商品", 2000, 1500))  # fmt: skip

    # --- running ------------------------------------------------------------------------------

    async def step(self, end: int) -> None:
        self.events.sort(key=lambda e: e[0])
        cut = 0
        while cut < len(self.events) and self.events[cut][0] < end:
            cut += 1
        due, self.events = self.events[:cut], self.events[cut:]
        self.clock.now = end
        by_stage: dict[str, list[tuple[str, bytes, bytes]]] = {s: [] for s, _ in STORES}
        route = {"order-status": "orders", "logistics": "orders", "products": "products",
                 "watches": "products", "subscriptions": "decide"}  # fmt: skip
        for _, topic, key, value in due:
            by_stage[route[topic]].append((topic, key, value))
        cands = await self._run("orders", by_stage["orders"])
        cands += await self._run("products", by_stage["products"])
        intents = await self._run("decide", by_stage["decide"] + cands)
        await self._run("deliver", intents)

    async def _run(self, stage: str, records: list[tuple[str, bytes, bytes]]) -> list[Any]:
        """Process ``records`` then run the timer, per partition; the records produced for the
        next stage, as (logical topic, key, value)."""
        agent, topic = self.stages[stage], self.settings.kafka.topic
        by_part: dict[int, list[Any]] = {}
        for logical, key, value in records:
            p = partition_for(key, self.parts)
            by_part.setdefault(p, []).append((p, key, value, logical))
        out: list[Any] = []
        for p in range(self.parts):
            recs = [
                r
                for logical in {e[3] for e in by_part.get(p, ())}
                for r in _consumer_records(
                    topic(logical), [(q, k, v) for q, k, v, lg in by_part[p] if lg == logical]
                )
            ]
            stores = self.stores[(stage, p)]
            if recs:
                recs.sort(key=lambda r: r.offset)
                out += await self._turn(stage, p, stores, lambda c, rs=recs: agent.process(c, rs))
            out += await self._turn(stage, p, stores, lambda c: agent.on_timer(c, self.clock.now))
            if stage == "deliver" and agent.unsettled(p):
                out += await self._turn(stage, p, stores, agent.settle)
        return out

    async def _turn(
        self, stage: str, p: int, stores: dict[str, PartitionStore], body: Any
    ) -> list[Any]:
        producer = _Producer()
        ctx = PartitionContext(p, stores, producer, transactional=False)  # type: ignore[arg-type]
        ctx.committer = lambda: self._commit(stage, ctx)
        await body(ctx)
        await self._commit(stage, ctx)
        out = []
        kafka = self.settings.kafka
        for logical, nxt in (("candidates", "c"), ("intents", "i"), ("deliveries", "d")):
            for _, key, value in _records(producer.batches, kafka.topic(logical)):
                if nxt == "d":
                    self.deliveries.add(key, value)
                else:
                    out.append((logical, key, value))
        return out

    async def _commit(self, stage: str, ctx: PartitionContext) -> None:
        await ctx.outbox.flush()
        for name, store in ctx.stores.items():
            log = self.logs[(stage, name, ctx.partition)]
            for key, value in store.pending().items():
                log.add(key, value)
            store.apply(None)
        callbacks, ctx.committed = ctx.committed, []
        for callback in callbacks:
            callback()
        await asyncio.sleep(0)  # let the deliver stage's calls run

    # --- measuring ----------------------------------------------------------------------------

    def restore_s(self) -> tuple[float, float]:
        """Replay every compacted changelog into empty stores (RocksDB writes only): (wall s,
        CPU s), each the least of three (the machine is shared; the wall time is mostly opening
        and closing eight stores, the CPU time grows with what is replayed)."""
        wall, cpu = [], []
        for n in range(3):
            cold = self.root / f"cold{n}"
            start, start_cpu = time.perf_counter(), time.process_time()
            for (stage, name, p), log in self.logs.items():
                store = PartitionStore(name, p, cold / f"{stage}-{name}-{p}")
                store.restore_many(list(log.live.items()))
                store.close()
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
            shutil.rmtree(cold, ignore_errors=True)
        return min(wall), min(cpu)

    def row(self, day: int) -> dict[str, Any]:
        for stores in self.stores.values():  # what RocksDB does by itself as data grows
            for store in stores.values():
                store._db.flush(wait=True)
                store._db.compact_range(None, None)
        keys = dict.fromkeys([name for _, name in STORES], 0)
        for (_, name, _), log in self.logs.items():
            keys[name] += len(log.live)
        files = (self.root / "state").rglob("*")
        disk = sum(f.stat().st_size for f in files if f.suffix in (".sst", ".log"))
        return {
            "day": day,
            **keys,
            "store_mb": sum(
                len(k) + len(v)
                for stores in self.stores.values()
                for store in stores.values()
                for k, v in store.scan(b"")
                if not k.startswith(RESERVED_PREFIX)
            )
            / 1e6,
            "disk_mb": disk / 1e6,
            "written_mb": sum(log.written for log in self.logs.values()) / 1e6,
            "compacted_mb": sum(log.live_bytes() for log in self.logs.values()) / 1e6,
            "deliveries": len(self.deliveries.live),
            "restore": self.restore_s(),
        }

    def close(self) -> None:
        for stores in self.stores.values():
            for store in stores.values():
                store.close()


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


HEADER = (
    f"{'day':>4} {'orders':>8} {'watches':>8} {'users':>8} {'ledger':>8} {'store MB':>9} "
    f"{'disk MB':>8} {'clog wr MB':>10} {'clog cmp MB':>11} {'deliv keys':>10} {'restore s':>9} "
    f"{'rst CPU s':>9}"
)


def _line(r: dict[str, Any]) -> str:
    return (
        f"{r['day']:>4} {r['orders']:>8} {r['watches']:>8} {r['users']:>8} {r['ledger']:>8} "
        f"{r['store_mb']:>9.2f} {r['disk_mb']:>8.1f} {r['written_mb']:>10.1f} "
        f"{r['compacted_mb']:>11.2f} {r['deliveries']:>10} {r['restore'][0]:>9.3f} "
        f"{r['restore'][1]:>9.3f}"
    )


async def run(
    days: int, scale: float, partitions: int, expiry: bool, root: Path, step_min: int = 10
) -> list[Any]:
    step = step_min * MIN
    sim = _Sim(root, scale, partitions, expiry, step)
    rows = []
    try:
        print(HEADER, flush=True)
        for day in range(days):
            sim.day_traffic(day)
            for n in range(DAY // step):
                await sim.step(START + day * DAY + (n + 1) * step)
            rows.append(sim.row(day + 1))
            print(_line(rows[-1]), flush=True)
    finally:
        sim.close()
    return rows


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--scale", type=float, default=0.01, help="of the issue's daily volume")
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--no-expiry", action="store_true", help="retention off: the baseline")
    parser.add_argument("--step-min", type=int, default=10, help="simulated minutes per turn")
    args = parser.parse_args(list(argv) if argv is not None else None)
    print(
        f"lifecycle: {args.days} days at scale {args.scale} ({int(100_000 * args.scale)} "
        f"orders/day), {args.partitions} partitions, expiry {'off' if args.no_expiry else 'on'}; "
        f"{platform.python_implementation()} {platform.python_version()}"
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lifecycle-") as tmp:
        asyncio.run(
            run(args.days, args.scale, args.partitions, not args.no_expiry, Path(tmp),
                args.step_min)
        )  # fmt: skip
    print(f"took {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()

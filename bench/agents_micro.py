"""Micro-benchmark of the agents' own per-event work, without a broker: CPU µs per event.

The orders and decide stages process the pipeline benchmark's workload (order-status events,
users with credits) in this process, on real RocksDB stores, with a producer stand-in that
only builds the record batches (aiokafka's own ``BatchBuilder``) and keeps them. What it
measures is everything the agents, the rules, the codecs, the stores and the outbox cost per
event; the Kafka client's fetch, produce and transactions are not in it (the pipeline
benchmark measures those, against a real broker). It prints a digest of everything the agents
produced and stored, so two code versions can be checked for identical results.

``--fanout N`` measures the other shape of decide's work instead: the candidates of one price
drop's fan-out (bench/fanout.py) to N watchers, each a distinct stored user with credits (as
the fan-out benchmark seeds them), through the decide stage alone; the candidates are the bytes
the products stage writes (``rules.watches.fanout_candidate``).

    python -m bench.agents_micro [--events 30000] [--users 6000] [--batch 500] [--profile]
    python -m bench.agents_micro --fanout 20000 [--batch 500]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import hashlib
import pstats
import tempfile
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import ConsumerRecord
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch

from bench.common import (
    APPID,
    ORDER_TID,
    PRICE_TID,
    RESTOCK_TID,
    merchants_toml,
    openid,
    order_events,
)
from wxsub.agents.base import StageEnv
from wxsub.agents.decide import DecideStage
from wxsub.agents.orders import OrdersStage
from wxsub.agents.rules.subscriptions import UserState, encode_user
from wxsub.agents.rules.watches import WatchState, fanout_candidate
from wxsub.merchants import load_merchants
from wxsub.schemas.internal import encode_internal, user_key
from wxsub.schemas.records import ProductPriceChanged
from wxsub.settings import Settings
from wxsub.streams.metrics import WorkerMetrics
from wxsub.streams.outbox import partition_for
from wxsub.streams.stage import PartitionContext
from wxsub.streams.store import PartitionStore

__all__ = ["main"]

NOW = 1_717_245_296_789
PARTITIONS = 8


class _Producer:
    """Builds record batches and keeps them: the part of producing that runs per record."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, int, Any]] = []
        self.client = self  # the outbox asks ``producer.client`` for a topic's partitions

    async def _wait_on_metadata(self, topic: str) -> set[int]:
        return set(range(PARTITIONS))

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(256 * 1024, 0, is_transactional=0)

    async def send_batch(self, builder: BatchBuilder, topic: str, partition: int) -> Any:
        self.batches.append((topic, partition, builder))
        return asyncio.get_running_loop().create_future()

    async def begin_transaction(self) -> None:
        pass


def _records(batches: list[tuple[str, int, Any]], topic: str) -> list[tuple[int, bytes, bytes]]:
    """(partition, key, value) of every record the agents produced on ``topic``."""
    out = []
    for t, p, builder in batches:
        if t != topic:
            continue
        for rec in DefaultRecordBatch(bytes(builder._build())):
            out.append((p, rec.key, rec.value))
    return out


def _consumer_records(topic: str, entries: Iterable[tuple[int, bytes, bytes]]) -> list[Any]:
    return [
        ConsumerRecord(topic, p, i, NOW, 0, k, v, None, len(k), len(v), ())
        for i, (p, k, v) in enumerate(entries)
    ]


def _context(stores: dict[str, PartitionStore], producer: _Producer, p: int) -> PartitionContext:
    return PartitionContext(p, stores, producer, transactional=False)  # type: ignore[arg-type]


async def _run_stage(
    agent: Any, stores: dict[int, dict[str, PartitionStore]], records: list[Any], batch: int
) -> tuple[float, _Producer]:
    """Process ``records`` per partition in batches of ``batch``; CPU seconds, the output."""
    producer = _Producer()
    by_partition: dict[int, list[Any]] = {}
    for rec in records:
        by_partition.setdefault(rec.partition, []).append(rec)
    start = time.process_time()
    for p, recs in sorted(by_partition.items()):
        for i in range(0, len(recs), batch):
            ctx = _context(stores[p], producer, p)
            await agent.process(ctx, recs[i : i + batch])
            await ctx.outbox.flush()
            for store in stores[p].values():
                store.apply(None)
    return time.process_time() - start, producer


def _stores(root: Path, name: str, store: str) -> dict[int, dict[str, PartitionStore]]:
    return {p: {store: PartitionStore(store, p, root / name / str(p))} for p in range(PARTITIONS)}


def _digest(*parts: Iterable[Any]) -> str:
    h = hashlib.sha256()
    for part in parts:
        for item in part:
            h.update(orjson.dumps(item, default=repr))
    return h.hexdigest()[:16]


def _env(root: Path) -> StageEnv:
    merchants_file = root / "merchants.toml"
    merchants_file.write_text(merchants_toml(), encoding="utf-8")
    return StageEnv(Settings(), load_merchants(merchants_file), WorkerMetrics(), clock=lambda: NOW)


def _seed_users(root: Path, openids: Iterable[str], state: UserState) -> dict[int, Any]:
    """decide's users stores, with ``state`` for each user (restored, as a worker's start)."""
    ustores = _stores(root, "decide", "users")
    seed = encode_user(state)
    for o in openids:
        key = user_key(APPID, o).encode()
        ustores[partition_for(key, PARTITIONS)]["users"].restore(key, seed)
    return ustores


async def _decide(
    env: StageEnv, ustores: dict[int, Any], cands: list[tuple[int, bytes, bytes]], batch: int
) -> dict[str, Any]:
    """The decide stage over ``cands`` (partition, key, value): its CPU and what it produced."""
    topic = env.settings.kafka.topic("candidates")
    cpu, out = await _run_stage(DecideStage(env), ustores, _consumer_records(topic, cands), batch)
    intents = _records(out.batches, env.settings.kafka.topic("intents"))
    final = [(k, v) for p in range(PARTITIONS) for k, v in ustores[p]["users"].scan(b"")]
    return {
        "candidates": len(cands),
        "intents": len(intents),
        "decide_us": cpu / max(len(cands), 1) * 1e6,
        "digest": _digest(cands, intents, final),  # the clock is fixed: decided_at is NOW
    }


async def _fanout(watchers: int, batch: int, root: Path) -> dict[str, Any]:
    """One price drop's candidates for ``watchers`` distinct users with credits (3 per template,
    as bench/fanout.py seeds them) through the decide stage."""
    env = _env(root)
    credits = {ORDER_TID: 3, PRICE_TID: 3, RESTOCK_TID: 3}
    ustores = _seed_users(root, (openid(i) for i in range(watchers)), UserState(credits=credits))
    at = datetime.fromtimestamp((NOW - 1000) / 1000, UTC)
    ev = ProductPriceChanged("pd-1", at, APPID, "sku-hot", "超轻跑步鞋", 39_900, 29_900)
    cands = []
    for i in range(watchers):
        w = WatchState(APPID, openid(i), "sku", "sku-hot", "price_drop", None, NOW - 3_600_000, "w")
        key = user_key(APPID, w.openid).encode()
        cands.append((partition_for(key, PARTITIONS), key,
                      encode_internal(fanout_candidate(w, ev, NOW - 500))))  # fmt: skip
    return {"events": 1, **await _decide(env, ustores, cands, batch)}


async def _bench(events: int, users: int, batch: int, root: Path) -> dict[str, Any]:
    env = _env(root)
    settings = env.settings
    orders = OrdersStage(env)
    order_topic, cand_topic = (
        settings.kafka.topic("order-status"),
        settings.kafka.topic("candidates"),
    )
    raw = [
        (partition_for(k, PARTITIONS), k, v) for _, k, v in order_events(events, users, NOW - 1000)
    ]
    ostores = _stores(root, "orders", "orders")
    ocpu, oout = await _run_stage(orders, ostores, _consumer_records(order_topic, raw), batch)

    credits = {ORDER_TID: events, PRICE_TID: events}
    ustores = _seed_users(root, (openid(i) for i in range(users)), UserState(credits=credits))
    cands = _records(oout.batches, cand_topic)
    return {"events": events, "orders_us": ocpu / events * 1e6,
            **await _decide(env, ustores, cands, batch)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--users", type=int, default=6_000)
    parser.add_argument("--batch", type=int, default=500)
    fanout_help = "decide alone over one price drop's fan-out to N watchers"
    parser.add_argument("--fanout", type=int, default=0, metavar="N", help=fanout_help)
    parser.add_argument("--profile", action="store_true", help="cProfile, top functions")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="agents-micro-") as tmp:
        prof = cProfile.Profile() if args.profile else None
        if prof:
            prof.enable()
        if args.fanout:
            work = _fanout(args.fanout, args.batch, Path(tmp))
        else:
            work = _bench(args.events, args.users, args.batch, Path(tmp))
        res = asyncio.run(work)
        if prof:
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(35)
    if args.fanout:
        print(f"1 price drop -> {res['candidates']} candidates -> {res['intents']} intents; "
              f"decide {res['decide_us']:.1f} µs/candidate; digest {res['digest']}")  # fmt: skip
        return
    print(
        f"{res['events']} events -> {res['candidates']} candidates -> {res['intents']} intents; "
        f"orders {res['orders_us']:.1f} µs/event, decide {res['decide_us']:.1f} µs/candidate, "
        f"sum {res['orders_us'] + res['decide_us']:.1f}; digest {res['digest']}"
    )


if __name__ == "__main__":
    main()

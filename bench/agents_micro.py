"""Micro-benchmark of the agents' own per-event work, without a broker: CPU µs per event.

The orders and decide stages process the pipeline benchmark's workload (order-status events,
users with credits) in this process, on real RocksDB stores, with a producer stand-in that
only builds the record batches (aiokafka's own ``BatchBuilder``) and keeps them. What it
measures is everything the agents, the rules, the codecs, the stores and the outbox cost per
event; the Kafka client's fetch, produce and transactions are not in it (the pipeline
benchmark measures those, against a real broker). It prints a digest of everything the agents
produced and stored, so two code versions can be checked for identical results.

    python -m bench.agents_micro [--events 30000] [--users 6000] [--batch 500] [--profile]
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
from pathlib import Path
from typing import Any

import orjson
from aiokafka import ConsumerRecord
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch

from bench.common import APPID, ORDER_TID, PRICE_TID, merchants_toml, openid, order_events
from wxsub.agents.base import StageEnv
from wxsub.agents.decide import DecideStage
from wxsub.agents.orders import OrdersStage
from wxsub.agents.rules.subscriptions import UserState, encode_user
from wxsub.merchants import load_merchants
from wxsub.schemas.internal import user_key
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


async def _bench(events: int, users: int, batch: int, root: Path) -> dict[str, Any]:
    settings = Settings()
    merchants_file = root / "merchants.toml"
    merchants_file.write_text(merchants_toml(), encoding="utf-8")
    env = StageEnv(settings, load_merchants(merchants_file), WorkerMetrics(), clock=lambda: NOW)
    orders, decide = OrdersStage(env), DecideStage(env)
    order_topic, cand_topic = (
        settings.kafka.topic("order-status"),
        settings.kafka.topic("candidates"),
    )
    raw = [
        (partition_for(k, PARTITIONS), k, v) for _, k, v in order_events(events, users, NOW - 1000)
    ]
    ostores = _stores(root, "orders", "orders")
    ocpu, oout = await _run_stage(orders, ostores, _consumer_records(order_topic, raw), batch)

    ustores = _stores(root, "decide", "users")
    seed = encode_user(UserState(credits={ORDER_TID: events, PRICE_TID: events}))
    for i in range(users):
        key = user_key(APPID, openid(i)).encode()
        ustores[partition_for(key, PARTITIONS)]["users"].restore(key, seed)
    cands = _records(oout.batches, cand_topic)
    dcpu, dout = await _run_stage(decide, ustores, _consumer_records(cand_topic, cands), batch)
    intents = _records(dout.batches, settings.kafka.topic("intents"))
    final = [
        (k, v) for p in range(PARTITIONS) for k, v in ustores[p]["users"].scan(b"")
    ]  # fmt: skip
    return {
        "events": events,
        "candidates": len(cands),
        "intents": len(intents),
        "orders_us": ocpu / events * 1e6,
        "decide_us": dcpu / max(len(cands), 1) * 1e6,
        "digest": _digest(cands, intents, final),  # the clock is fixed: decided_at is NOW
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--users", type=int, default=6_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--profile", action="store_true", help="cProfile, top functions")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="agents-micro-") as tmp:
        prof = cProfile.Profile() if args.profile else None
        if prof:
            prof.enable()
        res = asyncio.run(_bench(args.events, args.users, args.batch, Path(tmp)))
        if prof:
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(35)
    print(
        f"{res['events']} events -> {res['candidates']} candidates -> {res['intents']} intents; "
        f"orders {res['orders_us']:.1f} µs/event, decide {res['decide_us']:.1f} µs/candidate, "
        f"sum {res['orders_us'] + res['decide_us']:.1f}; digest {res['digest']}"
    )


if __name__ == "__main__":
    main()

"""The products stage's fan-out alone, in-process: ``python -m bench.products_micro [-n 200000]``.

N stored watches of one SKU (price drops with and without target prices, some restocks: 80%
match), one price drop through ``ProductsStage.process`` and its timer until the job is done,
with a recording context instead of a transaction (records are partitioned like the outbox
does). Prints CPU per watcher (``time.process_time``) and a sha256 over every record sent (topic,
key, value, partition): the same digest before and after a change means the same output.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from wxsub.agents.base import StageEnv
from wxsub.agents.products import ProductsStage
from wxsub.agents.rules.watches import WatchState
from wxsub.merchants import Merchants
from wxsub.schemas import encode
from wxsub.schemas.records import ProductPriceChanged
from wxsub.settings import Settings
from wxsub.streams.metrics import WorkerMetrics
from wxsub.streams.outbox import partition_for
from wxsub.streams.store import PartitionStore

__all__ = ["main"]

APPID, SKU, NOW = "wxbench00000000001", "sku-hot", 1_700_000_000_000


class _Ctx:
    """What the agent sees of a PartitionContext: stores, ``send`` and counter tallies."""

    def __init__(self, stores: dict[str, PartitionStore]) -> None:
        self.stores = stores
        self.partition = 0
        self.out: list[tuple[str, bytes, bytes, int]] = []
        self.tallies: dict[Any, float] = {}
        self.committed: list[Any] = []

    def on_commit(self, callback: Any) -> None:
        self.committed.append(callback)

    async def send(
        self, topic: str, key: bytes, value: bytes, headers: Any = None, partition: Any = None
    ) -> None:
        self.out.append(
            (topic, key, value, partition_for(key, 8) if partition is None else partition)
        )


class _Rec:
    def __init__(self, topic: str, key: bytes, value: bytes) -> None:
        self.topic, self.key, self.value = topic, key, value
        self.headers, self.partition, self.offset = (), 0, 0


def _watches(n: int) -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(n):
        kind = "restock" if i % 11 == 0 else "price_drop"
        target = None if i % 7 else (35_000 if i % 5 == 0 else 1_000)
        w = WatchState(APPID, f"oBench{i:022d}", "sku", SKU, kind, target, 1, f"w-{i}")
        out.append((w.key.encode(), orjson.dumps(w)))
    return out


async def run(n: int) -> tuple[float, int, str]:
    """(CPU seconds, records sent, digest) of one fan-out over ``n`` watches."""
    with tempfile.TemporaryDirectory() as tmp:
        store = PartitionStore("watches", 0, Path(tmp) / "w")
        store.restore_many(list(_watches(n)))
        env = StageEnv(Settings(), Merchants({}), WorkerMetrics(), clock=lambda: NOW)
        agent = ProductsStage(env)
        ev = ProductPriceChanged("pd-1", datetime(2024, 5, 1, tzinfo=UTC), APPID, SKU, "超轻跑步鞋",
                                 39_900, 29_900)  # fmt: skip
        ctx: Any = _Ctx({"watches": store})
        rec = _Rec(env.topic("products"), ev.key.encode(), encode(ev))
        # on the key's own partition (a record elsewhere is forwarded there, not fanned out)
        rec.partition = ctx.partition = partition_for(rec.key, env.settings.kafka.partitions)
        cpu = time.process_time()
        await agent.process(ctx, [rec])  # type: ignore[list-item]
        while True:
            store.apply(None)
            await agent.on_timer(ctx, NOW)
            if not store.pending():
                break
        cpu = time.process_time() - cpu
        store.close()
    digest = hashlib.sha256()
    for topic, key, value, part in ctx.out:
        digest.update(b"%s|%s|%s|%d|" % (topic.encode(), key, value, part))
    return cpu, len(ctx.out), digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.products_micro", description=__doc__)
    parser.add_argument("-n", "--watchers", type=int, default=200_000)
    args = parser.parse_args(argv)
    cpu, sent, digest = asyncio.run(run(args.watchers))
    print(f"{args.watchers} watchers: {cpu / args.watchers * 1e6:.1f} µs CPU per watcher, "
          f"{sent} records, sha256 {digest}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A tiny stage for runtime tests: running sums per key, one output per input record.

Run as ``python -m tests.streams.sum_stage BOOTSTRAP INPUT OUTPUT STATE_DIR APP_ID``. Each input
record (key k, value n) emits ``{"src": "p:offset", "key": k, "count": c, "sum": s}`` where c and s
are the count and sum of k's values so far: with exactly-once, output is a pure function of input.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path

import orjson
from aiokafka import ConsumerRecord

from wxsub.streams.runtime import StageRunner
from wxsub.streams.stage import PartitionContext, StageSpec


class SumStage:
    def __init__(self, input_topic: str, output_topic: str) -> None:
        self.spec = StageSpec("sum", (input_topic,), stores=("sums",))
        self.output = output_topic

    async def process(self, ctx: PartitionContext, records: list[ConsumerRecord]) -> None:
        store = ctx.stores["sums"]
        for rec in records:
            prev = store.get(rec.key)
            count, total = orjson.loads(prev) if prev else (0, 0)
            count, total = count + 1, total + int(rec.value)
            store.put(rec.key, orjson.dumps([count, total]))
            out = {
                "src": f"{rec.partition}:{rec.offset}",
                "key": rec.key.decode(),
                "count": count,
                "sum": total,
                "w": __import__("os").getpid(),
            }
            await ctx.send(self.output, rec.key, orjson.dumps(out))

    async def on_timer(self, ctx: PartitionContext, now_ms: int) -> None:
        return None


async def main(bootstrap: str, inp: str, out: str, state_dir: str, app_id: str) -> None:
    runner = StageRunner(
        SumStage(inp, out),
        bootstrap=bootstrap,
        app_id=app_id,
        state_dir=Path(state_dir),
        changelog_topic=lambda stage, store: f"{inp}-{stage}-{store}-changelog",
        session_timeout_ms=6000,
        max_batch=50,
    )
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, lambda: asyncio.ensure_future(runner.stop()))
    await runner.run()


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO if __import__("os").environ.get("DBG") else logging.WARNING,
        format="%(asctime)s %(name)s %(message)s %(__dict__)s"
        if False
        else "%(asctime)s %(name)s %(message)s",
    )
    asyncio.run(main(*sys.argv[1:6]))

"""Baselines: a raw aiokafka consume -> orjson -> produce loop, and a naive Faust pass-through.

Both run in a subprocess of their own (so their CPU is theirs alone) over the same pre-produced
input (the pipeline benchmark's order events, same partition count), and write one JSON document:
``{"n": ..., "wall_s": ..., "cpu_s": ...}`` measured from the first record consumed to the last
output acknowledged.

    python -m bench.baseline raw BOOTSTRAP INPUT OUTPUT N RESULT_JSON
    python -m bench.baseline faust BOOTSTRAP INPUT OUTPUT N RESULT_JSON
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.common import ROOT

__all__ = ["run_baseline"]


async def raw_loop(bootstrap: str, inp: str, out: str, n: int) -> dict[str, float]:
    consumer = AIOKafkaConsumer(
        inp,
        bootstrap_servers=bootstrap,
        group_id=f"raw-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=True,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=10, max_batch_size=256 * 1024
    )
    await consumer.start()
    await producer.start()
    done = 0
    t0 = c0 = 0.0
    futs: list[Any] = []
    try:
        while done < n:
            batch = await consumer.getmany(timeout_ms=100, max_records=2000)
            for records in batch.values():
                if not t0:
                    t0, c0 = time.perf_counter(), time.process_time()
                for rec in records:
                    doc = orjson.loads(rec.value)
                    futs.append(await producer.send(out, orjson.dumps(doc), key=rec.key))
                    done += 1
            if len(futs) > 10_000:
                await asyncio.gather(*futs)
                futs = []
        await asyncio.gather(*futs)
        return {"n": done, "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}
    finally:
        await producer.stop()
        await consumer.stop()


def faust_loop(bootstrap: str, inp: str, out: str, n: int, result: str) -> None:
    """A Faust agent that forwards every value with ``topic.send``; exits after ``n``."""
    import faust  # the reference only: wxsub does not run on Faust

    app = faust.App(
        f"fpass-{uuid.uuid4().hex[:8]}",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        web_enabled=False,
        topic_partitions=1,
        consumer_auto_offset_reset="earliest",
    )
    src = app.topic(inp, value_serializer="raw", key_serializer="raw")
    dst = app.topic(out, value_serializer="raw", key_serializer="raw")
    state = {"done": 0, "t0": 0.0, "c0": 0.0}

    @app.agent(src)
    async def forward(stream: Any) -> None:
        async for key, value in stream.items():
            if not state["done"]:
                state["t0"], state["c0"] = time.perf_counter(), time.process_time()
            await dst.send(key=key, value=orjson.dumps(orjson.loads(value)))
            state["done"] += 1
            if state["done"] >= n:
                await app.producer.flush()
                doc = {
                    "n": n,
                    "wall_s": time.perf_counter() - state["t0"],
                    "cpu_s": time.process_time() - state["c0"],
                }
                Path(result).write_text(json.dumps(doc))  # Faust captures stdout
                os._exit(0)

    sys.argv = ["faust", "worker", "-l", "warn", "--without-web"]
    app.main()


def run_baseline(
    kind: str, bootstrap: str, inp: str, out: str, n: int, timeout: float
) -> dict[str, float]:
    """Run one baseline in a subprocess and return its measurement."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp, "result.json")
        args = [kind, bootstrap, inp, out, str(n), str(result)]
        proc = subprocess.run(
            [sys.executable, "-m", "bench.baseline", *args],
            cwd=ROOT, capture_output=True, timeout=timeout, check=False,
        )  # fmt: skip
        if not result.exists():
            raise RuntimeError(f"{kind} baseline failed: {proc.stderr.decode()[-2000:]}")
        doc: dict[str, float] = json.loads(result.read_text())
        return doc


def main(argv: list[str]) -> int:
    kind, bootstrap, inp, out, n, result = *argv[:4], int(argv[4]), argv[5]
    if kind == "raw":
        Path(result).write_text(json.dumps(asyncio.run(raw_loop(bootstrap, inp, out, n))))
    else:
        faust_loop(bootstrap, inp, out, n, result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

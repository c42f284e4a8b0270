"""Baselines: a raw aiokafka consume -> orjson -> produce loop, and a naive Faust pass-through.

Both run in a subprocess of their own (so their CPU is theirs alone) over the same pre-produced
input (the pipeline benchmark's order events, same partition count), and write one JSON document:
``{"n": ..., "wall_s": ..., "cpu_s": ...}`` measured from the first record consumed to the last
output acknowledged.

    python -m bench.baseline KIND BOOTSTRAP INPUT OUTPUT N RESULT_JSON

KIND is ``raw``, or a Faust agent: ``faust`` (pass-through, ``topic.send`` per event),
``faust-consume`` (consume only), each with ``-fast`` for the same agent with
bench/faust_fastpath's patches of Faust's two hot spots installed.
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

from bench.common import ROOT, client, ratio

__all__ = ["FAUST_KINDS", "run_baseline"]


async def raw_loop(bootstrap: str, inp: str, out: str, n: int) -> dict[str, float]:
    kw = client(bootstrap)  # this subprocess has the benchmark's environment
    consumer = AIOKafkaConsumer(
        inp,
        **kw,
        group_id=f"raw-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=True,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    producer = AIOKafkaProducer(**kw, acks="all", linger_ms=10, max_batch_size=256 * 1024)
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


FAUST_KINDS = ("faust", "faust-fast", "faust-consume", "faust-consume-fast")


def faust_loop(kind: str, bootstrap: str, inp: str, out: str, n: int, result: str) -> None:
    """A Faust agent that forwards every value with ``topic.send`` (or, for ``faust-consume*``,
    only decodes it); exits after ``n``. ``*-fast``: bench/faust_fastpath installed."""
    import faust  # the reference only: wxsub does not run on Faust

    if kind.endswith("-fast"):
        from bench import faust_fastpath

        faust_fastpath.install()
    send = not kind.startswith("faust-consume")

    app = faust.App(
        f"fpass-{uuid.uuid4().hex[:8]}",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        web_enabled=False,
        topic_partitions=1,
        consumer_auto_offset_reset="earliest",
        datadir=str(Path(result).parent / "faust-data"),  # not the cwd (the repo)
    )
    src = app.topic(inp, value_serializer="raw", key_serializer="raw")
    dst = app.topic(out, value_serializer="raw", key_serializer="raw")
    state = {"done": 0, "t0": 0.0, "c0": 0.0}

    @app.agent(src)
    async def forward(stream: Any) -> None:
        async for key, value in stream.items():
            if not state["done"]:
                state["t0"], state["c0"] = time.perf_counter(), time.process_time()
            obj = orjson.loads(value)
            if send:
                await dst.send(key=key, value=orjson.dumps(obj))
            state["done"] += 1
            if state["done"] >= n:
                if send:
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
) -> dict[str, Any]:
    """Run one baseline in a subprocess and return its measurement.

    ``faust`` also measures the bench/faust_fastpath variants in the same call (so that
    ``python -m bench`` reports them beside the stock row): see ``run_faust_variants``.
    """
    if kind == "faust":
        return run_faust_variants(bootstrap, inp, out, n, timeout)
    return _run_one(kind, bootstrap, inp, out, n, timeout)


def _run_one(
    kind: str, bootstrap: str, inp: str, out: str, n: int, timeout: float
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp, "result.json")
        args = [kind, bootstrap, inp, out, str(n), str(result)]
        proc = subprocess.run(
            [sys.executable, "-m", "bench.baseline", *args],
            cwd=ROOT, capture_output=True, timeout=timeout, check=False,
        )  # fmt: skip
        if not result.exists():
            raise RuntimeError(f"{kind} baseline failed: {proc.stderr.decode()[-2000:]}")
        doc: dict[str, Any] = json.loads(result.read_text())
        doc["per_s"], doc["cpu_us"] = doc["n"] / doc["wall_s"], doc["cpu_s"] / doc["n"] * 1e6
        return doc


#: row label of each Faust variant besides the stock pass-through
FAUST_ROWS = {
    "faust-fast": "faust pass-through, hot spots bypassed (bench/faust_fastpath)",
    "faust-consume": "faust consume-only",
    "faust-consume-fast": "faust consume-only, hot spots bypassed",
}


def run_faust_variants(
    bootstrap: str, inp: str, out: str, n: int, timeout: float
) -> dict[str, Any]:
    """The stock Faust pass-through and, A/B in the same run, the same agent with
    bench/faust_fastpath installed, then consume-only agents (fast first: ABBA order, so drift
    of the shared machine's load does not favour one side). Prints the variants' rows and
    returns the stock result with each variant nested under its kind."""
    order = ("faust", "faust-fast", "faust-consume-fast", "faust-consume")
    res: dict[str, dict[str, Any]] = {}
    for kind in order:
        try:
            res[kind] = _run_one(kind, bootstrap, inp, out, n, timeout)
        except RuntimeError as exc:
            if kind == "faust":
                raise
            # e.g. FastPathVersionError on a Faust these patches were not verified against
            print(f"  {FAUST_ROWS[kind]}: not run: {str(exc).strip().splitlines()[-1]}")
    for kind, label in FAUST_ROWS.items():
        if kind in res:
            r = res[kind]
            print(f"  {label:<62} {r['per_s']:>9.0f} msg/s {r['cpu_us']:>8.1f} µs CPU/msg  "
                  f"(n={r['n']})")  # fmt: skip
    for a, b, what in (
        ("faust-fast", "faust", "pass-through"),
        ("faust-consume-fast", "faust-consume", "consume-only"),
    ):
        if a in res and b in res:
            fa, fb = res[a], res[b]
            speed, cpu = ratio(fa["per_s"], fb["per_s"]), ratio(fb["cpu_us"], fa["cpu_us"])
            print(f"  faust fast path vs stock, {what}: {speed} throughput, {cpu} less CPU/msg")
    stock = res.pop("faust")
    stock.update(res)
    return stock


def main(argv: list[str]) -> int:
    kind, bootstrap, inp, out, n, result = *argv[:4], int(argv[4]), argv[5]
    if kind == "raw":
        Path(result).write_text(json.dumps(asyncio.run(raw_loop(bootstrap, inp, out, n))))
    elif kind in FAUST_KINDS:
        faust_loop(kind, bootstrap, inp, out, n, result)
    else:
        raise SystemExit(f"unknown baseline kind {kind!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

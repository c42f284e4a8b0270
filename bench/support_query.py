"""Support query latency: ``/support/api/user`` p50/p99 while the pipeline benchmark's load runs.

One worker (orders, products, decide; the pipeline benchmark's workload: ``n`` order events
waiting, users with credits) with ``[support] enabled``; while it drains the backlog, a client
asks for random users' traces back to back (one at a time) and times each answer; then again
once idle. Every answer is read from the committed RocksDB store of the decide stage on the
worker's own event loop, so the latency under load includes waiting for the stage's turns.

    python -m bench.support_query [--events 20000] [--users 2000] [--bootstrap HOST:PORT]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import APPID, broker, free_port, openid
from bench.pipeline import STAGES, Pipeline

__all__ = ["main"]


async def _ask(client: httpx.AsyncClient, url: str, users: int, rng: random.Random) -> float:
    params = {"appid": APPID, "openid": openid(rng.randrange(users))}
    t0 = time.perf_counter()
    resp = await client.get(f"{url}/support/api/user", params=params)
    took = time.perf_counter() - t0
    resp.raise_for_status()
    return took


def _pct(xs: list[float]) -> str:
    xs = sorted(xs)
    p50 = statistics.median(xs) * 1000
    p99 = xs[min(len(xs) - 1, int(len(xs) * 0.99))] * 1000
    return f"n={len(xs)} p50 {p50:.1f} ms p99 {p99:.1f} ms"


async def run(bootstrap: str, workdir: Path, n: int, users: int) -> dict[str, str]:
    pipe = Pipeline(bootstrap, workdir, n, users, "exactly_once")
    port = free_port()
    pipe.dep.extra_env.update({"WXSUB_SUPPORT_ENABLED": "true", "WXSUB_SUPPORT_PORT": str(port)})
    await pipe.prepare()
    url = f"http://127.0.0.1:{port}"
    worker = pipe.dep.start(STAGES)
    rng = random.Random(7)
    loaded: list[float] = []
    idle: list[float] = []
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            deadline = time.time() + 120
            while time.time() < deadline:  # wait for the support server and the assignment
                try:
                    await _ask(client, url, users, rng)
                    break
                except (httpx.HTTPError, OSError):
                    await asyncio.sleep(0.2)
            while time.time() < deadline:
                loaded.append(await _ask(client, url, users, rng))
                m = worker.metrics()
                done = worker.total(m, "wxsub_records_total", stage="orders") >= n
                if done and worker.total(m, "wxsub_records_total", stage="decide") >= n:
                    break
            for _ in range(300):
                idle.append(await _ask(client, url, users, rng))
    finally:
        worker.stop()
    return {"under load": _pct(loaded), "idle": _pct(idle)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--bootstrap", help="an existing broker (default: a local one)")
    args = parser.parse_args()
    with broker(args.bootstrap) as bootstrap, tempfile.TemporaryDirectory() as tmp:
        out = asyncio.run(run(bootstrap, Path(tmp), args.events, args.users))
    for k, v in out.items():
        print(f"support query {k}: {v}")


if __name__ == "__main__":
    main()

"""End-to-end latency: publish -> the WeChat sandbox receives the send, at fixed rates.

Two workers: one runs orders, products and decide, the other deliver (a WeChat send costs
~0.5-1 ms of client CPU, so on one core deliver and the rest would share ~1 k events/s). The
sandbox runs in a subprocess and appends each call it receives to a JSONL record (its ``time``
is the wall clock at receipt). Events are published at a fixed rate (each a ``paid`` order
status of its own order, users round-robin); latency of an event = sandbox receipt time - the
moment it was handed to the producer. Exactly-once by default.

Partitions: 2 by default, one per core for one worker per stage. Under exactly-once every
partition of every stage commits its own transactions (per-partition producers: EOS v1, the
scheme aiokafka's transaction APIs allow), each 5-7 ms of broker and client CPU here, so the
transactions per second, and the CPU they take, grow with the partition count at a given rate.
``partitions=8`` (``--latency-partitions 8``) measures an over-partitioned deployment.

CPU (``cpu_pct``, % of one core over each rate's publishing and draining) of every process on
the machine's cores: the broker (when it listens locally), the sandbox, the workers and this
process (the publisher). Under exactly-once most of it is transactions: see docs/design.md.

Per hop (``hops_ms``, medians): the CreateTime of the record each stage wrote for the event
(orders' candidate, decide's intent, deliver's first ``deliveries`` entry, the attempt) is when
that stage appended it, i.e. processed the event, so publish -> orders, orders -> decide,
decide -> deliver and deliver -> WeChat split the end-to-end time by hop. A hop's time is the
upstream transaction's commit plus the downstream fetch and poll.
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaProducer

from bench.common import (
    APPID,
    ORDER_CONTENT,
    ORDER_TID,
    PRICE_CONTENT,
    PRICE_TID,
    SECRET,
    Deployment,
    listener_pid,
    order_event,
    proc_cpu_s,
    read_topic,
    wait_until,
)
from wxsub.streams.connection import client_kwargs

__all__ = ["run_latency", "start_sandbox", "world_toml"]


def world_toml() -> str:
    return f"""
seed = 1
[[apps]]
appid = "{APPID}"
secret = "{SECRET}"
pages = ["pages/index/index", "pages/order/detail", "pages/sku/detail"]
[[apps.templates]]
id = "{ORDER_TID}"
title = "订单状态通知"
content = "{ORDER_CONTENT}"
[[apps.templates]]
id = "{PRICE_TID}"
title = "降价提醒"
content = "{PRICE_CONTENT}"
"""


def start_sandbox(workdir: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    world, record = workdir / "world.toml", workdir / "calls.jsonl"
    world.write_text(world_toml(), encoding="utf-8")
    cmd = [sys.executable, "-m", "wxsub", "sandbox", "--port", "0", "--world", str(world)]
    cmd += ["--record", str(record)]
    log = (workdir / "sandbox.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().strip()
    if not line.startswith("http"):
        proc.kill()
        raise RuntimeError(f"sandbox did not start: {(workdir / 'sandbox.log').read_text()}")
    return proc, line, record


class _Sends:
    """Reads the sandbox's JSONL record incrementally: order id -> receipt time."""

    def __init__(self, path: Path) -> None:
        self.path, self.pos = path, 0
        self.at: dict[str, float] = {}

    def poll(self) -> dict[str, float]:
        if not self.path.exists():
            return self.at
        with self.path.open("rb") as f:
            f.seek(self.pos)
            chunk = f.read()
        end = chunk.rfind(b"\n") + 1
        self.pos += end
        for line in chunk[:end].splitlines():
            doc = orjson.loads(line)
            if doc.get("endpoint") == "send" and doc.get("processed"):
                order = doc["data"]["character_string1"]["value"]
                self.at.setdefault(order, doc["time"])
        return self.at


async def run_latency(
    bootstrap: str,
    workdir: Path,
    rates: list[int],
    seconds: float,
    users: int = 2000,
    max_in_flight: int = 1000,
    deliver_workers: int = 1,
    partitions: int = 2,
    code_root: Path | None = None,
) -> list[dict[str, Any]]:
    workdir.mkdir(parents=True, exist_ok=True)
    sandbox, base, record = start_sandbox(workdir)
    try:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            total = int(sum(rates) * seconds) + 1000
            reply = await http.post(
                "/admin/users",
                json={"appid": APPID, "count": users, "credits": {ORDER_TID: total}},
            )
            reply.raise_for_status()
            openids = list(reply.json()["openids"])
        config = f'[wechat]\napi_base = "{base}"\n[wechat.apps.{APPID}]\nsecret = "{SECRET}"\n'
        # deliver takes at most max_in_flight intents per poll (worker.py): raise it so one
        # poll cycle (two transactions per partition) carries ~1 s of events at 1 k/s
        env = {"WXSUB_WORKER_MAX_IN_FLIGHT": str(max_in_flight)}
        dep = Deployment(
            bootstrap, workdir, partitions=partitions, config_toml=config, extra_env=env
        )
        if code_root is not None:  # the checkout whose worker runs (bench/latency_ab.py)
            dep.code_root = code_root
        await dep.create_topics()
        await dep.seed_users(openids, credits=total)
        workers = [dep.start("orders,products,decide", 0)]
        workers += [dep.start("deliver", 1 + i) for i in range(deliver_workers)]
        try:
            for w in workers:
                await wait_until(w.healthy, 90, what="worker ready")
            port = int(bootstrap.rsplit(":", 1)[1])
            pids = {"broker": listener_pid(port), "sandbox": sandbox.pid}
            pids |= {"upstream": workers[0].pid, "publisher": os.getpid()}
            pids |= {f"deliver{i + 1}": w.pid for i, w in enumerate(workers[1:])}
            return await _rates(dep, openids, record, rates, seconds, pids)
        except Exception:
            print(*(w.tail() for w in workers))
            raise
        finally:
            for w in workers:
                w.stop()
    finally:
        sandbox.terminate()
        sandbox.wait(10)


async def _rates(
    dep: Deployment,
    openids: list[str],
    record: Path,
    rates: list[int],
    seconds: float,
    pids: dict[str, int | None],
) -> list[dict[str, Any]]:
    producer = AIOKafkaProducer(
        **client_kwargs(dep.kafka), enable_idempotence=True, acks="all", linger_ms=5
    )  # linger 5 ms: the Kafka 4 Java producer's default, as a shop's producer would have
    await producer.start()
    sends = _Sends(record)
    results = []
    try:
        await _publish(dep, producer, openids, sends, 50, 1.0, "warm")  # token, connections
        for rate in rates:
            tag = f"r{rate}"
            cpu0 = {name: proc_cpu_s(pid) for name, pid in pids.items() if pid}
            t0 = time.monotonic()
            published = await _publish(dep, producer, openids, sends, rate, seconds, tag)
            span = time.monotonic() - t0
            cpu = {n: (proc_cpu_s(pids[n] or 0) - c) / span * 100 for n, c in cpu0.items()}
            got = sends.poll()
            lat = [got[k] - t for k, t in published.items()]
            q = statistics.quantiles(lat, n=100) if len(lat) > 1 else lat * 99
            per_hop = await _hops(dep, tag, published, got)
            results.append(
                {"rate": rate, "events": len(lat), "p50_ms": q[49] * 1e3,
                 "p95_ms": q[94] * 1e3, "p99_ms": q[98] * 1e3, "max_ms": max(lat) * 1e3,
                 "hops_ms": per_hop, "cpu_pct": cpu, "span_s": span}
            )  # fmt: skip
            hops = ", ".join(f"{k} {v:.0f}" for k, v in per_hop.items())
            print(f"  {rate:>5}/s  median ms per hop: {hops}", flush=True)
            used = ", ".join(f"{k} {v:.0f}%" for k, v in cpu.items())
            print(f"  {rate:>5}/s  CPU (% of a core): {used}, total {sum(cpu.values()):.0f}%")
    finally:
        await producer.stop()
    return results


async def _publish(
    dep: Deployment,
    producer: AIOKafkaProducer,
    openids: list[str],
    sends: _Sends,
    rate: int,
    seconds: float,
    tag: str,
) -> dict[str, float]:
    """Publish ``rate`` events/s for ``seconds``; returns order id -> publish time (s), once
    every one of them has been sent."""
    n = max(1, int(rate * seconds))
    topic = dep.topic("order-status")
    published: dict[str, float] = {}
    t0 = time.time()
    i = 0
    while i < n:
        now = time.time()
        while i < n and t0 + i / rate <= now:  # every event due by now, then sleep a tick
            due_ms = int((t0 + i / rate) * 1000)
            _, key, raw = order_event(i, openids[i % len(openids)], due_ms, tag, steps=1)
            await producer.send(topic, raw, key=key)
            published[f"o{tag}{i}"] = time.time()
            i += 1
        await asyncio.sleep(max(t0 + i / rate, now + _TICK_S) - time.time())
    await producer.flush()
    await wait_until(lambda: published.keys() <= sends.poll().keys(), 60 + n / 200, 0.1, tag)
    return published


_TICK_S = 0.005  # the publisher wakes every 5 ms and sends what is due (not one sleep per event)

HOPS = (("orders", "candidates"), ("decide", "intents"), ("deliver", "deliveries"))


async def _hops(
    dep: Deployment, tag: str, published: dict[str, float], got: dict[str, float]
) -> dict[str, float]:
    """Median ms per hop of ``tag``'s events, from the record each stage wrote for them."""
    order = re.compile(rb"o" + re.escape(tag.encode()) + rb"\d+")
    at: list[dict[str, float]] = []
    orders: dict[bytes, str] = {}  # notification id -> order id (deliveries are keyed by nid)
    for _, topic in HOPS:
        first: dict[str, float] = {}
        for rec in await read_topic(dep.bootstrap, dep.topic(topic), dep.security):
            m = order.search(rec.value or b"")
            key = m.group().decode() if m is not None else orders.get(rec.key)
            if key is None:
                continue
            if topic == "intents":
                orders[orjson.loads(rec.value)["notification_id"].encode()] = key
            t = rec.timestamp / 1000
            first[key] = min(t, first.get(key, t))
        at.append(first)
    out: dict[str, float] = {}
    prev = published
    for (stage, _), stamps in zip(HOPS, at, strict=True):
        gaps = [stamps[k] - prev[k] for k in published if k in stamps and k in prev]
        out[stage] = statistics.median(gaps) * 1e3 if gaps else float("nan")
        prev = stamps
    gaps = [got[k] - prev[k] for k in published if k in prev and k in got]
    out["wechat"] = statistics.median(gaps) * 1e3 if gaps else float("nan")
    return out

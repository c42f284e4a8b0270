"""The deliver stage's CPU per send, against the WeChat sandbox: ``python -m bench.deliver_micro``.

N intents are built in-process the way bench/latency.py's upstream worker makes them: the orders
and decide stages of bench/agents_micro.py over N order-status events, users round-robin (each
event is its user's order's next status, so a batch holds one intent per user while N <= users).
They go through a real ``DeliverStage`` with the real ``WeChatClient``, which calls the sandbox
in a subprocess (started as bench/latency.py starts it): 2 partitions, as bench/latency.py
creates the topics, in batches of ``--batch``; each batch's ``process`` turn, then, once its
calls are answered, a ``settle`` turn. A turn ends in a commit stand-in (the runtime's commit,
streams/transaction.py, without Kafka): the store overlays' changelog batches and the turn's
output batches are built (agents_micro's producer stand-in), the overlays applied and the
on-commit callbacks run. The GC is tuned as a worker tunes it.

It prints the sends, this process's CPU (``time.process_time``) per send from the first turn to
the last settle (the calls run as tasks in between; the waits for the sandbox are idle, and the
sandbox's CPU is another process's), and a digest of the ``deliveries`` records with their
msgid masked (the sandbox numbers the sends in arrival order).

    python -m bench.deliver_micro --intents 1200 [--users 2000] [--batch 100]

Instructions instead of seconds: with ``$BENCH_CALLGRIND_LIB`` naming a shared library that
exports ``cg_start()`` and ``cg_stop()``, callgrind's instrumentation is on only over the
measured span (default: no library, nothing loaded). Per send = (I(1200) - I(400)) / 800, with
every thread's output file summed (bench/RESULTS.md, session 9)::

    // cg.c, built with: gcc -shared -fPIC -O2 -o libcg.so cg.c
    #include <valgrind/callgrind.h>
    void cg_start(void) { CALLGRIND_START_INSTRUMENTATION; }
    void cg_stop(void) { CALLGRIND_STOP_INSTRUMENTATION; }

    BENCH_CALLGRIND_LIB=$PWD/libcg.so PYTHONHASHSEED=0 valgrind --tool=callgrind \\
        --separate-threads=yes --instr-atstart=no python -m bench.deliver_micro --intents 1200
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import os
import re
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.agents_micro import (
    NOW,
    PARTITIONS,
    _consumer_records,
    _context,
    _digest,
    _env,
    _Producer,
    _records,
    _run_stage,
    _seed_users,
    _stores,
)
from bench.common import APPID, ORDER_TID, SECRET, openid, order_event
from bench.latency import start_sandbox
from wxsub.agents.decide import DecideStage
from wxsub.agents.deliver import DeliverStage, delivery_policy
from wxsub.agents.orders import OrdersStage
from wxsub.agents.rules.subscriptions import UserState
from wxsub.settings import AppCredentials, Secret, Settings
from wxsub.streams.outbox import Outbox, partition_for
from wxsub.streams.stage import PartitionContext
from wxsub.streams.store import PartitionStore
from wxsub.wechat.client import WeChatClient
from wxsub.worker import _tune_gc

__all__ = ["main"]

DELIVER_PARTITIONS = 2  # as bench/latency.py creates the topics
UPSTREAM_BATCH = 500
CALLGRIND_LIB = "BENCH_CALLGRIND_LIB"
_MSGID = re.compile(rb'"msgid":"?\d+"?')

Records = list[tuple[int, bytes, bytes]]  # (partition, key, value)


async def _intents(root: Path, n: int, users: int) -> Records:
    """The intents of orders + decide over ``n`` order events, users round-robin."""
    env = _env(root)
    topic = env.settings.kafka.topic
    events = []
    for k in range(n):  # user j's event of round r: its order's next status, 3 per order
        j, r = k % users, k // users
        _, key, raw = order_event(3 * (j + users * (r // 3)) + r % 3, openid(j), NOW - 1000)
        events.append((partition_for(key, PARTITIONS), key, raw))
    ostores = _stores(root, "orders", "orders")
    orders = _consumer_records(topic("order-status"), events)
    _, out = await _run_stage(OrdersStage(env), ostores, orders, UPSTREAM_BATCH)
    seed = UserState(credits={ORDER_TID: n})
    ustores = _seed_users(root, (openid(i) for i in range(users)), seed)
    cands = _consumer_records(topic("candidates"), _records(out.batches, topic("candidates")))
    _, out = await _run_stage(DecideStage(env), ustores, cands, UPSTREAM_BATCH)
    return _records(out.batches, topic("intents"))


async def _commit(ctx: PartitionContext, producer: _Producer) -> None:
    """streams/transaction.py's commit without Kafka: the store overlays' changelog batches and
    the turn's output batches built, the overlays applied, the on-commit callbacks run."""
    for name, store in ctx.stores.items():
        pending = store.pending()
        if pending:
            box = Outbox(producer)
            box.extend(f"changelog-{name}", ctx.partition, pending.items())
            await box.flush()
    await ctx.outbox.flush()
    ctx.outbox.reset()
    for store in ctx.stores.values():
        store.apply(None)
    callbacks, ctx.committed = ctx.committed, []
    for callback in callbacks:
        callback()


async def _turn(
    stores: dict[str, PartitionStore],
    producer: _Producer,
    partition: int,
    body: Callable[..., Awaitable[None]],
    *args: Any,
) -> None:
    """One turn of the stage on ``partition``: ``body(ctx, *args)``, then the commit."""
    ctx = _context(stores, producer, partition)
    ctx.committer = lambda: _commit(ctx, producer)
    await body(ctx, *args)
    await _commit(ctx, producer)


def _callgrind() -> Any:
    """The library named by ``$BENCH_CALLGRIND_LIB`` (cg_start/cg_stop), or None."""
    path = os.environ.get(CALLGRIND_LIB)
    return ctypes.CDLL(path) if path else None


async def _deliver(root: Path, intents: Records, users: int, batch: int) -> tuple[float, Records]:
    """CPU seconds of the deliver turns over ``intents``, and the ``deliveries`` records."""
    sandbox, base, _ = start_sandbox(root)
    try:
        async with httpx.AsyncClient(base_url=base, timeout=300) as http:
            openids = [openid(i) for i in range(users)]
            credits = {ORDER_TID: len(intents)}
            reply = await http.post(
                "/admin/users", json={"appid": APPID, "openids": openids, "credits": credits}
            )
            reply.raise_for_status()
        # generous timeouts: under callgrind a call takes seconds
        wechat = {"api_base": base, "read_timeout_s": 300.0, "connect_timeout_s": 60.0}
        settings = Settings().with_overrides(worker={"max_in_flight": 1000}, wechat=wechat)
        apps = {APPID: AppCredentials(APPID, Secret(SECRET))}
        settings = replace(settings, wechat=replace(settings.wechat, apps=apps))
        env = replace(_env(root), settings=settings)
        client = WeChatClient(settings.wechat)
        stage = DeliverStage(env, client, delivery_policy(settings.delivery))
        stores = _stores(root, "deliver", "ledger")
        producer = _Producer()
        by_partition: dict[int, list[Any]] = {}
        entries = [(partition_for(k, DELIVER_PARTITIONS), k, v) for _, k, v in intents]
        for rec in _consumer_records(settings.kafka.topic("intents"), entries):
            by_partition.setdefault(rec.partition, []).append(rec)
        partitions = sorted(by_partition)
        await client.tokens.get(APPID)  # the token and a connection, before the measured span
        _tune_gc()
        cg = _callgrind()
        if cg:
            cg.cg_start()
        start = time.process_time()
        for i in range(0, max(map(len, by_partition.values())), batch):
            for p in partitions:
                if chunk := by_partition[p][i : i + batch]:
                    await _turn(stores[p], producer, p, stage.process, chunk)
            for p in partitions:
                if stage.unsettled(p):
                    await stage.answered(p)  # idle: the sandbox answers
                    await _turn(stores[p], producer, p, stage.settle)
        cpu = time.process_time() - start
        if cg:
            cg.cg_stop()
        await client.aclose()
        return cpu, _records(producer.batches, settings.kafka.topic("deliveries"))
    finally:
        sandbox.terminate()
        sandbox.wait(60)


async def run(n: int, users: int, batch: int) -> dict[str, Any]:
    """Intents, then the deliver turns: sends, CPU per send, final states, digest."""
    with tempfile.TemporaryDirectory(prefix="deliver-micro-") as tmp:
        intents = await _intents(Path(tmp), n, users)
        cpu, deliveries = await _deliver(Path(tmp), intents, users, batch)
    final = {k: orjson.loads(v)["state"] for _, k, v in deliveries}  # the last record per id
    states = Counter(final.values())
    masked = sorted((p, k, _MSGID.sub(b'"msgid":0', v)) for p, k, v in deliveries)
    return {"intents": len(intents), "records": len(deliveries), "states": dict(states),
            "sends": states["sent"], "cpu_us": cpu / max(states["sent"], 1) * 1e6,
            "digest": _digest(masked)}  # fmt: skip


def main() -> None:
    description = __doc__.splitlines()[0] if __doc__ else ""
    parser = argparse.ArgumentParser(prog="python -m bench.deliver_micro", description=description)
    parser.add_argument("--intents", type=int, default=1200)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    res = asyncio.run(run(args.intents, args.users, args.batch))
    print(
        f"{res['intents']} intents -> {res['sends']} sends, {res['records']} deliveries "
        f"records, final states {res['states']}; {res['cpu_us']:.1f} µs CPU per send "
        f"(this process, first turn to last settle); digest {res['digest']}"
    )


if __name__ == "__main__":
    main()

"""``run_demo(options)``: start the stack, play the shop, show progress, reconcile, stop.

Phases: (1) users accept templates in the sandbox (pushed to the gateway like WeChat) and watch
products; (2) ``duration`` seconds of traffic at ``rate`` events/s, with a flash price drop at a
third and a promotion at two thirds, some users switching the order template off half way;
(3) drain: wait until every record has ended (timers release collapsed logistics); (4) the
summary. Ctrl-C (or SIGTERM) at any point stops everything started.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from aiokafka import AIOKafkaProducer

from wxsub.schemas import decode_topic
from wxsub.stats import format_table, read_stats
from wxsub.streams.connection import client_kwargs
from wxsub_dev.demo.opens import Opener
from wxsub_dev.demo.report import Accounting, account, read_intents, read_outcomes, read_values
from wxsub_dev.demo.shop import APPID, TEMPLATES, Published, Shop
from wxsub_dev.demo.stack import Stack

__all__ = ["DemoOptions", "run_demo"]


@dataclass(frozen=True)
class DemoOptions:
    duration_s: float = 30.0
    rate: float = 40.0  # shop events per second
    users: int = 60
    workers: int = 2
    workdir: Path = Path(".wxsub_dev/demo")
    bootstrap: str | None = None  # an existing broker instead of a local one
    keep: bool = False  # keep running after the summary until Ctrl-C
    drain_timeout_s: float = 60.0
    seed: int = 1


class _Stopped(Exception):
    """Ctrl-C or SIGTERM."""


@dataclass
class _Run:
    opts: DemoOptions
    stack: Stack
    out: TextIO
    stop: asyncio.Event
    producer: AIOKafkaProducer
    published: list[Published]
    opener: Opener = field(default_factory=Opener)

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def check(self) -> None:
        if self.stop.is_set():
            raise _Stopped
        self.stack.check_alive()

    async def sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)
        self.check()

    async def publish(self, records: list[Published]) -> None:
        for rec in records:
            topic = self.stack.kafka.topic(rec.topic)
            await self.producer.send(topic, rec.raw, key=rec.key.encode())
        await self.producer.flush()
        self.published += records


async def run_demo(opts: DemoOptions, out: TextIO = sys.stdout) -> Accounting | None:
    """Run the whole demo; the accounting (None when stopped early)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    workdir = opts.workdir / time.strftime("%Y%m%d-%H%M%S")
    shop = Shop(users=opts.users, seed=opts.seed)
    print(f"wxsub demo: starting Kafka, the WeChat sandbox, the gateway and "
          f"{opts.workers} workers (logs in {workdir}) ...", file=out, flush=True)  # fmt: skip
    try:
        async with Stack(workdir, shop, opts.workers, bootstrap=opts.bootstrap) as stack:
            producer = AIOKafkaProducer(
                **client_kwargs(stack.kafka), enable_idempotence=True, acks="all"
            )
            await producer.start()
            try:
                run = _Run(opts, stack, out, stop, producer, [])
                return await _play(run)
            finally:
                await producer.stop()
    except _Stopped:
        print("\nwxsub demo: stopped; everything it started has been shut down.", file=out)
        return None
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _play(run: _Run) -> Accounting:
    stack = run.stack
    run.say(_where(stack))
    run.say(f"\n[1/4] {len(run.stack.shop.openids)} users accept templates in the sandbox "
            "(pushed to the gateway, as WeChat does) and watch products")  # fmt: skip
    accepts = await _subscribe(run)
    await _wait_granted(run, accepts)
    run.say(f"\n[2/4] the shop trades for {run.opts.duration_s:.0f} s at ~{run.opts.rate:.0f} "
            "events/s: orders, logistics, a flash price drop, a promotion, bad events")  # fmt: skip
    await _trade(run)
    run.say("\n[3/4] draining: waiting until every event has ended (timers included)")
    acc = await _drain(run)
    run.say("\n[4/4] summary")
    book = stack.sandbox.state.cards
    cards = (len(book.cards), sum(len(c.history) for c in book.cards.values()))
    run.say(summary(acc, len(stack.sandbox.recorder.calls(endpoint="send", errcode=0)), cards))
    run.say("\nstatistics (wxsub stats):")
    run.say(format_table(await read_stats(stack.kafka)))
    run.say(_where_after(stack))
    if run.opts.keep:
        run.say("\neverything keeps running; Ctrl-C to stop")
        await run.stop.wait()
    return acc


async def _subscribe(run: _Run) -> int:
    world, shop = run.stack.sandbox.world, run.stack.shop
    accepts = 0
    for n, plan in enumerate(shop.accept_rounds()):
        if n:
            await run.sleep(1.1)  # a new CreateTime second (see Shop.accept_rounds)
        for openid, tids in plan:
            world.accept(APPID, openid, tids, now=time.time())
            accepts += len(tids)
        await world.drain_events()
    await run.publish(shop.state_events(dt.datetime.now(dt.UTC)))
    return accepts


async def _wait_granted(run: _Run, accepts: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    granted = 0
    while time.monotonic() < deadline:
        granted = (await read_stats(run.stack.kafka)).total().get("granted", 0)
        run.say(f"  credits granted {granted}/{accepts}")
        if granted >= accepts:
            return
        await run.sleep(1.0)
    run.say(f"  (only {granted} of {accepts} credits applied after {timeout:.0f} s; going on)")


async def _trade(run: _Run) -> None:
    shop, opts = run.stack.shop, run.opts
    started = time.monotonic()
    tick, sent_at, flash, promo, revoked = 0.25, 0, False, False, False
    last_report = started
    while (elapsed := time.monotonic() - started) < opts.duration_s:
        now = dt.datetime.now(dt.UTC)
        due = int(elapsed * opts.rate) - sent_at
        batch = shop.traffic(now, due) if due > 0 else []
        sent_at += len(batch)
        if not flash and elapsed >= opts.duration_s / 3:
            batch.append(shop.flash_sale(now))
            flash = True
            run.say("  ⚡ flash price drop on FLASH-001 (most users watch it)")
        if not revoked and elapsed >= opts.duration_s / 2:
            _revoke(run)
            revoked = True
        if not promo and elapsed >= 2 * opts.duration_s / 3:
            batch.append(shop.promotion(now))
            promo = True
            run.say("  🎉 store promotion (marketing cap: 1 a day per user)")
        for openid, tids in shop.take_accepts():
            run.stack.sandbox.world.accept(APPID, openid, tids, now=time.time())
        for p in shop.take_payments():  # WeChat Pay knows the payment before the shop says so
            run.stack.sandbox.state.cards.pay(APPID, p.openid, p.transaction_id, p.amount,
                                              p.paid_at)  # fmt: skip
        batch += _opens(run)
        if batch:
            await run.publish(batch)
        if time.monotonic() - last_report >= 2.0:
            last_report = time.monotonic()
            run.say(await _progress(run, elapsed))
        await run.sleep(tick)


def _opens(run: _Run) -> list[Published]:
    sends = run.stack.sandbox.recorder.calls(endpoint="send", errcode=0)
    return run.opener.opens(sends, run.stack.sandbox.state.clock())


def _revoke(run: _Run) -> None:
    world = run.stack.sandbox.world
    users = run.stack.shop.revokers()
    for openid in users:
        world.revoke(APPID, openid, [TEMPLATES["order_status"]], now=time.time())
    run.say(f"  {len(users)} users switch the order template off in WeChat's settings")


async def _progress(run: _Run, elapsed: float) -> str:
    total = (await read_stats(run.stack.kafka)).total()
    suppressed = sum(n for k, n in total.items() if k.startswith("suppressed:"))
    sends = len(run.stack.sandbox.recorder.calls(endpoint="send", errcode=0))
    dlq = len(await read_values(run.stack.kafka, "dlq"))
    return (
        f"  {elapsed:5.1f}s  published {len(run.published):5d}  sent {sends:5d}  "
        f"suppressed {suppressed:5d}  dlq {dlq:3d}"
    )


async def _drain(run: _Run) -> Accounting:
    """Account until everything ended and nothing changed for a few seconds (or time is up)."""
    deadline = time.monotonic() + run.opts.drain_timeout_s
    last: tuple[int, ...] = ()
    stable = 0
    while True:
        await run.stack.sandbox.world.drain_events()
        await run.publish(_opens(run))  # users still open what they were sent
        acc = await _account(run)
        key = (acc.total_in, *sorted(acc.ended.values()), *sorted(acc.messages.values()))
        stable = stable + 1 if key == last else 0
        last = key
        left = acc.ended["pending"] + acc.ended["unaccounted"] + acc.open_messages
        run.say(f"  open: {left} events/messages")
        if (acc.reconciles and stable >= 1) or time.monotonic() > deadline:
            return acc
        await run.sleep(1.5)


async def _account(run: _Run) -> Accounting:
    kafka = run.stack.kafka
    inputs = [(p.topic, p.event_id) for p in run.published]
    for raw in await read_values(kafka, "subscriptions"):
        inputs.append(("subscriptions", decode_topic("subscriptions", raw).event_id))
    outcomes = await read_outcomes(kafka)
    intents = await read_intents(kafka)
    dlq = len(await read_values(kafka, "dlq"))
    return account(inputs, outcomes, intents, dlq)


def summary(acc: Accounting, sandbox_ok: int, cards: tuple[int, int] = (0, 0)) -> str:
    """The reconciliation as text (the last line says whether it holds); ``cards``: the service
    cards the sandbox holds and the states it accepted for them."""
    by_topic = ", ".join(f"{t} {n}" for t, n in sorted(acc.records_in.items()))
    suppressed = acc.suppressed
    reasons = ", ".join(f"{r} {n}" for r, n in suppressed.most_common())
    e = acc.ended
    rows = [
        ("events in", acc.total_in, by_topic),
        ("= sent", e["sent"], "events that led to a message (a fan-out counts once)"),
        ("+ suppressed", sum(suppressed.values()), reasons),
        (
            "+ service card",
            e["card"],
            f"WeChat Pay orders: {cards[0]} cards took "
            f"{cards[1]} states in the sandbox instead of classic messages",
        ),
        ("+ state applied", e["state"], "accepts, rejects, receipts, watches, preferences"),
        ("+ opens", e["open"], "opened events joined to their sends (or duplicate, unknown_ref)"),
        ("+ duplicates", e["duplicate"], "copies of an event already counted"),
        ("+ DLQ", e["dlq"], f"{acc.records_in['bad']} bad events were published"),
        ("+ failed/in doubt", e["failed"] + e["in_doubt"], ""),
        ("+ still open", e["pending"] + e["unaccounted"], ""),
    ]
    lines = [f"  {name:<18}{n:>7}  {note}".rstrip() for name, n, note in rows]
    m = acc.messages
    lines.append(
        f"  messages: {m['intents']} decided = {m['sent']} sent + {m['failed']} failed + "
        f"{m['in_doubt']} in doubt (+ {acc.open_messages} open); the sandbox received "
        f"{sandbox_ok} successful sends"
    )
    ok = acc.reconciles and sandbox_ok == m["sent"] and e["dlq"] == acc.records_in["bad"]
    lines.append("  RECONCILED: every event is accounted for" if ok else "  NOT RECONCILED")
    return "\n".join(lines)


def _where(stack: Stack) -> str:
    d = stack.describe()
    workers = "  ".join(f"{u}/metrics  {u}/stats" for u in d["workers"])
    return (
        f"  kafka {d['kafka']} | sandbox {d['sandbox']} | gateway {d['gateway']}/metrics\n"
        f"  workers: {workers}"
    )


def _where_after(stack: Stack) -> str:
    d = stack.describe()
    return (
        f"\nmetrics: {', '.join(u + '/metrics' for u in d['workers'])}, {d['gateway']}/metrics"
        f"\nstats:   {d['workers'][0]}/stats  or  wxsub --config {d['config']} stats"
        f"\nlogs and config: {d['logs']}  (run with --keep to look at them live)"
    )

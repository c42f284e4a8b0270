"""The products stage: watches and product events (co-partitioned by target key) -> candidates.

Watches live in the ``watches`` store, one entry per (target, user, kind) under the target's
prefix, so a SKU with a million watchers is a million small entries, never one big value. A
product event fans out by scanning that prefix in chunks of ``FANOUT_CHUNK``; a fan-out that does
not finish in one chunk becomes a job (event + cursor) continued by the timer, chunk by chunk,
each in its own transaction, so other targets' events are processed in between.

An unwatch deletes the watch and leaves a marker (``_UNWATCH`` + watch key -> the unwatch's
event time) for ``retention.unwatch_s``, so a late older watch is a ``regression``; a watch
event older than that is refused as ``stale``. The timer sweeps the store (``StoreExpiry``):
watches past ``retention.watch_ttl_s`` and markers past ``unwatch_s`` are deleted; a fan-out
tells no watch past its time-to-live even before the sweep reached it.

Per watcher a chunk costs a RocksDB step, one ``orjson.loads`` of the stored watch and the
checks and candidate bytes of :class:`~wxsub.agents.rules.watches.Fanout` (no dataclass per
watcher), then the send.
"""

from __future__ import annotations

import logging
from itertools import islice
from typing import Any

import orjson
from aiokafka import ConsumerRecord

from wxsub.agents import restock
from wxsub.agents.base import StageEnv
from wxsub.agents.expiry import StoreExpiry
from wxsub.agents.rules import retention as lifecycle
from wxsub.agents.rules import stock
from wxsub.agents.rules import watches as rules
from wxsub.agents.rules.common import to_ms
from wxsub.agents.rules.watches import WatchState
from wxsub.schemas import decode_topic
from wxsub.schemas.records import (
    ProductPriceChanged,
    ProductStockChanged,
    Promotion,
    Watch,
    user_keys,
)
from wxsub.streams.due import DueIndex
from wxsub.streams.metering import tally
from wxsub.streams.stage import PartitionContext, StageSpec
from wxsub.streams.store import PartitionStore

__all__ = ["FANOUT_CHUNK", "ProductsStage"]

log = logging.getLogger(__name__)
STAGE = rules.STAGE
FANOUT_CHUNK = 5000
_JOB = b"\x02job|"
_UNWATCH = b"\x03unwatch|"


class ProductsStage:
    def __init__(self, env: StageEnv, chunk: int = FANOUT_CHUNK) -> None:
        self.env = env
        self.chunk = chunk
        self.spec = StageSpec(
            STAGE,
            (env.topic("products"), env.topic("watches")),
            stores=("watches",),
            timer_interval_s=0.05,
        )
        self.expiry = StoreExpiry(env, STAGE, "watches")

    async def process(self, ctx: PartitionContext, records: list[ConsumerRecord]) -> None:
        store = ctx.stores["watches"]
        now = self.env.clock()
        for rec in records:
            ev = await self.env.decode_keyed(ctx, rec, STAGE)
            if ev is None:
                continue
            if isinstance(ev, Watch):
                await self._watch(ctx, store, ev, now)
                continue
            job = {"topic": self.env.logical(rec.topic), "raw": rec.value.decode(), "cursor": None,
                   "matched": 0}  # fmt: skip
            if isinstance(ev, ProductStockChanged):  # stock-limited restocks (rules/stock.py)
                prefix = rules.watch_prefix(ev.appid, "sku", ev.sku_id)
                stopped = restock.stop(store, prefix, _JOB)
                if stock.stock_out(ev):
                    await self.env.emit_outcomes(ctx, (stock.stopped(ev, stopped, now),))
                    continue
                limit = stock.restock_limit(ev, self.env.merchants.app(ev.appid))
                if limit is not None:
                    limited = restock.start(store, job, ev.event_id, prefix, limit)
                    if limited is None:
                        await self.env.emit_outcomes(ctx, (stock.duplicate(ev, now),))
                        continue
                    job = limited
            await self._fan_out(ctx, store, ev.event_id.encode(), job, now)

    async def on_timer(self, ctx: PartitionContext, now_ms: int) -> None:
        store = ctx.stores["watches"]
        budget = 4 * self.chunk
        for at, job_id in list(DueIndex(store).due(now_ms)):
            raw = store.get(_JOB + job_id)
            DueIndex(store).set(job_id, at, None)
            if raw is None:
                continue
            await self._fan_out(ctx, store, job_id, orjson.loads(raw), now_ms)
            budget -= self.chunk
            if budget <= 0:
                return
        self._sweep(ctx, store, self.env.clock())

    def _sweep(self, ctx: PartitionContext, store: PartitionStore, now: int) -> None:
        """Delete the watches and unwatch markers of this slice that are past retention."""
        expiry, merchants = self.expiry, self.env.merchants
        for key, raw in expiry.slice(ctx, now):
            if key.startswith(_UNWATCH):
                appid = key[len(_UNWATCH) :].split(b"\x1f", 1)[0].decode()
                reason = lifecycle.unwatch_expired(int(raw), merchants.app(appid), now)
            elif key[:1] >= b"\x20":  # a watch (the other keys start with a control byte)
                doc = orjson.loads(raw)
                reason = lifecycle.watch_expired(doc, merchants.app(doc["appid"]), now)
                if reason is not None and doc.get("kind") == stock.KIND:  # its restock turn too
                    restock.forget_watch(store, key, doc["appid"], doc["target_type"],
                                         doc["target_id"])  # fmt: skip
            else:
                continue
            if reason is not None:
                store.delete(key)
                expiry.expired(ctx, reason)
        expiry.sample()

    async def _watch(
        self, ctx: PartitionContext, store: PartitionStore, ev: Watch, now: int
    ) -> None:
        key = rules.watch_key(ev.appid, ev.target.type, ev.target.id, ev.openid, ev.kind).encode()
        raw = store.get(key)
        existing = WatchState.from_dict(orjson.loads(raw)) if raw else None
        marker = store.get(_UNWATCH + key)
        unwatched_at = int(marker) if marker is not None else None
        cfg = self.env.merchants.app(ev.appid)
        late = lifecycle.watch_too_late(to_ms(ev.occurred_at), cfg, now)
        step = rules.on_watch(existing, unwatched_at, ev, now, too_late=late)
        await self.env.emit_outcomes(ctx, (step.outcome,))
        restock.on_watch(store, key, existing, step.watch)
        if step.watch is None:
            if existing is not None:
                store.delete(key)
        elif step.watch != existing:
            store.put(key, orjson.dumps(step.watch))
        if step.unwatched_at != unwatched_at:
            if step.unwatched_at is None:
                store.delete(_UNWATCH + key)
            else:
                store.put(_UNWATCH + key, b"%d" % step.unwatched_at)

    async def _fan_out(
        self,
        ctx: PartitionContext,
        store: PartitionStore,
        job_id: bytes,
        job: dict[str, Any],
        now: int,
    ) -> None:
        """One chunk of a fan-out; saves the job for the timer when watchers remain."""
        ev = decode_topic(job["topic"], job["raw"].encode())
        assert isinstance(ev, ProductPriceChanged | ProductStockChanged | Promotion)
        ttl_ms = lifecycle.retention(self.env.merchants.app(ev.appid)).watch_ttl_s * 1000
        fan = rules.Fanout(ev, now, watched_after=self.env.clock() - ttl_ms)
        prefix = rules.watch_prefix(ev.appid, *rules.event_target(ev)).encode()
        cursor = job["cursor"].encode("utf-8", "surrogateescape") if job["cursor"] else None
        if "left" in job:  # a stock-limited restock: its own queue (agents/restock.py)
            await self._limited(ctx, store, job_id, job, fan, now)
            return
        docs: list[Any] = []
        last = None
        if fan.kind is not None:  # else nobody can match: no scan
            entries = islice(store.scan(prefix, start_after=cursor), self.chunk)
            # a watch's key ends with its kind (rules.watch_key): one of another kind is not
            # decoded (Fanout.select would refuse it); a slice compare, as bytes.endswith
            # parses its arguments. ``last``: the chunk's last key, whatever its kind
            loads, kind_end = orjson.loads, fan.key_end
            cut = -len(kind_end)
            docs = fan.select(
                [loads(value) for key, value in entries if (last := key)[cut:] == kind_end]
            )
        await self._emit(ctx, fan, docs)
        matched = job["matched"] + len(docs)
        if last is not None and _more(store, prefix, last):
            job = {**job, "cursor": last.decode("utf-8", "surrogateescape"), "matched": matched}
            store.put(_JOB + job_id, orjson.dumps(job))
            DueIndex(store).set(job_id, None, now)
            return
        if job["cursor"] is not None:
            store.delete(_JOB + job_id)
        if not matched:
            await self.env.emit_outcomes(ctx, (rules.no_match_outcome(ev, now),))

    async def _limited(
        self,
        ctx: PartitionContext,
        store: PartitionStore,
        job_id: bytes,
        job: dict[str, Any],
        fan: rules.Fanout,
        now: int,
    ) -> None:
        prefix = rules.watch_prefix(fan.ev.appid, *rules.event_target(fan.ev))
        docs, more = restock.step(store, fan, prefix, job, self.chunk)
        await self._emit(ctx, fan, docs)
        matched = job["matched"] + len(docs)
        if more is not None:
            restock.save_job(store, _JOB, job_id, prefix, {**more, "matched": matched})
            DueIndex(store).set(job_id, None, now)
            return
        restock.end_job(store, _JOB, job_id, prefix)
        if not matched:
            await self.env.emit_outcomes(ctx, (rules.no_match_outcome(fan.ev, now),))

    async def _emit(self, ctx: PartitionContext, fan: rules.Fanout, docs: list[Any]) -> None:
        """The candidates of one chunk, in bulk (one tally for the chunk)."""
        if not docs:
            return
        topic = self.env.topic("candidates")
        appid = fan.ev.appid
        keys = user_keys(appid, [doc["openid"] for doc in docs])
        for key, value in zip(keys, fan.encode_many(docs), strict=True):
            await ctx.send(topic, key, value)
        tally(ctx, self.env.metrics.candidates, str(fan.kind), n=len(docs))


def _more(store: PartitionStore, prefix: bytes, last: bytes) -> bool:
    return next(iter(store.scan(prefix, start_after=last)), None) is not None

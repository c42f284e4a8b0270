"""The stats stage (per user): outcomes -> counters per (appid, template, day) -> ``stats`` topic.

Inputs: the outcomes and opened topics. Per-user outcomes (sends, suppressions, subscription
state events) are keyed by user, so a user's send and a later reject meet on one partition;
outcomes without a user (keyed by source event) are counted wherever they land. Subscription
events are counted from the decide stage's outcomes rather than the subscriptions topic: those
are de-duplicated (a WeChat push retried after a gateway restart counts once) and carry the same
verdict the credits use. ``opened`` events (keyed by user too) are joined to the sends they name
(``agents/opens.py``: the ``s|`` entries and the open outcomes).

The ``stats`` store holds, per partition: ``r|<row key>`` the partition's cumulative row,
``d|<row key>`` a dirty mark, ``l|<user>|<template>`` the user's last send time (expired by a
DueIndex after the feedback window), ``s|<user>|<ref>`` a sent message's ref (``opens.py``;
expired by the DueIndex ``retention.open_window_s`` after the send), ``o|<user>|<ref>`` opens
held for their send (``opens.py``; ended ``unknown_ref`` by the DueIndex at the grace's end); all
counted in ``wxsub_expired_total`` when the timer ends them. The timer (1 s) emits each dirty
row to the
compacted ``stats`` topic under ``appid|template|day|partition``, on this partition, in the same
transaction that clears the marks: readers sum the latest record of every partition. The timer
also sweeps the store (``StoreExpiry``): a day's row past ``retention.stats_days`` is deleted and
tombstoned on the ``stats`` topic. It also moves the merchants' funnel metrics
(``wxsub_funnel_total``, ``wxsub_funnel_suppressed_total``; labels are config values only).
"""

from __future__ import annotations

import logging

import orjson
from aiokafka import ConsumerRecord

from wxsub.agents.base import StageEnv
from wxsub.agents.expiry import StoreExpiry
from wxsub.agents.opens import HELD, OpenJoin
from wxsub.agents.rules import pauses
from wxsub.agents.rules import stats as rules
from wxsub.agents.rules.retention import Reason, stats_day_expired
from wxsub.errors import InputError, InputReason
from wxsub.schemas.internal import Outcome, decode_internal, user_key
from wxsub.streams.due import DueIndex
from wxsub.streams.metering import tally
from wxsub.streams.stage import PartitionContext, StageSpec
from wxsub.streams.store import PartitionStore

__all__ = ["StatsStage"]

log = logging.getLogger(__name__)
STAGE = rules.STAGE
_ROW, _DIRTY, _LAST = b"r|", b"d|", b"l|"


class StatsStage:
    def __init__(
        self,
        env: StageEnv,
        interval_s: float = 1.0,
        feedback_window_ms: int = rules.FEEDBACK_WINDOW_MS,
        open_window_ms: int | None = None,
        open_grace_ms: int | None = None,
    ) -> None:
        """``open_window_ms`` (tests) replaces every app's ``retention.open_window_s``;
        ``open_grace_ms`` replaces ``worker.open_grace_ms``."""
        self.env = env
        self.window_ms = feedback_window_ms
        self.spec = StageSpec(
            STAGE,
            (env.topic("outcomes"), env.topic("opened")),
            stores=("stats",),
            timer_interval_s=interval_s,
        )
        self.expiry = StoreExpiry(env, STAGE, "stats")
        self.opens = OpenJoin(env, open_window_ms, open_grace_ms)
        self._opened_topic = env.topic("opened")

    async def process(self, ctx: PartitionContext, records: list[ConsumerRecord]) -> None:
        store = ctx.stores["stats"]
        rows: dict[rules.RowKey, rules.Row] = {}
        for rec in records:
            if rec.topic == self._opened_topic:
                await self.opens.opened(ctx, store, rec, rows)
                continue
            try:
                outcome = decode_internal(Outcome, rec.value or b"")
            except (orjson.JSONDecodeError, TypeError, KeyError) as exc:
                error = InputError(
                    InputReason.SCHEMA, f"not an Outcome record: {type(exc).__name__}"
                )
                await self.env.dead_letter(ctx, rec, error, STAGE)
                continue
            await self._count(ctx, store, rows, outcome)
        await self._merge(ctx, store, rows)

    async def _merge(
        self, ctx: PartitionContext, store: PartitionStore, rows: dict[rules.RowKey, rules.Row]
    ) -> None:
        """Add a turn's counts to the partition's rows (marked dirty); feedback may pause."""
        for key, delta in rows.items():
            raw = store.get(_ROW + key.encode())
            row = orjson.loads(raw) if raw else {}
            after = rules.add_rows((row, delta))
            store.put(_ROW + key.encode(), orjson.dumps(after))
            store.put(_DIRTY + key.encode(), b"")
            if delta.get("feedback"):  # users answering our sends with rejects: pause?
                cfg = self.env.merchants.app(key.appid)
                now = self.env.clock()
                for p in pauses.feedback_trips(row, after, key.appid, key.template, cfg,
                                               pauses.DEFAULT_THRESHOLDS, now):  # fmt: skip
                    await ctx.send(self.env.topic("pauses"), p.key, pauses.encode_pause(p))

    async def _count(
        self,
        ctx: PartitionContext,
        store: PartitionStore,
        rows: dict[rules.RowKey, rules.Row],
        o: Outcome,
    ) -> None:
        last_key = _LAST + f"{user_key(o.appid, o.openid)}|{o.template_id}".encode()
        raw = store.get(last_key) if o.openid else None
        last = int(raw) if raw else None
        cfg = self.env.merchants.app(o.appid)
        upd = rules.update(o, cfg, last, self.window_ms)
        if upd.key is None:
            return
        metrics = self.env.metrics
        for suppressed, labels in rules.funnel(o, upd, cfg):
            tally(ctx, metrics.funnel_suppressed if suppressed else metrics.funnel, *labels)
        if "sent" in upd.counters:
            await self.opens.sent(ctx, store, o, rows)
        row = rows.setdefault(upd.key, {})
        for name in upd.counters:
            row[name] = row.get(name, 0) + 1
        due = DueIndex(store)
        old_due = last + self.window_ms if last is not None else None
        if upd.last_send is not None and o.openid:
            store.put(last_key, b"%d" % upd.last_send)
            due.set(last_key, old_due, upd.last_send + self.window_ms)
        elif upd.forget_send:
            store.delete(last_key)
            due.set(last_key, old_due, None)

    async def on_timer(self, ctx: PartitionContext, now_ms: int) -> None:
        store = ctx.stores["stats"]
        due = DueIndex(store)
        rows: dict[rules.RowKey, rules.Row] = {}
        for due_ms, key in list(due.due(now_ms)):
            due.set(key, due_ms, None)
            if key.startswith(HELD):  # opens whose send never came: unknown_ref
                await self.opens.grace_over(ctx, store, key, rows)
                self.expiry.ended(ctx, Reason.OPEN_GRACE)
                continue
            store.delete(key)
            self.expiry.ended(ctx, Reason.SENT_REF if key.startswith(b"s|") else Reason.LAST_SEND)
        await self._merge(ctx, store, rows)
        topic = self.env.topic("stats")
        for dirty, _ in list(store.scan(_DIRTY)):
            row_key = dirty[len(_DIRTY) :]
            raw = store.get(_ROW + row_key)
            store.delete(dirty)
            if raw is None:
                continue
            rec = rules.StatsRecord(
                rules.RowKey.decode(row_key), ctx.partition, orjson.loads(raw), now_ms
            )
            value = rules.encode_record(rec)
            await ctx.send(topic, rec.topic_key, value, partition=ctx.partition)
        await self._sweep(ctx, self.env.clock())

    async def _sweep(self, ctx: PartitionContext, now: int) -> None:
        """Forget the day rows of this slice past ``retention.stats_days`` (store + topic)."""
        store, expiry, topic = ctx.stores["stats"], self.expiry, self.env.topic("stats")
        for key, _ in expiry.slice(ctx, now):
            if not key.startswith(_ROW):
                continue
            row = rules.RowKey.decode(key[len(_ROW) :])
            reason = stats_day_expired(row.day, self.env.merchants.app(row.appid), now)
            if reason is None:
                continue
            store.delete(key)
            store.delete(_DIRTY + key[len(_ROW) :])
            rec = rules.StatsRecord(row, ctx.partition, {}, now)
            await ctx.send(topic, rec.topic_key, None, partition=ctx.partition)
            expiry.expired(ctx, reason)
        expiry.sample()

"""The orders stage: order-status and logistics (co-partitioned by order key) -> candidates.

State per order key in the ``orders`` store: the order (owner, latest status) and the logistics
events waiting for it. Pending events past ``orphan_after_s`` end as ``orphan`` on a timer. The
timer also sweeps the store (``StoreExpiry``): an order past its retention
(``rules.retention.order_expired``) is forgotten; logistics for it later end as ``orphan``.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from aiokafka import ConsumerRecord

from wxsub.agents.base import Misrouted, StageEnv
from wxsub.agents.expiry import StoreExpiry
from wxsub.agents.rules import cards as card_rules
from wxsub.agents.rules import orders as rules
from wxsub.agents.rules.orders import OrderState, OrderStep, PendingLogistics
from wxsub.agents.rules.retention import order_expired
from wxsub.errors import InputError
from wxsub.schemas.internal import encode_internal, plain, user_key
from wxsub.schemas.records import OrderStatusChanged, key_appid
from wxsub.streams.due import DueIndex
from wxsub.streams.metering import tally
from wxsub.streams.stage import PartitionContext, StageSpec

__all__ = ["OrdersStage"]

log = logging.getLogger(__name__)
STAGE = rules.STAGE
# what keyed_event hands to divert (a tuple: ``InputError | Misrouted`` builds a union per event)
_DIVERTED = (InputError, Misrouted)


class OrdersStage:
    def __init__(self, env: StageEnv) -> None:
        self.env = env
        self.spec = StageSpec(
            STAGE,
            (env.topic("order-status"), env.topic("logistics"), env.topic("card-results")),
            stores=("orders",),
            timer_interval_s=1.0,
        )
        self.expiry = StoreExpiry(env, STAGE, "orders")

    async def process(self, ctx: PartitionContext, records: list[ConsumerRecord]) -> None:
        store = ctx.stores["orders"]
        due = DueIndex(store)
        now = self.env.clock()
        candidates, metrics = self.env.topic("candidates"), self.env.metrics
        card_results = self.spec.inputs[2]
        for rec in records:
            if rec.topic == card_results:  # the card stage's word about a card
                await self._card_result(ctx, store, rec)
                continue
            ev = self.env.keyed_event(ctx, rec)
            if isinstance(ev, _DIVERTED):
                await self.env.divert(ctx, rec, ev, STAGE)
                continue
            key = rec.key
            stored, pending = _load_doc(store.get(key))
            cfg = self.env.merchants.app(ev.appid)
            cards = cfg is not None and cfg.cards is not None
            if stored is None or (
                not cards and isinstance(ev, OrderStatusChanged) and rules.replaces(stored, ev)
            ):
                order = None  # (a status that replaces the stored order reads nothing of it)
            else:
                order = OrderState.from_dict(stored)
            try:
                carded: card_rules.CardStep | None = None  # no service cards: the step as it is
                if isinstance(ev, OrderStatusChanged):
                    step = rules.on_order_event(order, pending, ev, cfg, now)
                    if cards:
                        carded = card_rules.card_order_step(order, pending, step, ev, cfg, now)
                else:
                    step = rules.on_logistics_event(order, pending, ev, cfg, now)
                    if cards:
                        carded = card_rules.card_logistics_step(step, ev, cfg, now)
                if carded is not None:
                    step = carded.step
            except Exception as exc:  # a bug in a rule must not stop the partition
                log.exception("orders rule failed", extra={"event_id": ev.event_id})
                await self.env.dead_letter(ctx, rec, exc, STAGE)
                continue
            _save(store, due, key, pending, step, rules.orphan_after_s(cfg))
            # _emit and _card_ops inlined for the common case: a coroutine per event each
            for cand in step.candidates:
                user = user_key(cand.appid, cand.openid).encode()
                await ctx.send(candidates, user, encode_internal(cand))
                tally(ctx, metrics.candidates, cand.kind)
            if step.outcomes:
                await self.env.emit_outcomes(ctx, step.outcomes)
            if carded is not None and (carded.ops or carded.saved):
                await self._card_ops(ctx, carded)

    async def _emit(self, ctx: PartitionContext, step: OrderStep) -> None:
        candidates, metrics = self.env.topic("candidates"), self.env.metrics
        for cand in step.candidates:
            user = user_key(cand.appid, cand.openid).encode()
            await ctx.send(candidates, user, encode_internal(cand))
            tally(ctx, metrics.candidates, cand.kind)
        if step.outcomes:
            await self.env.emit_outcomes(ctx, step.outcomes)

    async def _card_ops(self, ctx: PartitionContext, carded: card_rules.CardStep) -> None:
        for op in carded.ops:
            user = user_key(op.appid, op.openid).encode()
            await ctx.send(self.env.topic("card-ops"), user, encode_internal(op))
        for kind in carded.saved:
            tally(ctx, self.env.metrics.card_saved, kind)

    async def _card_result(self, ctx: PartitionContext, store: Any, rec: ConsumerRecord) -> None:
        try:
            result = card_rules.CardResult.from_dict(orjson.loads(rec.value or b""))
        except (orjson.JSONDecodeError, TypeError, KeyError) as exc:
            await self.env.dead_letter(ctx, rec, exc, STAGE)
            return
        raw = store.get(rec.key)
        if raw is None:
            return
        doc: dict[str, Any] = orjson.loads(raw)
        order = OrderState.from_dict(doc["order"]) if doc.get("order") else None
        carded = card_rules.on_card_result(order, result, self.env.clock())
        if carded.step.order is not order:  # held candidates end or go to decide, in this txn
            doc["order"] = carded.step.order
            store.put(rec.key, encode_internal(doc))
            await self._emit(ctx, carded.step)
            await self._card_ops(ctx, carded)

    async def on_timer(self, ctx: PartitionContext, now_ms: int) -> None:
        store = ctx.stores["orders"]
        due = DueIndex(store)
        for at, key in list(due.due(now_ms)):
            order, pending = _load(store.get(key))
            appid = key_appid(key)
            cfg = self.env.merchants.app(appid)
            keep, gone = rules.expire_pending(pending, now_ms, cfg)
            due.set(key, at, None)
            step = OrderStep(order, keep)
            _save(store, due, key, (), step, rules.orphan_after_s(cfg))
            await self.env.emit_outcomes(ctx, gone)
        self._sweep(ctx, store, self.env.clock())

    def _sweep(self, ctx: PartitionContext, store: Any, now: int) -> None:
        """Forget the orders of this slice that are past their retention (pending logistics
        of a key stay: they end as ``orphan`` on their own)."""
        expiry = self.expiry
        for key, raw in expiry.slice(ctx, now):
            if key.startswith(DueIndex.PREFIX):
                continue
            order, pending = _load(raw)
            if order is None:
                continue
            reason = order_expired(order, self.env.merchants.app(order.appid), now)
            if reason is None:
                continue
            if pending:
                store.put(key, encode_internal({"order": None, "pending": pending}))
            else:
                store.delete(key)
            expiry.expired(ctx, reason, deleted=not pending)
        expiry.sample()


def _load(raw: bytes | None) -> tuple[OrderState | None, tuple[PendingLogistics, ...]]:
    stored, pending = _load_doc(raw)
    return OrderState.from_dict(stored) if stored else None, pending


def _load_doc(raw: bytes | None) -> tuple[dict[str, Any] | None, tuple[PendingLogistics, ...]]:
    """The stored order as its decoded dict (None: none), and the pending logistics."""
    if raw is None:
        return None, ()
    doc: dict[str, Any] = orjson.loads(raw)
    pending = doc.get("pending")
    return doc.get("order") or None, rules.pending_from_list(pending) if pending else ()


def _expiry(pending: tuple[PendingLogistics, ...], orphan_after_s: int) -> int | None:
    if not pending:
        return None
    return min(p.received_at for p in pending) + orphan_after_s * 1000


def _save(
    store: Any,
    due: DueIndex,
    key: bytes,
    old_pending: tuple[PendingLogistics, ...],
    step: OrderStep,
    orphan_after_s: int,
) -> None:
    new_pending = tuple(step.pending)
    if old_pending or new_pending:  # (else no due time before or after)
        due.set(key, _expiry(old_pending, orphan_after_s), _expiry(new_pending, orphan_after_s))
    order = step.order
    if order is None and not new_pending:
        store.delete(key)
    else:  # the order as its dict: orjson would call plain() back for it
        doc = {"order": None if order is None else plain(order), "pending": new_pending}
        store.put(key, encode_internal(doc))

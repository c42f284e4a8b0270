"""The card stage: card operations (from the orders stage) -> WeChat setUserNotify, in order per
card, each call after a durable ``attempt``; in-doubt calls settled by getUserNotify; failure
events from the gateway (-1004 user refused). Decisions: ``rules/card_ledger.py``.

Inputs (co-partitioned by user ``appid:openid``): ``card-ops`` (CardOp records) and
``card-events`` (the gateway's ``notify_service_msg_send_result`` records). Store ``cards``: key
``c|appid:code`` -> entry, plus a DueIndex (sends due, in-doubt checks, window ends); an ended
entry is deleted at its window's end (counted in ``wxsub_expired_total``; the live entries in
``wxsub_store_entries``, sampled by ``StoreExpiry.count``, docs/lifecycle.md). Outputs:
``card-results`` (keyed by order key, to the orders stage: fallback / refused), the DLQ.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from aiokafka import ConsumerRecord

from wxsub.agents.base import StageEnv
from wxsub.agents.expiry import StoreExpiry
from wxsub.agents.rules import card_ledger as rules
from wxsub.agents.rules.card_ledger import CardEntry, Change
from wxsub.agents.rules.cards import CardOp
from wxsub.agents.rules.retention import Reason
from wxsub.errors import InDoubtError, InputError, InputReason, WeChatError
from wxsub.schemas.internal import encode_internal
from wxsub.schemas.records import order_key
from wxsub.streams.due import DueIndex
from wxsub.streams.metering import labelled, tally
from wxsub.streams.stage import PartitionContext, StageSpec
from wxsub.streams.store import PartitionStore
from wxsub.wechat.card_types import strip_code_prefix
from wxsub.wechat.cards import get_user_notify, set_user_notify
from wxsub.wechat.client import WeChatClient

__all__ = ["CardStage", "parse_card_event"]

log = logging.getLogger(__name__)
STAGE = "cards"
_ROUNDS = 4  # calls per card within one batch (the rest: the timer)
FAIL_RETS = frozenset({-10001, -10002, -1003, -1004, -1005})  # documented (GUIDE §1.5)


def parse_card_event(raw: bytes) -> dict[str, Any]:
    """A ``card-events`` record (gateway), validated; InputError saying why not."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InputError(InputReason.BAD_JSON, "not JSON") from None
    if not isinstance(doc, dict) or doc.get("type") != "card_event":
        raise InputError(InputReason.SCHEMA, "not a card_event", "/type")
    for name, kind in (("appid", str), ("openid", str), ("notify_code", str),
                       ("notify_type", int), ("fail_ret", int), ("card_status", int)):  # fmt: skip
        if not isinstance(doc.get(name), kind) or isinstance(doc.get(name), bool):
            why = f"{name} missing or not {kind.__name__}"
            raise InputError(InputReason.SCHEMA, why, f"/{name}")
    return doc


class CardStage:
    def __init__(self, env: StageEnv, client: WeChatClient) -> None:
        self.env = env
        self.client = client
        self.spec = StageSpec(
            STAGE, (env.topic("card-ops"), env.topic("card-events")), ("cards",), 1.0
        )
        self._slots = asyncio.Semaphore(env.settings.worker.max_in_flight)
        self.expiry = StoreExpiry(env, STAGE, "cards")

    async def process(self, ctx: PartitionContext, records: list[ConsumerRecord]) -> None:
        store = ctx.stores["cards"]
        now = self.env.clock()
        touched: list[bytes] = []
        for rec in records:
            try:
                if rec.topic == self.spec.inputs[0]:
                    op = CardOp.from_dict(orjson.loads(rec.value or b""))
                    key = _key(op.appid, op.code)
                    old = _get(store, key)
                    if old is not None and old.phase == "attempt":  # a crash's leftover
                        old = await self._write(ctx, store, key, old, rules.on_leftover(old, now))
                    await self._write(ctx, store, key, old, rules.enqueue(old, op, now))
                    touched.append(key)
                else:
                    ev = parse_card_event(rec.value or b"")
                    await self._failure_event(ctx, store, ev)
            except (InputError, orjson.JSONDecodeError, TypeError, KeyError) as exc:
                err = exc if isinstance(exc, InputError) else InputError(
                    InputReason.SCHEMA, f"not a card record: {type(exc).__name__}"
                )  # fmt: skip
                await self.env.dead_letter(ctx, rec, err, STAGE)
        await self._send(ctx, store, list(dict.fromkeys(touched)))

    async def on_timer(self, ctx: PartitionContext, now_ms: int) -> None:
        store = ctx.stores["cards"]
        due = DueIndex(store)
        ready: list[bytes] = []
        for at, key in list(due.due(now_ms, self.env.settings.worker.max_in_flight)):
            entry = _get(store, key)
            if entry is None or entry.due != at:
                due.set(key, at, None)
                continue
            ended = rules.on_window(entry, now_ms)
            if ended is not None:
                await self._write(ctx, store, key, entry, ended)
                if ended.entry is None:  # deleted at its window's end
                    why = Reason.CARD_UPDATE if entry.activated_at else Reason.CARD_ACTIVATION
                    self.expiry.ended(ctx, why)
            elif entry.phase == "attempt":
                await self._write(ctx, store, key, entry, rules.on_leftover(entry, now_ms))
            elif entry.phase == "in_doubt":
                await self._reconcile(ctx, store, key, entry, now_ms)
                ready.append(key)
            elif rules.sendable(entry, now_ms):
                ready.append(key)
            else:  # nothing to do until a new operation comes, or its window ends
                idle = rules.replace_due(entry, rules.window_end(entry))
                await self._write(ctx, store, key, entry, Change(idle))
        await self._send(ctx, store, ready)
        self.expiry.count(ctx, self.env.clock())

    # --- calls ----------------------------------------------------------------------------------

    async def _send(self, ctx: PartitionContext, store: PartitionStore, keys: list[bytes]) -> None:
        """Up to ``_ROUNDS`` calls per card: attempts committed first, then the calls at once."""
        for _ in range(_ROUNDS):
            now = self.env.clock()
            batch: list[tuple[bytes, CardEntry]] = []
            for key in keys:
                entry = _get(store, key)
                if entry is not None and rules.sendable(entry, now):
                    attempt = rules.begin(entry, now)
                    await self._write(ctx, store, key, entry, Change(attempt))
                    batch.append((key, attempt))
            if not batch:
                return
            await ctx.commit()  # attempts durable before any request leaves
            answers = await asyncio.gather(*(self._call(e) for _, e in batch))
            now = self.env.clock()
            for (key, attempt), answer in zip(batch, answers, strict=True):
                await self._write(ctx, store, key, attempt, rules.on_answer(attempt, answer, now))

    async def _call(self, entry: CardEntry) -> WeChatError | None:
        op = entry.queue[0]
        async with self._slots:
            started = time.perf_counter()
            try:
                await set_user_notify(
                    self.client, entry.appid, entry.openid, entry.notify_type, entry.code,
                    op.content, rules.check_json(entry),
                )  # fmt: skip
                return None
            except WeChatError as exc:
                return exc
            except Exception as exc:  # a bug or cancellation: the request may have left
                log.error("card call failed unexpectedly", exc_info=exc)
                return InDoubtError(f"call failed: {type(exc).__name__}")
            finally:
                elapsed = time.perf_counter() - started
                labelled(self.env.metrics.wechat_latency, "set_user_notify").observe(elapsed)

    async def _reconcile(
        self, ctx: PartitionContext, store: PartitionStore, key: bytes, entry: CardEntry, now: int
    ) -> None:
        try:
            info = await get_user_notify(
                self.client, entry.appid, entry.openid, entry.notify_type, entry.code
            )
        except WeChatError as exc:
            if exc.errcode == 85437 and not entry.confirmed:  # WeChat has no card: not applied
                await self._write(ctx, store, key, entry, rules.on_info(entry, None, 0, now))
                return
            retry = rules.Change(rules.replace_due(entry, now + rules.RECONCILE_AFTER_MS))
            await self._write(ctx, store, key, entry, retry)
            return
        change = rules.on_info(entry, info.content, info.code_state, now)
        await self._write(ctx, store, key, entry, change)

    # --- inputs and writing -----------------------------------------------------------------------

    async def _failure_event(
        self, ctx: PartitionContext, store: PartitionStore, ev: dict[str, Any]
    ) -> None:
        fail_ret = ev["fail_ret"]
        label = str(fail_ret) if fail_ret in FAIL_RETS else "other"  # bounded label values
        tally(ctx, self.env.metrics.card_failures, label)
        key = _key(ev["appid"], strip_code_prefix(ev["notify_code"]))
        entry = _get(store, key)
        if entry is not None:
            await self._write(ctx, store, key, entry, rules.on_failure_event(entry, fail_ret))

    async def _write(
        self,
        ctx: PartitionContext,
        store: PartitionStore,
        key: bytes,
        old: CardEntry | None,
        change: Change,
    ) -> CardEntry | None:
        new = change.entry
        DueIndex(store).set(key, old.due if old else None, new.due if new else None)
        if new is None:
            store.delete(key)
        else:
            store.put(key, encode_internal(new))
        if change.result:
            tally(ctx, self.env.metrics.cards, change.result, change.reason)
        tell = change.tell
        if tell is not None:
            okey = order_key(tell.appid, tell.order_id).encode()
            await ctx.send(self.env.topic("card-results"), okey, encode_internal(tell))
        return new


def _key(appid: str, code: str) -> bytes:
    return f"c|{appid}:{code}".encode()


def _get(store: PartitionStore, key: bytes) -> CardEntry | None:
    raw = store.get(key)
    return rules.decode_entry(orjson.loads(raw)) if raw is not None else None

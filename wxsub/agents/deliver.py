"""The deliver stage: intents -> WeChat subscribe/send, each notification id at most once.

Per batch (one partition): the answers of the partition's calls still in flight are awaited and
their final entries written first; receipts (``sent`` SubscriptionEvents) settle in-doubt entries;
each intent is looked up in the ``ledger`` store and, if new, sent in *waves*: the n-th intent of
every user in the batch forms wave n. A wave writes its ``attempt`` entries (store + deliveries
topic); no request leaves before they have committed. Every wave but the last commits
(``ctx.commit()``), calls WeChat concurrently (process-wide ``max_in_flight`` semaphore; one call
at a time per user) and writes the finals. The last wave's attempts commit with the batch's input
offsets, and its calls start only then (``ctx.on_commit``) and run while the partition fetches its
next batch: their finals are written by the partition's next turn (a batch, the timer, or a
``settle`` turn the runtime gives it as soon as they are answered, when idle, or before it
gives the partition up). So a batch costs one transaction, and the partition does not wait for
WeChat between batches. Retries and crash leftovers are handled by ``on_timer`` through the
ledger's DueIndex; it also sweeps the ledger (``StoreExpiry``): an entry in a final state past
``retention.delivery_s`` is deleted with its index entries and tombstoned on ``deliveries``.
Every decision is in ``wxsub.agents.rules.delivery``; the store is ``delivery_ledger.Ledger``,
the calls and what is in flight ``delivery_calls.Calls``, the 45009 pauses
``quota_pauses.QuotaPauses``; ``docs/delivery.md`` explains the guarantees. Each send's page gets
its notification reference (``wxref``, ``rules.attribution``) as the call leaves.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, replace
from functools import partial

import orjson
from aiokafka import ConsumerRecord

from wxsub.agents.base import StageEnv
from wxsub.agents.delivery_calls import Answered, Calls, Pending, waves
from wxsub.agents.delivery_ledger import DueBacklog, Ledger
from wxsub.agents.expiry import StoreExpiry
from wxsub.agents.kind_pauses import KindPauses
from wxsub.agents.quota_pauses import QuotaPauses
from wxsub.agents.rules import delivery as rules
from wxsub.agents.rules import guards, pauses
from wxsub.agents.rules.delivery import Entry, Receipt, Step
from wxsub.agents.rules.retention import entry_expired
from wxsub.agents.templates_pull import TemplatePuller
from wxsub.errors import InputError, InputReason
from wxsub.schemas import SubscriptionEvent, decode_topic
from wxsub.schemas.internal import Intent, decode_internal, encode_internal, user_key
from wxsub.settings import DeliverySettings
from wxsub.streams.metering import tally
from wxsub.streams.stage import PartitionContext, StageSpec
from wxsub.wechat.client import WeChatClient
from wxsub.wechat.errcodes import CreditEffect

__all__ = ["DeliverStage", "delivery_policy", "receipt_of"]

log = logging.getLogger(__name__)


def delivery_policy(settings: DeliverySettings) -> rules.DeliveryPolicy:
    """The policy the ``[delivery]`` settings describe (``in_doubt_resend`` is the stage's)."""
    return rules.DeliveryPolicy(**asdict(settings))


class DeliverStage:
    """Built by the worker as ``DeliverStage(env, client, delivery_policy(settings.delivery))``;
    ``policy`` defaults to ``DeliveryPolicy()`` (``in_doubt_resend`` always follows
    ``settings.worker.in_doubt_policy``)."""

    def __init__(
        self,
        env: StageEnv,
        client: WeChatClient,
        policy: rules.DeliveryPolicy | None = None,
        puller: TemplatePuller | None = None,
        kind_pauses: KindPauses | None = None,
    ) -> None:
        self.env = env
        # the pauses in force (the worker follows the pauses topic; alone: only its own trips)
        self.kind_pauses = kind_pauses or KindPauses(env, follow=False)
        self.client = client
        self.puller = puller  # the scheduled template pull (partition 0's timer)
        resend = env.settings.worker.in_doubt_policy == "resend"
        self.policy = replace(policy or rules.DeliveryPolicy(), in_doubt_resend=resend)
        self.spec = StageSpec(
            rules.STAGE,
            inputs=(env.topic("intents"), env.topic("subscriptions")),
            stores=("ledger",),
            timer_interval_s=self.policy.timer_interval_s,
            pacing="upstream",  # its intents come at the decide stage's commits
        )
        self._pauses = QuotaPauses(env.metrics, self.policy.quota_pause_ms)
        self._calls = Calls(env, client, self.policy, self._pauses)
        self._backlog = DueBacklog(env.metrics)
        self.expiry = StoreExpiry(env, rules.STAGE, "ledger")

    # --- runtime entry points -------------------------------------------------------------------

    async def process(self, ctx: PartitionContext, records: list[ConsumerRecord]) -> None:
        ledger = Ledger(ctx.stores["ledger"])
        await self._settle(ctx, ledger)
        now = self.env.clock()
        intents: list[Intent] = []
        for rec in records:
            if rec.topic == self.spec.inputs[0]:
                intent = await self._intent(ctx, rec)
                if intent is not None:
                    intents.append(intent)
            else:
                receipt = receipt_of(rec)
                if receipt is not None:
                    await self._reconcile(ctx, ledger, receipt, now)
        pending: list[Pending] = []
        seen: set[str] = set()
        paused_until = self._pauses.until
        for intent in intents:
            if intent.notification_id in seen:
                continue
            seen.add(intent.notification_id)
            old = ledger.get(intent.notification_id)
            paused = paused_until(intent.appid, now)
            step = rules.on_intent(old, intent, now, paused, self.policy)
            await self._step(ctx, ledger, old, step, pending)
        await self._deliver(ctx, ledger, pending)

    async def on_timer(self, ctx: PartitionContext, now_ms: int) -> None:
        self._pauses.resume_due(now_ms)
        ledger = Ledger(ctx.stores["ledger"])
        await self._settle(ctx, ledger)
        pending: list[Pending] = []
        limit = self.env.settings.worker.max_in_flight
        paused_until = self._pauses.until
        for due_ms, raw in list(ledger.due.due(now_ms, limit)):
            entry = ledger.get(raw.decode())
            if entry is None or entry.due != due_ms:
                ledger.due.set(raw, due_ms, None)  # a stale index key
                continue
            step = rules.on_due(entry, now_ms, paused_until(entry.appid, now_ms), self.policy)
            await self._step(ctx, ledger, entry, step, pending)
        await self._deliver(ctx, ledger, pending)
        self._backlog.recount(ctx.partition, ledger)
        self.kind_pauses.refresh()  # the gauge's series follow the live config
        if self.puller is not None:
            await self.puller.maybe_pull(ctx, now_ms)
        await self._sweep(ctx, ledger, self.env.clock())

    async def _sweep(self, ctx: PartitionContext, ledger: Ledger, now: int) -> None:
        """Forget the final entries of this slice past retention: the entry and its index
        entries go, and a tombstone goes to ``deliveries`` (compaction drops the id)."""
        expiry, merchants = self.expiry, self.env.merchants
        topic = self.env.topic("deliveries")
        for key, raw in expiry.slice(ctx, now):
            if not key.startswith(b"n|"):
                continue  # index entries go with their entry
            entry = rules.decode_entry(raw)
            reason = entry_expired(entry.state, entry.at, merchants.app(entry.appid), now)
            if reason is None:
                continue
            ledger.forget(entry)
            await ctx.send(topic, entry.notification_id.encode(), None)
            expiry.expired(ctx, reason)
        expiry.sample()

    # --- work in flight (the runtime's Settling protocol) -----------------------------------------

    def unsettled(self, partition: int) -> bool:
        return partition in self._calls.in_flight

    async def settle(self, ctx: PartitionContext) -> None:
        await self._settle(ctx, Ledger(ctx.stores["ledger"]))

    async def answered(self, partition: int) -> None:
        """The runtime's Answering protocol: settle as soon as the calls are answered."""
        await self._calls.answered_all(partition)

    async def _settle(self, ctx: PartitionContext, ledger: Ledger) -> None:
        """Await the partition's calls in flight and write their finals into this transaction
        (forgotten once it commits; written again by the next turn if it aborts)."""
        in_flight = self._calls.in_flight
        flight = in_flight.get(ctx.partition)
        if flight is None:
            return
        if flight.store is not ledger.store:
            del in_flight[ctx.partition]  # started under an earlier ownership
            return
        await self._write_answers(ctx, ledger, await self._calls.answered(flight))

        def forget() -> None:
            if in_flight.get(ctx.partition) is flight:
                del in_flight[ctx.partition]

        ctx.on_commit(forget)

    # --- sending --------------------------------------------------------------------------------

    async def _deliver(self, ctx: PartitionContext, ledger: Ledger, pending: list[Pending]) -> None:
        """Send in waves: at most one call per user at a time, attempts durable first. The last
        wave's calls start once the turn has committed (see the module docstring)."""
        turns = waves(pending)
        paused_until = self._pauses.until
        merchants, why = self.env.merchants, self.kind_pauses.why
        for n, wave in enumerate(turns, 1):
            now = self.env.clock()
            calls: list[Entry] = []
            for old, base in wave:
                cfg, paused_kind = merchants.app(base.appid), why(base.appid, base.kind)
                held = guards.at_send(base, cfg, now, paused_kind)  # every send
                if held is not None:
                    await self._apply(ctx, ledger, old, held)
                    continue
                paused = paused_until(base.appid, now)
                if paused is not None:
                    await self._apply(ctx, ledger, old, rules.defer(base, paused, now))
                    continue
                attempt = rules.begin_attempt(base, now)
                await self._apply(ctx, ledger, old, Step(attempt))
                calls.append(attempt)
            if not calls:
                continue
            if n == len(turns):
                ctx.on_commit(partial(self._calls.start, ctx.partition, ledger.store, calls))
                return
            await ctx.commit()  # the attempts are durable before any request leaves
            await self._write_answers(ctx, ledger, await self._calls.make(calls))

    # --- writing --------------------------------------------------------------------------------

    async def _write_answers(
        self, ctx: PartitionContext, ledger: Ledger, answered: list[Answered]
    ) -> None:
        """Write the answers' steps; each send is counted once the transaction commits."""
        sends = self.env.metrics.sends
        for attempt, step, errcode in answered:
            await self._apply(ctx, ledger, attempt, step)
            tally(ctx, sends, step.result, errcode, attempt.template_id)
            code = step.entry.errcode if step.entry is not None else None
            pause = pauses.on_errcode(attempt.appid, attempt.kind, code, self.env.clock())
            if pause is not None:  # 43107 / 45168: the kind stops here and on every worker
                await ctx.send(self.env.topic("pauses"), pause.key, pauses.encode_pause(pause))
                self.kind_pauses.trip(pause)

    async def _step(
        self,
        ctx: PartitionContext,
        ledger: Ledger,
        old: Entry | None,
        step: Step,
        pending: list[Pending],
    ) -> None:
        if step.send and step.entry is not None:
            pending.append((old, step.entry))
        else:
            await self._apply(ctx, ledger, old, step)

    async def _apply(
        self, ctx: PartitionContext, ledger: Ledger, old: Entry | None, step: Step
    ) -> None:
        """Write the step's entry (store + deliveries topic), outcome and correction."""
        env, entry = self.env, step.entry
        if entry is not None:
            ledger.write(old, entry)
            value = encode_internal(rules.delivery_of(entry))
            await ctx.send(env.topic("deliveries"), entry.notification_id.encode(), value)
        if step.outcome is not None:
            await env.emit_outcomes(ctx, (step.outcome,))
        corr = step.correction
        if corr is not None:
            key = user_key(corr.appid, corr.openid).encode()
            await ctx.send(env.topic("corrections"), key, encode_internal(corr))
            change = "zeroed" if corr.action == CreditEffect.ZERO else "restored"
            tally(ctx, env.metrics.credits, change)
        label = rules.IN_DOUBT_LABELS.get(step.result)
        if label is not None:
            tally(ctx, env.metrics.in_doubt, label)

    # --- inputs ---------------------------------------------------------------------------------

    async def _intent(self, ctx: PartitionContext, rec: ConsumerRecord) -> Intent | None:
        try:
            return decode_internal(Intent, rec.value or b"")
        except (orjson.JSONDecodeError, TypeError, KeyError) as exc:
            error = InputError(InputReason.SCHEMA, f"not an Intent record: {type(exc).__name__}")
            await self.env.dead_letter(ctx, rec, error, rules.STAGE)
            return None

    async def _reconcile(
        self, ctx: PartitionContext, ledger: Ledger, receipt: Receipt, now: int
    ) -> None:
        if receipt.msgid and ledger.known_msgid(receipt.msgid):
            return  # the receipt of a send we already know the answer of
        candidates = ledger.open_attempts(receipt.appid, receipt.openid, receipt.template_id)
        nid = rules.match_receipt(candidates, receipt, self.policy)
        entry = ledger.get(nid) if nid is not None else None
        if entry is not None:
            await self._apply(ctx, ledger, entry, rules.on_receipt(entry, receipt, now))


def receipt_of(rec: ConsumerRecord) -> Receipt | None:
    """A ``sent`` receipt, or None (other subscription events are the decide stage's, and so
    are undecodable ones: it sends them to the DLQ)."""
    try:
        event = decode_topic("subscriptions", rec.value or b"")
    except InputError:
        return None
    if not isinstance(event, SubscriptionEvent) or event.event != "sent":
        return None
    return Receipt(
        appid=event.appid,
        openid=event.openid,
        template_id=event.template_id,
        msgid=event.msgid or "",
        error_code=event.error_code or 0,
        time_ms=event.create_time * 1000,
    )

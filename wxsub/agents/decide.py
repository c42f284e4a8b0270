"""The decide stage (per user): candidates + subscription state -> intents or outcomes.

Inputs, all keyed by user and co-partitioned: candidates (from the orders and products stages),
subscriptions (from the gateway), preferences (from shops), corrections (from delivery). The
``users`` store holds one UserState per user; the due index holds users with held (collapse) or
deferred (quiet hours) intents, released by the timer. Within a batch, states are cached and
written once per user, only when changed; a state with nothing left in it is deleted (absent and
empty are the same state). The timer also sweeps the store (``StoreExpiry``): a user with
nothing left once pruned is deleted, one whose pruned state is at most half its size rewritten.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiokafka import ConsumerRecord

from wxsub.agents.base import StageEnv
from wxsub.agents.expiry import StoreExpiry
from wxsub.agents.rules import decide as rules
from wxsub.agents.rules.retention import Reason, swept_user
from wxsub.agents.rules.subscriptions import (
    UserState,
    apply_correction,
    apply_preference,
    apply_subscription,
    decode_user,
    encode_user,
)
from wxsub.schemas.internal import (
    Candidate,
    Correction,
    OutcomeReason,
    decode_internal,
    encode_internal,
)
from wxsub.schemas.records import PreferenceChanged, key_appid
from wxsub.streams.due import DueIndex
from wxsub.streams.metering import tally
from wxsub.streams.stage import PartitionContext, StageSpec
from wxsub.streams.store import PartitionStore

if TYPE_CHECKING:
    from wxsub.agents.kind_pauses import KindPauses

__all__ = ["DecideStage"]

log = logging.getLogger(__name__)
STAGE = rules.STAGE
_EMPTY = encode_user(UserState())


class _Users:
    """A batch-local cache over the users store (read once, written once per user)."""

    def __init__(self, store: PartitionStore) -> None:
        self.store = store
        self.cache: dict[bytes, tuple[UserState, int | None]] = {}
        self.dirty: set[bytes] = set()

    def get(self, key: bytes) -> UserState:
        hit = self.cache.get(key)
        if hit is None:
            raw = self.store.get(key)
            state = decode_user(raw) if raw else UserState()
            # (next_due() without its call for most users: neither held nor deferred)
            due = state.next_due() if state.held or state.deferred else None
            hit = self.cache[key] = (state, due)
        return hit[0]

    def put(self, key: bytes, state: UserState) -> None:
        hit = self.cache[key]
        if state is hit[0]:  # unchanged (a suppressed candidate, a duplicate): nothing to write
            return
        self.cache[key] = (state, hit[1])
        self.dirty.add(key)

    def flush(self) -> None:
        due = DueIndex(self.store)
        for key in self.dirty:
            state, old_due = self.cache[key]
            raw = encode_user(state)
            if raw == _EMPTY:  # nothing left: no entry (reads give UserState() for none)
                self.store.delete(key)
            else:
                self.store.put(key, raw)
            new_due = state.next_due()
            if new_due != old_due:  # (most users: neither held nor deferred, before or after)
                due.set(key, old_due, new_due)
        self.dirty.clear()
        self.cache.clear()


class _Sent:
    """The intents topic, and the intents sent per (kind, template) in one batch: counted
    once per batch (``_tally``), not per intent (a tally per intent and counter was ~2% of
    a fan-out candidate's instructions)."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.counts: dict[tuple[str, str], int] = {}


class DecideStage:
    """``pauses``: the pauses in force (KindPauses, shared with the worker's deliver stage);
    a candidate of a paused app and kind ends as ``paused`` without spending a credit."""

    def __init__(self, env: StageEnv, pauses: KindPauses | None = None) -> None:
        self.env = env
        self.pauses = pauses
        names = ("candidates", "subscriptions", "preferences", "corrections")
        self.spec = StageSpec(
            STAGE, tuple(env.topic(n) for n in names), stores=("users",), timer_interval_s=1.0,
            pacing="upstream",  # its candidates come at the orders and products stages' commits
        )  # fmt: skip
        self.expiry = StoreExpiry(env, STAGE, "users")

    async def process(self, ctx: PartitionContext, records: list[ConsumerRecord]) -> None:
        users = _Users(ctx.stores["users"])
        now = self.env.clock()
        candidates = self.env.topic("candidates")
        merchants = self.env.merchants
        why = self.pauses.why if self.pauses is not None and self.pauses.table else None
        sent = _Sent(self.env.topic("intents"))
        # the last candidate's app and its config (most batches: one app)
        appid: str | None = None
        cfg = None
        for rec in records:
            try:
                if rec.topic == candidates:  # most records (the rest: state events)
                    cand = decode_internal(Candidate, rec.value)
                    key = rec.key
                    if cand.appid != appid:
                        appid, cfg = cand.appid, merchants.app(cand.appid)
                    paused = why(cand.appid, cand.kind) if why is not None else None
                    decision = rules.decide(users.get(key), cand, cfg, now, paused)
                    users.put(key, decision.state)
                    await self._emit(ctx, decision, sent, key)
                    continue
                logical = self.env.logical(rec.topic)
                if logical == "corrections":
                    corr = decode_internal(Correction, rec.value)
                    corr_cfg = merchants.app(corr.appid)
                    users.put(rec.key, apply_correction(users.get(rec.key), corr, corr_cfg, now))
                else:
                    await self._state_event(ctx, users, rec, now)
            except Exception as exc:  # a bug must not stop the partition: DLQ, go on
                log.exception("decide failed", extra={"topic": rec.topic, "offset": rec.offset})
                await self.env.dead_letter(ctx, rec, exc, STAGE)
        users.flush()
        self._tally(ctx, sent)

    async def on_timer(self, ctx: PartitionContext, now_ms: int) -> None:
        users = _Users(ctx.stores["users"])
        sent = _Sent(self.env.topic("intents"))
        for _, key in list(DueIndex(ctx.stores["users"]).due(now_ms)):
            appid = key_appid(key)
            decision = rules.on_timer(users.get(key), self.env.merchants.app(appid), now_ms)
            users.put(key, decision.state)
            await self._emit(ctx, decision, sent, key)
        users.flush()
        self._tally(ctx, sent)
        self._sweep(ctx, self.env.clock())

    def _sweep(self, ctx: PartitionContext, now: int) -> None:
        """Prune the users of this slice; delete those with nothing left."""
        store, expiry = ctx.stores["users"], self.expiry
        for key, raw in expiry.slice(ctx, now):
            if key.startswith(DueIndex.PREFIX):
                continue
            cfg = self.env.merchants.app(key_appid(key))
            state, changed = swept_user(decode_user(raw), cfg, now)
            if state is None:
                store.delete(key)
                expiry.expired(ctx, Reason.USER_EMPTY)
            elif changed:
                # rewritten only once pruning halves it: the user's next event prunes anyway,
                # and a rewrite per expired id would double what the changelog is written
                smaller = encode_user(state)
                if 2 * len(smaller) <= len(raw):
                    store.put(key, smaller)
        expiry.sample()

    async def _state_event(
        self, ctx: PartitionContext, users: _Users, rec: ConsumerRecord, now: int
    ) -> None:
        ev = await self.env.decode_keyed(ctx, rec, STAGE)
        if ev is None:
            return
        cfg = self.env.merchants.app(ev.appid)
        state = users.get(rec.key)
        if isinstance(ev, PreferenceChanged):
            new, outcome = apply_preference(state, ev, cfg, now)
        else:
            new, outcome = apply_subscription(state, ev, cfg, now)
            granted = sum(new.credits.values()) - sum(state.credits.values())
            if granted > 0:
                tally(ctx, self.env.metrics.credits, "granted", n=granted)
        users.put(rec.key, new)
        await self.env.emit_outcomes(ctx, (outcome,))

    async def _emit(
        self, ctx: PartitionContext, decision: rules.Decision, sent: _Sent, key: bytes
    ) -> None:
        """``key``: the user's (the record's, or the due index's entry): every intent decided
        for a user is that user's, and the user key is every per-user topic's record key
        (``user_key``, test_contracts.test_keys), so not built again per intent."""
        for intent in decision.intents:
            await ctx.send(sent.topic, key, encode_internal(intent))
            labels = (intent.kind, intent.template_id)
            sent.counts[labels] = sent.counts.get(labels, 0) + 1
        if decision.outcomes:
            for o in decision.outcomes:
                if o.reason not in (OutcomeReason.QUIET_HOURS_DEFERRED,):
                    tally(ctx, self.env.metrics.suppressed, o.kind, o.reason)
            await self.env.emit_outcomes(ctx, decision.outcomes)

    def _tally(self, ctx: PartitionContext, sent: _Sent) -> None:
        """The intents sent (per kind and template) and the credits they consumed."""
        metrics = self.env.metrics
        for (kind, template_id), n in sent.counts.items():
            tally(ctx, metrics.intents, kind, template_id, n=n)
            tally(ctx, metrics.credits, "consumed", n=n)

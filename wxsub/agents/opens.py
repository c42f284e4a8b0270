"""Open attribution in the stats stage: sends remembered by ref, ``opened`` events joined to them.

Both inputs are keyed by user (``appid:openid``): a send's outcome and the user's opens meet on
one partition. Store entries (in the stats stage's ``stats`` store):

- ``s|<appid:openid>|<ref>`` -> :class:`~wxsub.agents.rules.attribution.SentRef` of a sent
  message; created by its ``sent`` / ``reconciled_sent`` outcome, marked by its first open, and
  deleted by the stage's DueIndex the app's ``retention.open_window_s`` (default 7 days) after
  the send (the window in force at the send, kept in the entry). At most one entry per send of
  the window.
- ``o|<appid:openid>|<ref>`` -> :class:`~wxsub.agents.rules.attribution.Held`: opens whose ref
  is not kept (yet), held ``worker.open_grace_ms`` after their event time for the send's outcome
  (an in-doubt send reconciled later, or the deliver stage's answer in its next turn); at most
  ``attribution.MAX_HELD_PER_USER`` opens per user. Deleted when the send's outcome arrives (the
  opens end ``opened`` / ``duplicate``) or by the DueIndex at the grace's end (``unknown_ref``,
  counted as ``open_grace`` in ``wxsub_expired_total``).

Every ``opened`` event ends as one outcome (kind ``opened``, stage ``stats``): ``opened``,
``duplicate`` (opened before) or ``unknown_ref`` (no such send kept: wrong ref, another user's,
or older than the window); a bad one goes to the DLQ. The stats rows count ``opened`` in the
send's template row (on the open's day) and ``open:duplicate`` / ``open:unknown_ref``.
"""

from __future__ import annotations

from dataclasses import replace

from aiokafka import ConsumerRecord

from wxsub.agents.base import StageEnv
from wxsub.agents.rules import attribution
from wxsub.agents.rules import stats as rules
from wxsub.agents.rules.retention import retention
from wxsub.schemas.internal import Outcome, OutcomeReason, user_key
from wxsub.schemas.records import MessageOpened
from wxsub.streams.due import DueIndex
from wxsub.streams.metering import tally
from wxsub.streams.stage import PartitionContext
from wxsub.streams.store import PartitionStore

__all__ = ["HELD", "OpenJoin"]

_SENT = b"s|"
HELD = b"o|"
_REASONS = {"opened": OutcomeReason.OPENED, "duplicate": OutcomeReason.DUPLICATE}


def _user_ref(appid: str, openid: str, ref: str) -> bytes:
    return f"{user_key(appid, openid)}|{ref}".encode()


class OpenJoin:
    def __init__(
        self, env: StageEnv, window_ms: int | None = None, grace_ms: int | None = None
    ) -> None:
        self.env = env
        self.window_ms = window_ms  # tests: one window for every app, not retention.open_window_s
        self.grace_ms = env.settings.worker.open_grace_ms if grace_ms is None else grace_ms

    def _window(self, appid: str) -> int:
        if self.window_ms is not None:
            return self.window_ms
        return attribution.window_ms(retention(self.env.merchants.app(appid)).open_window_s)

    async def sent(
        self,
        ctx: PartitionContext,
        store: PartitionStore,
        o: Outcome,
        rows: dict[rules.RowKey, rules.Row],
    ) -> None:
        """Remember a sent message's ref (kept as it is when already there: a replayed send),
        with the app's open window now; end the opens held for it."""
        if not (o.notification_id and o.openid):
            return
        ref = attribution.ref_of(o.notification_id)
        tail = _user_ref(o.appid, o.openid, ref)
        raw = store.get(_SENT + tail)
        if raw is None:
            kept = attribution.SentRef(o.template_id, o.kind, o.at, 0, self._window(o.appid))
            DueIndex(store).set(_SENT + tail, None, kept.until)
        else:
            kept = attribution.decode_ref(raw)
        held_raw = store.get(HELD + tail)
        if held_raw is not None:
            held = attribution.decode_held(held_raw)
            store.delete(HELD + tail)
            DueIndex(store).set(HELD + tail, held.due_ms, None)
            kept, verdicts = attribution.judge_held(kept, held.opens)
            for one, verdict in zip(held.opens, verdicts, strict=True):
                await self._end(ctx, rows, held, one, kept, verdict)
        if raw is None or held_raw is not None:
            store.put(_SENT + tail, attribution.encode_ref(kept))

    async def opened(
        self,
        ctx: PartitionContext,
        store: PartitionStore,
        rec: ConsumerRecord,
        rows: dict[rules.RowKey, rules.Row],
    ) -> None:
        """Join one ``opened`` record to its send (or hold it for its send): counters, the
        outcome, the metrics."""
        event = await self.env.decode_keyed(ctx, rec, rules.STAGE)
        if not isinstance(event, MessageOpened):
            return  # diverted: the DLQ with its reason, or moved to its home partition
        at = int(event.occurred_at.timestamp() * 1000)
        tail = _user_ref(event.appid, event.openid, event.ref)
        raw = store.get(_SENT + tail)
        kept = attribution.decode_ref(raw) if raw is not None else None
        one = attribution.HeldOpen(event.event_id, at)
        if kept is None and self._hold(store, tail, event, one):
            return
        verdict = attribution.judge_open(kept, at)
        if verdict == "opened" and kept is not None:
            kept = replace(kept, opened_at=at)
            store.put(_SENT + tail, attribution.encode_ref(kept))
        where = attribution.Held(0, event.appid, event.openid, event.ref, ())
        await self._end(ctx, rows, where, one, kept, verdict)

    def _hold(
        self, store: PartitionStore, tail: bytes, event: MessageOpened, one: attribution.HeldOpen
    ) -> bool:
        """Hold an open with no kept ref for its send, when the grace and the bound allow."""
        user = user_key(event.appid, event.openid).encode() + b"|"
        held_of_user = sum(
            len(attribution.decode_held(v).opens) for _, v in store.scan(HELD + user)
        )
        raw = store.get(HELD + tail)
        if raw is not None:  # the same ref opened again while waiting: wait with the first
            if held_of_user >= attribution.MAX_HELD_PER_USER:
                return False
            held = attribution.decode_held(raw)
            held = replace(held, opens=(*held.opens, one))
            store.put(HELD + tail, attribution.encode_held(held))
            return True
        due = attribution.hold_until(one.at, self.env.clock(), self.grace_ms, held_of_user)
        if due is None:
            return False
        held = attribution.Held(due, event.appid, event.openid, event.ref, (one,))
        store.put(HELD + tail, attribution.encode_held(held))
        DueIndex(store).set(HELD + tail, None, due)
        return True

    async def grace_over(
        self,
        ctx: PartitionContext,
        store: PartitionStore,
        key: bytes,
        rows: dict[rules.RowKey, rules.Row],
    ) -> None:
        """The grace of the opens held at ``key`` is over (the caller removed its due entry):
        the entry is deleted, each open ends ``unknown_ref``."""
        raw = store.get(key)
        if raw is None:
            return
        store.delete(key)
        held = attribution.decode_held(raw)
        for one in held.opens:
            await self._end(ctx, rows, held, one, None, "unknown_ref")

    async def _end(
        self,
        ctx: PartitionContext,
        rows: dict[rules.RowKey, rules.Row],
        where: attribution.Held,
        one: attribution.HeldOpen,
        kept: attribution.SentRef | None,
        verdict: str,
    ) -> None:
        """One open ends with ``verdict``: its stats row (the open's day), metrics, outcome."""
        appid = where.appid
        cfg = self.env.merchants.app(appid)
        template = kept.template_id if kept is not None else rules.NO_TEMPLATE
        kind = kept.kind if kept is not None else "-"
        row_key = rules.RowKey(appid, template, rules.day_of(one.at, cfg.timezone if cfg else None))
        counter = "opened" if verdict == "opened" else f"open:{verdict}"
        row = rows.setdefault(row_key, {})
        row[counter] = row.get(counter, 0) + 1
        metrics, app = self.env.metrics, rules.app_label(appid, cfg)
        if verdict == "opened":
            tally(ctx, metrics.funnel, app, template, kind, "opened")
        tally(ctx, metrics.opens, app, verdict)
        outcome = Outcome(
            one.event_id, "opened", _REASONS.get(verdict, OutcomeReason.UNKNOWN_REF), rules.STAGE,
            appid, where.openid, template, detail=f"ref {where.ref}", at=one.at,
        )  # fmt: skip
        await self.env.emit_outcomes(ctx, (outcome,))

"""Open attribution in the stats stage: sends remembered by ref, ``opened`` events joined to them.

Both inputs are keyed by user (``appid:openid``): a send's outcome and the user's opens meet on
one partition. Store entries (in the stats stage's ``stats`` store):

- ``s|<appid:openid>|<ref>`` -> :class:`~wxsub.agents.rules.attribution.SentRef` of a sent
  message; created by its ``sent`` / ``reconciled_sent`` outcome, marked by its first open, and
  deleted by the stage's DueIndex ``attribution.OPEN_WINDOW_MS`` (7 days) after the send. At most
  one entry per send of the last 7 days.

Every ``opened`` event ends as an outcome (kind ``opened``, stage ``stats``): ``opened``,
``duplicate`` (opened before) or ``unknown_ref`` (no such send kept: wrong ref, another user's,
or older than 7 days); a bad one goes to the DLQ. The stats rows count ``opened`` in the send's
template row (on the open's day) and ``open:duplicate`` / ``open:unknown_ref``.
"""

from __future__ import annotations

from dataclasses import replace

from aiokafka import ConsumerRecord

from wxsub.agents.base import StageEnv
from wxsub.agents.rules import attribution
from wxsub.agents.rules import stats as rules
from wxsub.schemas.internal import Outcome, OutcomeReason, user_key
from wxsub.schemas.records import MessageOpened
from wxsub.streams.due import DueIndex
from wxsub.streams.metering import tally
from wxsub.streams.stage import PartitionContext
from wxsub.streams.store import PartitionStore

__all__ = ["OpenJoin"]

_SENT = b"s|"


def _ref_key(appid: str, openid: str, ref: str) -> bytes:
    return _SENT + f"{user_key(appid, openid)}|{ref}".encode()


class OpenJoin:
    def __init__(self, env: StageEnv, window_ms: int = attribution.OPEN_WINDOW_MS) -> None:
        self.env = env
        self.window_ms = window_ms

    def sent(self, store: PartitionStore, o: Outcome) -> None:
        """Remember a sent message's ref (kept as it is when already there: a replayed send)."""
        if not (o.notification_id and o.openid):
            return
        key = _ref_key(o.appid, o.openid, attribution.ref_of(o.notification_id))
        if store.get(key) is not None:
            return
        store.put(key, attribution.encode_ref(attribution.SentRef(o.template_id, o.kind, o.at)))
        DueIndex(store).set(key, None, o.at + self.window_ms)

    async def opened(
        self,
        ctx: PartitionContext,
        store: PartitionStore,
        rec: ConsumerRecord,
        rows: dict[rules.RowKey, rules.Row],
    ) -> None:
        """Join one ``opened`` record to its send: counters, the outcome, the metrics."""
        event = await self.env.decode_keyed(ctx, rec, rules.STAGE)
        if not isinstance(event, MessageOpened):
            return  # diverted: the DLQ with its reason, or moved to its home partition
        at = int(event.occurred_at.timestamp() * 1000)
        key = _ref_key(event.appid, event.openid, event.ref)
        raw = store.get(key)
        kept = attribution.decode_ref(raw) if raw is not None else None
        verdict = attribution.judge_open(kept, at, self.window_ms)
        cfg = self.env.merchants.app(event.appid)
        template = kept.template_id if kept is not None else rules.NO_TEMPLATE
        kind = kept.kind if kept is not None else "-"
        row_key = rules.RowKey(
            event.appid, template, rules.day_of(at, cfg.timezone if cfg else None)
        )
        counter = "opened" if verdict == "opened" else f"open:{verdict}"
        row = rows.setdefault(row_key, {})
        row[counter] = row.get(counter, 0) + 1
        metrics, app = self.env.metrics, rules.app_label(event.appid, cfg)
        if verdict == "opened" and kept is not None:
            store.put(key, attribution.encode_ref(replace(kept, opened_at=at)))
            tally(ctx, metrics.funnel, app, template, kind, "opened")
        tally(ctx, metrics.opens, app, verdict)
        reason = {
            "opened": OutcomeReason.OPENED,
            "duplicate": OutcomeReason.DUPLICATE,
        }.get(verdict, OutcomeReason.UNKNOWN_REF)
        outcome = Outcome(
            event.event_id, "opened", reason, rules.STAGE, event.appid, event.openid,
            template, detail=f"ref {event.ref}", at=at,
        )  # fmt: skip
        await self.env.emit_outcomes(ctx, (outcome,))

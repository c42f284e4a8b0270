"""Service cards, the card stage's side: one entry per card, its queue of operations and the
state of its one call in flight. Pure functions of (entry, input, now); docs/service-cards.md.

A card call *sets a state*, so it is judged by asking WeChat: an answer lost, or an ``attempt``
found after a crash, makes the entry ``in_doubt``; the timer then reads getUserNotify (the last
state WeChat accepted): the attempted content there -> applied; otherwise -> not applied, sent
again. Calls for one card go strictly in ``seq`` order, one at a time.

Phases: ``idle`` (nothing in flight; the queue's head is sent when due) -> ``attempt`` (durable
before the call) -> idle (applied or refused), ``retry`` (not applied: -1, 45011, connect error;
85437 "not visible yet" before activation: after a minute, until the activation window ends,
not counted against ``MAX_ATTEMPTS``), ``in_doubt``; ends: ``done`` (terminal state, or the
30-day window over), ``fallback`` (never activated: the orders stage is told, the classic
path again; it is told ``activated`` too), ``refused`` (-1004: the user refused the card;
orders told). An entry is deleted by the timer at ``due`` once it has ended: the end of its
update window (activated_at + 30 days) or, if never activated, of its activation window
(payment + 24 h). So entries are bounded by the cards of the last 30 days.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from wxsub.agents.rules.cards import ACTIVATE_WINDOW_MS, UPDATE_WINDOW_MS, CardOp, CardResult
from wxsub.errors import InDoubtError, RetryableError, WeChatError
from wxsub.schemas.struct import from_doc, record
from wxsub.wechat.card_types import CARD_TYPES

__all__ = [
    "ENDED",
    "CardEntry",
    "Change",
    "begin",
    "decode_entry",
    "enqueue",
    "on_answer",
    "on_failure_event",
    "on_info",
    "on_leftover",
    "on_window",
    "replace_due",
    "sendable",
    "window_end",
]

ENDED = frozenset({"done", "fallback", "refused"})
NOT_VISIBLE_RETRY_MS = 60_000  # "retry after 1 minute" [doc]
RECONCILE_AFTER_MS = 5_000
MAX_ATTEMPTS = 8
_BACKOFF_MS, _BACKOFF_MAX_MS = 2_000, 300_000


@record
class CardEntry:
    appid: str
    openid: str
    order_id: str
    code: str
    notify_type: int
    pay_amount: int
    pay_time: int  # epoch seconds
    confirmed: int = 0  # the last state WeChat accepted (0: not activated)
    content: Mapping[str, Any] | None = None
    activated_at: int = 0
    queue: tuple[CardOp, ...] = ()
    last_seq: int = 0
    phase: str = "idle"
    attempts: int = 0
    due: int | None = None
    errcode: int | None = None


def decode_entry(doc: dict[str, Any]) -> CardEntry:
    doc["queue"] = tuple(CardOp.from_dict(o) for o in doc.get("queue", ()))
    return from_doc(CardEntry, doc)


@record
class Change:
    """A new entry (None: delete it), the metric result, and word for the orders stage."""

    entry: CardEntry | None
    result: str = ""
    reason: str = ""
    tell: CardResult | None = None


def window_end(e: CardEntry) -> int:
    """When the card's window ends (epoch ms): 24 h after payment until it is activated, then
    30 days after activation; the entry is deleted then at the latest."""
    if e.activated_at:
        return e.activated_at + UPDATE_WINDOW_MS
    return e.pay_time * 1000 + ACTIVATE_WINDOW_MS


def enqueue(entry: CardEntry | None, op: CardOp, now: int) -> Change:
    if entry is None:
        entry = CardEntry(
            op.appid, op.openid, op.order_id, op.code, op.notify_type, op.pay_amount, op.pay_time
        )
    if op.seq <= entry.last_seq:
        return Change(entry, "duplicate")
    if entry.phase in ENDED:
        return Change(replace(entry, last_seq=op.seq), "dropped", entry.phase)
    queue = tuple(sorted((*entry.queue, op), key=lambda o: o.seq))
    due = entry.due if entry.phase != "idle" else now
    return Change(replace(entry, queue=queue, last_seq=op.seq, due=due), "queued")


def sendable(entry: CardEntry, now: int) -> bool:
    return (
        entry.phase in ("idle", "retry")
        and bool(entry.queue)
        and (entry.due is None or entry.due <= now)
    )


def begin(entry: CardEntry, now: int) -> CardEntry:
    """The durable attempt (due now: a leftover is found by the timer)."""
    return replace(entry, phase="attempt", attempts=entry.attempts + 1, due=now)


def check_json(entry: CardEntry) -> dict[str, int] | None:
    """check_json for the call: on activation only."""
    if entry.confirmed:
        return None
    return {"pay_amount": entry.pay_amount, "pay_time": entry.pay_time}


def _applied(entry: CardEntry, now: int) -> Change:
    head, rest = entry.queue[0], entry.queue[1:]
    activated = entry.activated_at or now
    result = "activated" if not entry.confirmed else "updated"
    e = replace(
        entry, confirmed=head.status, content=head.content, activated_at=activated, queue=rest,
        phase="idle", attempts=0, errcode=None,
    )  # fmt: skip
    # the orders stage ends the classic candidates it held while the activation was pending
    tell = None if entry.confirmed else CardResult(e.appid, e.order_id, e.code, "activated")
    card = CARD_TYPES[entry.notify_type]
    if card.terminal(head.status):
        return Change(replace(e, phase="done", queue=(), due=window_end(e)), result, "", tell)
    return Change(replace(e, due=now if rest else window_end(e)), result, "", tell)


def _fallback(entry: CardEntry, reason: str) -> Change:
    tell = CardResult(entry.appid, entry.order_id, entry.code, "fallback", reason)
    e = replace(entry, phase="fallback", queue=(), due=window_end(entry))
    return Change(e, "fallback", reason, tell)


def on_answer(entry: CardEntry, answer: WeChatError | None, now: int) -> Change:
    """The set call's answer (None: errcode 0)."""
    if answer is None:
        return _applied(entry, now)
    code = answer.errcode
    e = replace(entry, errcode=code)
    reason = str(code) if code is not None else type(answer).__name__
    if isinstance(answer, InDoubtError):
        return Change(replace(e, phase="in_doubt", due=now + RECONCILE_AFTER_MS), "in_doubt")
    if isinstance(answer, RetryableError) and code == 85437 and not e.confirmed:
        # "not visible yet": bounded by the activation window, not by MAX_ATTEMPTS (this attempt
        # does not count; a transient error in between still has its own budget)
        if now + NOT_VISIBLE_RETRY_MS > window_end(e):
            return _fallback(e, "activation window")
        again = now + NOT_VISIBLE_RETRY_MS
        return Change(
            replace(e, phase="retry", attempts=max(e.attempts - 1, 0), due=again), "not_visible"
        )
    if isinstance(answer, RetryableError) and e.attempts < MAX_ATTEMPTS:
        delay = min(_BACKOFF_MS * 2 ** (e.attempts - 1), _BACKOFF_MAX_MS)
        return Change(replace(e, phase="retry", due=now + delay), "retry", reason)
    if not e.confirmed:  # activation refused for good: the classic path again
        return _fallback(e, reason)
    rest = e.queue[1:]  # this update is refused: go on with the next one
    e = replace(e, queue=rest, phase="idle", attempts=0, due=now if rest else window_end(e))
    return Change(e, "failed", reason)


def on_leftover(entry: CardEntry, now: int) -> Change:
    """An ``attempt`` found by someone other than its call (crash, abort): in doubt, asked now."""
    return Change(replace(entry, phase="in_doubt", due=now), "in_doubt", "leftover")


def on_info(
    entry: CardEntry, content: Mapping[str, Any] | None, code_state: int, now: int
) -> Change:
    """getUserNotify's answer for an in-doubt entry."""
    if not entry.queue:
        return Change(replace(entry, phase="idle", due=window_end(entry)))
    if content is not None and dict(content) == dict(entry.queue[0].content):
        change = _applied(entry, now)
        return replace(change, result="reconciled")
    if code_state == 10:
        return on_failure_event(entry, -1004)
    return Change(replace(entry, phase="retry", due=now), "resent")


def on_failure_event(entry: CardEntry, fail_ret: int) -> Change:
    """A ``notify_service_msg_send_result`` event: -1004 (user refused) ends the card."""
    if fail_ret != -1004 or entry.phase == "refused":
        return Change(entry)
    tell = CardResult(entry.appid, entry.order_id, entry.code, "refused", "user refused")
    e = replace(entry, phase="refused", queue=(), due=window_end(entry))
    return Change(e, "refused", "", tell)


def on_window(entry: CardEntry, now: int) -> Change | None:
    """A due entry whose window is over: delete an ended one, end a live one; else None."""
    if now < window_end(entry):
        return None
    if entry.phase in ENDED:
        return Change(None)
    if not entry.confirmed:
        return _fallback(entry, "activation window")
    return Change(replace(entry, phase="done", queue=(), due=now), "expired")


def replace_due(entry: CardEntry, due: int | None) -> CardEntry:
    return replace(entry, due=due)

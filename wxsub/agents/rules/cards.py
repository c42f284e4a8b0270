"""Service cards, the orders side: which card operations an order's events produce, and which
classic candidates the card replaces ("never both"). Pure functions of (order state, step, event,
merchant config, now).

An order whose events carry a WeChat Pay ``transaction_id``, in an app with a ``cards`` config,
gets a card of the configured type. Each event's status (order) or state (logistics) maps to a
card state through the config's tables; a mapped state different from the card's current one
becomes a :class:`CardOp` (numbered per card: ``seq``), but only if the card's state table allows
the transition. The card stage (``wxsub/agents/cards.py``) calls WeChat in ``seq`` order.

Per event that took part in the step, exactly one outcome stays (or a candidate):

- a card transition -> ``card_update`` (a classic candidate of a replaced kind is dropped);
- no transition, card live, a replaced classic candidate -> dropped, ``card_replaced``;
- a transition the table forbids -> ``card_illegal`` (classic dropped while the card is live);
- the card terminal, refused or past its window -> ``card_ended`` (a classic candidate then
  goes ahead, except after a refusal: the user said no to this order's messages).

The card's entry here lives in the order's ``OrderState`` (``card_*`` fields) and ends with it.
``card_off`` says why a card stopped: ``fallback`` (never activated: the classic path again),
``refused`` (the user refused it), ``terminal``, ``window``.

Until the card stage says the card is activated (``card_active``), a replaced classic candidate
is *held* on the order (``card_held``, the latest per kind; an older one of the same kind ends
with its card reason, superseded), and its event has no outcome yet. The card stage's word
(:func:`on_card_result`, from ``card-results``) ends them: ``activated`` or ``refused`` -> dropped,
each event ends with its card reason (a classic credit saved); ``fallback`` -> the held
candidates go to decide (the classic path, as if the card had never been asked for).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from wxsub.agents.rules.common import outcome, to_ms
from wxsub.agents.rules.orders import (
    STAGE,
    HeldCandidate,
    OrderState,
    OrderStep,
    PendingLogistics,
)
from wxsub.merchant_cards import CardConfig
from wxsub.merchants import MerchantConfig
from wxsub.schemas.internal import Candidate, Outcome, OutcomeReason
from wxsub.schemas.records import LogisticsUpdated, OrderStatusChanged
from wxsub.schemas.struct import from_doc, record
from wxsub.wechat.card_types import CardType, check_content, legal

__all__ = [
    "ACTIVATE_WINDOW_MS",
    "UPDATE_WINDOW_MS",
    "CardOp",
    "CardResult",
    "CardStep",
    "apply_card_result",
    "card_logistics_step",
    "card_order_step",
    "on_card_result",
    "refusal_outcome",
]

ACTIVATE_WINDOW_MS = 24 * 3600 * 1000  # activate within 24 h of payment [doc]
UPDATE_WINDOW_MS = 30 * 24 * 3600 * 1000  # update for 30 days after activation [doc]
_NAME_MAX = 40


@record
class CardOp:
    """Set one card to one state (the ``card-ops`` topic, keyed by user ``appid:openid``)."""

    appid: str
    openid: str
    order_id: str
    code: str  # notify_code: the WeChat Pay transaction id
    notify_type: int
    seq: int  # 1, 2, ... per card: the order of the calls
    status: int
    content: Mapping[str, Any]  # the content_json object (cur_status included)
    event_id: str
    occurred_at: int
    pay_amount: int
    pay_time: int  # epoch seconds

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> CardOp:
        return from_doc(cls, doc)


@record
class CardResult:
    """The card stage's word back to the orders stage (``card-results``, keyed by order key):
    ``activated`` (WeChat accepted the first state), ``fallback`` (never activated) or
    ``refused`` (the user refused the card, -1004)."""

    appid: str
    order_id: str
    code: str
    result: str
    detail: str = ""

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> CardResult:
        return from_doc(cls, doc)


@record
class CardStep:
    """The orders step with the card applied, the card operations and the classic candidates
    the card replaced (``saved``: kinds, for the credits-saved counter)."""

    step: OrderStep
    ops: tuple[CardOp, ...] = ()
    saved: tuple[str, ...] = ()


def card_order_step(
    before: OrderState | None,
    pending: Sequence[PendingLogistics],
    step: OrderStep,
    ev: OrderStatusChanged,
    cfg: MerchantConfig | None,
    now_ms: int,
) -> CardStep:
    """Apply an order event's card part to the step ``rules.orders.on_order_event`` returned."""
    cards = cfg.cards if cfg is not None else None
    order = step.order
    if cards is None or order is None or order is before:  # no cards, duplicate or regression
        return CardStep(step)
    order = _carry(before, order)
    if order.card_code is None and ev.transaction_id:
        paid = to_ms(ev.paid_at) if ev.paid_at is not None else to_ms(ev.occurred_at)
        amount = ev.pay_amount if ev.pay_amount is not None else ev.amount
        order = replace(order, card_code=ev.transaction_id, paid_at=paid, pay_amount=amount)
        if now_ms - paid > ACTIVATE_WINDOW_MS:
            order = replace(order, card_off="fallback")
    events: list[tuple[str, int | None, int]] = [
        (ev.event_id, cards.order_map.get(ev.status), to_ms(ev.occurred_at))
    ]
    if pending and not step.pending:  # released with this order, in arrival order
        events += [(p.event_id, cards.logistics_map.get(p.state), p.occurred_at) for p in pending]
    return _apply(order, step, events, cards, now_ms)


def card_logistics_step(
    step: OrderStep, ev: LogisticsUpdated, cfg: MerchantConfig | None, now_ms: int
) -> CardStep:
    """Apply a joined logistics event's card part (a pending one waits for its order)."""
    cards = cfg.cards if cfg is not None else None
    order = step.order
    if cards is None or order is None or not (step.candidates or step.outcomes):
        return CardStep(step)
    target = cards.logistics_map.get(ev.state)
    return _apply(order, step, [(ev.event_id, target, to_ms(ev.occurred_at))], cards, now_ms)


def apply_card_result(order: OrderState | None, result: CardResult) -> OrderState | None:
    """The card stage says the card fell back or was refused: remember it on the order."""
    if order is None or order.card_code != result.code or order.card_off:
        return order
    return replace(order, card_off=result.result)


def on_card_result(order: OrderState | None, result: CardResult, now_ms: int) -> CardStep:
    """The card stage's word applied to the order (``step.order is order``: nothing changed).
    ``activated``: the held candidates are dropped, their events end with their card reasons
    (``saved``); ``fallback``: they go to decide (``step.candidates``); ``refused``: dropped like
    on activation, plus the ``card_refused`` outcome."""
    if order is None or order.card_code != result.code:
        return CardStep(OrderStep(order, ()))
    held = order.card_held
    ended = tuple(_held_outcome(order, h, now_ms) for h in held)
    kinds = tuple(h.candidate.kind for h in held)
    if result.result == "activated":
        new = replace(order, card_active=True, card_held=())
        return CardStep(OrderStep(new, (), (), ended), saved=kinds)
    applied = apply_card_result(order, result)
    assert applied is not None
    if applied is order and not held:
        return CardStep(OrderStep(order, ()))
    new = replace(applied, card_held=())
    if result.result == "fallback":
        return CardStep(OrderStep(new, (), tuple(h.candidate for h in held)))
    refused = refusal_outcome(new, result, now_ms) if applied is not order else None
    return CardStep(OrderStep(new, (), (), ended + ((refused,) if refused else ())), saved=kinds)


def refusal_outcome(order: OrderState, result: CardResult, now_ms: int) -> Outcome | None:
    """The ``card_refused`` outcome when ``result`` is the user refusing the order's card
    (-1004): user feedback, counted per template in stats (``card:refused``)."""
    if result.result != "refused" or order.card_code != result.code:
        return None
    return outcome(
        order.event_id, "order_status", OutcomeReason.CARD_REFUSED, STAGE, now_ms,
        appid=order.appid, openid=order.openid, detail=result.detail,
    )  # fmt: skip


# --- internals -----------------------------------------------------------------------------------


def _carry(before: OrderState | None, new: OrderState) -> OrderState:
    if before is None or before.card_code is None:
        return new
    return replace(
        new,
        card_code=before.card_code,
        card_status=before.card_status,
        card_seq=before.card_seq,
        card_off=before.card_off,
        paid_at=before.paid_at,
        pay_amount=before.pay_amount,
        card_active=before.card_active,
        card_held=before.card_held,
    )


def _apply(
    order: OrderState,
    step: OrderStep,
    events: Sequence[tuple[str, int | None, int]],
    cards: CardConfig,
    now_ms: int,
) -> CardStep:
    if order.card_code is None:
        return CardStep(replace(step, order=order))
    if not order.card_off and now_ms - order.paid_at > ACTIVATE_WINDOW_MS + UPDATE_WINDOW_MS:
        order = replace(order, card_off="window")
    by_event: dict[str, str] = {}  # event id -> card reason
    details: dict[str, str] = {}
    ops: list[CardOp] = []
    for event_id, target, at in events:
        order, reason, detail, new_ops = _transition(order, target, event_id, at, cards)
        ops += new_ops
        if reason:
            by_event[event_id] = reason
            details[event_id] = detail
    # a card that ended with this very step still replaces this step's classic messages
    suppress = not order.card_off or order.card_off == "refused" or bool(ops)
    # activation asked for, not confirmed yet: replaced candidates are held, not dropped
    hold = order.card_seq > 0 and not order.card_active and order.card_off in ("", "terminal")
    held = list(order.card_held)
    cands: list[Candidate] = []
    saved: list[str] = []
    superseded: list[Outcome] = []
    for cand in step.candidates:
        if cand.kind in cards.replaces and suppress:
            by_event.setdefault(cand.event_id, OutcomeReason.CARD_REPLACED)
            if not hold:
                saved.append(cand.kind)
                continue
            h = HeldCandidate(cand, by_event.pop(cand.event_id), details.pop(cand.event_id, ""))
            for old in held:
                if old.candidate.kind == cand.kind:  # the latest per kind: the older one ends
                    superseded.append(_held_outcome(order, old, now_ms))
                    saved.append(cand.kind)
            held = [old for old in held if old.candidate.kind != cand.kind] + [h]
        else:  # the classic message goes ahead: that is how the event ends
            cands.append(cand)
            by_event.pop(cand.event_id, None)
    if hold:
        order = replace(order, card_held=tuple(held))
    outs = [o for o in step.outcomes if o.event_id not in by_event] + superseded
    for event_id, reason in by_event.items():
        outs.append(
            outcome(
                event_id,
                _kind(step, event_id),
                reason,
                STAGE,
                now_ms,
                appid=order.appid,
                openid=order.openid,
                detail=details.get(event_id, ""),
            )
        )
    new_step = OrderStep(order, step.pending, tuple(cands), tuple(outs))
    return CardStep(new_step, tuple(ops), tuple(saved))


def _held_outcome(order: OrderState, h: HeldCandidate, now_ms: int) -> Outcome:
    """A held candidate's event ends with its card reason (the card took it)."""
    c = h.candidate
    return outcome(
        c.event_id, c.kind, h.reason, STAGE, now_ms, appid=order.appid, openid=order.openid,
        detail=h.detail,
    )  # fmt: skip


def _kind(step: OrderStep, event_id: str) -> str:
    for c in step.candidates:
        if c.event_id == event_id:
            return c.kind
    for o in step.outcomes:
        if o.event_id == event_id:
            return o.kind
    return "order_status"


def _transition(
    order: OrderState, target: int | None, event_id: str, at: int, cards: CardConfig
) -> tuple[OrderState, str, str, list[CardOp]]:
    """(order, card reason or "", detail, ops) for one event's mapped card state."""
    card = cards.card
    if target is None or (target == order.card_status and not order.card_off):
        return order, "", "", []
    if order.card_off:
        if order.card_off == "fallback":
            return order, "", "", []
        return order, OutcomeReason.CARD_ENDED, f"card {order.card_off}", []
    if order.card_status and card.terminal(order.card_status):
        return order, OutcomeReason.CARD_ENDED, f"card terminal at {order.card_status}", []
    path = _path(card, order.card_status or None, target)
    if path is None:
        detail = f"card {card.notify_type}: {order.card_status or 'new'} -> {target} not allowed"
        return order, OutcomeReason.CARD_ILLEGAL, detail, []
    ops: list[CardOp] = []
    for status in path:
        content = _content(order, status, at, cards)
        problem = check_content(card, content)
        if problem is not None:
            return order, OutcomeReason.INVALID_DATA, f"card content: {problem}", []
        seq = order.card_seq + 1
        ops.append(
            CardOp(
                order.appid,
                order.openid,
                order.order_id,
                order.card_code or "",
                card.notify_type,
                seq,
                status,
                content,
                event_id,
                at,
                order.pay_amount,
                order.paid_at // 1000,
            )
        )
        order = replace(order, card_status=status, card_seq=seq)
    if card.terminal(order.card_status):
        order = replace(order, card_off="terminal")
    return order, OutcomeReason.CARD_UPDATE, f"card state {target}", ops


def _path(card: CardType, prev: int | None, target: int) -> tuple[int, ...] | None:
    """The states to set: ``target``, or (a new card whose first mapped state cannot activate
    it) the first activating state from which ``target`` may follow, then ``target``."""
    if legal(card, prev, target):
        return (target,)
    if prev is None:
        for first in sorted(card.states):
            if legal(card, None, first) and legal(card, first, target):
                return first, target
    return None


def _content(order: OrderState, status: int, at: int, cards: CardConfig) -> dict[str, Any]:
    state = cards.card.state(status)
    assert state is not None
    path = cards.wxa_path_query.replace("{order_id}", order.order_id)
    content: dict[str, Any] = {"cur_status": status, "wxa_path_query": path}
    if "product_list" in state.required:
        name = (order.item_title or order.order_id)[:_NAME_MAX]
        count = max(order.item_count, 1)
        item = {
            "product_img": cards.product_img,
            "product_name": name,
            "product_path_query": cards.product_path_query.replace("{order_id}", order.order_id),
            "count": count,
        }
        content["product_count"] = count
        content["product_list"] = {"info_list": [item]}
    if "arrival_time" in state.fields and status == 8:
        content["arrival_time"] = at // 1000
    return content

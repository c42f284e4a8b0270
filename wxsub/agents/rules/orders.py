"""Orders and logistics: the orders table, the logistics join, pending logistics and orphans.

State (per order key ``{appid}:{order_id}``, co-partitioned for both topics):
``OrderState`` (the latest status by event time, and the owner) and a list of
``PendingLogistics`` (logistics that arrived before their order). Both are frozen dataclasses;
store them with ``orjson.dumps`` and rebuild with ``from_dict``.

Rules:
- An order event older (by event time) than the stored one is ignored: outcome ``regression``.
  The same event id as the stored one: outcome ``duplicate``. Otherwise it is stored, and it
  notifies when its status is in the kind's ``notify_on`` (else outcome ``no_rule``).
- A logistics event joins the stored order's owner. Without an order it waits in pending; when
  the order arrives the pending events are joined in arrival order (:func:`on_order_event`
  does both); a pending event older than ``orphan_after_s`` of wall clock ends as ``orphan``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from wxsub.agents.rules.common import outcome, to_ms
from wxsub.merchants import DEFAULT_ORPHAN_AFTER_S, MerchantConfig
from wxsub.schemas.internal import Candidate, Outcome, OutcomeReason, short_form
from wxsub.schemas.records import LogisticsUpdated, OrderItem, OrderStatusChanged
from wxsub.schemas.struct import from_doc, record

__all__ = [
    "STAGE",
    "HeldCandidate",
    "LogisticsDecision",
    "OrderState",
    "OrderStep",
    "PendingLogistics",
    "apply_logistics_event",
    "apply_order_event",
    "expire_pending",
    "on_logistics_event",
    "on_order_event",
    "orphan_after_s",
    "pending_from_list",
    "release_pending",
    "replaces",
]

STAGE = "orders"


@record
class HeldCandidate:
    """A classic candidate a service card replaced while the card's activation was pending
    (``rules/cards.py``): dropped when the card is activated (its event then ends with
    ``reason``), sent to decide when the card falls back."""

    candidate: Candidate
    reason: str  # the outcome reason its event ends with if the card takes it
    detail: str = ""

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any] | HeldCandidate) -> HeldCandidate:
        if isinstance(doc, HeldCandidate):
            return doc
        d = dict(doc)
        if not isinstance(d["candidate"], Candidate):
            d["candidate"] = from_doc(Candidate, d["candidate"])
        return from_doc(cls, d)


@record
class OrderState:
    """The orders table value: the latest status of one order and its owner."""

    appid: str
    order_id: str
    openid: str
    status: str
    occurred_at: int
    event_id: str
    amount: int = 0
    currency: str = "CNY"
    store_id: str | None = None
    item_title: str | None = None
    item_count: int = 0
    # the order's service card (rules/cards.py): code = WeChat Pay transaction id
    card_code: str | None = None
    card_status: int = 0  # the last card state produced (0: none yet)
    card_seq: int = 0  # card operations produced so far
    card_off: str = ""  # why the card no longer suppresses/updates ("" = live)
    paid_at: int = 0  # epoch ms
    pay_amount: int = 0
    card_active: bool = False  # the card stage said the card is activated
    # replaced classic candidates kept while the activation is pending (latest per kind)
    card_held: tuple[HeldCandidate, ...] = ()

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> OrderState:
        state = from_doc(cls, doc)
        held = state.card_held
        if held.__class__ is not tuple:  # a list as stored: set on the new record in place
            # (not dataclasses.replace: it reads all 19 fields and builds by keyword, 12 k
            # instructions per stored order read, bench/RESULTS.md "Session 7: CPU per event")
            held = tuple([HeldCandidate.from_dict(h) for h in held]) if held else ()
            object.__setattr__(state, "card_held", held)
        return state

    def values(self) -> dict[str, object]:
        """Order values a logistics candidate carries."""
        return {
            "order_id": self.order_id,
            "amount": self.amount,
            "currency": self.currency,
            "item_title": self.item_title,
            "item_count": self.item_count,
            "items_summary": _summary(self.item_title, self.item_count),
        }


# stored without the card fields while they hold their defaults (an app without service cards)
short_form(OrderState, 11)


@record
class PendingLogistics:
    """A logistics event waiting for its order (``received_at``: wall clock at arrival)."""

    event_id: str
    appid: str
    order_id: str
    occurred_at: int
    received_at: int
    state: str
    waybill: str
    carrier: str
    location: str | None = None
    text: str | None = None

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> PendingLogistics:
        return from_doc(cls, doc)

    @classmethod
    def of(cls, ev: LogisticsUpdated, now_ms: int) -> PendingLogistics:
        return cls(
            event_id=ev.event_id,
            appid=ev.appid,
            order_id=ev.order_id,
            occurred_at=to_ms(ev.occurred_at),
            received_at=now_ms,
            state=ev.state,
            waybill=ev.waybill,
            carrier=ev.carrier,
            location=ev.location,
            text=ev.text,
        )


def pending_from_list(docs: Sequence[Mapping[str, Any]]) -> tuple[PendingLogistics, ...]:
    """Rebuild a stored pending list (``orjson.dumps(tuple_of_pending)``)."""
    return tuple([PendingLogistics.from_dict(d) for d in docs]) if docs else ()


@record
class OrderStep:
    """The result of one order-key event: new state, candidates, outcomes."""

    order: OrderState | None
    pending: tuple[PendingLogistics, ...]
    candidates: tuple[Candidate, ...] = ()
    outcomes: tuple[Outcome, ...] = ()


@record
class LogisticsDecision:
    """One logistics event: a candidate, an outcome, or a pending entry (exactly one is set)."""

    candidate: Candidate | None = None
    outcome: Outcome | None = None
    pending: PendingLogistics | None = None


# --- order events --------------------------------------------------------------------------------


def apply_order_event(
    order: OrderState | None, ev: OrderStatusChanged, cfg: MerchantConfig | None, now_ms: int
) -> tuple[OrderState | None, tuple[Candidate, ...], tuple[Outcome, ...]]:
    """Store the latest status; notify when the status is in ``notify_on``."""
    at = to_ms(ev.occurred_at)
    if order is not None:
        refused = _refusal(order.event_id, order.occurred_at, ev, at)
        if refused is not None:
            detail = f"older than {order.status}" if refused == OutcomeReason.REGRESSION else ""
            return order, (), (_outcome(ev, cfg, now_ms, refused, detail),)
    new = _order_state(ev, at)
    kind = cfg.kind("order_status") if cfg else None
    if kind is None:
        detail = "order_status not configured"
        return new, (), (_outcome(ev, cfg, now_ms, OutcomeReason.NO_TEMPLATE, detail),)
    if ev.status not in kind.notify_on:
        detail = f"status {ev.status} does not notify"
        return new, (), (_outcome(ev, cfg, now_ms, OutcomeReason.NO_RULE, detail),)
    return new, (_order_candidate(new, ev, at, now_ms),), ()


def _refusal(stored_id: str, stored_at: int, ev: OrderStatusChanged, at: int) -> str | None:
    """Why an order event at ``at`` does not replace the stored order (its event id and time):
    it is that event again (``duplicate``) or older (``regression``); None: it replaces it."""
    if stored_id == ev.event_id:
        return OutcomeReason.DUPLICATE
    if at < stored_at:
        return OutcomeReason.REGRESSION
    return None


def replaces(stored: Mapping[str, Any], ev: OrderStatusChanged) -> bool:
    """Whether ``ev`` replaces the stored order ``stored`` (its decoded dict) outright. Then
    :func:`apply_order_event` reads nothing of the stored order: its step is the one for no
    stored order, and the orders stage need not build an ``OrderState`` of it (~8 k
    instructions per event, bench/RESULTS.md "Session 8")."""
    return _refusal(stored["event_id"], stored["occurred_at"], ev, to_ms(ev.occurred_at)) is None


def _outcome(
    ev: OrderStatusChanged, cfg: MerchantConfig | None, now_ms: int, reason: str, detail: str = ""
) -> Outcome:
    """How an order event ended without a candidate (a module function, not a closure made
    per event)."""
    return outcome(
        ev.event_id,
        "order_status",
        reason,
        STAGE,
        now_ms,
        appid=ev.appid,
        openid=ev.openid,
        detail=detail,
        config_version=cfg.version if cfg is not None else 0,
    )


def _order_state(ev: OrderStatusChanged, at: int) -> OrderState:
    items: Sequence[OrderItem] = ev.items
    title = items[0].title if items else None
    if len(items) == 1:  # most orders (a sum over a list costs ~3 calls)
        count = items[0].quantity
    else:
        count = sum([i.quantity for i in items]) if items else 0
    # OrderState(appid, order_id, openid, status, occurred_at, event_id, amount, currency,
    # store_id, item_title, item_count): by position, half the cost of keywords (struct.py)
    return OrderState(
        ev.appid, ev.order_id, ev.openid, ev.status, at, ev.event_id, ev.amount, ev.currency,
        ev.store_id, title, count,
    )  # fmt: skip


def _order_candidate(order: OrderState, ev: OrderStatusChanged, at: int, now_ms: int) -> Candidate:
    values = order.values()
    # values.update(status=..., previous_status=..., store_id=...), without the keywords' dict
    values["status"] = ev.status
    values["previous_status"] = ev.previous_status
    values["store_id"] = ev.store_id
    # Candidate(kind, appid, openid, event_id, occurred_at, received_at, subject, values)
    return Candidate(
        "order_status", ev.appid, ev.openid, ev.event_id, at, now_ms, ev.order_id, values
    )


def _summary(title: str | None, count: int) -> str | None:
    if title is None:
        return None
    return f"{title}等{count}件" if count > 1 else title


# --- logistics -----------------------------------------------------------------------------------


def apply_logistics_event(
    order: OrderState | None, ev: LogisticsUpdated, cfg: MerchantConfig | None, now_ms: int
) -> LogisticsDecision:
    """Join with the order, or wait for it."""
    pending = PendingLogistics.of(ev, now_ms)
    if order is None:
        return LogisticsDecision(pending=pending)
    return _join(order, pending, cfg, now_ms)


def _join(
    order: OrderState, p: PendingLogistics, cfg: MerchantConfig | None, now_ms: int
) -> LogisticsDecision:
    kind = cfg.kind("logistics") if cfg else None
    if kind is None or p.state not in kind.notify_on:
        reason = OutcomeReason.NO_TEMPLATE if kind is None else OutcomeReason.NO_RULE
        detail = "logistics not configured" if kind is None else f"state {p.state} does not notify"
        return LogisticsDecision(
            outcome=outcome(
                p.event_id,
                "logistics",
                reason,
                STAGE,
                now_ms,
                appid=order.appid,
                openid=order.openid,
                detail=detail,
                config_version=cfg.version if cfg is not None else 0,
            )
        )
    values = order.values()
    values.update(
        state=p.state,
        status=p.state,
        waybill=p.waybill,
        carrier=p.carrier,
        location=p.location,
        text=p.text,
    )
    cand = Candidate(
        kind="logistics",
        appid=order.appid,
        openid=order.openid,
        event_id=p.event_id,
        occurred_at=p.occurred_at,
        received_at=now_ms,
        subject=order.order_id,
        values=values,
    )
    return LogisticsDecision(candidate=cand)


def release_pending(
    order: OrderState, pending: Sequence[PendingLogistics], cfg: MerchantConfig | None, now_ms: int
) -> tuple[tuple[Candidate, ...], tuple[Outcome, ...]]:
    """Join every pending logistics event with the order that just arrived (arrival order)."""
    cands: list[Candidate] = []
    outs: list[Outcome] = []
    for p in pending:
        decision = _join(order, p, cfg, now_ms)
        if decision.candidate is not None:
            cands.append(decision.candidate)
        if decision.outcome is not None:
            outs.append(decision.outcome)
    return tuple(cands), tuple(outs)


def orphan_after_s(cfg: MerchantConfig | None) -> int:
    """The app's ``orphan_after_s``; the default for an app without a config."""
    return cfg.orphan_after_s if cfg is not None else DEFAULT_ORPHAN_AFTER_S


def expire_pending(
    pending: Sequence[PendingLogistics], now_ms: int, cfg: MerchantConfig | None
) -> tuple[tuple[PendingLogistics, ...], tuple[Outcome, ...]]:
    """Pending events older than ``orphan_after_s`` (wall clock since arrival) -> ``orphan``."""
    after_ms = orphan_after_s(cfg) * 1000
    keep = tuple(p for p in pending if now_ms - p.received_at < after_ms)
    gone = tuple(
        outcome(
            p.event_id,
            "logistics",
            OutcomeReason.ORPHAN,
            STAGE,
            now_ms,
            appid=p.appid,
            detail=f"no order {p.order_id}",
            config_version=cfg.version if cfg is not None else 0,
        )
        for p in pending
        if now_ms - p.received_at >= after_ms
    )
    return keep, gone


# --- the two entry points of the orders stage ----------------------------------------------------


def on_order_event(
    order: OrderState | None,
    pending: Sequence[PendingLogistics],
    ev: OrderStatusChanged,
    cfg: MerchantConfig | None,
    now_ms: int,
) -> OrderStep:
    """An order event: update the table, then release any pending logistics for this order."""
    new, cands, outs = apply_order_event(order, ev, cfg, now_ms)
    if new is None or not pending:
        return OrderStep(new, tuple(pending), cands, outs)
    released, released_outs = release_pending(new, pending, cfg, now_ms)
    return OrderStep(new, (), cands + released, outs + released_outs)


def on_logistics_event(
    order: OrderState | None,
    pending: Sequence[PendingLogistics],
    ev: LogisticsUpdated,
    cfg: MerchantConfig | None,
    now_ms: int,
) -> OrderStep:
    """A logistics event: join, or append to this order's pending list."""
    decision = apply_logistics_event(order, ev, cfg, now_ms)
    if decision.pending is not None:
        return OrderStep(order, (*pending, decision.pending))
    cands = (decision.candidate,) if decision.candidate else ()
    outs = (decision.outcome,) if decision.outcome else ()
    return OrderStep(order, tuple(pending), cands, outs)

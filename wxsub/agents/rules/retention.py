"""Expiry decisions as pure functions: whether a kept entry has outlived its retention.

The stages' timers walk their stores (``wxsub.streams.sweep``) and ask these about each entry;
what they say ends is deleted (a tombstone in the store's changelog, and on ``deliveries`` for a
ledger entry) and counted in ``wxsub_expired_total{store, reason}``. The retentions are the
app's ``[retention]`` table (``wxsub.retention``); docs/lifecycle.md has the whole table.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from wxsub.agents.rules.orders import OrderState
from wxsub.agents.rules.subscriptions import UserState, history_expired, prune
from wxsub.merchants import MerchantConfig
from wxsub.retention import DEFAULT_RETENTION, FINAL_ORDER_STATUSES, Retention

__all__ = [
    "FINAL_LEDGER_STATES",
    "Reason",
    "entry_expired",
    "order_expired",
    "retention",
    "stats_day_expired",
    "swept_user",
    "unwatch_expired",
    "watch_expired",
    "watch_too_late",
]

#: ledger states that change no more (``retention.delivery_s`` applies)
FINAL_LEDGER_STATES = frozenset({"sent", "failed", "in_doubt"})


class Reason:
    """The ``reason`` label of ``wxsub_expired_total`` (per store)."""

    ORDER_FINAL = "order_final"  # orders: a final order past retention.order_s
    ORDER_IDLE = "order_idle"  # orders: any other order past retention.order_idle_s
    DELIVERY = "delivery_final"  # ledger: a final entry past retention.delivery_s
    WATCH_TTL = "watch_ttl"  # watches: a watch past retention.watch_ttl_s
    UNWATCH = "unwatch_memory"  # watches: an unwatch remembered retention.unwatch_s
    USER_EMPTY = "user_empty"  # users: nothing left once pruned
    STATS_DAY = "stats_day"  # stats: a day's row past retention.stats_days
    # ended by the stages' due timers (DueIndex), not by the sweep: fixed windows
    LAST_SEND = "last_send_window"  # stats: a user's last send past the feedback window
    SENT_REF = "sent_ref_window"  # stats: a sent message's ref past retention.open_window_s
    OPEN_GRACE = "open_grace"  # stats: opens held for a send that did not come (unknown_ref)
    CARD_ACTIVATION = "card_activation_window"  # cards: an ended card never activated, 24 h
    CARD_UPDATE = "card_update_window"  # cards: an ended activated card, 30 d after activation

    BY_STORE: Mapping[str, tuple[str, ...]] = {
        "orders": (ORDER_FINAL, ORDER_IDLE),
        "ledger": (DELIVERY,),
        "watches": (WATCH_TTL, UNWATCH),
        "users": (USER_EMPTY,),
        "stats": (STATS_DAY, LAST_SEND, SENT_REF, OPEN_GRACE),
        "cards": (CARD_ACTIVATION, CARD_UPDATE),
    }


def retention(cfg: MerchantConfig | None) -> Retention:
    """The app's retentions; the defaults for an app without a config."""
    return cfg.retention if cfg is not None else DEFAULT_RETENTION


def order_expired(order: OrderState, cfg: MerchantConfig | None, now_ms: int) -> str | None:
    """The reason an order is forgotten now, or None. Counted from its last status's event
    time: ``order_s`` for a final status, ``order_idle_s`` for any other."""
    r = retention(cfg)
    if order.status in FINAL_ORDER_STATUSES:
        return Reason.ORDER_FINAL if now_ms - order.occurred_at >= r.order_s * 1000 else None
    return Reason.ORDER_IDLE if now_ms - order.occurred_at >= r.order_idle_s * 1000 else None


def entry_expired(state: str, at: int, cfg: MerchantConfig | None, now_ms: int) -> str | None:
    """The reason a ledger entry (``state``, last changed at wall ms ``at``) is forgotten now.
    Entries that may still change (attempt, retry) are never forgotten."""
    if state not in FINAL_LEDGER_STATES:
        return None
    return Reason.DELIVERY if now_ms - at >= retention(cfg).delivery_s * 1000 else None


def watch_expired(doc: Mapping[str, Any], cfg: MerchantConfig | None, now_ms: int) -> str | None:
    """The reason a stored watch (its document) is forgotten now: ``watch_ttl_s`` after the
    event time of the watch event that set it."""
    ttl = retention(cfg).watch_ttl_s * 1000
    return Reason.WATCH_TTL if now_ms - int(doc["occurred_at"]) >= ttl else None


def unwatch_expired(at: int, cfg: MerchantConfig | None, now_ms: int) -> str | None:
    """The reason an unwatch marker (the unwatch's event time ``at``) is forgotten now."""
    return Reason.UNWATCH if now_ms - at >= retention(cfg).unwatch_s * 1000 else None


def watch_too_late(occurred_at: int, cfg: MerchantConfig | None, now_ms: int) -> bool:
    """A watch event at least ``unwatch_s`` old is refused (outcome ``stale``): an unwatch newer
    than it may already be forgotten, and the watch must not come back."""
    return now_ms - occurred_at >= retention(cfg).unwatch_s * 1000


def swept_user(
    state: UserState, cfg: MerchantConfig | None, now_ms: int
) -> tuple[UserState | None, bool]:
    """A user's state as the sweep leaves it: (None, True) when nothing is left once pruned
    (delete it), (state, changed) otherwise. Pruning forgets what ``prune`` (and, for the
    decision history, ``with_history``) forgets at the user's next event anyway, so decisions
    do not change."""
    new = history_expired(prune(state, cfg, now_ms), cfg, now_ms)
    if is_empty(new):
        return None, True
    return new, new is not state


def stats_day_expired(day: str, cfg: MerchantConfig | None, now_ms: int) -> str | None:
    """The reason a statistics row of ``day`` (YYYY-MM-DD, the app's time zone) is forgotten
    now: once ``stats_days`` days have passed since that day."""
    tz = cfg.timezone if cfg is not None else dt.UTC
    today = dt.datetime.fromtimestamp(now_ms / 1000, tz).date()
    try:
        age = (today - dt.date.fromisoformat(day)).days
    except ValueError:
        return None
    return Reason.STATS_DAY if age >= retention(cfg).stats_days else None


def is_empty(state: UserState) -> bool:
    """Whether a state holds nothing (the same as no state at all). The decision history
    counts: a user whose only state is the answer to "why no message?" is kept until those
    entries pass the dedupe retention (docs/support.md, docs/lifecycle.md)."""
    return not (
        state.credits or state.muted_templates or state.muted_kinds or state.pref_at
        or state.events or state.seen or state.consumed or state.sends or state.held
        or state.deferred or state.history
    )  # fmt: skip

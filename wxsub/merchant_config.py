"""The merchant config as decisions use it: plain frozen dataclasses, per mini program.

Built by ``wxsub.merchants`` (which validates the TOML with pydantic and builds these) and read
by the decision rules per event, so they stay plain slotted dataclasses: an attribute read is a
slot read. ``wxsub.merchants`` re-exports everything here.

A kind's ``data`` maps each template keyword to a format string over the candidate's values
(``"{order_id}"``, ``"{title}降价了"``); :data:`VALUE_NAMES` lists the names each kind offers.
A format string that is exactly one placeholder passes the typed value to the keyword renderer
(money becomes ``¥12.50`` for an ``amount``, a time becomes ``2024年5月1日 10:00``).
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import get_args

from wxsub.merchant_cards import CardConfig
from wxsub.merchant_guards import (
    DEFAULT_ALERTS,
    DEFAULT_PAUSE_THRESHOLDS,
    AlertConfig,
    PauseThresholds,
)
from wxsub.retention import DEFAULT_RETENTION, Retention
from wxsub.schemas import records
from wxsub.schemas.internal import MARKETING_KINDS

__all__ = [
    "DAY_S",
    "DEFAULT_NOTIFY",
    "DEFAULT_ORPHAN_AFTER_S",
    "DEFAULT_STATUS_TEXT",
    "LOGISTICS_STATES",
    "MONEY_NAMES",
    "ORDER_STATES",
    "STATES",
    "TIME_NAMES",
    "VALUE_NAMES",
    "Cap",
    "KindConfig",
    "MerchantConfig",
    "Merchants",
    "QuietHours",
    "placeholders",
]

ORDER_STATES: tuple[str, ...] = get_args(records.OrderStatus)
LOGISTICS_STATES: tuple[str, ...] = get_args(records.LogisticsState)
STATES = {"order_status": ORDER_STATES, "logistics": LOGISTICS_STATES}
DEFAULT_NOTIFY = {
    "order_status": ("paid", "shipped", "delivered", "cancelled", "refunded"),
    "logistics": ("out_for_delivery", "delivered", "exception"),
}

#: status -> a valid WeChat ``phrase`` (<= 5 Chinese characters); merchants may override
DEFAULT_STATUS_TEXT: Mapping[str, Mapping[str, str]] = {
    "order_status": {
        "created": "已下单",
        "paid": "已支付",
        "shipped": "已发货",
        "delivered": "已送达",
        "completed": "已完成",
        "cancelled": "已取消",
        "refunding": "退款中",
        "refunded": "已退款",
    },
    "logistics": {
        "picked_up": "已揽收",
        "in_transit": "运输中",
        "out_for_delivery": "派送中",
        "delivered": "已签收",
        "exception": "配送异常",
        "returned": "已退回",
    },
}

_COMMON = "event_id event_time appid subject"
_ITEMS = "amount item_title item_count items_summary"


def _names(text: str) -> frozenset[str]:
    return frozenset(f"{_COMMON} {text}".split())


#: the value names a kind's ``data`` and ``page`` format strings may use
VALUE_NAMES: Mapping[str, frozenset[str]] = {
    "order_status": _names(
        f"order_id status status_text previous_status currency store_id {_ITEMS}"
    ),
    "logistics": _names(
        f"order_id state status status_text waybill carrier location text {_ITEMS}"
    ),
    "price_drop": _names(
        "sku_id title old_price new_price drop target_price currency store_id category_id"
    ),
    "restock": _names("sku_id title old_stock new_stock store_id category_id"),
    "promotion": _names(
        "promotion_id title starts_at ends_at discount description target_type target_id"
    ),
}
#: values in minor units (fen), rendered as yuan
MONEY_NAMES = frozenset({"amount", "old_price", "new_price", "drop", "target_price"})
#: values in epoch ms, rendered as a datetime in the app's time zone
TIME_NAMES = frozenset({"event_time", "starts_at", "ends_at"})

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
DAY_S = 86_400
#: a logistics event waiting for its order ends as ``orphan`` after this (wall clock); also the
#: default where an app has no config
DEFAULT_ORPHAN_AFTER_S = 3600


def placeholders(fmt: str) -> list[str]:
    """The ``{name}`` placeholders of a format string (``{{`` and ``}}`` escape braces)."""
    return _PLACEHOLDER.findall(fmt.replace("{{", "").replace("}}", ""))


@dataclass(frozen=True, slots=True)
class Cap:
    """At most ``max`` sends of one class per user within ``window_s`` (event time)."""

    max: int
    window_s: int


@dataclass(frozen=True, slots=True)
class QuietHours:
    """Local [start, end) when marketing waits; may wrap midnight (22:00 -> 08:00)."""

    start: dt.time
    end: dt.time

    def contains(self, local: dt.time) -> bool:
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end


@dataclass(frozen=True, slots=True)
class KindConfig:
    """How one kind of notification is rendered and when it fires."""

    kind: str
    template_id: str
    keywords: Mapping[str, str]  # keyword name -> WeChat type, layout order
    data: Mapping[str, str]  # keyword name -> format string over VALUE_NAMES[kind]
    page: str = ""
    miniprogram_state: str = "formal"
    lang: str = "zh_CN"
    notify_on: frozenset[str] = frozenset()
    status_text: Mapping[str, str] = field(default_factory=dict)
    enum_values: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    stale_after_s: int = DAY_S
    #: status -> the variant used for candidates of that status (its own template and data;
    #: ``by_status`` in the TOML). Chosen by the pure decision rules (``for_status``)
    variants: Mapping[str, KindConfig] = field(default_factory=dict)
    #: why the kind (or this variant) cannot send: its template at WeChat does not fit the
    #: mapping (``wxsub.liveconfig.check_kind``); "" = it may send
    disabled: str = ""
    #: ``service`` or ``marketing`` (the ``class`` key; "" = by kind: promotion is marketing)
    message_class: str = ""
    #: whether the class is marketing (a field, not a property: decide reads it per candidate,
    #: and a slot read is the cheapest)
    marketing: bool = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.message_class:
            default = "marketing" if self.kind in MARKETING_KINDS else "service"
            object.__setattr__(self, "message_class", default)
        object.__setattr__(self, "marketing", self.message_class == "marketing")

    def for_status(self, status: object) -> KindConfig:
        """The variant for ``status`` (order or logistics state), or the kind itself."""
        if self.variants and type(status) is str:
            return self.variants.get(status, self)
        return self

    def all_templates(self) -> tuple[KindConfig, ...]:
        """The kind itself and its variants: every (template, mapping) it may send with."""
        return (self, *self.variants.values())


@dataclass(frozen=True, slots=True)
class MerchantConfig:
    """Everything about one appid."""

    appid: str
    timezone: zoneinfo.ZoneInfo
    kinds: Mapping[str, KindConfig]
    transactional_cap: Cap | None = None
    marketing_cap: Cap | None = None
    quiet_hours: QuietHours | None = None
    collapse_window_s: int = 0
    orphan_after_s: int = DEFAULT_ORPHAN_AFTER_S
    dedupe_retention_s: int = 2 * DAY_S
    sensitive_words: tuple[str, ...] = ()  # matched by wxsub.agents.rules.content
    #: the live-config version that carried this config (``wxsub merchants apply``); 0 = the
    #: ``worker.merchants`` file
    version: int = 0
    cards: CardConfig | None = None  # service cards (wxsub/merchant_cards.py)
    retention: Retention = DEFAULT_RETENTION  # [apps.<appid>.retention] (wxsub.retention)
    alerts: AlertConfig = DEFAULT_ALERTS  # restock limit, price collapse (merchant_guards.py)
    pause_thresholds: PauseThresholds = DEFAULT_PAUSE_THRESHOLDS  # feedback auto-pause

    def kind(self, kind: str) -> KindConfig | None:
        return self.kinds.get(kind)

    def cap(self, marketing: bool) -> Cap | None:
        return self.marketing_cap if marketing else self.transactional_cap

    @property
    def max_cap_window_s(self) -> int:
        caps = [c.window_s for c in (self.transactional_cap, self.marketing_cap) if c]
        return max(caps, default=0)

    @property
    def max_stale_after_s(self) -> int:
        return max((k.stale_after_s for k in self.kinds.values()), default=DAY_S)


@dataclass(frozen=True, slots=True)
class Merchants:
    """All merchant configs, by appid."""

    apps: Mapping[str, MerchantConfig]

    def app(self, appid: str) -> MerchantConfig | None:
        return self.apps.get(appid)

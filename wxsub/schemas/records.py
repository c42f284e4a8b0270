"""Typed records mirroring the JSON Schemas in ``json/``, and the Kafka key of each.

Records are ``typing.NamedTuple``: immutable, typed, and about four times cheaper to build than a
frozen dataclass (the decode hot path builds one per event). Field order is the schema's: the
common fields first (``event_id``, ``occurred_at``, ``appid``), optional fields last with their
defaults. Money is always an ``int`` in minor units (fen); times are aware ``datetime``.

Keys (UTF-8 on the wire) are appid-scoped because business ids, like openids, are only unique
within one mini program:

* user: ``{appid}:{openid}`` - subscriptions, preferences, opened, and every per-user stage
* order: ``{appid}:{order_id}`` - order-status and logistics (co-partitioned for the join)
* target: ``{appid}:{type}:{id}`` - products (price and stock as ``sku``, promotions as their
  store/category) and watches, so a product event meets the watches of its target on one
  partition.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Literal, NamedTuple

__all__ = [
    "LogisticsUpdated",
    "MessageOpened",
    "OrderItem",
    "OrderStatusChanged",
    "PreferenceChanged",
    "ProductPriceChanged",
    "ProductStockChanged",
    "Promotion",
    "Record",
    "SubscriptionEvent",
    "Target",
    "Watch",
    "key_appid",
    "order_key",
    "target_key",
    "user_key",
    "user_keys",
]

OrderStatus = Literal[
    "created", "paid", "shipped", "delivered", "completed", "cancelled", "refunding", "refunded"
]
LogisticsState = Literal[
    "picked_up", "in_transit", "out_for_delivery", "delivered", "exception", "returned"
]
TargetType = Literal["sku", "store", "category"]
WatchKind = Literal["price_drop", "restock", "promotion"]
NotificationKind = Literal["order_status", "logistics", "price_drop", "restock", "promotion", "all"]


def user_key(appid: str, openid: str) -> str:
    """The partitioning key of every per-user stage."""
    return f"{appid}:{openid}"


def user_keys(appid: str, openids: Iterable[str]) -> list[bytes]:
    """``user_key(appid, openid).encode()`` of each openid: a fan-out's record keys, without a
    call per watcher (the same key: ``test_contracts.test_keys``)."""
    head = f"{appid}:"
    return [(head + openid).encode() for openid in openids]


def order_key(appid: str, order_id: str) -> str:
    return f"{appid}:{order_id}"


def target_key(appid: str, target_type: str, target_id: str) -> str:
    return f"{appid}:{target_type}:{target_id}"


def key_appid(key: bytes) -> str:
    """The appid of any of these keys (what comes before the first ``:``)."""
    return key.decode().split(":", 1)[0]


class OrderItem(NamedTuple):
    sku_id: str
    title: str
    quantity: int
    price: int | None = None


class Target(NamedTuple):
    type: TargetType
    id: str


class OrderStatusChanged(NamedTuple):
    event_id: str
    occurred_at: datetime
    appid: str
    openid: str
    order_id: str
    status: OrderStatus
    amount: int
    currency: str = "CNY"
    previous_status: OrderStatus | None = None
    store_id: str | None = None
    items: tuple[OrderItem, ...] = ()
    # WeChat Pay (optional, additive): the transaction id is a service card's notify_code
    transaction_id: str | None = None
    pay_amount: int | None = None
    paid_at: datetime | None = None

    @property
    def key(self) -> str:
        return order_key(self.appid, self.order_id)

    @property
    def user(self) -> str:
        return user_key(self.appid, self.openid)


class LogisticsUpdated(NamedTuple):
    event_id: str
    occurred_at: datetime
    appid: str
    order_id: str
    waybill: str
    carrier: str
    state: LogisticsState
    openid: str | None = None
    location: str | None = None
    text: str | None = None

    @property
    def key(self) -> str:
        return order_key(self.appid, self.order_id)


class ProductPriceChanged(NamedTuple):
    event_id: str
    occurred_at: datetime
    appid: str
    sku_id: str
    title: str
    old_price: int
    new_price: int
    currency: str = "CNY"
    store_id: str | None = None
    category_id: str | None = None

    @property
    def key(self) -> str:
        return target_key(self.appid, "sku", self.sku_id)


class ProductStockChanged(NamedTuple):
    event_id: str
    occurred_at: datetime
    appid: str
    sku_id: str
    title: str
    old_stock: int
    new_stock: int
    store_id: str | None = None
    category_id: str | None = None

    @property
    def key(self) -> str:
        return target_key(self.appid, "sku", self.sku_id)


class Watch(NamedTuple):
    event_id: str
    occurred_at: datetime
    appid: str
    openid: str
    op: Literal["watch", "unwatch"]
    target: Target
    kind: WatchKind
    target_price: int | None = None

    @property
    def key(self) -> str:
        return target_key(self.appid, self.target.type, self.target.id)

    @property
    def user(self) -> str:
        return user_key(self.appid, self.openid)


class Promotion(NamedTuple):
    event_id: str
    occurred_at: datetime
    appid: str
    promotion_id: str
    title: str
    starts_at: datetime
    ends_at: datetime
    target: Target
    discount: str | None = None
    description: str | None = None

    @property
    def key(self) -> str:
        return target_key(self.appid, self.target.type, self.target.id)


class SubscriptionEvent(NamedTuple):
    event_id: str
    occurred_at: datetime
    appid: str
    openid: str
    event: Literal["popup", "change", "sent"]
    template_id: str
    create_time: int
    status: Literal["accept", "reject"] | None = None
    popup_scene: int | None = None
    msgid: str | None = None
    error_code: int | None = None
    error_status: str | None = None

    @property
    def key(self) -> str:
        return user_key(self.appid, self.openid)


class PreferenceChanged(NamedTuple):
    event_id: str
    occurred_at: datetime
    appid: str
    openid: str
    op: Literal["mute", "unmute"]
    kind: NotificationKind

    @property
    def key(self) -> str:
        return user_key(self.appid, self.openid)


class MessageOpened(NamedTuple):
    """The mini program started from a subscription message (scene 1014) carrying ``ref``."""

    event_id: str
    occurred_at: datetime
    appid: str
    openid: str
    ref: str  # the page's wxref parameter (wxsub.agents.rules.attribution)
    scene: int | None = None

    @property
    def key(self) -> str:
        return user_key(self.appid, self.openid)


Record = (
    OrderStatusChanged
    | LogisticsUpdated
    | ProductPriceChanged
    | ProductStockChanged
    | Watch
    | Promotion
    | SubscriptionEvent
    | PreferenceChanged
    | MessageOpened
)

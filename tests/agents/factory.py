"""Builders for the rule tests: one merchant config, events with sensible defaults, fixed times."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from wxsub.merchants import MerchantConfig, parse_merchants
from wxsub.schemas.internal import Candidate
from wxsub.schemas.records import (
    LogisticsUpdated,
    OrderItem,
    OrderStatusChanged,
    PreferenceChanged,
    ProductPriceChanged,
    ProductStockChanged,
    Promotion,
    SubscriptionEvent,
    Target,
    Watch,
)

APPID = "wxapp"
OPENID = "o-user-1"
TZ = ZoneInfo("Asia/Shanghai")
#: 2024-05-01 10:00 in Shanghai: outside quiet hours
T0 = int(dt.datetime(2024, 5, 1, 10, 0, tzinfo=TZ).timestamp() * 1000)
MIN = 60_000
HOUR = 3_600_000
STORE = Target("store", "st1")
SKU1 = Target("sku", "sku1")

TPL = {
    "order_status": "TPL_ORDER",
    "logistics": "TPL_LOGI",
    "price_drop": "TPL_PRICE",
    "restock": "TPL_RESTOCK",
    "promotion": "TPL_PROMO",
}

BASE: dict[str, Any] = {
    "timezone": "Asia/Shanghai",
    "collapse_window_s": 60,
    "orphan_after_s": 600,
    "sensitive_words": ["赌博"],
    "caps": {
        "transactional": {"max": 5, "window_s": 3600},
        "marketing": {"max": 2, "window_s": 86400},
    },
    "quiet_hours": {"start": "22:00", "end": "08:00"},
    "kinds": {
        "order_status": {
            "template_id": TPL["order_status"],
            "content": "订单号:{{character_string1.DATA}}\n状态:{{phrase2.DATA}}\n"
            "金额:{{amount3.DATA}}\n商品:{{thing4.DATA}}\n时间:{{time5.DATA}}",
            "page": "pages/order?id={order_id}",
            "notify_on": ["paid", "shipped", "delivered"],
            "stale_after_s": 86400,
            "data": {
                "character_string1": "{order_id}",
                "phrase2": "{status_text}",
                "amount3": "{amount}",
                "thing4": "{items_summary}",
                "time5": "{event_time}",
            },
        },
        "logistics": {
            "template_id": TPL["logistics"],
            "keywords": {"character_string1": "character_string", "phrase2": "phrase"},
            "notify_on": ["out_for_delivery", "delivered", "exception"],
            "stale_after_s": 86400,
            "data": {"character_string1": "{waybill}", "phrase2": "{status_text}"},
        },
        "price_drop": {
            "template_id": TPL["price_drop"],
            "page": "pages/sku?id={sku_id}",
            "stale_after_s": 86400,
            "data": {"thing1": "{title}", "amount2": "{new_price}", "thing3": "降{drop}元"},
        },
        "restock": {
            "template_id": TPL["restock"],
            "data": {"thing1": "{title}", "number2": "{new_stock}"},
        },
        "promotion": {
            "template_id": TPL["promotion"],
            "data": {"thing1": "{title}", "time2": "{starts_at}"},
        },
    },
}


def app_doc(**overrides: Any) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    doc.update(overrides)
    return doc


def config(**overrides: Any) -> MerchantConfig:
    merchants = parse_merchants({"apps": {APPID: app_doc(**overrides)}})
    cfg = merchants.app(APPID)
    assert cfg is not None
    return cfg


def at(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def order(
    status: str = "paid",
    *,
    event_id: str = "o1-paid",
    order_id: str = "o1",
    openid: str = OPENID,
    t: int = T0,
    amount: int = 12_50,
    items: tuple[OrderItem, ...] = (OrderItem("sku1", "蓝色T恤", 2),),
) -> OrderStatusChanged:
    return OrderStatusChanged(
        event_id,
        at(t),
        APPID,
        openid,
        order_id,
        status,
        amount,
        items=items,
    )


def logistics(
    state: str = "out_for_delivery",
    *,
    event_id: str = "l1",
    order_id: str = "o1",
    t: int = T0,
    waybill: str = "SF123456",
    text: str | None = "到达派送点",
) -> LogisticsUpdated:
    return LogisticsUpdated(
        event_id,
        at(t),
        APPID,
        order_id,
        waybill,
        "顺丰",
        state,
        text=text,
    )


def price(
    old: int,
    new: int,
    *,
    event_id: str = "p1",
    sku: str = "sku1",
    t: int = T0,
    title: str = "蓝色T恤",
) -> ProductPriceChanged:
    return ProductPriceChanged(event_id, at(t), APPID, sku, title, old, new)


def stock(
    old: int,
    new: int,
    *,
    event_id: str = "s1",
    sku: str = "sku1",
    t: int = T0,
    title: str = "蓝色T恤",
) -> ProductStockChanged:
    return ProductStockChanged(event_id, at(t), APPID, sku, title, old, new)


def promotion(
    *, event_id: str = "pr1", target: Target = STORE, t: int = T0, title: str = "五一大促"
) -> Promotion:
    return Promotion(event_id, at(t), APPID, "promo1", title, at(t), at(t + 24 * HOUR), target)


def watch(
    kind: str = "price_drop",
    *,
    op: str = "watch",
    target: Target = SKU1,
    openid: str = OPENID,
    target_price: int | None = None,
    event_id: str = "w1",
    t: int = T0,
) -> Watch:
    return Watch(event_id, at(t), APPID, openid, op, target, kind, target_price)


def sub(
    template_id: str,
    *,
    event: str = "popup",
    status: str | None = "accept",
    event_id: str | None = None,
    openid: str = OPENID,
    t: int = T0,
) -> SubscriptionEvent:
    eid = event_id or f"sub-{template_id}-{event}-{status}-{t}"
    return SubscriptionEvent(eid, at(t), APPID, openid, event, template_id, t // 1000, status)


def pref(
    kind: str, op: str = "mute", *, event_id: str | None = None, t: int = T0
) -> PreferenceChanged:
    return PreferenceChanged(event_id or f"pref-{kind}-{op}-{t}", at(t), APPID, OPENID, op, kind)


def cand(
    kind: str = "order_status",
    *,
    event_id: str = "e1",
    subject: str = "o1",
    t: int = T0,
    openid: str = OPENID,
    **values: Any,
) -> Candidate:
    defaults: dict[str, dict[str, Any]] = {
        "order_status": {
            "order_id": subject,
            "status": "paid",
            "amount": 1250,
            "items_summary": "蓝色T恤等2件",
        },
        "logistics": {
            "order_id": subject,
            "state": "delivered",
            "status": "delivered",
            "waybill": "SF1",
        },
        "price_drop": {
            "sku_id": subject,
            "title": "蓝色T恤",
            "old_price": 2000,
            "new_price": 1500,
            "drop": 500,
        },
        "restock": {"sku_id": subject, "title": "蓝色T恤", "old_stock": 0, "new_stock": 3},
        "promotion": {"promotion_id": subject, "title": "五一大促", "starts_at": t},
    }
    return Candidate(kind, APPID, openid, event_id, t, t, subject, {**defaults[kind], **values})


def CFG_TPL_CONTENT(kind: Any) -> str:
    """The template ``content`` WeChat would list for a kind config's keywords."""
    return "\n".join(f"k{i}:{{{{{name}.DATA}}}}" for i, name in enumerate(kind.keywords))

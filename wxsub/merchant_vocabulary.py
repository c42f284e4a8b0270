"""The merchant config's vocabulary: order and logistics states, their default texts, and the
value names a kind's ``data`` and ``page`` format strings may use (what the renderer fills)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import get_args

from wxsub.schemas import records

__all__ = [
    "DEFAULT_NOTIFY",
    "DEFAULT_STATUS_TEXT",
    "LOGISTICS_STATES",
    "MONEY_NAMES",
    "ORDER_STATES",
    "STATES",
    "TIME_NAMES",
    "VALUE_NAMES",
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


def placeholders(fmt: str) -> list[str]:
    """The ``{name}`` placeholders of a format string (``{{`` and ``}}`` escape braces)."""
    return _PLACEHOLDER.findall(fmt.replace("{{", "").replace("}}", ""))

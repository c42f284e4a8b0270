"""The merchant config of a generated event log, in its two versions.

Version 1 decides phases 0 and 1 of the log; version 2 (``wxsub merchants apply`` mid-run)
decides phase 2. The only difference is the tight app's caps: 2 sends per class and day under
version 1, 3 under version 2, so the tight users' phase-2 candidates come out differently under
each (``tests/pipeline/test_oracle.py`` checks that they do).

Order status and logistics use per-status templates (``by_status``): refunds go out on a refund
template, logistics exceptions on their own, so the oracle covers the template choice.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import orjson

__all__ = [
    "APP_MAIN",
    "APP_NONE",
    "APP_TIGHT",
    "NOTIFY_LOGI",
    "NOTIFY_ORDER",
    "SENSITIVE",
    "TEMPLATES",
    "TIGHT_CAP",
    "VARIANTS",
    "app_config",
    "app_doc",
    "template_for",
    "to_toml",
]

APP_MAIN = "wxmain0000000001"  # generous caps, quiet hours, collapse, sensitive words
APP_TIGHT = "wxtight000000001"  # caps of 2 (version 1) or 3 (version 2) per day per class
APP_NONE = "wxnone0000000001"  # not in the merchant config
TZ_NAME = "Asia/Shanghai"
#: each kind's own template
TEMPLATES = {
    "order_status": "TPL_ORDER",
    "logistics": "TPL_LOGI",
    "price_drop": "TPL_PRICE",
    "restock": "TPL_RESTOCK",
    "promotion": "TPL_PROMO",
}
#: (kind, status) -> the ``by_status`` template that status goes out on
VARIANTS = {("order_status", "refunded"): "TPL_REFUND", ("logistics", "exception"): "TPL_LOGI_EXC"}
#: the tight app's cap per class and day, by config version
TIGHT_CAP = {1: 2, 2: 3}
SENSITIVE = "赌博"
NOTIFY_ORDER = frozenset({"paid", "shipped", "delivered", "cancelled", "refunded"})
NOTIFY_LOGI = frozenset({"out_for_delivery", "delivered", "exception"})
_HOUR = 3_600_000
_STALE = 2 * 86_400


def template_for(kind: str, status: str | None = None) -> str:
    """The template a candidate of ``kind`` (with that order or logistics ``status``) uses."""
    return VARIANTS.get((kind, status or ""), TEMPLATES[kind])


def app_config(now_ms: int, window_s: int, orphan_s: int, version: int) -> dict[str, Any]:
    """The merchants TOML document (quiet hours of the main app: 5 to 3 hours before
    ``now_ms``) of config ``version``."""
    tz = ZoneInfo(TZ_NAME)
    start = dt.datetime.fromtimestamp((now_ms - 5 * _HOUR) / 1000, tz)
    end = dt.datetime.fromtimestamp((now_ms - 3 * _HOUR) / 1000, tz)
    main = app_doc(window_s, orphan_s, caps=1000)
    main["quiet_hours"] = {"start": f"{start:%H:%M:%S}", "end": f"{end:%H:%M:%S}"}
    tight = app_doc(window_s, orphan_s, caps=TIGHT_CAP[version])
    return {"apps": {APP_MAIN: main, APP_TIGHT: tight}}


def app_doc(window_s: int, orphan_s: int, caps: int) -> dict[str, Any]:
    """One app's table: the classic kinds, per-status templates, caps of ``caps`` a day."""
    t = TEMPLATES
    day = {"max": caps, "window_s": 86_400}
    order_content = "订单号:{{character_string1.DATA}}\n状态:{{phrase2.DATA}}\n" + (
        "金额:{{amount3.DATA}}\n商品:{{thing4.DATA}}\n时间:{{time5.DATA}}"
    )
    return {
        "timezone": TZ_NAME,
        "collapse_window_s": window_s,
        "orphan_after_s": orphan_s,
        # stale orders are 30 days old: expiry (every store is swept each second in these tests)
        # must not forget them between their events, which the oracle does not model
        "retention": {"order_s": 40 * 86_400, "unwatch_s": 7 * 86_400},
        "sensitive_words": [SENSITIVE, "违禁品"],
        "caps": {"transactional": day, "marketing": dict(day)},
        "kinds": {
            "order_status": {
                "template_id": t["order_status"],
                "content": order_content,
                "page": "pages/order/detail?id={order_id}",
                "notify_on": sorted(NOTIFY_ORDER),
                "stale_after_s": _STALE,
                "data": {
                    "character_string1": "{order_id}",
                    "phrase2": "{status_text}",
                    "amount3": "{amount}",
                    "thing4": "{items_summary}",
                    "time5": "{event_time}",
                },
                "by_status": {
                    "refunded": {
                        "template_id": VARIANTS[("order_status", "refunded")],
                        "content": "订单号:{{character_string1.DATA}}\n退款金额:{{amount2.DATA}}",
                        "page": "pages/order/refund?id={order_id}",
                        "data": {"character_string1": "{order_id}", "amount2": "{amount}"},
                    },
                },
            },
            "logistics": {
                "template_id": t["logistics"],
                "content": "运单号:{{character_string1.DATA}}\n状态:{{phrase2.DATA}}\n"
                "快递:{{thing3.DATA}}",
                "page": "pages/order/logistics?id={order_id}",
                "notify_on": sorted(NOTIFY_LOGI),
                "stale_after_s": _STALE,
                "data": {
                    "character_string1": "{waybill}",
                    "phrase2": "{status_text}",
                    "thing3": "{carrier}",
                },
                "by_status": {
                    "exception": {
                        "template_id": VARIANTS[("logistics", "exception")],
                        "data": {
                            "character_string1": "{waybill}",
                            "thing2": "{carrier}",
                            "phrase3": "{status_text}",
                        },
                    },
                },
            },
            "price_drop": {
                "template_id": t["price_drop"],
                "page": "pages/sku/detail?id={sku_id}",
                "stale_after_s": _STALE,
                "data": {
                    "thing1": "{title}",
                    "amount2": "{old_price}",
                    "amount3": "{new_price}",
                    "thing4": "已降价{drop}元",
                },
            },
            "restock": {
                "template_id": t["restock"],
                "page": "pages/sku/detail?id={sku_id}",
                "stale_after_s": _STALE,
                "data": {"thing1": "{title}", "number2": "{new_stock}"},
            },
            "promotion": {
                "template_id": t["promotion"],
                "page": "pages/promo/index?id={promotion_id}",
                "stale_after_s": _STALE,
                "data": {"thing1": "{title}", "time2": "{starts_at}", "time3": "{ends_at}"},
            },
        },
    }


def to_toml(doc: dict[str, Any], path: str = "") -> str:
    """A minimal TOML writer for this config (tables, strings, ints, lists of strings)."""
    scalars = {k: v for k, v in doc.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in doc.items() if isinstance(v, dict)}
    out = f"[{path}]\n" if path and scalars else ""
    for key, value in scalars.items():
        out += f"{key} = {orjson.dumps(value).decode()}\n"  # JSON strings/ints/lists are TOML
    for key, value in tables.items():
        out += ("\n" if out else "") + to_toml(value, f"{path}.{_toml_key(key)}".lstrip("."))
    return out


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() and key.isascii() else f'"{key}"'

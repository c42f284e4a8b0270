"""The ``[apps.<appid>.cards]`` section of the merchant config: service cards for WeChat Pay orders.

```toml
[apps.wx1.cards]
type = 2001                        # 2001 logistics | 2002 pickup | 2006 same-city delivery
replaces = ["order_status", "logistics"]   # classic kinds not sent while the card is live
wxa_path_query = "pages/order/detail?id={order_id}"
product_img = "https://shop.example/img/default.png"
product_path_query = "pages/order/detail?id={order_id}"   # optional (default wxa_path_query)
order_status = { paid = 2 }        # overrides of the default status -> card state map
logistics = { exception = 3 }      # overrides of the default logistics state -> card state map
```

Validated completely at start; every mistake is a ConfigError naming its key
(``apps.wx1.cards.type``, ``apps.wx1.cards.order_status.paid``). docs/service-cards.md has the
default tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, get_args

from wxsub.errors import ConfigError
from wxsub.schemas import records
from wxsub.wechat.card_types import CARD_TYPES, CardType

__all__ = ["DEFAULT_MAPS", "REPLACEABLE", "CardConfig", "parse_cards"]

REPLACEABLE = ("order_status", "logistics")
_ORDER = get_args(records.OrderStatus)
_LOGISTICS = get_args(records.LogisticsState)

#: notify_type -> (order status -> card state, logistics state -> card state)
DEFAULT_MAPS: Mapping[int, tuple[Mapping[str, int], Mapping[str, int]]] = {
    2001: (
        {"paid": 1, "shipped": 4, "delivered": 6, "completed": 8, "cancelled": 10,
         "refunding": 7, "refunded": 9},
        {"picked_up": 4, "in_transit": 4, "out_for_delivery": 4, "delivered": 6},
    ),
    2002: (
        {"paid": 1, "shipped": 3, "delivered": 4, "completed": 8, "cancelled": 10,
         "refunding": 7, "refunded": 9},
        {},
    ),
    2006: (
        {"paid": 1, "shipped": 5, "delivered": 8, "completed": 9, "cancelled": 11,
         "refunding": 10, "refunded": 9},
        {"picked_up": 3, "in_transit": 5, "out_for_delivery": 5, "delivered": 8},
    ),
}  # fmt: skip

_KEYS = {"type", "replaces", "wxa_path_query", "product_img", "product_path_query",
         "order_status", "logistics"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class CardConfig:
    """One app's service-card choices (``type`` is the WeChat card, see card_types)."""

    card: CardType
    wxa_path_query: str
    product_img: str
    product_path_query: str
    replaces: frozenset[str] = frozenset(REPLACEABLE)
    order_map: Mapping[str, int] = field(default_factory=dict)
    logistics_map: Mapping[str, int] = field(default_factory=dict)

    @property
    def notify_type(self) -> int:
        return self.card.notify_type


def parse_cards(key: str, raw: Any) -> CardConfig | None:
    """The app's card config, or None when the section is absent."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ConfigError(key, "must be a table")
    for name in raw:
        if name not in _KEYS:
            raise ConfigError(f"{key}.{name}", "unknown setting")
    notify_type = raw.get("type")
    card = CARD_TYPES.get(notify_type) if isinstance(notify_type, int) else None
    if card is None:
        known = ", ".join(str(t) for t in CARD_TYPES)
        raise ConfigError(
            f"{key}.type", f"must be a supported card type ({known}); got {notify_type!r}"
        )
    replaces = raw.get("replaces", list(REPLACEABLE))
    if not isinstance(replaces, list) or any(r not in REPLACEABLE for r in replaces):
        raise ConfigError(f"{key}.replaces", f"must be a list of {', '.join(REPLACEABLE)}")
    path = _text(key, raw, "wxa_path_query", required=True)
    orders, logistics = DEFAULT_MAPS[card.notify_type]
    return CardConfig(
        card=card,
        wxa_path_query=path,
        product_img=_text(key, raw, "product_img", required=True),
        product_path_query=_text(key, raw, "product_path_query") or path,
        replaces=frozenset(replaces),
        order_map=_map(f"{key}.order_status", raw.get("order_status"), orders, _ORDER, card),
        logistics_map=_map(f"{key}.logistics", raw.get("logistics"), logistics, _LOGISTICS, card),
    )


def _text(key: str, raw: Mapping[str, Any], name: str, *, required: bool = False) -> str:
    value = raw.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value.strip() or len(value) > 1024:
        raise ConfigError(f"{key}.{name}", "required text (at most 1024 characters)")
    if value.count("{") != value.count("}") or (value.replace("{order_id}", "").count("{") > 0):
        raise ConfigError(f"{key}.{name}", "the only placeholder is {order_id}")
    return value


def _map(
    key: str,
    raw: Any,
    defaults: Mapping[str, int],
    names: tuple[str, ...],
    card: CardType,
) -> dict[str, int]:
    out = dict(defaults)
    if raw is None:
        return out
    if not isinstance(raw, Mapping):
        raise ConfigError(key, "must be a table of status = card state (0 = no card update)")
    for name, state in raw.items():
        if name not in names:
            raise ConfigError(f"{key}.{name}", f"unknown status; one of {', '.join(names)}")
        if not isinstance(state, int) or isinstance(state, bool):
            raise ConfigError(f"{key}.{name}", "must be a card state id (an integer)")
        if state == 0:
            out.pop(name, None)
        elif card.state(state) is None:
            states = ", ".join(str(s) for s in card.states)
            raise ConfigError(
                f"{key}.{name}", f"card {card.notify_type} has no state {state} ({states})"
            )
        else:
            out[name] = state
    return out

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

Validated completely (the pydantic :class:`CardsModel`, part of ``wxsub.merchants``' models);
every mistake is a ConfigError naming its key (``apps.wx1.cards.type``,
``apps.wx1.cards.order_status.paid``). docs/service-cards.md has the default tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, PlainValidator, model_validator

from wxsub.configmodel import Bad, Int
from wxsub.schemas import records
from wxsub.wechat.card_types import CARD_TYPES, CardType

__all__ = ["DEFAULT_MAPS", "REPLACEABLE", "CardConfig", "CardsModel"]

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


def _card_type(raw: Any) -> CardType:
    card = CARD_TYPES.get(raw) if isinstance(raw, int) and not isinstance(raw, bool) else None
    if card is None:
        known = ", ".join(str(t) for t in CARD_TYPES)
        raise ValueError(f"must be a supported card type ({known}); got {raw!r}")
    return card


def _replaceable(value: list[str]) -> list[str]:
    if any(r not in REPLACEABLE for r in value):
        raise ValueError(f"must be a list of {', '.join(REPLACEABLE)}")
    return value


def _text(value: str) -> str:
    if not value.strip() or len(value) > 1024:
        raise ValueError("required text (at most 1024 characters)")
    if value.count("{") != value.count("}") or (value.replace("{order_id}", "").count("{") > 0):
        raise ValueError("the only placeholder is {order_id}")
    return value


CardText = Annotated[str, AfterValidator(_text)]


class CardsModel(BaseModel):
    """``[apps.<appid>.cards]`` as written; ``build()`` gives the runtime :class:`CardConfig`."""

    model_config = ConfigDict(extra="forbid", strict=True, arbitrary_types_allowed=True)
    type: Annotated[CardType, PlainValidator(_card_type)]
    replaces: Annotated[list[str], AfterValidator(_replaceable)] = list(REPLACEABLE)
    wxa_path_query: CardText
    product_img: CardText
    product_path_query: CardText | None = None
    order_status: dict[str, Int] | None = None
    logistics: dict[str, Int] | None = None

    @model_validator(mode="after")
    def _states(self) -> CardsModel:
        for key, table, names in (("order_status", self.order_status, _ORDER),
                                  ("logistics", self.logistics, _LOGISTICS)):  # fmt: skip
            for name, state in (table or {}).items():
                if name not in names:
                    raise Bad(f"{key}.{name}", f"unknown status; one of {', '.join(names)}")
                if state != 0 and self.type.state(state) is None:
                    states = ", ".join(str(s) for s in self.type.states)
                    raise Bad(
                        f"{key}.{name}",
                        f"card {self.type.notify_type} has no state {state} ({states})",
                    )
        return self

    def build(self) -> CardConfig:
        orders, logistics = DEFAULT_MAPS[self.type.notify_type]
        return CardConfig(
            card=self.type,
            wxa_path_query=self.wxa_path_query,
            product_img=self.product_img,
            product_path_query=self.product_path_query or self.wxa_path_query,
            replaces=frozenset(self.replaces),
            order_map=_map(orders, self.order_status),
            logistics_map=_map(logistics, self.logistics),
        )


def _map(defaults: Mapping[str, int], overrides: Mapping[str, int] | None) -> dict[str, int]:
    """The default status -> card state table with the overrides (0 = no card update)."""
    out = dict(defaults)
    for name, state in (overrides or {}).items():
        if state == 0:
            out.pop(name, None)
        else:
            out[name] = state
    return out

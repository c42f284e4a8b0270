"""Service cards (订阅消息 2.0 / 服务卡片): WeChat's card types, their state tables and fields.

The facts are in ``/work/shared/wechat-service-cards.md`` (section 4), each marked there by how
sure we are: ``doc`` (an official WeChat page), ``3p`` (a third-party implementation) or ``inf``
(inferred; for 2002 and 2006 beyond states 1-2 the table is wxsub's own choice, and the sandbox
enforces the same choice, docs/sandbox.md). :class:`CardState` says, per state id, whether it may
activate a card, which states may precede it, whether it is terminal and which fields it needs.
:func:`check_content` validates a ``content_json`` object before the call, as
``wxsub.wechat.keywords`` does for template keywords.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CARD_TYPES",
    "PAY_CODE_TYPES",
    "CardState",
    "CardType",
    "check_content",
    "legal",
    "strip_code_prefix",
]

_UINT32 = 0xFFFF_FFFF
_PRODUCTS = ("product_count", "product_list", "wxa_path_query")
_PATH = ("wxa_path_query",)


@dataclass(frozen=True, slots=True)
class CardState:
    id: int
    name: str
    activates: bool  # may be the first (activating) state
    after: frozenset[int]  # the states a transition to this one may come from
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    source: str = "doc"  # doc | 3p | inf (wechat-service-cards.md)

    @property
    def fields(self) -> frozenset[str]:
        return frozenset(("cur_status", *self.required, *self.optional))


@dataclass(frozen=True, slots=True)
class CardType:
    notify_type: int
    name: str
    tid: str  # addMessageTemplate tid
    states: Mapping[int, CardState]

    def state(self, status: int) -> CardState | None:
        return self.states.get(status)

    def terminal(self, status: int) -> bool:
        """No state may follow ``status`` (GUIDE: 状态无可变更的下一状态)."""
        return not any(status in s.after for s in self.states.values())


def _s(
    id_: int,
    name: str,
    activates: bool,
    after: tuple[int, ...],
    required: tuple[str, ...] = _PATH,
    optional: tuple[str, ...] = (),
    source: str = "doc",
) -> CardState:
    return CardState(id_, name, activates, frozenset(after), required, optional, source)


def _type(notify_type: int, name: str, tid: str, *states: CardState) -> CardType:
    return CardType(notify_type, name, tid, {s.id: s for s in states})


CARD_2001 = _type(
    2001, "购物（实体物流）服务动态", "10000001",
    _s(1, "用户已支付", True, (7,), _PRODUCTS),
    _s(2, "待发货", True, (1, 7), _PRODUCTS, ("send_time",)),
    _s(3, "部分发货", False, (1, 2, 3, 7), _PATH, ("send_time",)),
    _s(4, "已发货", False, (1, 2, 3, 7)),
    _s(5, "重新发货", False, (3, 4, 7), source="3p"),
    _s(6, "已签收", False, (4, 5, 7), source="3p"),
    _s(7, "售后中", False, (1, 2, 3, 4, 5, 6), source="3p"),
    _s(8, "交易成功", False, (1, 2, 3, 4, 5, 6, 7), source="3p"),
    _s(9, "售后结束", False, (7,), source="3p"),
    _s(10, "已取消", False, (1, 2, 7), source="3p"),
    _s(11, "售后关闭", False, (7,), source="3p"),
)  # fmt: skip

# 2002: states 1-2 are WeChat's [doc]; the rest is wxsub's own table, shaped like 2001 [inf]
CARD_2002 = _type(
    2002, "购物（自提）服务动态", "10000002",
    _s(1, "用户已支付", True, (7,), _PRODUCTS),
    _s(2, "备货中", True, (1, 7), _PRODUCTS, ("pickup_time",)),
    _s(3, "待取货", False, (1, 2, 7), _PATH, ("pickup_time",), source="inf"),
    _s(4, "已取货", False, (3, 7), source="inf"),
    _s(7, "售后中", False, (1, 2, 3, 4), source="inf"),
    _s(8, "交易成功", False, (3, 4, 7), source="inf"),
    _s(9, "售后结束", False, (7,), source="inf"),
    _s(10, "已取消", False, (1, 2, 7), source="inf"),
)  # fmt: skip

# 2006: states 1-2 are WeChat's [doc]; 3-10 wxsub's own [inf] (arrival_time: ETA in 3-7,
# the actual time in 8, as the field's documentation says). 5 (配送中) may follow 1 directly: a
# same-city order often goes out for delivery with no separate "rider accepted" event, and the
# default mapping (paid 1, shipped 5) needs it.
_RIDER = ("arrival_time", "distance_to_store", "distance_to_destination")
CARD_2006 = _type(
    2006, "购物&餐饮（同城配送）服务动态", "10000006",
    _s(1, "用户已支付", True, (10,), _PRODUCTS),
    _s(2, "备货中", True, (1, 2, 10), _PRODUCTS),
    _s(3, "骑手已接单", False, (1, 2, 10), _PATH, _RIDER, source="inf"),
    _s(5, "配送中", False, (1, 2, 3, 5, 10), _PATH, _RIDER, source="inf"),  # 1: no rider step
    _s(8, "已送达", False, (3, 5, 10), _PATH, ("arrival_time",), source="inf"),
    _s(9, "已完成", False, (1, 2, 3, 5, 8, 10), source="inf"),
    _s(10, "售后中", False, (1, 2, 3, 5, 8), source="inf"),
    _s(11, "已取消", False, (1, 2, 10), source="inf"),
)  # fmt: skip

CARD_TYPES: Mapping[int, CardType] = {t.notify_type: t for t in (CARD_2001, CARD_2002, CARD_2006)}
#: card types whose notify_code is the WeChat Pay transaction id
PAY_CODE_TYPES = frozenset(CARD_TYPES)


def legal(card: CardType, prev: int | None, new: int) -> bool:
    """Whether ``new`` may follow ``prev`` (None: ``new`` would activate the card)."""
    state = card.state(new)
    if state is None:
        return False
    if prev is None:
        return state.activates
    return prev in state.after


def strip_code_prefix(code: str) -> str:
    """A failure event's notify_code may carry a ``p1.`` prefix (GUIDE §1.5): strip it."""
    head, dot, rest = code.partition(".")
    if dot and head[:1] == "p" and head[1:].isdigit():
        return rest
    return code


def _uint(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _UINT32


def _text(value: Any, limit: int = 1024) -> bool:
    return isinstance(value, str) and 0 < len(value) <= limit


def _products(value: Any) -> str | None:
    if not isinstance(value, dict) or set(value) != {"info_list"}:
        return "product_list must be {info_list: [...]}"
    items = value["info_list"]
    if not isinstance(items, list) or not 1 <= len(items) <= 10:
        return "product_list.info_list must hold 1-10 products"
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            return f"product_list.info_list[{i}] is not an object"
        for name in ("product_img", "product_name", "product_path_query"):
            if not _text(item.get(name)):
                return f"product_list.info_list[{i}].{name} missing or not text"
        for name in ("count", "single_price"):
            if name in item and not _uint(item[name]):
                return f"product_list.info_list[{i}].{name} must be a uint32"
        extra = set(item) - {"product_img", "product_name", "product_path_query", "count",
                             "single_price"}  # fmt: skip
        if extra:
            return f"product_list.info_list[{i}] has unknown field(s) {', '.join(sorted(extra))}"
    return None


def check_content(card: CardType, content: Mapping[str, Any]) -> str | None:
    """Why ``content`` (the content_json object) is not valid for its ``cur_status``, or None."""
    status = content.get("cur_status")
    if not isinstance(status, int) or not _uint(status):
        return "cur_status missing or not an integer"
    state = card.state(status)
    if state is None:
        return f"cur_status {status} is not a state of card {card.notify_type}"
    for name in state.required:
        if name not in content:
            return f"state {status} requires {name}"
    unknown = set(content) - state.fields
    if unknown:
        return f"state {status} does not take {', '.join(sorted(unknown))}"
    for name, value in content.items():
        if name == "product_list":
            problem = _products(value)
            if problem:
                return problem
        elif name == "wxa_path_query":
            if not isinstance(value, str) or len(value) > 1024:
                return "wxa_path_query must be text of at most 1024 characters"
        elif not _uint(value):
            return f"{name} must be a uint32"
    return None

"""The demo's simulated shop: its WeChat world, its merchant config, and its event stream.

Everything is derived from a seed. One mini program (``APPID``) with five templates; ``users``
buyers of whom most accept the order and logistics templates (several popups: several credits),
half accept the marketing ones, some never accept (``no_credit``), a few switch the order
template off later (``muted``, and a reject after a send is user feedback in ``wxsub stats``).
Traffic: order lifecycles (created -> paid -> shipped -> logistics -> delivered), a flash price
drop on one SKU that most users watch (a fan-out), a store promotion (hitting the marketing cap
for many), duplicates, and a few bad events that must land in the DLQ. A third of the orders are
paid with WeChat Pay: their events carry the transaction id, so the shop's service card (2001)
follows them instead of the order and logistics templates (:meth:`Shop.take_payments` gives the
payments to register in the sandbox, as WeChat Pay would know them).
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from wxsub.schemas.codec import KINDS, encode
from wxsub.schemas.records import (
    LogisticsUpdated,
    OrderItem,
    OrderStatusChanged,
    PreferenceChanged,
    ProductPriceChanged,
    Promotion,
    Record,
    Target,
    Watch,
)

__all__ = ["APPID", "TEMPLATES", "Payment", "Published", "Shop", "merchants_toml", "world_doc"]

APPID = "wxdemo0000000000a1"
SECRET = "sandbox-secret-demo"  # noqa: S105 (the sandbox's own, not a real secret)
TZ = "Asia/Shanghai"
FLASH_SKU = "FLASH-001"
STORE = "store-1"

_CONTENT = {
    "order_status": "订单号:{{character_string1.DATA}}\n订单状态:{{phrase2.DATA}}\n"
    "订单金额:{{amount3.DATA}}\n商品:{{thing4.DATA}}\n更新时间:{{time5.DATA}}",
    "logistics": "运单号:{{character_string1.DATA}}\n物流状态:{{phrase2.DATA}}\n"
    "快递公司:{{thing3.DATA}}\n物流详情:{{thing4.DATA}}",
    "price_drop": "商品名称:{{thing1.DATA}}\n原价:{{amount2.DATA}}\n现价:{{amount3.DATA}}\n"
    "温馨提示:{{thing4.DATA}}",
    "promotion": "活动名称:{{thing1.DATA}}\n开始时间:{{time2.DATA}}\n结束时间:{{time3.DATA}}",
}
TEMPLATES = {kind: f"DEMO_{kind.upper()}_TPL" for kind in _CONTENT}
_PAGES = {
    "order_status": ("pages/order/detail", "?id={order_id}"),
    "logistics": ("pages/order/logistics", "?id={order_id}"),
    "price_drop": ("pages/sku/detail", "?sku={sku_id}"),
    "promotion": ("pages/promo/index", "?id={promotion_id}"),
}
_DATA = {
    "order_status": {
        "character_string1": "{order_id}",
        "phrase2": "{status_text}",
        "amount3": "{amount}",
        "thing4": "{items_summary}",
        "time5": "{event_time}",
    },
    "logistics": {
        "character_string1": "{waybill}",
        "phrase2": "{status_text}",
        "thing3": "{carrier}",
        "thing4": "{text}",
    },
    "price_drop": {
        "thing1": "{title}",
        "amount2": "{old_price}",
        "amount3": "{new_price}",
        "thing4": "已降价{drop}元，快去看看",
    },
    "promotion": {"thing1": "{title}", "time2": "{starts_at}", "time3": "{ends_at}"},
}
_GOODS = ("无线蓝牙耳机", "纯棉T恤", "保温杯", "机械键盘", "运动鞋", "护手霜", "台灯", "双肩包")
_BAD = (
    b"{not json",
    b'{"type": "order_status", "v": 1}',
    b'{"type": "teleport", "v": 1, "event_id": "x"}',
    b"\xff\xfe not utf-8",
)


def world_doc(openids: list[str]) -> dict[str, Any]:
    """The sandbox world: the demo app, its templates and its users (no credits yet)."""
    return {
        "seed": 7,
        "apps": [
            {
                "appid": APPID,
                "secret": SECRET,
                "name": "wxsub demo shop",
                "pages": sorted({page for page, _ in _PAGES.values()}),
                "sensitive_words": ["赌博"],
                "templates": [
                    {"id": TEMPLATES[k], "title": k, "content": c, "type": 2}
                    for k, c in _CONTENT.items()
                ],
                "users": [{"openid": o} for o in openids],
            }
        ],
    }


def merchants_toml(now: dt.datetime, collapse_window_s: int = 2, orphan_after_s: int = 10) -> str:
    """The merchant config; quiet hours are placed 12 hours from ``now`` so none apply."""
    local = now.astimezone(dt.timezone(dt.timedelta(hours=8)))
    start, end = local + dt.timedelta(hours=12), local + dt.timedelta(hours=13)
    lines = [
        f"[apps.{APPID}]",
        f'timezone = "{TZ}"',
        f"collapse_window_s = {collapse_window_s}",
        f"orphan_after_s = {orphan_after_s}",
        'sensitive_words = ["赌博"]',
        f"[apps.{APPID}.caps]",
        "transactional = { max = 20, window_s = 86400 }",
        "marketing = { max = 1, window_s = 86400 }",
        f"[apps.{APPID}.quiet_hours]",
        f'start = "{start:%H:%M}"',
        f'end = "{end:%H:%M}"',
    ]
    for kind, content in _CONTENT.items():
        page, query = _PAGES[kind]
        lines += [
            f"[apps.{APPID}.kinds.{kind}]",
            f'template_id = "{TEMPLATES[kind]}"',
            f"content = {orjson.dumps(content).decode()}",  # a JSON string is TOML too
            f'page = "{page}{query}"',
        ]
        if kind == "order_status":
            lines.append('notify_on = ["paid", "shipped", "delivered", "cancelled", "refunded"]')
        if kind == "logistics":
            lines.append('notify_on = ["out_for_delivery", "delivered", "exception"]')
        lines.append(f"[apps.{APPID}.kinds.{kind}.data]")
        lines += [f'{k} = "{v}"' for k, v in _DATA[kind].items()]
    lines += [
        f"[apps.{APPID}.cards]",
        "type = 2001",
        'wxa_path_query = "pages/order/detail?id={order_id}"',
        'product_img = "https://demo.shop/img/goods.png"',
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Published:
    """One record the shop produces: ``raw`` to logical ``topic`` under ``key``."""

    topic: str
    key: str
    raw: bytes
    event_id: str | None  # None: a bad event (must end in the DLQ)


_TOPIC_OF = {kind.record: kind.topic for kind in KINDS.values()}


def _pub(record: Record) -> Published:
    """The record on its kind's topic (promotions share ``products``), under its own key."""
    return Published(_TOPIC_OF[type(record)], record.key, encode(record), record.event_id)


@dataclass(frozen=True)
class Payment:
    """A WeChat Pay payment (the sandbox's ``CardBook.pay`` arguments)."""

    openid: str
    transaction_id: str
    amount: int
    paid_at: int  # epoch seconds


@dataclass
class _Order:
    order_id: str
    openid: str
    amount: int
    item: str
    steps: list[tuple[str, str]]  # (topic kind, status/state) still to publish
    pay: Payment | None = None  # paid with WeChat Pay: a service card


@dataclass
class Shop:
    """The simulated shop. ``openids`` are its buyers; ``clock()`` gives event times."""

    users: int = 60
    seed: int = 1
    openids: list[str] = field(init=False)
    _rng: random.Random = field(init=False, repr=False)
    _orders: list[_Order] = field(default_factory=list, init=False, repr=False)
    _seq: int = field(default=0, init=False, repr=False)
    #: popups accepted at checkout since the last call of :meth:`take_accepts`
    _accepts: list[tuple[str, list[str]]] = field(default_factory=list, init=False, repr=False)
    #: WeChat Pay payments since the last call of :meth:`take_payments`
    _payments: list[Payment] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)  # noqa: S311 (a simulation, not a secret)
        self.openids = [f"oDemo{n:023d}" for n in range(self.users)]

    # --- phase 0: users subscribe and watch ---------------------------------------------------

    def accept_rounds(self) -> list[list[tuple[str, list[str]]]]:
        """Popups before trading, in rounds: (openid, template ids accepted in one popup).

        Rounds must be played at least a second apart: WeChat's events carry a CreateTime in
        seconds, so the same accept twice in one second is indistinguishable from a retry."""
        first: list[tuple[str, list[str]]] = []
        second: list[tuple[str, list[str]]] = []
        for i, openid in enumerate(self.openids):
            if i % 10 == 9:
                continue  # never accepts: every message to them is no_credit
            transactional = [TEMPLATES["order_status"], TEMPLATES["logistics"]]
            marketing = [TEMPLATES["price_drop"], TEMPLATES["promotion"]] if i % 2 == 0 else []
            first.append((openid, transactional + marketing))
            second.append((openid, [TEMPLATES["order_status"]]))  # two order credits to start
        return [first, second]

    def revokers(self) -> list[str]:
        """Users who switch the order template off in settings half way through."""
        return [o for i, o in enumerate(self.openids) if i % 10 == 3]

    def state_events(self, now: dt.datetime) -> list[Published]:
        """Watches (most users watch the flash SKU, half the store) and a few preferences."""
        out: list[Published] = []
        for i, openid in enumerate(self.openids):
            if i % 5 != 4:
                out.append(self._watch(now, openid, Target("sku", FLASH_SKU), "price_drop"))
            if i % 2 == 0:
                out.append(self._watch(now, openid, Target("store", STORE), "promotion"))
            if i % 15 == 7:
                pref = PreferenceChanged(self._id("pref"), now, APPID, openid, "mute", "promotion")
                out.append(_pub(pref))
        return out

    def _watch(self, now: dt.datetime, openid: str, target: Target, kind: str) -> Published:
        return _pub(Watch(self._id("watch"), now, APPID, openid, "watch", target, kind))  # type: ignore[arg-type]

    # --- phase 1: traffic ---------------------------------------------------------------------

    def traffic(self, now: dt.datetime, count: int) -> list[Published]:
        """The next ``count`` records of order and logistics traffic (with duplicates and bad
        events mixed in)."""
        out: list[Published] = []
        while len(out) < count:
            roll = self._rng.random()
            if roll < 0.02:
                out.append(Published("order-status", f"{APPID}:bad", self._rng.choice(_BAD), None))
            elif roll < 0.04 and out and out[-1].event_id is not None:
                out.append(out[-1])  # a publisher retry: the same event twice
            else:
                out.append(self._step(now))
        return out

    def take_accepts(self) -> list[tuple[str, list[str]]]:
        """Checkout popups accepted since the last call (the caller plays them in the sandbox)."""
        out, self._accepts = self._accepts, []
        return out

    def take_payments(self) -> list[Payment]:
        """WeChat Pay payments made since the last call (register them before publishing)."""
        out, self._payments = self._payments, []
        return out

    def flash_sale(self, now: dt.datetime) -> Published:
        title = "限时秒杀 蓝牙耳机"
        ev = ProductPriceChanged(self._id("price"), now, APPID, FLASH_SKU, title, 29900, 19900)
        return _pub(ev)

    def promotion(self, now: dt.datetime) -> Published:
        ev = Promotion(
            self._id("promo"), now, APPID, "promo-618", "年中大促", now,
            now + dt.timedelta(days=3), Target("store", STORE), "满200减30",
        )  # fmt: skip
        return _pub(ev)

    def _step(self, now: dt.datetime) -> Published:
        if not self._orders or (len(self._orders) < 40 and self._rng.random() < 0.3):
            self._orders.append(self._new_order(now))
        order = self._rng.choice(self._orders)
        kind, status = order.steps.pop(0)
        if not order.steps:
            self._orders.remove(order)
        if kind == "logistics":
            state: Any = status
            ev: Record = LogisticsUpdated(
                self._id("logi"), now, APPID, order.order_id, f"SF{order.order_id[-8:]}",
                "顺丰速运", state, order.openid, text=f"快件{_STATE_TEXT[status]}",
            )  # fmt: skip
            return _pub(ev)
        items = (OrderItem(f"sku-{_GOODS.index(order.item)}", order.item, 1),)
        st: Any = status
        pay = order.pay if status != "created" else None
        ev = OrderStatusChanged(
            self._id("order"), now, APPID, order.openid, order.order_id, st, order.amount,
            items=items, transaction_id=pay.transaction_id if pay else None,
            pay_amount=pay.amount if pay else None,
            paid_at=dt.datetime.fromtimestamp(pay.paid_at, dt.UTC) if pay else None,
        )  # fmt: skip
        return _pub(ev)

    def _new_order(self, now: dt.datetime) -> _Order:
        openid = self._rng.choice(self.openids)
        order_id = f"D{self._rng.randrange(10**9, 10**10)}"
        steps = [("order-status", "created"), ("order-status", "paid")]
        if self._rng.random() < 0.1:
            steps.append(("order-status", "cancelled"))
        else:
            steps += [("order-status", "shipped"), ("logistics", "in_transit")]
            steps += [("logistics", "out_for_delivery"), ("logistics", "delivered")]
            steps.append(("order-status", "delivered"))
        if self._rng.random() < 0.8:  # the checkout page asks for the order updates
            self._accepts.append((openid, [TEMPLATES["order_status"], TEMPLATES["logistics"]]))
        price = self._rng.randrange(990, 39900)
        order = _Order(order_id, openid, price, self._rng.choice(_GOODS), steps)
        if self._rng.random() < 1 / 3:  # paid with WeChat Pay
            txid = f"42000{self._rng.randrange(10**22, 10**23)}"
            order.pay = Payment(openid, txid, price, int(now.timestamp()))
            self._payments.append(order.pay)
        return order

    def _id(self, prefix: str) -> str:
        self._seq += 1
        return f"demo-{prefix}-{self.seed}-{self._seq}"

    def __iter__(self) -> Iterator[str]:
        return iter(self.openids)


_STATE_TEXT = {"in_transit": "运输中", "out_for_delivery": "派送中", "delivered": "已签收"}

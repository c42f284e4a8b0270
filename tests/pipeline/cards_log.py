"""Service-card orders for the generated event log (``eventlog.py`` calls :func:`build` and
:func:`card_apps`): three mini programs with cards configured (2001 logistics, 2002 pickup, 2006
same-city), whose orders are paid with WeChat Pay, through scenarios that give every card
reason: a card's whole life (``card_update``, and ``card_replaced`` where a status maps to no
card state: 2002's ``delivered``), an illegal transition (``card_illegal``), an event after the
card's terminal state (``card_ended``), an activation too late (the classic path), and an order
without a transaction id (the classic path).

Every payment is one the sandbox knows (:func:`payments` registers them), with the amount and time
the orders carry, and every transition is legal for WeChat: the card stage's calls all succeed,
the only ``card-results`` are ``activated`` (they end the classic candidates the orders stage held
while the activation was pending: the same reasons, whenever they arrive), and the orders side is
as deterministic as the oracle needs. The oracle (``oracle.Expected.cards``) then says which
states each card must have reached in the sandbox.

Each order goes out as one contiguous block of status events in time order; each order has its
own user, with credits for every classic candidate it could produce.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from wxsub.schemas.records import OrderItem, OrderStatusChanged, Record

__all__ = [
    "APP_CARD_2001",
    "APP_CARD_2002",
    "APP_CARD_2006",
    "CARD_APPS",
    "Payment",
    "build",
    "card_apps",
    "payments",
]

APP_CARD_2001 = "wxcard2001000001"
APP_CARD_2002 = "wxcard2002000002"
APP_CARD_2006 = "wxcard2006000006"
CARD_APPS = {APP_CARD_2001: 2001, APP_CARD_2002: 2002, APP_CARD_2006: 2006}
_MIN = 60_000
_LATE_MS = 25 * 3600 * 1000  # paid 25 h ago: too late to activate (24 h)

# order statuses, in time order. No logistics: an order's status and logistics events come
# from two topics, so their relative order is not kept (the oracle must not depend on it), and a
# card's transitions would. Card logistics are covered by tests/cards.
SCENARIOS: dict[int, dict[str, list[str]]] = {
    2001: {
        "life": ["created", "paid", "shipped", "delivered", "completed"],
        "illegal": ["paid", "shipped", "cancelled"],  # 4 -> 10 is not allowed
        "ended": ["paid", "shipped", "completed", "refunding"],  # 8 is terminal
        "aftersale": ["paid", "shipped", "delivered", "refunding", "refunded"],
        "late": ["paid", "shipped", "delivered"],  # paid 25 h ago: the classic path
        "nopay": ["paid", "shipped"],  # no transaction id: the classic path
    },
    2002: {  # delivered = 0: no card state for it (its classic message is still replaced)
        "life": ["paid", "shipped", "delivered", "completed"],
        "illegal": ["paid", "shipped", "cancelled"],  # 3 -> 10 is not allowed
        "aftersale": ["paid", "refunding", "refunded"],
    },
    2006: {  # shipped = 3 (rider took it): 1 -> 5 is not in 2006's table
        "life": ["paid", "shipped", "delivered", "completed"],
        "cancel": ["paid", "cancelled"],
        "ended": ["paid", "completed", "refunding"],  # 9 is terminal
    },
}
#: the merchant config's overrides of the default status -> card state maps
OVERRIDES: dict[int, dict[str, int]] = {2002: {"delivered": 0}, 2006: {"shipped": 3}}


@dataclass(frozen=True)
class Payment:
    """A WeChat Pay payment the sandbox must know (``CardBook.pay``)."""

    appid: str
    openid: str
    transaction_id: str
    amount: int
    paid_at: int  # epoch seconds


class _Gen(Protocol):
    """What this module uses of ``eventlog._Gen``."""

    @property
    def k(self) -> Any: ...
    def eid(self, prefix: str) -> str: ...
    def emit(self, phase: int, record: Record, note: str, dup_ok: bool = True) -> None: ...
    def phase0_accept(self, appid: str, openid: str, template: str, n: int, note: str) -> None: ...


def card_apps(app_doc: Callable[[], dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The card apps' merchant config: ``app_doc()`` (the generator's classic kinds) plus a
    ``cards`` section of each app's type."""
    out = {}
    for appid, notify_type in CARD_APPS.items():
        doc = copy.deepcopy(app_doc())
        doc["cards"] = {
            "type": notify_type,
            "replaces": ["order_status", "logistics"],
            "wxa_path_query": "pages/order/detail?id={order_id}",
            "product_img": "https://shop.example/img/card.png",
        }
        if notify_type in OVERRIDES:
            doc["cards"]["order_status"] = OVERRIDES[notify_type]
        out[appid] = doc
    return out


def build(gen: _Gen, templates: dict[str, str], rounds: int = 2) -> None:
    """Phase-0 credits and the phase-1 card orders (each scenario ``rounds`` times per app)."""
    seed, now = gen.k.seed, gen.k.now_ms
    n = 0
    for appid, notify_type in CARD_APPS.items():
        for r in range(rounds):
            for name, steps in SCENARIOS[notify_type].items():
                n += 1
                openid = f"card-{notify_type}-{name}-{r}"
                order_id = f"cord{notify_type}-{name}-{r}"
                txid = f"42{notify_type}{seed:04d}{n:016d}"
                order_tpl = templates["order_status"]
                gen.phase0_accept(appid, openid, order_tpl, len(steps), "card-credit")
                t0 = now - (120 - n) * _MIN
                paid = t0 - _LATE_MS if name == "late" else t0
                pay = None if name == "nopay" else (txid, paid)
                for rec in _order(gen, appid, openid, order_id, steps, t0, pay):
                    gen.emit(1, rec, f"card-{name}")


def _order(
    gen: _Gen,
    appid: str,
    openid: str,
    order_id: str,
    steps: Sequence[str],
    t0: int,
    pay: tuple[str, int] | None,
) -> Iterable[Record]:
    amount = 1005 + len(order_id)
    items = (OrderItem("sku-card", "同城鲜花礼盒", 1, amount),)
    txid, paid = pay if pay is not None else (None, 0)
    prev: str | None = None
    for i, status in enumerate(steps):
        yield OrderStatusChanged(
            gen.eid("cos"), _at(t0 + i * _MIN), appid, openid, order_id,
            status, amount, previous_status=prev, items=items,  # type: ignore[arg-type]
            transaction_id=txid, pay_amount=amount if txid else None,
            paid_at=_at(paid) if txid else None,
        )  # fmt: skip
        prev = status


def payments(records: Iterable[Record | None]) -> list[Payment]:
    """Every WeChat Pay payment in a log's records (once each)."""
    out: dict[tuple[str, str], Payment] = {}
    for rec in records:
        if isinstance(rec, OrderStatusChanged) and rec.transaction_id and rec.paid_at:
            amount = rec.pay_amount if rec.pay_amount is not None else rec.amount
            paid = int(rec.paid_at.timestamp())
            out[(rec.appid, rec.transaction_id)] = Payment(
                rec.appid, rec.openid, rec.transaction_id, amount, paid
            )
    return list(out.values())


def _at(ms: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=ms)

"""The demo shop's WeChat Pay orders: a third carry the transaction id (not on ``created``), the
payments to register agree with the events, the config has a 2001 card, and the accounting
counts card outcomes as ``card`` ends."""

from __future__ import annotations

import datetime as dt
import tomllib

from tests.demo.test_shop import NOW, _out
from wxsub.merchants import parse_merchants
from wxsub.schemas import decode_topic
from wxsub.schemas.records import OrderStatusChanged
from wxsub_dev.demo.report import account
from wxsub_dev.demo.shop import APPID, Shop, merchants_toml


def test_some_orders_are_paid_with_wechat_pay() -> None:
    shop = Shop(users=30, seed=3)
    records = shop.traffic(NOW, 800)
    payments = {p.transaction_id: p for p in shop.take_payments()}
    assert shop.take_payments() == []
    orders: dict[str, set[str | None]] = {}
    for rec in records:
        if rec.topic != "order-status" or rec.event_id is None:
            continue
        ev = decode_topic(rec.topic, rec.raw)
        assert isinstance(ev, OrderStatusChanged)
        if ev.status != "created":
            orders.setdefault(ev.order_id, set()).add(ev.transaction_id)
        if ev.transaction_id is None:
            continue
        assert ev.status != "created"
        pay = payments[ev.transaction_id]
        assert (pay.openid, pay.amount) == (ev.openid, ev.pay_amount)
        assert ev.paid_at == dt.datetime.fromtimestamp(pay.paid_at, dt.UTC)
    paid = [o for o, ids in orders.items() if ids != {None}]
    assert all(len(ids) == 1 for ids in orders.values())  # all or none of an order's events
    assert 0.15 < len(paid) / len(orders) < 0.55
    cfg = parse_merchants(tomllib.loads(merchants_toml(NOW))).app(APPID)
    assert cfg is not None and cfg.cards is not None and cfg.cards.notify_type == 2001


def test_card_outcomes_are_card_ends() -> None:
    inputs = [("order-status", "c1"), ("order-status", "c2"), ("order-status", "c3")]
    outcomes = [
        _out("c1", "card_update", stage="orders"),
        _out("c2", "card_replaced", stage="orders", kind="logistics"),
        _out("c3", "card_ended", stage="orders"),
    ]
    acc = account(inputs, outcomes, [], dlq=0)
    assert acc.ended["card"] == 3 and acc.reconciles and not acc.suppressed

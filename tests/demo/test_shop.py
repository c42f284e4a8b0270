"""The demo's shop and its accounting, without Kafka."""

from __future__ import annotations

import datetime as dt
import tomllib

from wxsub.errors import InputError
from wxsub.merchants import parse_merchants
from wxsub.schemas import decode_topic
from wxsub.schemas.internal import Intent, Outcome
from wxsub_dev.demo.report import account
from wxsub_dev.demo.shop import APPID, TEMPLATES, Shop, merchants_toml, world_doc
from wxsub_sandbox.world import load_world

NOW = dt.datetime(2024, 5, 1, 2, 0, tzinfo=dt.UTC)


def test_every_good_record_passes_the_contract_and_every_bad_one_fails() -> None:
    shop = Shop(users=30, seed=3)
    records = shop.state_events(NOW) + shop.traffic(NOW, 600)
    records += [shop.flash_sale(NOW), shop.promotion(NOW)]
    bad = 0
    for rec in records:
        try:
            event = decode_topic(rec.topic, rec.raw)
        except InputError:
            assert rec.event_id is None
            bad += 1
            continue
        assert rec.event_id == event.event_id and rec.key == event.key
    assert 0 < bad < len(records) // 10
    assert {r.topic for r in records} >= {"order-status", "logistics", "products", "watches"}


def test_the_configs_load_and_agree_on_templates() -> None:
    shop = Shop(users=5)
    world = load_world(world_doc(shop.openids))
    assert {t for t in world.app(APPID).templates} == set(TEMPLATES.values())
    merchants = parse_merchants(tomllib.loads(merchants_toml(NOW)))
    cfg = merchants.app(APPID)
    assert cfg is not None
    assert {k: cfg.kinds[k].template_id for k in TEMPLATES} == TEMPLATES
    assert cfg.quiet_hours is not None and not cfg.quiet_hours.contains(
        NOW.astimezone(cfg.timezone).time()
    )


def test_accept_rounds_never_repeat_a_template_for_a_user_within_a_round() -> None:
    for plan in Shop(users=20).accept_rounds():
        users = [openid for openid, _ in plan]
        assert len(users) == len(set(users))


def _out(
    event_id: str, reason: str, stage: str = "decide", nid: str = "", kind: str = "order_status"
) -> Outcome:
    return Outcome(event_id, kind, reason, stage, appid=APPID, openid="u", notification_id=nid)


def _intent(nid: str, *event_ids: str) -> Intent:
    return Intent(nid, APPID, "u", "T", "logistics", event_ids, 0, 0, 0, {})


def test_accounting_adds_up_and_spots_what_is_missing() -> None:
    inputs = [
        ("order-status", "o1"), ("order-status", "o1"), ("order-status", "o2"),
        ("logistics", "l1"), ("logistics", "l2"), ("subscriptions", "s1"),
        ("order-status", None), ("products", "p1"),
    ]  # fmt: skip
    outcomes = [
        _out("o1", "no_rule", stage="orders"), _out("o1", "duplicate", stage="orders"),
        _out("o2", "no_credit"),
        _out("l1", "collapsed", kind="logistics"),  # its id moved into n1, which was sent
        _out("l2", "sent", stage="deliver", nid="n1", kind="logistics"),
        _out("s1", "applied", kind="subscription"),
    ]  # fmt: skip
    acc = account(inputs, outcomes, [_intent("n1", "l1", "l2")], dlq=1)
    assert acc.ended["unaccounted"] == 1  # p1: nothing ended it
    assert not acc.reconciles
    acc = account(inputs[:-1], outcomes, [_intent("n1", "l1", "l2")], dlq=1)
    assert acc.reconciles
    assert acc.ended["sent"] == 2 and acc.ended["state"] == 1 and acc.ended["duplicate"] == 1
    assert acc.suppressed == {"no_rule": 1, "no_credit": 1}
    assert acc.messages["intents"] == acc.messages["sent"] == 1
    pending = account(inputs[:-1], outcomes[:-2], [_intent("n1", "l1", "l2")], dlq=1)
    assert pending.ended["pending"] == 2 and pending.open_messages == 1

"""Merchant config: the example loads; every mistake names its key."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from tests.agents.factory import APPID, app_doc, config
from wxsub.errors import ConfigError
from wxsub.merchants import QuietHours, load_merchants, parse_merchants

ROOT = Path(__file__).resolve().parents[2]


def test_example_config_loads() -> None:
    merchants = load_merchants(ROOT / "deploy" / "merchants.example.toml")
    app = merchants.app("wx0123456789abcdef")
    assert app is not None
    assert merchants.app("nope") is None
    order = app.kind("order_status")
    assert order is not None
    assert order.keywords["phrase2"] == "phrase"
    assert order.status_text["refunded"] == "退款成功"
    assert order.status_text["paid"] == "已支付"  # built-in default kept
    assert app.marketing_cap is not None and app.marketing_cap.max == 2
    assert app.quiet_hours == QuietHours(dt.time(22), dt.time(8))
    assert app.dedupe_retention_s >= app.max_stale_after_s


def test_defaults() -> None:
    cfg = config()
    logistics = cfg.kind("logistics")
    assert logistics is not None
    assert logistics.miniprogram_state == "formal" and logistics.lang == "zh_CN"
    price = cfg.kind("price_drop")
    assert price is not None and price.keywords["amount2"] == "amount"  # from the name


def _bad(doc: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_merchants({"apps": {APPID: doc}})
    return info.value


def _kind(kind: str, **changes: Any) -> dict[str, Any]:
    doc = app_doc()
    doc["kinds"][kind].update(changes)
    if changes.get("data", {}) is None:
        del doc["kinds"][kind]["data"]
    return doc


@pytest.mark.parametrize(
    ("doc", "key"),
    [
        (_kind("logistics", template_id=""), "apps.wxapp.kinds.logistics.template_id"),
        (_kind("logistics", notify_on=["teleported"]), "apps.wxapp.kinds.logistics.notify_on"),
        (_kind("price_drop", notify_on=["x"]), "apps.wxapp.kinds.price_drop.notify_on"),
        (_kind("restock", lang="fr"), "apps.wxapp.kinds.restock.lang"),
        (_kind("restock", miniprogram_state="prod"), "apps.wxapp.kinds.restock.miniprogram_state"),
        (_kind("restock", colour="red"), "apps.wxapp.kinds.restock.colour"),
        (_kind("restock", data=None), "apps.wxapp.kinds.restock.data"),
        (_kind("restock", data={}), "apps.wxapp.kinds.restock.data"),
        (_kind("restock", data={"thing1": "{nope}", "number2": "{new_stock}"}),
         "apps.wxapp.kinds.restock.data.thing1"),
        (_kind("restock", page="p?id={order_id}"), "apps.wxapp.kinds.restock.page"),
        (_kind("restock", data={"bogus1": "{title}"}), "apps.wxapp.kinds.restock.keywords.bogus1"),
        (_kind("restock", status_text={"x": "y"}), "apps.wxapp.kinds.restock.status_text.x"),
        (_kind("logistics", status_text={"delivered": "delivered"}),
         "apps.wxapp.kinds.logistics.status_text.delivered"),
        (_kind("order_status", content="no placeholders"),
         "apps.wxapp.kinds.order_status.content"),
        (_kind("order_status", keywords={"thing1": "thing"}),
         "apps.wxapp.kinds.order_status.keywords"),
        (_kind("restock", stale_after_s=0), "apps.wxapp.kinds.restock.stale_after_s"),
        (_kind("restock", keywords={"thing1": "thing", "number2": "number", "enum3": "enum"},
               data={"thing1": "{title}", "number2": "{new_stock}", "enum3": "{title}"}),
         "apps.wxapp.kinds.restock.enum_values.enum3"),
        (app_doc(kinds={"gossip": {}}), "apps.wxapp.kinds.gossip"),
        (app_doc(timezone="Mars/Olympus"), "apps.wxapp.timezone"),
        (app_doc(quiet_hours={"start": "25:00", "end": "08:00"}), "apps.wxapp.quiet_hours.start"),
        (app_doc(quiet_hours={"start": "8:00", "end": "08:00"}), "apps.wxapp.quiet_hours.start"),
        (app_doc(quiet_hours={"start": "08:00", "end": "08:00"}), "apps.wxapp.quiet_hours.end"),
        (app_doc(caps={"marketing": {"max": 2}}), "apps.wxapp.caps.marketing.window_s"),
        (app_doc(caps={"promo": {"max": 2, "window_s": 1}}), "apps.wxapp.caps.promo"),
        (app_doc(collapse_window_s=-1), "apps.wxapp.collapse_window_s"),
        (app_doc(dedupe_retention_s=60), "apps.wxapp.dedupe_retention_s"),
        (app_doc(sensitive_words="赌博"), "apps.wxapp.sensitive_words"),
        (app_doc(sensitive_words_file="/nonexistent/words.txt"),
         "apps.wxapp.sensitive_words_file"),
        # types are strict: a TOML string is not a number, true is not 1
        (_kind("restock", stale_after_s="60"), "apps.wxapp.kinds.restock.stale_after_s"),
        (app_doc(collapse_window_s=True), "apps.wxapp.collapse_window_s"),
        (_kind("order_status", by_status={"refunded": {"template_id": "T",
                                                       "data": {"thing1": "{order_id}"}}}),
         "apps.wxapp.kinds.order_status.by_status.refunded"),  # not in notify_on
        (_kind("restock", by_status={}), "apps.wxapp.kinds.restock.by_status"),
        (app_doc(cards={"type": 9, "wxa_path_query": "p", "product_img": "i"}),
         "apps.wxapp.cards.type"),
        (app_doc(cards={"type": 2001, "wxa_path_query": "p?{x}", "product_img": "i"}),
         "apps.wxapp.cards.wxa_path_query"),
        (app_doc(cards={"type": 2001, "wxa_path_query": "p", "product_img": "i",
                        "order_status": {"paid": 99}}), "apps.wxapp.cards.order_status.paid"),
    ],
)  # fmt: skip
def test_errors_name_the_key(doc: dict[str, Any], key: str) -> None:
    assert _bad(doc).key == key


def test_content_keywords_must_all_be_mapped() -> None:
    doc = _kind(
        "restock", content="名称:{{thing1.DATA}}\n库存:{{number2.DATA}}\n备注:{{thing3.DATA}}"
    )
    assert _bad(doc).key == "apps.wxapp.kinds.restock.data.thing3"


def test_unknown_top_level_and_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse_merchants({"applications": {}})
    assert info.value.key == "applications"
    with pytest.raises(ConfigError) as info:
        load_merchants(tmp_path / "missing.toml")
    assert info.value.key == "merchants"
    bad = tmp_path / "bad.toml"
    bad.write_text("[apps\n", encoding="utf-8")
    with pytest.raises(ConfigError):
        load_merchants(bad)


def test_word_file_relative_to_config(tmp_path: Path) -> None:
    (tmp_path / "words.txt").write_text("# comment\n代开发票\n\n 赌博 \n", encoding="utf-8")
    toml = (ROOT / "deploy" / "merchants.example.toml").read_text(encoding="utf-8")
    toml = toml.replace(
        '# sensitive_words_file = "words.txt"', 'sensitive_words_file = "words.txt"'
    )
    path = tmp_path / "merchants.toml"
    path.write_text(toml, encoding="utf-8")
    app = load_merchants(path).app("wx0123456789abcdef")
    assert app is not None
    assert app.sensitive_words == ("代开发票", "赌博")


@pytest.mark.parametrize(
    ("start", "end", "inside", "outside"),
    [
        (dt.time(22), dt.time(8), [dt.time(22), dt.time(23, 59), dt.time(0), dt.time(7, 59, 59)],
         [dt.time(8), dt.time(12), dt.time(21, 59, 59)]),
        (dt.time(12), dt.time(14), [dt.time(12), dt.time(13, 59)], [dt.time(14), dt.time(11)]),
    ],
)  # fmt: skip
def test_quiet_hours_contains(
    start: dt.time, end: dt.time, inside: list[dt.time], outside: list[dt.time]
) -> None:
    quiet = QuietHours(start, end)
    assert all(quiet.contains(t) for t in inside)
    assert not any(quiet.contains(t) for t in outside)

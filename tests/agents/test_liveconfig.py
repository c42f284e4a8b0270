"""Live configuration as pure functions: by_status templates, mappings checked against WeChat's
template list (a kind that does not fit is disabled, others keep running), the version on every
outcome and intent, records round-trip, and `apply`'s error lines."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest

from tests.agents.factory import APPID, BASE, CFG_TPL_CONTENT, OPENID, T0, TPL, cand, config, sub
from wxsub.agents.rules.decide import decide
from wxsub.agents.rules.subscriptions import UserState, apply_subscription
from wxsub.config_cli import line_of
from wxsub.errors import ConfigError
from wxsub.liveconfig import (
    AppRecord,
    AppTemplates,
    TemplateInfo,
    check_kind,
    decode_app,
    decode_templates,
    effective,
    encode_app,
    encode_templates,
    merchants_of,
)
from wxsub.merchants import parse_merchants

REFUND_TPL = "TPL_REFUND"
REFUND = {
    "template_id": REFUND_TPL,
    "content": "订单号:{{character_string1.DATA}}\n退款金额:{{amount2.DATA}}",
    "data": {"character_string1": "{order_id}", "amount2": "{amount}"},
}


def with_refund() -> dict[str, object]:
    kinds = copy.deepcopy(BASE["kinds"])
    kinds["order_status"]["notify_on"] = ["paid", "shipped", "refunded"]
    kinds["order_status"]["by_status"] = {"refunded": REFUND}
    return kinds


def listed(cfg_kinds: dict[str, object] | None = None, **changes: TemplateInfo) -> AppTemplates:
    """The template list WeChat would give for the factory config (plus the refund template)."""
    cfg = config(kinds=cfg_kinds or with_refund())
    out = {}
    for kind in cfg.kinds.values():
        for k in kind.all_templates():
            content = CFG_TPL_CONTENT(k)
            out[k.template_id] = TemplateInfo(k.template_id, "t", content, 2, dict(k.enum_values))
    out.update(changes)
    return AppTemplates(APPID, T0, out)


def rich(cfg: object) -> UserState:
    state = UserState()
    for i, tpl in enumerate([*TPL.values(), REFUND_TPL] * 3):
        state, _ = apply_subscription(state, sub(tpl, event_id=f"s{i}"), cfg, T0)  # type: ignore[arg-type]
    return state


def test_by_status_picks_the_template() -> None:
    cfg = config(kinds=with_refund(), collapse_window_s=0)
    state = rich(cfg)
    (paid,) = decide(state, cand(status="paid"), cfg, T0).intents
    (refund,) = decide(state, cand(status="refunded", event_id="e2"), cfg, T0).intents
    assert paid.template_id == TPL["order_status"]
    assert refund.template_id == REFUND_TPL
    assert set(refund.body["data"]) == {"character_string1", "amount2"}
    assert refund.body["data"]["amount2"] == {"value": "¥12.50"}


def test_by_status_must_be_notified() -> None:
    kinds = with_refund()
    kinds["order_status"]["notify_on"] = ["paid"]  # type: ignore[index]
    with pytest.raises(ConfigError) as info:
        config(kinds=kinds)
    assert info.value.key == f"apps.{APPID}.kinds.order_status.by_status.refunded"


def test_fitting_templates_change_nothing() -> None:
    cfg = config(kinds=with_refund())
    merchants, problems = effective({APPID: cfg}, {APPID: listed()})
    assert problems == []
    assert not any(k.disabled for kind in merchants.apps[APPID].kinds.values()
                   for k in kind.all_templates())  # fmt: skip


def test_deleted_changed_or_enum_template_disables_only_its_kind() -> None:
    cfg = config(kinds=with_refund(), collapse_window_s=0)
    base = listed()
    deleted = dict(base.templates)
    del deleted[TPL["logistics"]]
    changed = TemplateInfo(
        REFUND_TPL, "t", "订单号:{{character_string1.DATA}}\n退款金额:{{thing2.DATA}}"
    )
    deleted[REFUND_TPL] = changed
    merchants, problems = effective({APPID: cfg}, {APPID: replace(base, templates=deleted)})
    assert {(p.kind, p.template_id) for p in problems} == {
        ("logistics", TPL["logistics"]), ("order_status", REFUND_TPL)
    }  # fmt: skip
    assert "amount2" in next(p.reason for p in problems if p.template_id == REFUND_TPL)
    live = merchants.apps[APPID]
    state = rich(cfg)
    d = decide(state, cand("logistics"), live, T0)
    assert [o.reason for o in d.outcomes] == ["template_unfit"] and d.intents == ()
    assert d.state.credits == state.credits  # no credit spent (the history records the decision)
    d = decide(state, cand(status="refunded", event_id="e3"), live, T0)
    assert [o.reason for o in d.outcomes] == ["template_unfit"]
    assert len(decide(state, cand(status="paid", event_id="e4"), live, T0).intents) == 1


def test_check_kind_reasons() -> None:
    cfg = config()
    kind = cfg.kinds["order_status"]
    good = TemplateInfo(kind.template_id, "t", CFG_TPL_CONTENT(kind))
    assert check_kind(kind, {kind.template_id: good}) is None
    assert "not in the mini program" in (check_kind(kind, {}) or "")
    extra = replace(good, content=good.content + "\n备注:{{thing9.DATA}}")
    assert "thing9 is not mapped" in (check_kind(kind, {kind.template_id: extra}) or "")
    typed = replace(kind, keywords={**kind.keywords, "phrase2": "thing"})
    assert "phrase2 is a phrase" in (check_kind(typed, {kind.template_id: good}) or "")


def test_enum_values_must_come_from_the_template() -> None:
    kinds = copy.deepcopy(BASE["kinds"])
    kinds["restock"] = {
        "template_id": "TPL_ENUM", "content": "商品:{{thing1.DATA}}\n状态:{{enum2.DATA}}",
        "data": {"thing1": "{title}", "enum2": "有货"}, "enum_values": {"enum2": ["有货"]},
    }  # fmt: skip
    kind = config(kinds=kinds).kinds["restock"]
    tpl = TemplateInfo("TPL_ENUM", "t", kinds["restock"]["content"], 2, {"enum2": ("有货", "缺货")})
    assert check_kind(kind, {"TPL_ENUM": tpl}) is None
    gone = replace(tpl, enums={"enum2": ("缺货",)})
    assert "not in template" in (check_kind(kind, {"TPL_ENUM": gone}) or "")


def test_records_round_trip_and_versions_stamp_decisions() -> None:
    doc = copy.deepcopy(BASE)
    rec = AppRecord(APPID, 7, T0, doc)
    assert decode_app(encode_app(rec)) == rec
    assert decode_app(encode_app(AppRecord(APPID, 8, T0, None))).app is None
    cfg = merchants_of([rec])[APPID]
    assert cfg.version == 7
    assert decode_templates(encode_templates(listed())) == listed()
    d = decide(UserState(), cand(), cfg, T0)
    assert [(o.reason, o.config_version) for o in d.outcomes] == [("no_credit", 7)]
    (intent,) = decide(rich(cfg), cand(), cfg, T0).intents
    assert intent.config_version == 7


def test_line_of_names_the_line() -> None:
    text = '[apps.wx1]\ntimezone = "x"\n[apps.wx1.kinds.logistics]\ntemplate_id = "T"\n' \
        'data = { thing1 = "{x}" }\n'  # fmt: skip
    assert line_of(text, "apps.wx1.timezone") == 2
    assert line_of(text, "apps.wx1.kinds.logistics.template_id") == 4
    assert line_of(text, "apps.wx1.kinds.logistics.data.thing1") == 5
    assert line_of(text, "apps.wx1.kinds.logistics.page") == 3
    assert parse_merchants({"apps": {}}).apps == {}
    assert OPENID

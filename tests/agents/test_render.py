"""Rendering: hand-written cases and properties (every rendered value passes WeChat's rules)."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from tests.agents.factory import OPENID, T0, TZ, cand, config
from wxsub.agents.rules.render import Invalid, render
from wxsub.merchants import DEFAULT_STATUS_TEXT, KindConfig
from wxsub.wechat.keywords import TYPES, check

CFG = config()


def _kind(name: str) -> KindConfig:
    kind = CFG.kind(name)
    assert kind is not None
    return kind


def test_order_body_is_complete() -> None:
    body = render(cand("order_status", subject="A-1&2"), _kind("order_status"), TZ)
    assert body == {
        "touser": OPENID,
        "template_id": "TPL_ORDER",
        "page": "pages/order?id=A-1%262",
        "data": {
            "character_string1": {"value": "A-1&2"},
            "phrase2": {"value": "已支付"},
            "amount3": {"value": "¥12.50"},
            "thing4": {"value": "蓝色T恤等2件"},
            "time5": {"value": "2024年5月1日 10:00"},
        },
        "miniprogram_state": "formal",
        "lang": "zh_CN",
    }


def test_thing_is_cut_to_20_with_ellipsis() -> None:
    long_title = "超级无敌舒适纯棉短袖T恤男女同款夏季新品限时特惠"
    body = render(cand("price_drop", title=long_title), _kind("price_drop"), TZ)
    assert not isinstance(body, Invalid)
    value = body["data"]["thing1"]["value"]
    assert len(value) == 20 and value.endswith("…") and value.startswith("超级无敌")
    assert body["data"]["thing3"]["value"] == "降5.00元"
    assert body["data"]["amount2"]["value"] == "¥15.00"


def test_unknown_status_is_invalid() -> None:
    body = render(cand("order_status", status="teleported"), _kind("order_status"), TZ)
    assert isinstance(body, Invalid) and body.keyword == "phrase2"


def test_bad_character_string_is_invalid() -> None:
    body = render(cand("logistics", waybill="运单一"), _kind("logistics"), TZ)
    assert isinstance(body, Invalid) and body.keyword == "character_string1"


def test_missing_value_is_invalid() -> None:
    body = render(cand("logistics", waybill=None), _kind("logistics"), TZ)
    assert isinstance(body, Invalid) and "no value" in body.reason


def test_control_characters_become_spaces() -> None:
    body = render(cand("price_drop", title="蓝色\nT恤\t特价"), _kind("price_drop"), TZ)
    assert not isinstance(body, Invalid)
    assert body["data"]["thing1"]["value"] == "蓝色 T恤 特价"


def test_time_in_app_zone() -> None:
    body = render(cand("promotion", starts_at=T0 + 13 * 3_600_000), _kind("promotion"), TZ)
    assert not isinstance(body, Invalid)
    assert body["data"]["time2"]["value"] == "2024年5月1日 23:00"
    assert "page" not in body


def test_escaped_braces() -> None:
    kind = KindConfig("restock", "T", {"thing1": "thing"}, {"thing1": "{{新}}{title}"})
    body = render(cand("restock"), kind, TZ)
    assert not isinstance(body, Invalid)
    assert body["data"]["thing1"]["value"] == "{新}蓝色T恤"


def test_default_status_texts_are_phrases() -> None:
    for table in DEFAULT_STATUS_TEXT.values():
        for text in table.values():
            assert check("phrase", text) is None


# --- properties ----------------------------------------------------------------------------------

_ALL_TYPES = sorted(TYPES - {"enum"})
_values = st.one_of(
    st.text(max_size=60),
    st.integers(min_value=-(10**13), max_value=10**13),
    st.none(),
)


@given(type_=st.sampled_from(_ALL_TYPES), value=_values)
def test_rendered_values_always_pass_check(type_: str, value: object) -> None:
    kind = KindConfig("restock", "T", {f"{type_}1": type_}, {f"{type_}1": "{title}"})
    body = render(cand("restock", title=value), kind, TZ)
    if not isinstance(body, Invalid):
        rendered = body["data"][f"{type_}1"]["value"]
        assert check(type_, rendered) is None


@given(type_=st.sampled_from(_ALL_TYPES), prefix=st.text(max_size=10), value=_values)
def test_composite_formats_pass_check_or_are_invalid(
    type_: str, prefix: str, value: object
) -> None:
    fmt = prefix.replace("{", "{{").replace("}", "}}") + "{title}"
    kind = KindConfig("restock", "T", {"k1": type_}, {"k1": fmt})
    body = render(cand("restock", title=value), kind, TZ)
    if not isinstance(body, Invalid):
        assert check(type_, body["data"]["k1"]["value"]) is None


@given(title=st.text(st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1))
def test_any_printable_title_renders_as_thing(title: str) -> None:
    body = render(cand("restock", title=title), _kind("restock"), TZ)
    if title.strip():
        assert not isinstance(body, Invalid)
        value = body["data"]["thing1"]["value"]
        assert len(value) <= 20
        if len(title.strip()) <= 20:
            assert value == title.strip()
    else:
        assert isinstance(body, Invalid)


@given(fen=st.integers(min_value=0, max_value=10**10 - 1))
def test_amounts_in_fen_render_as_yuan(fen: int) -> None:
    kind = KindConfig("price_drop", "T", {"amount1": "amount"}, {"amount1": "{new_price}"})
    body = render(cand("price_drop", new_price=fen), kind, TZ)
    assert not isinstance(body, Invalid)
    value = body["data"]["amount1"]["value"]
    assert value == f"¥{fen // 100}.{fen % 100:02d}"
    assert check("amount", value) is None


@given(ms=st.integers(min_value=0, max_value=4_102_444_800_000))
def test_event_times_render_as_time_and_date(ms: int) -> None:
    kind = KindConfig(
        "restock", "T", {"time1": "time", "date2": "date"},
        {"time1": "{event_time}", "date2": "{event_time}"},
    )  # fmt: skip
    body = render(cand("restock", t=ms), kind, TZ)
    assert not isinstance(body, Invalid)
    local = dt.datetime.fromtimestamp(ms / 1000, TZ)
    assert body["data"]["time1"]["value"].endswith(f"{local:%H:%M}")
    assert check("time", body["data"]["time1"]["value"]) is None
    assert check("date", body["data"]["date2"]["value"]) is None


def test_a_fan_outs_candidates_take_the_first_body_with_their_own_user() -> None:
    """The last body of a kind is taken by a candidate of the same event with the same values
    (render keeps it): the same body as rendering it anew, with the candidate's own touser."""
    kind = _kind("price_drop")
    first = render(cand("price_drop", event_id="pd-7", openid="o-a"), kind, TZ)
    second = render(cand("price_drop", event_id="pd-7", openid="o-b", target_price=9), kind, TZ)
    assert not isinstance(first, Invalid) and not isinstance(second, Invalid)
    assert first["touser"] == "o-a" and second["touser"] == "o-b"
    assert list(second) == list(first)  # same key order
    assert {**second, "touser": "o-a"} == first


def test_a_body_is_not_taken_for_other_values_or_types() -> None:
    """Same event id, a value read by the body differs (in value, in type only, or absent):
    rendered anew, as without the kept body."""
    kind = _kind("price_drop")
    render(cand("price_drop", event_id="pd-8", drop=500), kind, TZ)
    for other in ({"drop": 400}, {"drop": 500.0}, {"drop": True}, {"title": "红色T恤"}):
        body = render(cand("price_drop", event_id="pd-8", **other), kind, TZ)
        fresh = render(cand("price_drop", event_id="pd-x", **other), kind, TZ)
        assert body == fresh, other
    render(cand("price_drop", event_id="pd-9", drop=1), kind, TZ)  # 1 == True, not the same
    assert render(cand("price_drop", event_id="pd-9", drop=True), kind, TZ) == render(
        cand("price_drop", event_id="pd-y", drop=True), kind, TZ
    )
    gone = cand("price_drop", event_id="pd-8")
    del gone.values["title"]
    assert isinstance(render(gone, kind, TZ), Invalid)

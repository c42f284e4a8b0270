"""Keyword type rules (wechat-api.md), rendering with fit(), and template content parsing."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wxsub.wechat.keywords import TYPES, check, clean, fit, keyword_type
from wxsub.wechat.templates import TemplateKeyword, parse_content

ENUM = ["现货", "预售"]

VALID = [
    ("thing", "无线蓝牙耳机"),
    ("thing", "a" * 20),
    ("thing", "中" * 20),  # CJK counts 1
    ("thing", "😀" * 20),  # an emoji counts 1 (a code point)
    ("thing", "iPhone 15 Pro (256G) 黑色!"[:20]),
    ("number", "0"),
    ("number", "12.50"),
    ("number", "1" * 32),
    ("letter", "ABCxyz"),
    ("letter", "a" * 32),
    ("symbol", "★"),
    ("symbol", "+-*/%"),
    ("symbol", "😀"),
    ("character_string", "SO-2024050112345"),
    ("character_string", "A1_b2#@" + "x" * 25),
    ("time", "15:01"),
    ("time", "15:01:30"),
    ("time", "0:00"),
    ("time", "2019年10月1日 15:01"),
    ("time", "2019-10-01 15:01:30"),
    ("time", "15:01~16:00"),
    ("time", "2019年10月1日 15:01 ~ 2019年10月2日 16:00"),
    ("date", "2019年10月1日"),
    ("date", "2019-10-01"),
    ("date", "2019/10/01"),
    ("date", "2019.10.01"),
    ("date", "2019-10"),
    ("date", "10-01"),
    ("date", "02-29"),
    ("date", "2019-10-01 15:01"),
    ("date", "2019年10月1日 15:01"),
    ("date", "2019-10-01~2019-10-07"),
    ("amount", "¥12.50"),
    ("amount", "$3"),
    ("amount", "€1234567890"),
    ("amount", "¥100元"),
    ("amount", "￥0.5"),
    ("phone_number", "+86-0766-66888866"),
    ("phone_number", "13800138000"),
    ("phone_number", "(0755)12345678"),
    ("car_number", "粤A12345"),
    ("car_number", "粤B1234学"),
    ("car_number", "AB12345"),
    ("name", "张三"),
    ("name", "欧阳" * 5),
    ("name", "John Smith"),
    ("name", "J" * 20),
    ("name", "李Lee"),
    ("phrase", "配送中"),
    ("phrase", "已" * 5),
    ("enum", "现货"),
]

INVALID = [
    ("thing", "a" * 21, "longer than 20"),
    ("thing", "中" * 21, "longer than 20"),
    ("thing", "😀" * 21, "longer than 20"),
    ("thing", "", "empty"),
    ("thing", "第一行\n第二行", "control"),
    ("thing", "tab\there", "control"),
    ("thing", "nul\x00", "control"),
    ("thing", "del\x7f", "control"),
    ("thing", "line\u2028sep", "control"),
    ("number", "1" * 33, "longer than 32"),
    ("number", "-1", "not a number"),
    ("number", "1.2.3", "not a number"),
    ("number", "１２", "not a number"),  # full-width digits
    ("number", "1e5", "not a number"),
    ("letter", "abc1", "letters only"),
    ("letter", "中文", "letters only"),
    ("letter", "a" * 33, "longer than 32"),
    ("symbol", "a", "symbols only"),
    ("symbol", "!!!!!!", "longer than 5"),
    ("symbol", " ", "symbols only"),
    ("character_string", "订单123", "only digits"),
    ("character_string", "A B", "only digits"),
    ("character_string", "x" * 33, "longer than 32"),
    ("time", "24:00", "not a time"),
    ("time", "15:60", "not a time"),
    ("time", "1501", "not a time"),
    ("time", "2019年10月1日", "not a time"),
    ("time", "15:01~16:00~17:00", "not a time"),
    ("time", "15:01\n", "control"),
    ("date", "2019-02-30", "not a date"),
    ("date", "2019-13-01", "not a date"),
    ("date", "2019/10-01", "not a date"),
    ("date", "15:01", "not a date"),
    ("date", "yesterday", "not a date"),
    ("amount", "12.50", "currency symbol"),
    ("amount", "100元", "currency symbol"),
    ("amount", "¥¥1", "not an amount"),
    ("amount", "¥12345678901", "more than 10 digits"),
    ("amount", "¥1,000", "not an amount"),
    ("amount", "¥-5", "not an amount"),
    ("phone_number", "1" * 18, "longer than 17"),
    ("phone_number", "138 0013 8000", "digits and symbols"),
    ("phone_number", "---", "digits and symbols"),
    ("car_number", "粤A1234567", "longer than 8"),
    ("car_number", "A粤12345", "Chinese only first"),
    ("car_number", "粤", "Chinese only first"),
    ("name", "欧阳" * 5 + "娜", "longer than 10"),
    ("name", "J" * 21, "longer than 20"),
    ("name", "李" + "L" * 10, "longer than 10"),  # mixed counts as Chinese
    ("name", "R2D2", "only Chinese"),
    ("phrase", "配送中了吗啊", "longer than 5"),
    ("phrase", "配送中!", "Chinese characters only"),
    ("phrase", "ok", "Chinese characters only"),
    ("enum", "缺货", "not an enum value"),
    ("nonsense", "x", "unknown keyword type"),
]


@pytest.mark.parametrize(("type_", "value"), VALID)
def test_valid_values_pass(type_: str, value: str) -> None:
    assert check(type_, value, ENUM) is None


@pytest.mark.parametrize(("type_", "value", "reason"), INVALID)
def test_invalid_values_fail_with_a_reason(type_: str, value: str, reason: str) -> None:
    assert reason in (check(type_, value, ENUM) or "")


def test_every_type_is_in_the_tables() -> None:
    assert {t for t, _ in VALID} == TYPES
    assert {t for t, _, _ in INVALID} == TYPES | {"nonsense"}


def test_control_characters_are_refused_for_every_type() -> None:
    for type_ in TYPES:
        assert check(type_, "现货\n", ENUM) == "control character or newline"


def test_enum_without_values_is_refused() -> None:
    assert check("enum", "现货") == "not an enum value"


@pytest.mark.parametrize(
    ("name", "type_"),
    [
        ("thing1", "thing"),
        ("character_string2", "character_string"),
        ("number01", "number"),
        ("phone_number12", "phone_number"),
        ("time4.DATA", "time"),
        ("phrase", "phrase"),
    ],
)
def test_keyword_type(name: str, type_: str) -> None:
    assert keyword_type(name) == type_


FITS = [
    ("thing", "无线蓝牙耳机", "无线蓝牙耳机"),
    ("thing", "一" * 25, "一" * 19 + "…"),
    ("thing", "a" * 18 + "   " + "b" * 5, "a" * 18 + "…"),  # no space before the ellipsis
    ("thing", " 第一行\n第二行\r\n ", "第一行 第二行"),
    ("thing", "\n\t", None),
    ("phrase", "配送中", "配送中"),
    ("phrase", "正在配送中途", None),
    ("phrase", "shipped", None),
    ("amount", 12.5, "¥12.50"),
    ("amount", 199, "¥199.00"),
    ("amount", Decimal("0.005"), "¥0.01"),
    ("amount", "¥3.00", "¥3.00"),
    ("amount", -1, None),
    ("amount", 12345678901, None),
    ("amount", float("nan"), None),
    ("amount", True, None),
    ("number", 42, "42"),
    ("number", 3.25, "3.25"),
    ("number", Decimal("1.500"), "1.5"),
    ("number", -3, None),
    ("time", dt.datetime(2024, 5, 1, 9, 5, 33), "2024年5月1日 09:05"),
    ("time", dt.time(23, 59), "23:59"),
    ("time", dt.date(2024, 5, 1), None),
    ("date", dt.datetime(2024, 5, 1, 9, 5), "2024年5月1日"),
    ("date", dt.date(2019, 10, 1), "2019年10月1日"),
    ("date", "2019-10-01", "2019-10-01"),
    ("character_string", "SO-1", "SO-1"),
    ("character_string", "x" * 33, None),  # an id is never cut
    ("enum", "预售", "预售"),
    ("enum", "缺货", None),
    ("letter", 5, None),
]


@pytest.mark.parametrize(("type_", "value", "expected"), FITS)
def test_fit(type_: str, value: object, expected: str | None) -> None:
    assert fit(type_, value, ENUM) == expected


def test_clean_replaces_control_runs_with_one_space() -> None:
    assert clean("a\r\n\tb\x00c\u2029d ") == "a b c d"


@given(st.text())
def test_fit_thing_output_always_passes(value: str) -> None:
    out = fit("thing", value)
    if clean(value):
        assert out is not None
        assert check("thing", out) is None
        assert len(out) <= 20
    else:
        assert out is None


@given(st.sampled_from(sorted(TYPES)), st.text(max_size=40))
def test_fit_of_any_text_passes_check_or_is_none(type_: str, value: str) -> None:
    out = fit(type_, value, ENUM)
    assert out is None or check(type_, out, ENUM) is None


@given(st.one_of(st.integers(), st.floats(), st.decimals()))
def test_fit_numbers_always_pass(value: int | float | Decimal) -> None:
    for type_ in ("amount", "number"):
        out = fit(type_, value)
        assert out is None or check(type_, out) is None
    if isinstance(value, int) and 0 <= value < 10**8:
        assert fit("amount", value) == f"¥{value}.00"


@given(st.datetimes(min_value=dt.datetime(1000, 1, 1)))
def test_fit_datetimes_always_pass(value: dt.datetime) -> None:
    for type_ in ("time", "date"):
        out = fit(type_, value)
        assert out is not None
        assert check(type_, out) is None


# --- template content -------------------------------------------------------------------------


def test_parse_content_in_order_with_labels() -> None:
    content = "订单号:{{character_string1.DATA}}\n状态：{{phrase2.DATA}}\n{{thing3.DATA}}"
    assert parse_content(content) == [
        TemplateKeyword("订单号", "character_string1", "character_string"),
        TemplateKeyword("状态", "phrase2", "phrase"),
        TemplateKeyword("", "thing3", "thing"),
    ]


def test_parse_content_two_on_a_line() -> None:
    content = "金额:{{amount1.DATA}} 时间:{{time2.DATA}}"
    assert [(k.label, k.type) for k in parse_content(content)] == [
        ("金额", "amount"),
        ("时间", "time"),
    ]


def test_parse_content_refuses_a_repeated_keyword() -> None:
    with pytest.raises(ValueError, match="thing1"):
        parse_content("a:{{thing1.DATA}}\nb:{{thing1.DATA}}")

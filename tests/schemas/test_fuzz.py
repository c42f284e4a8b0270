"""Fuzzing decode: every input either decodes or raises InputError with a known reason."""

from __future__ import annotations

import copy
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wxsub.errors import InputError, InputReason
from wxsub.schemas import KINDS, decode, decode_topic, encode

NAMES = sorted(KINDS)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# CJK, emoji (astral), Latin, controls, and the odd combining mark
TEXT = st.text(
    st.one_of(
        st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF),
        st.characters(min_codepoint=0x1F300, max_codepoint=0x1FAFF),
        st.characters(codec="utf-8"),
    ),
    max_size=40,
)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)

#: what decode/decode_topic may give (WRONG_KEY and INTERNAL are the stages')
_DECODE_REASONS = set(InputReason) - {InputReason.WRONG_KEY, InputReason.INTERNAL}


def outcome(name: str, raw: bytes, max_bytes: int = 64 * 1024) -> Any:
    """Decode; on success the record must round-trip through encode."""
    try:
        record = decode(name, raw, max_bytes)
    except InputError as exc:
        assert exc.reason in _DECODE_REASONS
        assert isinstance(exc.pointer, str)
        assert exc.pointer == "" or exc.pointer.startswith("/")
        return exc
    assert decode(name, encode(record)) == record
    return record


def examples(name: str) -> list[dict[str, Any]]:
    return copy.deepcopy(KINDS[name].schema["examples"])


@FUZZ
@given(name=st.sampled_from(NAMES), raw=st.binary(max_size=300))
def test_arbitrary_bytes(name: str, raw: bytes) -> None:
    outcome(name, raw)


@FUZZ
@given(name=st.sampled_from(NAMES), value=JSON)
def test_arbitrary_json(name: str, value: Any) -> None:
    outcome(name, orjson.dumps(value))


@FUZZ
@given(
    name=st.sampled_from(NAMES),
    data=st.data(),
    value=st.one_of(JSON, st.text(min_size=60, max_size=2000), st.just(None)),
)
def test_one_member_replaced_or_removed(name: str, data: st.DataObject, value: Any) -> None:
    doc = data.draw(st.sampled_from(examples(name)))
    field = data.draw(st.sampled_from(sorted(doc)))
    if value is None:
        del doc[field]
    else:
        doc[field] = value
    result = outcome(name, orjson.dumps(doc))
    if isinstance(result, InputError) and result.reason == "schema":
        assert result.pointer.split("/")[1] in (field, "")


@FUZZ
@given(name=st.sampled_from(NAMES), data=st.data(), text=TEXT.filter(bool))
def test_cjk_and_emoji_text_round_trips(name: str, data: st.DataObject, text: str) -> None:
    doc = data.draw(st.sampled_from(examples(name)))
    free_text = [f for f in ("title", "text", "location", "description", "carrier") if f in doc]
    for field in free_text:
        doc[field] = text
    result = outcome(name, orjson.dumps(doc))
    if not isinstance(result, InputError):
        for field in free_text:
            assert getattr(result, field) == text


@FUZZ
@given(name=st.sampled_from(NAMES), data=st.data(), junk=st.binary(min_size=1, max_size=4))
def test_invalid_utf8_is_bad_utf8(name: str, data: st.DataObject, junk: bytes) -> None:
    raw = orjson.dumps(data.draw(st.sampled_from(examples(name))))
    at = data.draw(st.integers(0, len(raw)))
    bad = raw[:at] + b"\xff" + junk + raw[at:]  # 0xff never occurs in UTF-8
    try:
        decode(name, bad)
    except InputError as exc:
        assert exc.reason == "bad_utf8"
    else:
        raise AssertionError("invalid UTF-8 decoded")


@FUZZ
@given(name=st.sampled_from(NAMES), data=st.data())
def test_truncated_events(name: str, data: st.DataObject) -> None:
    raw = orjson.dumps(data.draw(st.sampled_from(examples(name))))
    cut = data.draw(st.integers(0, len(raw) - 1))
    exc = outcome(name, raw[:cut])
    assert isinstance(exc, InputError) and exc.reason in ("bad_json", "bad_utf8", "schema")


@FUZZ
@given(topic=st.sampled_from(sorted({k.topic for k in KINDS.values()})), value=JSON)
def test_decode_topic_never_raises_anything_else(topic: str, value: Any) -> None:
    try:
        decode_topic(topic, orjson.dumps(value))
    except InputError as exc:
        assert exc.reason in _DECODE_REASONS


def test_huge_strings_are_cut_by_the_size_limit() -> None:
    doc = examples("order_status")[0] | {"openid": "o" * 100_000}
    exc = outcome("order_status", orjson.dumps(doc))
    assert isinstance(exc, InputError) and exc.reason == "oversized"
    exc = outcome("order_status", orjson.dumps(doc), max_bytes=1 << 20)
    assert isinstance(exc, InputError) and (exc.reason, exc.pointer) == ("schema", "/openid")

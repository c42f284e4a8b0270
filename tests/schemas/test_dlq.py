"""The dead-letter record keeps the original bytes exactly and says why and where it failed."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wxsub.dlq import HEADER_PREFIX, dead_letter, parse_dead_letter
from wxsub.errors import InputError
from wxsub.schemas import KINDS, decode

NOW = datetime(2024, 6, 1, 12, 0, 0, 123000, tzinfo=UTC)
HEADERS = st.lists(
    st.tuples(st.text(max_size=20).filter(lambda k: not k.startswith(HEADER_PREFIX)), st.binary()),
    max_size=4,
)


@settings(max_examples=200, deadline=None)
@given(
    raw=st.binary(max_size=2000),
    key=st.one_of(st.none(), st.binary(max_size=64)),
    headers=HEADERS,
    partition=st.integers(0, 2**31 - 1),
    offset=st.integers(0, 2**63 - 1),
    reason=st.sampled_from(["bad_json", "schema", "oversized"]),
    pointer=st.sampled_from(["", "/amount", "/items/0/title", "/a~1b"]),
    message=st.text(max_size=200),
)
def test_round_trip_keeps_bytes_and_context(
    raw: bytes,
    key: bytes | None,
    headers: list[tuple[str, bytes]],
    partition: int,
    offset: int,
    reason: str,
    pointer: str,
    message: str,
) -> None:
    error = InputError(reason, message, pointer)
    out_key, value, out_headers = dead_letter(
        raw, headers, "wxsub.order-status", partition, offset, error, "orders", key=key, now=NOW
    )
    assert value == raw and out_key == key
    assert out_headers[: len(headers)] == headers
    dead = parse_dead_letter(value, out_headers, out_key)
    assert dead.value == raw and dead.key == key and dead.headers == headers
    assert (dead.topic, dead.partition, dead.offset) == ("wxsub.order-status", partition, offset)
    assert (dead.reason, dead.pointer, dead.message) == (reason, pointer, message)
    assert (dead.stage, dead.error, dead.time, dead.attempt) == ("orders", "InputError", NOW, 1)
    topic, k, v, h = dead.original()
    assert (topic, k, v) == ("wxsub.order-status", key, raw)
    assert h[: len(headers)] == headers


def test_decode_failure_to_dlq() -> None:
    raw = b'{"type":"order_status","v":1,"amount":12.5}\xff'
    with pytest.raises(InputError) as info:
        decode("order_status", raw)
    key, value, headers = dead_letter(raw, None, "t", 0, 7, info.value, "publish")
    assert key is None and value == raw
    names = dict(headers)
    assert names["wxsub.dlq.reason"] == b"bad_utf8"
    assert names["wxsub.dlq.offset"] == b"7"
    assert names["wxsub.dlq.time"].endswith(b"Z")


def test_mapping_headers_and_other_exceptions() -> None:
    boom = RuntimeError("x" * 5000)
    _, value, headers = dead_letter(b"\x00raw", {"trace": b"abc"}, "t", 1, 2, boom, "decide")
    dead = parse_dead_letter(value, dict(headers))
    assert dead.headers == [("trace", b"abc")]
    assert (dead.reason, dead.error, dead.pointer) == ("internal", "RuntimeError", "")
    assert dead.message.startswith("RuntimeError: xxx") and len(dead.message) <= 1000


def test_republished_record_that_fails_again_counts_attempts() -> None:
    raw = orjson.dumps(KINDS["watch"].schema["examples"][0] | {"op": "toggle"})
    error = InputError("schema", "bad op", "/op")
    _, value, headers = dead_letter(raw, [("h", b"1")], "src", 0, 1, error, "products", now=NOW)
    topic, _key, value2, headers2 = parse_dead_letter(value, headers).original()
    assert value2 == raw
    _, value3, headers3 = dead_letter(value2, headers2, topic, 2, 9, error, "products", now=NOW)
    dead = parse_dead_letter(value3, headers3)
    assert dead.attempt == 2 and dead.value == raw and dead.headers == [("h", b"1")]
    assert (dead.partition, dead.offset) == (2, 9)
    assert sum(1 for k, _ in headers3 if k == "wxsub.dlq.reason") == 1


def test_not_a_dead_letter() -> None:
    with pytest.raises(ValueError, match="not a wxsub DLQ record"):
        parse_dead_letter(b"{}", [("x", b"y")])


def test_secrets_in_foreign_messages_are_masked() -> None:
    boom = OSError("GET https://api.weixin.qq.com/cgi-bin/token?appid=wx1&secret=S3CR3T failed")
    _, value, headers = dead_letter(b"x", None, "t", 0, 0, boom, "deliver")
    message = parse_dead_letter(value, headers).message
    assert "S3CR3T" not in message and "secret=***" in message

"""Contract tests: the JSON Schema files, their examples, the records and the documented rejects."""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jsonschema_rs
import orjson
import pytest

from wxsub.errors import InputError, InputReason
from wxsub.schemas import (
    KINDS,
    TOPICS,
    OrderStatusChanged,
    decode,
    decode_topic,
    encode,
    order_key,
    target_key,
    user_key,
)
from wxsub.schemas.records import user_keys
from wxsub.schemas.validation import load_schema, pointer

EXAMPLES = [
    pytest.param(name, i, id=f"{name}-{i}")
    for name, kind in KINDS.items()
    for i in range(len(kind.schema["examples"]))
]

#: what decode/decode_topic may give (WRONG_KEY and INTERNAL are the stages')
_DECODE_REASONS = set(InputReason) - {InputReason.WRONG_KEY, InputReason.INTERNAL}


def example(name: str, i: int = 0) -> dict[str, Any]:
    return copy.deepcopy(KINDS[name].schema["examples"][i])


def rejects(name: str, doc: Any) -> InputError:
    with pytest.raises(InputError) as info:
        decode(name, orjson.dumps(doc))
    assert info.value.reason in _DECODE_REASONS
    return info.value


# --- the schema files -----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(KINDS))
def test_schema_is_valid_draft_2020_12(name: str) -> None:
    schema = load_schema(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema_rs.meta.validate(schema)
    meta = schema["x-wxsub"]
    assert (meta["kind"], meta["topic"]) == (name, KINDS[name].topic)
    assert schema["properties"]["type"] == {
        "description": "The event type; must equal this schema's kind.",
        "const": name,
    }
    assert {"type", "v", "event_id", "occurred_at", "appid"} <= set(schema["required"])


def test_shared_definitions_are_identical_in_every_file() -> None:
    first, *rest = (load_schema(name)["$defs"] for name in sorted(KINDS))
    for defs in rest:
        assert defs == first


def test_every_string_is_bounded() -> None:
    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if node.get("type") == "string" and "enum" not in node and "const" not in node:
                pattern = node.get("pattern", "")
                bounded = "maxLength" in node or re.search(r"\{\d+(,\d+)?\}\$$", pattern)
                assert bounded, f"unbounded string at {path}"
            for key, value in node.items():
                walk(value, f"{path}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}/{i}")

    for name in KINDS:
        walk(load_schema(name), name)


def test_topics_group_the_kinds() -> None:
    assert dict(TOPICS) == {
        "order-status": ("order_status",),
        "logistics": ("logistics",),
        "products": ("product_price", "product_stock", "promotion"),
        "watches": ("watch",),
        "subscriptions": ("subscription",),
        "preferences": ("preference",),
        "opened": ("opened",),
    }


# --- examples and round trips ---------------------------------------------------------------


@pytest.mark.parametrize(("name", "i"), EXAMPLES)
def test_example_decodes_and_round_trips(name: str, i: int) -> None:
    raw = orjson.dumps(example(name, i))
    record = decode(name, raw)
    assert isinstance(record, KINDS[name].record)
    again = encode(record)
    assert KINDS[name].decode(again) == record
    assert jsonschema_rs.validator_for(load_schema(name)).is_valid(orjson.loads(again))
    assert decode_topic(KINDS[name].topic, raw) == record


@pytest.mark.parametrize(("name", "i"), EXAMPLES)
def test_encode_keeps_every_example_value(name: str, i: int) -> None:
    original = example(name, i)
    encoded = orjson.loads(encode(decode(name, orjson.dumps(original))))
    for field, value in original.items():
        if field in ("occurred_at", "starts_at", "ends_at"):
            assert datetime.fromisoformat(encoded[field]) == datetime.fromisoformat(value)
        else:
            assert encoded[field] == value, field


@pytest.mark.parametrize(("name", "i"), EXAMPLES)
def test_records_are_built_whole(name: str, i: int) -> None:
    """Builders that make a record with ``tuple.__new__`` (codec.py) give every field, in
    order: the same record as its class builds by keyword."""
    record = decode(name, orjson.dumps(example(name, i)))
    for r in (record, *getattr(record, "items", ())):
        assert len(r) == len(type(r)._fields)
        assert type(r)(**r._asdict()) == r


def test_record_fields_are_typed_values() -> None:
    record = decode("order_status", orjson.dumps(example("order_status")))
    assert isinstance(record, OrderStatusChanged)
    assert record.occurred_at == datetime(2024, 6, 1, 12, 15, 3, tzinfo=UTC)
    assert record.occurred_at.utcoffset() == timedelta(hours=8)
    assert record.amount == 25990 and type(record.amount) is int
    assert record.items[0].title == "云南小粒咖啡豆 500g ☕"
    assert record.items[0].price == 12995
    assert record.currency == "CNY"


def test_defaults_fill_absent_optionals() -> None:
    doc = example("order_status", 1)
    record = decode("order_status", orjson.dumps(doc))
    assert record.items == () and record.currency == "CNY" and record.store_id is None
    assert "store_id" not in orjson.loads(encode(record))


def test_integral_float_becomes_int() -> None:
    doc = example("order_status") | {"amount": 100.0}
    record = decode("order_status", orjson.dumps(doc))
    assert record.amount == 100 and type(record.amount) is int


def test_nanosecond_times_keep_microseconds() -> None:
    doc = example("preference") | {"occurred_at": "2024-06-04T11:20:00.123456789-05:30"}
    record = decode("preference", orjson.dumps(doc))
    tz = timezone(-timedelta(hours=5, minutes=30))
    assert record.occurred_at == datetime(2024, 6, 4, 11, 20, 0, 123456, tzinfo=tz)


def test_unknown_fields_are_tolerated_and_dropped() -> None:
    doc = example("order_status") | {"coupon": {"code": "X"}, "渠道": "直播"}
    doc["items"][0]["colour"] = "red"
    record = decode("order_status", orjson.dumps(doc))
    assert record == decode("order_status", orjson.dumps(example("order_status")))


# --- keys -----------------------------------------------------------------------------------


def test_keys() -> None:
    def key(name: str, i: int = 0) -> str:
        return KINDS[name].key(decode(name, orjson.dumps(example(name, i))))

    app, user = "wx1234567890abcdef", "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
    assert user_key(app, user) == f"{app}:{user}"
    assert user_keys(app, [user, "o2"]) == [user_key(app, user).encode(), f"{app}:o2".encode()]
    assert key("order_status") == key("logistics") == order_key(app, "20240601000123")
    assert key("order_status") == f"{app}:20240601000123"
    assert key("product_price") == key("watch", 0) == target_key(app, "sku", "sku-1001")
    assert key("product_price") == f"{app}:sku:sku-1001"
    assert key("promotion") == key("watch", 1) == f"{app}:store:store-88"
    assert key("subscription") == key("preference") == user_key(app, user)


# --- documented rejects ---------------------------------------------------------------------

LONG_CJK = "咖" * 129


def _set(path: str, value: Any) -> Any:
    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for p in parents:
            node = node[int(p)] if p.isdigit() else node[p]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value

    return mutate


_DELETE = object()

BAD = [
    # (kind, example index, mutation, reason, pointer)
    ("order_status", 0, _set("order_id", _DELETE), "schema", "/order_id"),
    ("order_status", 0, _set("amount", 12.5), "schema", "/amount"),
    ("order_status", 0, _set("amount", "259.90"), "schema", "/amount"),
    ("order_status", 0, _set("amount", -1), "schema", "/amount"),
    ("order_status", 0, _set("amount", 10**13), "schema", "/amount"),
    ("order_status", 0, _set("amount", True), "schema", "/amount"),
    ("order_status", 0, _set("status", "lost"), "schema", "/status"),
    ("order_status", 0, _set("currency", "rmb"), "schema", "/currency"),
    ("order_status", 0, _set("openid", "a:b"), "schema", "/openid"),
    ("order_status", 0, _set("appid", ""), "schema", "/appid"),
    ("order_status", 0, _set("order_id", "has space"), "schema", "/order_id"),
    ("order_status", 0, _set("items.0.quantity", 0), "schema", "/items/0/quantity"),
    ("order_status", 0, _set("items.0.title", LONG_CJK), "schema", "/items/0/title"),
    ("order_status", 0, _set("items.0.sku_id", _DELETE), "schema", "/items/0/sku_id"),
    ("order_status", 0, _set("items", [{}] * 101), "schema", "/items"),
    ("order_status", 0, _set("event_id", "x" * 129), "schema", "/event_id"),
    ("order_status", 0, _set("occurred_at", "2024-06-01T20:15:03"), "schema", "/occurred_at"),
    ("order_status", 0, _set("occurred_at", "2024-06-01 20:15:03Z"), "schema", "/occurred_at"),
    ("order_status", 0, _set("occurred_at", "2024-02-30T10:00:00Z"), "schema", "/occurred_at"),
    ("order_status", 0, _set("occurred_at", "2024-06-01T23:59:60Z"), "schema", "/occurred_at"),
    ("order_status", 0, _set("occurred_at", "0001-01-01T00:00:00Z"), "schema", "/occurred_at"),
    ("order_status", 0, _set("occurred_at", 1717244103), "schema", "/occurred_at"),
    ("order_status", 0, _set("type", "logistics"), "schema", "/type"),
    ("order_status", 0, _set("type", _DELETE), "schema", "/type"),
    ("order_status", 0, _set("v", _DELETE), "schema", "/v"),
    ("order_status", 0, _set("v", "1"), "schema", "/v"),
    ("order_status", 0, _set("v", 2), "unknown_version", "/v"),
    ("order_status", 0, _set("v", 0), "unknown_version", "/v"),
    ("order_status", 0, _set("v", 1.5), "unknown_version", "/v"),
    ("logistics", 0, _set("state", "lost"), "schema", "/state"),
    ("logistics", 0, _set("text", "派" * 501), "schema", "/text"),
    ("logistics", 0, _set("waybill", _DELETE), "schema", "/waybill"),
    ("logistics", 0, _set("carrier", ""), "schema", "/carrier"),
    ("product_price", 0, _set("new_price", -1), "schema", "/new_price"),
    ("product_price", 0, _set("title", _DELETE), "schema", "/title"),
    ("product_stock", 0, _set("new_stock", 1.5), "schema", "/new_stock"),
    ("watch", 0, _set("op", "toggle"), "schema", "/op"),
    ("watch", 0, _set("target.type", "brand"), "schema", "/target/type"),
    ("watch", 0, _set("target.id", _DELETE), "schema", "/target/id"),
    ("watch", 1, _set("target.type", "sku"), "schema", "/target/type"),
    ("watch", 1, _set("target_price", 100), "schema", "/target_price"),
    ("watch", 0, _set("kind", "restock"), "schema", "/target_price"),
    ("promotion", 0, _set("ends_at", "2024-06-15T00:00:00+08:00"), "schema", "/ends_at"),
    ("promotion", 0, _set("ends_at", "2024-06-16T00:00:00+08:00"), "schema", "/ends_at"),
    ("promotion", 0, _set("target.type", "sku"), "schema", "/target/type"),
    ("promotion", 0, _set("starts_at", "2024-13-01T00:00:00Z"), "schema", "/starts_at"),
    ("subscription", 0, _set("status", _DELETE), "schema", "/status"),
    ("subscription", 0, _set("status", "ban"), "schema", "/status"),
    ("subscription", 0, _set("event", "unsubscribe"), "schema", "/event"),
    ("subscription", 1, _set("msgid", _DELETE), "schema", "/msgid"),
    ("subscription", 1, _set("msgid", 3395159288267931652), "schema", "/msgid"),
    ("subscription", 1, _set("error_code", _DELETE), "schema", "/error_code"),
    ("subscription", 1, _set("template_id", "t id"), "schema", "/template_id"),
    ("preference", 0, _set("kind", "spam"), "schema", "/kind"),
    ("preference", 0, _set("op", _DELETE), "schema", "/op"),
]


@pytest.mark.parametrize(
    ("name", "i", "mutate", "reason", "where"),
    [pytest.param(*case, id=f"{case[0]}-{case[4]}-{n}") for n, case in enumerate(BAD)],
)
def test_documented_rejects(name: str, i: int, mutate: Any, reason: str, where: str) -> None:
    doc = example(name, i)
    mutate(doc)
    error = rejects(name, doc)
    assert (error.reason, error.pointer) == (reason, where), error.detail
    assert error.detail


def test_pointer_escapes_members() -> None:
    assert pointer(["a/b", "c~d", 0]) == "/a~1b/c~0d/0"
    assert pointer([]) == ""


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "bad_json"),
        (b"{", "bad_json"),
        (b'{"a":1} x', "bad_json"),
        (b"NaN", "bad_json"),
        (b"\xef\xbb\xbf{}", "bad_json"),
        (b'{"title": "\xe5\x92"}', "bad_utf8"),
        (b"\xff\xfe{}", "bad_utf8"),
        (b'"\xed\xa0\x80"', "bad_utf8"),  # an encoded surrogate
        (b"[]", "schema"),
        (b"null", "schema"),
        (b'"order_status"', "schema"),
        (b"42", "schema"),
    ],
)
def test_byte_level_rejects(raw: bytes, reason: str) -> None:
    with pytest.raises(InputError) as info:
        decode("order_status", raw)
    assert info.value.reason == reason
    assert info.value.pointer == ""


def test_oversized_is_checked_before_parsing() -> None:
    raw = orjson.dumps(example("order_status"))
    assert decode("order_status", raw, max_bytes=len(raw))
    with pytest.raises(InputError) as info:
        decode("order_status", raw + b" ", max_bytes=len(raw))
    assert info.value.reason == "oversized"
    with pytest.raises(InputError) as info:
        decode("order_status", b"{" * 100, max_bytes=10)  # not JSON, but too long first
    assert info.value.reason == "oversized"


def test_decode_topic_dispatches_on_type() -> None:
    for name in ("product_price", "product_stock", "promotion"):
        record = decode_topic("products", orjson.dumps(example(name)))
        assert type(record) is KINDS[name].record
    for doc, shown in [
        (example("order_status"), "'order_status'"),
        (example("product_price") | {"type": None}, "None"),
        ({k: v for k, v in example("product_price").items() if k != "type"}, "missing"),
    ]:
        with pytest.raises(InputError) as info:
            decode_topic("products", orjson.dumps(doc))
        assert (info.value.reason, info.value.pointer) == ("unknown_type", "/type")
        assert shown in info.value.detail


def test_unknown_version_wins_over_schema_errors() -> None:
    with pytest.raises(InputError) as info:
        decode_topic("products", b'{"v": 2, "type": "product_price"}')
    assert info.value.reason == "unknown_version"


def test_unknown_kind_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        decode("nope", b"{}")


def test_error_messages_are_short() -> None:
    doc = example("logistics") | {"text": "长" * 20000}
    error = rejects("logistics", doc)
    assert len(error.detail) <= 300 and error.pointer == "/text"


def test_readme_examples_are_valid_events() -> None:
    text = (Path(__file__).parents[2] / "wxsub/schemas/README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```json\n(.*?)\n```", text, re.DOTALL)
    kinds = set()
    for block in blocks:
        doc = orjson.loads(block)
        record = decode(doc["type"], block.encode())
        assert KINDS[doc["type"]].key(record)
        kinds.add(doc["type"])
    assert kinds == set(KINDS)

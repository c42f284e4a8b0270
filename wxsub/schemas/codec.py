"""Decoding and encoding events: bytes -> validated record -> bytes.

The one entry point for ingestion is :func:`decode` (one kind) or :func:`decode_topic` (a topic
that carries several kinds, like ``products``). Either returns a record or raises
:class:`~wxsub.errors.InputError` whose ``reason`` is an :class:`~wxsub.errors.InputReason`:

* ``oversized`` - more than ``max_bytes`` bytes (checked before parsing)
* ``bad_utf8`` - the bytes are not UTF-8
* ``bad_json`` - not JSON (orjson's message and byte position)
* ``unknown_version`` - ``v`` is a number other than the major version this build reads
* ``unknown_type`` - on a multi-kind topic, ``type`` names no kind published there
* ``schema`` - the JSON Schema (or a check it cannot express, such as a real calendar date)
  rejects it; ``pointer`` is the JSON pointer of the offending (or missing) member.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

import orjson

from wxsub.errors import InputError, InputReason
from wxsub.schemas.records import (
    LogisticsUpdated,
    MessageOpened,
    OrderItem,
    OrderStatusChanged,
    PreferenceChanged,
    ProductPriceChanged,
    ProductStockChanged,
    Promotion,
    Record,
    SubscriptionEvent,
    Target,
    Watch,
)
from wxsub.schemas.validation import load_schema, schema_error, shorten, validator

__all__ = [
    "DEFAULT_MAX_BYTES",
    "KINDS",
    "LOGISTICS",
    "OPENED",
    "ORDER_STATUS",
    "PREFERENCE",
    "PRODUCT_PRICE",
    "PRODUCT_STOCK",
    "PROMOTION",
    "SUBSCRIPTION",
    "TOPICS",
    "VERSION",
    "WATCH",
    "Kind",
    "decode",
    "decode_topic",
    "encode",
    "parse",
]

#: the major schema version this build reads and writes
VERSION = 1
#: the largest event accepted unless ``worker.max_event_bytes`` says otherwise (its default)
DEFAULT_MAX_BYTES: int = 64 * 1024


class _Keyed(Protocol):
    @property
    def key(self) -> str: ...


R = TypeVar("R", bound=_Keyed)


@dataclass(frozen=True, eq=False)
class Kind(Generic[R]):
    """One event kind: its name (= the ``type`` field), schema, record, topic and key."""

    name: str
    event: str
    topic: str
    record: type[R]
    build: Callable[[dict[str, Any]], R]

    @property
    def schema(self) -> Mapping[str, Any]:
        return load_schema(self.name)

    def key(self, record: R) -> str:
        """The Kafka key (UTF-8 encode it to produce)."""
        return record.key

    def decode(self, raw: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> R:
        return self.from_doc(parse(raw, max_bytes))

    def from_doc(self, doc: dict[str, Any]) -> R:
        """Validate an already-parsed event (see :func:`parse`) and build its record."""
        if not self._is_valid(doc):
            raise self._error(doc)
        return self.build(doc)

    @functools.cached_property
    def _is_valid(self) -> Callable[[Any], bool]:
        """The compiled validator's ``is_valid``, found once per kind (compiled on first use,
        as :func:`~wxsub.schemas.validation.validator`; not at import)."""
        is_valid: Callable[[Any], bool] = validator(self.name).is_valid
        return is_valid

    def _error(self, doc: dict[str, Any]) -> InputError:
        if doc.get("type") != self.name:  # say so first: every other error would follow from it
            shown = shorten(repr(doc["type"])) if "type" in doc else "missing"
            return InputError(InputReason.SCHEMA, f"type {shown} is not {self.name!r}", "/type")
        return schema_error(self.name, doc) or InputError(InputReason.SCHEMA, "invalid")


def parse(raw: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, Any]:
    """Size check, JSON parse, object check and major-version check; no schema yet."""
    if len(raw) > max_bytes:
        raise InputError(InputReason.OVERSIZED, f"{len(raw)} bytes, the limit is {max_bytes}")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _json_error(raw, exc) from None
    if type(doc) is not dict:
        raise InputError(InputReason.SCHEMA, f"an event is a JSON object, not {_json_type(doc)}")
    version = doc.get("v")
    if type(version) in (int, float) and version != VERSION:
        raise InputError(
            InputReason.UNKNOWN_VERSION,
            f"major version {version!r} is not supported (this build reads {VERSION})",
            "/v",
        )
    return doc


def decode(kind: str, raw: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> Record:
    """Decode one event of ``kind`` (a key of :data:`KINDS`), or raise InputError."""
    try:
        k = KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown kind {kind!r}; one of {', '.join(KINDS)}") from None
    return k.decode(raw, max_bytes)  # type: ignore[no-any-return]


def decode_topic(topic: str, raw: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> Record:
    """Decode an event from a logical topic, choosing the kind by its ``type`` field."""
    names = TOPICS[topic]
    doc = parse(raw, max_bytes)
    name = doc.get("type")
    if name not in names:
        shown = shorten(repr(name)) if "type" in doc else "missing"
        raise InputError(
            InputReason.UNKNOWN_TYPE,
            f"type {shown} is not published on {topic} (one of {', '.join(names)})",
            "/type",
        )
    return KINDS[name].from_doc(doc)  # type: ignore[no-any-return]


def encode(record: Record) -> bytes:
    """The canonical JSON of a record (``type`` and ``v`` first, absent optionals left out)."""
    doc: dict[str, Any] = {"type": _KIND_OF[type(record)], "v": VERSION}
    doc.update(_plain(record))
    return orjson.dumps(doc)


# --- builders: the schema has been checked, so only what it cannot express is checked here ----


def _time(doc: dict[str, Any], name: str) -> datetime:
    try:
        return datetime.fromisoformat(doc[name])
    except ValueError as exc:
        raise InputError(
            InputReason.SCHEMA, f"{doc[name]!r} is not a valid time: {exc}", f"/{name}"
        ) from None


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _target(doc: dict[str, Any]) -> Target:
    return Target(doc["type"], doc["id"])


# ``tuple.__new__(Record, (every field))`` is the record a NamedTuple's own ``__new__`` builds
# (``_tuple_new(cls, (args))``) without that Python frame: half the cost of building an order
# event (3.3 k -> 1.7 k instructions, bench/RESULTS.md "Session 8"). Only where every field is
# given, in order (``test_contracts`` compares the records with ones built by keyword).
_tuple_new = tuple.__new__


def _item(doc: dict[str, Any]) -> OrderItem:
    price = doc.get("price")
    return _tuple_new(  # type: ignore[no-any-return]
        OrderItem, (doc["sku_id"], doc["title"], int(doc["quantity"]),
                    None if price is None else int(price))
    )  # fmt: skip


def _order_status(d: dict[str, Any]) -> OrderStatusChanged:
    items = tuple([_item(i) for i in d["items"]]) if "items" in d else ()
    return _tuple_new(  # type: ignore[no-any-return]
        OrderStatusChanged, (
            d["event_id"], _time(d, "occurred_at"), d["appid"], d["openid"], d["order_id"],
            d["status"], int(d["amount"]), d.get("currency", "CNY"), d.get("previous_status"),
            d.get("store_id"), items, d.get("transaction_id"), d.get("pay_amount"),
            _time(d, "paid_at") if "paid_at" in d else None,
        )
    )  # fmt: skip


def _logistics(d: dict[str, Any]) -> LogisticsUpdated:
    return LogisticsUpdated(
        d["event_id"], _time(d, "occurred_at"), d["appid"], d["order_id"], d["waybill"],
        d["carrier"], d["state"], d.get("openid"), d.get("location"), d.get("text"),
    )  # fmt: skip


def _product_price(d: dict[str, Any]) -> ProductPriceChanged:
    return ProductPriceChanged(
        d["event_id"], _time(d, "occurred_at"), d["appid"], d["sku_id"], d["title"],
        int(d["old_price"]), int(d["new_price"]), d.get("currency", "CNY"), d.get("store_id"),
        d.get("category_id"),
    )  # fmt: skip


def _product_stock(d: dict[str, Any]) -> ProductStockChanged:
    return ProductStockChanged(
        d["event_id"], _time(d, "occurred_at"), d["appid"], d["sku_id"], d["title"],
        int(d["old_stock"]), int(d["new_stock"]), d.get("store_id"), d.get("category_id"),
    )  # fmt: skip


def _watch(d: dict[str, Any]) -> Watch:
    return Watch(
        d["event_id"], _time(d, "occurred_at"), d["appid"], d["openid"], d["op"],
        _target(d["target"]), d["kind"], _opt_int(d.get("target_price")),
    )  # fmt: skip


def _promotion(d: dict[str, Any]) -> Promotion:
    starts, ends = _time(d, "starts_at"), _time(d, "ends_at")
    if ends <= starts:
        raise InputError(InputReason.SCHEMA, "ends_at must be after starts_at", "/ends_at")
    return Promotion(
        d["event_id"], _time(d, "occurred_at"), d["appid"], d["promotion_id"], d["title"],
        starts, ends, _target(d["target"]), d.get("discount"), d.get("description"),
    )  # fmt: skip


def _subscription(d: dict[str, Any]) -> SubscriptionEvent:
    return SubscriptionEvent(
        d["event_id"], _time(d, "occurred_at"), d["appid"], d["openid"], d["event"],
        d["template_id"], int(d["create_time"]), d.get("status"), _opt_int(d.get("popup_scene")),
        d.get("msgid"), _opt_int(d.get("error_code")), d.get("error_status"),
    )  # fmt: skip


def _preference(d: dict[str, Any]) -> PreferenceChanged:
    return PreferenceChanged(
        d["event_id"], _time(d, "occurred_at"), d["appid"], d["openid"], d["op"], d["kind"]
    )


def _opened(d: dict[str, Any]) -> MessageOpened:
    return MessageOpened(
        d["event_id"], _time(d, "occurred_at"), d["appid"], d["openid"], d["ref"],
        _opt_int(d.get("scene")),
    )  # fmt: skip


# --- the registry ---------------------------------------------------------------------------

ORDER_STATUS = Kind(
    "order_status", "OrderStatusChanged", "order-status", OrderStatusChanged, _order_status
)
LOGISTICS = Kind("logistics", "LogisticsUpdated", "logistics", LogisticsUpdated, _logistics)
PRODUCT_PRICE = Kind(
    "product_price", "ProductPriceChanged", "products", ProductPriceChanged, _product_price
)
PRODUCT_STOCK = Kind(
    "product_stock", "ProductStockChanged", "products", ProductStockChanged, _product_stock
)
WATCH = Kind("watch", "Watch", "watches", Watch, _watch)
PROMOTION = Kind("promotion", "Promotion", "products", Promotion, _promotion)
SUBSCRIPTION = Kind(
    "subscription", "SubscriptionEvent", "subscriptions", SubscriptionEvent, _subscription
)
PREFERENCE = Kind("preference", "PreferenceChanged", "preferences", PreferenceChanged, _preference)
OPENED = Kind("opened", "MessageOpened", "opened", MessageOpened, _opened)

#: kind name (the events' ``type`` field) -> Kind
KINDS: Mapping[str, Kind[Any]] = {
    k.name: k
    for k in (ORDER_STATUS, LOGISTICS, PRODUCT_PRICE, PRODUCT_STOCK, WATCH, PROMOTION,
              SUBSCRIPTION, PREFERENCE, OPENED)
}  # fmt: skip

#: logical topic name (``KafkaSettings.topic(name)`` gives the real one) -> kinds published there
TOPICS: Mapping[str, tuple[str, ...]] = {
    topic: tuple(k.name for k in KINDS.values() if k.topic == topic)
    for topic in dict.fromkeys(k.topic for k in KINDS.values())
}

_KIND_OF: dict[type, str] = {k.record: k.name for k in KINDS.values()}


# --- helpers --------------------------------------------------------------------------------


def _json_error(raw: bytes, exc: orjson.JSONDecodeError) -> InputError:
    try:
        bytes(raw).decode("utf-8")
    except UnicodeDecodeError as bad:
        return InputError(InputReason.BAD_UTF8, f"invalid UTF-8 at byte {bad.start}: {bad.reason}")
    return InputError(InputReason.BAD_JSON, f"{exc.msg} at byte {exc.pos}")


def _json_type(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def _plain(value: Any) -> Any:
    """A record (or tuple of records) as JSON-ready dicts/lists; None members are left out."""
    if isinstance(value, tuple):
        fields = getattr(value, "_fields", None)
        if fields is not None:
            return {f: _plain(v) for f, v in zip(fields, value, strict=True) if v is not None}
        return [_plain(v) for v in value]
    return value

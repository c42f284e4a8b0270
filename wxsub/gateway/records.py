"""Push message -> SubscriptionEvent records (and a card failure event -> its ``card-events``
record): the one place that knows the records' shape.

Event ids are deterministic, so a WeChat retry produced twice (two gateway replicas, or a
timeout after Kafka did take the write) is recognised downstream by the subscriptions stage.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import orjson

from wxsub.errors import InputError, PushRejected, RejectReason
from wxsub.schemas import SUBSCRIPTION, SubscriptionEvent, encode
from wxsub.wechat.push_parse import (
    CHANGE_EVENT,
    POPUP_EVENT,
    SENT_EVENT,
    CardFailure,
    PopupItem,
    PushItem,
    PushMessage,
    SentItem,
)

__all__ = [
    "card_record",
    "dedupe_key",
    "push_event_id",
    "to_records",
    "to_records_keeping_invalid",
    "to_subscription_events",
]


def _item_fingerprint(item: PushItem) -> tuple[str, ...]:
    """What tells two items of one user and second apart (two receipts differ by MsgID)."""
    if isinstance(item, SentItem):
        return (item.template_id, item.msg_id, str(item.error_code))
    return (item.template_id, item.status)


def push_event_id(appid: str, message: PushMessage, index: int) -> str:
    """blake2b-128 hex of appid, FromUserName, CreateTime, Event, item index and item content."""
    parts = (
        appid,
        message.from_user,
        str(message.create_time),
        message.event,
        str(index),
        *_item_fingerprint(message.items[index]),
    )
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16).hexdigest()


def _card_fingerprint(card: CardFailure | None) -> tuple[str, ...]:
    if card is None:
        return ()
    return (card.notify_code, str(card.notify_type), str(card.card_status), str(card.fail_ret))


def dedupe_key(appid: str, message: PushMessage) -> tuple[str, ...]:
    """The retry identity: FromUserName + CreateTime + Event, plus the items' content (or the
    card event's code, type, state and fail_ret), so two different pushes in the same second
    (two send receipts) are not mistaken for a retry."""
    items = ("\x1e".join(_item_fingerprint(i)) for i in message.items)
    head = (appid, message.from_user, str(message.create_time), message.event)
    return (*head, *items, *_card_fingerprint(message.card))


def card_record(appid: str, message: PushMessage) -> tuple[bytes, bytes]:
    """``(key, value)`` of a card failure event for ``card-events``, keyed by user
    (``appid:openid``, as the card stage's ``card-ops``); ``agents.cards.parse_card_event``
    reads it. ``event_id`` is deterministic (a retry produced twice has the same one)."""
    card = message.card
    if card is None:
        raise ValueError("not a card event")
    event_id = hashlib.blake2b(
        "\x1f".join(dedupe_key(appid, message)).encode(), digest_size=16
    ).hexdigest()
    occurred = datetime.fromtimestamp(message.create_time, UTC)
    doc = {
        "type": "card_event",
        "v": 1,
        "event_id": event_id,
        "occurred_at": occurred.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "create_time": message.create_time,
        "appid": appid,
        "openid": card.openid,
        "notify_code": card.notify_code,
        "notify_type": card.notify_type,
        "card_status": card.card_status,
        "fail_ret": card.fail_ret,
        "fail_msg": card.fail_msg,
    }
    return f"{appid}:{card.openid}".encode(), orjson.dumps(doc)


_EVENTS = {POPUP_EVENT: "popup", CHANGE_EVENT: "change", SENT_EVENT: "sent"}


def _record(appid: str, message: PushMessage, index: int) -> dict[str, Any]:
    """The SubscriptionEvent document (schemas/json/subscription.schema.json) of one item."""
    item = message.items[index]
    occurred = datetime.fromtimestamp(message.create_time, UTC)
    doc: dict[str, Any] = {
        "type": "subscription",
        "v": 1,
        "event_id": push_event_id(appid, message, index),
        "occurred_at": occurred.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "appid": appid,
        "openid": message.from_user,
        "event": _EVENTS[message.event],
        "template_id": item.template_id,
        "create_time": message.create_time,
    }
    if isinstance(item, SentItem):
        doc.update(msgid=item.msg_id, error_code=item.error_code, error_status=item.error_status)
    else:
        doc["status"] = item.status
    if isinstance(item, PopupItem) and item.popup_scene.isdigit():
        doc["popup_scene"] = int(item.popup_scene)
    return doc


def to_subscription_events(appid: str, message: PushMessage) -> list[SubscriptionEvent]:
    """One validated SubscriptionEvent per list item; PushRejected(INVALID_EVENT) if an item
    does not fit the schema (WeChat then retries, and the log says why)."""
    try:
        return [
            SUBSCRIPTION.from_doc(_record(appid, message, i)) for i in range(len(message.items))
        ]
    except InputError as exc:
        raise PushRejected(RejectReason.INVALID_EVENT, str(exc)) from None


def to_records(appid: str, message: PushMessage) -> list[tuple[bytes, bytes]]:
    """``(key, value)`` per list item, keyed by user (``appid:openid``), canonical encoding."""
    return [(e.key.encode(), encode(e)) for e in to_subscription_events(appid, message)]


def to_records_keeping_invalid(
    appid: str, message: PushMessage
) -> tuple[list[tuple[bytes, bytes]], int]:
    """Like :func:`to_records`, but an item that breaks the schema is kept as its raw document
    (same key), so it is durable and the worker puts it in the DLQ with the reason, instead of
    being refused here and lost once WeChat stops retrying. Returns (records, invalid count)."""
    key = f"{appid}:{message.from_user}".encode()
    records: list[tuple[bytes, bytes]] = []
    invalid = 0
    for i in range(len(message.items)):
        doc = _record(appid, message, i)
        try:
            records.append((key, encode(SUBSCRIPTION.from_doc(doc))))
        except InputError:
            records.append((key, orjson.dumps(doc)))
            invalid += 1
    return records, invalid

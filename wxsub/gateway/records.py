"""Push message -> SubscriptionEvent records: the one place that knows the record's shape.

Event ids are deterministic, so a WeChat retry produced twice (two gateway replicas, or a
timeout after Kafka did take the write) is recognised downstream by the subscriptions stage.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from wxsub.schemas.internal import user_key
from wxsub.wechat.push_parse import ChangeItem, PopupItem, PushItem, PushMessage, SentItem

__all__ = ["dedupe_key", "push_event_id", "to_records"]


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


def dedupe_key(appid: str, message: PushMessage) -> tuple[str, ...]:
    """The retry identity: FromUserName + CreateTime + Event, plus the items' content, so
    two different pushes in the same second (two send receipts) are not mistaken for a retry."""
    items = ("\x1e".join(_item_fingerprint(i)) for i in message.items)
    return (appid, message.from_user, str(message.create_time), message.event, *items)


def _record(appid: str, message: PushMessage, index: int, received_at_ms: int) -> dict[str, Any]:
    item = message.items[index]
    doc: dict[str, Any] = {
        "event_id": push_event_id(appid, message, index),
        "appid": appid,
        "openid": message.from_user,
        "event": message.event,
        "template_id": item.template_id,
        "occurred_at": message.create_time * 1000,
        "received_at": received_at_ms,
    }
    if isinstance(item, PopupItem | ChangeItem):
        doc["status"] = item.status
    if isinstance(item, PopupItem):
        doc["popup_scene"] = item.popup_scene
    if isinstance(item, SentItem):
        doc.update(msgid=item.msg_id, errcode=item.error_code, error_status=item.error_status)
    return doc


def to_records(appid: str, message: PushMessage, received_at_ms: int) -> list[tuple[bytes, bytes]]:
    """``(key, value)`` per list item, keyed by user (``appid:openid``)."""
    key = user_key(appid, message.from_user).encode()
    return [
        (key, orjson.dumps(_record(appid, message, i, received_at_ms)))
        for i in range(len(message.items))
    ]

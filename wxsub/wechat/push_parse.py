"""Parse WeChat message pushes (XML or JSON) into plain typed objects.

Two steps, so the gateway can decrypt in between: :func:`parse_document` turns a body into a
plain dict (XML through defusedxml with DTDs forbidden, so no entity expansion and no external
entities; JSON through orjson), and :func:`read_message` turns that dict into a
:class:`PushMessage`. Subscription events carry a list of items; WeChat sends ``List`` as one
object for one item and as several (XML) or an array (JSON) for more. A service card's failure
event (``notify_service_msg_send_result``) has flat fields and becomes :class:`CardFailure`.
Errors are :class:`PushRejected` with reason ``malformed`` or ``forbidden_xml``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any
from xml.etree.ElementTree import Element, ParseError

import defusedxml
import defusedxml.ElementTree as SafeET
import orjson

from wxsub.errors import PushRejected, RejectReason
from wxsub.wechat.card_types import strip_code_prefix

__all__ = [
    "CARD_EVENT",
    "CHANGE_EVENT",
    "POPUP_EVENT",
    "SENT_EVENT",
    "SUBSCRIPTION_EVENTS",
    "CardFailure",
    "ChangeItem",
    "PopupItem",
    "PushItem",
    "PushMessage",
    "SentItem",
    "parse_document",
    "read_message",
]

POPUP_EVENT = "subscribe_msg_popup_event"
CHANGE_EVENT = "subscribe_msg_change_event"
SENT_EVENT = "subscribe_msg_sent_event"
_WRAPPERS = {
    POPUP_EVENT: "SubscribeMsgPopupEvent",
    CHANGE_EVENT: "SubscribeMsgChangeEvent",
    SENT_EVENT: "SubscribeMsgSentEvent",
}
SUBSCRIPTION_EVENTS = frozenset(_WRAPPERS)
#: a service card's delivery failed (docs/service-cards.md): flat fields, no ``List``
CARD_EVENT = "notify_service_msg_send_result"
_MAX_DEPTH = 4  # xml > wrapper > List > field
_MAX_FIELD = 512


@dataclass(frozen=True, slots=True)
class PopupItem:
    """One template in a popup event: the user answered ``accept`` or ``reject``."""

    template_id: str
    status: str
    popup_scene: str = ""


@dataclass(frozen=True, slots=True)
class ChangeItem:
    """One template in a settings-menu change event."""

    template_id: str
    status: str


@dataclass(frozen=True, slots=True)
class SentItem:
    """The final delivery result of one send. ``msg_id`` kept as a string (exceeds 2**53)."""

    template_id: str
    msg_id: str
    error_code: int
    error_status: str = ""


PushItem = PopupItem | ChangeItem | SentItem


@dataclass(frozen=True, slots=True)
class CardFailure:
    """A ``notify_service_msg_send_result`` event: WeChat could not show a card update.
    ``notify_code`` is kept as sent (it may carry a ``p1.`` prefix; the card stage strips it)."""

    openid: str
    notify_code: str
    notify_type: int
    card_status: int
    fail_ret: int
    fail_msg: str = ""


@dataclass(frozen=True, slots=True)
class PushMessage:
    """A decoded push. ``items`` is empty for events other than the three subscription ones."""

    to_user: str
    from_user: str
    create_time: int
    msg_type: str
    event: str
    items: tuple[PushItem, ...] = ()
    card: CardFailure | None = None

    @property
    def is_subscription(self) -> bool:
        return self.msg_type == "event" and self.event in SUBSCRIPTION_EVENTS

    @property
    def is_card(self) -> bool:
        return self.msg_type == "event" and self.event == CARD_EVENT


def parse_document(body: bytes) -> dict[str, Any]:
    """XML (``<xml>...``) or JSON (``{...}``) body -> plain dict; the format is sniffed."""
    head = body.lstrip()[:1]
    if head == b"{":
        return _parse_json(body)
    if head == b"<":
        return _parse_xml(body)
    raise PushRejected(RejectReason.MALFORMED, "body is neither XML nor JSON")


def read_message(doc: Mapping[str, Any]) -> PushMessage:
    """The typed message in a parsed (and, in safe mode, decrypted) document."""
    msg_type = _text(doc, "MsgType", required=False)
    event = _text(doc, "Event", required=False)
    message = PushMessage(
        to_user=_text(doc, "ToUserName"),
        from_user=_text(doc, "FromUserName"),
        create_time=_int(doc, "CreateTime"),
        msg_type=msg_type,
        event=event,
    )
    if message.is_card:
        return replace(message, card=_card(doc, message.from_user))
    if not message.is_subscription:
        return message
    items = tuple(_item(event, raw) for raw in _raw_items(doc, event))
    if not items:
        raise PushRejected(RejectReason.MALFORMED, f"{event} without items")
    return replace(message, items=items)


# --- documents --------------------------------------------------------------------------------


def _parse_json(body: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise PushRejected(RejectReason.MALFORMED, "invalid JSON") from None
    if not isinstance(doc, dict):
        raise PushRejected(RejectReason.MALFORMED, "JSON body is not an object")
    return doc


def _parse_xml(body: bytes) -> dict[str, Any]:
    try:
        root = SafeET.fromstring(body, forbid_dtd=True)
    except defusedxml.DefusedXmlException as exc:
        raise PushRejected(RejectReason.FORBIDDEN_XML, type(exc).__name__) from None
    except ParseError:
        raise PushRejected(RejectReason.MALFORMED, "invalid XML") from None
    value = _element(root, 1)
    if not isinstance(value, dict):
        raise PushRejected(RejectReason.MALFORMED, "XML root has no fields")
    return value


def _element(el: Element, depth: int) -> str | dict[str, Any]:
    """Leaf -> its text; otherwise a dict of children, repeated tags collected into a list."""
    if len(el) == 0:
        return el.text or ""
    if depth >= _MAX_DEPTH:
        raise PushRejected(RejectReason.MALFORMED, "XML nested too deep")
    out: dict[str, Any] = {}
    for child in el:
        value = _element(child, depth + 1)
        if child.tag not in out:
            out[child.tag] = value
        elif isinstance(out[child.tag], list):
            out[child.tag].append(value)
        else:
            out[child.tag] = [out[child.tag], value]
    return out


# --- fields -----------------------------------------------------------------------------------


def _raw_items(doc: Mapping[str, Any], event: str) -> list[Any]:
    """The item objects, wherever this format put them (wrapper element or top-level List)."""
    source = doc.get(_WRAPPERS[event], doc.get("List"))
    if isinstance(source, dict) and "List" in source:
        source = source["List"]
    if isinstance(source, dict):
        return [source]
    if isinstance(source, list):
        return source
    raise PushRejected(RejectReason.MALFORMED, f"{event} has no List")


def _item(event: str, raw: Any) -> PushItem:
    if not isinstance(raw, dict):
        raise PushRejected(RejectReason.MALFORMED, "List item is not an object")
    template_id = _text(raw, "TemplateId")
    if event == SENT_EVENT:
        return SentItem(
            template_id,
            msg_id=str(_int(raw, "MsgID")),
            error_code=_int(raw, "ErrorCode", signed=True),
            error_status=_text(raw, "ErrorStatus", required=False),
        )
    status = _text(raw, "SubscribeStatusString")
    if event == CHANGE_EVENT:
        return ChangeItem(template_id, status)
    return PopupItem(template_id, status, _text(raw, "PopupScene", required=False))


def _card(doc: Mapping[str, Any], from_user: str) -> CardFailure:
    """The flat fields of a card failure event; ``openid``, when sent, must be the sender."""
    openid = _text(doc, "openid", required=False) or from_user
    if openid != from_user:
        raise PushRejected(RejectReason.MALFORMED, "openid is not FromUserName")
    code = _text(doc, "notify_code")
    if not strip_code_prefix(code) or any(c.isspace() for c in code):
        raise PushRejected(RejectReason.MALFORMED, "notify_code is not a code")
    return CardFailure(
        openid,
        code,
        notify_type=_int(doc, "notify_type"),
        card_status=_int(doc, "card_status"),
        fail_ret=_int(doc, "fail_ret", signed=True),
        fail_msg=_text(doc, "fail_msg", required=False),
    )


def _text(doc: Mapping[str, Any], key: str, *, required: bool = True) -> str:
    value = doc.get(key)
    if value is None and not required:
        return ""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or (required and not value.strip()):
        raise PushRejected(RejectReason.MALFORMED, f"{key} missing or not text")
    if len(value) > _MAX_FIELD:
        raise PushRejected(RejectReason.MALFORMED, f"{key} too long")
    return value.strip()


def _int(doc: Mapping[str, Any], key: str, *, signed: bool = False) -> int:
    value = doc.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0 and not signed:
            raise PushRejected(RejectReason.MALFORMED, f"{key} is negative")
        return value
    text = _text(doc, key)
    digits = text[1:] if signed and text.startswith("-") else text
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 20:
        raise PushRejected(RejectReason.MALFORMED, f"{key} is not an integer")
    return int(text)

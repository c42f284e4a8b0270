"""Service cards in the sandbox: set_user_notify, set_user_notifyext, get_user_notify, the card
state machines and windows, the "not visible yet" delay and the failure event push.

One record per (appid, notify_type, notify_code): the payer, the states WeChat accepted (the
whole history, for tests: ``history``), activation time, ``code_state``. WeChat Pay orders are
registered with :meth:`CardBook.pay` (tests, the demo; admin ``POST /admin/cards/pay``): a code
WeChat does not know yet is 85437, and so is a payment younger than ``visible_after_s`` (60 s by
default: "retry after 1 minute" [doc]).

Errcodes (wechat-service-cards.md §3.1: WeChat's table was not recovered; only 85437 and 85431
are confirmed). The sandbox's own choices, configurable in :data:`ERRCODES`, docs/sandbox.md:
85433 check_json missing/invalid on activation · 85434 notify_type unknown · 85435
content_json not a JSON-encoded string or not an object · 85437 code unknown or not visible yet
· 85438 past the 24 h activation or 30 day update window · 85439 illegal transition (also any
update after a terminal state) · 85440 a required field missing · 85441 a field of the wrong
type or unknown to the state · 40003 openid is not the payer.

Failure events (``notify_service_msg_send_result``) are emitted through ``World.emit`` (so the
``EventPusher`` delivers them to the gateway) when a test asks: :meth:`CardBook.refuse` makes the
user refuse a code (-1004, code_state 10; later sets still succeed, as WeChat's API does not say
otherwise, but nothing is shown), :meth:`CardBook.fail_next` makes the next accepted set of a
code fail its delivery with a given fail_ret (-1005, -10002, -10001, -1003).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from wxsub.wechat.card_types import CARD_TYPES, check_content, legal
from wxsub_sandbox.tokens import WeChatReply, error
from wxsub_sandbox.world import World

__all__ = ["ERRCODES", "CardBook", "CardRecord", "Payment"]

ERRCODES = {
    "check": 85433,
    "type": 85434,
    "content": 85435,
    "unknown_code": 85437,
    "window": 85438,
    "transition": 85439,
    "required": 85440,
    "format": 85441,
    "payer": 40003,
}
ACTIVATE_S = 24 * 3600
UPDATE_S = 30 * 24 * 3600
EVENT = "notify_service_msg_send_result"
FAIL_MSG = {
    -10001: "system error",
    -10002: "content security check failed",
    -1003: "template not added",
    -1004: "user reject message ",
    -1005: "message sent too frequently",
}


@dataclass(frozen=True)
class Payment:
    appid: str
    openid: str
    transaction_id: str
    amount: int  # fen
    paid_at: int  # epoch seconds


@dataclass
class CardRecord:
    appid: str
    notify_type: int
    code: str
    openid: str
    activated_at: float
    content: dict[str, Any]
    history: list[int] = field(default_factory=list)
    code_state: int = 0

    @property
    def status(self) -> int:
        return int(self.content["cur_status"])


class CardBook:
    """The sandbox's card records and WeChat Pay payments."""

    def __init__(self, world: World, visible_after_s: float = 60.0) -> None:
        self.world = world
        self.visible_after_s = visible_after_s
        self.payments: dict[tuple[str, str], Payment] = {}
        self.cards: dict[tuple[str, int, str], CardRecord] = {}
        self._fail_next: dict[tuple[str, str], int] = {}
        self._refused: set[tuple[str, str]] = set()

    def clear(self) -> None:
        self.payments.clear()
        self.cards.clear()
        self._fail_next.clear()
        self._refused.clear()

    # --- test controls --------------------------------------------------------------------

    def pay(self, appid: str, openid: str, transaction_id: str, amount: int, paid_at: int) -> None:
        """Register a WeChat Pay payment of this mini program (the code of a pay card)."""
        self.payments[(appid, transaction_id)] = Payment(
            appid, openid, transaction_id, amount, paid_at
        )

    def refuse(self, appid: str, code: str) -> None:
        """The user refuses this code's card: the next accepted set pushes -1004."""
        self._refused.add((appid, code))

    def fail_next(self, appid: str, code: str, fail_ret: int) -> None:
        """The next accepted set of this code fails its delivery with ``fail_ret`` (pushed)."""
        self._fail_next[(appid, code)] = fail_ret

    def states(self, appid: str, code: str) -> list[int]:
        """Every state WeChat accepted for this code, in order (any card type)."""
        for (a, _, c), rec in self.cards.items():
            if a == appid and c == code:
                return list(rec.history)
        return []

    # --- the API --------------------------------------------------------------------------

    def set(self, appid: str, body: dict[str, Any], now: float) -> WeChatReply:
        parsed = _common(body)
        if isinstance(parsed, dict):
            return parsed
        openid, notify_type, code = parsed
        card = CARD_TYPES.get(notify_type)
        if card is None:
            return error(ERRCODES["type"], "notify_type invalid")
        content = _json_field(body.get("content_json"))
        if content is None:
            return error(ERRCODES["content"], "content_json must be a JSON-encoded object")
        payment = self.payments.get((appid, code))
        if payment is None or now < payment.paid_at + self.visible_after_s:
            return error(ERRCODES["unknown_code"], "invalid notify_code")
        if payment.openid != openid:
            return error(ERRCODES["payer"], "openid is not the payer")
        key = (appid, notify_type, code)
        rec = self.cards.get(key)
        if rec is None:
            check = _json_field(body.get("check_json"))
            if check is None or not _check_ok(check, payment):
                return error(ERRCODES["check"], "check_json invalid")
            if now > payment.paid_at + ACTIVATE_S:
                return error(ERRCODES["window"], "activation window passed")
        elif now > rec.activated_at + UPDATE_S:
            return error(ERRCODES["window"], "update window passed")
        problem = check_content(card, content)
        if problem is not None:
            which = "required" if "requires" in problem else "format"
            return error(ERRCODES[which], problem)
        if not legal(card, rec.status if rec else None, int(content["cur_status"])):
            return error(ERRCODES["transition"], "illegal state transition")
        if rec is None:
            rec = self.cards[key] = CardRecord(appid, notify_type, code, openid, now, content)
        rec.content = content
        rec.history.append(rec.status)
        self._maybe_fail(rec, now)
        return {"errcode": 0, "errmsg": "ok"}

    def set_ext(self, appid: str, body: dict[str, Any], now: float) -> WeChatReply:
        parsed = _common(body)
        if isinstance(parsed, dict):
            return parsed
        openid, notify_type, code = parsed
        if notify_type not in CARD_TYPES:
            return error(ERRCODES["type"], "notify_type invalid")
        if _json_field(body.get("ext_json")) is None:
            return error(ERRCODES["content"], "ext_json must be a JSON-encoded object")
        rec = self.cards.get((appid, notify_type, code))
        if rec is None:  # extension info is for an activated card
            return error(ERRCODES["unknown_code"], "invalid notify_code")
        if rec.openid != openid:
            return error(ERRCODES["payer"], "openid is not the payer")
        return {"errcode": 0, "errmsg": "ok"}

    def get(self, appid: str, body: dict[str, Any], now: float) -> WeChatReply:
        parsed = _common(body)
        if isinstance(parsed, dict):
            return parsed
        openid, notify_type, code = parsed
        if notify_type not in CARD_TYPES:
            return error(ERRCODES["type"], "notify_type invalid")
        payment = self.payments.get((appid, code))
        if payment is None or now < payment.paid_at + self.visible_after_s:
            return error(ERRCODES["unknown_code"], "invalid notify_code")
        if payment.openid != openid:
            return error(40003)
        rec = self.cards.get((appid, notify_type, code))
        info = {
            "notify_type": notify_type,
            "content_json": "" if rec is None else orjson.dumps(rec.content).decode(),
            "code_state": 0 if rec is None else rec.code_state,
            "code_expire_time": int((rec.activated_at if rec else now) + UPDATE_S),
        }
        return {"errcode": 0, "errmsg": "ok", "notify_info": info}

    def _maybe_fail(self, rec: CardRecord, now: float) -> None:
        key = (rec.appid, rec.code)
        fail_ret = self._fail_next.pop(key, None)
        if key in self._refused:
            self._refused.discard(key)
            rec.code_state = 10
            fail_ret = -1004
        if fail_ret is None:
            return
        self.world.emit(
            {
                "event": EVENT,
                "appid": rec.appid,
                "openid": rec.openid,
                "time": int(now),
                "items": [],
                "card": {
                    "notify_code": f"p1.{rec.code}",
                    "notify_type": rec.notify_type,
                    "card_status": rec.status,
                    "fail_ret": fail_ret,
                    "fail_msg": FAIL_MSG.get(fail_ret, "error"),
                },
            }
        )


def _common(body: dict[str, Any]) -> tuple[str, int, str] | WeChatReply:
    openid, notify_type, code = body.get("openid"), body.get("notify_type"), body.get("notify_code")
    if not isinstance(openid, str) or not openid:
        return error(40003)
    if not isinstance(notify_type, int) or isinstance(notify_type, bool):
        return error(ERRCODES["type"], "notify_type invalid")
    if not isinstance(code, str) or not code:
        return error(ERRCODES["unknown_code"], "invalid notify_code")
    return openid, notify_type, code


def _json_field(raw: Any) -> dict[str, Any] | None:
    """A JSON *string* holding an object (an object sent as is is refused, like WeChat)."""
    if not isinstance(raw, str):
        return None
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def _check_ok(check: dict[str, Any], payment: Payment) -> bool:
    amount, paid = check.get("pay_amount"), check.get("pay_time")
    if not isinstance(amount, int) or not isinstance(paid, int):
        return False
    channel = check.get("pay_channel", 0)
    return amount == payment.amount and paid == payment.paid_at and channel in (0, 1001)

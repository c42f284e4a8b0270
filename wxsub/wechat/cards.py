"""Service-card calls: setUserNotify (activate / update) and getUserNotify (what WeChat holds).

``content_json`` and ``check_json`` are JSON *strings* inside the body (wechat-service-cards.md
§3). Errors are the client's: ``RetryableError`` (provably not applied: connect errors, -1,
45011, and 85437 "notify_code does not exist (yet)" as :class:`CodeNotVisible`),
``InDoubtError`` (may have been applied: a lost answer, or 85431/85448/85449, which the
third-party implementation treats as unknown), ``PermanentError`` (refused: 40003, 85433-85443,
85461, 85462, anything unknown). The table is :data:`CARD_ERRCODES`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from wxsub.errors import InDoubtError, PermanentError, RetryableError, WeChatError
from wxsub.wechat.client import WeChatClient

__all__ = ["CARD_ERRCODES", "CardInfo", "CodeNotVisible", "get_user_notify", "set_user_notify"]

SET_PATH = "/wxa/set_user_notify"
GET_PATH = "/wxa/get_user_notify"


class CodeNotVisible(RetryableError):
    """85437: the code is not known to WeChat (yet): right after payment, retry after a minute."""


#: errcode -> (kind, meaning); kind: retry | not_visible | unknown | permanent
CARD_ERRCODES: Mapping[int, tuple[str, str]] = {
    -1: ("retry", "system busy"),
    45011: ("retry", "API minute quota"),
    85437: ("not_visible", "notify_code invalid or not visible yet"),
    85431: ("unknown", "system busy (outcome unknown)"),
    85448: ("unknown", "notify_code already used"),
    85449: ("unknown", "notify_code temporarily locked"),
    40003: ("permanent", "openid is not the payer"),
    85433: ("permanent", "check_json invalid"),
    85434: ("permanent", "notify_type invalid"),
    85435: ("permanent", "content invalid"),
    85436: ("permanent", "notify_code unavailable"),
    85438: ("permanent", "notify_code expired (window)"),
    85439: ("permanent", "illegal state transition"),
    85440: ("permanent", "required field missing"),
    85441: ("permanent", "field format invalid"),
    85442: ("permanent", "content security check failed"),
    85443: ("permanent", "text encoding invalid"),
    85461: ("permanent", "notify_type not authorized"),
    85462: ("permanent", "capability not authorized"),
}


@dataclass(frozen=True, slots=True)
class CardInfo:
    """getUserNotify's notify_info: the last state WeChat accepted (None: never set)."""

    content: dict[str, Any] | None
    code_state: int  # 0 normal, 1 risky, 2 abnormal, 10 user refused this code
    expire_time: int


def _error(errcode: int, errmsg: Any, call: str) -> WeChatError:
    kind, meaning = CARD_ERRCODES.get(errcode, ("permanent", "unknown errcode"))
    text = f"{call}: {meaning}" + (f" [{str(errmsg)[:200]}]" if errmsg else "")
    if kind == "not_visible":
        return CodeNotVisible(text, errcode)
    if kind == "retry":
        return RetryableError(text, errcode)
    if kind == "unknown":
        return InDoubtError(text, errcode)
    return PermanentError(text, errcode)


def _errcode(doc: Mapping[str, Any]) -> int:
    code = doc.get("errcode", 0)
    return code if isinstance(code, int) else -999_999


async def set_user_notify(
    client: WeChatClient,
    appid: str,
    openid: str,
    notify_type: int,
    code: str,
    content: Mapping[str, Any],
    check: Mapping[str, Any] | None = None,
) -> None:
    """Activate (with ``check``: pay_amount, pay_time) or update a card; raises on refusal."""
    body: dict[str, Any] = {
        "openid": openid,
        "notify_type": notify_type,
        "notify_code": code,
        "content_json": orjson.dumps(content).decode(),
    }
    if check is not None:
        body["check_json"] = orjson.dumps(check).decode()
    doc = await client.post(appid, SET_PATH, body, idempotent=False)
    errcode = _errcode(doc)
    if errcode != 0:
        raise _error(errcode, doc.get("errmsg"), "set_user_notify")


async def get_user_notify(
    client: WeChatClient, appid: str, openid: str, notify_type: int, code: str
) -> CardInfo:
    """What WeChat holds for the card; raises on refusal (85437: code unknown)."""
    body = {"openid": openid, "notify_type": notify_type, "notify_code": code}
    doc = await client.post(appid, GET_PATH, body, idempotent=True)
    errcode = _errcode(doc)
    if errcode != 0:
        err = _error(errcode, doc.get("errmsg"), "get_user_notify")
        raise err if not isinstance(err, InDoubtError) else RetryableError(str(err), errcode)
    info = doc.get("notify_info")
    if not isinstance(info, dict):
        raise RetryableError("get_user_notify: no notify_info")
    raw = info.get("content_json") or ""
    content = orjson.loads(raw) if isinstance(raw, str) and raw else None
    state = info.get("code_state", 0)
    expire = info.get("code_expire_time", 0)
    return CardInfo(
        content if isinstance(content, dict) else None,
        state if isinstance(state, int) else 0,
        expire if isinstance(expire, int) else 0,
    )

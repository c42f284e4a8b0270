"""The sandbox's service-card API on its manual clock (no real waits): the "not visible yet"
delay (85437 for ``visible_after_s`` after payment), the 85438 windows (activation within 24 h
of payment, updates for 30 days after activation), and set_user_notifyext.
wechat-service-cards.md §3, §6; the errcodes are the sandbox's own (wxsub_sandbox/cards.py)."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from tests.fixtures.sandbox import APPID, OPENID, OPENID_2, get_token
from wxsub_sandbox import ManualClock, Sandbox
from wxsub_sandbox.cards import ACTIVATE_S, UPDATE_S

CODE = "4200000000000000000777"
AMOUNT = 1005


def _content(status: int) -> str:
    doc: dict[str, Any] = {"cur_status": status, "wxa_path_query": "pages/o?id=1"}
    if status in (1, 2):
        item = {"product_img": "https://s/i.png", "product_name": "阿白",
                "product_path_query": "pages/p"}  # fmt: skip
        doc.update(product_count=1, product_list={"info_list": [item]})
    return orjson.dumps(doc).decode()


async def _post(http: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    token = await get_token(http)  # fresh each time: the clock may have moved past expiry
    reply = await http.post(path, params={"access_token": token}, json=body)
    assert reply.status_code == 200
    doc: dict[str, Any] = reply.json()
    return doc


async def set_card(
    http: httpx.AsyncClient, status: int, paid_at: int | None, code: str = CODE
) -> int:
    """setUserNotify; check_json (activation) when ``paid_at`` is given: the errcode."""
    body: dict[str, Any] = {"openid": OPENID, "notify_type": 2001, "notify_code": code,
                            "content_json": _content(status)}  # fmt: skip
    if paid_at is not None:
        body["check_json"] = orjson.dumps({"pay_amount": AMOUNT, "pay_time": paid_at}).decode()
    return int((await _post(http, "/wxa/set_user_notify", body))["errcode"])


async def get_card(http: httpx.AsyncClient, code: str = CODE) -> dict[str, Any]:
    body = {"openid": OPENID, "notify_type": 2001, "notify_code": code}
    return await _post(http, "/wxa/get_user_notify", body)


async def test_not_visible_for_a_minute_after_payment(
    sandbox: Sandbox, sandbox_http: httpx.AsyncClient, sandbox_clock: ManualClock
) -> None:
    book = sandbox.state.cards
    assert book.visible_after_s == 60  # "retry after 1 minute" [doc]
    paid = int(sandbox_clock())
    book.pay(APPID, OPENID, CODE, AMOUNT, paid)
    assert await set_card(sandbox_http, 1, paid) == 85437
    assert (await get_card(sandbox_http))["errcode"] == 85437
    sandbox_clock.advance(59)
    assert await set_card(sandbox_http, 1, paid) == 85437
    sandbox_clock.advance(1)
    assert (await get_card(sandbox_http))["notify_info"]["content_json"] == ""  # known, unset
    assert await set_card(sandbox_http, 1, paid) == 0
    assert book.states(APPID, CODE) == [1]
    book.visible_after_s = 300  # the delay is a knob
    book.pay(APPID, OPENID, "4200000000000000000778", AMOUNT, paid + 60)
    sandbox_clock.advance(299)
    assert await set_card(sandbox_http, 1, paid + 60, "4200000000000000000778") == 85437
    sandbox_clock.advance(1)
    assert await set_card(sandbox_http, 1, paid + 60, "4200000000000000000778") == 0


async def test_activation_window_is_24_hours_after_payment(
    sandbox: Sandbox, sandbox_http: httpx.AsyncClient, sandbox_clock: ManualClock
) -> None:
    book = sandbox.state.cards
    now = int(sandbox_clock())
    book.pay(APPID, OPENID, CODE, AMOUNT, now - ACTIVATE_S)  # at the limit: still fine
    book.pay(APPID, OPENID, "4200000000000000000779", AMOUNT, now - ACTIVATE_S - 1)
    assert await set_card(sandbox_http, 1, now - ACTIVATE_S - 1, "4200000000000000000779") == 85438
    assert book.states(APPID, "4200000000000000000779") == []
    assert await set_card(sandbox_http, 1, now - ACTIVATE_S) == 0
    assert book.states(APPID, CODE) == [1]


async def test_update_window_is_30_days_after_activation(
    sandbox: Sandbox, sandbox_http: httpx.AsyncClient, sandbox_clock: ManualClock
) -> None:
    book = sandbox.state.cards
    paid = int(sandbox_clock()) - 3600
    book.pay(APPID, OPENID, CODE, AMOUNT, paid)
    assert await set_card(sandbox_http, 1, paid) == 0
    activated = int(sandbox_clock())
    sandbox_clock.advance(UPDATE_S)  # the last second of the window
    assert await set_card(sandbox_http, 4, None) == 0
    sandbox_clock.advance(1)
    assert await set_card(sandbox_http, 6, None) == 85438
    assert book.states(APPID, CODE) == [1, 4]  # the refused update left no trace
    info = (await get_card(sandbox_http))["notify_info"]
    assert orjson.loads(info["content_json"])["cur_status"] == 4
    assert info["code_expire_time"] == activated + UPDATE_S


async def test_set_user_notifyext(
    sandbox: Sandbox, sandbox_http: httpx.AsyncClient, sandbox_clock: ManualClock
) -> None:
    book = sandbox.state.cards
    paid = int(sandbox_clock()) - 120
    book.pay(APPID, OPENID, CODE, AMOUNT, paid)
    pay_info = orjson.dumps({"transaction_id": CODE, "pay_amount": AMOUNT, "pay_time": paid})
    ext = {"pay_info": pay_info.decode()}  # each value a JSON string itself [doc, EXT]
    body: dict[str, Any] = {"openid": OPENID, "notify_type": 2001, "notify_code": CODE,
                            "ext_json": orjson.dumps(ext).decode()}  # fmt: skip
    path = "/wxa/set_user_notifyext"
    assert (await _post(sandbox_http, path, body))["errcode"] == 85437  # no card yet
    assert await set_card(sandbox_http, 1, paid) == 0
    assert (await _post(sandbox_http, path, body)) == {"errcode": 0, "errmsg": "ok"}
    assert book.states(APPID, CODE) == [1]  # extension info does not move the card
    as_object = {**body, "ext_json": ext}  # an object, not a JSON string: refused
    assert (await _post(sandbox_http, path, as_object))["errcode"] == 85435
    assert (await _post(sandbox_http, path, {**body, "notify_type": 9999}))["errcode"] == 85434
    assert (await _post(sandbox_http, path, {**body, "notify_type": "2001"}))["errcode"] == 85434
    assert (await _post(sandbox_http, path, {**body, "openid": ""}))["errcode"] == 40003
    assert (await _post(sandbox_http, path, {**body, "openid": OPENID_2}))["errcode"] == 40003
    other = {**body, "notify_code": "4200000000000000000780"}
    assert (await _post(sandbox_http, path, other))["errcode"] == 85437

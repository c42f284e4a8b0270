"""Service cards through silenceper/wechat v2.1.10 (the only one of the three SDKs with
SetUserNotify / SetUserNotifyExt / GetUserNotify) against the sandbox: activation with check_json,
an update, the extension info, the sandbox's refusals reaching the SDK as errcodes, and
getUserNotify's notify_info read by the SDK the way the card stage reads it (the last accepted
content, as a JSON string). The WeChat Pay payments are registered as a shop running
``wxsub sandbox`` in its own process does: ``POST /admin/cards/pay``."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from tests.fixtures.sandbox import APPID, OPENID, OPENID_2, SECRET
from tests.interop.probes import LineProbe
from wxsub.wechat.card_types import CARD_TYPES, check_content
from wxsub_sandbox import Sandbox

CODE = "4200002043202311087295582095"
PRODUCTS = {"info_list": [{"product_img": "https://x/p.png", "product_name": "阿白",
                           "product_path_query": "pages/index/index"}]}  # fmt: skip


def content(status: int) -> dict[str, Any]:
    doc: dict[str, Any] = {"cur_status": status, "wxa_path_query": "pages/index/index"}
    if status == 1:
        doc.update(product_count=1, product_list=PRODUCTS)
    assert check_content(CARD_TYPES[2001], doc) is None
    return doc


def _js(doc: dict[str, Any]) -> str:
    return orjson.dumps(doc).decode()


async def pay(http: httpx.AsyncClient, sandbox: Sandbox, openid: str = OPENID) -> int:
    """A payment of 10.05 yuan two minutes ago (past the 60 s "not visible yet"): its paid_at."""
    paid_at = int(sandbox.clock()) - 120
    body = {"appid": APPID, "openid": openid, "transaction_id": CODE, "amount": 1005}
    reply = await http.post("/admin/cards/pay", json=body | {"paid_at": paid_at})
    assert reply.status_code == 200, reply.text
    return paid_at


async def test_set_and_get_user_notify_through_the_go_sdk(
    go_probe: LineProbe, sandbox: Sandbox, sandbox_http: httpx.AsyncClient
) -> None:
    paid = await pay(sandbox_http, sandbox)
    book = sandbox.state.cards
    conf = await go_probe.call(
        "config", base=sandbox.base_url, appid=APPID, secret=SECRET, stable=False
    )
    assert conf["ok"], conf
    card = {"openid": OPENID, "notify_type": 2001, "notify_code": CODE}

    async def set_(status: int, **extra: Any) -> dict[str, Any]:
        answer: dict[str, Any] = await go_probe.call(
            "set_user_notify", **card, content_json=_js(content(status)), **extra
        )
        return answer

    # activation needs check_json (pay_amount fen, pay_time seconds): the SDK omits it if empty
    assert (await set_(1))["errcode"] == 85433
    wrong = _js({"pay_amount": 999, "pay_time": paid})
    assert (await set_(1, check_json=wrong))["errcode"] == 85433
    check = _js({"pay_amount": 1005, "pay_time": paid})
    assert await set_(1, check_json=check) == {"ok": True}
    assert await set_(4) == {"ok": True}
    assert (await set_(10))["errcode"] == 85439  # 4 -> 10 is not in 2001's table
    assert book.states(APPID, CODE) == [1, 4]

    got = await go_probe.call("get_user_notify", **card)
    assert got["ok"], got
    info = got["notify_info"]
    assert orjson.loads(info["content_json"]) == content(4)  # a JSON string, decoded by us
    assert (info["notify_type"], info["code_state"]) == (2001, 0)
    assert info["code_expire_time"] > paid

    sets = sandbox.recorder.calls(endpoint="set_user_notify", notify_code=CODE)
    assert [c.errcode for c in sets] == [85433, 85433, 0, 0, 85439]
    assert all(isinstance(c.content_json, str) for c in sets)  # the SDK sends strings


async def test_set_user_notifyext_through_the_go_sdk(
    go_probe: LineProbe, sandbox: Sandbox, sandbox_http: httpx.AsyncClient
) -> None:
    paid = await pay(sandbox_http, sandbox)
    await go_probe.call("config", base=sandbox.base_url, appid=APPID, secret=SECRET, stable=False)
    card = {"openid": OPENID, "notify_type": 2001, "notify_code": CODE}
    ext = _js({"merchant_trade_no": "SO2024050112345"})

    # no card for the code yet: the extension info has nothing to extend
    before = await go_probe.call("set_user_notifyext", **card, ext_json=ext)
    assert (before["ok"], before["errcode"]) == (False, 85437)
    check = _js({"pay_amount": 1005, "pay_time": paid})
    activated = await go_probe.call(
        "set_user_notify", **card, content_json=_js(content(1)), check_json=check
    )
    assert activated == {"ok": True}
    assert await go_probe.call("set_user_notifyext", **card, ext_json=ext) == {"ok": True}
    # the SDK sends "" for an unset ExtJSON (no omitempty): not a JSON object string
    empty = await go_probe.call("set_user_notifyext", **card)
    assert (empty["ok"], empty["errcode"]) == (False, 85435)
    calls = sandbox.recorder.calls(endpoint="set_user_notifyext", notify_code=CODE)
    assert [(c.errcode, c.processed) for c in calls] == [(85437, False), (0, True), (85435, False)]


async def test_the_sdk_sees_unknown_codes_and_other_payers(
    go_probe: LineProbe, sandbox: Sandbox, sandbox_http: httpx.AsyncClient
) -> None:
    await pay(sandbox_http, sandbox)
    await go_probe.call("config", base=sandbox.base_url, appid=APPID, secret=SECRET, stable=False)
    unknown = await go_probe.call(
        "get_user_notify", openid=OPENID, notify_type=2001, notify_code="4200000000000000000999"
    )
    assert (unknown["ok"], unknown["errcode"]) == (False, 85437)
    other = await go_probe.call(
        "set_user_notify", openid=OPENID_2, notify_type=2001, notify_code=CODE,
        content_json=_js(content(1)), check_json=_js({"pay_amount": 1005, "pay_time": 1}),
    )  # fmt: skip
    assert (other["ok"], other["errcode"]) == (False, 40003)  # not the payer

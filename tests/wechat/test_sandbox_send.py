"""Sandbox subscribe/send: every errcode, keyword rules through the API, credits, msgid."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.fixtures.sandbox import (
    ALL_TYPES_TID,
    APPID,
    APPID_NOAUTH,
    B_TID,
    BANNED_TID,
    LONG_TID,
    OPENID,
    OPENID_2,
    OPENID_B,
    ORDER_TID,
    SECRET_NOAUTH,
    get_token,
    send,
    send_body,
)
from wxsub_sandbox import FaultSpec, Latency, ManualClock, Sandbox

Body = dict[str, Any]


def without(key: str) -> Callable[[Body], None]:
    return lambda body: body.pop(key)


def setting(key: str, value: Any) -> Callable[[Body], None]:
    return lambda body: body.__setitem__(key, value)


def data_value(name: str, value: Any) -> Callable[[Body], None]:
    return lambda body: body["data"].__setitem__(name, {"value": value})


def data_drop(name: str) -> Callable[[Body], None]:
    return lambda body: body["data"].pop(name)


# (case id, change to a valid order-status body for OPENID, errcode, text the errmsg must hold)
ERRORS = [
    ("unknown openid", setting("touser", "oNobody0000000000000000000000"), 40003, "openid"),
    ("openid of another app", setting("touser", OPENID_B), 40003, "openid"),
    ("no touser", without("touser"), 40003, "openid"),
    ("unknown template", setting("template_id", "NOPE"), 40037, "template_id"),
    ("template of another app", setting("template_id", B_TID), 40037, "template_id"),
    ("no template_id", without("template_id"), 40037, "template_id"),
    ("template_id a list", setting("template_id", [ORDER_TID]), 40037, "template_id"),
    ("banned template", setting("template_id", BANNED_TID), 43107, "banned"),
    ("page not in the app", setting("page", "pages/admin/secret"), 41030, "page"),
    ("page not a string", setting("page", 5), 41030, "page"),
    ("bad miniprogram_state", setting("miniprogram_state", "prod"), 47003, "miniprogram_state"),
    ("bad lang", setting("lang", "fr_FR"), 47003, "lang invalid"),
    ("data not an object", setting("data", "x"), 47003, "data invalid"),
    ("no data", without("data"), 47003, "data invalid"),
    ("keyword missing", data_drop("thing3"), 47003, "data.thing3.value is empty"),
    ("keyword empty", data_value("thing3", ""), 47003, "data.thing3.value is empty"),
    ("keyword not in template", data_value("thing9", "x"), 47003, "data.thing9 invalid"),
    ("thing too long", data_value("thing3", "长" * 21), 47003, "data.thing3.value invalid"),
    ("phrase too long", data_value("phrase2", "正在配送中途"), 47003, "data.phrase2.value invalid"),
    ("newline", data_value("thing3", "耳机\n"), 47003, "data.thing3.value invalid"),
    ("value a boolean", data_value("character_string1", True), 47003, "character_string1"),
    ("value an object", data_value("character_string1", {"v": 1}), 47003, "character_string1"),
    ("number not a valid value", data_value("phrase2", 12), 47003, "data.phrase2.value invalid"),
    ("state case differs", setting("miniprogram_state", "Formal"), 47003, "miniprogram_state"),
    ("state blank", setting("miniprogram_state", " "), 47003, "miniprogram_state"),
    ("sensitive word", data_value("thing3", "违禁词耳机"), 45168, "sensitive"),
    ("sensitive any case", data_value("thing3", "casino night"), 45168, "sensitive"),
]


@pytest.mark.parametrize(
    ("change", "errcode", "text"),
    [case[1:] for case in ERRORS],
    ids=[case[0] for case in ERRORS],
)
async def test_send_errcodes(
    sandbox: Sandbox,
    sandbox_http: httpx.AsyncClient,
    change: Callable[[Body], None],
    errcode: int,
    text: str,
) -> None:
    body = send_body(sandbox.world, OPENID, ORDER_TID, page="pages/order/detail")
    change(body)
    reply = await send(sandbox_http, await get_token(sandbox_http), body)
    assert reply["errcode"] == errcode
    assert text in reply["errmsg"]
    assert sandbox.world.credits(APPID, OPENID)[ORDER_TID] == 1  # nothing consumed
    (record,) = sandbox.recorder.calls(endpoint="send")
    assert (record.errcode, record.processed, record.msgid) == (errcode, False, None)


async def test_no_credit_gives_43101(sandbox: Sandbox, sandbox_http: httpx.AsyncClient) -> None:
    body = send_body(sandbox.world, OPENID_2, ALL_TYPES_TID)
    reply = await send(sandbox_http, await get_token(sandbox_http), body)
    assert reply["errcode"] == 43101


async def test_unauthorized_app_gives_48001(
    sandbox: Sandbox, sandbox_http: httpx.AsyncClient
) -> None:
    token = await get_token(sandbox_http, APPID_NOAUTH, SECRET_NOAUTH)
    reply = await send(sandbox_http, token, send_body(sandbox.world, OPENID_B, B_TID))
    assert reply["errcode"] == 48001


async def test_body_not_json_gives_47001(sandbox_http: httpx.AsyncClient) -> None:
    token = await get_token(sandbox_http)
    reply = await sandbox_http.post(
        "/cgi-bin/message/subscribe/send", params={"access_token": token}, content=b"{nope"
    )
    assert reply.json()["errcode"] == 47001


@pytest.mark.parametrize(
    ("token", "errcode"), [(None, 41001), ("bad token", 40014), ("Z" * 136, 40001)]
)
async def test_send_with_a_bad_token(
    sandbox: Sandbox, sandbox_http: httpx.AsyncClient, token: str | None, errcode: int
) -> None:
    params = {"access_token": token} if token is not None else {}
    body = send_body(sandbox.world, OPENID, ORDER_TID)
    reply = await sandbox_http.post("/cgi-bin/message/subscribe/send", params=params, json=body)
    assert reply.json()["errcode"] == errcode
    assert sandbox.world.credits(APPID, OPENID)[ORDER_TID] == 1


async def test_send_with_an_expired_token(
    sandbox: Sandbox, sandbox_http: httpx.AsyncClient, sandbox_clock: ManualClock
) -> None:
    token = await get_token(sandbox_http)
    sandbox_clock.advance(7200)
    reply = await send(sandbox_http, token, send_body(sandbox.world, OPENID, ORDER_TID))
    assert reply["errcode"] == 42001


async def test_success_returns_exact_int64_msgid(
    sandbox: Sandbox, sandbox_http: httpx.AsyncClient
) -> None:
    token = await get_token(sandbox_http)
    body = send_body(
        sandbox.world,
        OPENID,
        ORDER_TID,
        page="pages/order/detail?id=1&from=msg",
        miniprogram_state="trial",
        lang="en_US",
    )
    reply = await sandbox_http.post(
        "/cgi-bin/message/subscribe/send", params={"access_token": token}, json=body
    )
    assert reply.headers["content-type"].startswith("application/json")
    doc = json.loads(reply.content)  # Python's json keeps integers exact
    assert doc["errcode"] == 0 and doc["errmsg"] == "ok"
    msgid = doc["msgid"]
    assert isinstance(msgid, int) and 2**53 < msgid < 2**63
    assert f'"msgid":{msgid}}}'.encode() in reply.content  # written as an integer literal
    (record,) = sandbox.recorder.calls(endpoint="send")
    assert record.msgid == msgid
    assert record.page == "pages/order/detail?id=1&from=msg"
    assert (record.miniprogram_state, record.lang) == ("trial", "en_US")
    assert record.data == body["data"]


def data_extra(name: str, **extra: Any) -> Callable[[Body], None]:
    return lambda body: body["data"][name].update(extra)


# What WeChat tolerates and SDKs rely on (docs/sandbox.md, "Differences from WeChat"): each is
# a change to a valid body that must still send.
TOLERATED = [
    # silenceper/wechat sends every unset field as "" (no omitempty)
    ("empty miniprogram_state and lang", lambda b: b.update(miniprogram_state="", lang="")),
    ("empty page", setting("page", "")),
    ("null state, lang and page", lambda b: b.update(miniprogram_state=None, lang=None, page=None)),
    # the old template messages' colour, still sent by SDKs; WeChat ignores it
    ("color in a data item", data_extra("thing3", color="#173177")),
    ("empty color", data_extra("thing3", color="")),
    ("unknown top-level fields", lambda b: b.update(emphasis_keyword="", form_id="x")),
    # a keyword value sent as a JSON number (silenceper's Value is interface{})
    ("number value", data_value("character_string1", 2024050112345)),
]


@pytest.mark.parametrize(
    "change", [case[1] for case in TOLERATED], ids=[case[0] for case in TOLERATED]
)
async def test_send_tolerates_what_wechat_tolerates(
    sandbox: Sandbox, sandbox_http: httpx.AsyncClient, change: Callable[[Body], None]
) -> None:
    body = send_body(sandbox.world, OPENID, ORDER_TID)
    change(body)
    reply = await send(sandbox_http, await get_token(sandbox_http), body)
    assert reply["errcode"] == 0, reply
    assert sandbox.world.credits(APPID, OPENID)[ORDER_TID] == 0


async def test_a_number_value_is_judged_as_its_text(
    sandbox: Sandbox, sandbox_http: httpx.AsyncClient
) -> None:
    token = await get_token(sandbox_http)
    template = sandbox.world.app(APPID).templates[ALL_TYPES_TID]
    body = send_body(sandbox.world, OPENID, ALL_TYPES_TID)
    body["data"]["number2"] = {"value": 3.5}
    assert (await send(sandbox_http, token, body))["errcode"] == 0
    body["data"]["number2"] = {"value": 10**40}  # 41 digits: over the 32 a number may have
    reply = await send(sandbox_http, token, body)
    assert (reply["errcode"], "data.number2.value invalid" in reply["errmsg"]) == (47003, True)
    assert [kw.name for kw in template.keywords][1] == "number2"


async def test_a_send_consumes_exactly_one_credit(
    sandbox: Sandbox, sandbox_http: httpx.AsyncClient
) -> None:
    token = await get_token(sandbox_http)
    sandbox.world.grant(APPID, OPENID, ORDER_TID, 2)  # 3 in all
    body = send_body(sandbox.world, OPENID, ORDER_TID)
    results = [(await send(sandbox_http, token, body))["errcode"] for _ in range(4)]
    assert results == [0, 0, 0, 43101]
    assert sandbox.world.credits(APPID, OPENID)[ORDER_TID] == 0
    msgids = [r.msgid for r in sandbox.recorder.calls(endpoint="send", errcode=0)]
    assert len(set(msgids)) == 3


async def test_refused_sends_keep_the_credit(
    sandbox: Sandbox, sandbox_http: httpx.AsyncClient
) -> None:
    token = await get_token(sandbox_http)
    bad = send_body(sandbox.world, OPENID, ORDER_TID, lang="xx")
    assert (await send(sandbox_http, token, bad))["errcode"] == 47003
    good = send_body(sandbox.world, OPENID, ORDER_TID)
    assert (await send(sandbox_http, token, good))["errcode"] == 0


async def test_long_term_template_keeps_its_credit(
    sandbox: Sandbox, sandbox_http: httpx.AsyncClient
) -> None:
    token = await get_token(sandbox_http)
    body = send_body(sandbox.world, OPENID, LONG_TID)
    assert (await send(sandbox_http, token, body))["errcode"] == 43101
    sandbox.world.grant(APPID, OPENID, LONG_TID)
    assert [(await send(sandbox_http, token, body))["errcode"] for _ in range(3)] == [0, 0, 0]
    assert sandbox.world.credits(APPID, OPENID)[LONG_TID] == 1


async def test_every_keyword_type_valid_in_one_send(
    sandbox: Sandbox, sandbox_http: httpx.AsyncClient
) -> None:
    body = send_body(sandbox.world, OPENID, ALL_TYPES_TID)
    assert (await send(sandbox_http, await get_token(sandbox_http), body))["errcode"] == 0


BAD_BY_KEYWORD = [
    ("thing1", "物" * 21),
    ("thing1", "😀" * 21),
    ("number2", "12a"),
    ("letter3", "AB1"),
    ("symbol4", "abc"),
    ("character_string5", "单号1"),
    ("time6", "25:00"),
    ("date7", "2024-02-30"),
    ("amount8", "199"),
    ("phone_number9", "电话123"),
    ("car_number10", "A粤1234"),
    ("name11", "R2D2"),
    ("phrase12", "已经发货了啊"),
    ("enum13", "缺货"),
]


@pytest.mark.parametrize(("name", "value"), BAD_BY_KEYWORD)
async def test_each_keyword_type_is_judged(
    sandbox: Sandbox, sandbox_http: httpx.AsyncClient, name: str, value: str
) -> None:
    body = send_body(sandbox.world, OPENID, ALL_TYPES_TID)
    body["data"][name] = {"value": value}
    reply = await send(sandbox_http, await get_token(sandbox_http), body)
    assert reply["errcode"] == 47003
    assert reply["errmsg"].startswith(f"argument invalid! data.{name}.value invalid")


EMOJI_AND_CJK_AT_LIMIT = [("thing1", "😀" * 20), ("thing1", "物" * 20), ("name11", "欧" * 10)]


@pytest.mark.parametrize(("name", "value"), EMOJI_AND_CJK_AT_LIMIT)
async def test_code_points_at_the_limit_pass(
    sandbox: Sandbox, sandbox_http: httpx.AsyncClient, name: str, value: str
) -> None:
    body = send_body(sandbox.world, OPENID, ALL_TYPES_TID)
    body["data"][name] = {"value": value}
    assert (await send(sandbox_http, await get_token(sandbox_http), body))["errcode"] == 0


async def test_concurrent_sends_to_one_openid_get_43108(
    sandbox: Sandbox, sandbox_http: httpx.AsyncClient
) -> None:
    token = await get_token(sandbox_http)
    sandbox.faults.set(FaultSpec(latency=Latency("fixed", s=0.5)))
    sandbox.world.grant(APPID, OPENID, ORDER_TID)  # 2 credits: both could be sent
    body = send_body(sandbox.world, OPENID, ORDER_TID)
    replies = await asyncio.gather(*(send(sandbox_http, token, body) for _ in range(2)))
    assert sorted(r["errcode"] for r in replies) == [0, 43108]
    assert sandbox.world.credits(APPID, OPENID)[ORDER_TID] == 1
    # one at a time is fine, and different openids do not collide
    other = send_body(sandbox.world, OPENID_2, ORDER_TID)
    mine, theirs = await asyncio.gather(
        send(sandbox_http, token, body), send(sandbox_http, token, other)
    )
    assert (mine["errcode"], theirs["errcode"]) == (0, 0)


async def test_sent_event_reaches_the_hook(
    sandbox: Sandbox, sandbox_http: httpx.AsyncClient
) -> None:
    events: list[dict[str, Any]] = []

    async def hook(event: dict[str, Any]) -> None:
        events.append(event)

    sandbox.world.on_event.append(hook)
    reply = await send(
        sandbox_http, await get_token(sandbox_http), send_body(sandbox.world, OPENID, ORDER_TID)
    )
    await sandbox.world.drain_events()
    assert events == [
        {
            "event": "subscribe_msg_sent_event",
            "appid": APPID,
            "openid": OPENID,
            "time": int(sandbox.clock()),
            "items": [
                {
                    "template_id": ORDER_TID,
                    "msgid": reply["msgid"],
                    "errcode": 0,
                    "status": "success",
                }
            ],
        }
    ]


async def test_gettemplate_lists_the_layout(sandbox_http: httpx.AsyncClient) -> None:
    token = await get_token(sandbox_http)
    reply = await sandbox_http.get("/wxaapi/newtmpl/gettemplate", params={"access_token": token})
    doc = reply.json()
    assert doc["errcode"] == 0
    by_id = {t["priTmplId"]: t for t in doc["data"]}
    assert by_id[ORDER_TID]["content"].startswith("订单号:{{character_string1.DATA}}\n")
    assert by_id[ORDER_TID]["type"] == 2
    assert by_id[LONG_TID]["type"] == 3
    assert by_id[ALL_TYPES_TID]["keywordEnumValueList"] == [
        {"keywordCode": "enum13.DATA", "enumValueList": ["现货", "预售"]}
    ]
    assert set(by_id[ORDER_TID]) == {
        "priTmplId",
        "title",
        "content",
        "example",
        "type",
        "keywordEnumValueList",
    }

"""The sandbox's template library APIs (getpubtemplatekeywords, addtemplate, deltemplate) with
WeChat's errcodes, and the admin API's run-time template changes, seen through gettemplate (the
real client) and send."""

from __future__ import annotations

from typing import Any

import httpx

from tests.fixtures.sandbox import APPID, OPENID, ORDER_TID, get_token, send, send_body
from tests.wechat.test_client_sandbox import settings
from wxsub.wechat.client import WeChatClient
from wxsub_sandbox import Sandbox


async def call(http: httpx.AsyncClient, token: str, path: str, body: Any = None) -> Any:
    path, _, tid = path.partition("?tid=")
    params = {"access_token": token, **({"tid": tid} if tid else {})}
    if body is None:
        return (await http.get(f"/wxaapi/newtmpl/{path}", params=params)).json()
    return (await http.post(f"/wxaapi/newtmpl/{path}", params=params, json=body)).json()


async def test_library_add_list_and_delete(
    sandbox: Sandbox, sandbox_http: httpx.AsyncClient
) -> None:
    token = await get_token(sandbox_http)
    kws = await call(sandbox_http, token, "getpubtemplatekeywords?tid=1003")
    assert kws["errcode"] == 0 and kws["count"] == 4
    assert kws["data"][3] == {"kid": 4, "name": "处理方式", "example": "联系客服", "rule": "enum"}
    added = await call(sandbox_http, token, "addtemplate",
                       {"tid": 1003, "kidList": [1, 3, 4], "sceneDesc": "物流异常"})  # fmt: skip
    assert added["errcode"] == 0
    pid = added["priTmplId"]
    async with WeChatClient(settings(sandbox.base_url)) as client:
        listed = {t.template_id: t for t in await client.get_templates(APPID)}
        assert [(k.name, k.type) for k in listed[pid].keywords] == [
            ("character_string1", "character_string"), ("phrase3", "phrase"), ("enum4", "enum")
        ]  # fmt: skip
        assert listed[pid].enum_values == {"enum4": ("联系客服", "重新派送", "退回商家")}
        assert (await call(sandbox_http, token, "deltemplate", {"priTmplId": pid}))["errcode"] == 0
        assert pid not in {t.template_id for t in await client.get_templates(APPID)}


async def test_library_errcodes(sandbox_http: httpx.AsyncClient) -> None:
    token = await get_token(sandbox_http)
    assert (await call(sandbox_http, token, "getpubtemplatekeywords?tid=9"))["errcode"] == 200014
    bad = [
        ({"tid": 9, "kidList": [1, 2], "sceneDesc": "x"}, 200014),
        ({"tid": 1001, "kidList": [1], "sceneDesc": "x"}, 200020),  # fewer than 2
        ({"tid": 1001, "kidList": [1, 1], "sceneDesc": "x"}, 200020),  # repeated
        ({"tid": 1001, "kidList": [1, 99], "sceneDesc": "x"}, 200020),  # unknown kid
        ({"tid": 1001, "kidList": [1, 2], "sceneDesc": ""}, 200021),
        ({"tid": 1001, "kidList": [1, 2], "sceneDesc": "x" * 16}, 200021),
    ]
    for body, code in bad:
        assert (await call(sandbox_http, token, "addtemplate", body))["errcode"] == code, body
    assert (await call(sandbox_http, token, "deltemplate", {"priTmplId": "nope"}))[
        "errcode"
    ] == 20002
    bad_token = await call(sandbox_http, "bad-token", "deltemplate", {"priTmplId": "x"})
    assert bad_token["errcode"] in (40001, 40014)


async def test_admin_deletes_and_changes_a_template_at_run_time(
    sandbox: Sandbox, sandbox_http: httpx.AsyncClient
) -> None:
    token = await get_token(sandbox_http)
    sandbox.world.grant(APPID, OPENID, ORDER_TID, 2)
    body = send_body(sandbox.world, OPENID, ORDER_TID)
    assert (await send(sandbox_http, token, body))["errcode"] == 0
    changed = {"appid": APPID, "id": ORDER_TID, "title": "订单状态通知",
               "content": "订单号:{{character_string1.DATA}}\n备注:{{thing9.DATA}}"}  # fmt: skip
    assert (await sandbox_http.post("/admin/templates", json=changed)).status_code == 200
    async with WeChatClient(settings(sandbox.base_url)) as client:
        (tpl,) = [t for t in await client.get_templates(APPID) if t.template_id == ORDER_TID]
        assert [k.name for k in tpl.keywords] == ["character_string1", "thing9"]
        reply = await sandbox_http.delete(
            "/admin/templates", params={"appid": APPID, "id": ORDER_TID}
        )
        assert reply.status_code == 200
        assert ORDER_TID not in {t.template_id for t in await client.get_templates(APPID)}
    assert (await send(sandbox_http, token, body))["errcode"] == 40037
    await sandbox_http.post("/admin/reset", json={})  # templates back as loaded
    assert ORDER_TID in sandbox.world.app(APPID).templates

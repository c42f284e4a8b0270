"""Template management through the three SDKs: the public library's keywords, addtemplate,
gettemplate, a send with the new template, deltemplate, and the sandbox's refusals reaching
each SDK as errcodes (WxJava: getPubTemplateKeyWordsById / addTemplate / delTemplate;
silenceper/wechat: GetPubTemplateKeywordsByID / Add / Delete; wechatpy 1.8.18 has no newtmpl API,
so its probe calls client.get / client.post as a shop would)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.fixtures.sandbox import APPID, B_TID, OPENID
from tests.interop.conftest import Driver
from wxsub_sandbox import Sandbox
from wxsub_sandbox.library import LIBRARY, MAX_PRIVATE
from wxsub_sandbox.world import make_template

# tid 1001 订单状态通知, keywords in the order the shop picks them
ORDER_KIDS = [3, 2, 1]
ORDER_CONTENT = (
    "商品名称:{{thing3.DATA}}\n订单状态:{{phrase2.DATA}}\n订单号:{{character_string1.DATA}}"
)
ORDER_DATA = {"thing3": "无线耳机", "phrase2": "已发货", "character_string1": "SO2024050112345"}
# tid 1003 物流异常提醒 with its enum keyword (kid 4)
EXCEPTION_KIDS = [1, 4]
EXCEPTION_DATA = {"character_string1": "SF1234567890", "enum4": "重新派送"}


async def accept(http: httpx.AsyncClient, *template_ids: str) -> dict[str, int]:
    body = {"appid": APPID, "openid": OPENID, "template_ids": list(template_ids)}
    reply = await http.post("/admin/accept", json=body)
    assert reply.status_code == 200, reply.text
    credits: dict[str, int] = reply.json()["credits"]
    return credits


async def test_a_library_template_from_add_to_delete(
    sdk: Driver, sandbox: Sandbox, sandbox_http: httpx.AsyncClient
) -> None:
    await sdk.configure(stable=sdk.caps.stable)
    before = list(sandbox.world.app(APPID).templates)

    keywords = await sdk.call("pub_keywords", tid="1001")
    assert keywords["ok"], keywords
    assert keywords["keywords"] == [k.to_api() for k in LIBRARY[1001].keywords]

    added = await sdk.call("add_template", tid="1001", kids=ORDER_KIDS, scene="订单发货提醒")
    assert added["ok"], added
    tid = added["template_id"]
    other = await sdk.call("add_template", tid="1003", kids=EXCEPTION_KIDS, scene="物流异常")
    assert other["ok"], other
    assert len({tid, other["template_id"], *before}) == len(before) + 2

    listed = await sdk.call("templates")
    assert listed["ok"], listed
    assert [t["id"] for t in listed["templates"]] == [*before, tid, other["template_id"]]
    got = listed["templates"][-2]
    assert (got["title"], got["content"], got["type"]) == ("订单状态通知", ORDER_CONTENT, 2)
    if sdk.caps.enums:
        assert listed["templates"][-1]["enums"] == {
            "enum4.DATA": ["联系客服", "重新派送", "退回商家"]
        }

    # a fresh template: no credit until the user accepts it in the popup
    send = {"touser": OPENID, "template_id": tid, "data": ORDER_DATA}
    assert (await sdk.call("send", **send))["errcode"] == 43101
    assert await accept(sandbox_http, tid, other["template_id"]) == sandbox.world.credits(
        APPID, OPENID
    )
    assert (await sdk.call("send", **send))["ok"]
    sent = await sdk.call(
        "send", touser=OPENID, template_id=other["template_id"], data=EXCEPTION_DATA
    )
    assert sent["ok"], sent

    deleted = await sdk.call("del_template", template_id=tid)
    assert deleted["ok"], deleted
    listed = await sdk.call("templates")
    assert [t["id"] for t in listed["templates"]] == [*before, other["template_id"]]
    gone = await sdk.call("send", **send)
    assert (gone["ok"], gone.get("errcode")) == (False, 40037), gone
    again = await sdk.call("del_template", template_id=tid)
    assert (again["ok"], again.get("errcode")) == (False, 20002), again

    managed = {"getpubtemplatekeywords", "addtemplate", "gettemplate", "deltemplate"}
    calls = [(c.endpoint, c.errcode, c.processed) for c in sandbox.recorder.calls()
             if c.endpoint in managed]  # fmt: skip
    assert calls == [
        ("getpubtemplatekeywords", 0, True),
        ("addtemplate", 0, True),
        ("addtemplate", 0, True),
        ("gettemplate", 0, True),
        ("deltemplate", 0, True),
        ("gettemplate", 0, True),
        ("deltemplate", 20002, False),
    ]
    sends = sandbox.recorder.calls(endpoint="send")
    assert [s.errcode for s in sends] == [43101, 0, 0, 40037]


# (case, op and its fields, errcode); nothing changes in the app's templates
LIBRARY_REFUSALS: list[tuple[str, str, dict[str, Any], int]] = [
    ("keywords of an unknown tid", "pub_keywords", {"tid": "9999"}, 200014),
    ("keywords of a tid not a number", "pub_keywords", {"tid": "abc"}, 200014),
    ("add from an unknown tid", "add_template", {"tid": "9999"}, 200014),
    ("a kid the title lacks", "add_template", {"kids": [1, 9]}, 200020),
    ("one kid only", "add_template", {"kids": [3]}, 200020),
    ("a kid twice", "add_template", {"kids": [3, 3]}, 200020),
    ("sceneDesc over 15 characters", "add_template", {"scene": "长" * 16}, 200021),
    ("sceneDesc empty", "add_template", {"scene": ""}, 200021),
    ("delete an unknown template", "del_template", {"template_id": "NO_SUCH"}, 20002),
    ("delete another app's template", "del_template", {"template_id": B_TID}, 20002),
]
ADD = {"tid": "1001", "kids": ORDER_KIDS, "scene": "订单发货提醒"}
ENDPOINT = {"pub_keywords": "getpubtemplatekeywords", "add_template": "addtemplate",
            "del_template": "deltemplate"}  # fmt: skip


@pytest.mark.parametrize(
    ("op", "fields", "errcode"),
    [c[1:] for c in LIBRARY_REFUSALS],
    ids=[c[0] for c in LIBRARY_REFUSALS],
)
async def test_library_refusals_reach_the_sdk(
    sdk: Driver, sandbox: Sandbox, op: str, fields: dict[str, Any], errcode: int
) -> None:
    await sdk.configure(stable=sdk.caps.stable)
    before = {appid: list(app.templates) for appid, app in sandbox.world.apps.items()}
    args = ADD | fields if op == "add_template" else fields

    answer = await sdk.call(op, **args)

    assert (answer["ok"], answer.get("errcode")) == (False, errcode), answer
    assert {appid: list(app.templates) for appid, app in sandbox.world.apps.items()} == before
    (record,) = sandbox.recorder.calls(endpoint=ENDPOINT[op])
    assert (record.errcode, record.processed) == (errcode, False)


async def test_fifty_private_templates_is_the_limit(sdk: Driver, sandbox: Sandbox) -> None:
    await sdk.configure(stable=sdk.caps.stable)
    world = sandbox.world
    held = list(world.app(APPID).templates)
    for n in range(MAX_PRIVATE - len(held)):
        filler = {"id": f"FILL{n:039d}", "title": "占位", "content": "内容:{{thing1.DATA}}"}
        world.put_template(APPID, make_template(filler))

    full = await sdk.call("add_template", **ADD)
    assert (full["ok"], full.get("errcode")) == (False, 200012), full
    assert (await sdk.call("del_template", template_id=held[0]))["ok"]
    added = await sdk.call("add_template", **ADD)
    assert added["ok"], added
    assert len(world.app(APPID).templates) == MAX_PRIVATE

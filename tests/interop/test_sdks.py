"""wechatpy, WxJava and silenceper/wechat against the sandbox: tokens, sends, refusals, templates.

Each SDK is used as a shop uses it (its own client, token cache and error handling), pointed at
the sandbox by the base-URL override docs/sandbox.md shows; the test scripts the sandbox through
its admin API and checks both what the SDK reports and what the sandbox recorded.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.fixtures.sandbox import (
    ALL_TYPES_TID,
    APPID,
    B_TID,
    BANNED_TID,
    OPENID,
    OPENID_2,
    ORDER_TID,
    SECRET,
    valid_data,
)
from tests.interop.conftest import Driver
from tests.interop.probes import SDKS
from wxsub_sandbox import ManualClock, Sandbox

TOKEN_ENDPOINT = {False: "token", True: "stable_token"}


@pytest.fixture(params=["classic", "stable"])
def stable(request: pytest.FixtureRequest) -> bool:
    return request.param == "stable"


def order_data(sandbox: Sandbox, **values: Any) -> dict[str, Any]:
    """A valid {keyword: value} for the order-status template, with ``values`` changed."""
    template = sandbox.world.app(APPID).templates[ORDER_TID]
    data: dict[str, Any] = {name: item["value"] for name, item in valid_data(template).items()}
    data.update(values)
    return data


def data_for(sandbox: Sandbox, template_id: str) -> dict[str, Any]:
    """Valid data for the template (of any app), or for the order template if none has it."""
    for app in sandbox.world.apps.values():
        if template_id in app.templates:
            return {n: i["value"] for n, i in valid_data(app.templates[template_id]).items()}
    return order_data(sandbox)


async def admin(http: httpx.AsyncClient, path: str, body: dict[str, Any]) -> Any:
    reply = await http.post(f"/admin/{path}", json=body)
    assert reply.status_code == 200, reply.text
    return reply.json()


async def test_tokens_and_sends_while_credits_last(
    sdk: Driver, stable: bool, sandbox: Sandbox, sandbox_http: httpx.AsyncClient
) -> None:
    await sdk.configure(stable=stable)
    # the user accepts once more in the popup: two credits in all
    doc = await admin(
        sandbox_http, "accept", {"appid": APPID, "openid": OPENID_2, "template_id": ORDER_TID}
    )
    assert doc["credits"][ORDER_TID] == 2
    body = {"touser": OPENID_2, "template_id": ORDER_TID, "data": order_data(sandbox)}
    answers = [await sdk.call("send", **body, page="pages/order/detail?id=7") for _ in range(3)]

    assert [a["ok"] for a in answers] == [True, True, False]
    assert answers[2]["errcode"] == 43101
    assert sandbox.world.credits(APPID, OPENID_2)[ORDER_TID] == 0
    sent = sandbox.recorder.calls(endpoint="send", errcode=0)
    assert len(sent) == 2 and all(r.page == "pages/order/detail?id=7" for r in sent)
    if sdk.caps.msgid:  # exact int64 msgids (above 2^53) reach the SDK's caller
        assert [a["msgid"] for a in answers[:2]] == [str(r.msgid) for r in sent]
    # one token fetch, of the kind asked for, served the three sends
    tokens = sandbox.recorder.calls(endpoint=TOKEN_ENDPOINT[stable])
    assert len(tokens) == 1 and tokens[0].errcode == 0
    assert not sandbox.recorder.calls(endpoint=TOKEN_ENDPOINT[not stable])


async def test_sends_with_the_sdk_defaults(sdk: Driver, sandbox: Sandbox) -> None:
    """Nothing but touser, template_id and data: each SDK fills the rest its own way (silenceper
    sends "" for page, miniprogram_state and lang, and "color": "" in each item)."""
    await sdk.configure(stable=sdk.caps.stable)
    answer = await sdk.call("send", touser=OPENID, template_id=ORDER_TID, data=order_data(sandbox))
    assert answer["ok"], answer
    (record,) = sandbox.recorder.calls(endpoint="send")
    assert record.errcode == 0
    if sdk.name == "silenceper":
        assert (record.page, record.miniprogram_state, record.lang) == ("", "", "")
        assert record.data is not None and record.data["thing3"]["color"] == ""


# wechatpy 1.8.18 cannot set miniprogram_state or lang (an SDK limit, not the sandbox's)
WITH_STATE_LANG = [name for name, caps in SDKS.items() if caps.state_lang]


@pytest.mark.parametrize("sdk_name", WITH_STATE_LANG)
@pytest.mark.parametrize(("state", "lang"), [("trial", "en_US"), ("developer", "zh_TW")])
async def test_sends_with_state_and_lang(
    sdk: Driver, sandbox: Sandbox, state: str, lang: str
) -> None:
    await sdk.configure(stable=True)
    answer = await sdk.call(
        "send",
        touser=OPENID,
        template_id=ORDER_TID,
        data=order_data(sandbox),
        miniprogram_state=state,
        lang=lang,
    )
    assert answer["ok"], answer
    (record,) = sandbox.recorder.calls(endpoint="send")
    assert (record.miniprogram_state, record.lang, record.errcode) == (state, lang, 0)


@pytest.mark.parametrize("sdk_name", WITH_STATE_LANG)
async def test_a_bad_state_is_refused(sdk: Driver, sandbox: Sandbox) -> None:
    await sdk.configure(stable=True)
    data = order_data(sandbox)
    answer = await sdk.call(
        "send", touser=OPENID, template_id=ORDER_TID, data=data, miniprogram_state="prod"
    )
    assert (answer["ok"], answer.get("errcode")) == (False, 47003), answer
    assert "miniprogram_state invalid" in answer["error"]
    assert sandbox.world.credits(APPID, OPENID)[ORDER_TID] == 1


async def test_a_number_value(sdk: Driver, sandbox: Sandbox) -> None:
    """silenceper's DataItem.Value is interface{}: a Go number goes out as a JSON number."""
    await sdk.configure(stable=sdk.caps.stable)
    data = order_data(sandbox, character_string1=2024050112345)
    answer = await sdk.call("send", touser=OPENID, template_id=ORDER_TID, data=data)
    assert answer["ok"], answer
    (record,) = sandbox.recorder.calls(endpoint="send")
    assert record.data is not None
    sent = record.data["character_string1"]["value"]
    # WxJava's MsgData.value is a String: it sends the text; the others keep the number
    assert sent == ("2024050112345" if sdk.name == "wxjava" else 2024050112345)


# (case, send fields changed, errcode); every refusal leaves the credits as they were
REFUSALS = [
    ("value breaks its keyword type", {"data": {"thing3": "长" * 21}}, 47003),
    ("unknown template", {"template_id": "NO_SUCH_TEMPLATE"}, 40037),
    ("template of another app", {"template_id": B_TID}, 40037),
    ("unknown openid", {"touser": "oNobody0000000000000000000000"}, 40003),
    ("banned template", {"template_id": BANNED_TID}, 43107),
    ("no credit", {"template_id": ALL_TYPES_TID, "touser": OPENID_2}, 43101),
    ("sensitive word", {"data": {"thing3": "违禁词耳机"}}, 45168),
]


@pytest.mark.parametrize(
    ("change", "errcode"), [c[1:] for c in REFUSALS], ids=[c[0] for c in REFUSALS]
)
async def test_refusals_reach_the_sdk_as_wechat_answers_them(
    sdk: Driver, sandbox: Sandbox, change: dict[str, Any], errcode: int
) -> None:
    await sdk.configure(stable=sdk.caps.stable)
    body: dict[str, Any] = {"touser": OPENID, "template_id": ORDER_TID}
    body.update({k: v for k, v in change.items() if k != "data"})
    body["data"] = data_for(sandbox, body["template_id"]) | change.get("data", {})
    before = sandbox.world.credits(APPID, OPENID)

    answer = await sdk.call("send", **body)

    assert (answer["ok"], answer.get("errcode")) == (False, errcode), answer
    assert sandbox.world.credits(APPID, OPENID) == before
    (record,) = sandbox.recorder.calls(endpoint="send")
    assert (record.errcode, record.processed) == (errcode, False)


async def test_daily_quota_45009(
    sdk: Driver, sandbox: Sandbox, sandbox_http: httpx.AsyncClient
) -> None:
    await sdk.configure(stable=sdk.caps.stable)
    reply = await sandbox_http.post("/admin/faults", json={"next": [{"errcode": 45009}]})
    assert reply.status_code == 200
    answer = await sdk.call("send", touser=OPENID, template_id=ORDER_TID, data=order_data(sandbox))
    assert (answer["ok"], answer.get("errcode")) == (False, 45009), answer
    assert sandbox.world.credits(APPID, OPENID)[ORDER_TID] == 1
    # the quota is the sandbox's fault plan, not a refusal of the token: the next send goes out
    answer = await sdk.call("send", touser=OPENID, template_id=ORDER_TID, data=order_data(sandbox))
    assert answer["ok"], answer


async def test_expired_token(
    sdk: Driver, stable: bool, sandbox: Sandbox, sandbox_http: httpx.AsyncClient
) -> None:
    await sdk.configure(stable=stable)
    assert (await sdk.call("token"))["ok"]
    assert (await admin(sandbox_http, "tokens/expire", {"appid": APPID}))["expired"] >= 1

    answer = await sdk.call("send", touser=OPENID, template_id=ORDER_TID, data=order_data(sandbox))

    first = sandbox.recorder.calls(endpoint="send")[0]
    assert first.errcode == 42001
    if sdk.caps.token_retry:  # refetch once, retry once: the send goes out
        assert answer["ok"], answer
        assert len(sandbox.recorder.calls(endpoint=TOKEN_ENDPOINT[stable], errcode=0)) == 2
    else:  # silenceper keeps its cached token until its own clock says it expired
        assert (answer["ok"], answer.get("errcode")) == (False, 42001), answer


async def test_token_knocked_out_by_another_refresher(
    sdk: Driver, sandbox: Sandbox, sandbox_http: httpx.AsyncClient, sandbox_clock: ManualClock
) -> None:
    """Classic tokens: another worker's fetch ends ours 5 minutes later (the 40001 storm)."""
    await sdk.configure(stable=False)
    assert (await sdk.call("token"))["ok"]
    params = {"grant_type": "client_credential", "appid": APPID, "secret": SECRET}
    assert "access_token" in (await sandbox_http.get("/cgi-bin/token", params=params)).json()
    sandbox_clock.advance(301)

    answer = await sdk.call("send", touser=OPENID, template_id=ORDER_TID, data=order_data(sandbox))

    assert sandbox.recorder.calls(endpoint="send")[0].errcode == 40001
    if sdk.caps.token_retry:
        assert answer["ok"], answer
    else:
        assert (answer["ok"], answer.get("errcode")) == (False, 40001), answer


@pytest.mark.parametrize(
    ("appid", "secret", "errcode"),
    [(APPID, "wrong-secret", 40001), ("wxnosuchapp0000001", SECRET, 40013)],
    ids=["bad secret", "unknown appid"],
)
async def test_bad_credentials(
    sdk: Driver, stable: bool, sandbox: Sandbox, appid: str, secret: str, errcode: int
) -> None:
    await sdk.configure(stable=stable, appid=appid, secret=secret)
    answer = await sdk.call("token")
    assert (answer["ok"], answer.get("errcode")) == (False, errcode), answer
    (record,) = sandbox.recorder.calls(endpoint=TOKEN_ENDPOINT[stable])
    assert record.errcode == errcode


async def test_token_quota_45009(
    sdk: Driver, stable: bool, sandbox: Sandbox, sandbox_http: httpx.AsyncClient
) -> None:
    await sdk.configure(stable=stable)
    fault = {"endpoints": [TOKEN_ENDPOINT[stable]], "next": [{"errcode": 45009}]}
    assert (await sandbox_http.post("/admin/faults", json=fault)).status_code == 200
    answer = await sdk.call("token")
    assert (answer["ok"], answer.get("errcode")) == (False, 45009), answer


async def test_stable_force_refresh(sdk: Driver, sandbox: Sandbox) -> None:
    await sdk.configure(stable=True)
    old = (await sdk.call("token"))["token"]
    forced = await sdk.call("force_token")
    assert forced["ok"] and forced["token"] != old, forced
    (record,) = sandbox.recorder.calls(endpoint="stable_token", errcode=0)[1:]
    assert record.force_refresh is True
    assert sandbox.tokens.resolve(old)[1] is not None  # force_refresh ends the old one at once
    answer = await sdk.call("send", touser=OPENID, template_id=ORDER_TID, data=order_data(sandbox))
    if sdk.name == "silenceper":
        # GetAccessTokenDirectly returns the new token without caching it: the SDK goes on with
        # the old one, which WeChat (and the sandbox) refuse
        assert (answer["ok"], answer.get("errcode")) == (False, 40001), answer
    else:  # the SDK sends with the new one
        assert answer["ok"], answer


async def test_template_list(sdk: Driver, sandbox: Sandbox) -> None:
    await sdk.configure(stable=sdk.caps.stable)
    answer = await sdk.call("templates")
    assert answer["ok"], answer
    templates = sandbox.world.app(APPID).templates
    assert [t["id"] for t in answer["templates"]] == list(templates)
    for got in answer["templates"]:
        want = templates[got["id"]]
        assert (got["title"], got["content"], got["type"]) == (want.title, want.content, want.type)
    if sdk.caps.enums:
        got_all = next(t for t in answer["templates"] if t["id"] == ALL_TYPES_TID)
        assert got_all["enums"] == {"enum13.DATA": ["现货", "预售"]}

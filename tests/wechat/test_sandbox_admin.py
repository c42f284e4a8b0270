"""Sandbox admin API, recorder, world loading, event hook and the ``wxsub sandbox`` command."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.sandbox import (
    ALL_TYPES_TID,
    APPID,
    APPID_B,
    LONG_TID,
    OPENID,
    OPENID_2,
    ORDER_TID,
    SECRET,
    get_token,
    http_client,
    send,
    send_body,
    world_doc,
)
from wxsub.cli import main
from wxsub.errors import ConfigError
from wxsub_sandbox import ManualClock, Sandbox, load_world, run_sandbox

REPO = Path(__file__).resolve().parents[2]


async def post(http: httpx.AsyncClient, path: str, body: Any, status: int = 200) -> Any:
    reply = await http.post(path, json=body)
    assert reply.status_code == status, reply.text
    return reply.json()


@pytest.fixture
def events(sandbox: Sandbox) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []

    async def hook(event: dict[str, Any]) -> None:
        seen.append(event)

    sandbox.world.on_event.append(hook)
    return seen


# --- users and credits ------------------------------------------------------------------------


async def test_world_summary_has_no_secrets(sandbox_http: httpx.AsyncClient) -> None:
    reply = await sandbox_http.get("/admin/world")
    apps = {a["appid"]: a for a in reply.json()["apps"]}
    assert apps[APPID]["users"] == 2
    assert apps[APPID]["pages"] == ["pages/index/index", "pages/order/detail"]
    assert SECRET not in reply.text
    assert "secret" not in reply.text


def test_app_repr_masks_the_secret(sandbox: Sandbox) -> None:
    assert SECRET not in repr(sandbox.world.apps[APPID])


async def test_add_thousands_of_users_with_credits(
    sandbox: Sandbox, sandbox_http: httpx.AsyncClient
) -> None:
    doc = await post(
        sandbox_http, "/admin/users", {"appid": APPID, "count": 2000, "credits": {ORDER_TID: 2}}
    )
    openids = doc["openids"]
    assert len(set(openids)) == 2000
    assert all(len(o) == 28 and o.startswith("o") for o in openids)
    listed = (await sandbox_http.get("/admin/users", params={"appid": APPID})).json()["openids"]
    assert set(openids) <= set(listed) and len(listed) == 2002
    token = await get_token(sandbox_http)
    reply = await send(sandbox_http, token, send_body(sandbox.world, openids[-1], ORDER_TID))
    assert reply["errcode"] == 0
    credits = await sandbox_http.get(
        "/admin/credits", params={"appid": APPID, "openid": openids[-1]}
    )
    assert credits.json()["credits"] == {ORDER_TID: 1}


async def test_add_named_users_is_idempotent(sandbox_http: httpx.AsyncClient) -> None:
    body = {"appid": APPID_B, "openids": ["oNamed000000000000000000001", OPENID]}
    assert (await post(sandbox_http, "/admin/users", body))["openids"] == body["openids"]
    await post(sandbox_http, "/admin/users", body)
    listed = (await sandbox_http.get("/admin/users", params={"appid": APPID_B})).json()
    assert len(listed["openids"]) == 3


async def test_accept_adds_credits_and_emits_popup_events(
    sandbox: Sandbox, sandbox_http: httpx.AsyncClient, events: list[dict[str, Any]]
) -> None:
    doc = await post(
        sandbox_http,
        "/admin/accept",
        {"appid": APPID, "openid": OPENID_2, "template_ids": [ORDER_TID, LONG_TID], "count": 2},
    )
    assert doc["credits"] == {ORDER_TID: 3, LONG_TID: 2}
    await sandbox.world.drain_events()
    assert len(events) == 2
    assert events[0]["event"] == "subscribe_msg_popup_event"
    assert events[0]["openid"] == OPENID_2
    assert events[0]["items"] == [
        {"template_id": ORDER_TID, "status": "accept", "scene": 0},
        {"template_id": LONG_TID, "status": "accept", "scene": 0},
    ]


async def test_accept_a_list_and_create_users(
    sandbox: Sandbox, sandbox_http: httpx.AsyncClient
) -> None:
    doc = await post(
        sandbox_http,
        "/admin/accept",
        [
            {"appid": APPID, "openid": OPENID, "template_id": ORDER_TID},
            {
                "appid": APPID,
                "openid": "oNew0000000000000000000000001",
                "template_id": ORDER_TID,
                "create_user": True,
            },
        ],
    )
    assert [d["credits"][ORDER_TID] for d in doc] == [2, 1]


async def test_reject_keeps_credits_revoke_zeroes_them(
    sandbox: Sandbox, sandbox_http: httpx.AsyncClient, events: list[dict[str, Any]]
) -> None:
    who = {"appid": APPID, "openid": OPENID, "template_id": ALL_TYPES_TID}
    assert (await post(sandbox_http, "/admin/reject", who))["credits"][ALL_TYPES_TID] == 50
    assert (await post(sandbox_http, "/admin/revoke", who))["credits"][ALL_TYPES_TID] == 0
    token = await get_token(sandbox_http)
    reply = await send(sandbox_http, token, send_body(sandbox.world, OPENID, ALL_TYPES_TID))
    assert reply["errcode"] == 43101
    await sandbox.world.drain_events()
    assert [(e["event"], e["items"][0]["status"]) for e in events] == [
        ("subscribe_msg_popup_event", "reject"),
        ("subscribe_msg_change_event", "reject"),
    ]


@pytest.mark.parametrize(
    ("path", "body", "status", "text"),
    [
        (
            "/admin/accept",
            {"appid": "wxnope", "openid": OPENID, "template_id": ORDER_TID},
            404,
            "appid",
        ),
        (
            "/admin/accept",
            {"appid": APPID, "openid": "oNobody", "template_id": ORDER_TID},
            404,
            "openid",
        ),
        (
            "/admin/accept",
            {"appid": APPID, "openid": OPENID, "template_id": "NOPE"},
            404,
            "template_id",
        ),
        ("/admin/accept", {"appid": APPID, "openid": OPENID}, 400, "template_id"),
        (
            "/admin/accept",
            {"appid": APPID, "openid": OPENID, "template_id": ORDER_TID, "count": -1},
            400,
            "count",
        ),
        ("/admin/revoke", [1], 400, "object"),
        ("/admin/users", {"appid": APPID, "credits": {"NOPE": 1}}, 404, "template_id"),
        ("/admin/users", {"appid": APPID, "openids": [""]}, 400, "openids"),
        ("/admin/faults", [], 400, "object"),
        (
            "/admin/cards/pay",
            {"appid": APPID, "openid": "oNobody", "transaction_id": "42", "amount": 1},
            404,
            "openid",
        ),
        (
            "/admin/cards/pay",
            {"appid": APPID, "openid": OPENID, "amount": 1},
            400,
            "transaction_id",
        ),
        (
            "/admin/cards/pay",
            {"appid": APPID, "openid": OPENID, "transaction_id": "42", "amount": 0},
            400,
            "amount",
        ),
        (
            "/admin/cards/pay",
            {
                "appid": APPID,
                "openid": OPENID,
                "transaction_id": "42",
                "amount": 1,
                "paid_at": "now",
            },
            400,
            "paid_at",
        ),
    ],
)
async def test_admin_errors(
    sandbox_http: httpx.AsyncClient, path: str, body: Any, status: int, text: str
) -> None:
    doc = await post(sandbox_http, path, body, status)
    assert text in doc["error"]


# --- service-card payments -----------------------------------------------------------------

CARD_CODE = "4200002043202311087295582095"


def card_body(openid: str, status: int, **extra: Any) -> dict[str, Any]:
    """A set_user_notify body for a 2001 card (content_json and check_json as JSON strings)."""
    content: dict[str, Any] = {"cur_status": status, "wxa_path_query": "pages/index/index"}
    if status == 1:
        product = {"product_img": "https://x/p.png", "product_name": "阿白",
                   "product_path_query": "pages/index/index"}  # fmt: skip
        content.update(product_count=1, product_list={"info_list": [product]})
    body = {"openid": openid, "notify_type": 2001, "notify_code": CARD_CODE}
    body["content_json"] = json.dumps(content, ensure_ascii=False)
    return body | {k: json.dumps(v) for k, v in extra.items()}


async def card_call(
    http: httpx.AsyncClient, token: str, path: str, body: dict[str, Any]
) -> dict[str, Any]:
    reply = await http.post(f"/wxa/{path}", params={"access_token": token}, json=body)
    assert reply.status_code == 200, reply.text
    doc: dict[str, Any] = reply.json()
    return doc


async def test_card_payment_over_http(
    sandbox: Sandbox, sandbox_http: httpx.AsyncClient, sandbox_clock: ManualClock
) -> None:
    """POST /admin/cards/pay does what cards.pay does in-process: the code becomes a card code
    visible_after_s (60 s) after the payment, activated with a check_json matching it."""
    now = int(sandbox_clock())
    body = {"appid": APPID, "openid": OPENID, "transaction_id": CARD_CODE, "amount": 1005}
    doc = await post(sandbox_http, "/admin/cards/pay", body)
    assert doc == body | {"paid_at": now, "visible_at": now + 60}
    token = await get_token(sandbox_http)
    get = {"openid": OPENID, "notify_type": 2001, "notify_code": CARD_CODE}

    assert (await card_call(sandbox_http, token, "get_user_notify", get))["errcode"] == 85437
    sandbox_clock.advance(60)
    got = await card_call(sandbox_http, token, "get_user_notify", get)
    assert (got["errcode"], got["notify_info"]["content_json"]) == (0, "")
    wrong = card_body(OPENID, 1, check_json={"pay_amount": 1000, "pay_time": now})
    assert (await card_call(sandbox_http, token, "set_user_notify", wrong))["errcode"] == 85433
    check = {"pay_amount": 1005, "pay_time": now}
    doc = await card_call(
        sandbox_http, token, "set_user_notify", card_body(OPENID, 1, check_json=check)
    )
    assert doc["errcode"] == 0, doc
    other = card_body(OPENID_2, 4)  # not the payer
    assert (await card_call(sandbox_http, token, "set_user_notify", other))["errcode"] == 40003
    assert sandbox.state.cards.states(APPID, CARD_CODE) == [1]

    # paid_at in the past: visible at once; the same code paid again replaces the payment
    paid = {**body, "amount": 2000, "paid_at": now - 3600}
    doc = await post(sandbox_http, "/admin/cards/pay", paid)
    assert doc["visible_at"] == now - 3600 + 60
    assert sandbox.state.cards.payments[(APPID, CARD_CODE)].amount == 2000


async def test_admin_refuses_non_json(sandbox_http: httpx.AsyncClient) -> None:
    reply = await sandbox_http.post("/admin/accept", content=b"nope")
    assert reply.status_code == 400
    unknown = await sandbox_http.get("/admin/credits", params={"appid": APPID, "openid": "x"})
    assert unknown.status_code == 404


async def test_reset_restores_the_loaded_world(
    sandbox: Sandbox, sandbox_http: httpx.AsyncClient
) -> None:
    token = await get_token(sandbox_http)
    await send(sandbox_http, token, send_body(sandbox.world, OPENID, ORDER_TID))
    await post(sandbox_http, "/admin/users", {"appid": APPID, "count": 5})
    await post(sandbox_http, "/admin/faults", {"errors": {"-1": 1.0}})
    assert (await post(sandbox_http, "/admin/reset", {})) == {"reset": True}
    assert sandbox.world.credits(APPID, OPENID)[ORDER_TID] == 1
    assert len(sandbox.world.users[APPID]) == 2
    assert len(sandbox.recorder) == 0
    assert (await send(sandbox_http, token, send_body(sandbox.world, OPENID, ORDER_TID)))[
        "errcode"
    ] == 0  # faults cleared, token kept
    await post(sandbox_http, "/admin/reset", {"tokens": True})
    assert (await send(sandbox_http, token, send_body(sandbox.world, OPENID, ORDER_TID)))[
        "errcode"
    ] == 40001


# --- recorder ---------------------------------------------------------------------------------


async def test_calls_filters(sandbox: Sandbox, sandbox_http: httpx.AsyncClient) -> None:
    token = await get_token(sandbox_http)
    for openid in (OPENID, OPENID_2, OPENID_2):
        await send(sandbox_http, token, send_body(sandbox.world, openid, ORDER_TID))

    async def calls(**params: Any) -> list[dict[str, Any]]:
        reply = await sandbox_http.get("/admin/calls", params=params)
        assert reply.status_code == 200
        found: list[dict[str, Any]] = reply.json()["calls"]
        return found

    assert len(await calls()) == 4
    assert len(await calls(endpoint="send")) == 3
    sent = await calls(endpoint="send", errcode=0)
    assert [c["openid"] for c in sent] == [OPENID, OPENID_2]
    assert (await calls(openid=OPENID_2, errcode=43101))[0]["processed"] is False
    assert len(await calls(since=sent[0]["seq"])) == 2
    assert len(await calls(dropped="true")) == 0
    assert len(await calls(template_id=ORDER_TID, processed="1")) == 2
    first = sent[0]
    assert set(first) >= {
        "seq",
        "time",
        "endpoint",
        "appid",
        "openid",
        "template_id",
        "page",
        "data",
        "miniprogram_state",
        "lang",
        "errcode",
        "errmsg",
        "msgid",
        "processed",
        "dropped",
        "reset",
        "fault",
        "latency_s",
    }
    assert first["msgid"] == sandbox.recorder.calls(errcode=0, endpoint="send")[0].msgid
    bad = await sandbox_http.get("/admin/calls", params={"color": "red"})
    assert bad.status_code == 400


async def test_record_file_is_jsonl_without_tokens(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    async with run_sandbox(load_world(world_doc()), record_path=path) as sb:
        async with http_client(sb) as http:
            token = await get_token(http)
            reply = await send(http, token, send_body(sb.world, OPENID, ORDER_TID))
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [(r["endpoint"], r["errcode"]) for r in lines] == [("stable_token", 0), ("send", 0)]
    assert lines[1]["msgid"] == reply["msgid"]
    assert lines[1]["data"]["thing3"]["value"] == "无线蓝牙耳机"
    text = path.read_text(encoding="utf-8")
    assert token not in text and SECRET not in text


# --- world files ------------------------------------------------------------------------------


def test_example_world_file_loads() -> None:
    world = load_world(REPO / "deploy" / "sandbox-world.toml")
    assert len(world.apps) == 2
    titles = {t.title for app in world.apps.values() for t in app.templates.values()}
    assert {"订单状态通知", "物流状态通知", "降价提醒", "到货提醒", "活动开始提醒"} <= titles
    assert sum(len(users) for users in world.users.values()) >= 4


def _broken(change: str) -> dict[str, Any]:
    doc = world_doc()
    app = doc["apps"][0]
    if change == "no secret":
        del app["secret"]
    elif change == "bad type":
        app["templates"][0]["content"] = "x:{{colour1.DATA}}"
    elif change == "enum without values":
        app["templates"][1]["enums"] = {}
    elif change == "credit for unknown template":
        app["users"][0]["credits"] = {"NOPE": 1}
    elif change == "repeated keyword":
        app["templates"][0]["content"] = "a:{{thing1.DATA}} b:{{thing1.DATA}}"
    elif change == "bad token config":
        doc["tokens"] = {"lifetime": 5}
    return doc


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ("no secret", "apps[0].secret"),
        ("bad type", "apps[0].templates[0].content"),
        ("enum without values", "apps[0].templates[1].enums.enum13"),
        ("credit for unknown template", "apps[0].users[0].credits.NOPE"),
        ("repeated keyword", "apps[0].templates[0].content"),
        ("bad token config", "tokens"),
    ],
)
def test_world_errors_name_the_key(change: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_world(_broken(change))
    assert info.value.key == key


def test_missing_world_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_world(tmp_path / "nope.toml")


async def test_a_failing_hook_is_logged_not_raised(
    sandbox: Sandbox, sandbox_http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(event: dict[str, Any]) -> None:
        raise RuntimeError("push failed")

    sandbox.world.on_event.append(broken)
    token = await get_token(sandbox_http)
    with caplog.at_level(logging.ERROR):
        reply = await send(sandbox_http, token, send_body(sandbox.world, OPENID, ORDER_TID))
        await sandbox.world.drain_events()
    assert reply["errcode"] == 0
    assert "sandbox event hook failed" in caplog.text


async def test_manual_clock_drives_event_time(sandbox_clock: ManualClock) -> None:
    sandbox_clock.advance(100)
    async with run_sandbox(load_world(world_doc()), clock=sandbox_clock) as sb:
        assert sb.clock() == 1_700_000_100.0


# --- the command ------------------------------------------------------------------------------


def test_sandbox_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["sandbox", "--help"])
    assert info.value.code == 0
    assert "--world" in capsys.readouterr().out


def test_sandbox_command_serves_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    record = tmp_path / "calls.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "wxsub", "sandbox", "--port", "0", "--record", str(record)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:")
        reply = httpx.get(f"{base_url}/admin/world", timeout=10)
        assert reply.status_code == 200
        # a shop's process registers a WeChat Pay payment over HTTP, then its card calls see it
        appid, openid = "wx00000000000000a1", "oUser000000000000000000000001"
        paid_at = int(time.time()) - 120  # older than the 60 s "not visible yet"
        pay = {"appid": appid, "openid": openid, "transaction_id": CARD_CODE, "amount": 1005}
        pay["paid_at"] = paid_at
        assert httpx.post(f"{base_url}/admin/cards/pay", json=pay, timeout=10).status_code == 200
        params = {"grant_type": "client_credential", "appid": appid, "secret": "sandbox-secret-a1"}
        token = httpx.get(f"{base_url}/cgi-bin/token", params=params, timeout=10).json()
        check = {"pay_amount": 1005, "pay_time": paid_at}
        reply = httpx.post(
            f"{base_url}/wxa/set_user_notify",
            params={"access_token": token["access_token"]},
            json=card_body(openid, 1, check_json=check),
            timeout=10,
        )
        assert reply.json()["errcode"] == 0, reply.text
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()

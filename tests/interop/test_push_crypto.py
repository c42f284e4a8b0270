"""Message-push crypto across the SDKs: their encrypted pushes through ``wxsub gateway`` (to the
real broker), and the sandbox's encrypted pushes read by their decryption.

The SDK side is WeChat's AES scheme as each SDK implements it for shop servers (wechatpy's
WeChatCrypto, WxJava's WxMaCryptUtils/WxMaMessage, silenceper's util.EncryptMsg).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import web

from tests.fixtures.kafka import NewTopic
from tests.fixtures.kafka_helpers import read_all
from tests.fixtures.sandbox import ALL_TYPES_TID, APPID, OPENID, ORDER_TID, send_body
from tests.gateway.conftest import start_gateway
from tests.gateway.wechat_sim import WeChatSim
from tests.interop.conftest import PUSH_AES_KEY, PUSH_TOKEN, Driver
from wxsub.schemas import SubscriptionEvent, decode
from wxsub.settings import GatewaySettings, KafkaSettings, PushEndpoint, Secret, Settings
from wxsub_sandbox import Sandbox
from wxsub_sandbox.push import EventPusher, PushTarget

ORIGINAL_ID = "gh_interop0001"


@pytest.fixture
async def gateway_url(kafka_bootstrap: str, new_topic: NewTopic) -> AsyncIterator[tuple[str, str]]:
    """(url, topic): a gateway in safe mode for APPID, producing to a fresh topic."""
    topic = await new_topic(partitions=1)
    endpoint = PushEndpoint(APPID, Secret(PUSH_TOKEN), Secret(PUSH_AES_KEY), "safe", ORIGINAL_ID)
    settings = Settings(
        kafka=KafkaSettings(bootstrap=kafka_bootstrap),
        gateway=GatewaySettings(apps={APPID: endpoint}),
    )
    runner, producer, _registry, url = await start_gateway(settings, topic)
    try:
        yield url, topic
    finally:
        await runner.cleanup()
        await producer.stop()


@pytest.mark.kafka
async def test_sdk_encrypted_push_through_the_gateway(
    sdk: Driver, gateway_url: tuple[str, str], kafka_bootstrap: str
) -> None:
    url, topic = gateway_url
    await sdk.configure(stable=True)
    sim = WeChatSim(APPID, PUSH_TOKEN, PUSH_AES_KEY, ORIGINAL_ID)
    items = [
        {"TemplateId": ORDER_TID, "SubscribeStatusString": "accept", "PopupScene": 0},
        {"TemplateId": ALL_TYPES_TID, "SubscribeStatusString": "reject", "PopupScene": 0},
    ]
    created = 1_700_000_123
    message = sim.message(OPENID, "subscribe_msg_popup_event", items, created).decode()

    sealed = await sdk.call("encrypt", message=message)
    assert sealed["ok"], sealed
    params = {
        "timestamp": sealed["timestamp"],
        "nonce": sealed["nonce"],
        "signature": sealed["signature"],
        "encrypt_type": "aes",
        "msg_signature": sealed["msg_signature"],
    }
    body = (
        f"<xml><ToUserName><![CDATA[{ORIGINAL_ID}]]></ToUserName>"
        f"<Encrypt><![CDATA[{sealed['encrypt']}]]></Encrypt></xml>"
    )
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/wechat/push/{APPID}", params=params, data=body) as resp:
            assert (resp.status, await resp.text()) == (200, "success")

    events = []
    for record in await read_all(kafka_bootstrap, topic):
        event = decode("subscription", record.value)
        assert isinstance(event, SubscriptionEvent)
        events.append(event)
    got = sorted((e.appid, e.openid, e.event, e.template_id, e.status) for e in events)
    assert got == [
        (APPID, OPENID, "popup", ALL_TYPES_TID, "reject"),
        (APPID, OPENID, "popup", ORDER_TID, "accept"),
    ]
    assert {e.create_time for e in events} == {created}


@pytest.fixture
async def captured(sandbox: Sandbox) -> AsyncIterator[list[tuple[dict[str, str], str]]]:
    """The sandbox pushing APPID's events (safe mode, XML) to a catcher that keeps them."""
    pushes: list[tuple[dict[str, str], str]] = []

    async def catch(request: web.Request) -> web.Response:
        pushes.append((dict(request.query), await request.text()))
        return web.Response(text="success")

    app = web.Application()
    app.router.add_post("/push", catch)
    runner = web.AppRunner(app)
    await runner.setup()
    pusher: EventPusher | None = None
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        target = PushTarget(
            f"http://{host}:{port}/push",
            Secret(PUSH_TOKEN),
            "safe",
            Secret(PUSH_AES_KEY),
            ORIGINAL_ID,
            "xml",
        )
        pusher = EventPusher({APPID: target}, retry_delay_s=0.05)
        pusher.attach(sandbox.world)
        yield pushes
    finally:
        if pusher is not None:
            sandbox.world.on_event.remove(pusher)
            await pusher.close()
        await runner.cleanup()


# silenceper has no push-decryption for mini programs beyond util.DecryptMsg's raw bytes
WITH_DECRYPT = ["wechatpy", "wxjava"]


@pytest.mark.parametrize("sdk_name", WITH_DECRYPT)
async def test_sandbox_pushes_read_by_the_sdk(
    sdk: Driver,
    sandbox: Sandbox,
    sandbox_http: httpx.AsyncClient,
    captured: list[tuple[dict[str, str], str]],
) -> None:
    await sdk.configure(stable=True)
    reply = await sandbox_http.post(
        "/admin/accept", json={"appid": APPID, "openid": OPENID, "template_id": ORDER_TID}
    )
    assert reply.status_code == 200
    await sandbox.world.drain_events()
    answer = await sdk.call("send", **flat(send_body(sandbox.world, OPENID, ORDER_TID)))
    assert answer["ok"], answer
    await sandbox.world.drain_events()

    read = [await sdk.call("decrypt", body=body, **sig(query)) for query, body in captured]

    assert all(r["ok"] for r in read), read
    assert [(r["event"], r["from_user"], r["to_user"]) for r in read] == [
        ("subscribe_msg_popup_event", OPENID, ORIGINAL_ID),
        ("subscribe_msg_sent_event", OPENID, ORIGINAL_ID),
    ]
    assert read[0]["items"] == [{"template_id": ORDER_TID, "status": "accept"}]
    (sent,) = sandbox.recorder.calls(endpoint="send", errcode=0)
    assert read[1]["items"][0]["template_id"] == ORDER_TID
    assert read[1]["items"][0]["msgid"] == str(sent.msgid)


def flat(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "data": {name: item["value"] for name, item in body["data"].items()}}


def sig(query: dict[str, str]) -> dict[str, str]:
    return {k: query[k] for k in ("timestamp", "nonce", "msg_signature")}

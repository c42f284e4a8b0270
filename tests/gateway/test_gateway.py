"""The gateway on a real broker: verification, every mode and format, retries, Kafka down."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import aiohttp
import pytest

from tests.fixtures.kafka_helpers import create_topic, delete_topics, unique_name
from tests.gateway.conftest import APPS, TOKEN, Gateway, app_settings, start_gateway
from tests.gateway.wechat_sim import sha1_signature
from wxsub.gateway import push_event_id
from wxsub.schemas import SubscriptionEvent
from wxsub.wechat.push_parse import parse_document, read_message

pytestmark = pytest.mark.kafka

OPENID = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"


async def test_get_verification_echoes(gateway: Gateway) -> None:
    ts, nonce = str(int(time.time())), "n0nce"
    good = {
        "timestamp": ts,
        "nonce": nonce,
        "signature": sha1_signature(TOKEN, ts, nonce),
        "echostr": "e42",
    }
    for path in ("/wechat/push/wxsafe0000000001", "/wechat/push"):
        async with gateway.http.get(gateway.url + path, params=good) as resp:
            assert (resp.status, await resp.text()) == (200, "e42")
    bad = {**good, "signature": sha1_signature("other", ts, nonce)}
    async with gateway.http.get(gateway.url + "/wechat/push/wxsafe0000000001", params=bad) as resp:
        assert resp.status == 403
    async with gateway.http.get(gateway.url + "/wechat/push/wxnope", params=good) as resp:
        assert resp.status == 404
    assert gateway.metric("wxsub_gateway_requests_total", result="verified") == 2


@pytest.mark.parametrize("fmt", ["xml", "json"])
@pytest.mark.parametrize("appid", sorted(APPS))
async def test_popup_lands_on_topic(gateway: Gateway, appid: str, fmt: str) -> None:
    sim = gateway.sim(appid, fmt)
    create_time = int(time.time())
    params, body = sim.popup(
        OPENID, {"tmpl-order-1": "accept", "tmpl-ship-2": "reject"}, create_time
    )
    assert await gateway.post(params, body, appid) == (200, "success")

    message = read_message(
        parse_document(
            body
            if sim.mode == "plain"
            else sim.message(
                OPENID,
                "subscribe_msg_popup_event",
                [
                    {
                        "TemplateId": "tmpl-order-1",
                        "SubscribeStatusString": "accept",
                        "PopupScene": 0,
                    },
                    {
                        "TemplateId": "tmpl-ship-2",
                        "SubscribeStatusString": "reject",
                        "PopupScene": 0,
                    },
                ],
                create_time,
            )
        )
    )
    occurred = datetime.fromtimestamp(create_time, UTC)
    assert await gateway.events() == [
        SubscriptionEvent(
            event_id=push_event_id(appid, message, index),
            occurred_at=occurred,
            appid=appid,
            openid=OPENID,
            event="popup",
            template_id=template,
            create_time=create_time,
            status=status,
            popup_scene=0,  # type: ignore[arg-type]
        )
        for index, (template, status) in enumerate(
            [("tmpl-order-1", "accept"), ("tmpl-ship-2", "reject")]
        )
    ]
    assert gateway.metric("wxsub_gateway_records_total", event="popup") == 2
    assert gateway.metric("wxsub_gateway_events_total", event="popup") == 1


async def test_shared_path_resolves_app_from_to_user_name(gateway: Gateway) -> None:
    for appid in sorted(APPS):
        params, body = gateway.sim(appid).popup(OPENID, {"T1": "accept"})
        assert await gateway.post(params, body) == (200, "success")
    assert sorted(r["appid"] for r in await gateway.records()) == sorted(APPS)
    params, body = gateway.sim("wxsafe0000000001").popup(OPENID, {"T1": "accept"})
    stranger = body.replace(b"gh_safe0000000001", b"gh_unknown000000")
    assert (await gateway.post(params, stranger))[0] == 404


async def test_wechat_retries_are_produced_once(gateway: Gateway) -> None:
    sim = gateway.sim("wxsafe0000000001")
    message = sim.message(
        OPENID,
        "subscribe_msg_popup_event",
        [{"TemplateId": "T1", "SubscribeStatusString": "accept"}],
        int(time.time()),
    )
    # a retry is the same message re-signed and re-encrypted (new timestamp, nonce, random)
    first = [sim.request(message) for _ in range(3)]
    results = await asyncio.gather(*(gateway.post(p, b, "wxsafe0000000001") for p, b in first))
    assert results == [(200, "success")] * 3
    params, body = sim.request(message)
    assert await gateway.post(params, body, "wxsafe0000000001") == (200, "success")
    assert len(await gateway.records()) == 1
    assert gateway.metric("wxsub_gateway_requests_total", result="duplicate") == 3


async def test_two_receipts_in_one_second_are_both_kept(gateway: Gateway) -> None:
    sim = gateway.sim("wxplain000000002", "json")
    now = int(time.time())
    for msgid, code in (("3395159288267931652", 0), ("3395159288267931653", 43101)):
        item = {"TemplateId": "T1", "MsgID": msgid, "ErrorCode": code, "ErrorStatus": "x"}
        params, body = sim.request(sim.message(OPENID, "subscribe_msg_sent_event", [item], now))
        assert await gateway.post(params, body, "wxplain000000002") == (200, "success")
    records = await gateway.records()
    assert [(r["event"], r["msgid"], r["error_code"]) for r in records] == [
        ("sent", "3395159288267931652", 0),
        ("sent", "3395159288267931653", 43101),
    ]
    assert len({r["event_id"] for r in records}) == 2


async def test_other_events_are_acknowledged_and_ignored(gateway: Gateway) -> None:
    sim = gateway.sim("wxcompat00000003")
    for event in ("user_enter_tempsession", "weapp_audit_success"):
        params, body = sim.request(sim.message(OPENID, event, [], int(time.time())))
        assert await gateway.post(params, body, "wxcompat00000003") == (200, "success")
    assert await gateway.records() == []
    assert gateway.metric("wxsub_gateway_events_total", event="other") == 2
    assert gateway.metric("wxsub_gateway_requests_total", result="ignored") == 2


async def test_metrics_endpoint_has_no_openid(gateway: Gateway) -> None:
    params, body = gateway.sim("wxsafe0000000001").popup(OPENID, {"T1": "accept"})
    await gateway.post(params, body, "wxsafe0000000001")
    async with gateway.http.get(gateway.url + "/metrics") as resp:
        text = await resp.text()
    assert 'wxsub_gateway_requests_total{result="ok"} 1.0' in text
    assert "wxsub_gateway_produce_seconds_count 1.0" in text
    assert OPENID not in text and "wxsafe0000000001" not in text


async def test_kafka_refusing_means_503_then_retry_lands_once(kafka_bootstrap: str) -> None:
    """Producing to a topic the broker does not have (auto-create is off) cannot be confirmed:
    WeChat gets a 503, nothing is written; once the topic exists WeChat's retry lands once."""
    topic = unique_name("gateway-kafka-down")
    runner, producer, registry, url = await start_gateway(
        app_settings(kafka_bootstrap), topic, produce_timeout_s=1.0
    )
    try:
        async with aiohttp.ClientSession() as http:
            gateway = Gateway(url, topic, kafka_bootstrap, registry, http)
            sim = gateway.sim("wxsafe0000000001")
            message = sim.message(
                OPENID,
                "subscribe_msg_popup_event",
                [{"TemplateId": "T1", "SubscribeStatusString": "accept"}],
                int(time.time()),
            )
            params, body = sim.request(message)
            assert (await gateway.post(params, body, "wxsafe0000000001"))[0] == 503
            assert gateway.metric("wxsub_gateway_requests_total", result="produce_failed") == 1
            await create_topic(kafka_bootstrap, topic, 3)
            params, body = sim.request(message)
            assert await gateway.post(params, body, "wxsafe0000000001") == (200, "success")
            assert [r["status"] for r in await gateway.records()] == ["accept"]
    finally:
        await runner.cleanup()
        await producer.stop()
        await delete_topics(kafka_bootstrap, [topic])

"""End to end on a real broker: sandbox admin/send -> sandbox push -> gateway -> subscriptions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp
import httpx
import pytest

from tests.fixtures.kafka import NewTopic
from tests.fixtures.sandbox import (
    ALL_TYPES_TID,
    APPID,
    APPID_B,
    B_TID,
    OPENID,
    OPENID_B,
    ORDER_TID,
    get_token,
    send,
    send_body,
)
from tests.gateway.conftest import AES_KEY, TOKEN, Gateway, start_gateway
from wxsub.schemas import SubscriptionEvent
from wxsub.settings import GatewaySettings, KafkaSettings, PushEndpoint, Secret, Settings
from wxsub_sandbox import Sandbox
from wxsub_sandbox.push import EventPusher, PushTarget

pytestmark = pytest.mark.kafka


def push_settings(bootstrap: str) -> Settings:
    endpoints = {
        APPID: PushEndpoint(APPID, Secret(TOKEN), Secret(AES_KEY), "safe", "gh_testshop_a"),
        APPID_B: PushEndpoint(APPID_B, Secret(TOKEN), None, "plain", "gh_testshop_b"),
    }
    return Settings(
        kafka=KafkaSettings(bootstrap=bootstrap), gateway=GatewaySettings(apps=endpoints)
    )


@pytest.fixture
async def wired(
    kafka_bootstrap: str, new_topic: NewTopic, sandbox: Sandbox
) -> AsyncIterator[tuple[Gateway, EventPusher]]:
    """Gateway on a fresh topic; the sandbox pushing to it (app A: safe XML, app B: plain JSON)."""
    topic = await new_topic(partitions=3)
    settings = push_settings(kafka_bootstrap)
    runner, producer, registry, url = await start_gateway(settings, topic)
    pusher = EventPusher.from_settings(settings, url, retry_delay_s=0.05)
    target_b = pusher.targets[APPID_B]
    pusher.targets = {
        **pusher.targets,
        APPID_B: PushTarget(target_b.url, target_b.token, "plain", None, "gh_testshop_b", "json"),
    }
    pusher.attach(sandbox.world)
    try:
        async with aiohttp.ClientSession() as http:
            yield Gateway(url, topic, kafka_bootstrap, registry, http), pusher
    finally:
        sandbox.world.on_event.remove(pusher)
        await pusher.close()
        await runner.cleanup()
        await producer.stop()


async def admin(sandbox: Sandbox, http: httpx.AsyncClient, path: str, body: dict) -> None:  # type: ignore[type-arg]
    reply = await http.post(f"/admin/{path}", json=body)
    assert reply.status_code == 200, reply.text
    await sandbox.world.drain_events()


async def test_sandbox_events_land_on_the_topic(
    wired: tuple[Gateway, EventPusher], sandbox: Sandbox, sandbox_http: httpx.AsyncClient
) -> None:
    gateway, pusher = wired
    t0 = int(sandbox.clock())
    await admin(
        sandbox,
        sandbox_http,
        "accept",
        {"appid": APPID, "openid": OPENID, "template_ids": [ORDER_TID, ALL_TYPES_TID], "scene": 2},
    )
    sandbox.clock.advance(1)  # type: ignore[attr-defined]
    await admin(
        sandbox,
        sandbox_http,
        "reject",
        {"appid": APPID, "openid": OPENID, "template_id": ORDER_TID},
    )
    sandbox.clock.advance(1)  # type: ignore[attr-defined]
    token = await get_token(sandbox_http)
    reply = await send(sandbox_http, token, send_body(sandbox.world, OPENID, ORDER_TID))
    assert reply["errcode"] == 0
    await sandbox.world.drain_events()
    sandbox.clock.advance(1)  # type: ignore[attr-defined]
    await admin(
        sandbox,
        sandbox_http,
        "revoke",
        {"appid": APPID, "openid": OPENID, "template_id": ALL_TYPES_TID},
    )
    await admin(
        sandbox,
        sandbox_http,
        "accept",
        {"appid": APPID_B, "openid": OPENID_B, "template_id": B_TID},
    )

    assert [(r.event, r.delivered, r.attempts) for r in pusher.results] == [
        ("subscribe_msg_popup_event", True, 1),
        ("subscribe_msg_popup_event", True, 1),
        ("subscribe_msg_sent_event", True, 1),
        ("subscribe_msg_change_event", True, 1),
        ("subscribe_msg_popup_event", True, 1),
    ]
    events = await gateway.events()
    assert len({e.event_id for e in events}) == len(events) == 6

    def ev(
        appid: str, openid: str, offset: int, event: str, tid: str, **kw: object
    ) -> SubscriptionEvent:
        ct = t0 + offset
        return SubscriptionEvent(
            event_id="",
            occurred_at=datetime.fromtimestamp(ct, UTC),
            appid=appid,
            openid=openid,
            event=event,
            template_id=tid,
            create_time=ct,
            **kw,  # type: ignore[arg-type]
        )

    expected = [
        ev(APPID, OPENID, 0, "popup", ORDER_TID, status="accept", popup_scene=2),
        ev(APPID, OPENID, 0, "popup", ALL_TYPES_TID, status="accept", popup_scene=2),
        ev(APPID, OPENID, 1, "popup", ORDER_TID, status="reject", popup_scene=0),
        ev(
            APPID,
            OPENID,
            2,
            "sent",
            ORDER_TID,
            msgid=str(reply["msgid"]),
            error_code=0,
            error_status="success",
        ),
        ev(APPID, OPENID, 3, "change", ALL_TYPES_TID, status="reject"),
        ev(APPID_B, OPENID_B, 3, "popup", B_TID, status="accept", popup_scene=0),
    ]
    got = sorted((e._replace(event_id="") for e in events), key=lambda e: (e.appid, e.create_time))
    assert got == expected
    assert gateway.metric("wxsub_gateway_records_total", event="popup") == 4


async def test_pusher_retries_like_wechat_then_gives_up(
    wired: tuple[Gateway, EventPusher], sandbox: Sandbox, sandbox_http: httpx.AsyncClient
) -> None:
    gateway, pusher = wired
    target = pusher.targets[APPID]
    pusher.targets = {
        APPID: PushTarget(
            target.url.replace(APPID, "wxnotconfigured01"),
            target.token,
            "safe",
            target.aes_key,
            target.original_id,
        )
    }
    await admin(
        sandbox,
        sandbox_http,
        "accept",
        {"appid": APPID, "openid": OPENID, "template_id": ORDER_TID},
    )
    assert [(r.delivered, r.attempts, r.last_status) for r in pusher.results] == [(False, 4, 404)]
    assert gateway.metric("wxsub_gateway_rejected_total", reason="unknown_app") == 4
    assert await gateway.events() == []

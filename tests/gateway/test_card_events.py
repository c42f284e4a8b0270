"""Service-card failure events (``notify_service_msg_send_result``) through the gateway on a real
broker: XML and JSON, plain, compatible and safe (encrypted) mode, the ``p1.`` prefix kept for the
card stage; the record is the one the card stage reads (``parse_card_event``), keyed by user;
retries produced once; malformed card events refused with a reason and counted, nothing produced.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from tests.fixtures.kafka import NewTopic
from tests.fixtures.kafka_helpers import read_all
from tests.gateway.conftest import APPS, Gateway, app_settings, start_gateway
from tests.gateway.wechat_sim import WeChatSim, xml_doc
from wxsub.agents.cards import parse_card_event

pytestmark = pytest.mark.kafka

OPENID = "o7esq5PHRGBQYmeNyfG064wEFVpQ"
EVENT = "notify_service_msg_send_result"


def card_message(sim: WeChatSim, create_time: int, **fields: Any) -> bytes:
    """The official example's shape (GUIDE §1.5), flat fields, in the sim's format."""
    doc: dict[str, Any] = {
        "ToUserName": sim.original_id,
        "FromUserName": OPENID,
        "CreateTime": create_time,
        "MsgType": "event",
        "Event": EVENT,
        "openid": OPENID,
        "notify_code": "p1.4200002043202311087295582095",
        "notify_type": 2006,
        "card_status": 4,
        "fail_ret": -1004,
        "fail_msg": "user reject message ",
    }
    doc.update(fields)
    doc = {k: v for k, v in doc.items() if v is not None}
    return orjson.dumps(doc) if sim.fmt == "json" else xml_doc(doc)


@pytest.fixture
async def card_gateway(kafka_bootstrap: str, new_topic: NewTopic) -> AsyncIterator[Gateway]:
    """A gateway whose card sink is a fresh ``card-events`` topic (``Gateway.topic``); its
    subscriptions go to another fresh topic (``Gateway.subs``)."""
    subs, cards = await new_topic(partitions=3), await new_topic(partitions=3)
    runner, producer, registry, url = await start_gateway(
        app_settings(kafka_bootstrap), subs, card_topic=cards
    )
    try:
        async with aiohttp.ClientSession() as http:
            gw = Gateway(url, cards, kafka_bootstrap, registry, http)
            gw.subs = subs  # type: ignore[attr-defined]
            yield gw
    finally:
        await runner.cleanup()
        await producer.stop()


@pytest.mark.parametrize("fmt", ["xml", "json"])
@pytest.mark.parametrize("appid", sorted(APPS))
async def test_card_event_lands_on_card_events(card_gateway: Gateway, appid: str, fmt: str) -> None:
    gw = card_gateway
    sim = gw.sim(appid, fmt)
    params, body = sim.request(card_message(sim, int(time.time())))
    assert await gw.post(params, body, appid) == (200, "success")
    assert await gw.post(params, body, appid) == (200, "success")  # WeChat's retry: once

    recs = await read_all(gw.bootstrap, gw.topic)
    assert len(recs) == 1
    assert recs[0].key == f"{appid}:{OPENID}".encode()
    ev = parse_card_event(recs[0].value)  # what the card stage reads
    assert ev["appid"] == appid and ev["openid"] == OPENID
    assert ev["notify_code"] == "p1.4200002043202311087295582095"
    assert (ev["notify_type"], ev["card_status"], ev["fail_ret"]) == (2006, 4, -1004)
    assert ev["fail_msg"] == "user reject message" and len(ev["event_id"]) == 32
    assert await read_all(gw.bootstrap, gw.subs) == []  # type: ignore[attr-defined]
    assert gw.metric("wxsub_gateway_events_total", event="card") == 1
    assert gw.metric("wxsub_gateway_records_total", event="card") == 1
    assert gw.metric("wxsub_gateway_requests_total", result="duplicate") == 1


async def test_two_card_events_in_one_second_are_both_kept(card_gateway: Gateway) -> None:
    gw, appid = card_gateway, "wxsafe0000000001"
    sim, now = gw.sim(appid, "json"), int(time.time())
    for fail_ret in (-1005, -10002):
        params, body = sim.request(card_message(sim, now, fail_ret=fail_ret))
        assert await gw.post(params, body, appid) == (200, "success")
    recs = await read_all(gw.bootstrap, gw.topic)
    assert sorted(parse_card_event(r.value)["fail_ret"] for r in recs) == [-10002, -1005]
    assert len({parse_card_event(r.value)["event_id"] for r in recs}) == 2


BROKEN: list[tuple[str, dict[str, Any]]] = [
    ("no notify_code", {"notify_code": None}),
    ("prefix only", {"notify_code": "p1."}),
    ("notify_type text", {"notify_type": "card"}),
    ("fail_ret not a number", {"fail_ret": "-10o4"}),
    ("no card_status", {"card_status": None}),
    ("negative card_status", {"card_status": -4}),
    ("openid of someone else", {"openid": "oSomebodyElse000000000000000"}),
]


@pytest.mark.parametrize("fmt", ["xml", "json"])
async def test_malformed_card_events_are_refused_and_counted(
    card_gateway: Gateway, fmt: str
) -> None:
    gw, appid = card_gateway, "wxsafe0000000001"
    sim, now = gw.sim(appid, fmt), int(time.time())
    for n, (why, fields) in enumerate(BROKEN):
        params, body = sim.request(card_message(sim, now + n, **fields))
        assert await gw.post(params, body, appid) == (400, "malformed"), why
    assert gw.metric("wxsub_gateway_rejected_total", reason="malformed") == len(BROKEN)
    assert gw.metric("wxsub_gateway_records_total", event="card") == 0
    assert await read_all(gw.bootstrap, gw.topic) == []
    assert await gw.healthy()

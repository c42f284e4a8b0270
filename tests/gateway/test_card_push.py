"""End to end on a real broker: the sandbox's card failure events (``refuse`` -> -1004,
``fail_next`` -> -1005) pushed by the EventPusher (safe mode, encrypted XML) -> the gateway ->
``card-events`` -> the card stage. -1004 ends the card: no later state reaches WeChat, and no
classic message goes out for that order; -1005 is counted under the label the
WxsubCardDeliveryRefused alert selects, and the card goes on."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import generate_latest

from tests.cards.test_cards_kafka import order_event, stages
from tests.deliver.harness import make_settings, make_world
from tests.fixtures.kafka_helpers import read_all
from tests.fixtures.sandbox import APPID, OPENID
from tests.gateway.conftest import AES_KEY, TOKEN, start_gateway
from tests.observability.catalog import alert_rules
from wxsub.settings import GatewaySettings, PushEndpoint, Secret
from wxsub.streams.topics import ensure_topics
from wxsub_sandbox import run_sandbox
from wxsub_sandbox.push import EventPusher

pytestmark = pytest.mark.kafka

REFUSED, NOISY = "4200000000000000000101", "4200000000000000000102"


async def _wait(check: Callable[[], Coroutine[Any, Any, bool]], timeout: float = 60) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.2)


def _alert_selects(fail_ret: str) -> bool:
    """Whether WxsubCardDeliveryRefused's selector takes this wxsub_card_failures_total label."""
    (rule,) = [r for r in alert_rules() if r["alert"] == "WxsubCardDeliveryRefused"]
    found = re.search(r'wxsub_card_failures_total\{fail_ret=~"([^"]+)"\}', rule["expr"])
    assert found, rule["expr"]
    return re.fullmatch(found.group(1), fail_ret) is not None


async def test_sandbox_failure_events_reach_the_card_stage(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with run_sandbox(make_world()) as sandbox:
        book = sandbox.state.cards
        book.visible_after_s = 0
        base = make_settings(kafka_bootstrap, sandbox.base_url, partitions=2)
        endpoint = PushEndpoint(APPID, Secret(TOKEN), Secret(AES_KEY), "safe", "gh_testshop_a")
        settings = replace(base, gateway=GatewaySettings(apps={APPID: endpoint}))
        await ensure_topics(settings.kafka, settings.worker.app_id)
        card_events = settings.kafka.topic("card-events")
        runner, producer, _, url = await start_gateway(
            settings, settings.kafka.topic("subscriptions"), card_topic=card_events
        )
        pusher = EventPusher.from_settings(settings, url, retry_delay_s=0.05)
        pusher.attach(sandbox.world)
        paid = int(time.time()) - 10
        book.pay(APPID, OPENID, REFUSED, 1005, paid)
        book.pay(APPID, OPENID, NOISY, 1005, paid)
        book.refuse(APPID, REFUSED)  # the activation is accepted, then pushed back: -1004
        book.fail_next(APPID, NOISY, -1005)
        kafka = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await kafka.start()

        async def send(order: str, status: str, n: int, code: str) -> None:
            ev = order_event(order, status, n, code, paid)
            topic = settings.kafka.topic("order-status")
            await kafka.send_and_wait(topic, orjson.dumps(ev), key=f"{APPID}:{order}".encode())

        try:
            async with stages(settings, tmp_path) as metrics:
                await send("R", "paid", 0, REFUSED)
                await send("N", "paid", 0, NOISY)

                async def failures_handled() -> bool:
                    refused = metrics.cards.labels("refused", "")._value.get() == 1
                    noisy = metrics.card_failures.labels("-1005")._value.get() == 1
                    return refused and noisy

                await _wait(failures_handled)
                for n, status in enumerate(["shipped", "delivered"], start=1):
                    await send("R", status, n, REFUSED)
                    await send("N", status, n, NOISY)

                async def noisy_moved_on() -> bool:
                    return book.states(APPID, NOISY) == [1, 4, 6]

                await _wait(noisy_moved_on)

                async def r_decided() -> bool:  # R's three events have their outcomes
                    recs = await read_all(kafka_bootstrap, settings.kafka.topic("outcomes"))
                    docs = [orjson.loads(r.value) for r in recs]
                    ids = {d["event_id"] for d in docs if d["reason"] != "card_refused"}
                    return sum(i.startswith("R-") for i in ids) == 3

                await _wait(r_decided)
                exposition = generate_latest(metrics.registry).decode()
        finally:
            await kafka.stop()
            sandbox.world.on_event.remove(pusher)
            await pusher.close()
            await runner.cleanup()
            await producer.stop()

        assert [r.delivered for r in pusher.results] == [True, True]
        recs = await read_all(kafka_bootstrap, card_events)
        got = sorted(
            (orjson.loads(r.value)["notify_code"], orjson.loads(r.value)["fail_ret"]) for r in recs
        )
        assert got == [(f"p1.{REFUSED}", -1004), (f"p1.{NOISY}", -1005)]
        assert {r.key for r in recs} == {f"{APPID}:{OPENID}".encode()}
        assert book.states(APPID, REFUSED) == [1]  # refused: no update after -1004
        sets = sandbox.recorder.calls(endpoint="set_user_notify")
        assert len([c for c in sets if c.notify_code == REFUSED]) == 1
        cands = await read_all(kafka_bootstrap, settings.kafka.topic("candidates"))
        assert [orjson.loads(r.value)["subject"] for r in cands] == []  # never classic
        assert metrics.card_failures.labels("-1004")._value.get() == 1
        # the refusal is user feedback: one card_refused outcome for order R's user (stats)
        outs = [orjson.loads(r.value) for r in await read_all(
            kafka_bootstrap, settings.kafka.topic("outcomes"))]  # fmt: skip
        refusals = [(o["appid"], o["openid"], o["event_id"][:2]) for o in outs
                    if o["reason"] == "card_refused"]  # fmt: skip
        assert refusals == [(APPID, OPENID, "R-")]
        # the alert's selector sees -1005 (and -10002), not the user's -1004
        assert 'wxsub_card_failures_total{fail_ret="-1005"} 1.0' in exposition
        assert _alert_selects("-1005") and _alert_selects("-10002")
        assert not _alert_selects("-1004")

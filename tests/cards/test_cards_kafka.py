"""Service cards on a real broker against the sandbox: the orders and card stages in-process.

Orders with a WeChat Pay transaction id get a 2001 card whose states in the sandbox are the ones
the mapping says, in order; the classic template is not produced for them (never both); an order
without a transaction id keeps the classic path; an illegal transition ends with an outcome; a
dropped set answer is settled by getUserNotify (no second call); a refused activation falls back
to the classic path: the classic candidate held while the activation was pending goes to decide,
and so do later events; every event ends exactly once (an outcome or a candidate)."""

from __future__ import annotations

import asyncio
import time
import tomllib
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from tests.deliver.harness import make_settings, make_world
from tests.fixtures.kafka_helpers import read_all
from tests.fixtures.sandbox import APPID, OPENID, ORDER_TID
from wxsub.agents.base import StageEnv
from wxsub.agents.cards import CardStage
from wxsub.agents.orders import OrdersStage
from wxsub.merchants import parse_merchants
from wxsub.settings import Settings
from wxsub.streams.metrics import WorkerMetrics
from wxsub.streams.runtime import StageRunner
from wxsub.streams.topics import changelog_name, ensure_topics
from wxsub.wechat.client import WeChatClient
from wxsub_sandbox import FaultSpec, run_sandbox

pytestmark = pytest.mark.kafka

MERCHANTS = f"""
[apps.{APPID}.kinds.order_status]
template_id = "{ORDER_TID}"
content = "订单号:{{{{character_string1.DATA}}}}\\n订单状态:{{{{phrase2.DATA}}}}"
notify_on = ["paid", "shipped", "delivered", "cancelled", "refunded"]
[apps.{APPID}.kinds.order_status.data]
character_string1 = "{{order_id}}"
phrase2 = "{{status_text}}"
[apps.{APPID}.cards]
type = 2001
wxa_path_query = "pages/order/detail?id={{order_id}}"
product_img = "https://shop.example/img/p.png"
"""


def order_event(order_id: str, status: str, n: int, txid: str | None, paid: int) -> dict[str, Any]:
    at = datetime.fromtimestamp(paid + n, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    doc: dict[str, Any] = {
        "type": "order_status", "v": 1, "event_id": f"{order_id}-{n}-{status}",
        "occurred_at": at, "appid": APPID, "openid": OPENID, "order_id": order_id,
        "status": status, "amount": 1005,
        "items": [{"sku_id": "s1", "title": "阿白", "quantity": 1, "price": 1005}],
    }  # fmt: skip
    if txid is not None:
        doc.update(transaction_id=txid, pay_amount=1005)
        doc["paid_at"] = datetime.fromtimestamp(paid, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return doc


def _runner(settings: Settings, stage: Any, state_dir: Path) -> StageRunner:
    kafka, app_id = settings.kafka, settings.worker.app_id
    return StageRunner(
        stage,
        bootstrap=kafka.bootstrap,
        app_id=app_id,
        state_dir=state_dir / stage.spec.name,
        changelog_topic=lambda s, store: changelog_name(kafka, app_id, s, store),
        max_batch=50,
        commit_interval_ms=20,
        session_timeout_ms=6000,
    )


@asynccontextmanager
async def stages(settings: Settings, state_dir: Path) -> AsyncIterator[WorkerMetrics]:
    metrics = WorkerMetrics()
    merchants = parse_merchants(tomllib.loads(MERCHANTS))
    env = StageEnv(settings, merchants, metrics)
    client = WeChatClient(settings.wechat)
    runners = [
        _runner(settings, OrdersStage(env), state_dir),
        _runner(settings, CardStage(env, client), state_dir),
    ]
    tasks = [asyncio.create_task(r.run()) for r in runners]
    try:
        async with asyncio.timeout(30):
            for r in runners:
                await r.ready.wait()
        yield metrics
    finally:
        for r in runners:
            await r.stop()
        await asyncio.wait(tasks, timeout=15)
        await client.aclose()


async def _wait(check: Any, timeout: float = 60) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.2)


async def test_card_lifecycle_never_both_illegal_in_doubt_and_fallback(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    world = make_world()
    async with run_sandbox(world) as sandbox:
        sandbox.state.cards.visible_after_s = 0
        settings = make_settings(kafka_bootstrap, sandbox.base_url, partitions=2)
        await ensure_topics(settings.kafka, settings.worker.app_id)
        paid = int(time.time()) - 10
        book = sandbox.state.cards
        book.pay(APPID, OPENID, "4200000000000000000001", 1005, paid)  # A: full life
        book.pay(APPID, OPENID, "4200000000000000000002", 1005, paid)  # B: illegal cancel
        book.pay(APPID, OPENID, "4200000000000000000003", 1005, paid)  # C: dropped answer
        book.pay(APPID, OPENID, "4200000000000000000004", 999, paid)  # D: amount mismatch
        # C's first set is processed by WeChat, but its answer is lost
        sandbox.faults.set(
            FaultSpec.from_json({"endpoints": ["set_user_notify"], "next": [{"action": "drop"}]})
        )
        events = [order_event("C", "paid", 0, "4200000000000000000003", paid)]
        for n, status in enumerate(["paid", "shipped", "delivered", "completed"]):
            events.append(order_event("A", status, n, "4200000000000000000001", paid))
        for n, status in enumerate(["paid", "shipped", "cancelled"]):
            events.append(order_event("B", status, n, "4200000000000000000002", paid))
        events.append(order_event("D", "paid", 0, "4200000000000000000004", paid))
        events.append(order_event("E", "paid", 0, None, paid))  # no WeChat Pay: classic
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        try:
            for ev in events:
                key = f"{APPID}:{ev['order_id']}".encode()
                await producer.send_and_wait(
                    settings.kafka.topic("order-status"), orjson.dumps(ev), key=key
                )
            async with stages(settings, tmp_path) as metrics:

                async def settled() -> bool:
                    done = book.states(APPID, "4200000000000000000001") == [1, 4, 6, 8]
                    c = book.states(APPID, "4200000000000000000003") == [1]
                    fallback = metrics.cards.labels("fallback", "85433")._value.get() == 1
                    reconciled = metrics.cards.labels("reconciled", "")._value.get() == 1
                    return done and c and fallback and reconciled

                await _wait(settled)
                # D fell back: a later event of D goes the classic way
                late = order_event("D", "shipped", 5, "4200000000000000000004", paid)
                await producer.send_and_wait(
                    settings.kafka.topic("order-status"), orjson.dumps(late),
                    key=f"{APPID}:D".encode(),
                )  # fmt: skip

                async def d_classic() -> bool:
                    recs = await read_all(kafka_bootstrap, settings.kafka.topic("candidates"))
                    ids = {orjson.loads(r.value)["event_id"] for r in recs}
                    return {"D-0-paid", "D-5-shipped"} <= ids

                await _wait(d_classic)
                await asyncio.sleep(1.5)  # settle: extras would show
        finally:
            await producer.stop()
        assert book.states(APPID, "4200000000000000000001") == [1, 4, 6, 8]
        assert book.states(APPID, "4200000000000000000002") == [1, 4]  # 4 -> 10 not allowed
        assert book.states(APPID, "4200000000000000000003") == [1]
        assert book.states(APPID, "4200000000000000000004") == []
        # C's set was called once (dropped), then settled by getUserNotify, never resent
        sets = sandbox.recorder.calls(endpoint="set_user_notify")
        c_sets = [c for c in sets if c.notify_code == "4200000000000000000003"]
        assert len(c_sets) == 1
        assert sandbox.recorder.calls(endpoint="get_user_notify")
        # never both: classic candidates only for E (no transaction id) and D: its paid event,
        # held while the activation was pending and released by the fallback, and the later one
        recs = await read_all(kafka_bootstrap, settings.kafka.topic("candidates"))
        cands = [orjson.loads(r.value)["event_id"] for r in recs]
        assert sorted(cands) == ["D-0-paid", "D-5-shipped", "E-0-paid"]
        outs = [orjson.loads(r.value) for r in await read_all(
            kafka_bootstrap, settings.kafka.topic("outcomes")
        )]  # fmt: skip
        reasons = Counter((o["event_id"].split("-")[0], o["reason"]) for o in outs)
        assert reasons[("A", "card_update")] == 4
        assert reasons[("B", "card_illegal")] == 1
        assert reasons[("C", "card_update")] == 1  # held, ended by the reconciled activation
        assert not [o for o in outs if o["event_id"].startswith("D")]  # D ends in decide
        ended = Counter(cands) + Counter(o["event_id"] for o in outs)
        assert ended == Counter({ev["event_id"]: 1 for ev in [*events, late]})  # exactly once
        # A 3 (completed does not notify), B 3 (cancelled: illegal, replaced), C 1; D none
        assert metrics.card_saved.labels("order_status")._value.get() == 7

"""The decide stage honours the pauses in force: on a real broker, a kind paused on the
``pauses`` topic (as ``wxsub pauses set`` writes it) ends its candidates as ``paused`` before a
credit is spent; another kind of the same app is decided as usual."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from tests.fixtures.kafka_helpers import read_all
from tests.lifecycle.harness import at, lifecycle
from wxsub.agents.decide import DecideStage
from wxsub.agents.kind_pauses import KindPauses
from wxsub.merchants import parse_merchants
from wxsub.pauses_cli import write_pause
from wxsub.schemas.internal import Candidate, Outcome, decode_internal, encode_internal
from wxsub.schemas.records import SubscriptionEvent

pytestmark = pytest.mark.kafka

APP = "wxPaused"
CONTENT = "订单号:{{character_string1.DATA}}\n订单状态:{{phrase2.DATA}}"
DATA = {"character_string1": "{event_id}", "phrase2": "{subject}"}
HOUR = 3_600_000


async def test_decide_ends_a_paused_kind_without_spending_a_credit(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    kind = {"template_id": "TPL", "content": CONTENT, "data": DATA}
    merchants = parse_merchants({"apps": {APP: {"kinds": {"order_status": kind}}}})
    async with lifecycle(kafka_bootstrap, tmp_path, merchants) as lc:
        now = lc.clock()
        accept = SubscriptionEvent("s-1", at(now - HOUR), APP, "u1", "popup", "TPL",
                                   (now - HOUR) // 1000, "accept")  # type: ignore[arg-type]  # fmt: skip
        await lc.publish([("subscriptions", accept)])
        await write_pause(lc.settings, APP, "order_status", True, "operator: test")
        pauses = KindPauses(lc.env)
        await pauses.start()  # reads the pauses topic whole, as the worker does before stages
        try:
            assert pauses.why(APP, "order_status") == "operator: test"
            cand = Candidate("order_status", APP, "u1", "c-1", now, now, "o1", {"status": "paid"})
            async with lc.running(DecideStage(lc.env, pauses)):
                producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
                await producer.start()
                await producer.send_and_wait(lc.topic("candidates"), encode_internal(cand),
                                             key=f"{APP}:u1".encode())  # fmt: skip
                await producer.stop()
                outcomes: list[Outcome] = []
                for _ in range(100):  # bounded: the candidate's outcome
                    recs = await read_all(lc.settings.kafka.bootstrap, lc.topic("outcomes"))
                    outcomes = [decode_internal(Outcome, r.value) for r in recs]
                    if any(o.event_id == "c-1" for o in outcomes):
                        break
                    await asyncio.sleep(0.2)
                users = await lc.until(
                    lc.changelog("decide", "users"),
                    lambda latest: b"c-1" in (latest.get(f"{APP}:u1".encode()) or b""),
                )
        finally:
            await pauses.stop()
        (ended,) = [o for o in outcomes if o.event_id == "c-1"]
        assert (ended.reason, ended.detail) == ("paused", "kind paused: operator: test")
        intents = await read_all(lc.settings.kafka.bootstrap, lc.topic("intents"))
        assert intents == []  # nothing to deliver
        stored = orjson.loads(users[f"{APP}:u1".encode()] or b"{}")
        assert stored["credits"] == {"TPL": 1}  # the accept's credit, not spent

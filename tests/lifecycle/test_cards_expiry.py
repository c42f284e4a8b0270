"""The ``cards`` store on a real broker, against the WeChat sandbox: an ended card is deleted at
the end of its window (here the 24 h activation window of a card paid almost 24 h ago, on the
wall clock the card stage's timer reads), tombstoned in the changelog with its due-index entry,
counted in ``wxsub_expired_total``; a live card stays, the gauge counts what is left, and a
worker with an empty state directory restores the live card only."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from tests.deliver.harness import make_world
from tests.fixtures.kafka_helpers import read_all
from tests.fixtures.sandbox import APPID, OPENID
from tests.lifecycle.harness import lifecycle, metric
from wxsub.agents.cards import CardStage
from wxsub.agents.rules.cards import ACTIVATE_WINDOW_MS, CardOp
from wxsub.schemas.internal import encode_internal
from wxsub.schemas.records import user_key
from wxsub.streams.due import DueIndex
from wxsub.wechat.client import WeChatClient
from wxsub_sandbox import run_sandbox

pytestmark = pytest.mark.kafka

ENDING, LIVE = "4200000000000000000091", "4200000000000000000092"
MARGIN_S = 10  # the ending card's activation window ends this long after it is published


def card_op(code: str, amount: int, paid_s: int) -> CardOp:
    item = {"product_img": "https://shop.example/img/p.png", "product_name": "阿白",
            "product_path_query": "p", "count": 1}  # fmt: skip
    content: dict[str, Any] = {"cur_status": 1, "wxa_path_query": "pages/order/detail?id=1",
                               "product_count": 1,
                               "product_list": {"info_list": [item]}}  # fmt: skip
    return CardOp(APPID, OPENID, f"order-{code[-2:]}", code, 2001, 1, 1, content, f"e-{code}",
                  paid_s * 1000, amount, paid_s)  # fmt: skip


async def test_an_ended_card_is_deleted_at_its_window_end_and_restored_live_only(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with run_sandbox(make_world()) as sandbox:
        book = sandbox.state.cards
        book.visible_after_s = 0
        async with lifecycle(kafka_bootstrap, tmp_path, api_base=sandbox.base_url) as lc:
            ending_key, live_key = (f"c|{APPID}:{c}".encode() for c in (ENDING, LIVE))
            log = lc.changelog("cards", "cards")
            client = WeChatClient(lc.settings.wechat)
            try:
                async with lc.running(CardStage(lc.env, client)):
                    now_s = int(time.time())
                    paid_s = now_s - ACTIVATE_WINDOW_MS // 1000 + MARGIN_S
                    book.pay(APPID, OPENID, ENDING, 1005, paid_s)
                    book.pay(APPID, OPENID, LIVE, 1005, now_s)
                    # ENDING's activation is refused (amount 999: 85433): it falls back, and its
                    # entry waits (phase fallback) for its activation window's end
                    ops = [card_op(ENDING, 999, paid_s), card_op(LIVE, 1005, now_s)]
                    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
                    await producer.start()
                    try:
                        for op in ops:
                            await producer.send_and_wait(
                                lc.topic("card-ops"), encode_internal(op),
                                key=user_key(APPID, OPENID).encode(),
                            )  # fmt: skip
                    finally:
                        await producer.stop()
                    got = await lc.until(
                        log, lambda latest: latest.get(ending_key, b"") is None, timeout=60
                    )
                    assert got[ending_key] is None and got[live_key] is not None
                    labels = {"store": "cards", "reason": "card_activation_window"}
                    assert await metric(lc, "wxsub_expired_total", 1, **labels) == 1
                    # the live card and its due-index entry (its update window's end)
                    live = {"stage": "cards", "store": "cards"}
                    assert await metric(lc, "wxsub_store_entries", 2, **live) == 2
                    fallbacks = lc.metrics.cards.labels("fallback", "85433")._value.get()
                    assert fallbacks == 1
            finally:
                await client.aclose()
            history = [r for r in await read_all(kafka_bootstrap, log) if r.key == ending_key]
            assert history[0].value is not None and history[-1].value is None
            latest = await lc.latest(log)
            due_keys = {k for k in latest if k.startswith(DueIndex.PREFIX)}
            assert all(latest[k] is None for k in due_keys if k.endswith(b"|" + ending_key))
            assert [k for k in due_keys if latest[k] is not None and k.endswith(live_key)]
            assert book.states(APPID, LIVE) == [1] and book.states(APPID, ENDING) == []
            local = lc.local("state", "cards", "cards")
            assert {k for k in local if not k.startswith(DueIndex.PREFIX)} == {live_key}
            assert len(local) == 2
            # a worker with an empty state directory restores the live card only
            client2 = WeChatClient(lc.settings.wechat)
            try:
                async with lc.running(CardStage(lc.env, client2), state="state2"):
                    pass
            finally:
                await client2.aclose()
            assert lc.local("state2", "cards", "cards") == local

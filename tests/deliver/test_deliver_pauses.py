"""Auto-pause on a real broker and the sandbox: WeChat's 43107 pauses the kind for the app on the
pauses topic; every later send of that kind ends ``paused`` (nothing reaches WeChat, the credit
goes back) until ``wxsub pauses lift``, which the stage follows; other kinds keep going."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from tests.deliver.harness import harness, intent, make_world, run_stage
from tests.fixtures.sandbox import APPID, BANNED_TID, OPENID
from wxsub.agents.kind_pauses import KindPauses
from wxsub.pauses_cli import live_pauses, write_pause

pytestmark = pytest.mark.kafka

USERS = [f"oLoad{i:023d}" for i in range(6)]


async def test_43107_pauses_the_kind_until_lifted(kafka_bootstrap: str, tmp_path: Path) -> None:
    world = make_world(users=len(USERS), credits=3)
    async with harness(kafka_bootstrap, world) as h, run_stage(h.settings, tmp_path) as (st, m):
        st.kind_pauses = pauses = KindPauses(st.env)  # following the topic, as in the worker
        await pauses.start()
        follow = asyncio.create_task(pauses.run())
        try:
            banned = intent(world, OPENID, 0, template_id=BANNED_TID)
            await h.produce([banned])
            await h.wait_ledger(h.all_in("failed"))
            table = await live_pauses(h.settings)
            assert set(table) == {(APPID, "order_status")}
            rec = table[(APPID, "order_status")]
            assert (rec.source, rec.errcode) == ("wechat", 43107)
            gauge = m.registry.get_sample_value
            assert gauge("wxsub_kind_paused", {"appid": APPID, "kind": "order_status"}) == 1

            held = [intent(world, o, 1) for o in USERS[:3]]
            other = replace(intent(world, USERS[3], 1), kind="logistics")  # not paused
            await h.produce([*held, other])
            ledger = await h.wait_ledger(h.all_in("failed", "sent"))
            assert {ledger[i.notification_id].state for i in held} == {"failed"}
            assert ledger[other.notification_id].state == "sent"
            sends = h.sends_by_nid()
            assert not any(i.notification_id in sends for i in held)
            reasons = Counter(o.reason for o in await h.outcomes() if o.stage == "deliver")
            assert reasons == {"failed": 1, "paused": 3, "sent": 1}
            restored = {c.notification_id for c in await h.corrections()}
            assert {i.notification_id for i in held} <= restored

            await write_pause(h.settings, APPID, "order_status", False, "template replaced")
            while pauses.why(APPID, "order_status") is not None:  # the stage follows the lift
                await asyncio.sleep(0.1)
            assert await live_pauses(h.settings) == {}
            again = [intent(world, o, 2) for o in USERS[:3]]
            await h.produce(again)
            ledger = await h.wait_ledger(h.all_in("failed", "sent"))
            assert {ledger[i.notification_id].state for i in again} == {"sent"}
            assert not gauge("wxsub_kind_paused", {"appid": APPID, "kind": "order_status"})
        finally:
            follow.cancel()
            await asyncio.gather(follow, return_exceptions=True)
            await pauses.stop()

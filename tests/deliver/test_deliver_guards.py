"""Send-time guards on a real broker and the sandbox: quiet hours and staleness are judged on the
wall clock of the send (rules/guards.py), whatever decide judged on event time.

The quiet window is placed around the wall clock (HH:MM:SS, Asia/Shanghai): it started a minute
ago and ends a few seconds from now, so the durable deferral and its release by the timer are
seen without waiting for a real night."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.deliver.harness import harness, intent, make_world, run_stage
from tests.fixtures.sandbox import APPID, ORDER_TID
from wxsub.merchants import Merchants, parse_merchants

pytestmark = pytest.mark.kafka

TZ = ZoneInfo("Asia/Shanghai")
USERS = [f"oLoad{i:023d}" for i in range(3)]
CONTENT = (
    "订单号:{{character_string1.DATA}}\n订单状态:{{phrase2.DATA}}\n"
    "商品名称:{{thing3.DATA}}\n更新时间:{{time4.DATA}}"
)


MARKETING_TID = "TPL_MARKETING_GUARDS"


def merchants(quiet_end: dt.datetime) -> Merchants:
    start = quiet_end - dt.timedelta(seconds=66)
    # data mappings use the values every kind offers (deliver never renders: decide did)
    data = {"character_string1": "{event_id}", "phrase2": "{subject}", "thing3": "{subject}",
            "time4": "{event_time}"}  # fmt: skip
    kind = {"template_id": ORDER_TID, "content": CONTENT, "data": data}
    app = {
        "timezone": "Asia/Shanghai",
        "quiet_hours": {"start": f"{start:%H:%M:%S}", "end": f"{quiet_end:%H:%M:%S}"},
        "kinds": {
            "order_status": {**kind},
            # marketing may not share the order (service) template: a template of its own
            # (deliver sends the intent's template; the kind's class decides the guards)
            "promotion": {**kind, "template_id": MARKETING_TID, "stale_after_s": 4},
            "price_drop": {**kind, "template_id": MARKETING_TID, "class": "marketing"},
        },
    }
    return parse_merchants({"apps": {APPID: app}})


async def test_quiet_hours_and_staleness_at_send_time(kafka_bootstrap: str, tmp_path: Path) -> None:
    world = make_world(users=len(USERS), credits=3)
    async with harness(kafka_bootstrap, world) as h:
        # the window ends 10 s after the harness is up (a loaded machine's start-up is not in it)
        quiet_end = dt.datetime.now(TZ).replace(microsecond=0) + dt.timedelta(seconds=10)
        release_ms = int(quiet_end.timestamp() * 1000)
        async with run_stage(h.settings, tmp_path, merchants=merchants(quiet_end)) as _:
            # decided outside quiet hours (decide judged event time), delivered inside them
            service = intent(world, USERS[0], 0)  # order_status: service, never held
            marketing = replace(intent(world, USERS[1], 0), kind="price_drop")
            # a promotion that happened 5 s before the window ends: fresh when deliver first
            # sees it (deferred), past its stale_after_s of 4 s when the timer releases it
            goes_stale = replace(
                intent(world, USERS[2], 0), kind="promotion", occurred_at=release_ms - 5000
            )
            await h.produce([service, marketing, goes_stale])
            ledger = await h.wait_ledger(h.all_in("sent", "failed"), timeout=60)
            outcomes = defaultdict(list)
            for o in await h.outcomes():
                outcomes[o.notification_id].append(o.reason)
            assert outcomes[service.notification_id] == ["sent"]
            assert outcomes[marketing.notification_id] == ["quiet_hours_deferred", "sent"]
            assert outcomes[goes_stale.notification_id] == ["quiet_hours_deferred", "stale"]
            assert ledger[marketing.notification_id].state == "sent"
            assert ledger[marketing.notification_id].at >= release_ms  # released by the timer
            assert ledger[goes_stale.notification_id].state == "failed"
            sends = h.sends_by_nid()
            assert set(sends) == {service.notification_id, marketing.notification_id}
            corrections = await h.corrections()
            assert [(c.notification_id, c.action) for c in corrections] == [
                (goes_stale.notification_id, "restore")
            ]

"""The deliver stage on a real broker against the WeChat sandbox: one test per answer path."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tests.deliver.harness import FAST, harness, intent, make_world, run_stage
from tests.fixtures.kafka_helpers import read_all
from tests.fixtures.sandbox import APPID, BANNED_TID, OPENID, OPENID_2, ORDER_TID
from wxsub.wechat.client import WeChatClient
from wxsub_sandbox import FaultSpec

pytestmark = pytest.mark.kafka

LOAD = [f"oLoad{i:023d}" for i in range(40)]


def metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def faults(sandbox: Any, **doc: Any) -> None:
    sandbox.faults.set(FaultSpec.from_json(doc))


async def test_sent_once_with_msgid_outcome_metrics_and_receipt_ignored(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    world = make_world(users=len(LOAD), credits=3)
    async with harness(kafka_bootstrap, world) as h, run_stage(h.settings, tmp_path) as (_, m):
        # three intents per user: sequential per user, concurrent across users; each decided
        # under a config version of its own, which its deliver outcome repeats
        await h.produce(
            replace(intent(world, o, n), config_version=n + 5) for n in range(3) for o in LOAD
        )
        ledger = await h.wait_ledger(h.all_in("sent"))
        assert {ledger[i.notification_id].state for i in h.intents} == {"sent"}
        sends = h.sends_by_nid()
        assert all(len(sends[i.notification_id]) == 1 for i in h.intents)
        for it in h.intents:
            assert ledger[it.notification_id].msgid == str(sends[it.notification_id][0].msgid)
        assert h.sandbox.recorder.counters["errcode.43108"] == 0  # one call at a time per user
        outcomes = [o for o in await h.outcomes() if o.stage == "deliver"]
        assert Counter(o.reason for o in outcomes) == {"sent": len(h.intents)}
        assert {o.event_id for o in outcomes} == {i.event_ids[-1] for i in h.intents}
        versions = {i.notification_id: i.config_version for i in h.intents}
        assert {o.notification_id: o.config_version for o in outcomes} == versions
        assert set(versions.values()) == {5, 6, 7}
        reg = m.registry
        assert (
            metric(reg, "wxsub_sends_total", result="sent", errcode="0", template=ORDER_TID) == 120
        )
        assert metric(reg, "wxsub_end_to_end_seconds_count", kind="order_status") == 120
        assert metric(reg, "wxsub_wechat_call_seconds_count", endpoint="send") == 120
        # every receipt was for a known msgid: nothing reconciled, nothing in doubt
        assert h.feeder.fed == 120
        assert metric(reg, "wxsub_in_doubt_total", state="reconciled_sent") == 0
        assert await h.corrections() == []


@pytest.mark.parametrize(
    ("openid", "template", "extra", "errcode", "action"),
    [
        (OPENID_2, ORDER_TID, {}, 43101, "zero"),  # OPENID_2 has 1 credit: the 2nd send
        ("oNobody000000000000000000000", ORDER_TID, {}, 40003, "restore"),
        (OPENID, BANNED_TID, {}, 43107, "restore"),
        (OPENID, ORDER_TID, {"page": "pages/nowhere"}, 41030, "restore"),
        (OPENID, ORDER_TID, {"lang": "xx_XX"}, 47003, "restore"),
    ],
)
async def test_permanent_refusal_fails_with_a_credit_correction(
    kafka_bootstrap: str,
    tmp_path: Path,
    openid: str,
    template: str,
    extra: dict[str, Any],
    errcode: int,
    action: str,
) -> None:
    world = make_world()
    async with harness(kafka_bootstrap, world) as h, run_stage(h.settings, tmp_path) as (_, m):
        first = intent(world, OPENID_2, 0) if errcode == 43101 else None
        if first is not None:
            await h.produce([first])
        refused = intent(world, openid, 1, template_id=template, **extra)
        await h.produce([refused])
        ledger = await h.wait_ledger(h.all_in("sent", "failed"))
        entry = ledger[refused.notification_id]
        assert (entry.state, entry.errcode, entry.attempt) == ("failed", errcode, 1)
        (corr,) = await h.corrections()
        assert (corr.action, corr.notification_id) == (action, refused.notification_id)
        assert (corr.appid, corr.openid, corr.template_id) == (refused.appid, openid, template)
        out = [o for o in await h.outcomes() if o.notification_id == refused.notification_id]
        assert [(o.reason, o.errcode) for o in out] == [("failed", errcode)]
        change = "zeroed" if action == "zero" else "restored"
        assert metric(m.registry, "wxsub_credits_total", change=change) == 1
        label = {"result": "failed", "errcode": str(errcode), "template": template}
        assert metric(m.registry, "wxsub_sends_total", **label) == 1


@pytest.mark.parametrize("errcode", [-1, 43108, 45011])
async def test_retryable_refusal_is_retried_on_the_timer_then_sent_once(
    kafka_bootstrap: str, tmp_path: Path, errcode: int
) -> None:
    world = make_world()
    async with harness(kafka_bootstrap, world) as h, run_stage(h.settings, tmp_path) as (_, m):
        faults(h.sandbox, next=[{"errcode": errcode}, {"errcode": errcode}])
        await h.produce([intent(world, OPENID, 0)])
        ledger = await h.wait_ledger(h.all_in("sent"))
        (it,) = h.intents
        assert (ledger[it.notification_id].state, ledger[it.notification_id].attempt) == ("sent", 3)
        assert len(h.sends_by_nid()[it.notification_id]) == 1
        assert [o.reason for o in await h.outcomes()] == ["sent"]  # no outcome per retry
        label = {"result": "retry", "errcode": str(errcode), "template": ORDER_TID}
        assert metric(m.registry, "wxsub_sends_total", **label) == 2


async def test_retries_exhausted_fail_and_restore_the_credit(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    world = make_world()
    async with harness(kafka_bootstrap, world) as h, run_stage(h.settings, tmp_path):
        faults(h.sandbox, next=[{"errcode": -1}] * FAST.max_attempts)
        await h.produce([intent(world, OPENID, 0)])
        ledger = await h.wait_ledger(h.all_in("failed"))
        (it,) = h.intents
        entry = ledger[it.notification_id]
        assert (entry.state, entry.errcode, entry.attempt) == ("failed", -1, FAST.max_attempts)
        assert h.sends_by_nid() == {}
        assert [c.action for c in await h.corrections()] == ["restore"]


async def test_dropped_response_is_in_doubt_not_resent_then_reconciled_by_receipt(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    world = make_world()
    async with harness(kafka_bootstrap, world) as h, run_stage(h.settings, tmp_path) as (_, m):
        world.grant(APPID, OPENID, ORDER_TID, 5)
        h.feeder.enabled = False  # hold the receipt back: first see the in-doubt state
        faults(h.sandbox, next=[{"action": "drop"}])
        await h.produce([intent(world, OPENID, 0)])
        ledger = await h.wait_ledger(h.all_in("in_doubt"))
        (it,) = h.intents
        assert ledger[it.notification_id].state == "in_doubt"
        assert metric(m.registry, "wxsub_in_doubt_total", state="detected") == 1
        # a later send of the same user and template: its receipt is recognised by msgid
        h.feeder.enabled = True
        later = intent(world, OPENID, 1)
        await h.produce([later])
        ledger = await h.wait_ledger(h.all_in("sent", "in_doubt"))
        assert ledger[later.notification_id].state == "sent"
        assert ledger[it.notification_id].state == "in_doubt"
        # now the dropped send's receipt arrives, as WeChat's push would bring it
        (dropped,) = h.sends_by_nid()[it.notification_id]
        world.sent(APPID, OPENID, ORDER_TID, dropped.msgid, now=dropped.time)
        ledger = await h.wait_ledger(lambda led: led[it.notification_id].state == "sent")
        assert ledger[it.notification_id].msgid == str(dropped.msgid)
        assert all(len(calls) == 1 for calls in h.sends_by_nid().values())
        reasons = [o.reason for o in await h.outcomes() if o.notification_id == it.notification_id]
        assert reasons == ["in_doubt", "reconciled_sent"]
        assert metric(m.registry, "wxsub_in_doubt_total", state="reconciled_sent") == 1


async def test_reset_after_sending_is_in_doubt_and_resent_only_under_the_resend_policy(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    for policy, expect in (("report", "in_doubt"), ("resend", "sent")):
        world = make_world()
        async with (
            harness(kafka_bootstrap, world, in_doubt_policy=policy) as h,
            run_stage(h.settings, tmp_path / policy),
        ):
            faults(h.sandbox, next=[{"action": "reset"}])  # closed before processing
            await h.produce([intent(world, OPENID, 0)])
            ledger = await h.wait_ledger(h.all_in(expect))
            (it,) = h.intents
            assert ledger[it.notification_id].state == expect, policy
            assert len(h.sends_by_nid().get(it.notification_id, [])) == (expect == "sent")


async def test_replayed_intent_of_a_final_id_is_skipped(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    world = make_world(users=1, credits=5)
    async with harness(kafka_bootstrap, world) as h, run_stage(h.settings, tmp_path):
        it = intent(world, LOAD[0], 0)
        await h.produce([it, it])  # same notification id twice in one batch
        await h.wait_ledger(h.all_in("sent"))
        await h.produce([it])  # and once more later
        marker = intent(world, LOAD[0], 1)
        await h.produce([marker])
        await h.wait_ledger(h.all_in("sent"))
        assert len(h.sends_by_nid()[it.notification_id]) == 1
        assert [o.reason for o in await h.outcomes()] == ["sent", "sent"]


async def test_token_expiry_mid_run_refreshes_and_loses_nothing(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    world = make_world(users=len(LOAD), credits=5)
    async with harness(kafka_bootstrap, world) as h, run_stage(h.settings, tmp_path):
        await h.produce(intent(world, o, 0) for o in LOAD[:10])
        await h.wait_ledger(h.all_in("sent", "failed"))
        assert h.sandbox.tokens.expire_all() == 1  # the token the client holds dies now
        await h.produce(intent(world, o, 1) for o in LOAD[:10])
        ledger = await h.wait_ledger(h.all_in("sent", "failed"))
        assert {ledger[i.notification_id].state for i in h.intents} == {"sent"}
        assert all(len(calls) == 1 for calls in h.sends_by_nid().values())
        counters = h.sandbox.recorder.counters
        assert counters["errcode.42001"] >= 1  # used once expired, then refreshed and resent
        assert counters["calls.stable_token"] == 2


async def test_token_rotation_mid_run_loses_nothing(kafka_bootstrap: str, tmp_path: Path) -> None:
    # tokens live 3 s: the client refreshes at half-life, WeChat rotates in the last second
    world = make_world(users=len(LOAD), credits=5, expires_in=3, stable_margin_s=1)
    async with harness(kafka_bootstrap, world) as h, run_stage(h.settings, tmp_path):
        for n in range(4):
            await h.produce(intent(world, o, n) for o in LOAD[:10])
            await asyncio.sleep(1.0)
        ledger = await h.wait_ledger(h.all_in("sent", "failed"))
        assert {ledger[i.notification_id].state for i in h.intents} == {"sent"}
        assert all(len(calls) == 1 for calls in h.sends_by_nid().values())
        assert h.sandbox.recorder.counters["calls.stable_token"] >= 2


async def test_quota_45009_pauses_the_appid_then_resumes(
    kafka_bootstrap: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    world = make_world(users=len(LOAD), credits=5)
    async with harness(kafka_bootstrap, world) as h, run_stage(h.settings, tmp_path) as (_, m):
        faults(h.sandbox, quota_exhausted_for_s=1.0)  # shorter than FAST.quota_pause_ms
        first = [intent(world, o, 0) for o in LOAD[:10]]
        await h.produce(first)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while metric(m.registry, "wxsub_quota_paused", appid=APPID) != 1:
            assert loop.time() < deadline, "never paused"
            await asyncio.sleep(0.02)
        later = [intent(world, o, 1) for o in LOAD[10:20]]
        await h.produce(later)  # while paused: deferred, no call made
        ledger = await h.wait_ledger(h.all_in("sent", "failed"))
        assert {ledger[i.notification_id].state for i in h.intents} == {"sent"}
        assert all(len(calls) == 1 for calls in h.sends_by_nid().values())
        refused = h.sandbox.recorder.calls(endpoint="send", errcode=45009)
        # only sends already in flight met the quota; what came during the pause waited
        assert 1 <= len(refused) <= len(first)
        assert {c.openid for c in refused} <= set(LOAD[:10])
        assert metric(m.registry, "wxsub_quota_paused", appid=APPID) == 0
        assert any("ALERT" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)


async def test_undecodable_intent_goes_to_the_dlq(kafka_bootstrap: str, tmp_path: Path) -> None:
    world = make_world()
    async with harness(kafka_bootstrap, world) as h, run_stage(h.settings, tmp_path) as (_, m):
        await h.producer.send_and_wait(h.topic("intents"), b'{"nope": 1}', key=b"k")
        await h.produce([intent(world, OPENID, 0)])
        await h.wait_ledger(h.all_in("sent"))
        dlq = await read_all(kafka_bootstrap, h.topic("dlq"))
        assert [r.value for r in dlq] == [b'{"nope": 1}']
        assert metric(m.registry, "wxsub_dlq_total", stage="deliver") == 1


class CrashOnce(WeChatClient):
    """Fails the stage (not WeChat) on its first send: the batch aborts after the attempt."""

    crashed = False

    async def send(self, appid: str, body: Any) -> Any:
        if not CrashOnce.crashed:
            CrashOnce.crashed = True
            raise RuntimeError("stage bug after the attempt was committed")
        return await super().send(appid, body)


async def test_call_failing_unexpectedly_after_its_attempt_committed_is_in_doubt_not_resent(
    kafka_bootstrap: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    world = make_world()
    async with (
        harness(kafka_bootstrap, world) as h,
        run_stage(h.settings, tmp_path, client_class=CrashOnce) as (_, m),
    ):
        await h.produce([intent(world, OPENID, 0)])
        ledger = await h.wait_ledger(h.all_in("in_doubt"))
        (it,) = h.intents
        assert ledger[it.notification_id].state == "in_doubt"
        assert h.sends_by_nid() == {}  # never resent after the replay
        assert [o.reason for o in await h.outcomes()] == ["in_doubt"]
        assert metric(m.registry, "wxsub_in_doubt_total", state="detected") == 1


SLOW_TIMER = replace(FAST, timer_interval_s=60.0)  # the timer cannot be what writes the answers


async def test_answers_are_written_with_no_further_batch_and_no_timer(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    world = make_world(users=5, credits=1)
    async with (
        harness(kafka_bootstrap, world) as h,
        run_stage(h.settings, tmp_path, policy=SLOW_TIMER),
    ):
        faults(h.sandbox, latency={"dist": "fixed", "s": 0.3})
        await h.produce(intent(world, o, 0) for o in LOAD[:5])
        ledger = await h.wait_ledger(h.all_in("sent"))  # a settle turn wrote them
        assert {ledger[i.notification_id].state for i in h.intents} == {"sent"}
        assert Counter(o.reason for o in await h.outcomes()) == {"sent": 5}


async def test_answers_in_flight_at_stop_are_written_before_the_partitions_go(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    world = make_world(users=5, credits=1)
    # no settle turn comes due (a minute's commit interval) and no timer: only the stop settles
    async with harness(kafka_bootstrap, world, commit_interval_ms=60_000) as h:
        faults(h.sandbox, latency={"dist": "fixed", "s": 1.5})
        async with run_stage(h.settings, tmp_path, policy=SLOW_TIMER):
            await h.produce(intent(world, o, 0) for o in LOAD[:5])
            await h.wait_ledger(h.all_in("attempt"))  # committed; the calls are in flight
        ledger = await h.ledger()
        assert {ledger[i.notification_id].state for i in h.intents} == {"sent"}
        assert Counter(o.reason for o in await h.outcomes()) == {"sent": 5}
        assert all(len(calls) == 1 for calls in h.sends_by_nid().values())

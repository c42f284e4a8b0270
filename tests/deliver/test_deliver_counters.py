"""The deliver stage's counters count committed work once: a turn that writes WeChat's answers
and aborts is written again by the next turn, and counted only then (real broker, sandbox)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tests.deliver.harness import harness, intent, make_world, run_stage
from tests.fixtures.sandbox import OPENID, OPENID_2, ORDER_TID
from wxsub.agents.base import StageEnv
from wxsub.errors import InDoubtError
from wxsub.schemas.internal import Outcome
from wxsub.streams.stage import PartitionContext
from wxsub.wechat.client import SendResult, WeChatClient

pytestmark = pytest.mark.kafka

NO_CREDIT = f"oLoad{0:023d}"  # make_world(users=1, credits=0): 43101, credit zeroed
NOBODY = "oNobody000000000000000000000"  # 40003, credit restored


class NoAnswerForOpenid(WeChatClient):
    """The call for OPENID gets no answer (as a read timeout): its attempt is in doubt."""

    async def send(self, appid: str, body: Mapping[str, Any]) -> SendResult:
        if body["touser"] == OPENID:
            raise InDoubtError("no answer")
        return await super().send(appid, body)


class AbortFirstSentOutcome(StageEnv):
    """The first ``sent`` outcome fails to be written: the turn writing the answers aborts after
    it wrote the answers before that one (their corrections and in-doubt report included)."""

    aborted = 0

    async def emit_outcomes(self, ctx: PartitionContext, outcomes: Iterable[Outcome]) -> None:
        outcomes = tuple(outcomes)
        if not AbortFirstSentOutcome.aborted and any(o.reason == "sent" for o in outcomes):
            AbortFirstSentOutcome.aborted += 1
            raise RuntimeError("the transaction writing the answers fails")
        await super().emit_outcomes(ctx, outcomes)


def metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_answers_written_again_after_an_aborted_turn_are_counted_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    world = make_world(users=1, credits=0)
    AbortFirstSentOutcome.aborted = 0
    async with (
        harness(kafka_bootstrap, world, partitions=1) as h,
        run_stage(
            h.settings,
            tmp_path,
            client_class=NoAnswerForOpenid,
            env_class=AbortFirstSentOutcome,
        ) as (_, m),
    ):
        # one batch, four users: one wave whose answers the next turn writes, the sent one last
        zeroed, restored, doubt, sent = (
            intent(world, openid, 0) for openid in (NO_CREDIT, NOBODY, OPENID, OPENID_2)
        )
        await h.produce([zeroed, restored, doubt, sent])
        ledger = await h.wait_ledger(h.all_in("sent", "failed", "in_doubt"))
        states = [ledger[i.notification_id].state for i in h.intents]
        assert states == ["failed", "failed", "in_doubt", "sent"]
        assert AbortFirstSentOutcome.aborted == 1  # the turn that wrote them first aborted
        reg = m.registry
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while metric(reg, "wxsub_sends_total", result="sent", errcode="0", template=ORDER_TID) < 1:
            assert loop.time() < deadline, "the committed answers were never counted"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # nothing more is coming
        # each once, in the topics (read_committed) and in the counters
        assert Counter(o.reason for o in await h.outcomes()) == {
            "failed": 2,
            "in_doubt": 1,
            "sent": 1,
        }
        assert sorted(c.action for c in await h.corrections()) == ["restore", "zero"]
        assert metric(reg, "wxsub_credits_total", change="zeroed") == 1
        assert metric(reg, "wxsub_credits_total", change="restored") == 1
        assert metric(reg, "wxsub_in_doubt_total", state="detected") == 1
        sends = {
            (s.labels["result"], s.labels["errcode"]): s.value
            for family in reg.collect()
            if family.name == "wxsub_sends"
            for s in family.samples
            if s.name == "wxsub_sends_total" and s.value
        }
        assert sends == {
            ("failed", "43101"): 1,
            ("failed", "40003"): 1,
            ("in_doubt", "none"): 1,
            ("sent", "0"): 1,
        }
        outcomes = {"stage": "deliver", "kind": "order_status", "reason": "sent"}
        assert metric(reg, "wxsub_outcomes_total", **outcomes) == 1

"""Service cards with real worker processes (the orders and cards stages) against the sandbox,
on a real broker: the generated log's WeChat Pay orders (tests/pipeline/cards_log.py: 2001, 2002
and 2006 merchants) -> the card states the sandbox accepted == the oracle's, per card.

With workers killed (kill -9) mid-run, several times, while calls are slow and some answers are
lost: no illegal transition (the sandbox would refuse it: every set call succeeds), no skipped
or extra state (each card's accepted states are exactly the oracle's, in order, each state once:
a crash's leftover attempt and a lost answer are settled by getUserNotify, and sent again only
when WeChat does not have it), no classic candidate for a carded order, and the orders stage's
outcomes are exactly the oracle's. The longer loop is ``soak``.
"""

from __future__ import annotations

import asyncio
import random
import time
import tomllib
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.fixtures.polling import until as _until
from tests.pipeline import cards_log
from tests.pipeline.eventlog import Entry, Knobs, generate
from tests.pipeline.harness import Deployment, as_published
from tests.pipeline.oracle import Expected, expected, outcome_counter
from wxsub.agents.rules.orders import STAGE as ORDERS
from wxsub.merchants import parse_merchants
from wxsub.schemas.records import OrderStatusChanged
from wxsub.streams.topics import ensure_topics
from wxsub_sandbox import FaultSpec, Sandbox, run_sandbox

pytestmark = pytest.mark.kafka

WORLD = {"apps": [{"appid": a, "secret": f"secret-{a}"} for a in cards_log.CARD_APPS]}
SLOW_AND_LOSSY = {
    "seed": 5,
    "endpoints": ["set_user_notify", "get_user_notify"],
    "latency": {"dist": "uniform", "lo": 0.2, "hi": 0.8},
    "drop_rate": 0.1,  # WeChat did it, the answer is lost: in doubt
}


def _card_log(seed: int) -> tuple[list[Entry], str, Expected]:
    """The card apps' order events of a small generated log, its merchants TOML, the oracle."""
    now = int(time.time() * 1000)
    knobs = Knobs(now_ms=now, seed=seed, users=2, orders=2, skus=1, stores=1, bad_inputs=0)
    log = generate(knobs)
    entries = [e for e in log.entries if isinstance(e.record, OrderStatusChanged)
               and e.record.appid in cards_log.CARD_APPS]  # fmt: skip
    merchants = parse_merchants(tomllib.loads(log.merchants_toml))
    return entries, log.merchants_toml, expected(entries, merchants, now)


def _deployment(sb: Sandbox, tmp: Path, bootstrap: str, merchants_toml: str) -> Deployment:
    cfg = tmp / "wxsub.toml"
    creds = "".join(f'[wechat.apps.{a}]\nsecret = "secret-{a}"\n' for a in cards_log.CARD_APPS)
    cfg.write_text(f'[wechat]\napi_base = "{sb.base_url}"\nread_timeout_s = 3.0\n{creds}')
    return Deployment(
        bootstrap, tmp, merchants_toml, stages="orders,cards", partitions=4,
        extra_env={"WXSUB_CONFIG": str(cfg)},
    )  # fmt: skip


async def _sets_reach(sb: Sandbox, n: int) -> None:
    async def reached() -> bool:
        return len(sb.recorder.calls(endpoint="set_user_notify")) >= n

    await _until(reached, timeout=120)


async def _run(bootstrap: str, tmp: Path, seed: int, workers: int, kills: int) -> None:
    entries, merchants_toml, exp = _card_log(seed)
    orders_outcomes = outcome_counter(o for o in exp.all_outcomes if o.stage == ORDERS)
    async with run_sandbox(WORLD) as sb:
        book = sb.state.cards
        book.visible_after_s = 0
        for p in cards_log.payments(e.record for e in entries):
            book.pay(p.appid, p.openid, p.transaction_id, p.amount, p.paid_at)
        if kills:
            sb.faults.set(FaultSpec.from_json(SLOW_AND_LOSSY))
        dep = _deployment(sb, tmp, bootstrap, merchants_toml)
        await ensure_topics(dep.kafka, f"app{dep.uid}")
        for i in range(workers):
            dep.start(i)
        rnd = random.Random(seed)
        try:
            publishing = asyncio.create_task(dep.publish(as_published(entries)))
            total = sum(len(states) for states in exp.cards.values())
            for n in range(kills):  # mid-run: once cards are being set, spread over the calls
                want = total * (n + 1) // (kills + 2) + rnd.randrange(3)
                await _sets_reach(sb, want)
                victim = rnd.randrange(workers)
                dep.kill(victim)
                dep.start(victim)
            await publishing

            async def settled() -> bool:
                states = {k: book.states(*k) for k in exp.cards}
                outs = await dep.outcomes()
                return states == exp.cards and len(outs) >= sum(orders_outcomes.values())

            done = await _until(settled, timeout=240, every=1.0)
            sb.faults.set(FaultSpec.from_json({}))
            await asyncio.sleep(6)  # settle: an extra call or outcome would show
            outcomes = await dep.outcomes()
            candidates = [orjson.loads(v) for v in await dep.read("candidates")]
        except BaseException:
            print(dep.logs())
            raise
        finally:
            dep.stop_all()
        assert done, f"not settled\n{dep.logs()}"
        if kills:  # the kills and lost answers left calls in doubt, settled by getUserNotify
            assert sb.recorder.calls(endpoint="get_user_notify")
        _check(sb, exp, entries, outcomes, candidates, orders_outcomes)


def _check(
    sb: Sandbox,
    exp: Expected,
    entries: list[Entry],
    outcomes: list[Any],
    candidates: list[dict[str, Any]],
    orders_outcomes: Counter[Any],
) -> None:
    book = sb.state.cards
    # every card: exactly the oracle's states, in order (none skipped, none twice, none illegal)
    assert {k: book.states(*k) for k in exp.cards} == exp.cards
    cards_of_apps = {(a, c) for (a, _, c) in book.cards}
    assert cards_of_apps == set(exp.cards)  # and no card the oracle does not have
    sets: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for call in sb.recorder.calls(endpoint="set_user_notify"):
        sets[(call.appid, call.notify_code)].append(call)
    gets = Counter((c.appid, c.notify_code) for c in sb.recorder.calls(endpoint="get_user_notify"))
    for key, calls in sets.items():
        refused = [c.errcode for c in calls if c.errcode not in (0, None)]
        assert not refused, f"{key}: WeChat refused {refused}"  # no illegal transition
        accepted = [c for c in calls if c.processed]
        assert len(accepted) == len(exp.cards[key]), key  # each state accepted once
        if len(calls) > len(accepted) or any(c.dropped or c.errcode is None for c in calls):
            assert gets[key], f"{key}: a call in doubt was not settled by getUserNotify"
    # never both: classic candidates only for the orders without a card
    classic = {c["subject"] for c in candidates}
    no_card = {e.record.order_id for e in entries if isinstance(e.record, OrderStatusChanged)
               and e.record.openid.split("-")[2] in ("late", "nopay")}  # fmt: skip
    assert classic == no_card
    got = outcome_counter(o for o in outcomes if o.stage == ORDERS)
    assert got == orders_outcomes, (orders_outcomes - got, got - orders_outcomes)


async def test_card_states_match_the_oracle_through_kill9(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    await _run(kafka_bootstrap, tmp_path, seed=21, workers=2, kills=3)


@pytest.mark.soak
async def test_card_states_match_the_oracle_through_kill9_soak(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    for seed in (22, 23, 24, 25):
        run_dir = tmp_path / f"run{seed}"
        run_dir.mkdir()
        await _run(kafka_bootstrap, run_dir, seed=seed, workers=3, kills=6)

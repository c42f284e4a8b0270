"""End to end on a real broker: published log -> real workers -> intents and outcomes == oracle.

Every input event is accounted for (an intent, an outcome or the DLQ), with and without kill -9.
The merchant config is live: version 1 is applied (``wxsub merchants apply``) before the workers
start, version 2 (a cap raised) once phase 1 is all decided; phase 2 is published when every
worker reports version 2, and the oracle decides each phase with its version and checks the
``config_version`` of every outcome and intent.
"""

from __future__ import annotations

import asyncio
import random
import time
import tomllib
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.pipeline.eventlog import EventLog, Knobs, generate
from tests.pipeline.harness import (
    Deployment,
    as_published,
    crc32_partition,
    misrouted_total,
    workers_at_version,
)
from tests.pipeline.oracle import RULE_STAGES, Expected, at_version, expected, outcome_counter
from wxsub.config_cli import apply_merchants
from wxsub.merchants import parse_merchants
from wxsub.settings import load_settings
from wxsub.streams.outbox import partition_for
from wxsub.streams.topics import ensure_topics

pytestmark = pytest.mark.kafka

SETTLE_S = 8  # timer ticks after the windows, and a committed-read margin


def _log(seed: int, window_s: int, **knobs: int) -> tuple[EventLog, Expected, Expected]:
    """A log, its oracle, and the oracle of phases 0 and 1 alone (what must be in before the
    config changes); ``window_s`` (collapse and orphan windows) must exceed the longest pause a
    worker restart causes, or a collapse burst would be split (more intents)."""
    now = int(time.time() * 1000)
    log = generate(
        Knobs(now_ms=now, seed=seed, collapse_window_s=window_s, orphan_after_s=window_s, **knobs)
    )
    v1 = at_version(parse_merchants(tomllib.loads(log.merchants_toml)), 1)
    v2 = at_version(parse_merchants(tomllib.loads(log.changed_toml)), 2)
    early = [e for e in log.entries if e.phase < 2]
    # the workers run orders, products and decide: no card stage (held card candidates stay)
    full = expected(log.entries, v1, now, changes={2: v2}, card_stage=False)
    return log, full, expected(early, v1, now, card_stage=False)


def _bootstrap_expected(log: EventLog) -> tuple[Expected, Expected]:
    """The oracle of ``log`` and that of phases 0 and 1 alone, for a deployment that never
    applies config: the workers decide with the ``worker.merchants`` file
    (``log.merchants_toml``: the bootstrap, version 0) from start to end. For tests of something
    else (broker faults, ACLs) that publish without :func:`_run`; they too publish phase 2 only
    once phases 0 and 1 are decided (:func:`_undecided`): phase 2 competes with phase 1 for caps."""
    merchants = at_version(parse_merchants(tomllib.loads(log.merchants_toml)), 0)
    early = [e for e in log.entries if e.phase < 2]
    now = log.knobs.now_ms
    return (
        expected(log.entries, merchants, now, card_stage=False),
        expected(early, merchants, now, card_stage=False),
    )


async def _undecided(dep: Deployment, exp: Expected, timeout: float) -> str:
    """Wait until ``dep`` holds as many outcomes and intents as ``exp``: "" then, else (at the
    timeout) what it holds of each."""
    want_o, want_i = sum(exp.outcomes.values()), len(exp.intents)
    got_o = await dep.wait_for("outcomes", want_o, timeout=timeout)
    got_i = await dep.wait_for("intents", want_i, timeout=timeout)
    if got_o >= want_o and got_i >= want_i:
        return ""
    return f"outcomes {got_o} of {want_o}, intents {got_i} of {want_i}"


async def _apply(dep: Deployment, toml: str, name: str) -> int:
    """``wxsub merchants apply`` of ``toml`` to the deployment; the version it became."""
    path = dep.workdir / name
    path.write_text(toml, encoding="utf-8")
    return await apply_merchants(load_settings(None, env=dep.env(0)), path)


async def _run(
    dep: Deployment,
    log: EventLog,
    exp: Expected,
    early: Expected,
    workers: int,
    kills: int,
    seed: int,
    partitioner: Callable[[bytes, int], int] | None = None,
) -> None:
    await ensure_topics(dep.kafka, f"app{dep.uid}")
    assert await _apply(dep, log.merchants_toml, "merchants-v1.toml") == 1
    for i in range(workers):
        dep.start(i)
    phase0, phase1, phase2 = (log.phase(n) for n in (0, 1, 2))
    await dep.publish(as_published(phase0), partitioner)
    got = await dep.wait_for("outcomes", log.phase0_outcomes, timeout=120)
    assert got >= log.phase0_outcomes, f"phase 0 not applied ({got})\n{dep.logs()}"
    rnd = random.Random(seed)
    publishing = asyncio.create_task(dep.publish(as_published(phase1), partitioner))
    for _ in range(kills):
        await asyncio.sleep(rnd.uniform(0.5, 2.5))
        victim = rnd.randrange(workers)
        dep.kill(victim)
        dep.start(victim)
    await publishing
    # held (collapse) and deferred intents leave on timers, after a killed owner's partitions
    # moved (a session timeout): wait for both counts, then settle so extras would show
    got = await dep.wait_for("outcomes", sum(early.outcomes.values()), timeout=180)
    got_intents = await dep.wait_for("intents", len(early.intents), timeout=180)
    done = got >= sum(early.outcomes.values()) and got_intents >= len(early.intents)
    if not done:
        intents, outcomes = await dep.intents(), await dep.outcomes()
        diff = early.outcomes - outcome_counter(o for o in outcomes if o.stage in RULE_STAGES)
        extra = outcome_counter(o for o in outcomes if o.stage in RULE_STAGES) - early.outcomes
        raise AssertionError(
            f"phase 1 not decided ({got}, {got_intents})\n{dep.logs()}\n"
            f"{_diagnose(intents, outcomes, early)}\nmissing {list(diff.items())[:10]}\n"
            f"extra {list(extra.items())[:10]}"
        )
    # the config changes at a quiescent point: phase 2 is decided under version 2, all of it
    assert await _apply(dep, log.changed_toml, "merchants-v2.toml") == 2
    assert await workers_at_version(dep, 2), f"version 2 not live\n{dep.logs()}"
    await dep.publish(as_published(phase2), partitioner)
    await dep.wait_for("outcomes", sum(exp.outcomes.values()), timeout=180)
    await dep.wait_for("intents", len(exp.intents), timeout=180)
    await asyncio.sleep(SETTLE_S)


def _diagnose(intents: list, outcomes: list, exp: Expected) -> str:
    """What the pipeline did with the events of each intent it lacks (or has in excess)."""
    got = {i.notification_id: i for i in intents}
    by_event: dict[str, list[tuple[str, str]]] = {}
    for o in outcomes:
        by_event.setdefault(o.event_id, []).append((o.stage, o.reason))
    lines = []
    for nid, want in exp.intents.items():
        if nid not in got:
            seen = {e: by_event.get(e) for e in want.event_ids}
            lines.append(f"missing {want.kind} {want.openid} {want.event_ids}: {seen}")
    lines += [f"unexpected {i.kind} {i.openid} {i.event_ids}" for n, i in got.items()
              if n not in exp.intents]  # fmt: skip
    return "\n".join(lines)


def _compare(dep_intents: list, dep_outcomes: list, dlq: int, exp: Expected) -> None:
    got_intents = {i.notification_id: (i.body, i.event_ids, i.config_version) for i in dep_intents}
    ids = Counter(i.notification_id for i in dep_intents)
    assert not [n for n, c in ids.items() if c > 1], "an intent was produced twice"
    want = exp.bodies()
    missing = set(want) - set(got_intents)
    extra = set(got_intents) - set(want)
    assert not missing and not extra, f"{len(missing)} missing, {len(extra)} unexpected intents"
    assert got_intents == want
    got = outcome_counter(o for o in dep_outcomes if o.stage in RULE_STAGES)
    diff_missing = exp.outcomes - got
    diff_extra = got - exp.outcomes
    assert not diff_missing and not diff_extra, (
        f"outcomes differ: missing {list(diff_missing.items())[:5]}, "
        f"extra {list(diff_extra.items())[:5]}"
    )
    assert dlq == exp.dlq


@pytest.mark.parametrize(
    ("workers", "kills"),
    [(2, 0), (2, 3), pytest.param(3, 25, marks=pytest.mark.soak, id="kill9-soak")],
    ids=["clean", "kill9", "kill9-soak"],
)
async def test_pipeline_matches_oracle(
    kafka_bootstrap: str, tmp_path: Path, workers: int, kills: int
) -> None:
    log, exp, early = _log(seed=11 + kills, window_s=6 if kills == 0 else 40)
    dep = Deployment(kafka_bootstrap, tmp_path, log.merchants_toml)
    try:
        await _run(dep, log, exp, early, workers, kills, seed=kills)
        intents, outcomes, dlq = await dep.intents(), await dep.outcomes(), await dep.read("dlq")
    finally:
        dep.stop_all()
    try:
        _compare(intents, outcomes, len(dlq), exp)
    except AssertionError:
        print(dep.logs())
        print(_diagnose(intents, outcomes, exp))
        raise
    # every input event is accounted for: an intent, an outcome, or the DLQ (or held for a card
    # activation: these workers run no card stage)
    accounted = {o.event_id for o in outcomes} | {e for i in intents for e in i.event_ids}
    accounted |= exp.held
    good = {e.record.event_id for e in log.entries if e.record is not None}
    assert good <= accounted


async def test_events_on_the_wrong_partition_give_the_oracle_outcomes(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Every event published with librdkafka's default partitioner (CRC32, not Kafka's murmur2):
    most land on a partition their key does not hash to. The workers move each one to its home
    partition exactly once, and intents and outcomes equal the oracle's for the same log."""
    log, exp, early = _log(seed=29, window_s=6)
    dep = Deployment(kafka_bootstrap, tmp_path, log.merchants_toml)
    try:
        await _run(dep, log, exp, early, workers=2, kills=0, seed=0, partitioner=crc32_partition)
        intents, outcomes, dlq = await dep.intents(), await dep.outcomes(), await dep.read("dlq")
        moved = await misrouted_total(dep)
    finally:
        dep.stop_all()
    try:
        _compare(intents, outcomes, len(dlq), exp)
    except AssertionError:
        print(dep.logs())
        print(_diagnose(intents, outcomes, exp))
        raise
    # every valid, correctly keyed event off its murmur2 partition was moved, once
    want_moved = sum(
        1
        for e in log.entries
        if e.record is not None
        and e.record.key == e.key
        and crc32_partition(e.key.encode(), dep.partitions)
        != partition_for(e.key.encode(), dep.partitions)
    )
    assert want_moved > len(log.entries) // 3  # the test means something
    assert moved == want_moved

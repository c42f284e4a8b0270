"""kill -9 deliver workers mid-run against the sandbox (latency, dropped responses, -1s):
every notification id reaches WeChat at most once, every intent ends sent, failed or in_doubt,
in-doubt per crash is bounded by the in-flight limit, and receipts reconcile the in-doubt ones.
The ledger's expiry sweep runs all along (every 0.2 s); once the run is over, the workers are
killed and restarted with their clock past ``retention.delivery_s`` and killed once more while
the sweep deletes: every entry is forgotten (tombstones on ``deliveries`` and the changelog) and
nothing is sent, decided or corrected again.
Also: an outage (-1 and timeouts) whose backlog drains afterwards, each message once."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from collections import Counter, defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.deliver.harness import Harness, harness, intent, make_world, run_stage
from tests.fixtures.kafka_helpers import read_all
from tests.fixtures.sandbox import APPID, ORDER_TID
from wxsub.agents.rules.delivery import DeliveryPolicy
from wxsub.streams.topics import changelog_name
from wxsub_sandbox import FaultSpec

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[2]
POLICY = DeliveryPolicy(
    max_attempts=6,
    backoff_base_ms=100,
    backoff_max_ms=1000,
    quota_pause_ms=1500,
    receipt_window_ms=5000,
    timer_interval_s=0.2,
)
FINAL_REASONS = {
    ("sent",),
    ("failed",),
    ("in_doubt",),
    ("in_doubt", "reconciled_sent"),
    ("in_doubt", "reconciled_failed"),
    ("reconciled_sent",),  # the receipt came before the replay found the leftover attempt
}
SWEEP_S = 0.2
#: the clock of the workers after the run: past retention.delivery_s (7 days, the default)
AHEAD_MS = 8 * 86_400_000


def _start(
    h: Harness, state: Path, max_in_flight: int, ahead_ms: int = 0
) -> subprocess.Popen[bytes]:
    kafka = h.settings.kafka
    cfg = {
        "sweep_interval_s": SWEEP_S,
        "clock_offset_ms": ahead_ms,
        "bootstrap": kafka.bootstrap,
        "prefix": kafka.topic_prefix,
        "partitions": kafka.partitions,
        "app_id": h.settings.worker.app_id,
        "max_in_flight": max_in_flight,
        "api_base": h.sandbox.base_url,
        "state_dir": str(state),
        "policy": asdict(POLICY),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "tests.deliver.worker", orjson.dumps(cfg).decode()],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=(state.parent / f"{state.name}.log").open("ab"),
    )


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


async def _crash_run(
    bootstrap: str,
    tmp_path: Path,
    *,
    n: int,
    users: int,
    kills: int,
    seed: int,
    rate: int = 100,
    kill_gap: tuple[float, float] = (0.5, 2.0),
    max_in_flight: int = 20,
    drain_s: float = 90,
) -> None:
    rnd = random.Random(seed)
    world = make_world(users=users, credits=n)  # credits never run out ...
    openids = [f"oLoad{i:023d}" for i in range(users)]
    for openid in openids[:5]:  # ... except for these: their sends fail with 43101
        world.users[APPID][openid][ORDER_TID] = 0
    async with harness(bootstrap, world, max_in_flight=max_in_flight) as h:
        h.sandbox.faults.set(
            FaultSpec.from_json(
                {
                    "seed": seed,
                    "latency": {"dist": "uniform", "lo": 0.01, "hi": 0.12},
                    "drop_rate": 0.02,
                    "errors": {"-1": 0.03},
                }
            )
        )
        intents = [intent(world, rnd.choice(openids), i) for i in range(n)]
        states = [tmp_path / "w0", tmp_path / "w1"]
        procs = [_start(h, s, max_in_flight) for s in states]
        try:
            # ``rate`` intents/s, so the kills land while sends are in flight
            producing = asyncio.create_task(h.produce(intents, pace=0.1, every=rate // 10))
            await h.wait_ledger(lambda led: len(led) > 0, timeout=30)  # the workers are up
            for _ in range(kills):
                await asyncio.sleep(rnd.uniform(*kill_gap))
                victim = rnd.randrange(len(procs))
                procs[victim].send_signal(signal.SIGKILL)
                procs[victim].wait()
                procs[victim] = _start(h, states[victim], max_in_flight)
            await producing
            ledger = await h.wait_ledger(h.all_in("sent", "failed", "in_doubt"), timeout=drain_s)
            # receipts reconcile what was in doubt: a bounded wait, long for a loaded machine
            ledger = await h.wait_ledger(lambda led: _settled(h, led), timeout=90)
            await _check(h, ledger, kills, max_in_flight)
            await _expire_all(h, procs, states, max_in_flight, rnd, kill_gap, drain_s)
        finally:
            _stop(procs)


async def _expire_all(
    h: Harness,
    procs: list[subprocess.Popen[bytes]],
    states: list[Path],
    max_in_flight: int,
    rnd: random.Random,
    kill_gap: tuple[float, float],
    drain_s: float,
) -> None:
    """Every worker killed and restarted with its clock past the ledger's retention, one killed
    again while the sweeps delete: the ledger is emptied, and the run's result stands."""
    sends = {nid: len(calls) for nid, calls in h.sends_by_nid().items()}
    outcomes = Counter(orjson.dumps(o) for o in await h.outcomes())
    corrections = Counter(orjson.dumps(c) for c in await h.corrections())
    assert sends and outcomes
    for i, p in enumerate(procs):
        p.send_signal(signal.SIGKILL)
        p.wait()
        procs[i] = _start(h, states[i], max_in_flight, AHEAD_MS)
    await asyncio.sleep(rnd.uniform(*kill_gap))
    victim = rnd.randrange(len(procs))
    procs[victim].send_signal(signal.SIGKILL)
    procs[victim].wait()
    procs[victim] = _start(h, states[victim], max_in_flight, AHEAD_MS)
    left = await h.wait_ledger(lambda led: not led, timeout=drain_s)
    assert not left, f"{len(left)} ledger entries not forgotten"
    nids = {i.notification_id.encode() for i in h.intents}
    kafka = h.settings.kafka
    deliveries = await read_all(kafka.bootstrap, h.topic("deliveries"))
    latest = {r.key: r.value for r in deliveries}
    assert set(latest) == nids and all(v is None for v in latest.values())
    log = changelog_name(kafka, h.settings.worker.app_id, "deliver", "ledger")
    live = {r.key: r.value for r in await read_all(kafka.bootstrap, log)}
    assert [k for k, v in live.items() if v is not None] == []  # entries and indexes
    # nothing happened again: no call to WeChat, no outcome, no correction
    assert {nid: len(calls) for nid, calls in h.sends_by_nid().items()} == sends
    assert Counter(orjson.dumps(o) for o in await h.outcomes()) == outcomes
    assert Counter(orjson.dumps(c) for c in await h.corrections()) == corrections


def _settled(h: Harness, ledger: dict[str, Any]) -> bool:
    """Every intent final, and every send WeChat took shows as sent (receipts reconciled)."""
    if not h.all_in("sent", "failed", "in_doubt")(ledger):
        return False
    return all(ledger[nid].state == "sent" for nid in h.sends_by_nid())


async def _check(h: Harness, ledger: dict[str, Any], kills: int, max_in_flight: int) -> None:
    sends = h.sends_by_nid()
    nids = {i.notification_id for i in h.intents}
    twice = {nid: len(calls) for nid, calls in sends.items() if len(calls) > 1}
    assert not twice, f"sent more than once: {list(twice.items())[:5]}"
    assert set(sends) <= nids
    unfinished = [
        nid
        for nid in nids
        if ledger.get(nid) is None or ledger[nid].state not in ("sent", "failed", "in_doubt")
    ]
    assert not unfinished, f"{len(unfinished)} intents without a final state"
    for nid, (call,) in sends.items():  # what WeChat took is sent, with WeChat's msgid
        assert (ledger[nid].state, ledger[nid].msgid) == ("sent", str(call.msgid)), nid
    phantom = [nid for nid in nids if ledger[nid].state == "sent" and nid not in sends]
    assert not phantom, f"sent in the ledger, never at WeChat: {phantom[:5]}"
    outcomes = [o for o in await h.outcomes() if o.stage == "deliver"]
    by_nid: dict[str, list[str]] = defaultdict(list)
    for o in outcomes:
        by_nid[o.notification_id].append(o.reason)
    assert set(by_nid) == nids
    odd = {nid: r for nid, r in by_nid.items() if tuple(r) not in FINAL_REASONS}
    assert not odd, f"unexpected outcome sequences: {list(odd.items())[:5]}"
    in_doubt = sum(1 for r in by_nid.values() if r[0] in ("in_doubt", "reconciled_sent"))
    dropped = h.sandbox.recorder.counters["dropped"]
    assert in_doubt <= kills * max_in_flight + dropped, (in_doubt, kills, dropped)
    failed = {nid for nid in nids if ledger[nid].state == "failed"}
    corrections = await h.corrections()
    assert Counter(c.notification_id for c in corrections) == Counter(
        {nid: 1 for nid in failed if not by_nid[nid][-1].startswith("reconciled")}
    )
    assert any(c.action == "zero" for c in corrections)  # the users without credits
    reconciled = sum(1 for r in by_nid.values() if r[-1] == "reconciled_sent")
    assert reconciled >= 1  # the run did exercise in-doubt reconciliation
    print(  # shown with -s: what the run went through
        f"\ncrash run: {len(nids)} intents, {len(sends)} sent, {len(failed)} failed, "
        f"{in_doubt} in doubt ({dropped} dropped responses, {kills} kills), "
        f"{reconciled} reconciled, {sum(1 for nid in nids if ledger[nid].state == 'in_doubt')} "
        "left in doubt"
    )


async def test_kill_9_deliver_workers_sends_each_id_at_most_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    await _crash_run(kafka_bootstrap, tmp_path, n=1000, users=100, kills=4, seed=11)


@pytest.mark.soak
@pytest.mark.timeout(1200)
async def test_kill_9_deliver_workers_soak(kafka_bootstrap: str, tmp_path: Path) -> None:
    seed = int(os.environ.get("WXSUB_SOAK_SEED", "29"))
    await _crash_run(
        kafka_bootstrap,
        tmp_path,
        n=20_000,
        users=1000,
        kills=25,
        seed=seed,
        rate=100,
        kill_gap=(3.0, 8.0),
        max_in_flight=50,
        drain_s=400,
    )


async def test_outage_backlog_drains_afterwards_each_message_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    world = make_world(users=30, credits=10)
    openids = [f"oLoad{i:023d}" for i in range(30)]
    policy = DeliveryPolicy(
        max_attempts=100,
        backoff_base_ms=100,
        backoff_max_ms=500,
        receipt_window_ms=15_000,
        timer_interval_s=0.1,
    )
    async with (
        harness(kafka_bootstrap, world, max_in_flight=30) as h,
        run_stage(h.settings, tmp_path, policy) as (_, metrics),
    ):
        # the outage: 90% of calls answer -1; the first call of phase two hangs past the
        # client's read timeout (5 s) and is then processed: in doubt, reconciled by its receipt
        h.sandbox.faults.set(FaultSpec.from_json({"seed": 3, "errors": {"-1": 0.9}}))
        await h.produce(intent(world, o, 0) for o in openids)
        await asyncio.sleep(2.0)
        assert _gauge(metrics, "wxsub_deferred_backlog", stage="deliver") > 0
        slow = {"seed": 5, "next": [{"latency_s": 6.0}], "errors": {"-1": 0.9}}
        h.sandbox.faults.set(FaultSpec.from_json(slow))
        await h.produce(intent(world, o, 1) for o in openids)
        await asyncio.sleep(3.0)
        h.sandbox.faults.clear()  # WeChat is back
        async with asyncio.timeout(10):  # the slow call was processed, after the client gave up
            while not any(c.latency_s >= 6 for c in h.sandbox.recorder.calls(endpoint="send")):
                await asyncio.sleep(0.1)
        ledger = await h.wait_ledger(
            lambda led: (
                h.all_in("sent", "failed", "in_doubt")(led)
                and all(led[nid].state == "sent" for nid in h.sends_by_nid())
            ),
            timeout=45,
        )
        sends = h.sends_by_nid()
        assert all(len(calls) == 1 for calls in sends.values())
        assert {ledger[i.notification_id].state for i in h.intents} == {"sent"}
        assert len(sends) == len(h.intents)
        assert h.sandbox.recorder.counters["errcode.-1"] >= len(openids)
        reasons = Counter(o.reason for o in await h.outcomes())
        assert reasons["in_doubt"] == reasons["reconciled_sent"] == 1  # the slow call
        assert reasons["sent"] == len(h.intents) - 1
        await asyncio.sleep(0.5)  # one more timer run
        assert _gauge(metrics, "wxsub_deferred_backlog", stage="deliver") == 0


def _gauge(metrics: Any, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else float(value)

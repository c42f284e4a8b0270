"""Broker faults on the secured three-broker cluster, each compared with the oracle.

The pipeline (orders, products, decide; two worker processes, SASL_SSL as ``User:wxsub`` with
the documented worker ACLs, replication 3, min ISR 2) runs the event log of tests/pipeline while
a broker is killed, restarted, or stopped for a while. Whatever happens, intents and outcomes
equal the oracle's: nothing lost, nothing twice.

The default suite runs each kind of fault once, in turn, in one pipeline run
(``test_each_broker_fault_in_turn``: one deployment and one oracle comparison instead of three,
to stay within the suite's time budget). Each kind on its own, and the long loops, are ``soak``
(``make soak``).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tests.cluster.conftest import APP
from tests.pipeline import test_pipeline_e2e as e2e
from tests.pipeline.harness import Deployment, as_published, progress
from wxsub.streams.topics import ensure_topics, topic_names
from wxsub_dev.kafka_cluster import LocalKafkaCluster

pytestmark = pytest.mark.kafka

Fault = Callable[[LocalKafkaCluster, Deployment], Awaitable[None]]
SOAK = pytest.mark.soak


def _deployment(cluster: LocalKafkaCluster, tmp_path: Path, merchants: str) -> Deployment:
    dep = Deployment(cluster.bootstrap, tmp_path, merchants)
    dep.secure = cluster.settings("wxsub")
    dep.secure_env = cluster.client_env("wxsub")
    dep.secure_env["WXSUB_WORKER_APP_ID"] = f"{APP}{dep.uid}"
    return dep


async def _busiest_leader(cluster: LocalKafkaCluster, dep: Deployment) -> int:
    counts = await cluster.leader_counts(topic_names(dep.kafka, f"{APP}{dep.uid}"))
    return max(counts, key=lambda b: counts[b])


async def _run_with_fault(
    cluster: LocalKafkaCluster,
    tmp_path: Path,
    fault: Fault,
    seed: int,
    window_s: int,
    soak: bool = False,
) -> None:
    """The event log (smaller by default, the soak variants' full size) with ``fault``
    happening while phase 1 is published."""
    users, orders = (60, 120) if soak else (40, 80)
    log = e2e._log(seed=seed, window_s=window_s, users=users, orders=orders)[0]
    exp, early = e2e._bootstrap_expected(log)  # no config applied: the file, version 0
    dep = _deployment(cluster, tmp_path, log.merchants_toml)
    watching = asyncio.create_task(_watch(dep))
    try:
        await ensure_topics(dep.kafka, f"{APP}{dep.uid}")
        for i in range(2):
            dep.start(i)
        phase0, phase1, phase2 = (log.phase(n) for n in (0, 1, 2))
        await dep.publish(as_published(phase0))
        got = await dep.wait_for("outcomes", log.phase0_outcomes, timeout=120)
        assert got >= log.phase0_outcomes, f"phase 0 not applied ({got})\n{dep.logs()}"
        publishing = asyncio.create_task(dep.publish(as_published(phase1)))
        _note(dep, "phase 0 applied; faults begin")
        await fault(cluster, dep)
        _note(dep, "faults done")
        await publishing
        _note(dep, "phase 1 published")
        short = await e2e._undecided(dep, early, timeout=240)
        assert not short, f"phase 1 not decided ({short})\n{dep.logs()}"
        await dep.publish(as_published(phase2))  # it competes with phase 1 for caps
        _note(dep, "phase 2 published")
        await dep.wait_for("outcomes", sum(exp.outcomes.values()), timeout=240)
        await dep.wait_for("intents", len(exp.intents), timeout=240)
        await asyncio.sleep(e2e.SETTLE_S)
        intents, outcomes, dlq = await dep.intents(), await dep.outcomes(), await dep.read("dlq")
    finally:
        watching.cancel()
        dep.stop_all()
    try:
        e2e._compare(intents, outcomes, len(dlq), exp)
    except AssertionError:
        print(dep.logs())
        print(e2e._diagnose(intents, outcomes, exp))
        raise


async def _watch(dep: Deployment, every_s: float = 10.0) -> None:
    """Every ``every_s``: each stage's committed offsets vs the log ends (harness.progress),
    in ``progress.log`` in the test's tmp dir beside the worker logs."""
    while True:
        await asyncio.sleep(every_s)
        _note(dep, "progress\n" + await progress(dep))


def _note(dep: Deployment, text: str) -> None:
    """A UTC-stamped line in ``progress.log`` beside the worker logs (their stamps are UTC)."""
    stamp = time.strftime("%H:%M:%S", time.gmtime())
    with (dep.workdir / "progress.log").open("a", encoding="utf-8") as out:
        out.write(f"{stamp} {text}\n")


def _kill9_leader(rounds: int) -> Fault:
    async def fault(cluster: LocalKafkaCluster, dep: Deployment) -> None:
        rnd = random.Random(rounds)
        for _ in range(rounds):
            await asyncio.sleep(rnd.uniform(0.5, 2.0))
            victim = await _busiest_leader(cluster, dep)
            _note(dep, f"kill -9 broker {victim}")
            cluster.kill(victim)
            await asyncio.sleep(rnd.uniform(2.0, 5.0))
            await asyncio.to_thread(cluster.start_node, victim)
            _note(dep, f"broker {victim} back")

    return fault


def _rolling_restart(rounds: int) -> Fault:
    async def fault(cluster: LocalKafkaCluster, dep: Deployment) -> None:
        for _ in range(rounds):
            for node in cluster.brokers():
                _note(dep, f"stopping broker {node.node_id}")
                await asyncio.to_thread(cluster.stop_node, node.node_id)
                await asyncio.to_thread(cluster.start_node, node.node_id)
                _note(dep, f"broker {node.node_id} back")
                # as an operator would: the next broker only once replicas caught up
                for _ in range(120):
                    if await cluster.under_replicated() == 0:
                        break
                    await asyncio.sleep(0.5)

    return fault


def _outage(seconds: float) -> Fault:
    async def fault(cluster: LocalKafkaCluster, dep: Deployment) -> None:
        await asyncio.sleep(1.0)
        victim = await _busiest_leader(cluster, dep)
        _note(dep, f"stopping broker {victim} for {seconds} s")
        await asyncio.to_thread(cluster.stop_node, victim)
        await asyncio.sleep(seconds)
        await asyncio.to_thread(cluster.start_node, victim)
        _note(dep, f"broker {victim} back")

    return fault


def _in_turn(*faults: Fault) -> Fault:
    async def fault(cluster: LocalKafkaCluster, dep: Deployment) -> None:
        for one in faults:
            await one(cluster, dep)

    return fault


@pytest.mark.timeout(600)  # three faults in turn, each with its broker restarts, on 2 cores
async def test_each_broker_fault_in_turn_loses_and_repeats_nothing(
    healthy_cluster: LocalKafkaCluster, tmp_path: Path
) -> None:
    """kill -9 of the busiest leader, a rolling restart and an 8 s outage, in turn, while
    phase 1 is published (the default suite's fault test: one of each kind).

    The windows are wide (45 s): on a loaded machine the restarts can hold an order's late
    logistics longer than a short orphan window, which the oracle would then call an orphan."""
    fault = _in_turn(_kill9_leader(1), _rolling_restart(1), _outage(8))
    await _run_with_fault(healthy_cluster, tmp_path, fault, 41, window_s=45)


@pytest.mark.soak
@pytest.mark.timeout(900)  # three faults in turn, each with its broker restart, on 2 loaded cores
async def test_all_broker_faults_in_one_run(
    healthy_cluster: LocalKafkaCluster, tmp_path: Path
) -> None:
    """kill -9 of the busiest leader, a rolling restart and a 15 s outage, in turn, on the
    full-size log.

    It used to stop short of the oracle's counts: a produce batch that expired while its
    partition had no leader (the kill -9) had spent an aiokafka sequence number, so that
    partition's producer got ``OutOfOrderSequenceNumber`` on every later transaction and the
    stage never got past it. The runtime now renews the producer after a failed transaction
    (partition.py ``renew_producer``; tests/streams/test_runtime_producer_renewal.py)."""
    fault = _in_turn(_kill9_leader(1), _rolling_restart(1), _outage(15))
    await _run_with_fault(healthy_cluster, tmp_path, fault, 41, window_s=45, soak=True)


@SOAK
@pytest.mark.parametrize(
    ("fault", "seed", "window_s", "full"),
    [
        pytest.param(_kill9_leader(1), 41, 40, False, id="kill9-once"),
        pytest.param(_kill9_leader(8), 41, 40, True, id="kill9-8-rounds"),
        pytest.param(_rolling_restart(1), 43, 25, False, id="rolling-once"),
        pytest.param(_rolling_restart(3), 43, 25, True, id="rolling-3-rounds"),
        pytest.param(_outage(8), 47, 23, False, id="outage-8s"),
        pytest.param(_outage(60), 47, 75, True, id="outage-60s"),
    ],
)
async def test_one_broker_fault_alone_loses_and_repeats_nothing(
    healthy_cluster: LocalKafkaCluster,
    tmp_path: Path,
    fault: Fault,
    seed: int,
    window_s: int,
    full: bool,
) -> None:
    """Each kind of fault on its own, once and repeated (the loops on the full-size log)."""
    await _run_with_fault(healthy_cluster, tmp_path, fault, seed, window_s=window_s, soak=full)

"""The stage runtime is exactly-once on a real broker, with and without kill -9."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from tests.fixtures.kafka_helpers import create_topic, read_all

pytestmark = pytest.mark.kafka

KEYS = [f"k{i}" for i in range(40)]


def _start(bootstrap: str, inp: str, out: str, state: Path, app: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.streams.sum_stage", bootstrap, inp, out, str(state), app],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.DEVNULL,
        stderr=(state.parent / f"{state.name}.log").open("ab"),
    )


async def _produce(bootstrap: str, topic: str, n: int, seed: int) -> dict[str, list[int]]:
    rnd = random.Random(seed)
    sent: dict[str, list[int]] = defaultdict(list)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all")
    await producer.start()
    try:
        for i in range(n):
            k = rnd.choice(KEYS)
            v = rnd.randint(1, 100)
            sent[k].append(v)
            await producer.send(topic, key=k.encode(), value=str(v).encode())
            if i % 200 == 0:
                await producer.flush()
                await asyncio.sleep(0.02)
        await producer.flush()
    finally:
        await producer.stop()
    return sent


def _check(outputs: list[dict[str, object]], sent: dict[str, list[int]]) -> None:
    by_src: dict[object, int] = defaultdict(int)
    for o in outputs:
        by_src[o["src"]] += 1
    dup = {s: c for s, c in by_src.items() if c > 1}
    assert not dup, f"duplicate outputs for inputs: {list(dup)[:5]}"
    assert len(outputs) == sum(len(v) for v in sent.values()), "an input has no output"
    per_key: dict[str, list[dict[str, object]]] = defaultdict(list)
    for o in outputs:
        per_key[str(o["key"])].append(o)
    for key, values in sent.items():
        got = sorted(per_key[key], key=lambda o: int(str(o["count"])))
        assert [o["count"] for o in got] == list(range(1, len(values) + 1)), key
        running = 0
        for o, v in zip(got, values, strict=True):
            running += v
            assert o["sum"] == running, (key, o)


async def _wait_outputs(
    bootstrap: str, out: str, n: int, timeout: float = 90.0
) -> list[dict[str, object]]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        recs = await read_all(bootstrap, out, isolation="read_committed")
        if len(recs) >= n or asyncio.get_running_loop().time() > deadline:
            return [orjson.loads(r.value) for r in recs]
        await asyncio.sleep(1.0)


@pytest.mark.parametrize("kills", [0, 4])
async def test_runtime_is_exactly_once(kafka_bootstrap: str, tmp_path: Path, kills: int) -> None:
    uid = os.urandom(4).hex()
    inp, out, app = f"eos-in-{uid}", f"eos-out-{uid}", f"eos-{uid}"
    await create_topic(kafka_bootstrap, inp, 4)
    await create_topic(kafka_bootstrap, out, 4)
    await create_topic(kafka_bootstrap, f"{inp}-sum-sums-changelog", 4, compacted=True)
    n = 3000
    rnd = random.Random(kills)
    # two workers, each with its own state dir (as two machines would have)
    states = [tmp_path / "w0", tmp_path / "w1"]
    procs = [_start(kafka_bootstrap, inp, out, s, app) for s in states]
    try:
        producing = asyncio.create_task(_produce(kafka_bootstrap, inp, n, seed=kills))
        for _ in range(kills):
            await asyncio.sleep(rnd.uniform(1.0, 3.0))
            victim = rnd.randrange(2)
            procs[victim].send_signal(signal.SIGKILL)
            procs[victim].wait()
            procs[victim] = _start(kafka_bootstrap, inp, out, states[victim], app)
        sent = await producing
        outputs = await _wait_outputs(kafka_bootstrap, out, n)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
    _check(outputs, sent)

"""Pipeline throughput: order events -> orders -> candidates -> decide -> intents, one worker.

The input (``n`` order-status events, every one notifying a user who has credits) is produced
before the worker starts, so the worker drains a backlog. Throughput is ``n`` over the span of
the output's record timestamps (first candidate or outcome -> last intent or outcome); worker
CPU per event is the worker's CPU (``/proc/<pid>/stat``, sampled every 50 ms) over that span,
so start-up and shut-down do not count.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from pathlib import Path
from typing import Any

import orjson

from bench.common import Deployment, order_events, produce, read_topic
from wxsub.settings import KafkaSettings

__all__ = ["Pipeline", "run_pipeline"]

STAGES = "orders,products,decide"


class Pipeline:
    """A deployment with the users seeded and ``n`` events waiting in order-status."""

    def __init__(
        self,
        bootstrap: str,
        workdir: Path,
        n: int,
        users: int,
        guarantee: str,
        code_root: Path | None = None,
        secure: tuple[KafkaSettings, dict[str, str]] | None = None,
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.dep = Deployment(bootstrap, workdir, guarantee=guarantee)
        if secure is not None:
            self.dep.secure, self.dep.secure_env = secure
        if code_root is not None:
            self.dep.code_root = code_root
        self.n, self.users = n, users

    async def prepare(self) -> None:
        await self.dep.create_topics()
        await self.dep.seed_users(self.users, credits=self.n // self.users + 2)
        now = int(time.time() * 1000)
        events = order_events(self.n, self.users, now)
        entries = ((self.dep.topic(t), k, v) for t, k, v in events)
        await produce(self.dep.bootstrap, entries, security=self.dep.security)


async def run_pipeline(
    bootstrap: str,
    workdir: Path,
    n: int,
    users: int,
    guarantee: str,
    profile: bool = False,
    code_root: Path | None = None,
    secure: tuple[KafkaSettings, dict[str, str]] | None = None,
) -> dict[str, Any]:
    """One run; ``code_root``: the checkout whose worker runs (default: this one);
    ``secure``: a secured cluster's (KafkaSettings, worker env) (bench/secure.py)."""
    pipe = Pipeline(bootstrap, workdir, n, users, guarantee, code_root, secure)
    await pipe.prepare()
    dep = pipe.dep
    worker = dep.start(STAGES, profile=workdir / "profile.txt" if profile else None)
    samples: list[tuple[float, float]] = []
    try:
        await _drain(worker, n, samples)
    except Exception:
        print(worker.tail())
        raise
    finally:
        worker.stop()
    stamps = await _stamps(dep)
    t0, t1 = min(stamps["first"]) / 1000, max(stamps["last"]) / 1000
    span = max(t1 - t0, 1e-3)
    cpu = _cpu_at(samples, t1) - _cpu_at(samples, t0)
    return {
        "guarantee": guarantee,
        "events": n,
        "intents": stamps["intents"],
        "duplicates": stamps["intents"] - stamps["unique"],
        "events_per_s": n / span,
        "cpu_us_per_event": cpu / n * 1e6,
        "span_s": span,
    }


async def _drain(worker: Any, n: int, samples: list[tuple[float, float]]) -> None:
    """Sample the worker's CPU until orders read all ``n`` and decide read every candidate."""
    deadline = time.time() + 120 + n / 500
    last_check = 0.0
    while time.time() < deadline:
        samples.append((time.time(), worker.cpu()))
        if worker.proc.poll() is not None:
            raise RuntimeError("worker exited")
        if time.time() - last_check > 0.5:
            last_check = time.time()
            try:
                m = worker.metrics()
            except OSError:
                m = {}
            orders = worker.total(m, "wxsub_records_total", stage="orders")
            decide = worker.total(m, "wxsub_records_total", stage="decide")
            cands = worker.total(m, "wxsub_candidates_total")
            if orders >= n and decide >= cands > 0:
                samples.append((time.time(), worker.cpu()))
                return
        await asyncio.sleep(0.05)
    raise TimeoutError("pipeline did not drain")


async def _stamps(dep: Deployment) -> dict[str, Any]:
    sec = dep.security
    cands = await read_topic(dep.bootstrap, dep.topic("candidates"), sec)
    intents = await read_topic(dep.bootstrap, dep.topic("intents"), sec)
    outcomes = await read_topic(dep.bootstrap, dep.topic("outcomes"), sec)
    last = [r.timestamp for r in intents + outcomes]
    return {
        "first": [r.timestamp for r in cands + outcomes] or [time.time() * 1000],
        "last": last or [time.time() * 1000],
        "intents": len(intents),
        "unique": len({orjson.loads(r.value)["notification_id"] for r in intents}),
    }


def _cpu_at(samples: list[tuple[float, float]], t: float) -> float:
    """Worker CPU at wall time ``t``, interpolated between samples."""
    times = [s[0] for s in samples]
    i = bisect.bisect_left(times, t)
    if i <= 0:
        return samples[0][1]
    if i >= len(samples):
        return samples[-1][1]
    (ta, ca), (tb, cb) = samples[i - 1], samples[i]
    return ca + (cb - ca) * (t - ta) / max(tb - ta, 1e-9)

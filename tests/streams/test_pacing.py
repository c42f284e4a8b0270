"""How a partition's batches are spaced (pacing.py): a fixed spacing, and a GCRA that follows
its upstream's commits, each at most about one batch per commit interval."""

from __future__ import annotations

import random

import pytest

from wxsub.streams.pacing import EARLY, Pacer
from wxsub.streams.partition import PartitionUnit
from wxsub.streams.stage import PacingKind

I = 0.1  # noqa: E741 (the commit interval, as in the docs' formulas)


def unit() -> PartitionUnit:
    return PartitionUnit(0, producer=None, stores={}, changelogs={})  # type: ignore[arg-type]


def test_fixed_pacing_holds_the_inputs_an_interval() -> None:
    p, u = Pacer("fixed", I), unit()
    p.started(u, 10.0)
    assert u.started == 10.0 and p.resume_at(u) == pytest.approx(10.0 + I)
    p.started(u, 10.25)  # late: from itself
    assert p.resume_at(u) == pytest.approx(10.25 + I)


def test_upstream_pacing_is_a_gcra() -> None:
    p, u = Pacer("upstream", I), unit()
    p.started(u, 10.0)
    assert u.due == pytest.approx(10.0 + I)
    assert p.resume_at(u) == pytest.approx(10.0 + I - EARLY * I)
    p.started(u, 10.0 + I - 0.01)  # early: the due time moves from the due time
    assert u.due == pytest.approx(10.0 + 2 * I)
    p.started(u, 10.5)  # late: from itself
    assert u.due == pytest.approx(10.5 + I)


@pytest.mark.parametrize("kind", ["fixed", "upstream"])
def test_a_busy_partition_starts_about_one_batch_per_interval(kind: PacingKind) -> None:
    """Records always waiting: a batch starts when the inputs resume (plus a fetch)."""
    rng = random.Random(7)
    p, u = Pacer(kind, I), unit()
    starts, t = [], 0.0
    while t < 20.0:
        p.started(u, t)
        starts.append(t)
        t = p.resume_at(u) + rng.uniform(0.0, 0.02)
    bound = 1 + 1.0 / I + (EARLY if kind == "upstream" else 0.0)
    for i, s in enumerate(starts):
        assert len([x for x in starts[i:] if x < s + 1.0]) <= bound + 1e-9  # any span of 1 s
    assert len(starts) >= 0.8 * 20.0 / I  # and it does not starve


def _waits(kind: PacingKind, offset: float, seed: int) -> list[float]:
    """A downstream partition fed by an upstream with a fixed spacing (an interval plus a few
    ms of fetch per batch, its commit ~15-25 ms after its start): how long each burst waits for
    the downstream batch that takes it. A burst visible before the downstream's inputs resume
    is fetched only behind the Fetch in flight for the other partitions (up to 50 ms)."""
    rng = random.Random(seed)
    up, down = Pacer("fixed", I), Pacer(kind, I)
    u, d = unit(), unit()
    bursts, t = [], 0.0
    for _ in range(300):
        up.started(u, t)
        bursts.append(t + 0.015 + rng.uniform(0.0, 0.01))  # visible at the upstream's commit
        t = up.resume_at(u) + rng.uniform(0.001, 0.006)
    down.started(d, offset)
    waits: list[float] = []
    pending = [b for b in bursts if b > offset]
    while pending:
        resume = down.resume_at(d)
        if pending[0] < resume:  # waiting: fetched after the resume
            start = resume + rng.uniform(0.0, 0.05)
        else:  # the inputs are resumed: fetched as it comes
            start = pending[0] + rng.uniform(0.001, 0.005)
        waits += [start - b for b in pending if b <= start]
        pending = [b for b in pending if b > start]
        down.started(d, start)
    return waits


@pytest.mark.parametrize("offset", [0.03, 0.06, 0.09])
def test_upstream_pacing_lands_just_after_the_bursts(offset: float) -> None:
    """Whatever the phase it starts at, a GCRA partition ends up starting as each burst comes;
    with a fixed spacing the same partition keeps most bursts waiting (the phase it has is a
    fixed point, or it drifts through the whole interval)."""
    for seed in range(3):
        settled = sorted(_waits("upstream", offset, seed)[100:])
        assert settled[int(0.9 * len(settled))] < 0.01, (offset, seed)
    fixed = sorted(_waits("fixed", offset, 0)[100:])
    assert fixed[len(fixed) // 2] > 0.02

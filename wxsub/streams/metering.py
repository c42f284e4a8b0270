"""Counters that count committed work: cached labelled children, and increments per transaction.

``count`` increments now; ``tally`` increments once the partition's transaction commits (never
if it aborts), so a batch processed twice after an abort is counted once. Stages use ``tally``
for everything they count while processing; ``count`` is for work outside a transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from wxsub.streams.stage import PartitionContext

__all__ = ["count", "labelled", "tally"]

# (id(metric), labels) -> (metric, labelled child, the child's increment): ``Metric.labels()``
# costs several µs per call; the metric is kept in the value so its id cannot be reused while
# the entry lives. Not bounded on purpose: one entry per child the metric itself keeps (label
# values are finite sets: stages, kinds, reasons, configured apps and templates)
_CHILDREN: dict[tuple[int, tuple[str, ...]], tuple[Any, Any, Callable[[float], None]]] = {}


def _child(metric: Any, labels: tuple[str, ...]) -> tuple[Any, Any, Callable[[float], None]]:
    key = (id(metric), labels)
    hit = _CHILDREN.get(key)
    if hit is None:
        child = metric.labels(*labels)
        hit = _CHILDREN[key] = (metric, child, _increment(child))
    return hit


def count(metric: Any, *labels: str, n: float = 1) -> None:
    """``metric.labels(*labels).inc(n)`` with the labelled child cached."""
    if n < 0:
        raise ValueError("counters only go up")
    _child(metric, labels)[2](n)


def tally(ctx: PartitionContext, metric: Any, *labels: str, n: float = 1) -> None:
    """``count()`` once ``ctx``'s transaction commits (never if it aborts).

    Counters then count committed work only: a batch that aborts and is processed again is
    counted once, so ``wxsub_intents_total`` matches the intents topic. Per event it is a dict
    lookup and an add in place (``ctx.tallies`` holds a one-element list per key: one hash of
    the key, where storing the sum back hashed it again, -0.86 k instructions per call,
    bench/RESULTS.md session 9) where ``count()`` takes a child lookup and a locked add; the
    counters are updated once per label set and batch.
    """
    if n < 0:
        raise ValueError("counters only go up")
    pending = ctx.tallies
    cell = pending.get((metric, labels))
    if cell is not None:
        cell[0] += n
        return
    if not pending:  # the first since the last commit: apply them all at the next one
        ctx.on_commit(lambda: _apply(pending))
    pending[(metric, labels)] = [n]


def _apply(pending: dict[Any, list[float]]) -> None:
    for (metric, labels), (n,) in pending.items():
        count(metric, *labels, n=n)
    pending.clear()


def labelled(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, cached (for histograms and gauges; counters: ``count``)."""
    return _child(metric, labels)[1]


def _increment(child: Any) -> Callable[[float], None]:
    """The child's value ``inc``: what ``Counter.inc`` ends in, without its per-call checks
    (observability, exemplar), ~2x cheaper. ``_value`` is prometheus_client's (0.20-0.26);
    any other shape falls back to the public ``inc``."""
    value = getattr(child, "_value", None)
    inc = getattr(value, "inc", None) or getattr(child, "inc", None)
    return cast(Callable[[float], None], inc) if callable(inc) else _not_a_counter


def _not_a_counter(n: float) -> None:
    raise TypeError("count() takes counters (histograms and gauges: labelled())")

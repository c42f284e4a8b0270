"""When a partition's next batch may start: about one per commit interval, and for a stage fed by
another stage's commits, soon after them.

Every batch is a transaction, so ``commit_interval_ms`` bounds how often a partition commits;
where in the interval a batch starts decides how long an event waits at each hop. A downstream
stage's input comes in bursts, at its upstream's commits. With a fixed spacing (each batch at
least an interval after the last one's start, the inputs held until then) a downstream
partition keeps whatever phase it has against those bursts: every phase is a fixed point, so a
burst waits a few ms in one run and most of an interval in another (bench/RESULTS.md, session
9: the decide hop ~25-30 ms or ~70-95 ms from one run to the next). Two kinds of pacing
(``StageSpec.pacing``):

- ``fixed``, for a stage fed from outside: batches start at least ``commit_interval_ms``
  apart; a partition's inputs are held until then.
- ``upstream``, for a stage fed by another stage's commits: a GCRA (the scheduling form of a
  token bucket). Each batch moves the partition's due time one interval past itself or past
  the batch's start, whichever is later, and the inputs are held until ``EARLY`` of an
  interval before it. A partition behind its upstream's bursts thus starts up to ``EARLY``
  early, which a fixed spacing never does, so its batches come a little more often than the
  upstream's (whose spacing is an interval plus its fetch), and its phase moves earlier until
  a burst is not there yet when its inputs resume; from then on it starts as each burst comes,
  and stays there (its due time then follows the bursts). Over any span T a partition starts at
  most 1 + T / interval + ``EARLY`` batches, and on average one per interval at most.

With ``commit_interval_ms`` 0 nothing is paced: a batch starts as soon as records come.
"""

from __future__ import annotations

from wxsub.streams.partition import PartitionUnit
from wxsub.streams.stage import PacingKind

__all__ = ["EARLY", "Pacer"]

#: ``upstream``: a partition's inputs resume this fraction of an interval before its batch is due
EARLY = 0.5


class Pacer:
    """The pacing of one stage's partitions (their ``due`` times, on the monotonic clock)."""

    def __init__(self, kind: PacingKind, interval: float) -> None:
        self.kind = kind
        self.interval = interval  # commit_interval_ms, in seconds
        self._early = EARLY * interval if kind == "upstream" else 0.0

    def started(self, unit: PartitionUnit, now: float) -> None:
        """A batch of ``unit`` starts at ``now``: when is the next one due?"""
        unit.started = now
        if self.kind == "upstream":
            unit.due = max(unit.due, now) + self.interval
        else:
            unit.due = now + self.interval

    def resume_at(self, unit: PartitionUnit) -> float:
        """When ``unit``'s held inputs may be fetched again."""
        return unit.due - self._early

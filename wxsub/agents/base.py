"""What every agent shares: its collaborators, decode-or-DLQ, outcomes, and a due-time index.

Agents stay thin: they decode, call the pure rules in ``wxsub.agents.rules``, and emit what the
rules returned. Nothing here decides anything.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

from aiokafka import ConsumerRecord

from wxsub.dlq import dead_letter
from wxsub.errors import InputError, InputReason
from wxsub.merchants import Merchants
from wxsub.schemas import decode_topic
from wxsub.schemas.internal import Outcome, encode_internal, user_key
from wxsub.settings import Settings
from wxsub.streams.metrics import WorkerMetrics
from wxsub.streams.stage import PartitionContext
from wxsub.streams.store import PartitionStore

__all__ = ["DueIndex", "StageEnv", "count", "labelled", "tally", "wall_ms"]

log = logging.getLogger(__name__)

# (id(metric), labels) -> (metric, labelled child, the child's increment): ``Metric.labels()``
# costs several µs per call; the metric is kept in the value so its id cannot be reused while
# the entry lives
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
    update (~0.3 µs) where ``count()`` takes a child lookup and a locked add (~0.8 µs); the
    counters are updated once per label set and batch.
    """
    if n < 0:
        raise ValueError("counters only go up")
    key = (metric, labels)
    pending = ctx.tallies
    if key in pending:
        pending[key] += n
        return
    if not pending:  # the first since the last commit: apply them all at the next one
        ctx.on_commit(lambda: _apply(pending))
    pending[key] = n


def _apply(pending: dict[Any, float]) -> None:
    for (metric, labels), n in pending.items():
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


def wall_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class StageEnv:
    """The collaborators handed to every agent by the composition root."""

    settings: Settings
    merchants: Merchants
    metrics: WorkerMetrics
    clock: Callable[[], int] = field(default=wall_ms)

    # logical name -> topic, and topic -> logical name (asked for on every record)
    _topics: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)
    _logicals: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)

    def topic(self, logical: str) -> str:
        name = self._topics.get(logical)
        if name is None:
            name = self._topics[logical] = self.settings.kafka.topic(logical)
        return name

    def logical(self, topic: str) -> str:
        name = self._logicals.get(topic)
        if name is None:
            prefix = self.settings.kafka.topic_prefix
            name = topic[len(prefix) :] if topic.startswith(prefix) else topic
            self._logicals[topic] = name
        return name

    def _decode(self, ctx: PartitionContext, rec: ConsumerRecord) -> Any:
        """The record's event, or the InputError saying why not (not a coroutine: the happy
        path is most of the stage's records, and one coroutine per record adds up)."""
        logical = self.logical(rec.topic)
        try:
            event = decode_topic(logical, rec.value or b"", self.settings.worker.max_event_bytes)
        except InputError as exc:
            tally(ctx, self.metrics.events_invalid, logical, exc.reason)
            return exc
        tally(ctx, self.metrics.events_in, logical, type(event).__name__)
        return event

    def keyed_event(self, ctx: PartitionContext, rec: ConsumerRecord) -> Any:
        """The record's event, or the InputError saying why not (for :meth:`dead_letter`). The
        record key must be the event's own key: an event on the wrong partition would miss its
        state (co-partitioning). Synchronous, as ``_decode``."""
        event = self._decode(ctx, rec)
        if isinstance(event, InputError):
            return event
        if rec.key is None or rec.key.decode(errors="replace") != event.key:
            tally(ctx, self.metrics.events_invalid, self.logical(rec.topic), InputReason.WRONG_KEY)
            return InputError(
                InputReason.WRONG_KEY, f"record key must be the event key {event.key!r}"
            )
        return event

    async def decode_keyed(
        self, ctx: PartitionContext, rec: ConsumerRecord, stage: str
    ) -> Any | None:
        """:meth:`keyed_event`, or None after sending the record to the DLQ with the reason."""
        event = self.keyed_event(ctx, rec)
        if isinstance(event, InputError):
            await self.dead_letter(ctx, rec, event, stage)
            return None
        return event

    async def dead_letter(
        self, ctx: PartitionContext, rec: ConsumerRecord, error: Exception, stage: str
    ) -> None:
        key, value, headers = dead_letter(
            rec.value or b"",
            rec.headers or (),
            rec.topic,
            rec.partition,
            rec.offset,
            error,
            stage,
            key=rec.key,
        )
        await ctx.send(self.topic("dlq"), key, value, headers)
        tally(ctx, self.metrics.dlq, stage)

    async def emit_outcomes(self, ctx: PartitionContext, outcomes: Iterable[Outcome]) -> None:
        topic = self.topic("outcomes")
        for o in outcomes:
            key = user_key(o.appid, o.openid) if o.openid else o.event_id
            await ctx.send(topic, key.encode(), encode_internal(o))
            tally(ctx, self.metrics.outcomes, o.stage, o.kind, o.reason)


class DueIndex:
    """Entities with work due at a wall-clock time, kept sorted inside a partition store.

    Keys are ``PREFIX + 13-digit ms + "|" + entity key``, so a scan from the prefix yields them in
    due order and stops at the first one in the future.
    """

    PREFIX = b"\x01due|"

    def __init__(self, store: PartitionStore) -> None:
        self.store = store

    def _key(self, due_ms: int, entity: bytes) -> bytes:
        return self.PREFIX + b"%013d|" % due_ms + entity

    def set(self, entity: bytes, old_due: int | None, new_due: int | None) -> None:
        if old_due == new_due:
            return
        if old_due is not None:
            self.store.delete(self._key(old_due, entity))
        if new_due is not None:
            self.store.put(self._key(new_due, entity), b"")

    def due(self, now_ms: int, limit: int = 10_000) -> Iterator[tuple[int, bytes]]:
        """(due_ms, entity) whose time has come, oldest first (at most ``limit``)."""
        n = len(self.PREFIX)
        for i, (key, _) in enumerate(self.store.scan(self.PREFIX)):
            due = int(key[n : n + 13])
            if due > now_ms or i >= limit:
                return
            yield due, key[n + 14 :]

    def count(self) -> int:
        return sum(1 for _ in self.store.scan(self.PREFIX))

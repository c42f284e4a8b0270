"""What every stage shares: its collaborators, decode-or-DLQ, and outcomes.

Agents stay thin: they decode, call the pure rules in ``wxsub.agents.rules``, and emit what the
rules returned. Nothing here decides anything.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import ConsumerRecord
from murmurhash2 import murmurhash2

from wxsub.dlq import dead_letter
from wxsub.errors import InputError, InputReason
from wxsub.merchants import Merchants
from wxsub.schemas import decode_topic
from wxsub.schemas.internal import Outcome, encode_internal, user_key
from wxsub.settings import Settings
from wxsub.streams.metering import tally
from wxsub.streams.metrics import WorkerMetrics
from wxsub.streams.outbox import KAFKA_SEED
from wxsub.streams.stage import PartitionContext

__all__ = ["Misrouted", "StageEnv", "wall_ms"]

log = logging.getLogger(__name__)


def wall_ms() -> int:
    return int(time.time() * 1000)


class Misrouted:
    """A valid event on a partition its key does not hash to: it belongs on ``home``."""

    __slots__ = ("home",)

    def __init__(self, home: int) -> None:
        self.home = home


@dataclass(frozen=True)
class StageEnv:
    """The collaborators handed to every agent by the composition root."""

    settings: Settings
    merchants: Merchants
    metrics: WorkerMetrics
    clock: Callable[[], int] = field(default=wall_ms)

    # logical name -> topic, and topic -> logical name (asked for on every record); keyed by
    # the stages' topics, a finite set
    _topics: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)
    _logicals: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)
    # kafka.partitions, read per input event (the partition check in keyed_event)
    _partitions: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_partitions", self.settings.kafka.partitions)

    def set_merchants(self, merchants: Merchants) -> None:
        """Swap the merchant config (live config, ``wxsub.liveconfig``): stages read
        ``env.merchants`` per batch or per event, so decisions made after this use the new one."""
        object.__setattr__(self, "merchants", merchants)

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
        """The record's event; or the InputError saying why not; or :class:`Misrouted` (hand
        the last two to :meth:`divert`). Synchronous, as ``_decode``.

        The record key must be the event's own key, and the record must be on the partition
        that key hashes to (murmur2, Kafka's default partitioner, over ``kafka.partitions``,
        which ``ensure_topics`` checks every topic has): an event elsewhere would miss its
        state (co-partitioning). Publishers whose clients partition otherwise (librdkafka's
        CRC32 default, sarama's FNV-1a) put valid events on other partitions; those are moved,
        not refused (docs/publishers.md)."""
        event = self._decode(ctx, rec)
        if isinstance(event, InputError):
            return event
        key = rec.key
        if key is None or key.decode(errors="replace") != event.key:
            tally(ctx, self.metrics.events_invalid, self.logical(rec.topic), InputReason.WRONG_KEY)
            return InputError(
                InputReason.WRONG_KEY, f"record key must be the event key {event.key!r}"
            )
        # partition_for(key, partitions), inlined: it runs for every input event
        home = (murmurhash2(key, KAFKA_SEED) & 0x7FFFFFFF) % self._partitions
        if home != rec.partition:
            return Misrouted(home)
        return event

    async def decode_keyed(
        self, ctx: PartitionContext, rec: ConsumerRecord, stage: str
    ) -> Any | None:
        """:meth:`keyed_event`, or None after :meth:`divert` took the record."""
        event = self.keyed_event(ctx, rec)
        if isinstance(event, InputError | Misrouted):
            await self.divert(ctx, rec, event, stage)
            return None
        return event

    async def divert(
        self, ctx: PartitionContext, rec: ConsumerRecord, why: InputError | Misrouted, stage: str
    ) -> None:
        """A record this partition does not process: bad input to the DLQ with its reason; a
        misrouted event to its home partition, in this transaction (so exactly once: the move
        commits with this partition's input offset, and the home partition processes it as if
        it had been published there)."""
        if isinstance(why, Misrouted):
            headers = [*(rec.headers or ()), ("wxsub.moved.from", b"%d:%d" % (rec.partition,
                       rec.offset))]  # fmt: skip
            await ctx.send(rec.topic, rec.key, rec.value, headers, partition=why.home)
            tally(ctx, self.metrics.misrouted, self.logical(rec.topic))
            return
        await self.dead_letter(ctx, rec, why, stage)

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

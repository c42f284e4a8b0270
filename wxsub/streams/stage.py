"""What a stage is, and what it sees while it processes one partition in one transaction.

A stage is any object with a ``spec`` (:class:`StageSpec`), ``process(ctx, records)`` and
``on_timer(ctx, now_ms)``; the runtime (runtime.py) calls them inside Kafka transactions and hands
them a :class:`PartitionContext` for sends and state.

A stage that starts work which outlives a transaction (the deliver stage's WeChat calls run
after the commit that made their attempts durable) is also a :class:`Settling` stage: the
runtime gives a partition with such work a turn of its own (``settle``) once it is idle, and
before it gives the partition up (rebalance, shut-down). A Settling stage that is also
:class:`Answering` says when that work is done: the runtime then settles it at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition

from wxsub.streams.outbox import Outbox
from wxsub.streams.store import PartitionStore

__all__ = [
    "Answering", "Headers", "PacingKind", "PartitionContext", "Settling", "Stage", "StageSpec",
]  # fmt: skip

Headers = Sequence[tuple[str, bytes]]
#: how a partition's batches are spaced (pacing.py): a fixed spacing (a stage fed from outside),
#: or following its upstream stage's commits
PacingKind = Literal["fixed", "upstream"]


@dataclass(frozen=True)
class StageSpec:
    """What the runtime needs to know about a stage."""

    name: str
    inputs: tuple[str, ...]  # full topic names, co-partitioned
    stores: tuple[str, ...] = ()
    timer_interval_s: float = 0.0  # 0: no timer
    pacing: PacingKind = "fixed"


class Stage(Protocol):
    spec: StageSpec

    async def process(self, ctx: PartitionContext, records: list[ConsumerRecord]) -> None: ...

    async def on_timer(self, ctx: PartitionContext, now_ms: int) -> None: ...


@runtime_checkable
class Settling(Protocol):
    """A stage with work in flight after a commit, to be written in a later transaction."""

    def unsettled(self, partition: int) -> bool:
        """Whether ``partition`` has work in flight whose results are not yet written."""
        ...

    async def settle(self, ctx: PartitionContext) -> None:
        """Wait for the partition's work in flight and write its results (nothing new starts)."""
        ...


@runtime_checkable
class Answering(Protocol):
    """A Settling stage that can say when a partition's work in flight is done: after a batch
    the runtime settles it as soon as it is, in the quiet part of the commit interval, rather
    than in an idle ``settle`` turn when the next batch is due (which would then wait behind
    it: turns.py ``_settle_after``)."""

    async def answered(self, partition: int) -> None:
        """Return once ``partition``'s work in flight has its results (at once if none);
        cancelled when a batch comes first, which must leave the work running."""
        ...


async def _no_commit() -> None:
    raise RuntimeError("commit() is only available inside a running transaction")


@dataclass
class PartitionContext:
    """What a stage sees while processing one partition inside one transaction."""

    partition: int
    stores: dict[str, PartitionStore]
    _producer: AIOKafkaProducer
    in_txn: bool = False
    sent: int = 0
    committer: Callable[[], Awaitable[None]] = field(default=_no_commit, repr=False)
    # input offsets to commit with the work (set by the runtime, not by stages)
    offsets: dict[TopicPartition, int] = field(default_factory=dict, repr=False)
    transactional: bool = True
    outbox: Outbox = field(init=False, repr=False)
    # run by the runtime after each successful commit of this context, then forgotten
    committed: list[Callable[[], None]] = field(default_factory=list, repr=False)
    # counter increments waiting for the commit (``wxsub.streams.metering.tally``): key ->
    # [amount] (a list, added to in place)
    tallies: dict[Any, list[float]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.outbox = Outbox(self._producer)

    async def begin(self) -> None:
        if not self.in_txn:
            if self.transactional:
                await self._producer.begin_transaction()
            self.in_txn = True

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None = None,
        partition: int | None = None,
    ) -> None:
        """Produce inside this partition's transaction (visible only if it commits).

        Records are batched per topic-partition (see outbox.py) and submitted at commit.
        """
        if not self.in_txn:
            await self.begin()
        if not self.outbox.append(topic, key, value, headers, partition):
            await self.outbox.add(topic, key, value, headers, partition)
        self.sent += 1

    async def commit(self) -> None:
        """Commit everything sent and stored so far; later work goes into a new transaction."""
        await self.committer()

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once what was done so far has committed (never if it aborts)."""
        self.committed.append(callback)

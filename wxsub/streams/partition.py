"""A partition's life in the stage runtime: what is held for it, and opening and closing it.

Opening partition ``p`` = starting its transactional producer ``{app}-{stage}-{p}`` (its
InitProducerId fences the previous owner of ``p`` and aborts that owner's open transaction),
opening its stores and replaying their changelogs (restore.py). Positioning it in the input is
the poll loop's job (poll.py), after this. Closing = dropping uncommitted overlays, closing the
stores and stopping the producer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from wxsub.streams.restore import restore_all, restore_consumer
from wxsub.streams.stage import StageSpec
from wxsub.streams.store import PartitionStore

__all__ = ["PartitionOpener", "PartitionUnit", "RunState"]


@dataclass
class PartitionUnit:
    """Everything owned for one partition number: its producer, its stores, its position and
    the flow state of its inputs (paused, held, backed off)."""

    partition: int
    producer: AIOKafkaProducer
    stores: dict[str, PartitionStore]
    changelogs: dict[str, str]
    last_timer: float = 0.0
    # next offset per input partition as of our last commit: a fresher truth than a committed
    # offset fetch, which can lag until the coordinator has written the transaction markers
    positions: dict[TopicPartition, int] = field(default_factory=dict)
    backoff_until: float = 0.0  # monotonic time before which a failed partition is not retried
    paused: set[TopicPartition] = field(default_factory=set)  # backed off after a failure
    busy: asyncio.Task[None] | None = None  # the batch or timer in flight
    started: float = 0.0  # monotonic time the last batch (a turn with records) started
    due: float = 0.0  # when the next batch may start (pacing.py), monotonic
    held: set[TopicPartition] = field(default_factory=set)  # paused while ``busy`` runs
    batching: bool = False  # ``busy`` is processing a batch (its inputs must stay held)
    # records fetched while ``busy`` ran without a batch (a timer, a settle turn, the wait for
    # a Settling stage's answers): the turn's next batch, its inputs held meanwhile (turns.py)
    follow: dict[TopicPartition, list[ConsumerRecord]] | None = None
    wake: asyncio.Future[None] | None = None  # set when ``follow`` is, for a waiting turn


@dataclass
class RunState:
    """What the poll loop, the turns, the transactions and ``StageRunner.lag`` share."""

    units: dict[int, PartitionUnit] = field(default_factory=dict)  # opened, by partition number
    # assigned partitions not yet ready to process (paused until the poll loop opens them)
    pending: set[TopicPartition] = field(default_factory=set)
    consumer: AIOKafkaConsumer | None = None  # the group member, while one runs
    failure: Exception | None = None  # a turn's fatal error, raised by the poll loop

    def raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure


class PartitionOpener:
    """Opens and closes :class:`PartitionUnit` s for one stage."""

    def __init__(
        self,
        *,
        spec: StageSpec,
        bootstrap: str,
        app_id: str,
        state_dir: Path,
        changelog_topic: Callable[[str, str], str],
        eos: bool,
        security: Mapping[str, Any] | None = None,
    ) -> None:
        self._spec = spec
        self._bootstrap = bootstrap
        self._security = dict(security or {})  # connection.security_kwargs
        self._app_id = app_id
        self._group_id = f"{app_id}-{spec.name}"
        self._state_dir = state_dir
        self._changelog_topic = changelog_topic  # (stage, store) -> topic
        self._eos = eos

    async def open(self, partitions: list[int]) -> list[PartitionUnit]:
        """Open units for ``partitions``: producers start concurrently (one InitProducerId
        round trip each), then every store restores through one changelog consumer. On a
        failure nothing stays open."""
        if not partitions:
            return []
        started = await asyncio.gather(
            *(self._start_producer(p) for p in partitions), return_exceptions=True
        )
        failed = [r for r in started if isinstance(r, BaseException)]
        producers = [r for r in started if isinstance(r, AIOKafkaProducer)]
        if failed:
            for producer in producers:
                with contextlib.suppress(Exception):
                    await producer.stop()
            raise failed[0]
        units = [
            self._new_unit(p, producer) for p, producer in zip(partitions, producers, strict=True)
        ]
        try:
            await self._restore(units)
        except BaseException:
            for unit in units:
                for store in unit.stores.values():
                    store.close()
                with contextlib.suppress(Exception):
                    await unit.producer.stop()
            raise
        return units

    @staticmethod
    async def close(unit: PartitionUnit) -> None:
        """Drop uncommitted overlays, close the stores, stop the producer."""
        for store in unit.stores.values():
            store.discard()
            store.close()
        with contextlib.suppress(Exception):
            await unit.producer.stop()

    async def renew_producer(self, unit: PartitionUnit) -> None:
        """Replace ``unit``'s producer with a new one (same transactional id) after a failed
        transaction: aiokafka gives a batch its sequence number when it leaves the accumulator,
        also a batch it then fails unsent (expired while its partition had no leader, e.g. a
        broker killed), and never rewinds it. Every later batch to that partition is then out
        of sequence (``OutOfOrderSequenceNumber``) for as long as the producer lives; the Java
        client bumps the epoch there (KIP-360), aiokafka does not. A new producer's
        InitProducerId does: new epoch, sequences from 0, and it fences and aborts whatever the
        old one left open, so nothing it wrote can commit after this."""
        old = unit.producer
        with contextlib.suppress(Exception):
            await old.stop()
        unit.producer = await self._start_producer(unit.partition)

    async def _start_producer(self, p: int) -> AIOKafkaProducer:
        if self._eos:
            txn: dict[str, Any] = {
                "transactional_id": f"{self._app_id}-{self._spec.name}-{p}",
                "transaction_timeout_ms": 60_000,
            }
        else:
            txn = {"enable_idempotence": True}
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            client_id=f"{self._group_id}-{p}",
            acks="all",
            # stages hand over whole record batches at commit (outbox.py): lingering on top
            # of that only delays every transaction
            linger_ms=0,
            max_batch_size=256 * 1024,
            max_request_size=4 * 1024 * 1024,
            **txn,
            **self._security,
        )
        await producer.start()  # EOS: InitProducerId fences the previous owner of p
        return producer

    def _new_unit(self, p: int, producer: AIOKafkaProducer) -> PartitionUnit:
        stores = {
            name: PartitionStore(name, p, self._state_dir / f"{name}-{p}")
            for name in self._spec.stores
        }
        changelogs = {name: self._changelog_topic(self._spec.name, name) for name in stores}
        return PartitionUnit(p, producer, stores, changelogs)

    async def _restore(self, units: list[PartitionUnit]) -> None:
        stores = {
            TopicPartition(u.changelogs[name], u.partition): store
            for u in units
            for name, store in u.stores.items()
        }
        if not stores:
            return
        restorer = await restore_consumer(self._bootstrap, self._security)
        try:
            await restore_all(restorer, stores)
        finally:
            await restorer.stop()

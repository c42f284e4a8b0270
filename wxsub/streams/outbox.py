"""Batched produce for the stage runtime: records go into one record batch per topic-partition.

``AIOKafkaProducer.send`` costs ~40 µs of Python per record (partitioner, accumulator, one future
per record). A stage's records only become visible when its transaction commits, so nothing is
gained by handing them to the producer one by one: the :class:`Outbox` appends each record to a
``BatchBuilder`` (aiokafka's C record-batch builder) of its topic-partition and submits the
builders with ``send_batch`` when the transaction commits (a full builder waits for that too,
behind the next one of its topic-partition). Order within a topic-partition is kept, which is
all Kafka orders anyway.

Appending goes straight to the C builder inside aiokafka's ``BatchBuilder`` on the aiokafka
versions read for it (``DIRECT_APPEND_VERSIONS``): the wrapper's keyword call, serializer hook
and per-record checks cost about as much as the C append itself (bench/RESULTS.md, 2026-12-06);
on any other version, or a producer with serializers, the public ``append`` is used.

Partitions are Kafka's default (murmur2 of the key, as the Java client and aiokafka compute it),
so co-partitioning with topics written by other clients holds.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable, Sequence
from typing import Any

import aiokafka
from aiokafka import AIOKafkaProducer
from aiokafka.producer.message_accumulator import BatchBuilder
from murmurhash2 import murmurhash2

__all__ = ["DIRECT_APPEND_VERSIONS", "KAFKA_SEED", "Outbox", "partition_for"]

#: aiokafka versions whose ``BatchBuilder.append`` was read: it serializes (no serializers here),
#: calls ``self._builder.append(self._relative_offset, timestamp, key, value, headers)``, on
#: None closes the batch, else counts the record in ``_relative_offset``. Outbox does the same.
DIRECT_APPEND_VERSIONS = frozenset({"0.14.0"})
_DIRECT = aiokafka.__version__ in DIRECT_APPEND_VERSIONS

# Kafka's murmur2 is MurmurHash2 (32-bit) with this seed (Utils.murmur2 in the Java client)
KAFKA_SEED = 0x9747B28C


def partition_for(key: bytes, partitions: int) -> int:
    """Kafka's default partition of ``key`` among ``partitions``.

    aiokafka's ``murmur2`` is pure Python (~15-35 µs a key); the ``murmurhash2`` package
    computes the same hash natively in ~0.5 µs (tests/streams/test_outbox.py checks they agree).
    """
    return (murmurhash2(key, KAFKA_SEED) & 0x7FFFFFFF) % partitions


class Outbox:
    """Records of one transaction, batched per topic-partition until :meth:`flush`.

    :meth:`append` is synchronous (a coroutine per record costs more than the append itself);
    it only needs a topic's partition count, which :meth:`add` fetches once per topic.
    """

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._builders: dict[tuple[str, int], Any] = {}
        self._full: list[tuple[tuple[str, int], Any]] = []  # full builders, in creation order
        self._partitions: dict[str, int] = {}
        self._direct: bool | None = None  # known at the first builder (see _new_builder)
        # (future of a submitted batch, records in it); results are RecordMetadata of the batch
        self.submitted: list[tuple[asyncio.Future[Any], int]] = []

    def append(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] | None,
        partition: int | None,
    ) -> bool:
        """Add a record; False (nothing added) when the topic's partition count is not known
        yet and ``partition`` is None: :meth:`add` it instead."""
        if partition is None:
            n = self._partitions.get(topic)
            if n is None:
                return False
            if key is None:
                partition = random.randrange(n)  # noqa: S311 (not security: spreading records)
            else:
                partition = (murmurhash2(key, KAFKA_SEED) & 0x7FFFFFFF) % n  # partition_for
        slot = (topic, partition)
        builder = self._builders.get(slot)
        if builder is None:
            builder = self._builders[slot] = self._new_builder()
        hdrs = list(headers) if headers else []
        if self._direct:
            # BatchBuilder.append without its wrapper (DIRECT_APPEND_VERSIONS)
            offset = builder._relative_offset  # noqa: SLF001
            if builder._builder.append(offset, None, key, value, hdrs) is not None:  # noqa: SLF001
                builder._relative_offset = offset + 1  # noqa: SLF001
                return True
            builder.close()
        elif builder.append(timestamp=None, key=key, value=value, headers=hdrs) is not None:
            return True
        self._next_builder(slot, builder, key, value, hdrs)
        return True

    def _next_builder(
        self,
        slot: tuple[str, int],
        full: Any,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]],
    ) -> Any:
        """``full`` (closed) waits for the flush; the record opens the slot's next builder."""
        self._full.append((slot, full))
        builder = self._builders[slot] = self._new_builder()
        if builder.append(timestamp=None, key=key, value=value, headers=headers) is None:
            raise ValueError(f"record too large for one batch on {slot[0]}")
        return builder

    def extend(
        self, topic: str, partition: int, records: Iterable[tuple[bytes, bytes | None]]
    ) -> None:
        """:meth:`append` each ``(key, value)`` of ``records`` without headers to one
        topic-partition (a store's changelog records at commit): the slot and its builder are
        looked up once, not per record."""
        slot = (topic, partition)
        builder = self._builders.get(slot)
        if builder is None:
            builder = self._builders[slot] = self._new_builder()
        if not self._direct:
            for key, value in records:
                self.append(topic, key, value, None, partition)
            return
        # BatchBuilder.append without its wrapper (DIRECT_APPEND_VERSIONS), as in append
        for key, value in records:
            offset = builder._relative_offset  # noqa: SLF001
            if builder._builder.append(offset, None, key, value, []) is not None:  # noqa: SLF001
                builder._relative_offset = offset + 1  # noqa: SLF001
                continue
            builder.close()
            builder = self._next_builder(slot, builder, key, value, [])

    def _new_builder(self) -> Any:
        builder = self._producer.create_batch()
        if self._direct is None:
            self._direct = (
                _DIRECT
                and type(builder) is BatchBuilder
                and builder._key_serializer is None  # noqa: SLF001
                and builder._value_serializer is None  # noqa: SLF001
            )
        return builder

    async def add(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] | None,
        partition: int | None,
    ) -> None:
        """:meth:`append`, learning the topic's partition count first when needed."""
        if not self.append(topic, key, value, headers, partition):
            parts = await self._producer.client._wait_on_metadata(topic)  # noqa: SLF001
            self._partitions[topic] = len(parts)
            self.append(topic, key, value, headers, partition)

    async def flush(self) -> None:
        """Hand every batch to the producer (they are sent after its linger), in order."""
        full, self._full = self._full, []
        builders, self._builders = self._builders, {}
        for slot, builder in full:  # a slot's full builders hold its earlier records
            await self._submit(slot, builder)
        for slot, builder in builders.items():
            if builder.record_count():
                await self._submit(slot, builder)

    async def _submit(self, slot: tuple[str, int], builder: Any) -> None:
        count = builder.record_count()
        fut = await self._producer.send_batch(builder, slot[0], partition=slot[1])
        self.submitted.append((fut, count))

    def reset(self) -> None:
        self._builders = {}
        self._full = []
        self.submitted = []

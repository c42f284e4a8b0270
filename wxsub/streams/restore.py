"""Restoring a partition store from its changelog: committed records only, from the checkpoint.

The local RocksDB copy only ever holds committed state (store.py), so replaying the changelog
``read_committed`` from the store's checkpoint to the end brings it up to date.
"""

from __future__ import annotations

import logging

from aiokafka import AIOKafkaConsumer, TopicPartition

from wxsub.streams.store import PartitionStore

__all__ = ["restore", "restore_consumer"]

log = logging.getLogger(__name__)


async def restore_consumer(bootstrap: str) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level="read_committed",
        enable_auto_commit=False,
        group_id=None,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    await consumer.start()
    return consumer


async def restore(
    consumer: AIOKafkaConsumer, topic: str, partition: int, store: PartitionStore
) -> None:
    """Replay the committed changelog of ``partition`` from the store's checkpoint."""
    tp = TopicPartition(topic, partition)
    consumer.assign([tp])
    end = (await consumer.end_offsets([tp]))[tp]
    start = store.checkpoint
    begin = (await consumer.beginning_offsets([tp]))[tp]
    if start < begin:
        start = begin
    if start >= end:
        return
    consumer.seek(tp, start)
    restored = 0
    while await consumer.position(tp) < end:
        batch = await consumer.getmany(tp, timeout_ms=500, max_records=10_000)
        recs = batch.get(tp, [])
        store.restore_many([(rec.key, rec.value) for rec in recs])
        restored += len(recs)
    store.set_checkpoint(end)
    log.info(
        "store restored",
        extra={"store": store.name, "partition": partition, "records": restored},
    )

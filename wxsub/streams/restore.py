"""Restoring partition stores from their changelogs: committed records only, from checkpoints.

The local RocksDB copy only ever holds committed state (store.py), so replaying the changelog
``read_committed`` from the store's checkpoint to the end brings it up to date.

Every store of a stage is restored in one pass through one consumer: one ListOffsets request for
all changelog partitions' ends and one for their beginnings, then fetches over all of them.
Restoring partition by partition cost ~0.5 s each even for an empty changelog: re-assigning the
consumer left the previous partition's Fetch parked at the broker for ``fetch_max_wait_ms``,
and the next ListOffsets queued behind it on the same connection.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from wxsub.streams.store import PartitionStore

__all__ = ["restore_all", "restore_consumer"]

log = logging.getLogger(__name__)


async def restore_consumer(
    bootstrap: str, security: Mapping[str, Any] | None = None
) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        **(security or {}),
        isolation_level="read_committed",
        enable_auto_commit=False,
        group_id=None,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    await consumer.start()
    return consumer


async def restore_all(
    consumer: AIOKafkaConsumer, stores: dict[TopicPartition, PartitionStore]
) -> None:
    """Replay the committed changelog partition of each store from the store's checkpoint."""
    if not stores:
        return
    tps = list(stores)
    end = await consumer.end_offsets(tps)
    begin = await consumer.beginning_offsets(tps)
    todo = {tp: end[tp] for tp, s in stores.items() if max(s.checkpoint, begin[tp]) < end[tp]}
    if not todo:
        return
    consumer.assign(list(todo))
    for tp in todo:
        consumer.seek(tp, max(stores[tp].checkpoint, begin[tp]))
    restored = dict.fromkeys(todo, 0)
    while todo:
        batch = await consumer.getmany(*todo, timeout_ms=500, max_records=10_000)
        for tp, recs in batch.items():
            stores[tp].restore_many([(rec.key, rec.value) for rec in recs])
            restored[tp] += len(recs)
        for tp in list(todo):
            if await consumer.position(tp) >= todo[tp]:
                stores[tp].set_checkpoint(todo.pop(tp))
                consumer.pause(tp)
                log.info(
                    "store restored",
                    extra={"store": stores[tp].name, "partition": tp.partition,
                           "records": restored[tp]},
                )  # fmt: skip

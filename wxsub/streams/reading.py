"""Reading a topic whole: every record from its start up to its current end, no consumer group.

What ``wxsub stats``, the demo's report, the benchmarks and the test fixtures need, defined
once so they all read the same way: ``read_committed`` stops at the last stable offset (an
open transaction's records are neither waited for nor returned).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from wxsub.errors import SetupError

__all__ = ["partitions_of", "read_topic"]


async def partitions_of(
    bootstrap: str, topic: str, security: Mapping[str, Any] | None = None
) -> list[int]:
    """Partition ids of ``topic``; SetupError when it does not exist."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(security or {}))
    await admin.start()
    try:
        (desc,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    if desc["error_code"] or not desc["partitions"]:
        raise SetupError(f"topic {topic} does not exist (has a worker run yet?)")
    return sorted(p["partition"] for p in desc["partitions"])


async def read_topic(
    bootstrap: str,
    topic: str,
    isolation: str = "read_committed",
    timeout: float | None = None,
    security: Mapping[str, Any] | None = None,
    **consumer_kw: Any,
) -> list[ConsumerRecord[Any, Any]]:
    """Every record of ``topic`` from the start up to its current end, in partition then offset
    order (``timeout``: seconds before TimeoutError; None waits)."""
    tps = [TopicPartition(topic, p) for p in await partitions_of(bootstrap, topic, security)]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        **(security or {}),
        isolation_level=isolation,
        enable_auto_commit=False,
        **consumer_kw,
    )
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: dict[TopicPartition, list[ConsumerRecord[Any, Any]]] = {tp: [] for tp in tps}
        limit = asyncio.timeout(timeout) if timeout is not None else contextlib.nullcontext()
        async with limit:
            left = [tp for tp in tps if ends[tp] > 0]
            while left:
                batch = await consumer.getmany(*left, timeout_ms=500, max_records=20_000)
                for tp, records in batch.items():
                    out[tp].extend(records)
                left = [tp for tp in left if await consumer.position(tp) < ends[tp]]
        return [r for tp in tps for r in out[tp]]
    finally:
        await consumer.stop()

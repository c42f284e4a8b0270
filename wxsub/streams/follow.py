"""Following a compacted topic as a table: every worker reads it whole, then keeps up.

``TableFollower`` reads ``topic`` from its start with ``read_committed`` and no consumer group
(every follower sees every record: no rebalance, nothing to commit), keeps the latest value per
key (a null value deletes the key) and calls ``on_change(table)`` after each batch that changed
it. ``catch_up()`` returns once everything committed before it was called has been applied (a
worker calls it before its stages start); ``run()`` keeps following until cancelled.

The table is bounded by the topic's keys (one per mini program for the config topics) and ends
with the process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from wxsub.streams.reading import partitions_of

__all__ = ["TableFollower"]

log = logging.getLogger(__name__)


class TableFollower:
    def __init__(
        self,
        bootstrap: str,
        topic: str,
        on_change: Callable[[Mapping[bytes, bytes]], None],
        poll_ms: int = 500,
        security: Mapping[str, Any] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.security = dict(security or {})  # connection.security_kwargs
        self.topic = topic
        self.on_change = on_change
        self.poll_ms = poll_ms
        self.table: dict[bytes, bytes] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._tps: list[TopicPartition] = []

    async def start(self) -> None:
        parts = await partitions_of(self.bootstrap, self.topic, self.security)
        self._tps = [TopicPartition(self.topic, p) for p in parts]
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, isolation_level="read_committed",
            enable_auto_commit=False, group_id=None, **self.security,
        )  # fmt: skip
        await consumer.start()
        consumer.assign(self._tps)
        await consumer.seek_to_beginning(*self._tps)
        self._consumer = consumer

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def catch_up(self) -> None:
        """Apply everything committed up to now (the last stable offsets)."""
        consumer = self._consumer
        assert consumer is not None, "start() first"
        ends = await consumer.end_offsets(self._tps)
        while any([await consumer.position(tp) < ends[tp] for tp in self._tps]):
            await self.poll_once()

    async def poll_once(self) -> bool:
        """One fetch; True when the table changed (``on_change`` was called)."""
        consumer = self._consumer
        assert consumer is not None, "start() first"
        batch = await consumer.getmany(timeout_ms=self.poll_ms, max_records=10_000)
        changed = False
        for records in batch.values():
            for rec in records:
                changed |= self._apply(rec.key, rec.value)
        if changed:
            try:
                self.on_change(dict(self.table))
            except Exception:  # a bad record must not stop following: the handler logs it
                log.exception("table change handler failed", extra={"topic": self.topic})
        return changed

    async def run(self) -> None:
        """Follow until cancelled."""
        while True:
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # a broker hiccup: aiokafka reconnects; keep following
                log.exception("following failed", extra={"topic": self.topic})
                await asyncio.sleep(1.0)

    def _apply(self, key: Any, value: Any) -> bool:
        if key is None:
            return False
        if value is None:
            return self.table.pop(key, None) is not None
        if self.table.get(key) == value:
            return False
        self.table[key] = value
        return True

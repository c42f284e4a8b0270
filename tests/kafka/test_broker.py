"""The broker is a real Apache Kafka, and aiokafka's transactions work on it.

These are the guarantees the pipeline relies on: read_committed hides aborted writes, a second
producer with the same transactional id fences the first, consume-transform-produce commits
offsets atomically with its output, compaction keeps the last value per key, and a consumer
group rebalances when members come and go.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import ProducerFenced
from aiokafka.structs import OffsetAndMetadata

from tests.fixtures.kafka import NewTopic
from tests.fixtures.kafka_helpers import read_all, unique_name

pytestmark = pytest.mark.kafka


@asynccontextmanager
async def producer(bootstrap: str, **kw: Any) -> AsyncIterator[AIOKafkaProducer]:
    prod = AIOKafkaProducer(bootstrap_servers=bootstrap, **kw)
    await prod.start()
    try:
        yield prod
    finally:
        await prod.stop()


def values(records: list[Any]) -> list[bytes]:
    return [r.value for r in records]


async def test_committed_transaction_is_visible_read_committed(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    topic = await new_topic(partitions=1)
    async with producer(kafka_bootstrap, transactional_id=unique_name("tx")) as prod:
        async with prod.transaction():
            for i in range(3):
                await prod.send(topic, f"v{i}".encode())
    assert values(await read_all(kafka_bootstrap, topic)) == [b"v0", b"v1", b"v2"]


async def test_aborted_transaction_is_hidden_read_committed(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    topic = await new_topic(partitions=1)
    async with producer(kafka_bootstrap, transactional_id=unique_name("tx")) as prod:
        await prod.begin_transaction()
        await prod.send_and_wait(topic, b"aborted")
        await prod.abort_transaction()
        async with prod.transaction():
            await prod.send(topic, b"committed")
    assert values(await read_all(kafka_bootstrap, topic)) == [b"committed"]
    # the aborted record really reached the log: read_uncommitted sees it
    raw = await read_all(kafka_bootstrap, topic, isolation="read_uncommitted")
    assert values(raw) == [b"aborted", b"committed"]


async def test_second_producer_with_same_transactional_id_fences_the_first(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    topic = await new_topic(partitions=1)
    txn_id = unique_name("tx")
    async with producer(kafka_bootstrap, transactional_id=txn_id) as first:
        await first.begin_transaction()
        await first.send_and_wait(topic, b"zombie")
        async with producer(kafka_bootstrap, transactional_id=txn_id) as second:
            with pytest.raises(ProducerFenced):
                await first.commit_transaction()
            async with second.transaction():
                await second.send(topic, b"successor")
    # the zombie's open transaction was aborted when the successor initialised
    assert values(await read_all(kafka_bootstrap, topic)) == [b"successor"]


async def test_send_offsets_to_transaction_commits_offsets_with_output(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    source, sink = await new_topic(partitions=2), await new_topic(partitions=1)
    group = unique_name("ctp")
    async with producer(kafka_bootstrap) as plain:
        for i in range(4):
            await plain.send_and_wait(source, f"in{i}".encode(), partition=i % 2)

    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    consumer.assign([TopicPartition(source, 0), TopicPartition(source, 1)])
    await consumer.start()
    try:
        got = await _consume(consumer, 4)
        async with producer(kafka_bootstrap, transactional_id=unique_name("tx")) as prod:
            # an aborted attempt commits neither output nor offsets
            await _transform(prod, sink, got, group, abort=True)
            assert await _committed(kafka_bootstrap, group) == {}
            await _transform(prod, sink, got, group, abort=False)
    finally:
        await consumer.stop()

    out = sorted(values(await read_all(kafka_bootstrap, sink)))
    assert out == [b"IN0", b"IN1", b"IN2", b"IN3"]
    assert await _committed(kafka_bootstrap, group) == {
        TopicPartition(source, 0): 2,
        TopicPartition(source, 1): 2,
    }


async def _consume(consumer: AIOKafkaConsumer, n: int) -> list[Any]:
    got: list[Any] = []
    async with asyncio.timeout(20):
        while len(got) < n:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                got.extend(records)
    return got


async def _transform(
    prod: AIOKafkaProducer, sink: str, records: list[Any], group: str, *, abort: bool
) -> None:
    await prod.begin_transaction()
    offsets: dict[TopicPartition, OffsetAndMetadata] = {}
    for r in records:
        await prod.send(sink, r.value.upper())
        offsets[TopicPartition(r.topic, r.partition)] = OffsetAndMetadata(r.offset + 1, "")
    await prod.send_offsets_to_transaction(offsets, group)
    if abort:
        await prod.abort_transaction()
    else:
        await prod.commit_transaction()


async def _committed(bootstrap: str, group: str) -> dict[TopicPartition, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}


async def test_compacted_topic_keeps_only_the_last_value_per_key(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    topic = await new_topic(partitions=1, compacted=True)
    async with producer(kafka_bootstrap) as prod:
        for version in range(5):
            for key in (b"a", b"b", b"c"):
                await prod.send_and_wait(topic, f"{key.decode()}{version}".encode(), key=key)
        await asyncio.sleep(0.2)  # past segment.ms, so the next write rolls the segment
        await prod.send_and_wait(topic, b"roll", key=b"z")

    async with asyncio.timeout(60):
        while True:
            records = await read_all(kafka_bootstrap, topic, isolation="read_uncommitted")
            if len(records) == 4:
                break
            await asyncio.sleep(0.3)
    assert {r.key: r.value for r in records} == {
        b"a": b"a4",
        b"b": b"b4",
        b"c": b"c4",
        b"z": b"roll",
    }
    assert values(records)[:3] == [b"a4", b"b4", b"c4"]


async def test_consumer_group_rebalances_when_members_join_and_leave(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    topic = await new_topic(partitions=4)
    group = unique_name("grp")
    every = {TopicPartition(topic, p) for p in range(4)}

    def member() -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            topic,
            bootstrap_servers=kafka_bootstrap,
            group_id=group,
            heartbeat_interval_ms=100,
            session_timeout_ms=6000,
        )

    one, two = member(), member()
    await one.start()
    try:
        await _until(lambda: one.assignment() == every)
        await two.start()
        try:
            # each member's view updates on its own heartbeat: wait for the settled split
            await _until(lambda: _split(one, two) == every)
            assert one.assignment() and two.assignment()
        finally:
            await two.stop()
        await _until(lambda: one.assignment() == every)
    finally:
        await one.stop()


def _split(one: AIOKafkaConsumer, two: AIOKafkaConsumer) -> set[TopicPartition]:
    """The union of both assignments when both are non-empty and disjoint, else an empty set."""
    a, b = one.assignment(), two.assignment()
    return set(a | b) if a and b and not a & b else set()


async def _until(check: Any, timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.05)

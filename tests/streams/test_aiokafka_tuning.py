"""The transaction back-off tuning: pinned to verified aiokafka versions, and back-to-back
transactions on one producer still commit every record exactly once, in order."""

from __future__ import annotations

import uuid

import aiokafka.producer.sender as sender
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from wxsub.streams import aiokafka_tuning


def test_an_unverified_aiokafka_is_left_as_shipped(caplog: pytest.LogCaptureFixture) -> None:
    shipped = sender.BACKOFF_OVERRIDE
    sender.BACKOFF_OVERRIDE = 0.02
    try:
        assert aiokafka_tuning.apply("0.99.0") is False
        assert sender.BACKOFF_OVERRIDE == 0.02
        assert "not verified" in caplog.text
        assert aiokafka_tuning.apply() is True
        assert aiokafka_tuning.apply() is True  # idempotent
        assert sender.BACKOFF_OVERRIDE == aiokafka_tuning.CONCURRENT_TXN_BACKOFF_S
    finally:
        sender.BACKOFF_OVERRIDE = shipped


@pytest.mark.kafka
async def test_back_to_back_transactions_commit_every_record_once(kafka_bootstrap: str) -> None:
    assert aiokafka_tuning.apply()
    topic = f"tune-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 2, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, transactional_id=f"tune-{uuid.uuid4().hex[:8]}"
    )
    await producer.start()
    try:
        for i in range(30):  # each transaction starts while the last one's markers are written
            await producer.begin_transaction()
            futures = [
                await producer.send(topic, value=f"{i}-{p}".encode(), partition=p) for p in (0, 1)
            ]
            for future in futures:
                await future
            if i % 5 == 4:
                await producer.abort_transaction()
            else:
                await producer.commit_transaction()
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    seen: dict[int, list[str]] = {0: [], 1: []}
    try:
        while sum(map(len, seen.values())) < 48:
            for tp, records in (await consumer.getmany(timeout_ms=1000)).items():
                seen[tp.partition] += [r.value.decode() for r in records if r.value]
    finally:
        await consumer.stop()
    committed = [i for i in range(30) if i % 5 != 4]
    assert seen == {p: [f"{i}-{p}" for i in committed] for p in (0, 1)}

"""The transaction back-off tuning: pinned to verified aiokafka versions, and back-to-back
transactions on one producer, with their input offsets, still commit every record exactly once,
in order, and the offsets of the committed ones."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

import aiokafka.producer.sender as sender
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import NotEnoughReplicasError, NotLeaderForPartitionError
from aiokafka.structs import OffsetAndMetadata
from aiokafka.util import commit_structure_validate

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


class _Sender:
    """What ``TxnOffsetCommitHandler`` reads of aiokafka's sender."""

    _retry_backoff = 0.1

    def __init__(self) -> None:
        self.dead: list[Any] = []
        self.committed: list[tuple[TopicPartition, int]] = []
        self._txn_manager = SimpleNamespace(
            offset_committed=lambda tp, offset, group: self.committed.append((tp, offset))
        )

    def _coordinator_dead(self, kind: Any) -> None:
        self.dead.append(kind)


@pytest.mark.parametrize(
    ("codes", "backoff"),
    [
        ((15,), aiokafka_tuning.VERIFY_RETRY_S),  # COORDINATOR_NOT_AVAILABLE: verification
        ((0, 15), aiokafka_tuning.VERIFY_RETRY_S),
        ((16,), 0.1),  # NOT_COORDINATOR: the coordinator moved, as shipped
        ((14,), 0.1),  # COORDINATOR_LOAD_IN_PROGRESS: as shipped
        ((0, 0), None),
    ],
)
def test_a_txn_offset_commit_not_available_is_retried_soon(
    codes: tuple[int, ...], backoff: float | None
) -> None:
    assert aiokafka_tuning.apply()
    tps = [TopicPartition("in", p) for p in range(len(codes))]
    offsets = commit_structure_validate({tp: OffsetAndMetadata(7, "") for tp in tps})
    fake = _Sender()
    handler = sender.TxnOffsetCommitHandler(fake, offsets, "group")
    resp = SimpleNamespace(errors=[("in", list(enumerate(codes)))])
    assert handler.handle_response(resp) == backoff
    if backoff is not None and 14 not in codes:
        assert fake.dead == [sender.CoordinationType.GROUP]  # looked up again, as shipped
    assert aiokafka_tuning.apply()  # idempotent: wrapped once
    assert sender.TxnOffsetCommitHandler(fake, offsets, "g").handle_response(resp) == backoff


@pytest.mark.parametrize(
    ("codes", "sends", "backoff"),
    [
        ((19,), 1, 0.005),  # NOT_ENOUGH_REPLICAS: the verification met the last transaction
        ((0, 19), 1, 0.005),
        ((19,), 3, 0.02),  # doubled per send of the batch
        ((19,), 9, 0.1),  # ... up to retry_backoff_ms: an ISR shortage is retried as shipped
        ((6,), 1, 0.1),  # NOT_LEADER_OR_FOLLOWER: as shipped
        ((19, 6), 1, 0.1),
    ],
)
def test_a_produce_not_verified_yet_is_retried_soon(
    codes: tuple[int, ...], sends: int, backoff: float
) -> None:
    assert aiokafka_tuning.apply()
    fake = _Sender()
    fake.client = SimpleNamespace(force_metadata_update=lambda: None)  # type: ignore[attr-defined]
    done: list[int] = []
    batches = {
        TopicPartition("out", p): SimpleNamespace(
            retry_count=sends, expired=lambda: False, done=lambda *a, p=p: done.append(p)
        )
        for p in range(len(codes))
    }
    handler = sender.SendProduceReqHandler(fake, batches)
    # a v5-7 answer: (partition, error_code, offset, timestamp, log_start_offset)
    resp = SimpleNamespace(
        API_VERSION=7, topics=[("out", [(p, c, 10, -1, 0) for p, c in enumerate(codes)])]
    )
    handler.handle_response(resp)
    assert handler._default_backoff == pytest.approx(backoff)
    assert done == [p for p, c in enumerate(codes) if c == 0]
    assert len(handler._to_reenqueue) == sum(1 for c in codes if c)


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
    group, source = f"tune-{uuid.uuid4().hex[:8]}", TopicPartition(topic, 0)
    await producer.start()
    try:
        for i in range(30):  # each transaction starts while the last one's markers are written
            await producer.begin_transaction()
            futures = [
                await producer.send(topic, value=f"{i}-{p}".encode(), partition=p) for p in (0, 1)
            ]
            for future in futures:
                await future
            # as a stage does: the input's offset in the transaction (verified by the group
            # coordinator against the transaction coordinator, KIP-890)
            await producer.send_offsets_to_transaction({source: 1000 + i}, group)
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
    reader = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group)
    await reader.start()
    try:
        assert await reader.committed(source) == 1000 + committed[-1]
    finally:
        await reader.stop()


@pytest.mark.parametrize(
    ("error", "shown"), [(NotEnoughReplicasError, False), (NotLeaderForPartitionError, True)]
)
def test_a_verification_retry_is_logged_at_debug(
    error: type, shown: bool, caplog: pytest.LogCaptureFixture
) -> None:
    assert aiokafka_tuning.apply()
    with caplog.at_level("INFO"):
        sender.log.warning(
            "Got error produce response on topic-partition %s, retrying. Error: %s",
            TopicPartition("out", 0),
            error,
        )
    assert [r.levelname for r in caplog.records] == (["WARNING"] if shown else [])

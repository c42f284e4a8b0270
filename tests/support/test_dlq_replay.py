"""``wxsub dlq replay`` on the real broker: filters, dry run, and never twice."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from aiokafka import AIOKafkaProducer

from tests.fixtures.kafka import NewTopic
from tests.fixtures.kafka_helpers import delete_topics, read_all
from wxsub.dlq import HEADER_PREFIX, dead_letter, parse_dead_letter
from wxsub.errors import InputError
from wxsub.settings import KafkaSettings
from wxsub.support.replay import REPLAYED_TOPIC, Filters, Report, replay

pytestmark = pytest.mark.kafka

DAY1 = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)
DAY2 = dt.datetime(2026, 1, 2, 12, tzinfo=dt.UTC)


async def test_replays_what_matches_once_and_a_dry_run_sends_nothing(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    kafka = KafkaSettings(bootstrap=kafka_bootstrap, topic_prefix=f"r{uuid.uuid4().hex[:8]}.")
    source = await new_topic(partitions=2)
    other = await new_topic(partitions=1)
    await new_topic(partitions=3, name=kafka.topic("dlq"))
    bad = InputError("schema", "/status", "unknown status")
    boom = RuntimeError("boom")
    rows = [
        # (value, key, error, stage, source topic, dead-letter time, source attempt)
        (b'{"n": 1}', b"order-1", boom, "orders", source, DAY1, 0),
        (b'{"n": 2}', b"order-2", bad, "orders", source, DAY1, 0),  # another reason
        (b'{"n": 3}', b"order-3", boom, "orders", other, DAY1, 0),  # another source topic
        (b'{"n": 4}', b"order-4", boom, "orders", source, DAY1, 2),  # failed 3 times
        (b'{"n": 5}', None, boom, "orders", source, DAY2, 0),
        (b'{"n": 6}', b"order-6", boom, "orders", source, DAY2 + dt.timedelta(days=1), 0),
    ]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for i, (value, key, error, stage, topic, when, attempt) in enumerate(rows):
            headers = [("trace", b"t-%d" % i)]
            if attempt:
                headers.append((HEADER_PREFIX + "attempt", str(attempt).encode()))
            k, v, h = dead_letter(value, headers, topic, 0, i, error, stage, key=key, now=when)
            await producer.send_and_wait(kafka.topic("dlq"), v, key=k, headers=h)
    finally:
        await producer.stop()
    filters = Filters(
        reasons=frozenset({"internal"}), topics=frozenset({source}),
        since=DAY1, until=DAY2 + dt.timedelta(hours=1),
    )  # fmt: skip
    try:
        dry = await replay(kafka, "appr", filters, dry_run=True)
        assert (dry.matched, dry.replayed, dry.already) == (2, 2, 0)
        assert await read_all(kafka_bootstrap, source) == []  # a dry run sends nothing

        seen: list[int] = []

        def progress(r: Report) -> None:
            seen.append(r.replayed)

        first = await replay(kafka, "appr", filters, progress=progress)
        assert (first.matched, first.replayed, first.already) == (2, 2, 0)
        assert seen == [2]
        again = await replay(kafka, "appr", filters)
        assert (again.matched, again.replayed, again.already) == (2, 0, 2)  # never twice
        # a wider filter replays only what was not replayed yet
        wider = await replay(kafka, "appr", Filters(reasons=frozenset({"internal"})))
        assert (wider.replayed, wider.already) == (2, 2)  # order-3 (other topic) and order-6

        got = await read_all(kafka_bootstrap, source)
        assert sorted((r.value, r.key) for r in got if r.key != b"order-6") == [
            (b'{"n": 1}', b"order-1"), (b'{"n": 5}', None),
        ]  # fmt: skip
        assert len(got) == 3
        for rec in got:
            assert rec.headers[0][0] == "trace"  # the source's own headers, first, unchanged
            assert dict(rec.headers)[HEADER_PREFIX + "attempt"] == b"1"
            _, _, h = dead_letter(rec.value, rec.headers, source, 0, 0, boom, "orders")
            assert parse_dead_letter(rec.value, h).attempt == 2  # failing again counts up
        marks = await read_all(kafka_bootstrap, kafka.topic(REPLAYED_TOPIC))
        assert len({m.key for m in marks}) == 4
    finally:
        await delete_topics(kafka_bootstrap, [kafka.topic(REPLAYED_TOPIC)])

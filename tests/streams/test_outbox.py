"""The outbox partitions keys exactly as Kafka's default partitioner (aiokafka's murmur2) and
batches every record, in order, whichever append path it takes."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from aiokafka.partitioner import murmur2
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch

from wxsub.streams import outbox
from wxsub.streams.outbox import Outbox, partition_for


def test_partition_for_agrees_with_kafkas_murmur2() -> None:
    rng = random.Random(7)
    keys = [rng.randbytes(rng.randrange(0, 64)) for _ in range(5000)]
    keys += [f"wx{i:016d}:o{i * 7919:x}".encode() for i in range(5000)]
    keys += ["用户:订单".encode(), b"\x00", b"\xff" * 3]
    for n in (1, 3, 8, 12, 64):
        assert [partition_for(k, n) for k in keys] == [(murmur2(k) & 0x7FFFFFFF) % n for k in keys]


class _BatchProducer:
    """What Outbox uses of a producer: small batches (so they fill), kept on submit."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.sent: list[tuple[str, int, bytes]] = []

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(self.batch_size, 0, is_transactional=0)

    async def send_batch(self, builder: BatchBuilder, topic: str, *, partition: int) -> Any:
        self.sent.append((topic, partition, bytes(builder._build())))
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


def _records(sent: list[tuple[str, int, bytes]]) -> list[tuple[Any, ...]]:
    out = []
    for topic, partition, buf in sent:
        batch = DefaultRecordBatch(buf)
        for rec in batch:
            out.append((topic, partition, rec.offset, rec.key, rec.value, tuple(rec.headers)))
    return out


@pytest.mark.parametrize("direct", [True, False])
async def test_outbox_batches_every_record_in_order(
    direct: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Direct appends to the C builder (outbox.DIRECT_APPEND_VERSIONS) and the public
    BatchBuilder.append give the same records, offsets and headers, full batches included."""
    monkeypatch.setattr(outbox, "_DIRECT", direct)
    producer = _BatchProducer(2048)
    box = Outbox(producer)  # type: ignore[arg-type]
    rng = random.Random(3)
    want = []
    for i in range(400):
        key = None if i % 7 == 0 else f"k{rng.randrange(50)}".encode()
        value = None if i % 11 == 0 else rng.randbytes(rng.randrange(0, 120))
        headers = [("h", b"%d" % i)] if i % 5 == 0 else None
        p = i % 3
        assert box.append("t", key, value, headers, p)
        want.append(("t", p, key, value, tuple(headers or ())))
    assert box._direct is direct
    await box.flush()
    got = _records(producer.sent)
    assert len(producer.sent) > 3  # batches filled and rolled over
    by_p = {p: [w for w in want if w[1] == p] for p in range(3)}
    for p in range(3):
        recs = [g for g in got if g[1] == p]
        assert [(g[0], g[1], g[3], g[4], g[5]) for g in recs] == by_p[p]
    # offsets restart at 0 in each batch and count up by one
    for _, _, buf in producer.sent:
        assert [r.offset for r in DefaultRecordBatch(buf)] == list(
            range(len(list(DefaultRecordBatch(buf))))
        )
    assert sum(n for _, n in box.submitted) == 400


@pytest.mark.parametrize("direct", [True, False])
async def test_outbox_extend_batches_a_changelog_like_appends(
    direct: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``extend`` (a store's changelog records at commit) gives the same batches as one
    ``append`` per record, full batches and deletions (None values) included."""
    monkeypatch.setattr(outbox, "_DIRECT", direct)
    rng = random.Random(5)
    records = [
        (f"k{i}".encode(), None if i % 9 == 0 else rng.randbytes(rng.randrange(0, 150)))
        for i in range(300)
    ]
    appended, extended = _BatchProducer(2048), _BatchProducer(2048)
    one = Outbox(appended)  # type: ignore[arg-type]
    for key, value in records[:10]:  # an earlier part of the slot, then the rest at once
        one.append("cl", key, value, None, 2)
    for key, value in records[10:]:
        one.append("cl", key, value, None, 2)
    bulk = Outbox(extended)  # type: ignore[arg-type]
    for key, value in records[:10]:
        bulk.append("cl", key, value, None, 2)
    bulk.extend("cl", 2, records[10:])
    assert bulk._direct is direct
    await one.flush()
    await bulk.flush()
    assert len(extended.sent) > 3  # batches filled and rolled over
    assert _records(extended.sent) == _records(appended.sent)  # offsets too, batch by batch
    assert [(r[3], r[4]) for r in _records(extended.sent)] == records
    assert [n for _, n in bulk.submitted] == [n for _, n in one.submitted]

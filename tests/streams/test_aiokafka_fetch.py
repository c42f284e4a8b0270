"""The patched fetch path (streams/aiokafka_fetch.py) gives the records aiokafka's own does."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.consumer.fetcher import READ_COMMITTED, FetchResult, PartitionRecords
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import TopicPartition

from wxsub.streams import aiokafka_fetch

TP = TopicPartition("wxsub.order-status", 3)


class _Shipped(PartitionRecords):  # type: ignore[misc]
    _unpack_records, __iter__ = aiokafka_fetch.SHIPPED


def _batch(base: int, n: int, producer_id: int = 1000) -> bytes:
    builder = BatchBuilder(1024 * 1024, 0, is_transactional=1)
    for i in range(n):
        key = None if i == 2 else b"k%d" % (base + i)
        value = None if i == 3 else b"v" * (base + i)
        headers = [("h", b"%d" % i)] if i % 2 else []
        builder.append(timestamp=1_700_000_000_000 + i, key=key, value=value, headers=headers)
    builder._builder.set_producer_state(producer_id, 0, base)
    data = bytearray(builder._build())
    data[0:8] = base.to_bytes(8, "big")  # the batch's base offset, as a broker writes it
    return bytes(data)


RAW = _batch(0, 5) + _batch(5, 4, producer_id=2000) + _batch(9, 6)
ABORTED = [(2000, 5)]  # the second batch's producer aborted it


def _drain(cls: Any, fetch_offset: int, max_records: int | None, **kw: Any) -> Any:
    records = cls(TP, MemoryRecords(RAW), ABORTED, fetch_offset, kw.get("kd"), kw.get("vd"),
                  True, READ_COMMITTED)  # fmt: skip
    out = []
    while True:  # as the fetcher's getall: again only while the last call stopped at max
        got = _take(records, max_records)
        out += got
        if max_records is None or len(got) < max_records:
            break
    return [(r.topic, r.partition, r.offset, r.timestamp, r.timestamp_type, r.key, r.value,
             r.checksum, r.serialized_key_size, r.serialized_value_size, r.headers)
            for r in out], records.next_fetch_offset  # fmt: skip


def _take(records: PartitionRecords, max_records: int | None) -> list[Any]:
    """What ``FetchResult.getall`` does with it."""
    out = []
    for msg in records:
        out.append(msg)
        if max_records is not None and len(out) >= max_records:
            break
    return out


@pytest.mark.parametrize("fetch_offset", [0, 3])
@pytest.mark.parametrize("max_records", [None, 2])
def test_patched_fetch_gives_aiokafkas_records(fetch_offset: int, max_records: int | None) -> None:
    assert aiokafka_fetch.apply() is True
    assert aiokafka_fetch.apply() is True  # idempotent
    patched = _drain(PartitionRecords, fetch_offset, max_records)
    assert patched == _drain(_Shipped, fetch_offset, max_records)
    offsets = [r[2] for r in patched[0]]
    assert offsets == [o for o in [*range(5), *range(9, 15)] if o >= fetch_offset]
    assert patched[1] == 15


def test_deserializers_take_aiokafkas_path() -> None:
    assert aiokafka_fetch.apply() is True
    kw = {"kd": lambda k: k and k.decode(), "vd": lambda v: None if v is None else len(v)}
    assert _drain(PartitionRecords, 0, None, **kw) == _drain(_Shipped, 0, None, **kw)
    assert _drain(PartitionRecords, 0, None, **kw)[0][0][5:7] == ("k0", 0)


def test_fetch_result_getall_with_the_patch() -> None:
    assert aiokafka_fetch.apply() is True

    class _Assignment:
        def __init__(self) -> None:
            self.positions: list[int] = []

        def state_value(self, tp: TopicPartition) -> Any:
            return self

        def consumed_to(self, offset: int) -> None:
            self.positions.append(offset)

    assignment = _Assignment()
    records = PartitionRecords(TP, MemoryRecords(RAW), ABORTED, 0, None, None, True,
                               READ_COMMITTED)  # fmt: skip
    result = FetchResult(TP, partition_records=records, assignment=assignment, backoff=0)
    result.check_assignment = lambda tp: True  # type: ignore[method-assign]
    first, rest = result.getall(max_records=3), result.getall()
    assert [r.offset for r in first + rest] == [0, 1, 2, 3, 4, 9, 10, 11, 12, 13, 14]
    assert assignment.positions == [3, 15]
    assert not result.has_more()


def test_unverified_version_is_left_alone() -> None:
    assert aiokafka_fetch.apply("0.99.0") is False

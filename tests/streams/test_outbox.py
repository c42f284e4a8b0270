"""The outbox partitions keys exactly as Kafka's default partitioner (aiokafka's murmur2)."""

from __future__ import annotations

import random

from aiokafka.partitioner import murmur2

from wxsub.streams.outbox import partition_for


def test_partition_for_agrees_with_kafkas_murmur2() -> None:
    rng = random.Random(7)
    keys = [rng.randbytes(rng.randrange(0, 64)) for _ in range(5000)]
    keys += [f"wx{i:016d}:o{i * 7919:x}".encode() for i in range(5000)]
    keys += ["用户:订单".encode(), b"\x00", b"\xff" * 3]
    for n in (1, 3, 8, 12, 64):
        assert [partition_for(k, n) for k in keys] == [(murmur2(k) & 0x7FFFFFFF) % n for k in keys]

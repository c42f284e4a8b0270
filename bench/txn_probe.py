"""Where a transaction's time goes on this broker: begin, first send (AddPartitionsToTxn +
produce), commit, for sequential one-record transactions and several retry back-offs, then
with ``wxsub.streams.aiokafka_tuning`` applied (aiokafka's hard-coded 20 ms back-off after
CONCURRENT_TRANSACTIONS shortened to 2 ms).

Then what a transaction costs in CPU: 8 producers (one per partition, as the stage runtime has)
each commit ``n`` transactions of 10 records plus their input offsets; CPU per transaction of
this process (aiokafka) and, when it listens on this machine, of the broker.

``python -m bench.txn_probe --bootstrap HOST:PORT [--n 40]``: prints the median of each phase.
It connects with the ``[kafka]`` settings of ``$WXSUB_CONFIG`` / ``WXSUB_KAFKA_*`` (TLS, SASL).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

import aiokafka.producer.sender as sender
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.common import client, kafka_settings, listener_pid, proc_cpu_s
from wxsub.streams import aiokafka_tuning

__all__ = ["main"]


async def _phases(bootstrap: str, topic: str, n: int, backoff_ms: int) -> dict[str, float]:
    producer = AIOKafkaProducer(
        **client(bootstrap),
        transactional_id=f"txn-probe-{uuid.uuid4().hex[:8]}",
        linger_ms=0,
        retry_backoff_ms=backoff_ms,
    )
    await producer.start()
    spans: dict[str, list[float]] = {"begin": [], "first send": [], "commit": []}
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            await producer.begin_transaction()
            t1 = time.perf_counter()
            await (await producer.send(topic, key=b"k", value=b"v", partition=0))
            t2 = time.perf_counter()
            await producer.commit_transaction()
            t3 = time.perf_counter()
            spans["begin"].append(t1 - t0)
            spans["first send"].append(t2 - t1)
            spans["commit"].append(t3 - t2)
    finally:
        await producer.stop()
    return {k: statistics.median(v) * 1000 for k, v in spans.items()}


async def _transactions(bootstrap: str, topic: str, p: int, n: int) -> None:
    """``n`` transactions of one partition's producer: 10 records and the input offsets each."""
    producer = AIOKafkaProducer(
        **client(bootstrap),
        transactional_id=f"txn-cpu-{uuid.uuid4().hex[:8]}",
        linger_ms=10,
    )
    await producer.start()
    try:
        for i in range(n):
            await producer.begin_transaction()
            futs = [
                await producer.send(topic, b"x" * 100, key=b"k", partition=p) for _ in range(10)
            ]
            offsets = {TopicPartition(topic, p): i + 1}
            await asyncio.gather(*futs, producer.send_offsets_to_transaction(offsets, "txn-cpu"))
            await producer.commit_transaction()
    finally:
        await producer.stop()


async def _cpu(bootstrap: str, n: int, rounds: int = 3) -> None:
    topic = f"txn-cpu-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(**client(bootstrap))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 8, _replicas(bootstrap))])
        broker = listener_pid(int(bootstrap.rsplit(":", 1)[1]))
        for r in range(rounds):  # the first warms the broker up
            b0, c0, t0 = proc_cpu_s(broker or 0), time.process_time(), time.perf_counter()
            await asyncio.gather(*(_transactions(bootstrap, topic, p, n) for p in range(8)))
            b1, c1, t1 = proc_cpu_s(broker or 0), time.process_time(), time.perf_counter()
            txns = 8 * n
            shown = f"broker {(b1 - b0) / txns * 1e3:.2f} ms" if broker else "broker not local"
            print(
                f"8 producers x {n} transactions of 10 records + offsets, round {r + 1}: "
                f"{txns / (t1 - t0):.0f}/s; CPU per transaction: aiokafka "
                f"{(c1 - c0) / txns * 1e3:.2f} ms, {shown}"
            )
        await admin.delete_topics([topic])
    finally:
        await admin.close()


async def _run(bootstrap: str, n: int) -> None:
    topic = f"txn-probe-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(**client(bootstrap))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, _replicas(bootstrap))])
        shipped = sender.BACKOFF_OVERRIDE
        for backoff in (100, 20, 1):
            medians = await _phases(bootstrap, topic, n, backoff)
            shown = "  ".join(f"{k} {v:.1f} ms" for k, v in medians.items())
            print(f"as shipped, retry_backoff_ms={backoff:>3}: {shown}")
        try:
            aiokafka_tuning.apply()
            medians = await _phases(bootstrap, topic, n, 100)
            shown = "  ".join(f"{k} {v:.1f} ms" for k, v in medians.items())
            print(f"wxsub.streams.aiokafka_tuning, retry_backoff_ms=100: {shown}")
        finally:
            sender.BACKOFF_OVERRIDE = shipped
        await admin.delete_topics([topic])
    finally:
        await admin.close()


def _replicas(bootstrap: str) -> int:
    return kafka_settings(bootstrap).replication_factor


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.txn_probe")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--n", type=int, default=40)
    args = parser.parse_args()
    asyncio.run(_run(args.bootstrap, args.n))
    aiokafka_tuning.apply()
    asyncio.run(_cpu(args.bootstrap, max(args.n, 1) * 4))


if __name__ == "__main__":
    main()

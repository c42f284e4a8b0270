"""A partition whose producer fell out of sequence gets a new producer and goes on exactly once.

aiokafka numbers a batch when it leaves the accumulator, also a batch it then fails without
sending it (expired while its partition had no leader: a broker killed, as in
tests/cluster), and never takes the number back. Every later batch of that producer to that
partition is refused with ``OutOfOrderSequenceNumber``; before the runtime renewed the
producer, the partition aborted, backed off and failed again for ever (a stage stuck short of
its input: tests/cluster ``test_all_broker_faults_in_one_run``). Here the lost number is taken
as aiokafka takes it (the producer's own sequence counter moved on by one), on a real broker.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from aiokafka import TopicPartition

from tests.fixtures.kafka_helpers import create_topic
from tests.streams.running import running
from tests.streams.sum_stage import SumStage
from tests.streams.test_runtime_eos import _check, _produce, _wait_outputs

pytestmark = pytest.mark.kafka


async def test_a_producer_out_of_sequence_is_renewed_and_nothing_is_lost_or_repeated(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    uid = os.urandom(4).hex()
    inp = await create_topic(kafka_bootstrap, f"renew-in-{uid}", 1)
    out = await create_topic(kafka_bootstrap, f"renew-out-{uid}", 1)
    await create_topic(kafka_bootstrap, f"{inp}-sum-sums-changelog", 1, compacted=True)
    async with running(kafka_bootstrap, tmp_path, SumStage(inp, out), wait_ready=True) as (
        runner,
        _task,
    ):
        sent = await _produce(kafka_bootstrap, inp, 30, seed=1)
        assert len(await _wait_outputs(kafka_bootstrap, out, 30)) == 30
        unit = runner._state.units[0]
        poisoned = unit.producer
        # what aiokafka does to a batch it fails unsent: its sequence number is spent
        poisoned._txn_manager.increment_sequence_number(TopicPartition(out, 0), 1)
        more = await _produce(kafka_bootstrap, inp, 30, seed=2)
        outputs = await _wait_outputs(kafka_bootstrap, out, 60)
        assert runner._state.units[0].producer is not poisoned
    for key, values in more.items():
        sent.setdefault(key, []).extend(values)
    _check(outputs, sent)

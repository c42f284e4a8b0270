"""The DLQ re-publish procedure printed in docs/operations.md works against a real broker."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from tests.fixtures.kafka import NewTopic
from tests.fixtures.kafka_helpers import read_all
from tests.observability.catalog import OPERATIONS_FILE
from wxsub.dlq import HEADER_PREFIX, dead_letter, parse_dead_letter
from wxsub.errors import InputError

pytestmark = pytest.mark.kafka

Republish = Callable[..., Awaitable[int]]


def _runbook_republish() -> Republish:
    """The ``republish`` function of the runbook's code block, compiled as printed."""
    text = OPERATIONS_FILE.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    (code,) = [b for b in blocks if "async def republish" in b]
    namespace: dict[str, Any] = {}
    exec(compile(code, str(OPERATIONS_FILE), "exec"), namespace)
    fn: Republish = namespace["republish"]
    return fn


async def test_runbook_republishes_matching_dead_letters(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    source, dlq = await new_topic(partitions=2), await new_topic(partitions=3)
    bad = InputError("schema", "/status", "unknown status")
    rows = [
        # (value, key, reason error, stage, source offset, source attempt)
        (b'{"n": 1}', b"order-1", RuntimeError("boom"), "orders", 10, 0),
        (b'{"n": 2}', b"order-2", bad, "orders", 11, 0),  # another reason: stays
        (b'{"n": 3}', b"order-3", RuntimeError("boom"), "decide", 12, 0),  # another stage: stays
        (b'{"n": 4}', b"order-4", RuntimeError("boom"), "orders", 13, 2),  # failed 3 times: stays
        (b'{"n": 5}', None, RuntimeError("boom"), "orders", 14, 0),
    ]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for value, key, error, stage, offset, attempt in rows:
            headers = [("trace", b"t-%d" % offset)]
            if attempt:
                headers.append((HEADER_PREFIX + "attempt", str(attempt).encode()))
            k, v, h = dead_letter(value, headers, source, 0, offset, error, stage, key=key)
            await producer.send_and_wait(dlq, v, key=k, headers=h)
    finally:
        await producer.stop()

    sent = await _runbook_republish()(kafka_bootstrap, dlq, "internal", "orders")

    assert sent == 2
    got = sorted(await read_all(kafka_bootstrap, source), key=lambda r: r.value)
    assert [(r.value, r.key) for r in got] == [(b'{"n": 1}', b"order-1"), (b'{"n": 5}', None)]
    for rec in got:
        assert rec.headers[0][0] == "trace"  # the source's own headers, first and unchanged
        assert dict(rec.headers)[HEADER_PREFIX + "attempt"] == b"1"
        # failing again now makes a second attempt
        _, _, again = dead_letter(rec.value, rec.headers, source, 0, 0, RuntimeError("x"), "orders")
        assert parse_dead_letter(rec.value, again).attempt == 2

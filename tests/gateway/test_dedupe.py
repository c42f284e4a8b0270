"""TtlMap and PushDeduper as plain objects (a fake clock, no sleeping)."""

from __future__ import annotations

import asyncio

import pytest

from wxsub.errors import ProduceError
from wxsub.gateway.dedupe import PushDeduper, TtlMap


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_ttl_map_expires_and_is_bounded() -> None:
    clock = Clock()
    seen = TtlMap(10, 3, clock)
    seen.put("a")
    clock.now = 5
    seen.put("b")
    assert seen.get("a") and seen.get("b")
    clock.now = 10.5
    assert seen.get("a") is None and seen.get("b")
    for key in "cdef":
        seen.put(key)
    assert len(seen) == 3 and seen.get("c") is None and seen.get("f")


async def test_concurrent_duplicates_wait_for_the_first() -> None:
    calls = 0
    gate = asyncio.Event()

    async def produce() -> None:
        nonlocal calls
        calls += 1
        await gate.wait()

    dedupe = PushDeduper(TtlMap(60, 100))
    tasks = [asyncio.create_task(dedupe.once("k", produce)) for _ in range(3)]
    await asyncio.sleep(0)
    gate.set()
    assert sorted(await asyncio.gather(*tasks)) == [False, False, True]
    assert calls == 1
    assert await dedupe.once("k", produce) is False


async def test_failure_is_not_remembered() -> None:
    attempts = 0

    async def flaky() -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise ProduceError("no acks")

    dedupe = PushDeduper(TtlMap(60, 100))
    waiting = [asyncio.create_task(dedupe.once("k", flaky)) for _ in range(2)]
    for task in waiting:
        with pytest.raises(ProduceError):
            await task
    assert await dedupe.once("k", flaky) is True
    assert await dedupe.once("k", flaky) is False
    assert attempts == 2

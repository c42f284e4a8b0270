"""TokenManager without HTTP: single flight, refresh ahead of expiry, invalidate-if-current."""

from __future__ import annotations

import asyncio

import pytest

from wxsub.errors import RetryableError
from wxsub.settings import Secret
from wxsub.wechat.tokens import AccessToken, TokenManager


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeTokenEndpoint:
    """Hands out TOKEN-1, TOKEN-2, ...; ``gate`` holds a fetch open; ``fail`` makes it raise."""

    def __init__(self, expires_in: float = 7200.0) -> None:
        self.calls = 0
        self.expires_in = expires_in
        self.gate: asyncio.Event | None = None
        self.fail = False

    async def __call__(self, appid: str) -> tuple[Secret, float]:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise RetryableError("token call: system busy", -1)
        return Secret(f"TOKEN-{self.calls}"), self.expires_in


def manager(endpoint: FakeTokenEndpoint, clock: FakeClock, margin: float = 200.0) -> TokenManager:
    return TokenManager(endpoint, refresh_margin_s=margin, clock=clock)


async def test_hundred_concurrent_callers_share_one_fetch() -> None:
    endpoint, clock = FakeTokenEndpoint(), FakeClock()
    tokens = manager(endpoint, clock)
    endpoint.gate = asyncio.Event()
    waiters = [asyncio.create_task(tokens.get("wx1")) for _ in range(100)]
    await asyncio.sleep(0)
    endpoint.gate.set()
    got = await asyncio.gather(*waiters)
    assert endpoint.calls == 1
    assert {t.reveal() for t in got} == {"TOKEN-1"}


async def test_cached_token_is_reused_until_the_margin() -> None:
    endpoint, clock = FakeTokenEndpoint(), FakeClock()
    tokens = manager(endpoint, clock)
    first = await tokens.get("wx1")
    clock.now += 7200 - 200 - 1
    assert (await tokens.get("wx1")).reveal() == first.reveal()
    assert endpoint.calls == 1


async def test_within_margin_serves_old_token_and_refreshes_once_in_background() -> None:
    endpoint, clock = FakeTokenEndpoint(), FakeClock()
    tokens = manager(endpoint, clock)
    await tokens.get("wx1")
    clock.now += 7200 - 100  # inside the 200 s margin, before expiry
    endpoint.gate = asyncio.Event()
    served = [await tokens.get("wx1") for _ in range(50)]
    assert {t.reveal() for t in served} == {"TOKEN-1"}  # nobody waited for the refresh
    endpoint.gate.set()
    await asyncio.sleep(0.01)
    assert endpoint.calls == 2
    assert (await tokens.get("wx1")).reveal() == "TOKEN-2"


async def test_expired_token_blocks_for_a_fresh_one() -> None:
    endpoint, clock = FakeTokenEndpoint(), FakeClock()
    tokens = manager(endpoint, clock)
    await tokens.get("wx1")
    clock.now += 7200
    assert (await tokens.get("wx1")).reveal() == "TOKEN-2"


async def test_invalidate_drops_only_the_token_that_failed() -> None:
    endpoint, clock = FakeTokenEndpoint(), FakeClock()
    tokens = manager(endpoint, clock)
    old = await tokens.get("wx1")
    assert tokens.invalidate("wx1", old)
    fresh = await tokens.get("wx1")
    assert fresh.reveal() == "TOKEN-2"
    # a late 40001 for the old token must not throw the fresh one away
    assert not tokens.invalidate("wx1", old)
    assert tokens.cached("wx1") is fresh
    assert endpoint.calls == 2


async def test_burst_of_token_errors_causes_one_refresh() -> None:
    endpoint, clock = FakeTokenEndpoint(), FakeClock()
    tokens = manager(endpoint, clock)
    old = await tokens.get("wx1")

    async def on_token_error() -> AccessToken:
        tokens.invalidate("wx1", old)
        return await tokens.get("wx1")

    got = await asyncio.gather(*(on_token_error() for _ in range(100)))
    assert endpoint.calls == 2
    assert {t.reveal() for t in got} == {"TOKEN-2"}


async def test_failed_fetch_reaches_every_waiter_and_next_call_tries_again() -> None:
    endpoint, clock = FakeTokenEndpoint(), FakeClock()
    tokens = manager(endpoint, clock)
    endpoint.fail = True
    results = await asyncio.gather(*(tokens.get("wx1") for _ in range(10)), return_exceptions=True)
    assert all(isinstance(r, RetryableError) and r.errcode == -1 for r in results)
    assert endpoint.calls == 1
    endpoint.fail = False
    assert (await tokens.get("wx1")).reveal() == "TOKEN-2"
    assert tokens.failures == 1


async def test_failed_background_refresh_keeps_serving_and_backs_off() -> None:
    endpoint, clock = FakeTokenEndpoint(), FakeClock()
    tokens = manager(endpoint, clock)
    await tokens.get("wx1")
    clock.now += 7200 - 100
    endpoint.fail = True
    assert (await tokens.get("wx1")).reveal() == "TOKEN-1"
    await asyncio.sleep(0.01)
    assert (await tokens.get("wx1")).reveal() == "TOKEN-1"
    await asyncio.sleep(0.01)
    assert endpoint.calls == 2  # backing off, not one call per get
    clock.now += 6
    endpoint.fail = False
    await tokens.get("wx1")
    await asyncio.sleep(0.01)
    assert (await tokens.get("wx1")).reveal() == "TOKEN-3"


async def test_short_lived_token_is_not_refreshed_on_every_use() -> None:
    endpoint, clock = FakeTokenEndpoint(expires_in=60.0), FakeClock()
    tokens = manager(endpoint, clock, margin=200.0)  # margin longer than the lifetime
    await tokens.get("wx1")
    clock.now += 29
    for _ in range(10):
        await tokens.get("wx1")
    await asyncio.sleep(0.01)
    assert endpoint.calls == 1


async def test_appids_are_independent() -> None:
    endpoint, clock = FakeTokenEndpoint(), FakeClock()
    tokens = manager(endpoint, clock)
    a, b = await asyncio.gather(tokens.get("wx1"), tokens.get("wx2"))
    assert a.reveal() != b.reveal()
    assert endpoint.calls == 2


async def test_repr_masks_the_token() -> None:
    tokens = manager(FakeTokenEndpoint(), FakeClock())
    token = await tokens.get("wx1")
    assert "TOKEN-1" not in repr(token)
    assert "TOKEN-1" not in str(token)


async def test_aclose_cancels_a_running_refresh() -> None:
    endpoint, clock = FakeTokenEndpoint(), FakeClock()
    tokens = manager(endpoint, clock)
    endpoint.gate = asyncio.Event()
    waiter = asyncio.create_task(tokens.get("wx1"))
    await asyncio.sleep(0)
    await tokens.aclose()
    with pytest.raises(asyncio.CancelledError):
        await waiter

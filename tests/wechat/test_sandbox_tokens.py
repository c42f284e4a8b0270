"""Sandbox access tokens: classic overlap invalidation, stable token, force_refresh limits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.fixtures.sandbox import (
    APPID,
    APPID_B,
    APPID_WL,
    SECRET,
    SECRET_B,
    SECRET_WL,
    get_token,
    http_client,
    world_doc,
)
from wxsub_sandbox import ManualClock, Sandbox, load_world, run_sandbox

CRED = {"grant_type": "client_credential", "appid": APPID, "secret": SECRET}


async def classic(http: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    reply = await http.get("/cgi-bin/token", params={**CRED, **params})
    assert reply.status_code == 200
    doc: dict[str, Any] = reply.json()
    return doc


async def stable(http: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    reply = await http.post("/cgi-bin/stable_token", json={**CRED, **body})
    doc: dict[str, Any] = reply.json()
    return doc


async def errcode_with(http: httpx.AsyncClient, token: str) -> int:
    """The errcode gettemplate answers with ``token`` (0 when the token works)."""
    reply = await http.get("/wxaapi/newtmpl/gettemplate", params={"access_token": token})
    return int(reply.json()["errcode"])


@pytest.fixture
async def limited(sandbox_clock: ManualClock) -> AsyncIterator[tuple[Sandbox, httpx.AsyncClient]]:
    """A sandbox with tiny limits, so limit tests need a handful of calls."""
    doc = world_doc(
        force_refresh_per_day=3, classic_per_day=2, stable_per_minute=4, stable_per_day=6
    )
    async with run_sandbox(load_world(doc), clock=sandbox_clock) as sb:
        async with http_client(sb) as http:
            yield sb, http


async def test_classic_token_shape(sandbox_http: httpx.AsyncClient) -> None:
    doc = await classic(sandbox_http)
    assert doc["expires_in"] == 7200
    assert len(doc["access_token"]) >= 64
    assert await errcode_with(sandbox_http, doc["access_token"]) == 0


async def test_classic_fetch_invalidates_previous_after_overlap(
    sandbox_http: httpx.AsyncClient, sandbox_clock: ManualClock
) -> None:
    first = (await classic(sandbox_http))["access_token"]
    second = (await classic(sandbox_http))["access_token"]
    assert first != second
    sandbox_clock.advance(299)
    assert await errcode_with(sandbox_http, first) == 0
    sandbox_clock.advance(1)
    assert await errcode_with(sandbox_http, first) == 40001
    assert await errcode_with(sandbox_http, second) == 0


async def test_classic_token_expires_with_42001(
    sandbox_http: httpx.AsyncClient, sandbox_clock: ManualClock
) -> None:
    token = (await classic(sandbox_http))["access_token"]
    sandbox_clock.advance(7199)
    assert await errcode_with(sandbox_http, token) == 0
    sandbox_clock.advance(1)
    assert await errcode_with(sandbox_http, token) == 42001


async def test_stable_returns_the_same_token_while_valid(
    sandbox_http: httpx.AsyncClient, sandbox_clock: ManualClock
) -> None:
    first = await stable(sandbox_http)
    sandbox_clock.advance(1000)
    again = await stable(sandbox_http, force_refresh=False)
    assert again["access_token"] == first["access_token"]
    assert again["expires_in"] == 6200


async def test_stable_rotates_near_expiry_with_overlap(
    sandbox_http: httpx.AsyncClient, sandbox_clock: ManualClock
) -> None:
    old = (await stable(sandbox_http))["access_token"]
    sandbox_clock.advance(7200 - 301)
    assert (await stable(sandbox_http))["access_token"] == old
    sandbox_clock.advance(2)  # 299 s left: rotate
    new = await stable(sandbox_http)
    assert new["access_token"] != old
    assert new["expires_in"] == 7200
    assert await errcode_with(sandbox_http, old) == 0  # overlap: the old one lives on
    sandbox_clock.advance(299)
    assert await errcode_with(sandbox_http, old) == 42001
    assert await errcode_with(sandbox_http, new["access_token"]) == 0


async def test_stable_expires_in_is_never_below_300(
    sandbox_http: httpx.AsyncClient, sandbox_clock: ManualClock
) -> None:
    for _ in range(40):
        assert (await stable(sandbox_http))["expires_in"] >= 300
        sandbox_clock.advance(397)


async def test_stable_and_classic_are_independent(sandbox_http: httpx.AsyncClient) -> None:
    token = (await stable(sandbox_http))["access_token"]
    for _ in range(3):
        await classic(sandbox_http)
    assert (await stable(sandbox_http))["access_token"] == token


async def test_force_refresh_invalidates_old_token_at_once(
    sandbox_http: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    old = (await stable(sandbox_http))["access_token"]
    new = (await stable(sandbox_http, force_refresh=True))["access_token"]
    assert new != old
    assert await errcode_with(sandbox_http, old) == 40001
    assert await errcode_with(sandbox_http, new) == 0
    assert sandbox.recorder.counters["calls.stable_token.force"] == 1
    assert sandbox.recorder.counters["calls.stable_token"] == 2


async def test_force_refresh_limits(
    limited: tuple[Sandbox, httpx.AsyncClient], sandbox_clock: ManualClock
) -> None:
    _, http = limited
    assert "access_token" in await stable(http, force_refresh=True)
    assert (await stable(http, force_refresh=True))["errcode"] == 45011  # < 30 s apart
    sandbox_clock.advance(30)
    assert "access_token" in await stable(http, force_refresh=True)
    sandbox_clock.advance(30)
    assert "access_token" in await stable(http, force_refresh=True)
    sandbox_clock.advance(30)
    assert (await stable(http, force_refresh=True))["errcode"] == 45009  # 3 a day
    sandbox_clock.advance(86400)
    assert "access_token" in await stable(http, force_refresh=True)


async def test_classic_daily_quota(limited: tuple[Sandbox, httpx.AsyncClient]) -> None:
    _, http = limited
    assert "access_token" in await classic(http)
    assert "access_token" in await classic(http)
    assert (await classic(http))["errcode"] == 45009


async def test_stable_minute_and_daily_quota(
    limited: tuple[Sandbox, httpx.AsyncClient], sandbox_clock: ManualClock
) -> None:
    _, http = limited
    for _ in range(4):
        assert "access_token" in await stable(http)
    assert (await stable(http))["errcode"] == 45011
    sandbox_clock.advance(60)
    assert "access_token" in await stable(http)
    assert "access_token" in await stable(http)
    assert (await stable(http))["errcode"] == 45009


CREDENTIAL_ERRORS = [
    ({"appid": ""}, 41002),
    ({"appid": "wxunknown000000000"}, 40013),
    ({"grant_type": "password"}, 40002),
    ({"secret": ""}, 41004),
    ({"secret": "wrong"}, 40001),
    ({"appid": APPID_B, "secret": SECRET}, 40001),  # another app's secret
    ({"appid": APPID_WL, "secret": SECRET_WL}, 40164),  # caller IP not whitelisted
]


@pytest.mark.parametrize(("change", "errcode"), CREDENTIAL_ERRORS)
async def test_credential_errors_classic(
    sandbox_http: httpx.AsyncClient, change: dict[str, str], errcode: int
) -> None:
    doc = await classic(sandbox_http, **change)
    assert doc["errcode"] == errcode
    assert "access_token" not in doc


@pytest.mark.parametrize(("change", "errcode"), CREDENTIAL_ERRORS)
async def test_credential_errors_stable(
    sandbox_http: httpx.AsyncClient, change: dict[str, str], errcode: int
) -> None:
    doc = await stable(sandbox_http, **change)
    assert doc["errcode"] == errcode
    assert "access_token" not in doc


async def test_stable_token_needs_a_json_body(sandbox_http: httpx.AsyncClient) -> None:
    reply = await sandbox_http.post("/cgi-bin/stable_token", content=b"appid=x")
    assert reply.json()["errcode"] == 47001


async def test_tokens_are_per_app(sandbox_http: httpx.AsyncClient, sandbox: Sandbox) -> None:
    token_b = await get_token(sandbox_http, APPID_B, SECRET_B)
    reply = await sandbox_http.get("/wxaapi/newtmpl/gettemplate", params={"access_token": token_b})
    ids = [t["priTmplId"] for t in reply.json()["data"]]
    assert ids == list(sandbox.world.apps[APPID_B].templates)


@pytest.mark.parametrize(
    ("token", "errcode"),
    [("", 41001), ("not a token!", 40014), ("A" * 136, 40001)],
)
async def test_bad_tokens(sandbox_http: httpx.AsyncClient, token: str, errcode: int) -> None:
    assert await errcode_with(sandbox_http, token) == errcode


async def test_admin_expire_makes_tokens_expire(
    sandbox_http: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    token = await get_token(sandbox_http)
    reply = await sandbox_http.post("/admin/tokens/expire", json={"appid": APPID})
    assert reply.json() == {"expired": 1}
    assert await errcode_with(sandbox_http, token) == 42001
    fresh = await get_token(sandbox_http)
    assert fresh != token
    assert await errcode_with(sandbox_http, fresh) == 0


async def test_counters_count_40001_served(
    sandbox_http: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    for _ in range(3):
        await errcode_with(sandbox_http, "B" * 100)
    await classic(sandbox_http)
    counters = (await sandbox_http.get("/admin/counters")).json()["counters"]
    assert counters["errcode.40001"] == 3
    assert counters["calls.token"] == 1
    assert counters["calls.gettemplate"] == 3

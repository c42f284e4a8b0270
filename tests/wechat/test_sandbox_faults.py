"""Sandbox fault injection: latency, errcode rates, quota window, reset, drop, scripted faults."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.fixtures.sandbox import APPID, OPENID, ORDER_TID, get_token, send, send_body
from wxsub_sandbox import FaultSpec, ManualClock, Sandbox
from wxsub_sandbox.faults import Faults


async def set_faults(http: httpx.AsyncClient, spec: dict[str, Any]) -> dict[str, Any]:
    reply = await http.post("/admin/faults", json=spec)
    assert reply.status_code == 200, reply.text
    doc: dict[str, Any] = reply.json()
    return doc


def plans(spec: dict[str, Any], n: int, clock: ManualClock | None = None) -> list[Any]:
    faults = Faults(clock or ManualClock())
    faults.set(FaultSpec.from_json(spec))
    return [faults.plan("send") for _ in range(n)]


def test_rates_are_seeded_and_reproducible() -> None:
    spec = {"seed": 3, "errors": {"-1": 0.2, "45011": 0.1}, "reset_rate": 0.1, "drop_rate": 0.1}
    first, again = plans(spec, 500), plans(spec, 500)
    assert first == again
    faults = [p.fault for p in first]
    for name in ("error:-1", "error:45011", "reset", "drop"):
        assert faults.count(name) > 10  # each really happens
    assert faults.count(None) > 150
    assert plans({**spec, "seed": 4}, 500) != first


@pytest.mark.parametrize(
    ("latency", "low", "high"),
    [
        ({"dist": "fixed", "s": 0.25}, 0.25, 0.25),
        ({"dist": "uniform", "lo": 0.01, "hi": 0.02}, 0.01, 0.02),
        ({"dist": "lognormal", "median_s": 0.05, "sigma": 1.0, "max_s": 0.2}, 1e-9, 0.2),
    ],
)
def test_latency_distributions(latency: dict[str, Any], low: float, high: float) -> None:
    samples = [p.latency_s for p in plans({"latency": latency}, 200)]
    assert all(low <= s <= high for s in samples)
    if latency["dist"] != "fixed":
        assert len(set(samples)) > 100


@pytest.mark.parametrize(
    "spec",
    [
        {"errors": {"-1": 0.7}, "drop_rate": 0.5},  # sum > 1
        {"reset_rate": -0.1},
        {"latency": {"dist": "gamma"}},
        {"latency": {"dist": "uniform", "lo": 2, "hi": 1}},
        {"endpoints": ["nowhere"]},
        {"next": [{"action": "explode"}]},
        {"surprise": 1},
    ],
)
async def test_bad_specs_are_refused(sandbox_http: httpx.AsyncClient, spec: dict[str, Any]) -> None:
    reply = await sandbox_http.post("/admin/faults", json=spec)
    assert reply.status_code == 400
    assert "bad fault spec" in reply.json()["error"]


async def test_injected_latency_is_recorded(
    sandbox: Sandbox, sandbox_http: httpx.AsyncClient
) -> None:
    await set_faults(sandbox_http, {"latency": {"dist": "fixed", "s": 0.05}})
    token = await get_token(sandbox_http)
    assert (await send(sandbox_http, token, send_body(sandbox.world, OPENID, ORDER_TID)))[
        "errcode"
    ] == 0
    (record,) = sandbox.recorder.calls(endpoint="send")
    assert record.latency_s == 0.05
    assert sandbox.recorder.calls(endpoint="stable_token")[0].latency_s == 0.0  # send only


@pytest.mark.parametrize("errcode", [-1, 45009, 45011, 43107, 48001])
async def test_injected_errcode_is_not_processed(
    sandbox: Sandbox, sandbox_http: httpx.AsyncClient, errcode: int
) -> None:
    await set_faults(sandbox_http, {"errors": {str(errcode): 1.0}})
    token = await get_token(sandbox_http)
    reply = await send(sandbox_http, token, send_body(sandbox.world, OPENID, ORDER_TID))
    assert reply["errcode"] == errcode
    assert "msgid" not in reply
    assert sandbox.world.credits(APPID, OPENID)[ORDER_TID] == 1
    (record,) = sandbox.recorder.calls(endpoint="send")
    assert (record.errcode, record.processed, record.fault) == (errcode, False, f"error:{errcode}")
    assert record.openid == OPENID and record.template_id == ORDER_TID


async def test_quota_exhausted_for_a_while_then_resumes(
    sandbox: Sandbox, sandbox_http: httpx.AsyncClient, sandbox_clock: ManualClock
) -> None:
    await set_faults(sandbox_http, {"quota_exhausted_for_s": 30})
    token = await get_token(sandbox_http)
    body = send_body(sandbox.world, OPENID, ORDER_TID)
    assert (await send(sandbox_http, token, body))["errcode"] == 45009
    sandbox_clock.advance(29)
    assert (await send(sandbox_http, token, body))["errcode"] == 45009
    sandbox_clock.advance(1)
    assert (await send(sandbox_http, token, body))["errcode"] == 0
    assert sandbox.recorder.counters["errcode.45009"] == 2


async def test_reset_means_not_processed(sandbox: Sandbox, sandbox_http: httpx.AsyncClient) -> None:
    token = await get_token(sandbox_http)
    await set_faults(sandbox_http, {"reset_rate": 1.0})
    with pytest.raises(httpx.TransportError):
        await send(sandbox_http, token, send_body(sandbox.world, OPENID, ORDER_TID))
    assert sandbox.world.credits(APPID, OPENID)[ORDER_TID] == 1
    (record,) = sandbox.recorder.calls(endpoint="send")
    assert (record.reset, record.processed, record.errcode, record.msgid) == (
        True,
        False,
        None,
        None,
    )


async def test_drop_means_processed_but_unanswered(
    sandbox: Sandbox, sandbox_http: httpx.AsyncClient
) -> None:
    events: list[dict[str, Any]] = []

    async def hook(event: dict[str, Any]) -> None:
        events.append(event)

    sandbox.world.on_event.append(hook)
    token = await get_token(sandbox_http)
    await set_faults(sandbox_http, {"drop_rate": 1.0})
    with pytest.raises(httpx.RemoteProtocolError):
        await send(sandbox_http, token, send_body(sandbox.world, OPENID, ORDER_TID))
    assert sandbox.world.credits(APPID, OPENID)[ORDER_TID] == 0  # the send really happened
    (record,) = sandbox.recorder.calls(endpoint="send", dropped=True)
    assert (record.processed, record.errcode) == (True, 0)
    assert record.msgid is not None and record.msgid > 2**53
    await sandbox.world.drain_events()
    assert events[0]["items"][0]["msgid"] == record.msgid
    assert sandbox.recorder.counters["dropped"] == 1


async def test_scripted_faults_come_in_order(
    sandbox: Sandbox, sandbox_http: httpx.AsyncClient
) -> None:
    token = await get_token(sandbox_http)
    sandbox.world.grant(APPID, OPENID, ORDER_TID, 5)
    doc = await set_faults(
        sandbox_http,
        {"next": [{"errcode": -1}, {"action": "reset"}, {"action": "drop", "latency_s": 0.01}]},
    )
    assert len(doc["next"]) == 3
    body = send_body(sandbox.world, OPENID, ORDER_TID)
    assert (await send(sandbox_http, token, body))["errcode"] == -1
    with pytest.raises(httpx.TransportError):
        await send(sandbox_http, token, body)
    with pytest.raises(httpx.RemoteProtocolError):
        await send(sandbox_http, token, body)
    assert (await send(sandbox_http, token, body))["errcode"] == 0
    faults = [r.fault for r in sandbox.recorder.calls(endpoint="send")]
    assert faults == ["error:-1", "reset", "drop", None]
    assert (await sandbox_http.get("/admin/faults")).json()["next"] == []


async def test_faults_apply_only_to_their_endpoints(
    sandbox: Sandbox, sandbox_http: httpx.AsyncClient
) -> None:
    await set_faults(sandbox_http, {"endpoints": ["stable_token"], "errors": {"-1": 1.0}})
    reply = await sandbox_http.post(
        "/cgi-bin/stable_token",
        json={"grant_type": "client_credential", "appid": APPID, "secret": "anything"},
    )
    assert reply.json()["errcode"] == -1
    classic = await sandbox_http.get(
        "/cgi-bin/token",
        params={"grant_type": "client_credential", "appid": APPID, "secret": "wrong"},
    )
    assert classic.json()["errcode"] == 40001


async def test_get_and_clear_faults(sandbox_http: httpx.AsyncClient) -> None:
    await set_faults(sandbox_http, {"seed": 9, "errors": {"-1": 0.5}})
    doc = (await sandbox_http.get("/admin/faults")).json()
    assert doc["seed"] == 9 and doc["errors"] == {"-1": 0.5}
    cleared = (await sandbox_http.delete("/admin/faults")).json()
    assert cleared["errors"] == {} and cleared["reset_rate"] == 0.0

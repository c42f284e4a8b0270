"""WeChatClient against the in-process WeChat sandbox: every errcode path, tokens, faults.

Tests taking ``client`` or ``lane`` run on both request lanes: the default aiohttp exchange lane
and httpx.AsyncClient.send over the same aiohttp-backed transport (the httpx transport API).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.fixtures.sandbox import (
    ALL_TYPES_TID,
    APPID,
    APPID_B,
    APPID_NOAUTH,
    APPID_WL,
    B_TID,
    BANNED_TID,
    OPENID,
    OPENID_2,
    OPENID_B,
    ORDER_TID,
    SECRET,
    SECRET_B,
    SECRET_NOAUTH,
    SECRET_WL,
    send_body,
)
from wxsub.errors import (
    InDoubtError,
    PermanentError,
    QuotaExceeded,
    RetryableError,
    WeChatError,
)
from wxsub.settings import AppCredentials, Secret, WeChatSettings
from wxsub.wechat.client import SendResult, WeChatClient
from wxsub.wechat.tokens import AccessToken
from wxsub.wechat.transport import AiohttpTransport
from wxsub_sandbox import FaultSpec, ManualClock, Sandbox

CREDS = {
    APPID: SECRET,
    APPID_B: SECRET_B,
    APPID_WL: SECRET_WL,
    APPID_NOAUTH: SECRET_NOAUTH,
}


def settings(base_url: str, **overrides: Any) -> WeChatSettings:
    apps = {a: AppCredentials(a, Secret(s)) for a, s in CREDS.items()}
    values: dict[str, Any] = {"api_base": base_url, "apps": apps, "read_timeout_s": 5.0}
    values.update(overrides)
    return WeChatSettings(**values)


@pytest.fixture(params=["exchange", "httpx"])
def lane(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def open_client(s: WeChatSettings, lane: str, **kwargs: Any) -> WeChatClient:
    """A client on the given lane: "httpx" mounts the aiohttp transport in httpx.AsyncClient."""
    if lane == "httpx":
        limits = httpx.Limits(max_connections=s.max_connections)
        kwargs["transport"] = AiohttpTransport(limits)
    return WeChatClient(s, **kwargs)


@pytest.fixture
async def client(sandbox: Sandbox, lane: str) -> AsyncIterator[WeChatClient]:
    async with open_client(settings(sandbox.base_url), lane, clock=sandbox.clock) as c:
        yield c


def faults(sandbox: Sandbox, **doc: Any) -> None:
    sandbox.faults.set(FaultSpec.from_json(doc))


def order_body(sandbox: Sandbox, openid: str = OPENID, **extra: Any) -> dict[str, Any]:
    return send_body(sandbox.world, openid, ORDER_TID, **extra)


def counters(sandbox: Sandbox) -> dict[str, int]:
    return dict(sandbox.recorder.counters)


# --- success -------------------------------------------------------------------------------


async def test_send_returns_exact_msgid_above_2_53(sandbox: Sandbox, client: WeChatClient) -> None:
    body = order_body(sandbox, miniprogram_state="trial", lang="en_US")
    result = await client.send(APPID, body)
    assert isinstance(result, SendResult)
    assert result.errcode == 0
    (call,) = sandbox.recorder.calls(endpoint="send")
    assert call.msgid is not None and call.msgid > 2**53
    assert result.msgid == call.msgid  # exact: never went through a float
    assert (call.miniprogram_state, call.lang) == ("trial", "en_US")  # passed through


async def test_get_templates_learns_keyword_types(client: WeChatClient) -> None:
    templates = {t.template_id: t for t in await client.get_templates(APPID)}
    order = templates[ORDER_TID]
    assert [(k.name, k.type) for k in order.keywords] == [
        ("character_string1", "character_string"),
        ("phrase2", "phrase"),
        ("thing3", "thing"),
        ("time4", "time"),
    ]
    assert templates[ALL_TYPES_TID].enum_values == {"enum13": ("现货", "预售")}


# --- errcodes WeChat answers ---------------------------------------------------------------

INJECTED = [
    (-1, RetryableError),
    (43108, RetryableError),
    (45011, RetryableError),
    (45009, QuotaExceeded),
    (40003, PermanentError),
    (40037, PermanentError),
    (41030, PermanentError),
    (43101, PermanentError),
    (43107, PermanentError),
    (45168, PermanentError),
    (47003, PermanentError),
    (40164, PermanentError),
    (48001, PermanentError),
    (99999, PermanentError),
]


@pytest.mark.parametrize(("errcode", "error"), INJECTED)
async def test_injected_errcode_is_classified_and_not_retried(
    sandbox: Sandbox, client: WeChatClient, errcode: int, error: type[WeChatError]
) -> None:
    faults(sandbox, next=[{"errcode": errcode}])
    with pytest.raises(error) as info:
        await client.send(APPID, order_body(sandbox))
    assert type(info.value) is error
    assert info.value.errcode == errcode
    assert len(sandbox.recorder.calls(endpoint="send")) == 1  # the client did not retry


async def test_real_refusals_from_the_sandbox_rules(sandbox: Sandbox, client: WeChatClient) -> None:
    cases: list[tuple[str, dict[str, Any], int]] = [
        (APPID, order_body(sandbox, openid="oNobody0000000000000000000001"), 40003),
        (APPID, {**order_body(sandbox), "template_id": "NO_SUCH_TEMPLATE"}, 40037),
        (APPID, order_body(sandbox, page="pages/nowhere/index"), 41030),
        (APPID, send_body(sandbox.world, OPENID, BANNED_TID), 43107),
        (APPID, {**order_body(sandbox), "data": {"thing3": {"value": "x"}}}, 47003),
        (APPID_NOAUTH, send_body(sandbox.world, OPENID_B, B_TID), 48001),
    ]
    for appid, body, errcode in cases:
        with pytest.raises(PermanentError) as info:
            await client.send(appid, body)
        assert info.value.errcode == errcode, body
    await client.send(APPID, order_body(sandbox, openid=OPENID_2))
    with pytest.raises(PermanentError) as info:  # OPENID_2 had one credit, now used
        await client.send(APPID, order_body(sandbox, openid=OPENID_2))
    assert info.value.errcode == 43101


async def test_47003_message_names_the_field(sandbox: Sandbox, client: WeChatClient) -> None:
    body = order_body(sandbox)
    body["data"]["phrase2"] = {"value": "这不是一个短语啊"}
    with pytest.raises(PermanentError, match=r"data\.phrase2\.value invalid") as info:
        await client.send(APPID, body)
    assert info.value.errcode == 47003


async def test_token_call_refusals(sandbox: Sandbox, lane: str) -> None:
    bad = settings(sandbox.base_url, apps={APPID: AppCredentials(APPID, Secret("wrong"))})
    async with open_client(bad, lane) as c:
        with pytest.raises(PermanentError) as info:
            await c.send(APPID, order_body(sandbox))
        assert info.value.errcode == 40001
        assert "wrong" not in str(info.value)
    async with WeChatClient(settings(sandbox.base_url)) as c:
        with pytest.raises(PermanentError) as info:  # caller IP not whitelisted
            await c.send(APPID_WL, order_body(sandbox))
        assert info.value.errcode == 40164
        with pytest.raises(PermanentError, match="no credentials"):
            await c.send("wxunknown000000000", order_body(sandbox))
    assert not sandbox.recorder.calls(endpoint="send")


# --- tokens --------------------------------------------------------------------------------


@pytest.mark.parametrize("errcode", [40001, 40014, 42001])
async def test_token_errcode_refreshes_and_retries_once(
    sandbox: Sandbox, client: WeChatClient, errcode: int
) -> None:
    faults(sandbox, next=[{"errcode": errcode}])
    result = await client.send(APPID, order_body(sandbox))
    assert result.msgid > 2**53
    c = counters(sandbox)
    assert c["calls.send"] == 2
    assert c["calls.stable_token"] == 2  # first token, then one refresh
    assert c.get("calls.stable_token.force", 0) == 0


async def test_token_errcode_twice_is_retryable(sandbox: Sandbox, client: WeChatClient) -> None:
    faults(sandbox, next=[{"errcode": 40001}, {"errcode": 40001}])
    with pytest.raises(RetryableError) as info:
        await client.send(APPID, order_body(sandbox))
    assert info.value.errcode == 40001
    assert counters(sandbox)["calls.send"] == 2


async def test_rotation_mid_run_costs_one_refresh(sandbox: Sandbox, client: WeChatClient) -> None:
    await client.send(APPID, send_body(sandbox.world, OPENID, ALL_TYPES_TID))
    sandbox.tokens.expire_all(APPID)  # WeChat-side expiry the client did not see coming
    await client.send(APPID, send_body(sandbox.world, OPENID, ALL_TYPES_TID))
    await client.send(APPID, send_body(sandbox.world, OPENID, ALL_TYPES_TID))
    c = counters(sandbox)
    assert c["errcode.42001"] == 1
    assert c["calls.stable_token"] == 2
    assert c["sent"] == 3


async def test_refresh_ahead_of_expiry_avoids_42001(
    sandbox: Sandbox, sandbox_clock: ManualClock, client: WeChatClient
) -> None:
    body = send_body(sandbox.world, OPENID, ALL_TYPES_TID)
    for step in range(9):  # every 1000 s over 8000 s: the 7200 s token is replaced in time
        await client.send(APPID, body)
        await asyncio.sleep(0.01)  # let a background refresh land
        if step == 7:
            assert client.tokens.fetches == 2  # the refresh at t=7000 ran in the background
        sandbox_clock.advance(1000)
    c = counters(sandbox)
    assert c["sent"] == 9
    assert c.get("errcode.42001", 0) == 0 and c.get("errcode.40001", 0) == 0
    assert c["calls.stable_token"] == 2


async def test_single_flight_hundred_concurrent_sends_one_token_call(
    sandbox: Sandbox, client: WeChatClient
) -> None:
    openids = [sandbox.world.add_user(APPID) for _ in range(100)]
    for openid in openids:
        sandbox.world.grant(APPID, openid, ORDER_TID)
    results = await asyncio.gather(
        *(client.send(APPID, order_body(sandbox, openid=o)) for o in openids)
    )
    assert len({r.msgid for r in results}) == 100
    assert counters(sandbox)["calls.stable_token"] == 1


async def test_two_clients_with_stable_tokens_do_not_storm(
    sandbox: Sandbox, sandbox_clock: ManualClock
) -> None:
    openids = [sandbox.world.add_user(APPID) for _ in range(20)]
    for openid in openids:
        sandbox.world.grant(APPID, openid, ALL_TYPES_TID, 100)
    s = settings(sandbox.base_url)
    async with (
        WeChatClient(s, clock=sandbox.clock) as one,
        WeChatClient(s, clock=sandbox.clock) as two,
    ):
        for _ in range(8):  # 8 x 20 min: through a rotation of the 2 h token
            await asyncio.gather(
                *(
                    c.send(APPID, send_body(sandbox.world, o, ALL_TYPES_TID))
                    for c, o in zip([one, two] * 10, openids, strict=True)
                )
            )
            await asyncio.sleep(0.01)
            sandbox_clock.advance(20 * 60)
    c = counters(sandbox)
    assert c["sent"] == 160
    assert c.get("errcode.40001", 0) == 0 and c.get("errcode.42001", 0) == 0
    assert c["calls.stable_token"] <= 4  # one per client, plus one refresh each
    assert c.get("calls.stable_token.force", 0) == 0


async def test_classic_token_mode(
    sandbox: Sandbox, lane: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with open_client(settings(sandbox.base_url, token_mode="classic"), lane) as c:
        await c.send(APPID, order_body(sandbox))
    assert counters(sandbox)["calls.token"] == 1
    assert "calls.stable_token" not in counters(sandbox)
    assert SECRET not in caplog.text  # the secret rode in the query string: masked in logs


# --- the transport: what was sent, what maybe was ------------------------------------------


async def test_dropped_response_is_in_doubt(sandbox: Sandbox, client: WeChatClient) -> None:
    faults(sandbox, next=[{"action": "drop"}])
    with pytest.raises(InDoubtError) as info:
        await client.send(APPID, order_body(sandbox))
    assert info.value.errcode is None
    (call,) = sandbox.recorder.calls(endpoint="send")
    assert call.processed and call.dropped  # it WAS sent: resending would duplicate


async def test_reset_after_request_written_is_in_doubt(
    sandbox: Sandbox, client: WeChatClient
) -> None:
    """The sandbox resets before processing, but a client cannot tell that apart from a reset
    after processing (a crashing server, a proxy): the request was written, so in doubt."""
    faults(sandbox, next=[{"action": "reset"}])
    with pytest.raises(InDoubtError):
        await client.send(APPID, order_body(sandbox))
    (call,) = sandbox.recorder.calls(endpoint="send")
    assert call.reset and not call.processed


async def test_reset_on_token_call_is_retryable(sandbox: Sandbox, client: WeChatClient) -> None:
    faults(sandbox, endpoints=["stable_token"], next=[{"action": "reset"}])
    with pytest.raises(RetryableError):  # a token call is safe to repeat
        await client.send(APPID, order_body(sandbox))
    assert (await client.send(APPID, order_body(sandbox))).msgid > 2**53


async def test_read_timeout_is_in_doubt(sandbox: Sandbox, lane: str) -> None:
    faults(sandbox, next=[{"latency_s": 2.0}])
    async with open_client(settings(sandbox.base_url, read_timeout_s=0.2), lane) as c:
        with pytest.raises(InDoubtError, match="ReadTimeout"):
            await c.send(APPID, order_body(sandbox))


async def test_connection_refused_is_retryable(lane: str) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with open_client(settings(f"http://127.0.0.1:{port}"), lane) as c:
        c.tokens._tokens[APPID] = AccessToken(Secret("x" * 64), float("inf"), float("inf"))
        with pytest.raises(RetryableError, match="not sent"):
            await c.send(APPID, {"touser": OPENID})


async def test_bad_http_status_and_body(sandbox: Sandbox, lane: str) -> None:
    async with open_client(settings(sandbox.base_url + "/nope"), lane) as c:
        with pytest.raises(PermanentError, match="HTTP 404"):
            await c.send(APPID, order_body(sandbox))


# --- secrets -------------------------------------------------------------------------------


async def test_no_token_or_secret_in_logs_reprs_or_errors(
    sandbox: Sandbox, client: WeChatClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await client.send(APPID, order_body(sandbox))
    faults(sandbox, next=[{"action": "drop"}])
    with pytest.raises(InDoubtError) as info:
        await client.send(APPID, order_body(sandbox, openid=OPENID_2))
    token = client.tokens.cached(APPID)
    assert token is not None
    value = token.reveal()
    texts = [caplog.text, repr(client), repr(token), str(info.value), repr(info.value)]
    cause = info.value.__cause__
    while cause is not None:
        texts.append(str(cause))
        cause = cause.__cause__
    for text in texts:
        assert value not in text
        assert SECRET not in text
    assert "access_token=***" in caplog.text  # the request log line, masked

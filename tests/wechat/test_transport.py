"""The aiohttp-backed transport on its own: both ways in give the same bytes and errors."""

from __future__ import annotations

import gzip
import socket
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from aiohttp import web

from wxsub.wechat.transport import AiohttpTransport

REPLY = {"errcode": 0, "errmsg": "ok", "msgid": 2**60 + 7}


async def _gzipped(request: web.Request) -> web.Response:
    seen = {"body": (await request.read()).decode(), "ctype": request.headers.get("Content-Type")}
    doc = {**REPLY, "seen": seen}
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    return web.Response(body=gzip.compress(orjson.dumps(doc)), headers=headers)


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/send", _gzipped)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


def _transport() -> AiohttpTransport:
    headers = {"Content-Type": "application/json", "Accept-Encoding": "identity"}
    return AiohttpTransport(httpx.Limits(max_connections=4), headers=headers)


async def test_exchange_decodes_a_compressed_reply(base_url: str) -> None:
    transport = _transport()
    try:
        status, raw = await transport.exchange("POST", f"{base_url}/send?access_token=a%2Bb", b"{}")
    finally:
        await transport.aclose()
    assert status == 200
    doc = orjson.loads(raw)
    assert doc["msgid"] == REPLY["msgid"]
    assert doc["seen"] == {"body": "{}", "ctype": "application/json"}


async def test_httpx_api_decodes_a_compressed_reply(base_url: str) -> None:
    async with httpx.AsyncClient(transport=_transport()) as http:
        resp = await http.post(f"{base_url}/send", content=b"{}")
    assert resp.status_code == 200
    assert resp.json()["msgid"] == REPLY["msgid"]


async def test_both_ways_in_raise_connect_error_with_the_query_masked() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/send?access_token=SECRETVALUE"
    transport = _transport()
    try:
        with pytest.raises(httpx.ConnectError) as lane:
            await transport.exchange("POST", url, b"{}")
        async with httpx.AsyncClient(transport=transport) as http:
            with pytest.raises(httpx.ConnectError) as api:
                await http.post(url, content=b"{}")
    finally:
        await transport.aclose()
    for info in (lane, api):
        assert "SECRETVALUE" not in str(info.value)
        assert info.value.__cause__ is None

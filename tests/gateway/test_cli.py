"""``wxsub gateway`` as a real process: config file with env: secrets, a push, SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.fixtures.kafka import NewTopic
from tests.fixtures.kafka_helpers import read_all, unique_name
from tests.gateway.conftest import AES_KEY, TOKEN
from tests.gateway.wechat_sim import WeChatSim
from wxsub.schemas import decode

pytestmark = pytest.mark.kafka

APPID = "wxcli00000000001"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_healthy(url: str, proc: asyncio.subprocess.Process) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            assert proc.returncode is None, "gateway exited early"
            try:
                async with http.get(url + "/health") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("gateway did not become healthy")


async def test_gateway_command(kafka_bootstrap: str, new_topic: NewTopic, tmp_path: Path) -> None:
    prefix = unique_name("cli") + "."
    topic = await new_topic(partitions=1, name=prefix + "subscriptions")
    config = tmp_path / "wxsub.toml"
    config.write_text(
        f'[gateway.apps.{APPID}]\ntoken = "env:PUSH_TOKEN"\naes_key = "env:PUSH_AES"\n'
        'mode = "safe"\noriginal_id = "gh_cli"\n'
    )
    port = free_port()
    env = {
        **os.environ,
        "WXSUB_CONFIG": str(config),
        "WXSUB_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "WXSUB_KAFKA_TOPIC_PREFIX": prefix,
        "WXSUB_GATEWAY_PORT": str(port),
        "PUSH_TOKEN": TOKEN,
        "PUSH_AES": AES_KEY,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wxsub", "gateway", env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        url = f"http://127.0.0.1:{port}"
        await wait_healthy(url, proc)
        sim = WeChatSim(APPID, TOKEN, AES_KEY, original_id="gh_cli", mode="safe")
        params, body = sim.popup("oCli000000000000000000000001", {"T1": "accept"})
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{url}/wechat/push/{APPID}", params=params, data=body) as resp:
                assert (resp.status, await resp.text()) == (200, "success")
            async with http.post(f"{url}/wechat/push/{APPID}", params={}, data=b"x") as resp:
                assert resp.status == 400
        (record,) = await read_all(kafka_bootstrap, topic)
        assert decode("subscription", record.value).status == "accept"  # type: ignore[union-attr]
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        assert proc.stderr is not None
        stderr = (await asyncio.wait_for(proc.stderr.read(), 30)).decode()
        code = await asyncio.wait_for(proc.wait(), 30)
    assert code == 0, stderr
    assert '"msg":"gateway listening"' in stderr
    assert '"reason":"missing_param"' in stderr
    for secret in (TOKEN, AES_KEY):
        assert secret not in stderr

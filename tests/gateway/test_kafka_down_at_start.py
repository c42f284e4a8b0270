"""``serve()`` started while Kafka is unreachable: it listens at once, answers pushes 503 (never
``success``), is live but not ready, and once Kafka is reachable it connects by itself, takes
the retried push durably and turns ready. Kafka refusing the principal is one error, no retry.

"Unreachable" is a closed port on 127.0.0.1 given as the bootstrap; "reachable again" is a TCP
relay opened on that same port to the session broker (bootstrap goes through the relay, the
broker's advertised address is reached directly), so no second broker has to start."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from tests.fixtures.kafka import NewTopic
from tests.fixtures.kafka_helpers import read_all, unique_name
from tests.fixtures.polling import until_tries
from tests.gateway.conftest import AES_KEY, APPS, TOKEN, app_settings
from tests.gateway.wechat_sim import WeChatSim
from wxsub.gateway.cli import serve
from wxsub.schemas import SubscriptionEvent, decode
from wxsub.settings import Settings
from wxsub.streams.connection import AccessDenied

pytestmark = pytest.mark.kafka

APPID = "wxsafe0000000001"
OPENID = "oKafkaDown000000000000000001"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def relay(listen_port: int, target: str) -> asyncio.Server:
    """A TCP relay 127.0.0.1:listen_port -> target (host:port)."""
    host, _, port = target.rpartition(":")

    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        dst.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    return await asyncio.start_server(handle, "127.0.0.1", listen_port)


def settings_for(bootstrap: str, prefix: str, port: int, **kafka: str) -> Settings:
    return app_settings(bootstrap).with_overrides(
        kafka={"topic_prefix": prefix, **kafka}, gateway={"host": "127.0.0.1", "port": port}
    )


async def test_gateway_started_while_kafka_is_down_serves_503_then_recovers(
    kafka_bootstrap: str, new_topic: NewTopic, caplog: pytest.LogCaptureFixture
) -> None:
    prefix = unique_name("down") + "."
    topic = await new_topic(partitions=1, name=prefix + "subscriptions")
    kafka_port, port = free_port(), free_port()
    settings = settings_for(f"127.0.0.1:{kafka_port}", prefix, port)
    stop = asyncio.Event()
    caplog.set_level(logging.WARNING, logger="wxsub.gateway")
    gateway = asyncio.create_task(serve(settings, CollectorRegistry(), stop, retry_s=(0.1, 0.4)))
    server: asyncio.Server | None = None
    sim = WeChatSim(APPID, TOKEN, AES_KEY, original_id=f"gh_{APPID[2:]}", mode=APPS[APPID])
    message = sim.message(
        OPENID,
        "subscribe_msg_popup_event",
        [{"TemplateId": "T1", "SubscribeStatusString": "accept"}],
        int(time.time()),
    )
    params, body = sim.request(message)  # the one push WeChat keeps retrying
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:

            async def status(path: str) -> int:
                try:
                    async with http.get(url + path) as resp:
                        return resp.status
                except aiohttp.ClientError:
                    return 0

            async def push() -> tuple[int, str]:
                async with http.post(f"{url}/wechat/push/{APPID}", params=params, data=body) as r:
                    return r.status, await r.text()

            async def live() -> bool:
                assert not gateway.done(), gateway
                return await status("/health/live") == 200

            assert await until_tries(live, 100, 0.1)
            assert await push() == (503, "retry later")
            assert await status("/health/ready") == 503
            assert await status("/health/live") == 200
            assert not gateway.done()

            server = await relay(kafka_port, kafka_bootstrap)  # Kafka is reachable now

            async def accepted() -> bool:
                got = await push()
                assert got[1] != "success" or got[0] == 200
                return got == (200, "success")

            async def ready() -> bool:
                return await status("/health/ready") == 200

            assert await until_tries(accepted, 100, 0.1)
            assert await until_tries(ready, 100, 0.1)
        (record,) = await read_all(kafka_bootstrap, topic)
        event = decode("subscription", record.value)
        assert isinstance(event, SubscriptionEvent)
        assert (event.openid, event.status) == (OPENID, "accept")
    finally:
        stop.set()
        await asyncio.wait_for(gateway, 30)
        if server is not None:
            server.close()
    retries = [r for r in caplog.records if r.getMessage().startswith("Kafka unreachable")]
    assert retries, "each failed attempt is logged"
    assert all("KafkaConnectionError" in r.__dict__["error"] for r in retries)


async def test_gateway_refused_by_kafka_stops_with_access_denied(kafka_bootstrap: str) -> None:
    """SASL against the session broker's plaintext listener: the broker refuses the handshake.
    That is not an outage: serve() raises AccessDenied (``wxsub gateway`` exits 2 with it)."""
    settings = settings_for(
        kafka_bootstrap,
        unique_name("denied") + ".",
        free_port(),
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_username="gw",
        sasl_password="s3cretPassw0rd",
    )
    with pytest.raises(AccessDenied) as caught:
        await asyncio.wait_for(serve(settings, CollectorRegistry(), asyncio.Event()), 60)
    assert "Kafka authentication failed for User:gw" in str(caught.value)
    assert "s3cretPassw0rd" not in str(caught.value)

"""Gateway fixtures: a real gateway on 127.0.0.1 producing to a fresh topic on the real broker."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from tests.fixtures.kafka import NewTopic
from tests.fixtures.kafka_helpers import read_all
from tests.gateway.wechat_sim import WeChatSim
from wxsub.gateway import SubscriptionProducer, create_gateway_app
from wxsub.schemas import SubscriptionEvent, decode
from wxsub.settings import (
    AppCredentials,
    GatewaySettings,
    KafkaSettings,
    PushEndpoint,
    Secret,
    Settings,
    WeChatSettings,
)

# Secrets the log-scanning test looks for; distinctive so a leak cannot hide.
TOKEN = "tok3nS3cretValue42"
AES_KEY = base64.b64encode(b"K3y!" * 8).decode()[:-1]
APPSECRET = "appS3cretNeverLogged0123456789ab"
APPS = {
    "wxsafe0000000001": "safe",
    "wxplain000000002": "plain",
    "wxcompat00000003": "compatible",
}


def app_settings(bootstrap: str, **gateway: Any) -> Settings:
    endpoints = {
        appid: PushEndpoint(appid, Secret(TOKEN), Secret(AES_KEY), mode, f"gh_{appid[2:]}")  # type: ignore[arg-type]
        for appid, mode in APPS.items()
    }
    creds = {appid: AppCredentials(appid, Secret(APPSECRET)) for appid in APPS}
    return Settings(
        kafka=KafkaSettings(bootstrap=bootstrap),
        wechat=WeChatSettings(apps=creds),
        gateway=GatewaySettings(port=8081, apps=endpoints, **gateway),
    )


@dataclass
class Gateway:
    url: str
    topic: str
    bootstrap: str
    registry: CollectorRegistry
    http: aiohttp.ClientSession

    def sim(self, appid: str, fmt: str = "xml") -> WeChatSim:
        return WeChatSim(
            appid, TOKEN, AES_KEY, original_id=f"gh_{appid[2:]}", mode=APPS[appid], fmt=fmt
        )

    async def post(
        self, params: dict[str, str], body: bytes, appid: str | None = None
    ) -> tuple[int, str]:
        path = f"/wechat/push/{appid}" if appid else "/wechat/push"
        async with self.http.post(self.url + path, params=params, data=body) as resp:
            return resp.status, await resp.text()

    async def events(self) -> list[SubscriptionEvent]:
        """The topic's records decoded with the contract's own decoder (keys checked)."""
        out = []
        for r in await read_all(self.bootstrap, self.topic):
            event = decode("subscription", r.value)
            assert isinstance(event, SubscriptionEvent)
            assert r.key.decode() == event.key
            out.append(event)
        return out

    async def records(self) -> list[dict[str, Any]]:
        return [e._asdict() for e in await self.events()]

    async def healthy(self) -> bool:
        async with self.http.get(self.url + "/health") as resp:
            return resp.status == 200

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


async def start_gateway(
    settings: Settings, topic: str, produce_timeout_s: float = 4.0, card_topic: str | None = None
) -> tuple[web.AppRunner, SubscriptionProducer, CollectorRegistry, str]:
    registry = CollectorRegistry()
    producer = SubscriptionProducer(settings.kafka.bootstrap, topic, timeout_s=produce_timeout_s)
    await producer.start()
    cards = producer.to_topic(card_topic) if card_topic else None
    runner = web.AppRunner(create_gateway_app(settings, producer, registry, card_sink=cards))
    try:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
    except BaseException:
        await runner.cleanup()
        await producer.stop()
        raise
    host, port = runner.addresses[0][:2]
    return runner, producer, registry, f"http://{host}:{port}"


@pytest.fixture
async def gateway(kafka_bootstrap: str, new_topic: NewTopic) -> AsyncIterator[Gateway]:
    topic = await new_topic(partitions=3)
    settings = app_settings(kafka_bootstrap)
    runner, producer, registry, url = await start_gateway(settings, topic)
    try:
        async with aiohttp.ClientSession() as http:
            yield Gateway(url, topic, kafka_bootstrap, registry, http)
    finally:
        await runner.cleanup()
        await producer.stop()

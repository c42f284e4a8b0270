"""What the deliver tests share: settings for a unique topic prefix, the sandbox world, intents
whose notification id the sandbox records (``page=...?nid=``), a receipt feeder (sandbox sent
events -> SubscriptionEvent records, as the gateway would produce them), the stage built from
settings, and readers of the ledger, outcomes and corrections (read_committed)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from tests.fixtures.kafka_helpers import read_all
from tests.fixtures.sandbox import APPID, ORDER_TID, SECRET, send_body, world_doc
from wxsub.agents.base import StageEnv
from wxsub.agents.deliver import DeliverStage
from wxsub.agents.rules.delivery import DeliveryPolicy
from wxsub.errors import SetupError
from wxsub.merchants import Merchants
from wxsub.schemas import SUBSCRIPTION, encode
from wxsub.schemas.internal import (
    Correction,
    Delivery,
    Intent,
    Outcome,
    decode_internal,
    encode_internal,
    user_key,
)
from wxsub.settings import AppCredentials, Secret, Settings
from wxsub.streams.metrics import WorkerMetrics
from wxsub.streams.runtime import StageRunner
from wxsub.streams.topics import changelog_name, ensure_topics
from wxsub.wechat.client import WeChatClient
from wxsub_sandbox import Sandbox, World, load_world, run_sandbox

__all__ = [
    "FAST",
    "Harness",
    "ReceiptFeeder",
    "build_stage",
    "harness",
    "intent",
    "make_runner",
    "make_settings",
    "make_world",
    "nid_of_page",
    "run_stage",
]

PAGE = "pages/order/detail"
#: a policy for tests: quick retries, a short quota pause, a fast timer
FAST = DeliveryPolicy(
    max_attempts=4,
    backoff_base_ms=100,
    backoff_max_ms=400,
    quota_pause_ms=1500,
    receipt_window_ms=5000,
    timer_interval_s=0.1,
)


def make_settings(
    bootstrap: str, api_base: str, *, max_in_flight: int = 20, partitions: int = 4, **worker: Any
) -> Settings:
    prefix = f"dlv{os.urandom(4).hex()}."
    base = Settings().with_overrides(
        kafka={"bootstrap": bootstrap, "topic_prefix": prefix, "partitions": partitions},
        worker={"app_id": "deliver-test", "max_in_flight": max_in_flight, **worker},
        wechat={"api_base": api_base, "read_timeout_s": 5.0, "connect_timeout_s": 2.0},
    )
    apps = {APPID: AppCredentials(APPID, Secret(SECRET))}
    return replace(base, wechat=replace(base.wechat, apps=apps))


def make_world(users: int = 0, credits: int = 1, **tokens: Any) -> World:
    """The fixture world plus ``users`` generated users with ``credits`` order credits each."""
    doc = world_doc(**tokens)
    app = doc["apps"][0]
    app["users"] += [
        {"openid": f"oLoad{i:023d}", "credits": {ORDER_TID: credits}} for i in range(users)
    ]
    return load_world(doc)


def nid_of_page(page: str | None) -> str | None:
    if not page or "nid=" not in page:
        return None
    return page.split("nid=", 1)[1].split("&", 1)[0]  # the deliver stage appends &wxref=


def intent(
    world: World, openid: str, n: int, *, template_id: str = ORDER_TID, **body: Any
) -> Intent:
    """An intent whose notification id travels in the page query (the sandbox records it)."""
    nid = hashlib.blake2b(f"{openid}|{n}|{os.urandom(4).hex()}".encode(), digest_size=8).hexdigest()
    page = body.pop("page", f"{PAGE}?nid={nid}")
    now = int(datetime.now(UTC).timestamp() * 1000)
    return Intent(
        notification_id=nid,
        appid=APPID,
        openid=openid,
        template_id=template_id,
        kind="order_status",
        event_ids=(f"ev-{nid}",),
        occurred_at=now - 1000,
        received_at=now - 500,
        decided_at=now - 100,
        body=send_body(world, openid, template_id, page=page, **body),
    )


class ReceiptFeeder:
    """Hooks ``world.on_event``: every sent event becomes a SubscriptionEvent on the
    subscriptions topic, keyed by user, acks=all (like the gateway)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        self.enabled = True
        self.fed = 0

    async def __call__(self, event: dict[str, Any]) -> None:
        if event["event"] != "subscribe_msg_sent_event" or not self.enabled:
            return
        for i, item in enumerate(event["items"]):
            doc = {
                "type": "subscription",
                "v": 1,
                "event_id": f"r-{item['msgid']}-{i}",
                "occurred_at": datetime.fromtimestamp(event["time"], UTC).strftime(
                    "%Y-%m-%dT%H:%M:%SZ"
                ),
                "appid": event["appid"],
                "openid": event["openid"],
                "event": "sent",
                "template_id": item["template_id"],
                "create_time": event["time"],
                "msgid": str(item["msgid"]),
                "error_code": item["errcode"],
                "error_status": item["status"],
            }
            record = SUBSCRIPTION.from_doc(doc)
            key = user_key(event["appid"], event["openid"]).encode()
            await self.producer.send_and_wait(self.topic, encode(record), key=key)
            self.fed += 1


@dataclass
class Harness:
    """Topics, sandbox and readers for one test."""

    settings: Settings
    sandbox: Sandbox
    feeder: ReceiptFeeder
    producer: AIOKafkaProducer
    intents: list[Intent] = field(default_factory=list)

    def topic(self, logical: str) -> str:
        return self.settings.kafka.topic(logical)

    async def produce(self, intents: Iterable[Intent], pace: float = 0.0, every: int = 100) -> None:
        for i, it in enumerate(intents):
            self.intents.append(it)
            key = user_key(it.appid, it.openid).encode()
            await self.producer.send(self.topic("intents"), encode_internal(it), key=key)
            if pace and i % every == every - 1:
                await self.producer.flush()
                await asyncio.sleep(pace)
        await self.producer.flush()

    async def ledger(self) -> dict[str, Delivery]:
        """The latest deliveries record per notification id (an id whose latest record is a
        tombstone, forgotten by expiry, is left out)."""
        recs = await read_all(self.settings.kafka.bootstrap, self.topic("deliveries"))
        out: dict[str, Delivery] = {}
        for rec in recs:
            if rec.value is None:
                out.pop(rec.key.decode(), None)
                continue
            d = decode_internal(Delivery, rec.value)
            out[d.notification_id] = d
        return out

    async def outcomes(self) -> list[Outcome]:
        recs = await read_all(self.settings.kafka.bootstrap, self.topic("outcomes"))
        return [decode_internal(Outcome, r.value) for r in recs]

    async def corrections(self) -> list[Correction]:
        recs = await read_all(self.settings.kafka.bootstrap, self.topic("corrections"))
        return [decode_internal(Correction, r.value) for r in recs]

    async def wait_ledger(
        self, done: Callable[[dict[str, Delivery]], bool], timeout: float = 30.0
    ) -> dict[str, Delivery]:
        """Poll the ledger until ``done(ledger)`` or the timeout; returns the last ledger."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                ledger = await self.ledger()
            except SetupError:  # the workers have not created the topics yet
                ledger = {}
            if done(ledger) or loop.time() > deadline:
                return ledger
            await asyncio.sleep(0.3 + len(ledger) / 20_000)  # big runs: read less often

    def all_in(self, *states: str) -> Callable[[dict[str, Delivery]], bool]:
        def done(ledger: dict[str, Delivery]) -> bool:
            return all(
                it.notification_id in ledger and ledger[it.notification_id].state in states
                for it in self.intents
            )

        return done

    def sends_by_nid(self) -> dict[str, list[Any]]:
        """Sandbox send calls that took effect (a message went out), by notification id."""
        out: dict[str, list[Any]] = {}
        for call in self.sandbox.recorder.calls(endpoint="send", processed=True):
            nid = nid_of_page(call.page)
            if nid is not None:
                out.setdefault(nid, []).append(call)
        return out


@asynccontextmanager
async def harness(bootstrap: str, world: World, **settings_kw: Any) -> AsyncIterator[Harness]:
    """Sandbox on a free port (wall clock: receipt times are compared with attempt times),
    every topic under a fresh prefix, the receipt feeder hooked in."""
    async with run_sandbox(world) as sandbox:
        settings = make_settings(bootstrap, sandbox.base_url, **settings_kw)
        await ensure_topics(settings.kafka, settings.worker.app_id)
        feeder = ReceiptFeeder(bootstrap, settings.kafka.topic("subscriptions"))
        await feeder.producer.start()
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
        await producer.start()
        world.on_event.append(feeder)
        try:
            yield Harness(settings, sandbox, feeder, producer)
        finally:
            world.on_event.remove(feeder)
            await world.drain_events()
            await producer.stop()
            await feeder.producer.stop()


def build_stage(
    settings: Settings,
    policy: DeliveryPolicy = FAST,
    client_class: type[WeChatClient] = WeChatClient,
    env_class: type[StageEnv] = StageEnv,
    merchants: Merchants | None = None,
    clock: Callable[[], int] | None = None,
) -> tuple[DeliverStage, WeChatClient, WorkerMetrics]:
    metrics = WorkerMetrics()
    if clock is None:
        env = env_class(settings, merchants or Merchants({}), metrics)
    else:
        env = env_class(settings, merchants or Merchants({}), metrics, clock=clock)
    client = client_class(settings.wechat)
    return DeliverStage(env, client, policy), client, metrics


def make_runner(settings: Settings, stage: DeliverStage, state_dir: Path) -> StageRunner:
    kafka, app_id = settings.kafka, settings.worker.app_id
    return StageRunner(
        stage,
        bootstrap=kafka.bootstrap,
        app_id=app_id,
        state_dir=state_dir,
        changelog_topic=lambda stage_name, store: changelog_name(kafka, app_id, stage_name, store),
        max_batch=settings.worker.max_in_flight,
        session_timeout_ms=6000,
    )


@asynccontextmanager
async def run_stage(
    settings: Settings,
    state_dir: Path,
    policy: DeliveryPolicy = FAST,
    client_class: type[WeChatClient] = WeChatClient,
    env_class: type[StageEnv] = StageEnv,
    merchants: Merchants | None = None,
) -> AsyncIterator[tuple[DeliverStage, WorkerMetrics]]:
    """The deliver stage running in this process until the block ends (``merchants``: the
    config its send-time guards read; none by default, so nothing is guarded)."""
    stage, client, metrics = build_stage(settings, policy, client_class, env_class, merchants)
    runner = make_runner(settings, stage, state_dir)
    task = asyncio.create_task(runner.run())
    try:
        async with asyncio.timeout(30):
            await runner.ready.wait()
        yield stage, metrics
    finally:
        await runner.stop()
        try:
            async with asyncio.timeout(15):
                await task
        finally:
            if not task.done():
                task.cancel()
            await client.aclose()

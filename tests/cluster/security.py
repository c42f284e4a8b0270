"""Least privilege and Kafka outages on the secured cluster: the gateway's 503, liveness vs
readiness of gateway and worker, and a worker whose principal lacks an ACL."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client import CollectorRegistry

from tests.cluster.conftest import APP, GATEWAY_PREFIX
from tests.fixtures.kafka_helpers import read_all
from tests.fixtures.polling import until_tries
from tests.gateway.conftest import AES_KEY, APPS, TOKEN, app_settings
from tests.gateway.wechat_sim import WeChatSim
from tests.pipeline import test_pipeline_e2e as e2e
from tests.pipeline.harness import Deployment, as_published
from wxsub.gateway import SubscriptionProducer, create_gateway_app
from wxsub.settings import Settings
from wxsub.streams.connection import KafkaProbe, client_kwargs, security_kwargs
from wxsub.streams.topics import ensure_topics
from wxsub_dev.kafka_cluster import LocalKafkaCluster

pytestmark = pytest.mark.kafka

APPID = "wxsafe0000000001"


async def _status(http: aiohttp.ClientSession, url: str) -> int:
    try:
        async with http.get(url) as resp:
            return resp.status
    except aiohttp.ClientError:
        return 0


async def _ensure_subscriptions_topic(cluster: LocalKafkaCluster) -> str:
    topic = f"{GATEWAY_PREFIX}subscriptions"
    admin = AIOKafkaAdminClient(**client_kwargs(cluster.settings()))
    await admin.start()
    try:
        if topic not in await admin.list_topics():
            await admin.create_topics(
                [NewTopic(topic, 3, 3, topic_configs={"min.insync.replicas": "2"})]
            )
    finally:
        await admin.close()
    return topic


async def test_gateway_and_worker_while_kafka_is_down(
    healthy_cluster: LocalKafkaCluster, tmp_path: Path
) -> None:
    """All brokers down: the gateway answers WeChat 503 (never ``success``), both /health/ready
    say 503 while /health/live stays 200; brokers back: both recover by themselves and the
    push WeChat retried is durable."""
    cluster = healthy_cluster
    topic = await _ensure_subscriptions_topic(cluster)
    base = app_settings(cluster.bootstrap)
    kafka = cluster.settings("gateway", topic_prefix=GATEWAY_PREFIX)
    settings = Settings(kafka=kafka, wechat=base.wechat, gateway=base.gateway)
    producer = SubscriptionProducer(
        kafka.bootstrap, topic, timeout_s=2.0, security=security_kwargs(kafka)
    )
    await producer.start()
    probe = KafkaProbe(kafka, timeout_s=2.0)
    runner = web.AppRunner(create_gateway_app(settings, producer, CollectorRegistry(), probe=probe))
    dep = Deployment(cluster.bootstrap, tmp_path, e2e._log(seed=3, window_s=6)[0].merchants_toml)
    dep.stages = "orders"
    dep.secure = cluster.settings("wxsub")
    dep.secure_env = cluster.client_env("wxsub")
    dep.secure_env["WXSUB_WORKER_APP_ID"] = f"{APP}{dep.uid}"
    sim = WeChatSim(APPID, TOKEN, AES_KEY, original_id=f"gh_{APPID[2:]}", mode=APPS[APPID])
    try:
        await ensure_topics(dep.kafka, f"{APP}{dep.uid}")
        dep.start(0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        gw = f"http://{host}:{port}"
        worker = f"http://127.0.0.1:{dep.web_ports[0]}"

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:

            async def push(openid: str) -> tuple[int, str]:
                message = sim.message(
                    openid,
                    "subscribe_msg_popup_event",
                    [{"TemplateId": "T1", "SubscribeStatusString": "accept"}],
                    int(time.time()),
                )
                params, body = sim.request(message)
                async with http.post(f"{gw}/wechat/push/{APPID}", params=params, data=body) as r:
                    return r.status, await r.text()

            async def ready(url: str, want: int) -> bool:
                return await _status(http, f"{url}/health/ready") == want

            # the first produce on a freshly started cluster can take longer than the
            # gateway's 2 s timeout on a loaded machine: WeChat would retry, so does the test
            async def pushed_before() -> bool:
                return (await push("o-before")) == (200, "success")

            assert await until_tries(pushed_before, 20, 1.0)
            assert await until_tries(lambda: ready(gw, 200), 20, 0.5)
            assert await until_tries(lambda: ready(worker, 200), 120, 0.5), dep.logs()

            for node in cluster.brokers():
                cluster.kill(node.node_id)
            status, text = await push("o-during")
            assert status == 503 and text != "success"
            assert await until_tries(lambda: ready(gw, 503), 20, 0.5)
            assert await until_tries(lambda: ready(worker, 503), 30, 0.5)
            assert await _status(http, f"{gw}/health/live") == 200
            assert await _status(http, f"{worker}/health/live") == 200
            assert await _status(http, f"{worker}/health") in (200, 503)  # still answers

            for node in cluster.brokers():
                cluster.start_node(node.node_id, wait=False)
            await asyncio.to_thread(cluster.wait_brokers, 3, time.monotonic() + 150)

            # WeChat retries the push it got a 503 for; the gateway recovers by itself
            async def retried() -> bool:
                return (await push("o-during")) == (200, "success")

            assert await until_tries(retried, 60, 1.0)
            assert await until_tries(lambda: ready(gw, 200), 30, 0.5)
            assert await until_tries(lambda: ready(worker, 200), 120, 0.5), dep.logs()
        admin_kw = security_kwargs(cluster.settings())  # the gateway may not read it
        records = await read_all(cluster.bootstrap, topic, security=admin_kw)
        keys = {r.key.decode() for r in records}
        assert {f"{APPID}:o-before", f"{APPID}:o-during"} <= keys
    finally:
        dep.stop_all()
        await runner.cleanup()
        await probe.close()
        await producer.stop()


async def test_worker_lacking_an_acl_fails_with_one_clear_line_and_loses_nothing(
    healthy_cluster: LocalKafkaCluster, tmp_path: Path
) -> None:
    """``User:limited`` has the worker's ACLs except its consumer group's; the operator created
    the topics (``kafka.create_topics = false``). The worker exits (no retry loop) naming the
    principal, the group and the missing ACL; once the ACL is granted a new worker processes
    every event: outcomes and intents equal the oracle's."""
    cluster = healthy_cluster
    log = e2e._log(seed=5, window_s=20, users=20, orders=40)[0]
    exp, early = e2e._bootstrap_expected(log)  # no config applied: the file, version 0
    dep = Deployment(cluster.bootstrap, tmp_path, log.merchants_toml)
    app_id = f"{APP}{dep.uid}"
    dep.secure = cluster.settings("limited", create_topics=False)
    dep.secure_env = {
        **cluster.client_env("limited"),
        "WXSUB_KAFKA_CREATE_TOPICS": "false",
        "WXSUB_WORKER_APP_ID": app_id,
    }
    operator = cluster.settings(topic_prefix=dep.kafka.topic_prefix, partitions=dep.partitions)
    try:
        await ensure_topics(operator, app_id)  # as the operator (admin)
        phase0 = [e for e in log.entries if e.phase == 0]
        await dep.publish(as_published(phase0))
        dep.start(0)
        proc = dep.procs[0]
        assert proc is not None
        rc = await asyncio.to_thread(proc.wait, 120)
        dep.procs[0] = None
        text = (tmp_path / "worker0.log").read_text(errors="replace")
        denied = [ln for ln in text.splitlines() if ln.startswith("wxsub: Kafka denied")]
        assert rc == 2, text[-3000:]
        assert len(denied) == 1, text[-3000:]
        assert "User:limited" in denied[0] and f"Group:{app_id}-" in denied[0]
        assert "READ" in denied[0] and "limited-pw" not in text

        cluster.add_acls([f"User:limited GROUP PREFIXED {app_id} READ"])
        dep.start(0)
        got = await dep.wait_for("outcomes", log.phase0_outcomes, timeout=120)
        assert got >= log.phase0_outcomes, dep.logs()
        await dep.publish(as_published(log.phase(1)))
        short = await e2e._undecided(dep, early, timeout=180)
        assert not short, f"phase 1 not decided ({short})\n{dep.logs()}"
        await dep.publish(as_published(log.phase(2)))  # it competes with phase 1 for caps
        await dep.wait_for("outcomes", sum(exp.outcomes.values()), timeout=120)
        await dep.wait_for("intents", len(exp.intents), timeout=120)
        await asyncio.sleep(e2e.SETTLE_S)
        intents, outcomes, dlq = await dep.intents(), await dep.outcomes(), await dep.read("dlq")
    finally:
        dep.stop_all()
    e2e._compare(intents, outcomes, len(dlq), exp)

"""The worker creates every missing topic with its settings: partitions, compaction, retention."""

from __future__ import annotations

import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from wxsub.settings import KafkaSettings
from wxsub.streams.topics import CHANGELOG_STORES, TOPICS, changelog_name, ensure_topics

pytestmark = pytest.mark.kafka


async def _describe(bootstrap: str, names: list[str]) -> dict[str, dict[str, str]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        resources = [ConfigResource(ConfigResourceType.TOPIC, n) for n in names]
        out: dict[str, dict[str, str]] = {}
        for resp in await admin.describe_configs(resources):
            for _code, _msg, _rtype, name, entries in resp.resources:
                out[name] = {e[0]: e[1] for e in entries}
        return out
    finally:
        await admin.close()


async def test_missing_topics_are_created_once_with_their_settings(kafka_bootstrap: str) -> None:
    kafka = KafkaSettings(bootstrap=kafka_bootstrap, topic_prefix=f"x{uuid.uuid4().hex[:6]}.",
                          partitions=3)  # fmt: skip
    created = await ensure_topics(kafka, "appx")
    changelogs = [changelog_name(kafka, "appx", st, s) for st, ss in CHANGELOG_STORES.items()
                  for s in ss]  # fmt: skip
    expected = {kafka.topic(t.name) for t in TOPICS} | set(changelogs)
    assert set(created) == expected
    assert await ensure_topics(kafka, "appx") == []  # idempotent: a second worker creates nothing

    configs = await _describe(kafka_bootstrap, sorted(expected))
    for t in TOPICS:
        policy = configs[kafka.topic(t.name)]["cleanup.policy"]
        assert policy == ("compact" if t.compacted else "delete"), t.name
    for name in changelogs:
        assert configs[name]["cleanup.policy"] == "compact", name
    assert configs[kafka.topic("dlq")]["retention.ms"] == str(30 * 24 * 3600 * 1000)

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        meta = await admin.describe_topics(sorted(expected))
    finally:
        await admin.close()
    single = {kafka.topic(t.name) for t in TOPICS if t.single}
    assert {len(m["partitions"]) for m in meta if m["topic"] not in single} == {3}
    assert {len(m["partitions"]) for m in meta if m["topic"] in single} == {1}

"""The topic catalogue: every topic wxsub reads or writes, its key, and how it is created.

All topics that are joined share one partition count (``kafka.partitions``), so key K lands on
the same partition number everywhere (Kafka's default murmur2 partitioner, which aiokafka and the
Java client share). Ledgers and changelogs are compacted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from wxsub.errors import SetupError
from wxsub.settings import KafkaSettings
from wxsub.streams.connection import access_denied, client_kwargs

__all__ = [
    "CHANGELOG_STORES",
    "TOPICS",
    "TopicDef",
    "changelog_name",
    "ensure_topics",
    "topic_names",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicDef:
    name: str  # logical name, prefixed with kafka.topic_prefix on the wire
    key: str  # what the record key is
    compacted: bool = False
    retention_ms: int | None = None
    #: one partition, not joined with anything (the live-config tables: one apply is one
    #: ordered transaction, and every worker reads them whole)
    single: bool = False


TOPICS: tuple[TopicDef, ...] = (
    # inputs published by shops (schemas/README.md)
    TopicDef("order-status", "order key appid:order_id"),
    TopicDef("logistics", "order key appid:order_id"),
    # price and stock changes (key appid:sku:<sku_id>) and promotions (key appid:<type>:<id>)
    TopicDef("products", "target key appid:sku:<id> | appid:store:<id> | appid:category:<id>"),
    TopicDef("watches", "target key appid:sku:<id> | appid:store:<id> | appid:category:<id>"),
    TopicDef("preferences", "user key appid:openid"),
    # opens of sent messages (scene 1014), joined to the send by the stats stage
    TopicDef("opened", "user key appid:openid"),
    # produced by the gateway
    TopicDef("subscriptions", "user key appid:openid"),
    # internal
    TopicDef("candidates", "user key appid:openid"),
    TopicDef("intents", "user key appid:openid"),
    TopicDef("corrections", "user key appid:openid"),
    TopicDef("outcomes", "user key or source key"),
    TopicDef("deliveries", "notification id", compacted=True),
    TopicDef("dlq", "source record key", retention_ms=30 * 24 * 3600 * 1000),
    TopicDef("stats", "appid|template|day|partition", compacted=True),
    # live configuration (wxsub.liveconfig): followed whole by every worker
    TopicDef("merchants", "appid", compacted=True, single=True),
    TopicDef("templates", "appid", compacted=True, single=True),
    # service cards (docs/service-cards.md)
    TopicDef("card-ops", "user key appid:openid"),
    TopicDef("card-events", "user key appid:openid"),  # produced by the gateway
    TopicDef("card-results", "order key appid:order_id"),
    # kind pauses (wxsub.agents.rules.pauses): followed whole by every worker
    TopicDef("pauses", "appid|kind", compacted=True, single=True),
)

# stage -> stores; each has a compacted changelog topic
CHANGELOG_STORES: dict[str, tuple[str, ...]] = {
    "orders": ("orders", "pending"),
    "products": ("watches", "fanout"),
    "decide": ("users",),
    "deliver": ("ledger",),
    "stats": ("stats",),
    "cards": ("cards",),
}


def changelog_name(kafka: KafkaSettings, app_id: str, stage: str, store: str) -> str:
    return kafka.topic(f"{app_id}-{stage}-{store}-changelog")


def _all_topics(kafka: KafkaSettings, app_id: str) -> list[NewTopic]:
    out = []
    for t in TOPICS:
        configs: dict[str, str] = {}
        if t.compacted:
            configs["cleanup.policy"] = "compact"
        if t.retention_ms is not None:
            configs["retention.ms"] = str(t.retention_ms)
        out.append(_new(kafka, kafka.topic(t.name), configs, 1 if t.single else None))
    for stage, stores in CHANGELOG_STORES.items():
        for store in stores:
            name = changelog_name(kafka, app_id, stage, store)
            out.append(_new(kafka, name, {"cleanup.policy": "compact"}))
    return out


def _new(
    kafka: KafkaSettings, name: str, configs: dict[str, str], partitions: int | None = None
) -> NewTopic:
    if kafka.min_insync_replicas is not None:
        configs = {**configs, "min.insync.replicas": str(kafka.min_insync_replicas)}
    return NewTopic(
        name=name,
        num_partitions=partitions or kafka.partitions,
        replication_factor=kafka.replication_factor,
        topic_configs=configs,
    )


async def _check_partitions(admin: Any, kafka: KafkaSettings, names: list[str]) -> None:
    """Every existing topic has ``kafka.partitions`` partitions, or SetupError naming it.

    Joins and the check that an event is on its key's partition (murmur2 over
    ``kafka.partitions``) both rely on it; a topic with another count would split keys silently.
    """
    if not names:
        return
    wrong = []
    for desc in await admin.describe_topics(names):
        count = len(desc.get("partitions") or ())
        if count != kafka.partitions:
            wrong.append(f"{desc['topic']} has {count}")
    if wrong:
        raise SetupError(
            f"kafka.partitions is {kafka.partitions} but topic(s) {', '.join(sorted(wrong))}: "
            "every joined topic must have the same count (set kafka.partitions to match, or "
            "recreate the topics; docs/operations.md, scaling)"
        )


def topic_names(kafka: KafkaSettings, app_id: str) -> list[str]:
    """Every topic a worker with ``app_id`` uses (what an operator creates beforehand)."""
    return [t.name for t in _all_topics(kafka, app_id)]


async def ensure_topics(kafka: KafkaSettings, app_id: str) -> list[str]:
    """Create every missing topic with its settings; returns the names created.

    With ``kafka.create_topics = false`` nothing is created: a missing topic is a SetupError
    naming every missing one. An authentication or authorization failure is an
    :class:`~wxsub.streams.connection.AccessDenied` naming the principal and the missing ACL."""
    kw = client_kwargs(kafka)
    admin = AIOKafkaAdminClient(request_timeout_ms=int(kafka.request_timeout_s * 1000), **kw)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        wanted = _all_topics(kafka, app_id)
        single = {kafka.topic(t.name) for t in TOPICS if t.single}
        joined = [t.name for t in wanted if t.name in existing and t.name not in single]
        await _check_partitions(admin, kafka, joined)
        missing = [t for t in wanted if t.name not in existing]
        if missing and not kafka.create_topics:
            names = ", ".join(t.name for t in missing)
            raise SetupError(
                f"kafka.create_topics is false and {len(missing)} topic(s) are missing (or not "
                f"visible: DESCRIBE ACL): {names}; create them with {kafka.partitions} partitions "
                "(docs/operations.md, operator-created topics)"
            )
        if missing:
            try:
                resp = await admin.create_topics(missing)
            except TopicAlreadyExistsError:  # another worker raced us
                resp = None
            for name, code, *_ in getattr(resp, "topic_errors", ()):
                if code not in (0, TopicAlreadyExistsError.errno):
                    raise for_code(code)(f"creating topic {name}")
            log.info("topics created", extra={"topics": [t.name for t in missing]})
        return [t.name for t in missing]
    except Exception as exc:
        denied = access_denied(exc, kw, f"Topic:{kafka.topic_prefix}* (create/describe)")
        if denied is not None:
            raise denied from None
        raise
    finally:
        await admin.close()

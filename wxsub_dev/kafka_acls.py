"""The ACLs each wxsub component needs (least privilege), as ``KafkaAcls.java`` lines.

One source for docs/operations.md's table and for the secured test cluster. A line is
``PRINCIPAL RESOURCE_TYPE PATTERN_TYPE NAME OPERATION`` (an ALLOW rule from any host).

- worker: reads and writes every wxsub topic (inputs, internal topics, changelogs), commits
  offsets of its groups ``<app_id>-<stage>`` inside transactions with ids
  ``<app_id>-<stage>-<partition>``; DESCRIBE_CONFIGS is not needed; CREATE only when it creates
  the topics (``kafka.create_topics = true``, the default).
- gateway: writes ``<prefix>subscriptions`` with an idempotent producer.
- publish (a shop's feed): writes the five input topics with an idempotent producer.
- stats (``wxsub stats``, the worker's /stats needs nothing more than the worker's): reads
  ``<prefix>stats`` without a consumer group.
- operator: creates the topics when the worker does not (``kafka.create_topics = false``).
"""

from __future__ import annotations

__all__ = ["COMPONENTS", "INPUT_TOPICS", "component_acls"]

COMPONENTS = ("worker", "gateway", "publish", "stats", "operator")
INPUT_TOPICS = ("order-status", "logistics", "products", "watches", "preferences", "opened")


def component_acls(
    component: str,
    principal: str,
    topic_prefix: str,
    app_id: str,
    *,
    create_topics: bool = True,
) -> list[str]:
    """The ALLOW rules ``component`` needs, for ``principal`` (``User:name``)."""

    def rule(kind: str, pattern: str, name: str, *ops: str) -> list[str]:
        return [f"{principal} {kind} {pattern} {name} {op}" for op in ops]

    idempotent = rule("CLUSTER", "LITERAL", "kafka-cluster", "IDEMPOTENT_WRITE")
    if component == "worker":
        out = rule("TOPIC", "PREFIXED", topic_prefix, "READ", "WRITE", "DESCRIBE")
        if create_topics:
            out += rule("TOPIC", "PREFIXED", topic_prefix, "CREATE")
        out += rule("GROUP", "PREFIXED", f"{app_id}", "READ")
        out += rule("TRANSACTIONAL_ID", "PREFIXED", f"{app_id}", "WRITE", "DESCRIBE")
        return out + idempotent  # at_least_once producers are idempotent, not transactional
    if component == "gateway":
        return rule("TOPIC", "LITERAL", f"{topic_prefix}subscriptions", "WRITE", "DESCRIBE") + (
            idempotent
        )
    if component == "publish":
        out = []
        for topic in INPUT_TOPICS:
            out += rule("TOPIC", "LITERAL", f"{topic_prefix}{topic}", "WRITE", "DESCRIBE")
        return out + idempotent
    if component == "stats":
        return rule("TOPIC", "LITERAL", f"{topic_prefix}stats", "READ", "DESCRIBE")
    if component == "operator":
        return rule("TOPIC", "PREFIXED", topic_prefix, "CREATE", "DESCRIBE", "ALTER_CONFIGS")
    raise ValueError(f"unknown component {component!r} (known: {', '.join(COMPONENTS)})")

"""A secured three-broker cluster (SASL_SSL, ACLs, replication 3, min ISR 2) per test session.

Started on first use by the tests in this folder only, stopped at the end of the session, pass
or fail. Users: ``admin`` (super user, the operator), ``wxsub`` (a worker with the documented
worker ACLs for topic prefix ``t`` and app ids ``app*``), ``gateway`` (the gateway's ACLs) and
``limited`` (a worker's ACLs minus its consumer group). Each fault test takes the cluster back
to three serving brokers before it hands it on.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from wxsub_dev.kafka_acls import component_acls
from wxsub_dev.kafka_cluster import LocalKafkaCluster

USERS = {"wxsub": "wxsub-pw-1", "gateway": "gateway-pw-2", "limited": "limited-pw-3"}
PREFIX = "t"  # tests/pipeline/harness.py: topic prefix t<uid>., app id app<uid>
APP = "app"
GATEWAY_PREFIX = "tgw."  # the gateway test's kafka.topic_prefix


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalKafkaCluster]:
    with LocalKafkaCluster(users=USERS) as kafka:
        acls = component_acls("worker", "User:wxsub", PREFIX, APP, create_topics=True)
        acls += component_acls("gateway", "User:gateway", GATEWAY_PREFIX, APP)
        acls += [
            line
            for line in component_acls("worker", "User:limited", PREFIX, APP, create_topics=False)
            if " GROUP " not in line
        ]
        kafka.add_acls(acls)
        yield kafka


@pytest.fixture
def healthy_cluster(cluster: LocalKafkaCluster) -> Iterator[LocalKafkaCluster]:
    """The session cluster, with every broker brought back after the test."""
    try:
        yield cluster
    finally:
        for node in cluster.brokers():
            if not node.running:
                cluster.start_node(node.node_id, wait=False)
        cluster.wait_brokers(len(cluster.brokers()), deadline=_in(150))


def _in(seconds: float) -> float:
    import time

    return time.monotonic() + seconds

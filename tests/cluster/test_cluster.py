"""The secured three-broker cluster's tests, collected from one module.

The cases live in ``faults.py`` (broker faults against the oracle) and ``security.py`` (least
privilege, Kafka outages and health). ``make test`` runs pytest-xdist with ``--dist loadfile``,
which keeps one module's tests on one worker: collected here, they share one cluster (the
session fixture in conftest.py) instead of each worker starting its own four JVMs.
"""

from __future__ import annotations

import pytest

from tests.cluster.faults import (
    test_all_broker_faults_in_one_run,
    test_each_broker_fault_in_turn_loses_and_repeats_nothing,
    test_one_broker_fault_alone_loses_and_repeats_nothing,
)
from tests.cluster.security import (
    test_gateway_and_worker_while_kafka_is_down,
    test_worker_lacking_an_acl_fails_with_one_clear_line_and_loses_nothing,
)

pytestmark = pytest.mark.kafka

__all__ = [
    "test_all_broker_faults_in_one_run",
    "test_each_broker_fault_in_turn_loses_and_repeats_nothing",
    "test_gateway_and_worker_while_kafka_is_down",
    "test_one_broker_fault_alone_loses_and_repeats_nothing",
    "test_worker_lacking_an_acl_fails_with_one_clear_line_and_loses_nothing",
]

"""``count`` and ``labelled`` cache labelled metric children and still land in the registry."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram

from wxsub.agents.base import count, labelled


def test_counts_and_observations_reach_the_registry() -> None:
    reg = CollectorRegistry()
    sends = Counter("t_sends_total", "sends", ["result"], registry=reg)
    latency = Histogram("t_latency_seconds", "latency", ["call"], registry=reg)
    count(sends, "sent")
    count(sends, "sent", n=2)
    count(sends, "failed")
    labelled(latency, "send").observe(0.25)
    labelled(latency, "send").observe(0.5)
    assert reg.get_sample_value("t_sends_total", {"result": "sent"}) == 3
    assert reg.get_sample_value("t_sends_total", {"result": "failed"}) == 1
    assert reg.get_sample_value("t_latency_seconds_count", {"call": "send"}) == 2
    assert reg.get_sample_value("t_latency_seconds_sum", {"call": "send"}) == 0.75


def test_counters_only_go_up_and_only_counters_are_counted() -> None:
    reg = CollectorRegistry()
    sends = Counter("t2_sends_total", "sends", ["result"], registry=reg)
    latency = Histogram("t2_latency_seconds", "latency", ["call"], registry=reg)
    with pytest.raises(ValueError, match="only go up"):
        count(sends, "sent", n=-1)
    with pytest.raises(TypeError, match="takes counters"):
        count(latency, "send")
    assert reg.get_sample_value("t2_sends_total", {"result": "sent"}) is None

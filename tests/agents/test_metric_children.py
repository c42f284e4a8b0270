"""``count`` and ``labelled`` cache labelled metric children and still land in the registry;
``tally`` holds counts until the transaction commits."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram

from wxsub.streams.metering import count, labelled, tally
from wxsub.streams.stage import PartitionContext


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


def _commit(ctx: PartitionContext) -> None:
    """What the runtime does after a commit: run the callbacks, then forget them."""
    callbacks, ctx.committed = ctx.committed, []
    for callback in callbacks:
        callback()


def test_tallies_reach_the_counters_only_when_the_transaction_commits() -> None:
    reg = CollectorRegistry()
    intents = Counter("t3_intents_total", "intents", ["kind"], registry=reg)
    ctx = PartitionContext(0, {}, None)  # type: ignore[arg-type]  (no producer: nothing sent)
    tally(ctx, intents, "order_status")
    tally(ctx, intents, "order_status", n=2)
    tally(ctx, intents, "logistics")
    assert reg.get_sample_value("t3_intents_total", {"kind": "order_status"}) is None
    assert len(ctx.committed) == 1  # one callback per transaction, not one per count
    _commit(ctx)
    assert reg.get_sample_value("t3_intents_total", {"kind": "order_status"}) == 3
    assert reg.get_sample_value("t3_intents_total", {"kind": "logistics"}) == 1
    tally(ctx, intents, "order_status")  # the next transaction of the same context
    _commit(ctx)
    assert reg.get_sample_value("t3_intents_total", {"kind": "order_status"}) == 4
    aborted = PartitionContext(0, {}, None)  # type: ignore[arg-type]
    tally(aborted, intents, "order_status", n=10)
    aborted.committed.clear()  # what the runtime does when a transaction aborts
    assert reg.get_sample_value("t3_intents_total", {"kind": "order_status"}) == 4
    with pytest.raises(ValueError, match="only go up"):
        tally(ctx, intents, "order_status", n=-1)

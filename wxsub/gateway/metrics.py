"""The gateway's Prometheus metrics, built against an injected registry.

Labels are low-cardinality only: result, reason, event type. Never an openid or an appid
supplied by the caller (an unknown path must not mint a new series).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from wxsub.errors import RejectReason

__all__ = ["EVENT_LABELS", "RESULTS", "GatewayMetrics", "event_label"]

RESULTS = ("ok", "duplicate", "ignored", "verified", "rejected", "produce_failed")
EVENT_LABELS = {
    "subscribe_msg_popup_event": "popup",
    "subscribe_msg_change_event": "change",
    "subscribe_msg_sent_event": "sent",
    "notify_service_msg_send_result": "card",  # a service card's failure event (card-events)
}


def event_label(event: str) -> str:
    """The metric label of an event name: a subscription or card event, or other."""
    return EVENT_LABELS.get(event, "other")


class GatewayMetrics:
    """All gateway metrics in one object (prefix ``wxsub_gateway_``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "wxsub_gateway_requests",
            "Push requests by result",
            ["result"],
            registry=registry,
        )
        self.rejected = Counter(
            "wxsub_gateway_rejected",
            "Push requests refused, by reason",
            ["reason"],
            registry=registry,
        )
        self.events = Counter(
            "wxsub_gateway_events",
            "Authenticated push messages by event type (other = acknowledged and ignored)",
            ["event"],
            registry=registry,
        )
        self.records = Counter(
            "wxsub_gateway_records",
            "Records produced (one per list item; one per card failure event), by event type",
            ["event"],
            registry=registry,
        )
        self.produce_seconds = Histogram(
            "wxsub_gateway_produce_seconds",
            "Time to get Kafka's acks=all confirmation for one push",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=registry,
        )
        for result in RESULTS:
            self.requests.labels(result)
        for reason in RejectReason:
            self.rejected.labels(reason)
        for label in (*EVENT_LABELS.values(), "other"):
            self.events.labels(label)
        for label in EVENT_LABELS.values():
            self.records.labels(label)

    def reject(self, reason: RejectReason) -> None:
        self.requests.labels("rejected").inc()
        self.rejected.labels(reason).inc()

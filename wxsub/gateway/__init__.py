"""The WeChat message-push gateway: WeChat -> verified, decrypted events -> subscriptions topic."""

from wxsub.gateway.app import PUSH_PATH, SUCCESS, create_gateway_app
from wxsub.gateway.metrics import GatewayMetrics
from wxsub.gateway.producer import RecordSink, SubscriptionProducer
from wxsub.gateway.records import dedupe_key, push_event_id, to_records, to_subscription_events

__all__ = [
    "PUSH_PATH",
    "SUCCESS",
    "GatewayMetrics",
    "RecordSink",
    "SubscriptionProducer",
    "create_gateway_app",
    "dedupe_key",
    "push_event_id",
    "to_records",
    "to_subscription_events",
]

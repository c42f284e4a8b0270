"""The worker's Prometheus metrics, grouped in one object built against an injected registry.

Labels are low-cardinality only (kind, template, result, errcode, reason, stage, appid); never an
openid or any other personal data. appid is the mini program (a handful per deployment).
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["WorkerMetrics"]

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class WorkerMetrics:
    """Every wxsub_ metric of a worker process."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry if registry is not None else CollectorRegistry()
        self.events_in = Counter(
            "wxsub_events_in", "Input events read, by topic and kind", ["topic", "kind"], registry=r
        )
        self.events_invalid = Counter(
            "wxsub_events_invalid",
            "Input events sent to the DLQ, by reason",
            ["topic", "reason"],
            registry=r,
        )
        self.misrouted = Counter(
            "wxsub_events_misrouted",
            "Input events found on a partition their key does not hash to (murmur2), moved to "
            "the right one in the same transaction, by topic",
            ["topic"],
            registry=r,
        )
        self.dlq = Counter(
            "wxsub_dlq", "Records written to the DLQ, by stage", ["stage"], registry=r
        )
        self.candidates = Counter(
            "wxsub_candidates", "Notification candidates produced, by kind", ["kind"], registry=r
        )
        self.outcomes = Counter(
            "wxsub_outcomes",
            "Outcomes by stage, kind and reason",
            ["stage", "kind", "reason"],
            registry=r,
        )
        self.suppressed = Counter(
            "wxsub_suppressed",
            "Notifications not sent, by kind and reason",
            ["kind", "reason"],
            registry=r,
        )
        self.intents = Counter(
            "wxsub_intents",
            "Intents produced, by kind and template",
            ["kind", "template"],
            registry=r,
        )
        self.sends = Counter(
            "wxsub_sends",
            "WeChat sends by result and errcode",
            ["result", "errcode", "template"],
            registry=r,
        )
        self.wechat_latency = Histogram(
            "wxsub_wechat_call_seconds",
            "WeChat API call latency",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.e2e_latency = Histogram(
            "wxsub_end_to_end_seconds",
            "Event time to WeChat accepted the send",
            ["kind"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.credits = Counter(
            "wxsub_credits",
            "Credit changes: granted, consumed, restored, zeroed",
            ["change"],
            registry=r,
        )
        self.in_doubt = Counter(
            "wxsub_in_doubt",
            "Sends whose result is unknown (attempt without final record)",
            ["state"],
            registry=r,
        )
        self.deferred = Gauge(
            "wxsub_deferred_backlog",
            "Timers waiting (quiet hours, collapse, retries), by stage",
            ["stage"],
            registry=r,
        )
        self.token_refreshes = Counter(
            "wxsub_token_refreshes", "Access token fetches, by result", ["result"], registry=r
        )
        self.batches = Counter(
            "wxsub_batches", "Transactions committed, by stage", ["stage"], registry=r
        )
        self.records = Counter(
            "wxsub_records", "Input records processed, by stage", ["stage"], registry=r
        )
        self.lag = Gauge(
            "wxsub_consumer_lag",
            "Records behind the end of the input, by stage",
            ["stage"],
            registry=r,
        )
        self.store_entries = Gauge(
            "wxsub_store_entries",
            "Live entries in a stage's store on this worker (its partitions), counted by the "
            "expiry sweep once per pass (worker.sweep_interval_s), not per event",
            ["stage", "store"],
            registry=r,
        )
        self.expired = Counter(
            "wxsub_expired",
            "Store entries deleted (tombstoned) by expiry, by store and reason",
            ["store", "reason"],
            registry=r,
        )
        self.quota_paused = Gauge(
            "wxsub_quota_paused", "1 while an appid is paused on 45009", ["appid"], registry=r
        )
        self.kind_paused = Gauge(
            "wxsub_kind_paused",
            "1 while a kind is paused for a mini program (43107, 45168, feedback or an operator; "
            "`wxsub pauses`), by appid and kind",
            ["appid", "kind"],
            registry=r,
        )
        self.config_version = Gauge(
            "wxsub_config_version",
            "The live merchant-config version this worker decides with (0: the bootstrap file)",
            registry=r,
        )
        self.kind_disabled = Gauge(
            "wxsub_kind_disabled",
            "1 while a configured kind (or one of its by_status templates) is disabled because "
            "its template at WeChat does not fit the mapping, by appid and kind",
            ["appid", "kind"],
            registry=r,
        )
        self.template_pulls = Counter(
            "wxsub_template_pulls",
            "Template-list pulls from WeChat (gettemplate), by result",
            ["result"],
            registry=r,
        )
        self.cards = Counter(
            "wxsub_cards",
            "Service-card changes by result (activated, updated, failed, fallback, refused, "
            "in_doubt, reconciled, resent, not_visible, retry ...) and reason (errcode)",
            ["result", "reason"],
            registry=r,
        )
        self.card_failures = Counter(
            "wxsub_card_failures",
            "Service-card failure events from WeChat, by fail_ret (-1004 user refused)",
            ["fail_ret"],
            registry=r,
        )
        self.card_saved = Counter(
            "wxsub_card_classic_saved",
            "Classic messages (and their credits) a live service card replaced, by kind",
            ["kind"],
            registry=r,
        )
        # the merchants' funnel (stats stage; deploy/grafana/dashboards/wxsub-merchant.json).
        # Labels are config values only: appid is "other" for an app not in the merchant config
        self.funnel = Counter(
            "wxsub_funnel",
            "Merchant funnel by appid, template, kind and step (granted, sent, opened, "
            "rejected_after_send), counted by the stats stage",
            ["appid", "template", "kind", "step"],
            registry=r,
        )
        self.funnel_suppressed = Counter(
            "wxsub_funnel_suppressed",
            "Notifications that ended without a send, by appid, template, kind and reason",
            ["appid", "template", "kind", "reason"],
            registry=r,
        )
        self.opens = Counter(
            "wxsub_opens",
            "opened events by appid and result (opened, duplicate, unknown_ref)",
            ["appid", "result"],
            registry=r,
        )
        for result in ("activated", "updated", "failed", "fallback", "refused", "in_doubt"):
            self.cards.labels(result, "")
        for fail_ret in ("-1004", "-1005", "-10002"):
            self.card_failures.labels(fail_ret)
        for kind in ("order_status", "logistics"):
            self.card_saved.labels(kind)
        # Rare events start at 0: increase() does not count a series whose first sample is 1.
        for state in ("detected", "resend", "reconciled_sent", "reconciled_failed"):
            self.in_doubt.labels(state)
        for result in ("ok", "failed"):
            self.token_refreshes.labels(result)
        for stage in ("orders", "products", "decide", "deliver"):
            self.dlq.labels(stage)
        for result in ("ok", "failed"):
            self.template_pulls.labels(result)

    def known_apps(self, appids: Iterable[str]) -> None:
        """Create the per-appid series at 0 for the apps this worker sends for."""
        for appid in appids:
            self.quota_paused.labels(appid).set(0)

    def stage_started(self, stage: str) -> None:
        self.deferred.labels(stage).set(0)
        self.lag.labels(stage).set(0)

"""What the observability tests share: the metric catalogue, a driver that sets every metric, the
alert rules as data, and the runbook anchors."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

from wxsub.errors import RejectReason
from wxsub.gateway.metrics import GatewayMetrics
from wxsub.streams.metrics import WorkerMetrics
from wxsub_dev.promcheck import DASHBOARD_FILE, MERCHANT_DASHBOARD_FILE, RULES_FILE

__all__ = [
    "DASHBOARD_FILE",
    "MERCHANT_DASHBOARD_FILE",
    "OPERATIONS_FILE",
    "PROMETHEUS_DIR",
    "RULES_FILE",
    "alert_rules",
    "driven_registries",
    "exposed_metrics",
    "github_anchors",
    "load_yaml",
    "metric_names",
    "selector_labels",
]

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
OPERATIONS_FILE = ROOT / "docs" / "operations.md"

_METRIC = re.compile(r"\b(wxsub_[a-z0-9_]+)\b")
_SELECTOR = re.compile(r"\b(wxsub_[a-z0-9_]+)\{([^}]*)\}")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")


def drive_worker(m: WorkerMetrics) -> None:
    """Touch every worker metric once, with the label values the rules and dashboard filter on."""
    m.events_in.labels("orders", "OrderEvent").inc()
    m.events_in.labels("subscriptions", "SubscriptionEvent").inc()
    m.events_invalid.labels("orders", "schema").inc()
    m.misrouted.labels("order-status").inc()
    m.dlq.labels("orders").inc()
    m.candidates.labels("order_shipped").inc()
    m.outcomes.labels("decide", "order_shipped", "no_credit").inc()
    m.suppressed.labels("order_shipped", "no_credit").inc()
    m.intents.labels("order_shipped", "TPL_SHIPPED").inc()
    m.sends.labels("sent", "0", "TPL_SHIPPED").inc(3)
    m.sends.labels("failed", "40037", "TPL_SHIPPED").inc()
    m.sends.labels("quota", "45009", "TPL_SHIPPED").inc()
    m.sends.labels("retry", "none", "TPL_SHIPPED").inc()
    m.wechat_latency.labels("send").observe(0.08)
    m.wechat_latency.labels("token").observe(0.2)
    m.e2e_latency.labels("order_shipped").observe(1.5)
    for change in ("granted", "consumed", "restored", "zeroed"):
        m.credits.labels(change).inc()
    m.in_doubt.labels("detected").inc()
    m.in_doubt.labels("reconciled_sent").inc()
    m.deferred.labels("decide").set(3)
    m.token_refreshes.labels("ok").inc()
    m.token_refreshes.labels("failed").inc()
    m.batches.labels("orders").inc()
    m.records.labels("orders").inc(5)
    m.lag.labels("orders").set(42)
    m.quota_paused.labels("wxA").set(1)
    m.store_entries.labels("orders", "orders").set(120)
    m.store_entries.labels("deliver", "ledger").set(40)
    m.expired.labels("orders", "order_final").inc(3)
    m.expired.labels("users", "user_empty").inc()
    m.store_entries.labels("cards", "cards").set(6)
    m.expired.labels("cards", "card_activation_window").inc()
    m.expired.labels("stats", "sent_ref_window").inc(2)
    m.quota_paused.labels("wxB").set(0)
    m.config_version.set(7)
    m.kind_disabled.labels("wxA", "logistics").set(1)
    m.kind_paused.labels("wxA", "promotion").set(1)
    m.template_pulls.labels("ok").inc()
    m.cards.labels("activated", "").inc()
    m.cards.labels("fallback", "85433").inc()
    m.cards.labels("failed", "85439").inc()  # the "failed and fallbacks by reason" panel
    m.card_failures.labels("-1004").inc()
    m.card_saved.labels("order_status").inc()
    for step in ("granted", "sent", "opened", "rejected_after_send"):
        m.funnel.labels("wxA", "TPL_SHIPPED", "order_status", step).inc(2 if step == "sent" else 1)
    m.funnel_suppressed.labels("wxA", "TPL_SHIPPED", "order_status", "no_credit").inc()
    m.funnel_suppressed.labels("wxA", "TPL_SHIPPED", "order_status", "capped").inc()
    for result in ("opened", "duplicate", "unknown_ref"):
        m.opens.labels("wxA", result).inc()


def drive_gateway(m: GatewayMetrics) -> None:
    """Touch every gateway metric once."""
    m.requests.labels("ok").inc()
    m.reject(RejectReason.BAD_SIGNATURE)
    m.events.labels("sent").inc()
    m.records.labels("sent").inc(2)
    m.produce_seconds.observe(0.012)


def driven_registries() -> tuple[CollectorRegistry, CollectorRegistry]:
    """Fresh (worker, gateway) registries with every metric driven once."""
    worker, gateway = CollectorRegistry(), CollectorRegistry()
    drive_worker(WorkerMetrics(worker))
    drive_gateway(GatewayMetrics(gateway))
    return worker, gateway


def exposed_metrics(*registries: CollectorRegistry) -> dict[str, set[str]]:
    """Sample name (as exposed: counters with ``_total``) -> its label names."""
    out: dict[str, set[str]] = {}
    for registry in registries:
        for family in registry.collect():
            for sample in family.samples:
                out.setdefault(sample.name, set()).update(sample.labels)
    return out


def metric_names(text: str) -> set[str]:
    return set(_METRIC.findall(text))


def selector_labels(text: str) -> list[tuple[str, str]]:
    """(metric, label name) of every label matcher written in a ``wxsub_...{...}`` selector."""
    return [
        (metric, label)
        for metric, body in _SELECTOR.findall(text)
        for label in _MATCHER.findall(body)
    ]


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alert_rules(path: Path = RULES_FILE) -> list[dict[str, Any]]:
    """Every alerting rule of a Prometheus rules file, in file order."""
    return [r for g in load_yaml(path)["groups"] for r in g["rules"] if "alert" in r]


def github_anchors(markdown: str) -> set[str]:
    """Anchors GitHub makes for the headings: lowercase, punctuation dropped, spaces -> '-'."""
    anchors = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*$", markdown, re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors

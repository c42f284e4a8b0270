"""How long each kind of kept state lives: the ``[apps.<appid>.retention]`` table.

Every store entry and every record of a compacted topic has a lifecycle (docs/lifecycle.md):
what creates it, what ends it, and the retention that bounds it. The retentions a shop may set
are here, with safe defaults; each has a floor that a guarantee needs, and an error that names
the key and the guarantee. The expiry itself is decided by ``wxsub.agents.rules.retention`` and
run by the stages' timers (``wxsub.streams.sweep``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from wxsub.errors import ConfigError

__all__ = [
    "DEFAULT_RETENTION",
    "FINAL_ORDER_STATUSES",
    "MIN_DELIVERY_S",
    "MIN_OPEN_WINDOW_S",
    "Retention",
    "check_receipt_horizon",
    "parse_retention",
]

_DAY = 86_400
#: order statuses after which an order changes no more (``retention.order_s`` applies)
FINAL_ORDER_STATUSES = frozenset({"completed", "cancelled", "refunded"})
#: a ledger entry must outlive any replay of its intent: an intent is read again only from a
#: partition's uncommitted tail after a crash or a rebalance (transaction timeout 60 s)
MIN_DELIVERY_S = 3600
#: a sent message's ref must outlive the time a user plausibly takes to tap a message that has
#: just arrived (and the ``opened`` event's way to wxsub), or a prompt open would be unknown_ref
MIN_OPEN_WINDOW_S = 3600


@dataclass(frozen=True, slots=True)
class Retention:
    """Per-app retentions, in seconds (docs/policies.md, "Retention")."""

    #: an order in a final status is forgotten this long after its last status (event time)
    order_s: int = 30 * _DAY
    #: an order in any other status is forgotten this long after its last status (event time)
    order_idle_s: int = 180 * _DAY
    #: a ledger entry in a final state (sent, failed, in_doubt) is forgotten this long after its
    #: last change (wall clock), with its msgid index entry and a tombstone on ``deliveries``
    delivery_s: int = 7 * _DAY
    #: a watch is forgotten this long after the watch event that set it (event time)
    watch_ttl_s: int = 90 * _DAY
    #: an unwatch is remembered this long (event time); a watch event older than this is refused
    #: as ``stale``, so a late watch older than a forgotten unwatch cannot bring the watch back
    unwatch_s: int = 7 * _DAY
    #: a day's statistics row (store and ``stats`` topic) is forgotten this many days after
    #: that day (in the app's time zone)
    stats_days: int = 400
    #: a sent message's ref is kept this long after the send (wall clock) in the stats stage;
    #: an ``opened`` event for it later is ``unknown_ref``. The window of each ref is fixed at
    #: its send: a change applies to later sends
    open_window_s: int = 7 * _DAY


DEFAULT_RETENTION = Retention()
_KEYS = (
    "order_s",
    "order_idle_s",
    "delivery_s",
    "watch_ttl_s",
    "unwatch_s",
    "stats_days",
    "open_window_s",
)


def parse_retention(key: str, raw: Any, *, stale_s: int) -> Retention:
    """Validate ``[apps.<appid>.retention]`` (``key`` names it); ``stale_s`` is the app's largest
    ``stale_after_s``."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(key, "must be a table")
    for name in raw:
        if name not in _KEYS:
            raise ConfigError(f"{key}.{name}", "unknown setting")
    d = DEFAULT_RETENTION
    values = {name: _int(key, raw, name, getattr(d, name)) for name in _KEYS}
    out = Retention(**values)
    stale_floor = max(stale_s, 1)
    if out.order_s < stale_floor:
        raise ConfigError(
            f"{key}.order_s",
            f"must be >= the largest stale_after_s ({stale_floor}): an order event replayed "
            "after its order is forgotten must be stale, not notify again (dedupe)",
        )
    if out.order_idle_s < out.order_s:
        raise ConfigError(f"{key}.order_idle_s", f"must be >= order_s ({out.order_s})")
    if out.delivery_s < MIN_DELIVERY_S:
        raise ConfigError(
            f"{key}.delivery_s",
            f"must be >= {MIN_DELIVERY_S}: an intent replayed after a crash must find its "
            "ledger entry (at most one send per notification id)",
        )
    if out.unwatch_s > out.watch_ttl_s:
        raise ConfigError(
            f"{key}.unwatch_s",
            f"must be <= watch_ttl_s ({out.watch_ttl_s}): a watch event young enough to be "
            "accepted must not be past its time-to-live already",
        )
    if out.stats_days < 2:
        raise ConfigError(
            f"{key}.stats_days",
            "must be >= 2: a day's row is still counted until the day is over (and its late "
            "outcomes in)",
        )
    if out.open_window_s < MIN_OPEN_WINDOW_S:
        raise ConfigError(
            f"{key}.open_window_s",
            f"must be >= {MIN_OPEN_WINDOW_S}: a message opened soon after it arrived must still "
            "find its send (open attribution)",
        )
    return out


def check_receipt_horizon(
    retentions: Mapping[str, Retention], receipt_window_ms: int, receipt_skew_ms: int
) -> None:
    """Every app's ``delivery_s`` covers the receipt window (the worker checks it at start, as
    the window is a ``[delivery]`` setting): an in-doubt entry forgotten before its receipt can
    arrive could never be reconciled."""
    horizon_s = -(-(receipt_window_ms + receipt_skew_ms) // 1000)
    for appid, retention in retentions.items():
        if retention.delivery_s < horizon_s:
            raise ConfigError(
                f"apps.{appid}.retention.delivery_s",
                f"must be >= delivery.receipt_window_ms + receipt_skew_ms ({horizon_s} s): an "
                "in-doubt send stays in the ledger until its receipt can arrive (in-doubt "
                "reconciliation)",
            )


def _int(key: str, table: Mapping[str, Any], name: str, default: int) -> int:
    raw = table.get(name, default)
    if not isinstance(raw, int) or isinstance(raw, bool) or raw < 1:
        raise ConfigError(f"{key}.{name}", f"must be an integer >= 1; got {raw!r}")
    return raw

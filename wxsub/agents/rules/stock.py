"""Stock-aware restock alerts: who of a SKU's restock watchers is told, in which order.

A restock (stock 0 -> n > 0) tells at most ``AlertConfig.restock_watchers(n)`` watchers
(``ceil(n * restock_factor)``, per merchant; ``restock_limit = false``: every one). They are
served first come, first served: watchers never told of a restock before go first, by watch time
(then openid); a watcher who was told moves behind every watcher told fewer times. The others
stay watching and come first at the next restock. A stock-out (stock -> 0) while a restock's
fan-out is still being continued by the timer stops the rest of it.

State (the products stage's ``watches`` store, beside the watches, co-partitioned by SKU):

- the queue: :func:`queue_key` ``(prefix, served, watched_at, openid)`` -> the watch's key, one
  entry per restock watch; a prefix scan streams it in serving order;
- the back pointer: :func:`pointer_key` ``(watch key)`` -> its queue key, to move or drop it;
- :func:`indexed_key` ``(prefix)`` -> ``{"indexed": bool, "recent": [event ids]}``: whether the
  target's queue is complete (watches stored before the queue existed are indexed by a first
  pass), and its last :data:`RECENT` restock event ids (the same restock again ends as
  ``duplicate``: it must not tell the next watchers);
- :func:`job_key` ``(prefix)`` -> the restock job still running for the target (a stock-out
  deletes it).

Lifecycle: queue entry and pointer are written with the restock watch and deleted with it (an
``unwatch``); an entry whose watch is gone without an ``unwatch`` (retention) is dropped when a
restock meets it. The job pointer lives while its job does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from wxsub.agents.rules.common import outcome
from wxsub.merchants import MerchantConfig
from wxsub.schemas.internal import Outcome, OutcomeReason
from wxsub.schemas.records import ProductStockChanged

__all__ = [
    "KIND",
    "RECENT",
    "duplicate",
    "indexed_key",
    "job_key",
    "parse_queue_key",
    "pointer_key",
    "queue_key",
    "queue_prefix",
    "restock_limit",
    "stock_out",
    "stopped",
]

KIND = "restock"
#: restock event ids remembered per target, for duplicates
RECENT = 16
_Q = "\x03rq|"
_P = "\x03rp|"
_X = "\x03rx|"
_J = "\x03rj|"
_WIDTH = 16


def queue_prefix(prefix: str) -> str:
    """The queue of the target with watch prefix ``prefix`` (``watches.watch_prefix``)."""
    return f"{_Q}{prefix}"


def queue_key(prefix: str, served: int, watched_at: int, openid: str) -> str:
    """Serving order: fewer restocks told first, then earlier watch, then openid."""
    return f"{_Q}{prefix}{served:0{_WIDTH}d}\x1f{max(watched_at, 0):0{_WIDTH}d}\x1f{openid}"


def parse_queue_key(key: str, prefix: str) -> tuple[int, int, str]:
    """(served, watched_at, openid) of a queue key of ``prefix``."""
    served, watched_at, openid = key[len(_Q) + len(prefix) :].split("\x1f", 2)
    return int(served), int(watched_at), openid


def pointer_key(watch_key: str) -> str:
    return f"{_P}{watch_key}"


def indexed_key(prefix: str) -> str:
    return f"{_X}{prefix}"


def job_key(prefix: str) -> str:
    return f"{_J}{prefix}"


def restock_limit(ev: ProductStockChanged, cfg: MerchantConfig | None) -> int | None:
    """How many watchers a restock event may tell; None: every one (no limit, or not a
    restock, or an app not in the merchant config: its candidates end as ``no_template``)."""
    if cfg is None or not ev.old_stock <= 0 < ev.new_stock:
        return None
    return cfg.alerts.restock_watchers(ev.new_stock)


def stock_out(ev: ProductStockChanged) -> bool:
    """Whether the event stops a running restock fan-out of its SKU (the stock is gone)."""
    return ev.new_stock <= 0


def stopped(ev: ProductStockChanged, job: Mapping[str, Any] | None, now_ms: int) -> Outcome:
    """The outcome of a stock-out: ``no_match`` (it tells nobody); the detail names the restock
    fan-out it stopped, if one was still running."""
    detail = "stock out"
    if job is not None:
        detail = f"stock out: stopped a restock fan-out after {job.get('matched', 0)} watchers"
    return outcome(ev.event_id, KIND, OutcomeReason.NO_MATCH, "products", now_ms,
                   appid=ev.appid, detail=detail)  # fmt: skip


def duplicate(ev: ProductStockChanged, now_ms: int) -> Outcome:
    """The outcome of a restock event served before (same event id)."""
    return outcome(ev.event_id, KIND, OutcomeReason.DUPLICATE, "products", now_ms,
                   appid=ev.appid, detail="restock served before")  # fmt: skip

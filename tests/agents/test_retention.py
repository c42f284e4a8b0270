"""Retention: the config (defaults, floors named by key and guarantee) and the pure expiry
decisions, including the remembered unwatch."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from tests.agents.factory import APPID, config
from wxsub.agents.rules import retention as r
from wxsub.agents.rules.orders import OrderState
from wxsub.agents.rules.subscriptions import UserState
from wxsub.agents.rules.watches import on_watch
from wxsub.config_cli import _validated
from wxsub.errors import ConfigError
from wxsub.retention import DEFAULT_RETENTION, check_receipt_horizon
from wxsub.schemas.records import Target, Watch

ROOT = Path(__file__).resolve().parents[2]
DAY = 86_400_000
NOW = 1_750_000_000_000


def test_defaults_and_example_values() -> None:
    cfg = config()
    assert cfg.retention == DEFAULT_RETENTION
    cfg = config(retention={"order_s": 7 * 86_400, "delivery_s": 3600, "unwatch_s": 60})
    assert (cfg.retention.order_s, cfg.retention.delivery_s) == (7 * 86_400, 3600)
    assert DEFAULT_RETENTION.open_window_s == 7 * 86_400
    assert config(retention={"open_window_s": 3600}).retention.open_window_s == 3600


@pytest.mark.parametrize(
    ("table", "key", "says"),
    [
        ({"order_s": 60}, "order_s", "stale_after_s"),
        ({"order_s": 86_400 * 5, "order_idle_s": 86_400 * 4}, "order_idle_s", "order_s"),
        ({"delivery_s": 600}, "delivery_s", "at most one send"),
        ({"watch_ttl_s": 100, "unwatch_s": 200}, "unwatch_s", "watch_ttl_s"),
        ({"unwatch_s": 0}, "unwatch_s", ">= 1"),
        ({"stats_days": 1}, "stats_days", "until the day is over"),
        ({"open_window_s": 3599}, "open_window_s", "open attribution"),
        ({"watch_ttl_s": "1d"}, "watch_ttl_s", "integer"),
        ({"forever": 1}, "forever", "unknown"),
    ],
)
def test_each_floor_names_the_key_and_the_guarantee(
    table: dict[str, Any], key: str, says: str
) -> None:
    with pytest.raises(ConfigError) as err:
        config(retention=table)
    assert err.value.key == f"apps.{APPID}.retention.{key}"
    assert says in str(err.value)


def test_merchants_apply_refuses_a_short_open_window_with_its_line(tmp_path: Path) -> None:
    """``wxsub merchants apply`` validates the file before it publishes anything (the same
    parse): a window below the floor is refused with its key, guarantee and line."""
    text = (ROOT / "deploy" / "merchants.example.toml").read_text(encoding="utf-8")
    assert "open_window_s = 604800" in text
    path = tmp_path / "merchants.toml"
    path.write_text(text.replace("open_window_s = 604800", "open_window_s = 600"), "utf-8")
    with pytest.raises(ConfigError) as err:
        _validated(path)
    assert err.value.key == "apps.wx0123456789abcdef.retention.open_window_s"
    line = text.splitlines().index(
        next(x for x in text.splitlines() if x.startswith("open_window_s"))
    )
    assert f"merchants.toml:{line + 1}" in str(err.value)
    assert "open attribution" in str(err.value)
    merchants, _, _ = _validated(ROOT / "deploy" / "merchants.example.toml")
    app = merchants.app("wx0123456789abcdef")
    assert app is not None and app.retention.open_window_s == 604800


def test_delivery_retention_covers_the_receipt_window() -> None:
    cfg = config(retention={"delivery_s": 3600})
    check_receipt_horizon({APPID: cfg.retention}, 120_000, 5_000)
    with pytest.raises(ConfigError) as err:
        check_receipt_horizon({APPID: cfg.retention}, 3_600_000, 5_000)
    assert err.value.key == f"apps.{APPID}.retention.delivery_s"
    assert "in-doubt reconciliation" in str(err.value)


def _order(status: str, at: int) -> OrderState:
    return OrderState(APPID, "o1", "u1", status, at, "e1")


def test_orders_final_and_idle() -> None:
    cfg = config()
    assert r.order_expired(_order("completed", NOW - 30 * DAY + 1), cfg, NOW) is None
    assert r.order_expired(_order("completed", NOW - 30 * DAY), cfg, NOW) == "order_final"
    assert r.order_expired(_order("shipped", NOW - 30 * DAY), cfg, NOW) is None
    assert r.order_expired(_order("shipped", NOW - 180 * DAY), None, NOW) == "order_idle"


def test_ledger_entries_only_in_final_states() -> None:
    old = NOW - 7 * DAY
    assert r.entry_expired("sent", old, None, NOW) == "delivery_final"
    assert r.entry_expired("in_doubt", old, None, NOW) == "delivery_final"
    assert r.entry_expired("retry", old, None, NOW) is None
    assert r.entry_expired("attempt", old, None, NOW) is None
    assert r.entry_expired("sent", old + 1, None, NOW) is None


def test_users_pruned_then_deleted_when_empty() -> None:
    state = UserState(events={"e1": NOW - 5 * DAY})
    assert r.swept_user(state, None, NOW) == (None, True)
    keep = UserState(credits={"T": 1}, events={"e1": NOW - 5 * DAY})
    new, changed = r.swept_user(keep, None, NOW)
    assert changed and new == UserState(credits={"T": 1})
    fresh = UserState(events={"e1": NOW})
    assert r.swept_user(fresh, None, NOW) == (fresh, False)


def _watch(eid: str, op: str, at: int) -> Watch:
    when = dt.datetime.fromtimestamp(at / 1000, dt.UTC)
    return Watch(eid, when, APPID, "u1", op, Target("sku", "s1"), "price_drop")  # type: ignore[arg-type]


def test_a_remembered_unwatch_beats_a_late_older_watch_and_too_late_is_stale() -> None:
    watch = on_watch(None, None, _watch("w1", "watch", NOW - 3 * DAY), NOW)
    assert watch.watch is not None and watch.outcome.reason == "applied"
    unwatch = on_watch(watch.watch, None, _watch("u1", "unwatch", NOW - DAY), NOW)
    assert unwatch.watch is None and unwatch.unwatched_at == NOW - DAY
    late = on_watch(None, unwatch.unwatched_at, _watch("w0", "watch", NOW - 2 * DAY), NOW)
    assert late.outcome.reason == "regression" and late.watch is None
    assert late.unwatched_at == NOW - DAY
    again = on_watch(None, unwatch.unwatched_at, _watch("w2", "watch", NOW), NOW)
    assert again.watch is not None and again.unwatched_at is None
    old_at = NOW - 7 * DAY
    assert r.watch_too_late(old_at, None, NOW)
    stale = on_watch(None, None, _watch("w9", "watch", old_at), NOW, too_late=True)
    assert stale.outcome.reason == "stale" and stale.watch is None
    assert r.unwatch_expired(NOW - 7 * DAY, None, NOW) == "unwatch_memory"
    assert r.watch_expired({"occurred_at": NOW - 90 * DAY}, None, NOW) == "watch_ttl"


def test_stats_rows_by_day_in_the_apps_zone() -> None:
    cfg = config(retention={"stats_days": 2})
    # NOW is 2025-06-15 15:06 UTC, 23:06 in Shanghai
    assert r.stats_day_expired("2025-06-13", cfg, NOW) == "stats_day"
    assert r.stats_day_expired("2025-06-14", cfg, NOW) is None
    assert r.stats_day_expired("not-a-day", cfg, NOW) is None

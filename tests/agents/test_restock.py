"""Stock-limited restocks on a real RocksDB store: serving order, rotation, stock-out mid-fan-out,
duplicates, watches stored before the queue, config validation, negative stock."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import orjson
import pytest

from wxsub.agents import restock
from wxsub.agents.rules import stock, watches
from wxsub.errors import ConfigError, InputError
from wxsub.merchant_guards import AlertConfig, parse_alerts, parse_pause_thresholds
from wxsub.schemas import encode
from wxsub.schemas.codec import decode_topic
from wxsub.schemas.records import ProductStockChanged, Target, Watch
from wxsub.streams.store import PartitionStore

APP, SKU = "wxapp", "sku1"
PREFIX = watches.watch_prefix(APP, "sku", SKU)
JOB = b"\x02job|"
T0 = 1_717_000_000_000


def _at(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def _watch(store: PartitionStore, openid: str, at: int, op: str = "watch") -> None:
    ev = Watch(f"w-{openid}-{at}", _at(at), APP, openid, op, Target("sku", SKU), "restock")
    key = watches.watch_key(APP, "sku", SKU, openid, "restock").encode()
    raw = store.get(key)
    existing = watches.WatchState.from_dict(orjson.loads(raw)) if raw else None
    new = watches.apply_watch(existing, ev)
    restock.on_watch(store, key, existing, new)  # what the products stage does
    if new is None:
        store.delete(key)
    else:
        store.put(key, orjson.dumps(new))


def _restock(eid: str, old: int = 0, new: int = 3) -> ProductStockChanged:
    return ProductStockChanged(eid, _at(T0), APP, SKU, "卫衣", old, new)


def _run(
    store: PartitionStore, ev: ProductStockChanged, limit: int, chunk: int = 2, steps: int = 99
) -> tuple[list[str], dict[str, Any] | None]:
    """Run a restock's chunks (as the stage and its timer do); the openids told, in order."""
    job = restock.start(store, {"cursor": None, "matched": 0}, ev.event_id, PREFIX, limit)
    assert job is not None
    fan = watches.Fanout(ev, T0)
    told: list[str] = []
    for _ in range(steps):
        docs, more = restock.step(store, fan, PREFIX, job, chunk)
        told += [d["openid"] for d in docs]
        if more is None:
            restock.end_job(store, JOB, ev.event_id.encode(), PREFIX)
            return told, None
        job = {**more, "matched": job["matched"] + len(docs)}
        restock.save_job(store, JOB, ev.event_id.encode(), PREFIX, job)
    return told, job


@pytest.fixture
def store(tmp_path: Path) -> PartitionStore:
    s = PartitionStore("watches", 0, tmp_path / "db")
    yield s
    s.close()


def test_first_come_first_served_then_the_others(store: PartitionStore) -> None:
    # watch times out of openid order: serving follows the watch time
    for n, openid in enumerate(["u5", "u1", "u4", "u2", "u3", "u6", "u0"]):
        _watch(store, openid, T0 - 10_000 + n)
    assert _run(store, _restock("r1"), limit=3)[0] == ["u5", "u1", "u4"]
    # the others stay watching and go first at the next restock; then the told ones again
    assert _run(store, _restock("r2"), limit=5)[0] == ["u2", "u3", "u6", "u0", "u5"]
    assert _run(store, _restock("r3"), limit=3)[0] == ["u1", "u4", "u2"]  # once told: by watch time


def test_unwatch_and_rewatch(store: PartitionStore) -> None:
    for n, openid in enumerate(["a", "b", "c"]):
        _watch(store, openid, T0 - 10_000 + n)
    _watch(store, "a", T0 - 5_000, op="unwatch")
    assert _run(store, _restock("r1"), limit=1)[0] == ["b"]
    _watch(store, "a", T0 - 4_000)  # back at the end of the never-told
    assert _run(store, _restock("r2"), limit=3)[0] == ["c", "a", "b"]
    for openid in "abc":
        _watch(store, openid, T0, op="unwatch")
    assert not list(store.scan(stock.queue_prefix(PREFIX).encode()))
    assert store.get(stock.indexed_key(PREFIX).encode()) is None  # nothing left: state gone


def test_a_stock_out_stops_the_rest(store: PartitionStore) -> None:
    for n in range(10):
        _watch(store, f"u{n}", T0 + n)
    # 5 chunks index the 10 watches (the first restock of the SKU), then 2 chunks tell 4
    told, job = _run(store, _restock("r1", new=8), limit=8, chunk=2, steps=7)
    assert told == ["u0", "u1", "u2", "u3"] and job is not None  # still running
    stopped = restock.stop(store, PREFIX, JOB)
    assert stopped is not None and stopped["matched"] == 4
    assert store.get(JOB + b"r1") is None  # the timer finds nothing to continue
    assert restock.stop(store, PREFIX, JOB) is None
    out = stock.stopped(_restock("r0", old=8, new=0), stopped, T0)
    assert out.reason == "no_match" and "after 4 watchers" in out.detail
    # the watchers not reached stay first in line
    assert _run(store, _restock("r2", new=2), limit=2)[0] == ["u4", "u5"]


def test_a_duplicate_restock_tells_nobody_new(store: PartitionStore) -> None:
    for n in range(4):
        _watch(store, f"u{n}", T0 + n)
    assert _run(store, _restock("r1"), limit=2)[0] == ["u0", "u1"]
    again = {"cursor": None, "matched": 0}
    assert restock.start(store, again, "r1", PREFIX, 2) is None
    assert stock.duplicate(_restock("r1"), T0).reason == "duplicate"


def test_watches_stored_before_the_queue_are_indexed_first(store: PartitionStore) -> None:
    for n, openid in enumerate(["z", "y", "x"]):  # written without the queue (older versions)
        w = watches.WatchState(APP, openid, "sku", SKU, "restock", None, T0 + n, f"w{n}")
        store.put(w.key.encode(), orjson.dumps(w))
    other = watches.WatchState(APP, "p", "sku", SKU, "price_drop", None, T0, "wp")
    store.put(other.key.encode(), orjson.dumps(other))
    assert _run(store, _restock("r1"), limit=2, chunk=1)[0] == ["z", "y"]
    assert _run(store, _restock("r2"), limit=2, chunk=1)[0] == ["x", "z"]


def test_a_small_first_restock_tells_in_its_own_chunk(store: PartitionStore) -> None:
    """Indexing that fits the chunk goes straight on to telling: a stock-out right behind the
    restock (before any timer tick) cannot find it still waiting."""
    for n in range(3):
        w = watches.WatchState(APP, f"u{n}", "sku", SKU, "restock", None, T0 + n, f"w{n}")
        store.put(w.key.encode(), orjson.dumps(w))
    assert _run(store, _restock("r1", new=2), limit=2, chunk=10, steps=1) == (["u0", "u1"], None)


def test_a_watch_gone_without_unwatch_is_dropped_from_the_queue(store: PartitionStore) -> None:
    _watch(store, "a", T0)
    _watch(store, "b", T0 + 1)
    store.delete(watches.watch_key(APP, "sku", SKU, "a", "restock").encode())  # retention
    assert _run(store, _restock("r1"), limit=2)[0] == ["b"]
    assert (
        store.get(stock.pointer_key(watches.watch_key(APP, "sku", SKU, "a", "restock")).encode())
        is None
    )


def test_limit_from_the_merchant_config() -> None:
    assert AlertConfig().restock_watchers(3) == 3  # default factor 1.0
    assert AlertConfig(restock_factor=1.5).restock_watchers(3) == 5  # ceil
    assert AlertConfig(restock_factor=0.1).restock_watchers(1) == 1  # at least one
    assert AlertConfig(restock_limit=False).restock_watchers(3) is None
    assert parse_alerts("k", None) == AlertConfig()
    assert parse_alerts("k", {"restock_factor": 2, "price_collapse_s": 60}).price_collapse_s == 60
    for bad in ({"restock_factor": 0}, {"restock_factor": "2"}, {"restock_limit": 1},
                {"price_collapse_s": -1}, {"other": 1}):  # fmt: skip
        with pytest.raises(ConfigError) as err:
            parse_alerts("apps.wx1.alerts", bad)
        assert err.value.key.startswith("apps.wx1.alerts.")


def test_pause_thresholds_from_the_merchant_config() -> None:
    t = parse_pause_thresholds("k", {"reject_rate": 0.1, "min_sends": 200})
    assert (t.reject_rate, t.min_sends) == (0.1, 200)
    assert parse_pause_thresholds("k", None).min_sends == 50
    for bad in ({"reject_rate": 0}, {"reject_rate": 1.5}, {"min_sends": 1}, {"x": 1}):
        with pytest.raises(ConfigError):
            parse_pause_thresholds("apps.wx1.pauses", bad)


def test_a_negative_stock_is_refused_with_a_reason() -> None:
    raw = orjson.loads(encode(_restock("r1")))
    raw["new_stock"] = -1
    with pytest.raises(InputError) as err:
        decode_topic("products", orjson.dumps(raw))
    assert "new_stock" in str(err.value)  # the DLQ entry's reason names the field

"""A seeded generator of an input event log for the end-to-end oracle test.

``generate(Knobs(now_ms=...))`` returns an :class:`EventLog`: entries in publish order (each with
its logical topic, key and the exact bytes to produce), and the merchant config in two versions
(``tests.pipeline.configs``): ``log.merchants_toml`` decides phases 0 and 1, ``log.changed_toml``
(the tight app's caps raised) phase 2. Quiet hours are placed relative to ``now_ms``.

How to publish it (the oracle is exact only if you do):

1. Publish every ``phase == 0`` entry (subscriptions, preferences, watches), then wait until the
   pipeline has applied them all (one outcome per phase-0 entry that is not a DLQ entry:
   ``log.phase0_outcomes``).
2. Publish the ``phase == 1`` entries in order.
3. Wait for quiescence, then at least ``max(collapse_window_s, orphan_after_s)`` seconds plus one
   timer tick (held logistics, orphans and deferred quiet-hour intents are released by wall-clock
   timers): every outcome and intent of phases 0 and 1 is in.
4. Apply ``log.changed_toml`` (``wxsub merchants apply``), wait until every worker decides with
   the new version (``wxsub_config_version``), publish the ``phase == 2`` entries, and wait as
   in 3. Then compare with :func:`tests.pipeline.oracle.expected`, given the config history
   (version 1 from phase 0, version 2 from phase 2). The boundary is a quiescent point, so which
   version decides an event is not a race.

Why the result cannot depend on cross-partition interleaving (see also oracle.py):

- Per-user state used by decide is only contended where candidates of one user come from
  several source partitions (orders of different order keys, products of different targets).
  Regular users get generous credits (one accept per candidate they could possibly receive) and
  the main app's caps are never reached, so neither credit nor cap depends on that order.
- Scarce credits and caps are exercised only where all the competing candidates come from ONE
  source partition: the ``scarce`` user (one order, 1 credit), the tight app's users (one order,
  or one sku, per user; caps 2 per day); in phase 2 they compete with what phase 1 sent, which
  was all decided before phase 2 is published.
- Preferences, mutes, credits and watches are phase 0, applied before any candidate exists.
- Every order's logistics events form one contiguous block in the log, so consecutive updates of
  an order are decided well within ``collapse_window_s`` of each other: all notifying updates of
  an order collapse into one intent (the oracle assumes exactly that). Likewise a SKU's price
  events (the main app's ``alerts.price_collapse_s`` is ``collapse_window_s``).
- A SKU has few restock watchers (one chunk): a restock's fan-out ends before the SKU's next
  stock event, so a stock-out never stops one midway here (tests/agents/test_restock.py does).
- Logistics published before their order (``late``) are followed closely by the order, far
  inside ``orphan_after_s``; orphan logistics have no order at all.
- Fresh event times lie in the last 150 minutes, stale ones 30 days back, against
  ``stale_after_s`` of 2 days: wall-clock drift during a test cannot change a staleness verdict.
  Quiet-hour events lie in a quiet window that ended 3 hours before ``now_ms``, so their
  release time has passed when they are decided.
"""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import orjson

from tests.pipeline import cards_log
from tests.pipeline.configs import (
    APP_MAIN,
    APP_NONE,
    APP_TIGHT,
    NOTIFY_LOGI,
    NOTIFY_ORDER,
    SENSITIVE,
    TEMPLATES,
    app_config,
    app_doc,
    template_for,
    to_toml,
)
from wxsub.schemas.codec import KINDS, encode
from wxsub.schemas.records import (
    LogisticsUpdated,
    OrderItem,
    OrderStatusChanged,
    PreferenceChanged,
    ProductPriceChanged,
    ProductStockChanged,
    Promotion,
    Record,
    SubscriptionEvent,
    Target,
    Watch,
)

__all__ = [
    "APP_MAIN",
    "APP_NONE",
    "APP_TIGHT",
    "TEMPLATES",
    "Entry",
    "EventLog",
    "Knobs",
    "generate",
    "merchants_doc",
    "merchants_toml",
]

_MSGID = "1234567890123456789"
MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
_NOTIFY_ORDER = NOTIFY_ORDER
_NOTIFY_LOGI = NOTIFY_LOGI


@dataclass(frozen=True)
class Knobs:
    """What to generate. Sizes are approximate; the log is fully determined by the knobs."""

    now_ms: int
    seed: int = 1
    users: int = 120  # regular users of the main app
    orders: int = 260  # orders of regular users
    skus: int = 24
    stores: int = 4
    no_credit_users: int = 6  # no accepts at all: every candidate ends no_credit
    muted_users: int = 4  # order template rejected in settings: muted
    kind_muted_users: int = 4  # logistics kind muted by preference: not_subscribed_kind
    duplicate_rate: float = 0.04  # share of good events published twice (same event_id)
    stale_rate: float = 0.04  # share of orders / product events 30 days old
    late_rate: float = 0.1  # share of orders whose logistics are published before the order
    orphan_orders: int = 8  # logistics blocks whose order never comes
    bad_inputs: int = 30  # raw bytes that must go to the DLQ
    collapse_window_s: int = 20  # written into the merchant config
    orphan_after_s: int = 30  # written into the merchant config
    later_orders: int = 24  # orders of regular users in phase 2 (decided under version 2)


@dataclass(frozen=True)
class Entry:
    """One record to produce: ``raw`` to logical ``topic`` under ``key``."""

    phase: int  # 0: state events, publish and let apply first; 1: the bulk; 2: after the
    # config change (publish once phase 1 is all decided and the new version is live)
    topic: str  # logical topic name (KafkaSettings.topic(name) gives the real one)
    key: str
    raw: bytes
    record: Record | None  # None: bad input, must end in the DLQ
    note: str = ""  # the scenario it belongs to


@dataclass(frozen=True)
class EventLog:
    knobs: Knobs
    entries: tuple[Entry, ...]
    merchants_toml: str  # config version 1: phases 0 and 1
    merchants_doc: dict[str, Any]
    changed_toml: str  # config version 2: phase 2
    changed_doc: dict[str, Any]
    notes: Counter[str] = field(default_factory=Counter)

    @property
    def phase0_outcomes(self) -> int:
        """Outcomes the pipeline emits for phase 0 (one per good phase-0 entry)."""
        return sum(1 for e in self.entries if e.phase == 0 and e.record is not None)

    def phase(self, n: int) -> list[Entry]:
        return [e for e in self.entries if e.phase == n]


def generate(knobs: Knobs) -> EventLog:
    """The event log for ``knobs`` (same knobs, same bytes)."""
    gen = _Gen(knobs)
    gen.build()
    entries = tuple(gen.phase0) + tuple(gen.phase1) + tuple(gen.phase2)
    notes = Counter(e.note for e in entries)
    v1, v2 = merchants_doc(knobs, 1), merchants_doc(knobs, 2)
    return EventLog(knobs, entries, to_toml(v1), v1, to_toml(v2), v2, notes)


def merchants_doc(knobs: Knobs, version: int = 1) -> dict[str, Any]:
    """The merchant config of a generated log: version 1 decides phases 0 and 1, version 2
    (the tight app's caps raised, ``tests.pipeline.configs``) decides phase 2. The card apps
    (WeChat Pay orders: ``cards_log``) are the same in both."""
    doc = app_config(knobs.now_ms, knobs.collapse_window_s, knobs.orphan_after_s, version)
    # successive price drops of a SKU collapse per watcher (the tight app keeps each drop: its
    # watcher exercises the cap); restocks tell at most new_stock watchers (the default)
    doc["apps"][APP_MAIN]["alerts"] = {
        "price_collapse_s": knobs.collapse_window_s,
        "restock_factor": 1.0,
    }
    classic = lambda: app_doc(knobs.collapse_window_s, knobs.orphan_after_s, caps=1000)  # noqa: E731
    doc["apps"].update(cards_log.card_apps(classic))
    return doc


def merchants_toml(knobs: Knobs, version: int = 1) -> str:
    """:func:`merchants_doc` as TOML (the ``worker.merchants`` file, or what is applied)."""
    return to_toml(merchants_doc(knobs, version))


# --- the generator ---------------------------------------------------------------------------

_TITLES = [
    "纯棉短袖T恤",
    "超轻跑步鞋男女同款透气网面减震运动鞋限量版",
    "保温杯 500ml",
    "Wireless Earbuds Pro 2",
    "有机绿茶礼盒装🍵",
    "儿童益智积木玩具套装",
    "北欧风陶瓷餐具四件套",
    "防晒霜SPF50+",
]
_ITEMS = (OrderItem("sku-x", "限量款卫衣", 1),)
_PROMOS = ["五一大促", "会员日全场8折", "新品首发限时特惠活动火热进行中"]
_CARRIERS = ["顺丰速运", "中通快递", "京东物流", "EMS"]


class _Gen:
    """Builds the two phases; tracks the credits each user could need."""

    def __init__(self, knobs: Knobs) -> None:
        self.k = knobs
        self.rng = random.Random(knobs.seed)
        self.phase0: list[Entry] = []
        self.phase1: list[Entry] = []
        self.phase2: list[Entry] = []
        self.seq = 0
        # (appid, openid, template) -> candidates the user could get on it (upper bound)
        self.need: Counter[tuple[str, str, str]] = Counter()
        # (appid, target_type, target_id) -> {(openid, kind)}
        self.watchers: dict[tuple[str, str, str], set[tuple[str, str]]] = defaultdict(set)
        self.regular = [f"u{i:04d}" for i in range(knobs.users)]
        self.poor = [f"poor{i:02d}" for i in range(knobs.no_credit_users)]
        self.muted = [f"mute{i:02d}" for i in range(knobs.muted_users)]
        self.kind_muted = [f"kmute{i:02d}" for i in range(knobs.kind_muted_users)]
        self.quiet_at = knobs.now_ms - 4 * HOUR  # inside the quiet window (5h..3h ago)

    # -- helpers --

    def eid(self, prefix: str) -> str:
        self.seq += 1
        return f"{prefix}-{self.k.seed}-{self.seq:06d}"

    def fresh(self) -> int:
        return self.k.now_ms - self.rng.randint(2 * MIN, 150 * MIN)

    def emit(self, phase: int, record: Record, note: str, dup_ok: bool = True) -> None:
        kind = KINDS[_kind_name(record)]
        out = (self.phase0, self.phase1, self.phase2)[phase]
        entry = Entry(phase, kind.topic, record.key, encode(record), record, note)
        out.append(entry)
        if dup_ok and phase > 0 and self.rng.random() < self.k.duplicate_rate:
            out.append(Entry(phase, kind.topic, record.key, entry.raw, record, note + "+dup"))

    # -- scenarios --

    def build(self) -> None:
        self.watches()
        self.orders()
        self.products()
        self.tight()
        cards_log.build(self, TEMPLATES)
        self.later()
        self.subscriptions()
        self.bad_inputs()

    def watches(self) -> None:
        users = self.regular + self.poor + self.muted + self.kind_muted
        for sku in range(self.k.skus):
            for openid in self.rng.sample(users, k=min(len(users), self.rng.randint(3, 12))):
                kind = self.rng.choice(["price_drop", "price_drop", "restock"])
                target_price = self.rng.choice([None, None, 1500]) if kind == "price_drop" else None
                self.watch(APP_MAIN, openid, Target("sku", f"sku{sku:03d}"), kind, target_price)
        for store in range(self.k.stores):
            for openid in self.rng.sample(users, k=min(len(users), 8)):
                self.watch(APP_MAIN, openid, Target("store", f"st{store}"), "promotion", None)
        # a watch then an unwatch: no longer a watcher; then an older unwatch: regression
        openid = self.regular[0]
        target = Target("sku", "sku-unwatched")
        self.watch(APP_MAIN, openid, target, "price_drop", None)
        self.phase0.append(self._watch_entry(APP_MAIN, openid, target, "price_drop", "unwatch"))
        self.watchers[(APP_MAIN, "sku", "sku-unwatched")] = set()  # its events: no_match
        # a late watch older than that unwatch: the remembered unwatch beats it (regression)
        late = Watch(self.eid("w"), _at(self.k.now_ms - 5 * HOUR - 30 * MIN), APP_MAIN, openid,
                     "watch", target, "price_drop")  # fmt: skip
        self.emit(0, late, "watch-regression")
        # a watch older than every unwatch_s: refused as stale
        ancient = Watch(self.eid("w"), _at(self.k.now_ms - 10 * DAY), APP_MAIN, openid,
                        "watch", Target("sku", "sku-ancient"), "price_drop")  # fmt: skip
        self.emit(0, ancient, "watch-stale")
        t = self.k.now_ms - DAY
        self.watch(APP_MAIN, openid, Target("sku", "sku000"), "restock", None)
        old = Watch(
            self.eid("w"), _at(t), APP_MAIN, openid, "unwatch", Target("sku", "sku000"), "restock"
        )
        self.emit(0, old, "watch-regression")

    def watch(self, appid: str, openid: str, target: Target, kind: str, price: int | None) -> None:
        at = _at(self.k.now_ms - 6 * HOUR + len(self.phase0) * 1000)  # watch times differ
        rec = Watch(self.eid("w"), at, appid, openid, "watch", target, kind, price)
        self.emit(0, rec, "watch")
        self.watchers[(appid, target.type, target.id)].add((openid, kind))

    def _watch_entry(self, appid: str, openid: str, target: Target, kind: str, op: str) -> Entry:
        rec = Watch(self.eid("w"), _at(self.k.now_ms - 5 * HOUR), appid, openid, op, target, kind)
        return Entry(0, KINDS["watch"].topic, rec.key, encode(rec), rec, "unwatch")

    def orders(self) -> None:
        owners = self.regular + self.poor + self.muted + self.kind_muted
        blocks: list[list[tuple[Record, str]]] = []
        for n in range(self.k.orders):
            openid = owners[n % len(owners)]
            blocks += self.order_blocks(APP_MAIN, openid, f"ord{n:05d}")
        for n in range(self.k.orphan_orders):
            events = self.logistics_block(APP_MAIN, f"orphan{n:03d}", self.fresh(), f"SF9{n:08d}")
            blocks.append([(e, "orphan") for e in events])
        blocks += self.order_blocks(APP_NONE, "x-user", "unknown-app-order")
        blocks += self.scarce()
        self.interleave(1, blocks)

    def interleave(self, phase: int, blocks: list[list[tuple[Record, str]]]) -> None:
        """Emit the blocks interleaved, keeping each block's internal order."""
        queues = [list(b) for b in blocks if b]
        while queues:
            i = self.rng.randrange(len(queues))
            rec, note = queues[i].pop(0)
            self.emit(phase, rec, note)
            if note == "late-logistics":  # logistics then the order, in one piece
                while queues[i]:
                    self.emit(phase, *queues[i].pop(0))
            elif isinstance(rec, LogisticsUpdated):  # a logistics block goes out in one piece
                while queues[i] and isinstance(queues[i][0][0], LogisticsUpdated):
                    self.emit(phase, *queues[i].pop(0))
            if not queues[i]:
                queues.pop(i)

    def order_blocks(
        self, appid: str, openid: str, order_id: str
    ) -> list[list[tuple[Record, str]]]:
        """One order's status events and its logistics block, in a publishable order."""
        stale = self.rng.random() < self.k.stale_rate
        t0 = self.k.now_ms - 30 * DAY if stale else self.k.now_ms - 150 * MIN
        path = self.rng.choice(
            [
                ["created", "paid", "shipped", "delivered", "completed"],
                ["created", "paid", "cancelled"],
                ["created", "paid", "shipped", "delivered", "refunding", "refunded"],
                ["created", "paid", "shipped"],
            ]
        )
        amount = self.rng.choice([990, 12_50, 25_990, 100_000, 0])
        items = (OrderItem("sku001", self.rng.choice(_TITLES), self.rng.randint(1, 3)),)
        note = "stale-order" if stale else "order"
        statuses: list[tuple[Record, str]] = []
        t = t0
        prev = None
        for status in path:
            t += self.rng.randint(1, 5) * MIN
            rec = OrderStatusChanged(
                self.eid("os"),
                _at(t),
                appid,
                openid,
                order_id,
                status,
                amount,
                previous_status=prev,
                items=items,
            )
            statuses.append((rec, note))
            prev = status
            if status in _NOTIFY_ORDER:  # a duplicate never takes a credit
                self.need[(appid, openid, template_for("order_status", status))] += 1
        if len(statuses) > 2 and self.rng.random() < 0.08:  # an older status published late
            statuses.append((statuses[1][0], "regression"))
        blocks = [statuses]
        if "shipped" in path:
            long_waybill = self.rng.random() < 0.03
            waybill = ("W" * 40) if long_waybill else f"SF{self.rng.randrange(10**10):010d}"
            logi = self.logistics_block(appid, order_id, t0 + 20 * MIN, waybill)
            lnote = (
                "invalid-waybill" if long_waybill else ("stale-logistics" if stale else "logistics")
            )
            for e in logi:
                if e.state in _NOTIFY_LOGI:
                    self.need[(appid, openid, template_for("logistics", e.state))] += 1
            if self.rng.random() < self.k.late_rate:
                blocks = [[(e, "late-logistics") for e in logi] + statuses]
            else:
                blocks.append([(e, lnote) for e in logi])
        return blocks

    def logistics_block(
        self, appid: str, order_id: str, t: int, waybill: str
    ) -> list[LogisticsUpdated]:
        carrier = self.rng.choice(_CARRIERS)
        states = self.rng.choice(
            [
                ["picked_up", "in_transit", "out_for_delivery", "delivered"],
                ["picked_up", "in_transit", "exception"],
                ["picked_up", "in_transit"],
                ["out_for_delivery", "delivered"],
            ]
        )
        out = []
        for state in states:
            t += self.rng.randint(1, 10) * MIN
            out.append(
                LogisticsUpdated(
                    self.eid("lg"),
                    _at(t),
                    appid,
                    order_id,
                    waybill,
                    carrier,
                    state,
                    location="上海",
                )
            )
        return out

    def scarce(self) -> list[list[tuple[Record, str]]]:
        """One user, one order, one credit: the first notifying status wins."""
        blocks = []
        t = self.fresh() - 30 * MIN
        for i, status in enumerate(["created", "paid", "shipped", "delivered"]):
            rec = OrderStatusChanged(
                self.eid("os"),
                _at(t + i * MIN),
                APP_MAIN,
                "scarce",
                "ord-scarce",
                status,
                5000,
                items=_ITEMS,
            )
            blocks.append((rec, "scarce"))
        self.phase0_accept(APP_MAIN, "scarce", TEMPLATES["order_status"], 1, "scarce-credit")
        return [blocks]

    def products(self) -> None:
        keys = [k for k in self.watchers if k[0] == APP_MAIN and k[1] == "sku"]
        for appid, _, sku in sorted(keys):
            title = self.rng.choice(_TITLES)
            if sku == "sku001":
                title = f"{SENSITIVE}主题桌游"  # every watcher: content_blocked
            self.sku_events(appid, sku, title)
        for store in range(self.k.stores):
            for n in range(2):
                quiet = n == 1 and store % 2 == 0
                t = self.quiet_at if quiet else self.fresh()
                rec = Promotion(
                    self.eid("pr"),
                    _at(t),
                    APP_MAIN,
                    f"promo{store}-{n}",
                    self.rng.choice(_PROMOS),
                    _at(self.k.now_ms),
                    _at(self.k.now_ms + 3 * DAY),
                    Target("store", f"st{store}"),
                )
                self.count_fanout(APP_MAIN, "store", f"st{store}", "promotion")
                self.emit(1, rec, "promotion-quiet" if quiet else "promotion")

    def sku_events(self, appid: str, sku: str, title: str) -> None:
        stale = self.rng.random() < self.k.stale_rate
        prices = [3000, 2500, 2600, 1500, 1200]  # drop, rise, drop to the 1500 target, drop
        for i in range(len(prices) - 1):
            quiet = i == 0 and self.rng.random() < 0.3
            t = self.k.now_ms - 30 * DAY if stale else (self.quiet_at if quiet else self.fresh())
            rec = ProductPriceChanged(
                self.eid("pp"), _at(t), appid, sku, title, prices[i], prices[i + 1]
            )
            self.count_fanout(appid, "sku", sku, "price_drop")
            self.emit(1, rec, "price-quiet" if quiet else ("price-stale" if stale else "price"))
        # stock-limited restocks: 1 watcher (the earliest), stock-out, then the next 2
        for old, new in [(0, 1), (1, 0), (0, 2), (2, 1)]:
            rec = ProductStockChanged(
                self.eid("ps"), _at(self.fresh()), appid, sku, title, old, new
            )
            self.count_fanout(appid, "sku", sku, "restock")
            self.emit(1, rec, "stock")

    def count_fanout(self, appid: str, ttype: str, tid: str, kind: str) -> None:
        for openid, wkind in self.watchers.get((appid, ttype, tid), ()):
            if wkind == kind:
                self.need[(appid, openid, TEMPLATES[kind])] += 1

    def tight(self) -> None:
        """The tight app: caps of 2 per class per day (version 1), contested within one
        partition only."""
        t = self.fresh() - 60 * MIN
        for i, status in enumerate(["paid", "shipped", "delivered", "refunded"]):
            rec = OrderStatusChanged(
                self.eid("os"),
                _at(t + i * MIN),
                APP_TIGHT,
                "tight-buyer",
                "tight-order",
                status,
                777,
                items=_ITEMS,
            )
            self.emit(1, rec, "tight-order", dup_ok=False)
        self.phase0_accept(APP_TIGHT, "tight-buyer", TEMPLATES["order_status"], 10, "tight-credit")
        self.watch(APP_TIGHT, "tight-watcher", Target("sku", "tight-sku"), "price_drop", None)
        for i, (old, new) in enumerate([(900, 800), (800, 700), (700, 600), (600, 500)]):
            rec = ProductPriceChanged(
                self.eid("pp"),
                _at(self.fresh() + i),
                APP_TIGHT,
                "tight-sku",
                "限量款卫衣",
                old,
                new,
            )
            self.emit(1, rec, "tight-price", dup_ok=False)
        self.phase0_accept(APP_TIGHT, "tight-watcher", TEMPLATES["price_drop"], 10, "tight-credit")

    def later(self) -> None:
        """Phase 2, decided under config version 2 (the tight app's caps raised from 2 to 3):
        more orders of regular users, and the tight users' next events, of which one each now
        gets through."""
        blocks = []
        for n in range(self.k.later_orders):
            openid = self.regular[(7 * n) % len(self.regular)]
            blocks += self.order_blocks(APP_MAIN, openid, f"later{n:05d}")
        self.interleave(2, blocks)
        t = self.fresh()
        for i, status in enumerate(["paid", "shipped", "delivered"]):
            rec = OrderStatusChanged(self.eid("os"), _at(t + i * MIN), APP_TIGHT, "tight-buyer",
                                     "tight-order-2", status, 888, items=_ITEMS)  # fmt: skip
            self.emit(2, rec, "tight-order-v2", dup_ok=False)
        for i, (old, new) in enumerate([(500, 400), (400, 300)]):
            price = ProductPriceChanged(self.eid("pp"), _at(self.fresh() + i), APP_TIGHT,
                                        "tight-sku", "限量款卫衣", old, new)  # fmt: skip
            self.emit(2, price, "tight-price-v2", dup_ok=False)

    def phase0_accept(self, appid: str, openid: str, template: str, n: int, note: str) -> None:
        for _ in range(n):
            rec = SubscriptionEvent(
                self.eid("sub"),
                _at(self.k.now_ms - 8 * HOUR),
                appid,
                openid,
                "popup",
                template,
                (self.k.now_ms - 8 * HOUR) // 1000,
                "accept",
                popup_scene=0,
            )
            self.emit(0, rec, note)

    def subscriptions(self) -> None:
        t = self.k.now_ms - 7 * HOUR
        for (appid, openid, template), n in sorted(self.need.items()):
            if appid != APP_MAIN or openid in self.poor or openid == "scarce":
                continue
            self.phase0_accept(appid, openid, template, n, "credit")
        for openid in self.muted:
            self.phase0_accept(APP_MAIN, openid, TEMPLATES["order_status"], 1, "credit")
            rec = SubscriptionEvent(
                self.eid("sub"),
                _at(t),
                APP_MAIN,
                openid,
                "change",
                TEMPLATES["order_status"],
                t // 1000,
                "reject",
            )
            self.emit(0, rec, "template-muted")
        for openid in self.kind_muted:
            pref = PreferenceChanged(self.eid("pf"), _at(t), APP_MAIN, openid, "mute", "logistics")
            self.emit(0, pref, "kind-muted")
        # a duplicate accept (same event id): applied once, then duplicate
        dup = SubscriptionEvent(
            self.eid("sub"),
            _at(t),
            APP_MAIN,
            self.regular[1],
            "popup",
            TEMPLATES["restock"],
            t // 1000,
            "accept",
        )
        self.emit(0, dup, "sub-dup")
        self.emit(0, dup, "sub-dup")
        for openid in self.regular[:5]:
            sent = SubscriptionEvent(
                self.eid("sub"),
                _at(t),
                APP_MAIN,
                openid,
                "sent",
                TEMPLATES["order_status"],
                t // 1000,
                msgid=_MSGID,
                error_code=0,
                error_status="success",
            )
            self.emit(0, sent, "sent-receipt")
        # no shuffle: one user's subscription events must keep this order (accepts, then reject)

    def bad_inputs(self) -> None:
        order = next(e.record for e in self.phase1 if isinstance(e.record, OrderStatusChanged))
        good = orjson.loads(encode(order))
        samples: list[tuple[str, bytes]] = [
            ("order-status", b'{"type": "order_status", "v": 1, '),
            ("logistics", b"\xff\xfe not utf-8 \xc3"),
            ("order-status", orjson.dumps({**good, "status": "teleported"})),
            ("order-status", orjson.dumps({k: v for k, v in good.items() if k != "openid"})),
            ("order-status", orjson.dumps({**good, "v": 2})),
            ("products", orjson.dumps({**good, "type": "bogus"})),
            ("watches", b"[1, 2, 3]"),
            ("subscriptions", b"null"),
            ("preferences", b'{"type": "preference", "v": 1}'),
            ("order-status", orjson.dumps({**good, "padding": "x" * 70_000})),
        ]
        for n in range(self.k.bad_inputs):
            topic, raw = samples[n % len(samples)]
            entry = Entry(1, topic, f"bad-{n}", raw, None, "bad")
            self.phase1.insert(self.rng.randrange(len(self.phase1) + 1), entry)


def _kind_name(record: Record) -> str:
    for name, kind in KINDS.items():
        if isinstance(record, kind.record):
            return name
    raise TypeError(type(record))


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _at(ms: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(milliseconds=ms)

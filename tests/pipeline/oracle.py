"""The oracle: from an input event log and the merchant config history, the exact intents and
outcomes, each with the config version that decided it.

It runs the same pure rule functions as the pipeline (``wxsub.agents.rules``), sequentially, in
publish order, with one ``now_ms`` for every decision, then fires every timer (held logistics,
quiet-hour deferrals, orphans) as if all their times had passed. It checks the streaming
machinery (partitioning, joins, exactly-once, state stores, timers), not the rules themselves:
those are checked against hand-written cases in tests/agents.

Compare a pipeline run with it like this::

    v1 = at_version(parse_merchants(log.merchants_doc), 1)
    v2 = at_version(parse_merchants(log.changed_doc), 2)
    exp = expected(log.entries, v1, now_ms=log.knobs.now_ms, changes={2: v2})
    assert {i.notification_id: (i.body, i.event_ids, i.config_version)
            for i in pipeline_intents} == exp.bodies()
    assert outcome_counter(o for o in pipeline_outcomes if o.stage in RULE_STAGES) == exp.outcomes
    assert dlq_count == exp.dlq

The config history: ``changes`` maps a phase of the log to the config that decides from its
first entry on (``merchants`` decides before). The moment a worker switches config relative to
events in flight is not deterministic, so a test makes the switch at a quiescent point: every
outcome and intent of the earlier phases is in (timers included) before it applies the new
version, and it publishes the next phase only once every worker reports that version
(``wxsub_config_version``). The oracle does the same: at a phase boundary it fires every timer
that is due within the hour (every window of a generated log is far shorter), then swaps the
config. Outcomes and intents are compared with their ``config_version``; the versions come from
the configs (``at_version``), as ``wxsub merchants apply`` stamps them.

Which parts depend on the wall clock, and how a test drives them:

- restocks tell at most ``alerts.restock_watchers(new_stock)`` watchers in serving order
  (rules/stock.py); a stock-out is modelled as arriving after the restock's fan-out ended;
- staleness (``now - occurred_at > stale_after_s``): the generator keeps a margin of days on
  both sides, so any ``now_ms`` within hours of the log's gives the same verdicts;
- collapse: the oracle folds every notifying logistics update of an order into one intent
  (latest event time wins). The pipeline does the same only if consecutive updates of an order
  are decided within ``collapse_window_s`` of each other (the generator keeps each order's
  logistics contiguous) and the test waits ``collapse_window_s`` + a timer tick at the end;
- quiet hours are decided on event time; the release time is in the past for generated logs,
  so the pipeline releases them at its first timer tick;
- orphans: the pipeline needs ``orphan_after_s`` + a tick after the last logistics event;
- kind pauses (``pauses``: (appid, kind) -> reason, by phase, like ``changes``): decide ends a
  paused kind's candidates as ``paused`` before a credit is spent. A test switches them at the
  same quiescent points as config (``wxsub pauses set``/``lift`` between phases, the next phase
  published once every worker's ``wxsub_kind_paused`` shows it);
- the deliver stage's send-time guards (rules/guards.py: staleness and quiet hours on the wall
  clock of the send) act after the intents predicted here: ``tests/pipeline/sendtime.py``
  models them, and the stats and opens after them, from *bounds* on the send times (deliver
  starts after the quiet window began and reads its backlog long before the window ends; a
  deferred send is released at the window's end, within a bound). It runs the guards at both
  ends of each bound and refuses (``Ambiguous``) a send whose verdict the bounds leave open, so
  a test is deterministic by construction or fails the oracle itself
  (tests/pipeline/test_guards_e2e.py: the quiet window and the promotions' ``stale_after_s``
  are set from the wall clock in the config of the last phase, before the deliver worker
  starts). For the other pipeline tests the generated logs are fresh by days and their quiet
  window ended hours before ``now_ms``, so every intent passes the guards;
- corrections from delivery (43101, refused sends) are not modelled: the sandbox must accept
  every send during the comparison, or the comparison must stop at intents before delivery
  feeds corrections back (they only matter to later candidates of the same user).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from wxsub.agents.rules import cards, orders, retention, stock, subscriptions, watches
from wxsub.agents.rules import decide as dec
from wxsub.agents.rules.common import to_ms
from wxsub.agents.rules.history import RELEASED, Decided, decisions
from wxsub.agents.rules.orders import OrderState, PendingLogistics
from wxsub.agents.rules.subscriptions import UserState
from wxsub.agents.rules.watches import WatchState
from wxsub.errors import InputError
from wxsub.merchants import Merchants
from wxsub.schemas.codec import DEFAULT_MAX_BYTES, decode_topic
from wxsub.schemas.internal import Candidate, Intent, Outcome, user_key
from wxsub.schemas.records import (
    LogisticsUpdated,
    OrderStatusChanged,
    PreferenceChanged,
    ProductPriceChanged,
    ProductStockChanged,
    Promotion,
    Record,
    SubscriptionEvent,
    Watch,
)

__all__ = [
    "RULE_STAGES",
    "Expected",
    "OutcomeKey",
    "at_version",
    "expected",
    "outcome_counter",
    "outcome_key",
]

#: the stages whose outcomes the oracle predicts (deliver's sent/failed are not among them)
RULE_STAGES = frozenset({orders.STAGE, watches.STAGE, dec.STAGE})
#: far enough in the future for every timer to have fired
_FOREVER = 10**15
#: at a config change, timers due within this of ``now_ms`` fire (every window of a generated
#: log is far shorter; nothing the rules remember expires within hours)
_BOUNDARY_MS = 3_600_000

OutcomeKey = tuple[str, str, str, str, int]  # (event_id, appid, openid, reason, config_version)


def outcome_key(o: Outcome) -> OutcomeKey:
    return (o.event_id, o.appid, o.openid, o.reason, o.config_version)


def at_version(merchants: Merchants, version: int) -> Merchants:
    """``merchants`` as live-config ``version`` (what ``wxsub merchants apply`` stamps)."""
    return Merchants({a: replace(cfg, version=version) for a, cfg in merchants.apps.items()})


def outcome_counter(outcomes: Iterable[Outcome]) -> Counter[OutcomeKey]:
    """The multiset an outcome stream is compared by (an event may end twice: duplicates)."""
    return Counter(outcome_key(o) for o in outcomes)


class _LogEntry(Protocol):
    @property
    def phase(self) -> int: ...
    @property
    def topic(self) -> str: ...
    @property
    def raw(self) -> bytes: ...


@dataclass
class Expected:
    """What the pipeline must produce for a log."""

    intents: dict[str, Intent] = field(default_factory=dict)  # by notification id
    outcomes: Counter[OutcomeKey] = field(default_factory=Counter)
    dlq: int = 0
    all_outcomes: list[Outcome] = field(default_factory=list)  # in decision order, for debugging
    # user key -> the decisions kept in the user's state (rules/history.py), timer releases last
    histories: dict[str, list[Decided]] = field(default_factory=dict)
    #: (appid, transaction id) -> the service-card states WeChat must have accepted, in order
    #: (every card call succeeds: the generated log's payments are all registered and on time)
    cards: dict[tuple[str, str], list[int]] = field(default_factory=lambda: defaultdict(list))
    #: events whose classic candidate is still held for a card's activation at the end (only
    #: without the card stage: ``expected(card_stage=False)``): no outcome, no intent
    held: set[str] = field(default_factory=set)

    def bodies(self) -> dict[str, tuple[dict[str, Any], tuple[str, ...], int]]:
        """Notification id -> (send body, source event ids, config version): what intents are
        compared by."""
        return {nid: (i.body, i.event_ids, i.config_version) for nid, i in self.intents.items()}

    def reasons(self) -> Counter[str]:
        return Counter(key[3] for key in self.outcomes.elements())

    def versions(self) -> Counter[int]:
        """How many outcomes and intents each config version decided."""
        out = Counter(key[4] for key in self.outcomes.elements())
        out.update(i.config_version for i in self.intents.values())
        return out

    def accounted_event_ids(self) -> set[str]:
        ids = {key[0] for key in self.outcomes}
        for intent in self.intents.values():
            ids.update(intent.event_ids)
        return ids


def expected(
    log: Sequence[_LogEntry],
    merchants: Merchants,
    now_ms: int,
    max_bytes: int = DEFAULT_MAX_BYTES,
    changes: Mapping[int, Merchants] | None = None,
    card_stage: bool = True,
    pauses: Mapping[int, Mapping[tuple[str, str], str]] | None = None,
) -> Expected:
    """Run the rules over ``log`` (entries with ``phase``, ``topic`` and ``raw``) in publish
    order; ``merchants`` decides until a phase of ``changes`` begins, that phase's config from
    then on (timers due by then fire first: see the module docstring). ``pauses`` likewise:
    from its phase on, the kind pauses in force ((appid, kind) -> reason; none before).
    ``card_stage``: the deployment runs the card stage (every card is activated; without it,
    the classic candidates the orders stage holds while a card's activation is pending never
    end: no outcome)."""
    sim = _Sim(merchants, now_ms, card_stage)
    pending_changes = dict(changes or {})
    pending_pauses = dict(pauses or {})
    for entry in log:
        if entry.phase in pending_changes or entry.phase in pending_pauses:
            sim.timers(now_ms + _BOUNDARY_MS)
            sim.m = pending_changes.pop(entry.phase, sim.m)
            sim.paused = pending_pauses.pop(entry.phase, sim.paused)
        try:
            record = decode_topic(entry.topic, entry.raw, max_bytes)
        except InputError:
            sim.out.dlq += 1
            continue
        sim.feed(record)
    sim.finish()
    for order in sim.orders.values():
        if order is not None:
            sim.out.held.update(h.candidate.event_id for h in order.card_held)
    return sim.out


class _Sim:
    """The pipeline's state, in dicts: orders and pending by order key, watches, users."""

    def __init__(self, merchants: Merchants, now_ms: int, card_stage: bool = True) -> None:
        self.m = merchants
        self.now = now_ms
        self.card_stage = card_stage
        self.paused: Mapping[tuple[str, str], str] = {}  # (appid, kind) -> why, in force
        self.orders: dict[str, OrderState | None] = {}
        self.pending: dict[str, tuple[PendingLogistics, ...]] = {}
        self.watches: dict[tuple[str, str, str], dict[str, WatchState]] = defaultdict(dict)
        # restock serving queue (rules/stock.py): watch key -> (times told, first watch time)
        self.queue: dict[tuple[str, str, str], dict[str, tuple[int, int]]] = defaultdict(dict)
        self.restocked: dict[tuple[str, str, str], list[str]] = defaultdict(list)  # recent ids
        self.users: dict[str, UserState] = {}
        self.unwatched: dict[str, int] = {}  # watch key -> event time of the remembered unwatch
        self.out = Expected()

    # -- outputs --

    def outcome(self, o: Outcome) -> None:
        self.out.outcomes[outcome_key(o)] += 1
        self.out.all_outcomes.append(o)

    def intent(self, i: Intent) -> None:
        assert i.notification_id not in self.intents_seen(), "the rules minted an id twice"
        self.out.intents[i.notification_id] = i

    def intents_seen(self) -> Mapping[str, Intent]:
        return self.out.intents

    # -- inputs --

    def feed(self, record: Record) -> None:
        cfg = self.m.app(record.appid)
        if isinstance(record, OrderStatusChanged | LogisticsUpdated):
            self.order_key_event(record)
        elif isinstance(record, ProductPriceChanged | ProductStockChanged | Promotion):
            self.product_event(record)
        elif isinstance(record, Watch):
            key = (record.appid, record.target.type, record.target.id)
            wkey = watches.watch_key(*key, record.openid, record.kind)
            existing = self.watches[key].get(wkey)
            late = retention.watch_too_late(to_ms(record.occurred_at), cfg, self.now)
            step = watches.on_watch(existing, self.unwatched.get(wkey), record, self.now, late)
            self.outcome(step.outcome)
            if step.watch is None:
                self.watches[key].pop(wkey, None)
            else:
                self.watches[key][wkey] = step.watch
            if step.unwatched_at is None:
                self.unwatched.pop(wkey, None)
            else:
                self.unwatched[wkey] = step.unwatched_at
            new = step.watch
            if record.kind == stock.KIND and new is None:
                self.queue[key].pop(wkey, None)
            elif record.kind == stock.KIND and wkey not in self.queue[key]:
                self.queue[key][wkey] = (0, new.occurred_at)
        elif isinstance(record, SubscriptionEvent):
            user = self.user(record.appid, record.openid)
            state, o = subscriptions.apply_subscription(user, record, cfg, self.now)
            self.users[user_key(record.appid, record.openid)] = state
            self.outcome(o)
        elif isinstance(record, PreferenceChanged):
            user = self.user(record.appid, record.openid)
            state, o = subscriptions.apply_preference(user, record, cfg, self.now)
            self.users[user_key(record.appid, record.openid)] = state
            self.outcome(o)

    def order_key_event(self, record: OrderStatusChanged | LogisticsUpdated) -> None:
        cfg = self.m.app(record.appid)
        key = record.key
        order, pending = self.orders.get(key), self.pending.get(key, ())
        if isinstance(record, OrderStatusChanged):
            step = orders.on_order_event(order, pending, record, cfg, self.now)
            carded = cards.card_order_step(order, pending, step, record, cfg, self.now)
        else:
            step = orders.on_logistics_event(order, pending, record, cfg, self.now)
            carded = cards.card_logistics_step(step, record, cfg, self.now)
        step = carded.step
        for op in carded.ops:  # the card stage calls them in seq order, each once
            self.out.cards[(op.appid, op.code)].append(op.status)
        self.orders[key], self.pending[key] = step.order, step.pending
        for o in step.outcomes:
            self.outcome(o)
        order = step.order
        if self.card_stage and carded.ops and order and order.card_code and not order.card_active:
            # every activation succeeds: the card stage's "activated" ends the held candidates
            word = cards.CardResult(order.appid, order.order_id, order.card_code, "activated")
            activated = cards.on_card_result(order, word, self.now).step
            self.orders[key] = activated.order
            for o in activated.outcomes:
                self.outcome(o)
        for cand in step.candidates:
            self.decide(cand)

    def product_event(self, record: ProductPriceChanged | ProductStockChanged | Promotion) -> None:
        ttype, tid = watches.event_target(record)
        if isinstance(record, ProductStockChanged):
            if stock.stock_out(record):  # (a fan-out ends before the next event: see eventlog)
                self.outcome(stock.stopped(record, None, self.now))
                return
            limit = stock.restock_limit(record, self.m.app(record.appid))
            if limit is not None:
                self.restock(record, limit)
                return
        matched = 0
        for watch in list(self.watches[(record.appid, ttype, tid)].values()):
            if watches.matches(watch, record):
                matched += 1
                self.decide(watches.fanout_candidate(watch, record, self.now))
        if not matched:
            self.outcome(watches.no_match_outcome(record, self.now))

    def restock(self, record: ProductStockChanged, limit: int) -> None:
        """The first ``limit`` watchers in serving order: fewer times told, earlier watch."""
        key = (record.appid, "sku", record.sku_id)
        if record.event_id in self.restocked[key]:
            self.outcome(stock.duplicate(record, self.now))
            return
        self.restocked[key] = [*self.restocked[key], record.event_id][-stock.RECENT :]
        queue = self.queue[key]
        order = sorted(queue, key=lambda w: (*queue[w], self.watches[key][w].openid))
        told = 0
        for wkey in order:
            watch = self.watches[key][wkey]
            if told == limit or not watches.matches(watch, record):
                continue
            told += 1
            queue[wkey] = (queue[wkey][0] + 1, queue[wkey][1])
            self.decide(watches.fanout_candidate(watch, record, self.now))
        if not told:
            self.outcome(watches.no_match_outcome(record, self.now))

    def user(self, appid: str, openid: str) -> UserState:
        return self.users.get(user_key(appid, openid)) or UserState()

    def decide(self, cand: Candidate) -> None:
        key = user_key(cand.appid, cand.openid)
        paused = self.paused.get((cand.appid, cand.kind))
        decision = dec.decide(self.user(cand.appid, cand.openid), cand, self.m.app(cand.appid),
                              self.now, paused)  # fmt: skip
        self.users[key] = decision.state
        for o in decision.outcomes:
            self.outcome(o)
        for i in decision.intents:
            self.intent(i)

    def finish(self) -> None:
        """Every timer fires: held and deferred intents go out, pending logistics orphan."""
        self.timers(_FOREVER)

    def timers(self, at: int) -> None:
        """The timers due at ``at`` fire (with the config live then)."""
        for key, pending in self.pending.items():
            appid = key.split(":", 1)[0]
            self.pending[key], gone = orders.expire_pending(pending, at, self.m.app(appid))
            for o in gone:
                self.outcome(o)
        for key, state in self.users.items():
            appid = key.split(":", 1)[0]
            decision = dec.on_timer(state, self.m.app(appid), at)
            self.users[key] = decision.state
            # (the history as of the log's now, plus this firing's releases: at _FOREVER the
            # history's retention would forget the rest; releases of an earlier firing, at a
            # config change, are in ``state.history`` already and must not be listed twice)
            appid, openid = key.split(":", 1)
            now = decisions(state.history, appid, openid)
            released = {i.notification_id for i in decision.intents}
            later = decisions(decision.state.history, appid, openid)
            self.out.histories[key] = now + [
                d for d in later if d.reason == RELEASED and d.notification_id in released
            ]
            for i in decision.intents:
                self.intent(i)

"""Per-user subscription state: send credits, mutes, kind preferences, and decide's memory.

One ``UserState`` per user key ``{appid}:{openid}`` holds everything the per-user stages need,
so one store read serves a decision. It is an immutable record (containers inside are never
mutated: every change builds new ones); store it with :func:`encode_user` and rebuild it with
:func:`decode_user`. The stored form leaves empty parts out and writes a send as
``[notification_id, at, marketing]``: a third less JSON than the record as it is, and about a
third fewer instructions to write and read back (callgrind: 53 k against 82 k per user and
batch). :func:`decode_user` also reads the full form (every field, sends as objects) that
versions before 2026-11-27 stored; those versions cannot read the short form.

Credits follow WeChat (DESIGN.md guarantee 4): +1 per popup ``accept`` (which also unmutes the
template); a ``change`` ``reject`` (settings menu) mutes the template until a new accept; a
``zero`` correction (43101) sets credits to 0; a ``restore`` correction gives back the credit of
a send WeChat refused, once per notification, and only if that notification consumed a credit.
Credits never go negative: a send needs a credit > 0.

Bounded memory: notification ids (dedupe) and credit-consuming sends are kept while their event
time is within ``dedupe_retention_s`` of now (the config requires it to be >= every
``stale_after_s``, so a duplicate old enough to be forgotten is stale anyway); sends for the caps
are kept while they can still fall in a cap window of a non-stale candidate.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import field, replace
from operator import attrgetter
from typing import Any, cast

import orjson

from wxsub.agents.rules import history as hist
from wxsub.agents.rules.common import outcome, to_ms
from wxsub.memo import remember
from wxsub.merchants import MerchantConfig
from wxsub.schemas.internal import (
    NOTIFY_KINDS,
    Correction,
    Intent,
    Outcome,
    OutcomeReason,
    encode_internal,
)
from wxsub.schemas.records import PreferenceChanged, SubscriptionEvent
from wxsub.schemas.struct import field_names, from_doc, record
from wxsub.wechat.errcodes import CreditEffect

__all__ = [
    "DEFAULT_RETENTION_S",
    "STAGE",
    "Deferred",
    "Held",
    "Send",
    "UserState",
    "add_credit",
    "apply_correction",
    "apply_preference",
    "apply_subscription",
    "decode_user",
    "encode_user",
    "history_with",
    "horizons",
    "intent_from_dict",
    "prune",
    "pruned_parts",
    "with_history",
]

STAGE = "decide"
DEFAULT_RETENTION_S = 2 * 86_400


def intent_from_dict(doc: Mapping[str, Any]) -> Intent:
    return from_doc(Intent, {**doc, "event_ids": tuple(doc["event_ids"])})


@record
class Send:
    """A decided send, for the frequency caps (``at``: its event time)."""

    notification_id: str
    at: int
    marketing: bool


@record
class Held:
    """A logistics intent held for collapse until ``until`` (wall clock)."""

    subject: str
    until: int
    intent: Intent

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Held:
        return cls(doc["subject"], doc["until"], intent_from_dict(doc["intent"]))


@record
class Deferred:
    """A marketing intent decided in quiet hours, released at ``release_at`` (epoch ms)."""

    release_at: int
    intent: Intent

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Deferred:
        return cls(doc["release_at"], intent_from_dict(doc["intent"]))


@record
class UserState:
    """Everything the per-user stages know about one user."""

    credits: dict[str, int] = field(default_factory=dict)  # template_id -> credits (> 0 only)
    muted_templates: tuple[str, ...] = ()
    muted_kinds: tuple[str, ...] = ()
    pref_at: dict[str, int] = field(default_factory=dict)  # kind -> event time of last change
    events: dict[str, int] = field(default_factory=dict)  # applied state event id -> event time
    seen: dict[str, int] = field(default_factory=dict)  # notification id -> event time
    consumed: dict[str, int] = field(default_factory=dict)  # nid that took a credit -> time
    sends: tuple[Send, ...] = ()
    held: tuple[Held, ...] = ()
    deferred: tuple[Deferred, ...] = ()
    # the last decisions, oldest first, in their stored form (rules/history.py)
    history: str = ""

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> UserState:
        """A state from its decoded JSON, either stored form (the module docstring). The state
        takes ``doc``'s dicts over, so pass a freshly decoded one (as :func:`decode_user` does).
        Keys it does not know (a newer writer's) are left out.
        """
        keys = tuple(doc)
        build = _BUILDERS.get(keys)
        if build is None:
            build = remember(_BUILDERS, keys, _builder(keys), _BUILDERS_MAX)
        return build(doc)

    def credit(self, template_id: str) -> int:
        return self.credits.get(template_id, 0)

    def next_due(self) -> int | None:
        """The earliest wall-clock time at which :func:`~.decide.on_timer` has work, if any."""
        if not self.held and not self.deferred:  # (most users: asked twice per batch)
            return None
        times = [h.until for h in self.held] + [d.release_at for d in self.deferred]
        return min(times, default=None)

    def with_credit(self, template_id: str, delta: int) -> UserState:
        """Credits changed by ``delta``, floored at 0 (entries at 0 are dropped)."""
        return replace(self, credits=add_credit(self.credits, template_id, delta))


# how each stored part is read (``d``: the decoded document); a part not stored takes its default
_READ = {
    "credits": 'd["credits"] or {}',
    "muted_templates": 'tuple(d["muted_templates"] or ())',
    "muted_kinds": 'tuple(d["muted_kinds"] or ())',
    "pref_at": 'd["pref_at"] or {}',
    "events": 'd["events"] or {}',
    "seen": 'd["seen"] or {}',
    "consumed": 'd["consumed"] or {}',
    "sends": 'tuple([_send(s) for s in d["sends"]]) if d["sends"] else ()',
    "held": 'tuple([Held.from_dict(h) for h in d["held"]]) if d["held"] else ()',
    "deferred": 'tuple([Deferred.from_dict(x) for x in d["deferred"]]) if d["deferred"] else ()',
    "history": 'd["history"] or ""',
}
_DEFAULT = {
    "credits": "{}", "muted_templates": "()", "muted_kinds": "()", "pref_at": "{}",
    "events": "{}", "seen": "{}", "consumed": "{}", "sends": "()", "held": "()",
    "deferred": "()", "history": '""',
}  # fmt: skip
# per stored key tuple (which parts a state holds, in their order), the state's builder by
# position: a get() and a test per part of all 11 cost ~6 k instructions per state read, about
# a third of the read (callgrind). At most 2^11 key tuples in the stored forms (more only from a
# newer writer's keys); bounded: at most _BUILDERS_MAX (wxsub.memo.remember)
_BUILDERS: dict[tuple[str, ...], Callable[[Mapping[str, Any]], UserState]] = {}
_BUILDERS_MAX = 4096


def _builder(keys: tuple[str, ...]) -> Callable[[Mapping[str, Any]], UserState]:
    """``lambda d: UserState(...)`` for documents with ``keys``, generated once per key tuple
    (as ``internal._encoder``: the source holds only the fixed texts above, never a key)."""
    given = set(keys)
    args = (_READ[n] if n in given else _DEFAULT[n] for n in field_names(UserState))
    scope = {"UserState": UserState, "_send": _send, "Held": Held, "Deferred": Deferred}
    return cast(
        Callable[[Mapping[str, Any]], UserState],
        eval(f"lambda d: UserState({', '.join(args)})", scope),  # noqa: S307
    )


def add_credit(credits: Mapping[str, int], template_id: str, delta: int) -> dict[str, int]:
    """A copy of ``credits`` changed by ``delta``, floored at 0 (entries at 0 are dropped)."""
    out = dict(credits)
    value = out.get(template_id, 0) + delta
    if value > 0:
        out[template_id] = value
    else:
        out.pop(template_id, None)
    return out


def _send(doc: Any) -> Send:
    """A send from its stored form: ``[notification_id, at, marketing]`` or an object."""
    if type(doc) is list:
        return Send(doc[0], doc[1], doc[2])
    return Send(doc["notification_id"], doc["at"], doc["marketing"])


def encode_user(state: UserState) -> bytes:
    """The stored form of a state (the module docstring)."""
    # one test per part, spelled out: a comprehension over the names with getattr() costs
    # 11 k instructions for a new user's state against 5 k (callgrind), once per user and batch
    doc: dict[str, Any] = {}
    if state.credits:
        doc["credits"] = state.credits
    if state.muted_templates:
        doc["muted_templates"] = state.muted_templates
    if state.muted_kinds:
        doc["muted_kinds"] = state.muted_kinds
    if state.pref_at:
        doc["pref_at"] = state.pref_at
    if state.events:
        doc["events"] = state.events
    if state.seen:
        doc["seen"] = state.seen
    if state.consumed:
        doc["consumed"] = state.consumed
    if state.sends:
        doc["sends"] = [[s.notification_id, s.at, s.marketing] for s in state.sends]
    if state.held:
        doc["held"] = state.held
    if state.deferred:
        doc["deferred"] = state.deferred
    if state.history:
        doc["history"] = state.history
    return encode_internal(doc)


def decode_user(raw: bytes) -> UserState:
    """A state from its stored bytes (either form)."""
    doc = orjson.loads(raw)
    build = _BUILDERS.get(tuple(doc))  # (from_dict's first step, without its call)
    return build(doc) if build is not None else UserState.from_dict(doc)


def _toggle(items: tuple[str, ...], item: str, on: bool) -> tuple[str, ...]:
    rest = tuple(i for i in items if i != item)
    return tuple(sorted((*rest, item))) if on else rest


def _retention_ms(cfg: MerchantConfig | None) -> int:
    return (cfg.dedupe_retention_s if cfg else DEFAULT_RETENTION_S) * 1000


# per-config (retention ms, send retention ms): the config properties scan every kind and cap,
# so they are computed once per config object (configs are frozen and live for the process).
# By id(cfg) (a config cannot be hashed); bounded: at most _SPANS_MAX (wxsub.memo.remember)
_SPANS: dict[int, tuple[MerchantConfig, int, int]] = {}
_SPANS_MAX = 1024


def _spans(cfg: MerchantConfig | None) -> tuple[int, int]:
    if cfg is None:
        return DEFAULT_RETENTION_S * 1000, DEFAULT_RETENTION_S * 1000
    hit = _SPANS.get(id(cfg))
    if hit is None or hit[0] is not cfg:
        sends = 1000 * (cfg.max_stale_after_s + cfg.max_cap_window_s)
        hit = remember(_SPANS, id(cfg), (cfg, _retention_ms(cfg), sends), _SPANS_MAX)
    return hit[1], hit[2]


_send_at = attrgetter("at")


def horizons(cfg: MerchantConfig | None, now_ms: int) -> tuple[int, int]:
    """(ids, sends) at ``now_ms``: ids (and history entries) decided before the first are
    forgotten, sends before the second (see the module docstring)."""
    hit = _SPANS.get(id(cfg))  # (_spans, without its call: once per decision)
    if hit is None or hit[0] is not cfg:
        retention, send_retention = _spans(cfg)
        return now_ms - retention, now_ms - send_retention
    return now_ms - hit[1], now_ms - hit[2]


def prune(state: UserState, cfg: MerchantConfig | None, now_ms: int) -> UserState:
    """Forget ids and sends that can no longer matter (see the module docstring)."""
    events, seen, consumed, sends = pruned_parts(state, state.seen, horizons(cfg, now_ms))
    if (events is state.events and seen is state.seen and consumed is state.consumed
            and sends is state.sends):  # fmt: skip
        return state
    return UserState(
        state.credits, state.muted_templates, state.muted_kinds, state.pref_at, events, seen,
        consumed, sends, state.held, state.deferred, state.history,
    )  # fmt: skip


def pruned_parts(
    state: UserState, seen: dict[str, int], horizon_ms: tuple[int, int]
) -> tuple[dict[str, int], dict[str, int], dict[str, int], tuple[Send, ...]]:
    """:func:`prune`'s parts (events, seen, consumed, sends) of ``state`` with ``seen`` for its
    seen ids, without building a state: each part is the one given unless something in it
    expired (decide builds the state once, with everything it changes). ``horizon_ms``:
    :func:`horizons` (decide asks once per decision, for these and its history)."""
    horizon, send_horizon = horizon_ms
    events, consumed, sends = state.events, state.consumed, state.sends
    if events and min(events.values()) < horizon:  # rebuild only when something expired
        events = {k: t for k, t in events.items() if t >= horizon}
    if seen and min(seen.values()) < horizon:
        seen = {k: t for k, t in seen.items() if t >= horizon}
    if consumed and min(consumed.values()) < horizon:
        consumed = {k: t for k, t in consumed.items() if t >= horizon}
    if sends and min(map(_send_at, sends)) < send_horizon:
        sends = tuple(s for s in sends if s.at >= send_horizon)
    return events, seen, consumed, sends


def history_expired(state: UserState, cfg: MerchantConfig | None, now_ms: int) -> UserState:
    """``state`` without the history entries decided before the dedupe retention (what
    ``with_history`` drops at the user's next decision anyway): the sweep's part, so a user
    whose only state is an old history ends (retention.swept_user)."""
    if not state.history:
        return state
    history = hist.expire(state.history, now_ms - _spans(cfg)[0])
    if history == state.history:
        return state
    return UserState(
        state.credits, state.muted_templates, state.muted_kinds, state.pref_at, state.events,
        state.seen, state.consumed, state.sends, state.held, state.deferred, history,
    )  # fmt: skip


def history_with(
    history: str, entries: Sequence[str], cfg: MerchantConfig | None, now_ms: int
) -> str:
    """``history`` with ``entries`` (``history.entry``) added, bounded (rules/history.py)."""
    return hist.add(history, entries, now_ms - _spans(cfg)[0])


def with_history(
    state: UserState, entries: Sequence[str], cfg: MerchantConfig | None, now_ms: int
) -> UserState:
    """``state`` with ``entries`` added to its history (rules/history.py)."""
    history = hist.add(state.history, entries, now_ms - _spans(cfg)[0])
    return UserState(
        state.credits, state.muted_templates, state.muted_kinds, state.pref_at, state.events,
        state.seen, state.consumed, state.sends, state.held, state.deferred, history,
    )  # fmt: skip


def _noted(state: UserState, o: Outcome, subject: str, cfg: MerchantConfig | None,
           now_ms: int) -> tuple[UserState, Outcome]:  # fmt: skip
    """A state event's result, with its outcome in the history."""
    e = hist.entry(now_ms, o.event_id, o.kind, subject, o.reason, o.template_id, "", o.detail)
    return with_history(state, [e], cfg, now_ms), o


# --- state events --------------------------------------------------------------------------------


def _state_outcome(ev: SubscriptionEvent | PreferenceChanged, kind: str, reason: str,
                   now_ms: int, detail: str) -> Outcome:  # fmt: skip
    template = ev.template_id if isinstance(ev, SubscriptionEvent) else ""
    return outcome(
        ev.event_id, kind, reason, STAGE, now_ms,
        appid=ev.appid, openid=ev.openid, template_id=template, detail=detail,
    )  # fmt: skip


def apply_subscription(
    state: UserState, ev: SubscriptionEvent, cfg: MerchantConfig | None, now_ms: int
) -> tuple[UserState, Outcome]:
    """Apply a popup/change/sent event; a repeated event id is ``duplicate`` (no double credit)."""
    detail = f"{ev.event} {ev.status or ''}".strip()
    if ev.event_id in state.events:
        o = _state_outcome(ev, "subscription", OutcomeReason.DUPLICATE, now_ms, detail)
        return _noted(state, o, ev.template_id, cfg, now_ms)
    at = to_ms(ev.occurred_at)
    state = prune(replace(state, events={**state.events, ev.event_id: at}), cfg, now_ms)
    if ev.event == "popup" and ev.status == "accept":
        state = state.with_credit(ev.template_id, +1)
        state = replace(
            state, muted_templates=_toggle(state.muted_templates, ev.template_id, False)
        )
    elif ev.event == "change" and ev.status == "reject":
        state = replace(state, muted_templates=_toggle(state.muted_templates, ev.template_id, True))
    elif ev.event == "change" and ev.status == "accept":
        state = replace(
            state, muted_templates=_toggle(state.muted_templates, ev.template_id, False)
        )
    # popup reject: no credit, nothing to change; sent: a receipt for the deliver stage
    o = _state_outcome(ev, "subscription", OutcomeReason.APPLIED, now_ms, detail)
    return _noted(state, o, ev.template_id, cfg, now_ms)


def apply_preference(
    state: UserState, ev: PreferenceChanged, cfg: MerchantConfig | None, now_ms: int
) -> tuple[UserState, Outcome]:
    """Mute or unmute a kind (``all``: every kind); an older change than the last is ignored."""
    detail = f"{ev.op} {ev.kind}"
    if ev.event_id in state.events:
        o = _state_outcome(ev, "preference", OutcomeReason.DUPLICATE, now_ms, detail)
        return _noted(state, o, ev.kind, cfg, now_ms)
    at = to_ms(ev.occurred_at)
    state = prune(replace(state, events={**state.events, ev.event_id: at}), cfg, now_ms)
    kinds = NOTIFY_KINDS if ev.kind == "all" else (ev.kind,)
    if any(at < state.pref_at.get(k, at) for k in kinds):
        o = _state_outcome(ev, "preference", OutcomeReason.REGRESSION, now_ms, detail)
        return _noted(state, o, ev.kind, cfg, now_ms)
    muted = state.muted_kinds
    for kind in kinds:
        muted = _toggle(muted, kind, ev.op == "mute")
    pref_at = {**state.pref_at, **dict.fromkeys(kinds, at)}
    new = replace(state, muted_kinds=muted, pref_at=pref_at)
    o = _state_outcome(ev, "preference", OutcomeReason.APPLIED, now_ms, detail)
    return _noted(new, o, ev.kind, cfg, now_ms)


def apply_correction(
    state: UserState, corr: Correction, cfg: MerchantConfig | None = None, now_ms: int = 0
) -> UserState:
    """A failed send's credit effect (the errcode table's ``credit`` column, via
    ``rules/delivery._failed``): ZERO (43101) -> credits 0; RESTORE -> +1 once, for a send that
    took a credit. An effect that changed the state is noted in the history (at ``now_ms``,
    or the correction's own time)."""
    if corr.action == CreditEffect.ZERO:
        new = state.with_credit(corr.template_id, -state.credit(corr.template_id))
    elif corr.action == CreditEffect.RESTORE and corr.notification_id in state.consumed:
        consumed = {k: t for k, t in state.consumed.items() if k != corr.notification_id}
        new = replace(state.with_credit(corr.template_id, +1), consumed=consumed)
    else:
        return state
    at = now_ms or corr.at
    e = hist.entry(at, "", hist.CORRECTION, corr.template_id, hist.CORRECTION, corr.template_id,
                   corr.notification_id, str(corr.action))  # fmt: skip
    return with_history(new, [e], cfg, at)

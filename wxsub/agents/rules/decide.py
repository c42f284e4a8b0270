"""The per-user decision: from a candidate to an intent, or an outcome with its reason.

Checks run in this order (docs/policies.md explains each); the first that fails is the outcome:

1. ``no_template``       the app or the kind is not configured; then the candidate's status
                         picks the kind's template (``by_status`` variants), and
   ``template_unfit``    that template at WeChat does not fit the mapping (kind disabled)
2. ``stale``             now - occurred_at > the kind's stale_after_s (wall clock)
3. ``duplicate``         the notification id was decided before (any result)
4. ``not_subscribed_kind`` the user muted the kind (PreferenceChanged)
5. ``muted``             the user rejected the template in the settings menu
6. ``invalid_data``      a keyword value cannot be made valid for its WeChat type
7. ``content_blocked``   a rendered value contains a sensitive word
8. ``collapsed``         logistics (per order), price drops (per SKU, ``price_collapse_s``):
                         an update with a later event time for the same subject is held; this
                         one is folded into it (its id joins its event_ids)
9. ``capped``            the user's transactional or marketing frequency cap is reached
10. ``no_credit``        no subscription credit for the template (never goes negative)

Then the credit is consumed, the send counted for the caps and the intent built, and:
marketing in quiet hours (event time, app time zone) -> outcome ``quiet_hours_deferred`` and the
intent waits in the state until the end of that quiet window; logistics with a collapse window ->
held until now + collapse_window_s (a later update supersedes it: the held one ends as
``collapsed``, its credit and cap slot go back, and its event ids move into the newer intent);
otherwise the intent is returned now. :func:`on_timer` releases what is due.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import replace

from wxsub.agents.rules import history as hist
from wxsub.agents.rules.common import outcome
from wxsub.agents.rules.content import WordMatcher, matcher
from wxsub.agents.rules.render import Invalid, render
from wxsub.agents.rules.subscriptions import (
    Deferred,
    Held,
    Send,
    UserState,
    add_credit,
    history_with,
    horizons,
    prune,
    pruned_parts,
    with_history,
)
from wxsub.memo import remember
from wxsub.merchants import KindConfig, MerchantConfig, QuietHours
from wxsub.schemas.internal import Candidate, Intent, Outcome, OutcomeReason, notification_id
from wxsub.schemas.struct import record

__all__ = [
    "STAGE",
    "Decision",
    "collapse_s",
    "decide",
    "on_timer",
    "quiet_release",
    "sends_in_window",
]

STAGE = "decide"


@record
class Decision:
    """New user state, intents to produce now, outcomes to produce now."""

    state: UserState
    intents: tuple[Intent, ...] = ()
    outcomes: tuple[Outcome, ...] = ()


def decide(
    state: UserState,
    cand: Candidate,
    cfg: MerchantConfig | None,
    now_ms: int,
    paused: str | None = None,
) -> Decision:
    """Decide one candidate for one user (pure: same inputs, same result); what was decided
    joins the user's history (rules/history.py), noted where it is decided, in the one new
    state (a second state and decision per candidate cost 2% of an event's instructions).

    ``paused``: the reason of a pause in force for the candidate's app and kind
    (rules/pauses.py), if any: the candidate ends as ``paused`` before a credit is spent (the
    deliver stage's send-time guard ends what was decided before the pause)."""
    kind = cfg.kind(cand.kind) if cfg is not None else None
    if cfg is None or kind is None:
        what = "app" if cfg is None else f"kind {cand.kind}"
        version = cfg.version if cfg is not None else 0
        o = _out(cand, OutcomeReason.NO_TEMPLATE, now_ms, "", "", f"{what} not configured", version)
        return _suppressed(state, cand, o, cfg, now_ms)
    if kind.variants:  # several templates per kind: the candidate's status picks one
        kind = kind.for_status(cand.values.get("status"))
    tpl = kind.template_id
    if kind.disabled:  # the template at WeChat does not fit the mapping: never send
        return _ended(
            state, cand, cfg, now_ms, OutcomeReason.TEMPLATE_UNFIT, kind.disabled, "", tpl
        )
    nid = notification_id(cand.appid, cand.openid, tpl, cand.event_id)
    if now_ms - cand.occurred_at > kind.stale_after_s * 1000:
        return _ended(state, cand, cfg, now_ms, OutcomeReason.STALE, "", nid, tpl)
    if nid in state.seen:
        return _ended(state, cand, cfg, now_ms, OutcomeReason.DUPLICATE, "", nid, tpl)
    # from here the id is seen and the state pruned: its parts are kept apart, and the state
    # is built once, at the end (an intent) or before an outcome (_seen); ``state`` keeps the
    # parts no check below changes (mutes, held, credits)
    horizon = horizons(cfg, now_ms)
    at = cand.occurred_at
    if not (state.seen or state.events or state.consumed or state.sends):  # a new user's
        parts = (state.events, {nid: at}, state.consumed, state.sends)  # (nothing to prune)
        if at < horizon[0]:
            parts = pruned_parts(state, parts[1], horizon)
    elif at >= horizon[0]:  # (always: retention >= stale_after_s) the new id kept, not min()'d
        events, seen, consumed, sends = pruned_parts(state, state.seen, horizon)
        parts = (events, {**seen, nid: at}, consumed, sends)
    else:
        parts = pruned_parts(state, {**state.seen, nid: at}, horizon)
    if paused is not None:  # seen (a redelivery stays a duplicate), no credit spent
        state = _seen(state, parts)
        return _ended(
            state, cand, cfg, now_ms, OutcomeReason.PAUSED, f"kind paused: {paused}"[:200], nid, tpl
        )
    body = None
    if not (state.muted_kinds or state.muted_templates or cfg.sensitive_words):
        # nothing muted and no words to look for (most decisions): the body, without _check
        rendered = render(cand, kind, cfg.timezone)
        body = None if isinstance(rendered, Invalid) else rendered
    if body is None:  # _check says why not (or renders the body past the mutes and words)
        reason, detail, body = _check(state, cand, kind, cfg)
        if body is None:
            state = _seen(state, parts)
            return _ended(state, cand, cfg, now_ms, reason, detail, nid, tpl)
    collapse = cand.kind in _COLLAPSING and bool(collapse_s(cfg, cand.kind))
    held = _held_for(state, cand) if collapse else None
    if held is not None and at < held.intent.occurred_at:
        state = _absorb(_seen(state, parts), held, cand.event_id)
        return _ended(
            state, cand, cfg, now_ms, OutcomeReason.COLLAPSED, "older than a held update", nid, tpl
        )
    marketing = kind.marketing
    # the state as if the held intent had not been decided (credit and cap slot back)
    credits, (events, seen, consumed, sends) = state.credits, parts
    if held is not None:
        hnid = held.intent.notification_id
        credits = add_credit(credits, held.intent.template_id, +1)
        consumed = {k: t for k, t in consumed.items() if k != hnid}
        sends = tuple(s for s in sends if s.notification_id != hnid)
    cap = cfg.marketing_cap if marketing else cfg.transactional_cap
    if (cap is not None and len(sends) >= cap.max) or credits.get(tpl, 0) <= 0:
        # (else neither the cap nor the credit can stop it: most decisions, without the call)
        reason, detail = _limits(credits, sends, cand, kind, marketing, cfg)
        if reason:
            state = _seen(state, parts)
            return _ended(state, cand, cfg, now_ms, reason, detail, nid, tpl)
    event_ids = (*held.intent.event_ids, cand.event_id) if held else (cand.event_id,)
    intent = Intent(
        nid, cand.appid, cand.openid, tpl, cand.kind, event_ids, at,
        cand.received_at, now_ms, body, cfg.version,
    )  # fmt: skip
    # consume: one credit, the id for restore corrections, the send for the caps
    credits = add_credit(credits, tpl, -1)
    consumed = {**consumed, nid: at}
    sends = (*sends, Send(nid, at, marketing))
    release = None
    if marketing and cfg.quiet_hours is not None:
        release = quiet_release(at, cfg.quiet_hours, cfg.timezone)
    if not collapse and release is None:  # sent now (most decisions)
        history = hist.add_intent(
            state.history, now_ms, cand.event_id, cand.kind, cand.subject, tpl, horizon[0]
        )
        new = UserState(
            credits, state.muted_templates, state.muted_kinds, state.pref_at, events, seen,
            consumed, sends, state.held, state.deferred, history,
        )  # fmt: skip
        return Decision(new, (intent,))
    return _dispatch(
        state, credits, (events, seen, consumed, sends), cand, intent, cfg, now_ms, held,
        release, horizon[0],
    )  # fmt: skip


def _ended(
    state: UserState,
    cand: Candidate,
    cfg: MerchantConfig,
    now_ms: int,
    reason: str,
    detail: str,
    nid: str,
    template: str,
) -> Decision:
    """The candidate ends with ``reason`` (an outcome for it, noted in the history)."""
    o = _out(cand, reason, now_ms, nid, template, detail, cfg.version)
    return _suppressed(state, cand, o, cfg, now_ms)


def _suppressed(
    state: UserState, cand: Candidate, o: Outcome, cfg: MerchantConfig | None, now_ms: int
) -> Decision:
    """An outcome instead of an intent, noted in the history."""
    e = hist.entry(o.at, o.event_id, o.kind, cand.subject, o.reason, o.template_id,
                   o.notification_id, o.detail)  # fmt: skip
    return Decision(with_history(state, (e,), cfg, now_ms), outcomes=(o,))


_Parts = tuple[dict[str, int], dict[str, int], dict[str, int], tuple[Send, ...]]


def _seen(state: UserState, parts: _Parts) -> UserState:
    """``state`` with its pruned (events, seen, consumed, sends) ``parts``."""
    events, seen, consumed, sends = parts
    return UserState(
        state.credits, state.muted_templates, state.muted_kinds, state.pref_at, events, seen,
        consumed, sends, state.held, state.deferred, state.history,
    )  # fmt: skip


def _check(
    state: UserState, cand: Candidate, kind: KindConfig, cfg: MerchantConfig
) -> tuple[str, str, dict[str, object] | None]:
    """Preferences, mutes, rendering and content: (reason, detail, body or None)."""
    if cand.kind in state.muted_kinds:
        return OutcomeReason.NOT_SUBSCRIBED_KIND, f"{cand.kind} muted", None
    if kind.template_id in state.muted_templates:
        return OutcomeReason.MUTED, "template rejected in settings", None
    body = render(cand, kind, cfg.timezone)
    if isinstance(body, Invalid):
        return OutcomeReason.INVALID_DATA, str(body), None
    data = body["data"]
    assert isinstance(data, dict)
    if cfg.sensitive_words and _blocked(matcher(cfg.sensitive_words), data.values()):
        return OutcomeReason.CONTENT_BLOCKED, "sensitive word", None
    return "", "", body


# whether a value holds a sensitive word, by (matcher, value): most values repeat (status
# phrases, titles), and the matcher's normalising + scan costs more than a dict lookup.
# Bounded: at most _BLOCKED_MAX entries (wxsub.memo.remember)
_BLOCKED: dict[tuple[WordMatcher, str], bool] = {}
_BLOCKED_MAX = 8192


def _blocked(words: WordMatcher, fields: Iterable[dict[str, str]]) -> bool:
    for field in fields:
        key = (words, field["value"])
        hit = _BLOCKED.get(key)
        if hit is None:
            hit = remember(_BLOCKED, key, words.find(key[1]) is not None, _BLOCKED_MAX)
        if hit:
            return True
    return False


def sends_in_window(sends: tuple[Send, ...], marketing: bool, window_s: int, at: int) -> int:
    """The sends of one class (marketing or not) within ``window_s`` of ``at`` (epoch ms): what
    counts against that class's frequency cap."""
    window = window_s * 1000
    return sum(1 for s in sends if s.marketing == marketing and abs(s.at - at) < window)


def _limits(
    credits: dict[str, int],
    sends: tuple[Send, ...],
    cand: Candidate,
    kind: KindConfig,
    marketing: bool,
    cfg: MerchantConfig,
) -> tuple[str, str]:
    cap = cfg.marketing_cap if marketing else cfg.transactional_cap  # (cfg.cap, without a call)
    if cap is not None and len(sends) >= cap.max:  # fewer sends than the cap: cannot be reached
        if sends_in_window(sends, marketing, cap.window_s, cand.occurred_at) >= cap.max:
            label = "marketing" if marketing else "transactional"
            return OutcomeReason.CAPPED, f"{label} cap {cap.max}/{cap.window_s}s"
    if credits.get(kind.template_id, 0) <= 0:
        return OutcomeReason.NO_CREDIT, ""
    return "", ""


def _dispatch(
    state: UserState,
    credits: dict[str, int],
    parts: _Parts,
    cand: Candidate,
    intent: Intent,
    cfg: MerchantConfig,
    now_ms: int,
    held: Held | None,
    release: int | None,
    horizon: int,
) -> Decision:
    """Defer for quiet hours (``release``: when they end) or else hold for collapse (a send
    now is decide's own last step); the new state is built once (``parts``: its events, seen,
    consumed and sends; ``horizon``: the history's, from ``horizons``)."""
    events, seen, consumed, sends = parts
    nid, tpl = intent.notification_id, intent.template_id
    held_all, deferred = state.held, state.deferred
    outs: tuple[Outcome, ...] = ()
    subject = cand.subject
    if release is not None:
        deferred = (*deferred, Deferred(release, intent))
        detail = f"release at {release}"
        reason = OutcomeReason.QUIET_HOURS_DEFERRED
        outs = (_out(cand, reason, now_ms, nid, tpl, detail, cfg.version),)
        noted = [hist.entry(now_ms, cand.event_id, cand.kind, subject, reason, tpl, nid, detail)]
        history = hist.add(state.history, noted, horizon)
    else:  # collapse
        keep = tuple(h for h in held_all if not _same(h, cand))
        until = now_ms + collapse_s(cfg, cand.kind) * 1000
        held_all = (*keep, Held(subject, until, intent))
        noted = []
        if held is not None:  # the held one ends as collapsed, this one is held
            detail = f"superseded by {cand.event_id}"
            o = _out_for(held.intent, OutcomeReason.COLLAPSED, now_ms, detail, cfg.version)
            outs = (o,)
            noted.append(hist.entry(now_ms, o.event_id, o.kind, subject, o.reason,
                                    o.template_id, o.notification_id, detail))  # fmt: skip
        noted.append(hist.entry(now_ms, cand.event_id, cand.kind, subject, hist.HELD, tpl, nid,
                                f"until {until}"))  # fmt: skip
        history = hist.add(state.history, noted, horizon)
    new = UserState(
        credits, state.muted_templates, state.muted_kinds, state.pref_at, events,
        seen, consumed, sends, held_all, deferred, history,
    )  # fmt: skip
    return Decision(new, (), outs)


def _out(
    cand: Candidate, reason: str, now_ms: int, nid: str, tpl: str, detail: str, version: int
) -> Outcome:
    return outcome(
        cand.event_id, cand.kind, reason, STAGE, now_ms, appid=cand.appid, openid=cand.openid,
        template_id=tpl, notification_id=nid, detail=detail, config_version=version,
    )  # fmt: skip


def _out_for(intent: Intent, reason: str, now_ms: int, detail: str, version: int) -> Outcome:
    """An outcome for the primary (latest) event of an intent."""
    return outcome(
        intent.event_ids[-1], intent.kind, reason, STAGE, now_ms, appid=intent.appid,
        openid=intent.openid, template_id=intent.template_id,
        notification_id=intent.notification_id, detail=detail, config_version=version,
    )  # fmt: skip


# --- collapse ------------------------------------------------------------------------------------


_COLLAPSING = frozenset({"logistics", "price_drop"})  # the kinds collapse_s may hold


def collapse_s(cfg: MerchantConfig, kind: str) -> int:
    """How long an intent of ``kind`` is held for collapse (0: not held): logistics per order
    (``collapse_window_s``), price drops per SKU (``alerts.price_collapse_s``)."""
    if kind == "logistics":
        return cfg.collapse_window_s
    return cfg.alerts.price_collapse_s if kind == "price_drop" else 0


def _same(held: Held, cand: Candidate) -> bool:
    return held.subject == cand.subject and held.intent.kind == cand.kind


def _held_for(state: UserState, cand: Candidate) -> Held | None:
    return next((h for h in state.held if _same(h, cand)), None)


def _absorb(state: UserState, held: Held, event_id: str) -> UserState:
    """Fold an older update into the held intent: its id joins the intent's event ids."""
    ids = held.intent.event_ids
    merged = (*ids[:-1], event_id, ids[-1])  # the primary (latest) event id stays last
    new = replace(held, intent=replace(held.intent, event_ids=merged))
    return replace(state, held=tuple(new if h == held else h for h in state.held))


# --- quiet hours and timers ----------------------------------------------------------------------


def quiet_release(occurred_at: int, quiet: QuietHours, tz: dt.tzinfo) -> int | None:
    """The end of the quiet window holding ``occurred_at`` (epoch ms), or None when outside."""
    local = dt.datetime.fromtimestamp(occurred_at / 1000, tz)
    if not quiet.contains(local.time()):
        return None
    end = dt.datetime.combine(local.date(), quiet.end, tzinfo=tz)
    if end <= local:
        end = dt.datetime.combine(local.date() + dt.timedelta(days=1), quiet.end, tzinfo=tz)
    return int(end.timestamp() * 1000)


def on_timer(state: UserState, cfg: MerchantConfig | None, now_ms: int) -> Decision:
    """Release deferred intents and held logistics whose time has come (wall clock)."""
    due_d = tuple(d for d in state.deferred if d.release_at <= now_ms)
    due_h = tuple(h for h in state.held if h.until <= now_ms)
    if not due_d and not due_h:
        return Decision(state)
    intents = tuple(d.intent for d in due_d) + tuple(h.intent for h in due_h)
    subjects = [""] * len(due_d) + [h.subject for h in due_h]
    noted = [
        hist.entry(now_ms, i.event_ids[-1], i.kind, subject, hist.RELEASED, i.template_id,
                   i.notification_id)
        for i, subject in zip(intents, subjects, strict=True)
    ]  # fmt: skip
    new = replace(
        state,
        deferred=tuple(d for d in state.deferred if d.release_at > now_ms),
        held=tuple(h for h in state.held if h.until > now_ms),
        history=history_with(state.history, noted, cfg, now_ms),
    )
    return Decision(prune(new, cfg, now_ms), intents=intents)

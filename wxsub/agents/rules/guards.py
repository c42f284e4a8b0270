"""Send-time guards: what the deliver stage checks right before every call to WeChat.

The decide stage judges staleness and quiet hours when it decides (quiet hours on event time).
A send can still go out much later: a backlog, a retry after -1/45011, the resume after a 45009
quota pause, a quiet-hours deferral released by decide, an in-doubt resend. So every send, the
first and each retry, passes :func:`at_send` on the **wall clock** of the send:

1. ``paused``  the kind is paused for the app (``rules/pauses.py``): the send ends, nothing is
               sent, the credit goes back;
2. ``stale``   ``now - occurred_at > stale_after_s`` of the kind (or of its ``by_status``
               variant): the send ends, the credit goes back;
3. ``quiet_hours_deferred``  a marketing kind and ``now`` falls in the app's quiet hours: the
               entry waits in the ledger as a ``retry`` due at the end of that quiet window (a
               durable timer, not memory), and passes these checks again then.

An app not (or no longer) in the merchant config is not guarded here: decide refuses its
candidates, and an intent already decided is sent as it was decided.

Pure: the stage reads the entry and the config, calls this, and writes the step it returns.
"""

from __future__ import annotations

from dataclasses import replace

from wxsub.agents.rules.decide import quiet_release
from wxsub.agents.rules.delivery import STAGE, Entry, LedgerState, Step, defer
from wxsub.merchants import KindConfig, MerchantConfig
from wxsub.schemas.internal import Correction, Outcome, OutcomeReason
from wxsub.wechat.errcodes import CreditEffect

__all__ = ["at_send", "end_unsent", "kind_for"]


def kind_for(cfg: MerchantConfig, kind: str, template_id: str) -> KindConfig | None:
    """The kind's config that sends with ``template_id`` (a ``by_status`` variant, or the kind)."""
    kc = cfg.kind(kind)
    if kc is None or kc.template_id == template_id:
        return kc
    return next((v for v in kc.variants.values() if v.template_id == template_id), kc)


def at_send(
    entry: Entry, cfg: MerchantConfig | None, now_ms: int, paused: str | None = None
) -> Step | None:
    """None: the send may go now. Otherwise the step that ends it (``paused``, ``stale``) or
    defers it to the end of the quiet window (``quiet_hours_deferred``).

    ``paused`` is why the app's kind is paused (None: it is not)."""
    if entry.intent is None:
        return None
    if paused is not None:
        return end_unsent(entry, OutcomeReason.PAUSED, now_ms, paused)
    if cfg is None:
        return None
    kc = kind_for(cfg, entry.kind, entry.template_id)
    if kc is None:
        return None
    age_ms = now_ms - entry.occurred_at
    if age_ms > kc.stale_after_s * 1000:
        detail = f"at send: {age_ms // 1000}s old > stale_after_s {kc.stale_after_s}"
        return end_unsent(entry, OutcomeReason.STALE, now_ms, detail)
    if kc.marketing and cfg.quiet_hours is not None:
        release = quiet_release(now_ms, cfg.quiet_hours, cfg.timezone)
        if release is not None:
            step = defer(entry, release, now_ms)
            out = _outcome(
                step.entry or entry, OutcomeReason.QUIET_HOURS_DEFERRED, now_ms,
                f"at send: release at {release}",
            )  # fmt: skip
            return replace(step, outcome=out)
    return None


def end_unsent(entry: Entry, reason: OutcomeReason, now_ms: int, detail: str) -> Step:
    """The send ends without a call: ``failed`` in the ledger (no errcode), the outcome says why,
    and the consumed credit goes back (``restore``: WeChat never saw it)."""
    ended = replace(entry, state=LedgerState.FAILED, errcode=None, due=None, at=now_ms, intent=None)
    correction = Correction(
        appid=entry.appid,
        openid=entry.openid,
        template_id=entry.template_id,
        action=CreditEffect.RESTORE,
        notification_id=entry.notification_id,
        at=now_ms,
    )
    return Step(ended, _outcome(ended, reason, now_ms, detail[:200]), correction)


def _outcome(entry: Entry, reason: OutcomeReason, now_ms: int, detail: str) -> Outcome:
    return Outcome(
        event_id=entry.event_id,
        kind=entry.kind,
        reason=reason,
        stage=STAGE,
        appid=entry.appid,
        openid=entry.openid,
        template_id=entry.template_id,
        notification_id=entry.notification_id,
        detail=detail,
        at=now_ms,
        config_version=entry.config_version,
    )

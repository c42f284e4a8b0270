"""Small helpers shared by the rule modules: event time in ms, outcome records, reasons."""

from __future__ import annotations

import datetime as dt

from wxsub.schemas.internal import Outcome

__all__ = ["REASONS", "STATE_REASONS", "outcome", "to_ms"]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

#: every reason a rule module can give; docs/policies.md explains each
REASONS = frozenset(
    {
        # decide
        "no_template",
        "stale",
        "duplicate",
        "not_subscribed_kind",
        "muted",
        "invalid_data",
        "content_blocked",
        "collapsed",
        "capped",
        "no_credit",
        "quiet_hours_deferred",
        # orders / logistics / products
        "no_rule",
        "regression",
        "orphan",
        "no_match",
    }
)
#: reasons for state events (subscription, preference, watch)
STATE_REASONS = frozenset({"applied", "duplicate", "regression"})


def to_ms(moment: dt.datetime | int) -> int:
    """Epoch milliseconds of an aware datetime (ints pass through)."""
    if isinstance(moment, int):
        return moment
    delta = moment - _EPOCH  # exact integer arithmetic, no float rounding
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def outcome(
    event_id: str,
    kind: str,
    reason: str,
    stage: str,
    at: int,
    *,
    appid: str = "",
    openid: str = "",
    template_id: str = "",
    notification_id: str = "",
    detail: str = "",
) -> Outcome:
    """An Outcome record (one place, so every stage fills the fields the same way)."""
    # by position (half the cost of keywords, struct.py): Outcome(event_id, kind, reason,
    # stage, appid, openid, template_id, notification_id, errcode, detail, at)
    return Outcome(
        event_id, kind, reason, stage, appid, openid, template_id, notification_id, None,
        detail, at,
    )  # fmt: skip

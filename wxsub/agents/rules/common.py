"""Small helpers shared by the rule modules: event time in ms, outcome records (their reasons:
``wxsub.schemas.internal.OutcomeReason``)."""

from __future__ import annotations

import datetime as dt

from wxsub.schemas.internal import Outcome

__all__ = ["outcome", "to_ms"]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def to_ms(moment: dt.datetime | int) -> int:
    """Epoch milliseconds of an aware datetime (ints pass through)."""
    if isinstance(moment, int):
        return moment
    delta = moment - _EPOCH  # exact integer arithmetic, no float rounding
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def outcome(
    event_id: str,
    kind: str,
    reason: str,  # an OutcomeReason
    stage: str,
    at: int,
    *,
    appid: str = "",
    openid: str = "",
    template_id: str = "",
    notification_id: str = "",
    detail: str = "",
    config_version: int = 0,
) -> Outcome:
    """An Outcome record (one place, so every stage fills the fields the same way)."""
    # by position (half the cost of keywords, struct.py): Outcome(event_id, kind, reason,
    # stage, appid, openid, template_id, notification_id, errcode, detail, at, config_version)
    return Outcome(
        event_id, kind, reason, stage, appid, openid, template_id, notification_id, None,
        detail, at, config_version,
    )  # fmt: skip

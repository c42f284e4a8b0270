"""Every WeChat errcode the sender can meet, and what it means for the caller.

The table follows /work/shared/wechat-api.md. Each code says what the sender does with it
(``Disposition``: retry, refresh the token, pause, give up) and what it means for the user's
subscription credit (``CreditEffect``: spent, given back, or zeroed because WeChat says there is
none; ``wxsub.agents.rules.delivery`` turns it into the credit ``Correction``). ``classify``
never fails: an errcode we do not know is treated as a permanent refusal (WeChat did not send;
retrying blindly could burn quota), flagged for an alert so a human looks at it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "TOKEN_ERRCODES",
    "CreditEffect",
    "Disposition",
    "ErrcodeInfo",
    "classify",
    "credit_effect",
    "describe",
]


class Disposition(enum.Enum):
    """What a sender does with an errcode."""

    SUCCESS = "success"  # sent: record the msgid
    TOKEN = "token"  # noqa: S105 (a name) -- token invalid/expired: refresh once, retry once
    RETRYABLE = "retryable"  # WeChat did not send: retry later (on a timer)
    QUOTA = "quota"  # daily quota: pause the appid until the reset, alert
    PERMANENT = "permanent"  # refused for good


class CreditEffect(enum.StrEnum):
    """What a send ending with an errcode does to the user's subscription credit.

    The values of RESTORE and ZERO are the ``action`` of the ``Correction`` record the deliver
    stage writes when a send fails (``rules/delivery.py``), applied by decide
    (``rules/subscriptions.apply_correction``)."""

    SPENT = "spent"  # WeChat sent: the credit decide consumed is used up
    RESTORE = "restore"  # WeChat did not send: give the consumed credit back (+1, once)
    ZERO = "zero"  # WeChat says the user has no credit (43101): set the template's credits to 0


@dataclass(frozen=True, slots=True)
class ErrcodeInfo:
    errcode: int
    disposition: Disposition
    credit: CreditEffect  # applied when the send ends with this code (failed, or sent)
    meaning: str
    alert: bool = False  # a configuration or account problem a human must fix


_S, _T, _R, _Q, _P = (
    Disposition.SUCCESS,
    Disposition.TOKEN,
    Disposition.RETRYABLE,
    Disposition.QUOTA,
    Disposition.PERMANENT,
)
_SPENT, _BACK, _ZERO = CreditEffect.SPENT, CreditEffect.RESTORE, CreditEffect.ZERO

# errcode, what the sender does, what a send ending so does to the credit, meaning
_TABLE: dict[int, ErrcodeInfo] = {
    info.errcode: info
    for info in (
        ErrcodeInfo(0, _S, _SPENT, "ok"),
        ErrcodeInfo(-1, _R, _BACK, "system busy"),
        ErrcodeInfo(40001, _T, _BACK, "access token invalid (or bad appsecret on the token call)"),
        ErrcodeInfo(40014, _T, _BACK, "access token invalid"),
        ErrcodeInfo(42001, _T, _BACK, "access token expired"),
        ErrcodeInfo(40002, _P, _BACK, "bad grant_type", alert=True),
        ErrcodeInfo(40003, _P, _BACK, "openid invalid or from another appid"),
        ErrcodeInfo(40013, _P, _BACK, "appid invalid", alert=True),
        ErrcodeInfo(40037, _P, _BACK, "template_id invalid", alert=True),
        ErrcodeInfo(40164, _P, _BACK, "caller IP not whitelisted", alert=True),
        ErrcodeInfo(41030, _P, _BACK, "page invalid", alert=True),
        ErrcodeInfo(43101, _P, _ZERO, "user has no subscription credit"),
        ErrcodeInfo(43107, _P, _BACK, "subscribe capability banned", alert=True),
        ErrcodeInfo(43108, _R, _BACK, "concurrent calls to the same openid"),
        ErrcodeInfo(45009, _Q, _BACK, "daily quota reached", alert=True),
        ErrcodeInfo(45011, _R, _BACK, "per-minute quota reached"),
        ErrcodeInfo(45168, _P, _BACK, "content hit sensitive words"),
        ErrcodeInfo(47003, _P, _BACK, "argument invalid"),
        ErrcodeInfo(48001, _P, _BACK, "API unauthorized", alert=True),
    )
}

TOKEN_ERRCODES = frozenset(c for c, i in _TABLE.items() if i.disposition is Disposition.TOKEN)


def describe(errcode: int) -> ErrcodeInfo:
    """The table entry for ``errcode``; unknown codes are permanent and alert."""
    info = _TABLE.get(errcode)
    if info is None:
        return ErrcodeInfo(
            errcode, Disposition.PERMANENT, CreditEffect.RESTORE, "unknown errcode", alert=True
        )
    return info


def classify(errcode: int) -> Disposition:
    return describe(errcode).disposition


def credit_effect(errcode: int | None) -> CreditEffect:
    """The credit effect of a send that ended with ``errcode`` (None: no WeChat answer, a
    transport error proven not sent, so the credit goes back)."""
    return CreditEffect.RESTORE if errcode is None else describe(errcode).credit

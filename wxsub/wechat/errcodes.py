"""Every WeChat errcode the sender can meet, and what it means for the caller.

The table follows /work/shared/wechat-api.md. ``classify`` never fails: an errcode we do not
know is treated as a permanent refusal (WeChat did not send; retrying blindly could burn quota),
flagged for an alert so a human looks at it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "TOKEN_ERRCODES",
    "Disposition",
    "ErrcodeInfo",
    "classify",
    "describe",
]


class Disposition(enum.Enum):
    """What a sender does with an errcode."""

    SUCCESS = "success"  # sent: record the msgid
    TOKEN = "token"  # noqa: S105 (a name) -- token invalid/expired: refresh once, retry once
    RETRYABLE = "retryable"  # WeChat did not send: retry later (on a timer)
    QUOTA = "quota"  # daily quota: pause the appid until the reset, alert
    PERMANENT = "permanent"  # refused for good


@dataclass(frozen=True, slots=True)
class ErrcodeInfo:
    errcode: int
    disposition: Disposition
    meaning: str
    alert: bool = False  # a configuration or account problem a human must fix


_S, _T, _R, _Q, _P = (
    Disposition.SUCCESS,
    Disposition.TOKEN,
    Disposition.RETRYABLE,
    Disposition.QUOTA,
    Disposition.PERMANENT,
)

_TABLE: dict[int, ErrcodeInfo] = {
    info.errcode: info
    for info in (
        ErrcodeInfo(0, _S, "ok"),
        ErrcodeInfo(-1, _R, "system busy"),
        ErrcodeInfo(40001, _T, "access token invalid (or bad appsecret on the token call)"),
        ErrcodeInfo(40014, _T, "access token invalid"),
        ErrcodeInfo(42001, _T, "access token expired"),
        ErrcodeInfo(40002, _P, "bad grant_type", alert=True),
        ErrcodeInfo(40003, _P, "openid invalid or from another appid"),
        ErrcodeInfo(40013, _P, "appid invalid", alert=True),
        ErrcodeInfo(40037, _P, "template_id invalid", alert=True),
        ErrcodeInfo(40164, _P, "caller IP not whitelisted", alert=True),
        ErrcodeInfo(41030, _P, "page invalid", alert=True),
        ErrcodeInfo(43101, _P, "user has no subscription credit"),
        ErrcodeInfo(43107, _P, "subscribe capability banned", alert=True),
        ErrcodeInfo(43108, _R, "concurrent calls to the same openid"),
        ErrcodeInfo(45009, _Q, "daily quota reached", alert=True),
        ErrcodeInfo(45011, _R, "per-minute quota reached"),
        ErrcodeInfo(45168, _P, "content hit sensitive words"),
        ErrcodeInfo(47003, _P, "argument invalid"),
        ErrcodeInfo(48001, _P, "API unauthorized", alert=True),
    )
}

TOKEN_ERRCODES = frozenset(c for c, i in _TABLE.items() if i.disposition is Disposition.TOKEN)


def describe(errcode: int) -> ErrcodeInfo:
    """The table entry for ``errcode``; unknown codes are permanent and alert."""
    info = _TABLE.get(errcode)
    if info is None:
        return ErrcodeInfo(errcode, Disposition.PERMANENT, "unknown errcode", alert=True)
    return info


def classify(errcode: int) -> Disposition:
    return describe(errcode).disposition

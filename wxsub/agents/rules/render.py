"""Render a candidate into a complete WeChat send body, valid per keyword type, or say why not.

Values come from the candidate (event fields) plus derived ones: ``status_text`` (the kind's
status -> phrase table), ``event_time`` (occurred_at in the app's time zone), ``event_id``,
``appid``, ``subject``. Money (fen) becomes yuan, epoch-ms times become local datetimes. A data
format string that is exactly one placeholder hands the typed value to
:func:`wxsub.wechat.keywords.fit`; otherwise values are put into the text (money ``12.50``, times
``2024年5月1日 10:00``) and the text is fitted. Every value in the body passes ``keywords.check``.
"""

from __future__ import annotations

import datetime as dt
import re
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, NamedTuple

from wxsub.merchants import MONEY_NAMES, TIME_NAMES, KindConfig
from wxsub.schemas.internal import Candidate
from wxsub.wechat.keywords import check, fit

__all__ = ["Invalid", "render", "render_values"]

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")
_SOLE = re.compile(r"^\{([^{}]*)\}$")
_CENT = Decimal("0.01")


class Invalid(NamedTuple):
    """Why a candidate cannot be rendered (outcome invalid_data)."""

    keyword: str  # the keyword (or "page") that failed
    reason: str

    def __str__(self) -> str:
        return f"{self.keyword}: {self.reason}"


def render_values(cand: Candidate, kind: KindConfig, tz: dt.tzinfo) -> dict[str, object]:
    """The typed values a kind's format strings may use."""
    values: dict[str, object] = dict(cand.values)
    values.update(
        event_id=cand.event_id, appid=cand.appid, subject=cand.subject, event_time=cand.occurred_at
    )
    status = values.get("status", values.get("state"))
    if isinstance(status, str) and status in kind.status_text:
        values["status_text"] = kind.status_text[status]
    for name in MONEY_NAMES & values.keys():
        fen = values[name]
        if isinstance(fen, int) and not isinstance(fen, bool):
            values[name] = (Decimal(fen) / 100).quantize(_CENT)
    for name in TIME_NAMES & values.keys():
        ms = values[name]
        if isinstance(ms, int) and not isinstance(ms, bool):
            values[name] = dt.datetime.fromtimestamp(ms / 1000, tz)
    return values


def render(cand: Candidate, kind: KindConfig, tz: dt.tzinfo) -> dict[str, Any] | Invalid:
    """The complete send body for ``cand``, or :class:`Invalid` naming the failing keyword."""
    values = render_values(cand, kind, tz)
    data: dict[str, dict[str, str]] = {}
    for name, fmt in kind.data.items():
        type_ = kind.keywords[name]
        raw = _value(fmt, values)
        if raw is None:
            return Invalid(name, f"no value for {fmt}")
        enum = kind.enum_values.get(name)
        fitted = _fit(type_, raw, enum)
        if fitted is None:
            return Invalid(name, check(type_, str(raw), enum) or f"cannot be a {type_}")
        data[name] = {"value": fitted}
    body: dict[str, Any] = {"touser": cand.openid, "template_id": kind.template_id}
    if kind.page:
        page = _substitute(kind.page, values, _url_text)
        if page is None:
            return Invalid("page", f"no value for {kind.page}")
        body["page"] = page
    body["data"] = data
    body["miniprogram_state"] = kind.miniprogram_state
    body["lang"] = kind.lang
    return body


# fit() is pure and most values repeat (status phrases, amounts, titles): memoised, keyed by
# what the rendering depends on (a datetime by its local wall time, via isoformat)
_FITTED: dict[tuple[object, ...], str | None] = {}
_FITTED_MAX = 8192


def _fit(type_: str, value: object, enum: Sequence[str] | None) -> str | None:
    key = _fit_key(type_, value, enum)
    if key is None:
        return fit(type_, value, enum)
    try:
        return _FITTED[key]
    except KeyError:
        pass
    out = _FITTED[key] = fit(type_, value, enum)
    if len(_FITTED) > _FITTED_MAX:
        _FITTED.clear()
    return out


def _fit_key(type_: str, value: object, enum: Sequence[str] | None) -> tuple[object, ...] | None:
    choices = tuple(enum) if enum is not None else None
    if type(value) is str:
        return (type_, "s", value, choices)
    if type(value) is Decimal:
        return (type_, "d", str(value), choices)
    if type(value) is dt.datetime:
        return (type_, "t", value.isoformat(), choices)
    return None


def _value(fmt: str, values: Mapping[str, object]) -> object | None:
    sole = _SOLE.match(fmt)
    if sole:
        return values.get(sole.group(1))
    return _substitute(fmt, values, _text)


def _substitute(
    fmt: str, values: Mapping[str, object], text: Callable[[object], str]
) -> str | None:
    missing: list[str] = []

    def one(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        name = match.group(1)
        if name not in values:
            missing.append(name)
            return ""
        return text(values[name])

    out = _TOKEN.sub(one, fmt)
    return None if missing else out


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return f"{value.year}年{value.month}月{value.day}日 {value:%H:%M}"
    if isinstance(value, Decimal):
        return f"{value:f}"
    return str(value)


def _url_text(value: object) -> str:
    return urllib.parse.quote(_text(value), safe="")

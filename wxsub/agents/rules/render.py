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
from operator import itemgetter
from typing import Any, NamedTuple

import orjson

from wxsub.memo import remember
from wxsub.merchants import MONEY_NAMES, TIME_NAMES, KindConfig
from wxsub.schemas.internal import Candidate
from wxsub.wechat.keywords import check, fit

__all__ = ["Invalid", "render"]

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")
_SOLE = re.compile(r"^\{([^{}]*)\}$")
_CENT = Decimal("0.01")


class Invalid(NamedTuple):
    """Why a candidate cannot be rendered (outcome invalid_data)."""

    keyword: str  # the keyword (or "page") that failed
    reason: str

    def __str__(self) -> str:
        return f"{self.keyword}: {self.reason}"


def _values(
    cand: Candidate,
    kind: KindConfig,
    tz: dt.tzinfo,
    money: tuple[str, ...],
    times: tuple[str, ...],
    own: bool = True,
) -> dict[str, object]:
    """The typed values a kind's format strings may use, converting only the ``money`` and
    ``times`` names given; ``own``: with the candidate's own fields (event_id, appid,
    subject, event_time), which a format may also use."""
    values: dict[str, object] = dict(cand.values)
    if own:
        values["event_id"] = cand.event_id
        values["appid"] = cand.appid
        values["subject"] = cand.subject
        values["event_time"] = cand.occurred_at
    status = values.get("status", values.get("state"))
    if isinstance(status, str) and status in kind.status_text:
        values["status_text"] = kind.status_text[status]
    if money:  # (most kinds use none inside text)
        for name in money:
            fen = values.get(name)
            if isinstance(fen, int) and not isinstance(fen, bool):
                values[name] = _convert("money", fen, tz)
    if times:
        for name in times:
            ms = values.get(name)
            if isinstance(ms, int) and not isinstance(ms, bool):
                values[name] = _convert("time", ms, tz)
    return values


def _number(name: str | None) -> str | None:
    if name in MONEY_NAMES:
        return "money"
    return "time" if name in TIME_NAMES else None


def _convert(number: str, value: int, tz: dt.tzinfo) -> object:
    """Fen -> yuan (Decimal), epoch ms -> local datetime."""
    if number == "money":
        return (Decimal(value) / 100).quantize(_CENT)
    return dt.datetime.fromtimestamp(value / 1000, tz)


class _Slot(NamedTuple):
    """One keyword of a kind, prepared once: its type, enum, and parsed format string."""

    name: str
    type_: str
    enum: Sequence[str] | None
    choices: tuple[str, ...] | None  # the enum as a memo key part
    fmt: str
    sole: str | None  # the placeholder name when the format is exactly one placeholder
    number: str | None  # "money" / "time": the sole placeholder is converted here, memoised
    parts: tuple[str | tuple[str], ...]  # literal text, or (name,) for a placeholder
    # fit() of this keyword's text values (most values: phrases, titles, ids), by the text: a
    # memo per keyword needs no key tuple (the type and enum are the slot's). Bounded: at most
    # _SLOT_MEMO_MAX entries (wxsub.memo.remember), so all of them at most _PLANS_MAX plans x
    # their keywords x _SLOT_MEMO_MAX
    texts: dict[str, str | None]
    # fit() of a sole money/time placeholder's raw int (money: by the int; time: by the int
    # and the time zone), bounded the same way
    numbers: dict[object, str | None]


class _Plan(NamedTuple):
    kind: KindConfig  # kept so the id() key cannot be reused while cached
    slots: tuple[_Slot, ...]
    page: tuple[str | tuple[str], ...]
    money: tuple[str, ...]  # money and time names used inside text (only those convert early)
    times: tuple[str, ...]
    reads: tuple[str, ...]  # the candidate's values the body depends on (see _kept)
    own: bool  # whether a format uses the candidate's own fields (_values)
    pick: Callable[[Mapping[str, Any]], Any] | None  # itemgetter(*reads), if any
    # the placeholder of a page that is a path and one placeholder (most pages), and the
    # pages made of its text values (bounded: at most _SLOT_MEMO_MAX, wxsub.memo.remember)
    page_name: str | None
    pages: dict[str, str]
    # per slot (name, sole, texts, number, numbers, slot): the fields render's loop reads, by
    # unpacking (a NamedTuple field read per use cost ~2 k instructions per render)
    loop: tuple[tuple[str, str | None, dict[str, str | None], str | None,
                      dict[object, str | None], _Slot], ...]  # fmt: skip
    # [(candidate, tz, body), _reads of the candidate] of the last render of this kind: a
    # fan-out's candidates (one product event, one candidate per watcher) differ only in the
    # user, so each after the first takes the first one's body with its own ``touser``
    # (bench/RESULTS.md, "Session 8: decide per candidate"). The second item is _UNSET until
    # a candidate may take the body
    last: list[Any]


# kind configs are frozen and live for the process: their format strings are parsed once.
# By id(kind) (a config cannot be hashed); bounded: at most _PLANS_MAX (wxsub.memo.remember)
_PLANS: dict[int, _Plan] = {}
_PLANS_MAX = 1024


def _plan(kind: KindConfig) -> _Plan:
    plan = _PLANS.get(id(kind))
    if plan is not None and plan.kind is kind:
        return plan
    slots = []
    for name, fmt in kind.data.items():
        enum = kind.enum_values.get(name)
        sole = _SOLE.match(fmt)
        choices = tuple(enum) if enum is not None else None
        sole_name = sole.group(1) if sole else None
        number = _number(sole_name)
        slots.append(
            _Slot(
                name,
                kind.keywords[name],
                enum,
                choices,
                fmt,
                sole_name,
                number,
                _parse(fmt),
                {},
                {},
            )
        )
    page = _parse(kind.page)
    parts = (page, *(s.parts for s in slots if s.sole is None))
    used = {p[0] for one in parts for p in one if type(p) is tuple}
    used |= {s.sole for s in slots if s.sole is not None and s.number is None}
    money, times = tuple(sorted(MONEY_NAMES & used)), tuple(sorted(TIME_NAMES & used))
    reads = used | {s.sole for s in slots if s.sole is not None}
    if "status_text" in reads:  # derived from these (_values)
        reads |= {"status", "state"}
    own = bool(reads & _OWN)
    names = tuple(sorted(reads))
    pick = itemgetter(*names) if names else None
    one = len(page) == 2 and type(page[0]) is str and type(page[1]) is tuple
    page_name = page[1][0] if one else None
    loop = tuple((s.name, s.sole, s.texts, s.number, s.numbers, s) for s in slots)
    plan = _Plan(
        kind, tuple(slots), page, money, times, names, own, pick, page_name, {}, loop,
        [None, _UNSET],
    )  # fmt: skip
    return remember(_PLANS, id(kind), plan, _PLANS_MAX)


def _parse(fmt: str) -> tuple[str | tuple[str], ...]:
    """``fmt`` split as :data:`_TOKEN` substitution sees it: literals and (name,) slots."""
    parts: list[str | tuple[str]] = []
    pos = 0
    for match in _TOKEN.finditer(fmt):
        if match.start() > pos:
            parts.append(fmt[pos : match.start()])
        token = match.group(0)
        parts.append(token[0] if token in ("{{", "}}") else (match.group(1),))
        pos = match.end()
    if pos < len(fmt):
        parts.append(fmt[pos:])
    return tuple(parts)


_OWN = frozenset({"event_id", "appid", "subject", "event_time"})  # set by _values
_UNSET = object()


def _kept(plan: _Plan, b: Candidate, tz: dt.tzinfo) -> dict[str, Any] | None:
    """The last body rendered for this kind (of the event id of ``b``: render asks) with
    ``b``'s ``touser``, when ``b`` renders the same body but for ``touser``: the same event
    (subject, time, app) and time zone, and the same values under every name the body reads,
    compared as their JSON (exact: ``1 == True == 1.0``, but not as JSON)."""
    last = plan.last
    a, a_tz, body = last[0]
    if a_tz is not tz or a.subject != b.subject or a.occurred_at != b.occurred_at:
        return None
    if a.appid != b.appid:
        return None
    key = last[1]
    if key is _UNSET:  # once per kept body
        key = last[1] = _reads(plan, a)
    if key is None or _reads(plan, b) != key:
        return None
    return {**body, "touser": b.openid}


def _reads(plan: _Plan, cand: Candidate) -> bytes | None:
    """The JSON of the candidate's values under the names the body reads (None: one is
    absent, or not plain JSON: a subclass, a datetime, a dataclass; a decoded candidate's
    values are always JSON)."""
    if plan.pick is None:
        return b""
    try:
        return orjson.dumps(plan.pick(cand.values), option=_PLAIN)
    except (KeyError, TypeError):
        return None


_PLAIN = (
    orjson.OPT_PASSTHROUGH_SUBCLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
)


def render(cand: Candidate, kind: KindConfig, tz: dt.tzinfo) -> dict[str, Any] | Invalid:
    """The complete send body for ``cand``, or :class:`Invalid` naming the failing keyword."""
    plan = _PLANS.get(id(kind))  # (_plan's hit, without its call)
    if plan is None or plan.kind is not kind:
        plan = _plan(kind)
    last = plan.last[0]
    if last is not None and last[0].event_id == cand.event_id:
        kept = _kept(plan, cand, tz)
        if kept is not None:
            return kept
    values = _values(cand, kind, tz, plan.money, plan.times, plan.own)
    data: dict[str, dict[str, str]] = {}
    for name, sole, texts, number, numbers, slot in plan.loop:
        raw = values.get(sole) if sole is not None else _fill(slot.parts, values, _text)
        if raw is None:
            return Invalid(name, f"no value for {slot.fmt}")
        if type(raw) is str:
            try:
                fitted = texts[raw]
            except KeyError:
                fitted = remember(texts, raw, fit(slot.type_, raw, slot.enum), _SLOT_MEMO_MAX)
        elif number is not None and isinstance(raw, int) and not isinstance(raw, bool):
            key = raw if number == "money" else (raw, tz)
            try:
                fitted = numbers[key]
            except KeyError:
                fitted = remember(numbers, key, _fit_number(slot, raw, tz), _SLOT_MEMO_MAX)
            if fitted is None:
                raw = _convert(number, raw, tz)
        else:
            fitted = _fit_slot(slot, raw)
        if fitted is None:
            type_, enum = slot.type_, slot.enum
            return Invalid(name, check(type_, str(raw), enum) or f"cannot be a {type_}")
        data[name] = {"value": fitted}
    body: dict[str, Any] = {"touser": cand.openid, "template_id": kind.template_id}
    if kind.page:
        page_name = plan.page_name
        if page_name is None:
            page = _fill(plan.page, values, _url_text)
        elif page_name not in values:
            page = None
        else:  # a path and one placeholder (most pages), without _fill's loop; by the text
            raw = values[page_name]
            if type(raw) is not str:
                page = f"{plan.page[0]}{_url_text(raw)}"
            elif (page := plan.pages.get(raw)) is None:
                page = remember(plan.pages, raw, f"{plan.page[0]}{_url_text(raw)}", _SLOT_MEMO_MAX)
        if page is None:
            return Invalid("page", f"no value for {kind.page}")
        body["page"] = page
    body["data"] = data
    body["miniprogram_state"] = kind.miniprogram_state
    body["lang"] = kind.lang
    last = plan.last
    last[0], last[1] = (cand, tz, body), _UNSET
    return body


def _fill(
    parts: tuple[str | tuple[str], ...], values: Mapping[str, object], text: Callable[[object], str]
) -> str | None:
    """The parsed format filled from ``values``; None when a placeholder has no value."""
    out: list[str] = []
    for part in parts:
        if type(part) is str:
            out.append(part)
            continue
        name = part[0]
        if name not in values:
            return None
        out.append(text(values[name]))
    return "".join(out)


# fit() is pure and most values repeat (status phrases, amounts, titles): memoised, keyed by
# what the rendering depends on (a datetime by its local wall time, via isoformat).
# Bounded: at most _FITTED_MAX entries (wxsub.memo.remember)
_FITTED: dict[tuple[object, ...], str | None] = {}
_FITTED_MAX = 8192
#: entries per keyword's (and per page's) memo: a fan-out's values repeat within its event,
#: an order's ids never do, so a small memo keeps the hits and bounds what the plans hold
_SLOT_MEMO_MAX = 256


def _fit_slot(slot: _Slot, value: object) -> str | None:
    """``fit()`` of one keyword value, through the memo."""
    type_, choices = slot.type_, slot.choices
    if type(value) is str:
        key: tuple[object, ...] = (type_, "s", value, choices)
    elif type(value) is Decimal:
        key = (type_, "d", str(value), choices)
    elif type(value) is dt.datetime:
        key = (type_, "t", value.isoformat(), choices)
    else:
        return fit(type_, value, slot.enum)
    try:
        return _FITTED[key]
    except KeyError:
        pass
    return remember(_FITTED, key, fit(type_, value, slot.enum), _FITTED_MAX)


def _fit_number(slot: _Slot, value: int, tz: dt.tzinfo) -> str | None:
    """``fit()`` of a sole money/time placeholder's raw int (render memoises it per slot)."""
    assert slot.number is not None
    return _fit_slot(slot, _convert(slot.number, value, tz))


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return f"{value.year}年{value.month}月{value.day}日 {value:%H:%M}"
    if isinstance(value, Decimal):
        return f"{value:f}"
    return str(value)


# the characters quote() never escapes: a value made only of them is returned as it is
_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*")


def _url_text(value: object) -> str:
    text = value if type(value) is str else _text(value)
    if _UNRESERVED.fullmatch(text):  # nothing to quote (ids, mostly): skip quote()
        return text
    return urllib.parse.quote(text, safe="")

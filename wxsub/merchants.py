"""The merchant config: per mini program, which events notify whom, with which template, and how.

Read once at start (``load_merchants``), validated completely, frozen. Every error is a
:class:`~wxsub.errors.ConfigError` naming the key (``apps.wx1.kinds.logistics.template_id``).
The format is documented in ``deploy/merchants.example.toml`` and ``docs/policies.md``.

A kind's ``data`` maps each template keyword to a format string over the candidate's values
(``"{order_id}"``, ``"{title}降价了"``); :data:`VALUE_NAMES` lists the names each kind offers.
A format string that is exactly one placeholder passes the typed value to the keyword renderer
(money becomes ``¥12.50`` for an ``amount``, a time becomes ``2024年5月1日 10:00``).
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, get_args

from wxsub.errors import ConfigError
from wxsub.merchant_cards import CardConfig, parse_cards
from wxsub.schemas import records
from wxsub.schemas.internal import MARKETING_KINDS, NOTIFY_KINDS
from wxsub.tomlfile import read_toml
from wxsub.wechat.keywords import TYPES, check, keyword_type
from wxsub.wechat.templates import parse_content

__all__ = [
    "DEFAULT_ORPHAN_AFTER_S",
    "DEFAULT_STATUS_TEXT",
    "MONEY_NAMES",
    "TIME_NAMES",
    "VALUE_NAMES",
    "Cap",
    "KindConfig",
    "MerchantConfig",
    "Merchants",
    "QuietHours",
    "load_merchants",
    "parse_merchants",
    "placeholders",
]

ORDER_STATES: tuple[str, ...] = get_args(records.OrderStatus)
LOGISTICS_STATES: tuple[str, ...] = get_args(records.LogisticsState)
_STATES = {"order_status": ORDER_STATES, "logistics": LOGISTICS_STATES}
_DEFAULT_NOTIFY = {
    "order_status": ("paid", "shipped", "delivered", "cancelled", "refunded"),
    "logistics": ("out_for_delivery", "delivered", "exception"),
}

#: status -> a valid WeChat ``phrase`` (<= 5 Chinese characters); merchants may override
DEFAULT_STATUS_TEXT: Mapping[str, Mapping[str, str]] = {
    "order_status": {
        "created": "已下单",
        "paid": "已支付",
        "shipped": "已发货",
        "delivered": "已送达",
        "completed": "已完成",
        "cancelled": "已取消",
        "refunding": "退款中",
        "refunded": "已退款",
    },
    "logistics": {
        "picked_up": "已揽收",
        "in_transit": "运输中",
        "out_for_delivery": "派送中",
        "delivered": "已签收",
        "exception": "配送异常",
        "returned": "已退回",
    },
}

_COMMON = "event_id event_time appid subject"
_ITEMS = "amount item_title item_count items_summary"


def _names(text: str) -> frozenset[str]:
    return frozenset(f"{_COMMON} {text}".split())


#: the value names a kind's ``data`` and ``page`` format strings may use
VALUE_NAMES: Mapping[str, frozenset[str]] = {
    "order_status": _names(
        f"order_id status status_text previous_status currency store_id {_ITEMS}"
    ),
    "logistics": _names(
        f"order_id state status status_text waybill carrier location text {_ITEMS}"
    ),
    "price_drop": _names(
        "sku_id title old_price new_price drop target_price currency store_id category_id"
    ),
    "restock": _names("sku_id title old_stock new_stock store_id category_id"),
    "promotion": _names(
        "promotion_id title starts_at ends_at discount description target_type target_id"
    ),
}
#: values in minor units (fen), rendered as yuan
MONEY_NAMES = frozenset({"amount", "old_price", "new_price", "drop", "target_price"})
#: values in epoch ms, rendered as a datetime in the app's time zone
TIME_NAMES = frozenset({"event_time", "starts_at", "ends_at"})

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_CLOCK = re.compile(r"^(\d{2}):(\d{2})(?::(\d{2}))?$")
_STATES_OK = ("developer", "trial", "formal")
_LANGS = ("zh_CN", "en_US", "zh_HK", "zh_TW")
_DAY_S = 86_400
#: a logistics event waiting for its order ends as ``orphan`` after this (wall clock); also the
#: default where an app has no config
DEFAULT_ORPHAN_AFTER_S = 3600


def placeholders(fmt: str) -> list[str]:
    """The ``{name}`` placeholders of a format string (``{{`` and ``}}`` escape braces)."""
    return _PLACEHOLDER.findall(fmt.replace("{{", "").replace("}}", ""))


@dataclass(frozen=True, slots=True)
class Cap:
    """At most ``max`` sends of one class per user within ``window_s`` (event time)."""

    max: int
    window_s: int


@dataclass(frozen=True, slots=True)
class QuietHours:
    """Local [start, end) when marketing waits; may wrap midnight (22:00 -> 08:00)."""

    start: dt.time
    end: dt.time

    def contains(self, local: dt.time) -> bool:
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end


@dataclass(frozen=True, slots=True)
class KindConfig:
    """How one kind of notification is rendered and when it fires."""

    kind: str
    template_id: str
    keywords: Mapping[str, str]  # keyword name -> WeChat type, layout order
    data: Mapping[str, str]  # keyword name -> format string over VALUE_NAMES[kind]
    page: str = ""
    miniprogram_state: str = "formal"
    lang: str = "zh_CN"
    notify_on: frozenset[str] = frozenset()
    status_text: Mapping[str, str] = field(default_factory=dict)
    enum_values: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    stale_after_s: int = _DAY_S
    #: status -> the variant used for candidates of that status (its own template and data;
    #: ``by_status`` in the TOML). Chosen by the pure decision rules (``for_status``)
    variants: Mapping[str, KindConfig] = field(default_factory=dict)
    #: why the kind (or this variant) cannot send: its template at WeChat does not fit the
    #: mapping (``wxsub.liveconfig.check_kind``); "" = it may send
    disabled: str = ""
    #: the kind's class (derived from ``kind``; a field, not a property: decide reads it per
    #: candidate, and a slot read is the cheapest)
    marketing: bool = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "marketing", self.kind in MARKETING_KINDS)

    def for_status(self, status: object) -> KindConfig:
        """The variant for ``status`` (order or logistics state), or the kind itself."""
        if self.variants and type(status) is str:
            return self.variants.get(status, self)
        return self

    def all_templates(self) -> tuple[KindConfig, ...]:
        """The kind itself and its variants: every (template, mapping) it may send with."""
        return (self, *self.variants.values())


@dataclass(frozen=True, slots=True)
class MerchantConfig:
    """Everything about one appid."""

    appid: str
    timezone: zoneinfo.ZoneInfo
    kinds: Mapping[str, KindConfig]
    transactional_cap: Cap | None = None
    marketing_cap: Cap | None = None
    quiet_hours: QuietHours | None = None
    collapse_window_s: int = 0
    orphan_after_s: int = DEFAULT_ORPHAN_AFTER_S
    dedupe_retention_s: int = 2 * _DAY_S
    sensitive_words: tuple[str, ...] = ()  # matched by wxsub.agents.rules.content
    #: the live-config version that carried this config (``wxsub merchants apply``); 0 = the
    #: ``worker.merchants`` file
    version: int = 0
    cards: CardConfig | None = None  # service cards (wxsub/merchant_cards.py)

    def kind(self, kind: str) -> KindConfig | None:
        return self.kinds.get(kind)

    def cap(self, marketing: bool) -> Cap | None:
        return self.marketing_cap if marketing else self.transactional_cap

    @property
    def max_cap_window_s(self) -> int:
        caps = [c.window_s for c in (self.transactional_cap, self.marketing_cap) if c]
        return max(caps, default=0)

    @property
    def max_stale_after_s(self) -> int:
        return max((k.stale_after_s for k in self.kinds.values()), default=_DAY_S)


@dataclass(frozen=True, slots=True)
class Merchants:
    """All merchant configs, by appid."""

    apps: Mapping[str, MerchantConfig]

    def app(self, appid: str) -> MerchantConfig | None:
        return self.apps.get(appid)


def load_merchants(path: str | Path) -> Merchants:
    """Read and validate a merchant config TOML file."""
    path = Path(path)
    return parse_merchants(read_toml(path, "merchants"), path.parent)


def parse_merchants(doc: Mapping[str, Any], base_dir: Path | None = None) -> Merchants:
    """Validate a parsed merchant config; word files are relative to ``base_dir``."""
    _only(doc, "", {"apps"})
    apps = _table(doc.get("apps", {}), "apps")
    return Merchants(
        {appid: _app(appid, _table(raw, f"apps.{appid}"), base_dir) for appid, raw in apps.items()}
    )


# --- one app -----------------------------------------------------------------------------------

_APP_KEYS = {
    "timezone",
    "kinds",
    "caps",
    "quiet_hours",
    "collapse_window_s",
    "orphan_after_s",
    "dedupe_retention_s",
    "sensitive_words",
    "sensitive_words_file",
    "cards",
}


def _app(appid: str, raw: Mapping[str, Any], base_dir: Path | None) -> MerchantConfig:
    key = f"apps.{appid}"
    _only(raw, key, _APP_KEYS)
    tz = _zone(f"{key}.timezone", raw.get("timezone", "Asia/Shanghai"))
    kinds_raw = _table(raw.get("kinds", {}), f"{key}.kinds")
    kinds = {name: _kind(f"{key}.kinds.{name}", name, k) for name, k in kinds_raw.items()}
    caps = _table(raw.get("caps", {}), f"{key}.caps")
    _only(caps, f"{key}.caps", {"transactional", "marketing"})
    stale = max((k.stale_after_s for k in kinds.values()), default=_DAY_S)
    retention = _int(raw, key, "dedupe_retention_s", stale + _DAY_S, minimum=1)
    if retention < stale:
        raise ConfigError(
            f"{key}.dedupe_retention_s", f"must be >= the largest stale_after_s ({stale})"
        )
    return MerchantConfig(
        appid=appid,
        timezone=tz,
        kinds=kinds,
        transactional_cap=_cap(f"{key}.caps.transactional", caps.get("transactional")),
        marketing_cap=_cap(f"{key}.caps.marketing", caps.get("marketing")),
        quiet_hours=_quiet(f"{key}.quiet_hours", raw.get("quiet_hours")),
        collapse_window_s=_int(raw, key, "collapse_window_s", 0, minimum=0),
        orphan_after_s=_int(raw, key, "orphan_after_s", DEFAULT_ORPHAN_AFTER_S, minimum=1),
        dedupe_retention_s=retention,
        sensitive_words=_words(key, raw, base_dir),
        cards=parse_cards(f"{key}.cards", raw.get("cards")),
    )


_KIND_KEYS = {
    "template_id",
    "content",
    "keywords",
    "data",
    "page",
    "miniprogram_state",
    "lang",
    "notify_on",
    "status_text",
    "enum_values",
    "stale_after_s",
    "by_status",
}
#: what a ``by_status`` variant may set; page, state, lang, status_text and staleness are
#: inherited from its kind unless given
_VARIANT_KEYS = {
    "template_id",
    "content",
    "keywords",
    "data",
    "page",
    "miniprogram_state",
    "lang",
    "enum_values",
}
_INHERITED = ("page", "miniprogram_state", "lang", "status_text", "stale_after_s")


def _kind(key: str, kind: str, raw: Any) -> KindConfig:
    raw = _table(raw, key)
    if kind not in NOTIFY_KINDS:
        raise ConfigError(key, f"unknown kind; one of {', '.join(NOTIFY_KINDS)}")
    _only(raw, key, _KIND_KEYS)
    base = _one_kind(key, kind, {k: v for k, v in raw.items() if k != "by_status"})
    if "by_status" not in raw:
        return base
    if kind not in _STATES:
        raise ConfigError(f"{key}.by_status", "only order_status and logistics have states")
    table = _table(raw["by_status"], f"{key}.by_status")
    variants = {}
    for status, vraw in table.items():
        vkey = f"{key}.by_status.{status}"
        if status not in base.notify_on:
            raise ConfigError(vkey, f"{status!r} is not in notify_on: it would never be used")
        vraw = _table(vraw, vkey)
        _only(vraw, vkey, _VARIANT_KEYS)
        merged = {k: raw[k] for k in _INHERITED if k in raw} | dict(vraw)
        variants[status] = _one_kind(vkey, kind, merged)
    return replace(base, variants=variants)


def _one_kind(key: str, kind: str, raw: Mapping[str, Any]) -> KindConfig:
    template_id = _str(raw, key, "template_id", required=True)
    data_raw = _table(raw.get("data"), f"{key}.data")
    data = {name: _str(data_raw, f"{key}.data", name, required=True) for name in data_raw}
    keywords = _keywords(key, raw, data)
    for name, fmt in data.items():
        _check_names(f"{key}.data.{name}", kind, fmt)
    page = _str(raw, key, "page")
    _check_names(f"{key}.page", kind, page)
    state = _str(raw, key, "miniprogram_state") or "formal"
    _choice(f"{key}.miniprogram_state", state, _STATES_OK)
    lang = _str(raw, key, "lang") or "zh_CN"
    _choice(f"{key}.lang", lang, _LANGS)
    return KindConfig(
        kind=kind,
        template_id=template_id,
        keywords=keywords,
        data=data,
        page=page,
        miniprogram_state=state,
        lang=lang,
        notify_on=_notify_on(key, kind, raw.get("notify_on")),
        status_text=_status_text(key, kind, raw.get("status_text")),
        enum_values=_enums(key, raw.get("enum_values"), keywords),
        stale_after_s=_int(raw, key, "stale_after_s", _DAY_S, minimum=1),
    )


def _keywords(key: str, raw: Mapping[str, Any], data: Mapping[str, str]) -> dict[str, str]:
    """Keyword name -> type, from ``content``, an explicit ``keywords`` table, or the names."""
    if "content" in raw and "keywords" in raw:
        raise ConfigError(f"{key}.keywords", "give content or keywords, not both")
    if "content" in raw:
        try:
            parsed = parse_content(_str(raw, key, "content"))
        except ValueError as exc:
            raise ConfigError(f"{key}.content", str(exc)) from None
        if not parsed:
            raise ConfigError(f"{key}.content", "has no {{keyword.DATA}} placeholder")
        keywords = {kw.name: kw.type for kw in parsed}
    elif "keywords" in raw:
        table = _table(raw["keywords"], f"{key}.keywords")
        keywords = {n: _str(table, f"{key}.keywords", n, required=True) for n in table}
    else:
        keywords = {name: keyword_type(name) for name in data}
    for name, type_ in keywords.items():
        if type_ not in TYPES:
            raise ConfigError(f"{key}.keywords.{name}", f"unknown keyword type {type_!r}")
    if not data:
        raise ConfigError(f"{key}.data", "required: keyword -> format string")
    for name in keywords:
        if name not in data:
            raise ConfigError(f"{key}.data.{name}", "the template has this keyword: map it")
    for name in data:
        if name not in keywords:
            raise ConfigError(f"{key}.data.{name}", "not a keyword of the template")
    return keywords


def _check_names(key: str, kind: str, fmt: str) -> None:
    for name in placeholders(fmt):
        if name not in VALUE_NAMES[kind]:
            known = ", ".join(sorted(VALUE_NAMES[kind]))
            raise ConfigError(key, f"unknown value {{{name}}}; {kind} offers {known}")


def _notify_on(key: str, kind: str, raw: Any) -> frozenset[str]:
    if kind not in _STATES:
        if raw is not None:
            raise ConfigError(f"{key}.notify_on", "only order_status and logistics have states")
        return frozenset()
    if raw is None:
        return frozenset(_DEFAULT_NOTIFY[kind])
    if not isinstance(raw, list) or not all(isinstance(s, str) for s in raw):
        raise ConfigError(f"{key}.notify_on", "must be a list of states")
    for state in raw:
        if state not in _STATES[kind]:
            raise ConfigError(
                f"{key}.notify_on", f"unknown state {state!r}; one of {', '.join(_STATES[kind])}"
            )
    return frozenset(raw)


def _status_text(key: str, kind: str, raw: Any) -> dict[str, str]:
    out = dict(DEFAULT_STATUS_TEXT.get(kind, {}))
    table = _table(raw if raw is not None else {}, f"{key}.status_text")
    for state, text in table.items():
        skey = f"{key}.status_text.{state}"
        if kind in _STATES and state not in _STATES[kind]:
            raise ConfigError(skey, "unknown state")
        if not isinstance(text, str) or check("phrase", text) is not None:
            raise ConfigError(skey, "must be a phrase: 1 to 5 Chinese characters")
        out[state] = text
    return out


def _enums(key: str, raw: Any, keywords: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    table = _table(raw if raw is not None else {}, f"{key}.enum_values")
    out: dict[str, tuple[str, ...]] = {}
    for name, values in table.items():
        if keywords.get(name) != "enum":
            raise ConfigError(f"{key}.enum_values.{name}", "not an enum keyword of the template")
        if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
            raise ConfigError(f"{key}.enum_values.{name}", "must be a list of strings")
        out[name] = tuple(values)
    for name, type_ in keywords.items():
        if type_ == "enum" and name not in out:
            raise ConfigError(f"{key}.enum_values.{name}", "required for an enum keyword")
    return out


def _cap(key: str, raw: Any) -> Cap | None:
    if raw is None:
        return None
    table = _table(raw, key)
    _only(table, key, {"max", "window_s"})
    return Cap(
        max=_int(table, key, "max", None, minimum=0),
        window_s=_int(table, key, "window_s", None, minimum=1),
    )


def _quiet(key: str, raw: Any) -> QuietHours | None:
    if raw is None:
        return None
    table = _table(raw, key)
    _only(table, key, {"start", "end"})
    start = _clock(f"{key}.start", table.get("start"))
    end = _clock(f"{key}.end", table.get("end"))
    if start == end:
        raise ConfigError(f"{key}.end", "must differ from start")
    return QuietHours(start, end)


def _clock(key: str, raw: Any) -> dt.time:
    match = _CLOCK.match(raw) if isinstance(raw, str) else None
    if match is None:
        raise ConfigError(key, "required: a local time like 22:00 or 22:00:30")
    h, m, s = (int(g) if g else 0 for g in match.groups())
    if h > 23 or m > 59 or s > 59:
        raise ConfigError(key, f"not a valid time of day: {raw!r}")
    return dt.time(h, m, s)


def _zone(key: str, raw: Any) -> zoneinfo.ZoneInfo:
    if not isinstance(raw, str) or not raw:
        raise ConfigError(key, "must be a time zone name like Asia/Shanghai")
    try:
        return zoneinfo.ZoneInfo(raw)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(key, f"unknown time zone {raw!r}") from None


def _words(key: str, raw: Mapping[str, Any], base_dir: Path | None) -> tuple[str, ...]:
    inline = raw.get("sensitive_words", [])
    if not isinstance(inline, list) or not all(isinstance(w, str) for w in inline):
        raise ConfigError(f"{key}.sensitive_words", "must be a list of strings")
    words = [w.strip() for w in inline]
    file = raw.get("sensitive_words_file")
    if file is not None:
        if not isinstance(file, str) or not file:
            raise ConfigError(f"{key}.sensitive_words_file", "must be a path")
        path = Path(file) if base_dir is None else base_dir / file
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{key}.sensitive_words_file", f"cannot read {path}: {exc}") from None
        words += [ln.strip() for ln in lines if not ln.lstrip().startswith("#")]
    return tuple(sorted({w for w in words if w}))


# --- small validators ----------------------------------------------------------------------------


def _table(raw: Any, key: str) -> Mapping[str, Any]:
    if raw is None:
        raise ConfigError(key, "required table")
    if not isinstance(raw, Mapping):
        raise ConfigError(key, "must be a table")
    return raw


def _only(table: Mapping[str, Any], key: str, allowed: set[str]) -> None:
    for name in table:
        if name not in allowed:
            raise ConfigError(f"{key}.{name}" if key else name, "unknown setting")


def _str(table: Mapping[str, Any], key: str, name: str, *, required: bool = False) -> str:
    raw = table.get(name)
    if raw is None and not required:
        return ""
    if not isinstance(raw, str) or (required and not raw):
        raise ConfigError(f"{key}.{name}", "required string" if required else "must be a string")
    return raw


def _int(table: Mapping[str, Any], key: str, name: str, default: int | None, minimum: int) -> int:
    raw = table.get(name, default)
    if raw is None:
        raise ConfigError(f"{key}.{name}", "required integer")
    if not isinstance(raw, int) or isinstance(raw, bool) or raw < minimum:
        raise ConfigError(f"{key}.{name}", f"must be an integer >= {minimum}; got {raw!r}")
    return raw


def _choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(key, f"must be one of {', '.join(choices)}; got {value!r}")

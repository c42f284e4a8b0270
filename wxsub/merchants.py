"""The merchant config: per mini program, which events notify whom, with which template, and how.

Read at start (``load_merchants``) or from the live-config topic (``wxsub.liveconfig``),
validated completely by the pydantic models of the TOML below, then built into the plain frozen
dataclasses of :mod:`wxsub.merchant_config` (re-exported here) that the decision rules read per
event. Every error is a :class:`~wxsub.errors.ConfigError` naming the key
(``apps.wx1.kinds.logistics.template_id``); ``wxsub merchants apply`` adds the TOML line. The
format is documented in ``deploy/merchants.example.toml`` and ``docs/policies.md``.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from wxsub.configmodel import Bad, Int, validate
from wxsub.errors import ConfigError
from wxsub.merchant_cards import CardsModel
from wxsub.merchant_config import (
    DAY_S,
    DEFAULT_NOTIFY,
    DEFAULT_ORPHAN_AFTER_S,
    DEFAULT_STATUS_TEXT,
    MONEY_NAMES,
    STATES,
    TIME_NAMES,
    VALUE_NAMES,
    Cap,
    KindConfig,
    MerchantConfig,
    Merchants,
    QuietHours,
    placeholders,
)
from wxsub.merchant_guards import (
    check_classes,
    parse_alerts,
    parse_class,
    parse_pause_thresholds,
)
from wxsub.retention import parse_retention
from wxsub.schemas.internal import NOTIFY_KINDS
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


def load_merchants(path: str | Path) -> Merchants:
    """Read and validate a merchant config TOML file."""
    path = Path(path)
    return parse_merchants(read_toml(path, "merchants"), path.parent)


def parse_merchants(doc: Mapping[str, Any], base_dir: Path | None = None) -> Merchants:
    """Validate a parsed merchant config; word files are relative to ``base_dir``."""
    model: _Doc = validate(_Doc, doc, context={"base_dir": base_dir})
    return Merchants({appid: app.build(appid) for appid, app in model.apps.items()})


# --- the TOML, as pydantic models ----------------------------------------------------------------

#: strict: a TOML value of the wrong type is an error (no "5" for 5), an unknown key too
_MODEL = ConfigDict(extra="forbid", strict=True)
_CLOCK = re.compile(r"^(\d{2}):(\d{2})(?::(\d{2}))?$")
Text = Annotated[str, Field(min_length=1)]


def _nested(model: type[BaseModel], name: str, raw: Any, context: Any) -> Any:
    """``raw`` validated as ``model`` under key ``name`` (errors keep their full key)."""
    try:
        return model.model_validate(raw, context=context)
    except ValidationError as exc:
        raise Bad(name, "", inner=exc) from None


class _Mapping(BaseModel):
    """What a kind and a ``by_status`` variant both set: the template and its mapping.
    Validated with ``context["kind"]``, the kind it belongs to."""

    model_config = _MODEL
    template_id: Text
    content: str | None = None
    keywords: dict[str, Text] | None = None
    data: dict[str, Text]
    page: str | None = None
    miniprogram_state: Literal["developer", "trial", "formal"] | None = None
    lang: Literal["zh_CN", "en_US", "zh_HK", "zh_TW"] | None = None
    enum_values: dict[str, list[Text]] = Field(default_factory=dict)
    _keywords: dict[str, str] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _fits(self, info: ValidationInfo) -> _Mapping:
        kind = (info.context or {}).get("kind")
        if kind is None:  # an instance validated before, passed on by its container
            return self
        self._keywords = self._keyword_types()
        for name, fmt in self.data.items():
            _check_names(f"data.{name}", kind, fmt)
        _check_names("page", kind, self.page or "")
        for name in self.enum_values:
            if self._keywords.get(name) != "enum":
                raise Bad(f"enum_values.{name}", "not an enum keyword of the template")
        for name, type_ in self._keywords.items():
            if type_ == "enum" and name not in self.enum_values:
                raise Bad(f"enum_values.{name}", "required for an enum keyword")
        return self

    def _keyword_types(self) -> dict[str, str]:
        """Keyword name -> type, from ``content``, an explicit ``keywords`` table, or the names."""
        if self.content is not None and self.keywords is not None:
            raise Bad("keywords", "give content or keywords, not both")
        if self.content is not None:
            try:
                parsed = parse_content(self.content)
            except ValueError as exc:
                raise Bad("content", str(exc)) from None
            if not parsed:
                raise Bad("content", "has no {{keyword.DATA}} placeholder")
            keywords = {kw.name: kw.type for kw in parsed}
        elif self.keywords is not None:
            keywords = dict(self.keywords)
        else:
            keywords = {name: keyword_type(name) for name in self.data}
        for name, type_ in keywords.items():
            if type_ not in TYPES:
                raise Bad(f"keywords.{name}", f"unknown keyword type {type_!r}")
        if not self.data:
            raise Bad("data", "required: keyword -> format string")
        for name in keywords:
            if name not in self.data:
                raise Bad(f"data.{name}", "the template has this keyword: map it")
        for name in self.data:
            if name not in keywords:
                raise Bad(f"data.{name}", "not a keyword of the template")
        return keywords

    def build(self, kind: str, base: _Kind) -> KindConfig:
        """The runtime config; what this does not set comes from ``base`` (its kind)."""
        return KindConfig(
            kind=kind,
            template_id=self.template_id,
            keywords=self._keywords,
            data=dict(self.data),
            page=self.page if self.page is not None else base.page or "",
            miniprogram_state=self.miniprogram_state or base.miniprogram_state or "formal",
            lang=self.lang or base.lang or "zh_CN",
            notify_on=base.notify(kind) if self is base else frozenset(DEFAULT_NOTIFY[kind]),
            status_text=base.texts(kind),
            enum_values={name: tuple(values) for name, values in self.enum_values.items()},
            stale_after_s=base.stale_after_s,
            message_class=base.message_class or "",
        )


class _Kind(_Mapping):
    """``[apps.<appid>.kinds.<kind>]``."""

    notify_on: list[str] | None = None
    status_text: dict[str, str] | None = None
    stale_after_s: Annotated[Int, Field(ge=1)] = DAY_S
    by_status: dict[str, _Mapping] | None = None
    # ``class``: service | marketing (merchant_guards.parse_class; "" = by kind)
    message_class: Any = Field(default=None, alias="class")

    @field_validator("by_status", mode="before")
    @classmethod
    def _variants(cls, raw: Any, info: ValidationInfo) -> Any:
        if raw is None or not isinstance(raw, Mapping):
            return raw
        if (info.context or {})["kind"] not in STATES:
            raise ValueError("only order_status and logistics have states")
        return {s: _nested(_Mapping, s, v, info.context) for s, v in raw.items()}

    @model_validator(mode="after")
    def _states(self, info: ValidationInfo) -> _Kind:
        kind = (info.context or {}).get("kind")
        if kind is None:  # validated before (see _fits)
            return self
        states = STATES.get(kind)
        if states is None and self.notify_on is not None:
            raise Bad("notify_on", "only order_status and logistics have states")
        for state in self.notify_on or ():
            if states is not None and state not in states:
                raise Bad("notify_on", f"unknown state {state!r}; one of {', '.join(states)}")
        for state, text in (self.status_text or {}).items():
            if states is not None and state not in states:
                raise Bad(f"status_text.{state}", "unknown state")
            if check("phrase", text) is not None:
                raise Bad(f"status_text.{state}", "must be a phrase: 1 to 5 Chinese characters")
        try:
            self.message_class = parse_class("class", kind, self.message_class)
        except ConfigError as exc:
            raise Bad("class", str(exc).split(": ", 1)[-1]) from None
        notify = self.notify(kind)
        for status in self.by_status or {}:
            if status not in notify:
                raise Bad(
                    f"by_status.{status}", f"{status!r} is not in notify_on: it would never be used"
                )
        return self

    def notify(self, kind: str) -> frozenset[str]:
        if kind not in STATES:
            return frozenset()
        return frozenset(self.notify_on if self.notify_on is not None else DEFAULT_NOTIFY[kind])

    def texts(self, kind: str) -> dict[str, str]:
        return {**DEFAULT_STATUS_TEXT.get(kind, {}), **(self.status_text or {})}

    def build_kind(self, kind: str) -> KindConfig:
        base = self.build(kind, self)
        if not self.by_status:
            return base
        variants = {s: v.build(kind, self) for s, v in self.by_status.items()}
        return replace(base, variants=variants)


class _Cap(BaseModel):
    model_config = _MODEL
    max: Annotated[Int, Field(ge=0)]
    window_s: Annotated[Int, Field(ge=1)]


class _Caps(BaseModel):
    model_config = _MODEL
    transactional: _Cap | None = None
    marketing: _Cap | None = None


def _clock(raw: Any) -> dt.time:
    match = _CLOCK.match(raw) if isinstance(raw, str) else None
    if match is None:
        raise ValueError("required: a local time like 22:00 or 22:00:30")
    h, m, s = (int(g) if g else 0 for g in match.groups())
    if h > 23 or m > 59 or s > 59:
        raise ValueError(f"not a valid time of day: {raw!r}")
    return dt.time(h, m, s)


Clock = Annotated[dt.time, PlainValidator(_clock)]


class _Quiet(BaseModel):
    model_config = _MODEL
    start: Clock
    end: Clock

    @model_validator(mode="after")
    def _differ(self) -> _Quiet:
        if self.start == self.end:
            raise Bad("end", "must differ from start")
        return self


def _zone(raw: Any) -> zoneinfo.ZoneInfo:
    if not isinstance(raw, str) or not raw:
        raise ValueError("must be a time zone name like Asia/Shanghai")
    try:
        return zoneinfo.ZoneInfo(raw)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {raw!r}") from None


class _App(BaseModel):
    """``[apps.<appid>]``."""

    model_config = ConfigDict(extra="forbid", strict=True, arbitrary_types_allowed=True)
    timezone: Annotated[zoneinfo.ZoneInfo, PlainValidator(_zone)] = zoneinfo.ZoneInfo(
        "Asia/Shanghai"
    )
    kinds: dict[str, _Kind] = Field(default_factory=dict)
    caps: _Caps = Field(default_factory=_Caps)
    quiet_hours: _Quiet | None = None
    collapse_window_s: Annotated[Int, Field(ge=0)] = 0
    orphan_after_s: Annotated[Int, Field(ge=1)] = DEFAULT_ORPHAN_AFTER_S
    dedupe_retention_s: Annotated[Int, Field(ge=1)] | None = None
    sensitive_words: list[str] = Field(default_factory=list)
    sensitive_words_file: Text | None = None
    cards: CardsModel | None = None
    # validated by wxsub.retention (its own rules, against the largest stale_after_s)
    retention: dict[str, Any] | None = None
    # validated by wxsub.merchant_guards (restock limit, price collapse; feedback pauses)
    alerts: dict[str, Any] | None = None
    pauses: dict[str, Any] | None = None
    _words: tuple[str, ...] = PrivateAttr(default=())

    @field_validator("kinds", mode="before")
    @classmethod
    def _kinds(cls, raw: Any, info: ValidationInfo) -> Any:
        if not isinstance(raw, Mapping):
            return raw
        for name in raw:
            if name not in NOTIFY_KINDS:
                raise Bad(name, f"unknown kind; one of {', '.join(NOTIFY_KINDS)}")
        ctx = info.context or {}
        return {k: _nested(_Kind, k, v, {**ctx, "kind": k}) for k, v in raw.items()}

    @model_validator(mode="after")
    def _app_rules(self, info: ValidationInfo) -> _App:
        stale = self.max_stale()
        if self.dedupe_retention_s is not None and self.dedupe_retention_s < stale:
            raise Bad("dedupe_retention_s", f"must be >= the largest stale_after_s ({stale})")
        self._words = _words(self, (info.context or {}).get("base_dir"))
        return self

    def max_stale(self) -> int:
        return max((k.stale_after_s for k in self.kinds.values()), default=DAY_S)

    def build(self, appid: str) -> MerchantConfig:
        caps = self.caps
        key = f"apps.{appid}"
        kinds = {name: kind.build_kind(name) for name, kind in self.kinds.items()}
        check_classes(
            [(f"{key}.kinds.{n}", t.template_id, t.message_class)
             for n, kc in kinds.items() for t in kc.all_templates()]
        )  # fmt: skip
        return MerchantConfig(
            appid=appid,
            timezone=self.timezone,
            kinds=kinds,
            transactional_cap=_cap(caps.transactional),
            marketing_cap=_cap(caps.marketing),
            quiet_hours=QuietHours(self.quiet_hours.start, self.quiet_hours.end)
            if self.quiet_hours
            else None,
            collapse_window_s=self.collapse_window_s,
            orphan_after_s=self.orphan_after_s,
            dedupe_retention_s=self.dedupe_retention_s or self.max_stale() + DAY_S,
            sensitive_words=self._words,
            cards=self.cards.build() if self.cards else None,
            retention=parse_retention(
                f"apps.{appid}.retention", self.retention, stale_s=self.max_stale()
            ),
            alerts=parse_alerts(f"{key}.alerts", self.alerts),
            pause_thresholds=parse_pause_thresholds(f"{key}.pauses", self.pauses),
        )


class _Doc(BaseModel):
    model_config = _MODEL
    apps: dict[str, _App] = Field(default_factory=dict)


def _cap(model: _Cap | None) -> Cap | None:
    return Cap(model.max, model.window_s) if model is not None else None


def _check_names(key: str, kind: str, fmt: str) -> None:
    for name in placeholders(fmt):
        if name not in VALUE_NAMES[kind]:
            known = ", ".join(sorted(VALUE_NAMES[kind]))
            raise Bad(key, f"unknown value {{{name}}}; {kind} offers {known}")


def _words(app: _App, base_dir: Path | None) -> tuple[str, ...]:
    words = [w.strip() for w in app.sensitive_words]
    file = app.sensitive_words_file
    if file is not None:
        path = Path(file) if base_dir is None else base_dir / file
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise Bad("sensitive_words_file", f"cannot read {path}: {exc}") from None
        words += [ln.strip() for ln in lines if not ln.lstrip().startswith("#")]
    return tuple(sorted({w for w in words if w}))

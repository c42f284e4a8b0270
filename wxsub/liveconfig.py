"""Live configuration: the merchant config and WeChat's template lists as compacted topics.

Two compacted topics, one record per mini program (key: the appid), followed by every worker:

* ``merchants`` (written by ``wxsub merchants apply``): ``{"appid", "version", "applied_at",
  "app"}`` where ``app`` is the app's table of the merchants TOML (sensitive-word files already
  read into ``sensitive_words``), or ``null`` when the apply removed the app. Every record of one
  apply carries the same ``version`` (one more than the highest live one).
* ``templates`` (written by ``wxsub templates pull`` and the worker's scheduled pull):
  ``{"appid", "pulled_at", "templates": [{"id", "title", "content", "type", "enums"}]}``, the
  mini program's private templates as gettemplate lists them.

Everything here is pure: decoding records, checking a kind's mapping against its template
(:func:`check_kind`), and building the :class:`~wxsub.merchants.Merchants` that decisions use
(:func:`effective`): a kind whose template does not fit is kept but ``disabled`` with the reason,
so its candidates end as ``template_unfit`` and nothing WeChat would refuse is ever sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from wxsub.errors import ConfigError
from wxsub.merchants import KindConfig, MerchantConfig, Merchants, parse_merchants
from wxsub.wechat.templates import parse_content

__all__ = [
    "AppRecord",
    "AppTemplates",
    "Problem",
    "TemplateInfo",
    "check_app",
    "check_kind",
    "decode_app",
    "decode_templates",
    "effective",
    "encode_app",
    "encode_templates",
    "merchants_of",
]


# --- the templates topic --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TemplateInfo:
    """One private template as WeChat lists it: its keywords (name -> type, layout order) and
    the enum values of its enum keywords."""

    id: str
    title: str
    content: str
    type: int = 2
    enums: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def keywords(self) -> dict[str, str]:
        try:
            return {kw.name: kw.type for kw in parse_content(self.content)}
        except ValueError:
            return {}

    def to_doc(self) -> dict[str, Any]:
        enums = {k: list(v) for k, v in self.enums.items()}
        return {"id": self.id, "title": self.title, "content": self.content, "type": self.type,
                "enums": enums}  # fmt: skip


@dataclass(frozen=True, slots=True)
class AppTemplates:
    """A mini program's template list at the time of a pull."""

    appid: str
    pulled_at: int
    templates: Mapping[str, TemplateInfo]  # by template id


def encode_templates(app: AppTemplates) -> bytes:
    docs = [t.to_doc() for t in app.templates.values()]
    return orjson.dumps({"appid": app.appid, "pulled_at": app.pulled_at, "templates": docs})


def decode_templates(raw: bytes) -> AppTemplates:
    """ValueError when the record is not a template list."""
    doc = orjson.loads(raw)
    if not isinstance(doc, dict) or not isinstance(doc.get("templates"), list):
        raise ValueError("not a template list record")
    out = {}
    for t in doc["templates"]:
        enums = {str(k): tuple(str(x) for x in v) for k, v in (t.get("enums") or {}).items()}
        info = TemplateInfo(str(t["id"]), str(t.get("title", "")), str(t.get("content", "")),
                            int(t.get("type", 2)), enums)  # fmt: skip
        out[info.id] = info
    return AppTemplates(str(doc.get("appid", "")), int(doc.get("pulled_at", 0)), out)


# --- the merchants topic --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AppRecord:
    """One mini program's entry of an apply: its TOML table (None: removed) and the version."""

    appid: str
    version: int
    applied_at: int
    app: Mapping[str, Any] | None


def encode_app(rec: AppRecord) -> bytes:
    return orjson.dumps(
        {"appid": rec.appid, "version": rec.version, "applied_at": rec.applied_at, "app": rec.app}
    )


def decode_app(raw: bytes) -> AppRecord:
    """ValueError when the record is not a merchants record."""
    doc = orjson.loads(raw)
    if not isinstance(doc, dict) or not isinstance(doc.get("version"), int):
        raise ValueError("not a merchants record")
    app = doc.get("app")
    return AppRecord(str(doc["appid"]), doc["version"], int(doc.get("applied_at", 0)), app)


def merchants_of(records: Iterable[AppRecord]) -> dict[str, MerchantConfig]:
    """The configs the records hold (removed apps left out), each stamped with its version.
    ConfigError (naming the key) for a record that does not validate."""
    out = {}
    for rec in records:
        if rec.app is None:
            continue
        parsed = parse_merchants({"apps": {rec.appid: rec.app}}).apps[rec.appid]
        out[rec.appid] = replace(parsed, version=rec.version)
    return out


# --- checking mappings against templates ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Problem:
    """A kind (or one of its ``by_status`` variants) whose template does not fit."""

    appid: str
    kind: str
    template_id: str
    reason: str
    key: str  # the merchants TOML key it is about


def check_kind(kind: KindConfig, templates: Mapping[str, TemplateInfo]) -> str | None:
    """Why ``kind``'s mapping does not fit its template at WeChat, or None when it does.

    The template must exist; its keywords and the mapped ones must be the same set, each with
    the type the renderer produces (``kind.keywords``); every enum value the mapping may
    render must be in the template's ``keywordEnumValueList``."""
    tpl = templates.get(kind.template_id)
    if tpl is None:
        return f"template {kind.template_id} is not in the mini program's template list"
    at_wechat = tpl.keywords
    for name in kind.data:
        if name not in at_wechat:
            return f"keyword {name} is not in template {tpl.id}"
    for name, type_ in at_wechat.items():
        mapped = kind.keywords.get(name)
        if mapped is None:
            return f"template {tpl.id} keyword {name} is not mapped"
        if mapped != type_:
            return f"keyword {name} is a {type_} in template {tpl.id}, mapped as {mapped}"
    for name, values in kind.enum_values.items():
        allowed = set(tpl.enums.get(name, ()))
        extra = [v for v in values if v not in allowed]
        if extra:
            return f"enum values {extra} of {name} are not in template {tpl.id}'s list"
    return None


def check_app(cfg: MerchantConfig, templates: Mapping[str, TemplateInfo]) -> list[Problem]:
    """Every kind and variant of ``cfg`` that does not fit ``templates``."""
    out = []
    for name, kind in cfg.kinds.items():
        key = f"apps.{cfg.appid}.kinds.{name}"
        for status, variant in (("", kind), *kind.variants.items()):
            why = check_kind(variant, templates)
            if why is not None:
                vkey = f"{key}.by_status.{status}" if status else key
                out.append(Problem(cfg.appid, name, variant.template_id, why, vkey))
    return out


def _disable(kind: KindConfig, templates: Mapping[str, TemplateInfo]) -> KindConfig:
    variants = {s: _disable(v, templates) for s, v in kind.variants.items()}
    why = check_kind(kind, templates) or ""
    if not why and not kind.disabled and variants == dict(kind.variants):
        return kind
    return replace(kind, disabled=why, variants=variants)


def effective(
    apps: Mapping[str, MerchantConfig], templates: Mapping[str, AppTemplates]
) -> tuple[Merchants, list[Problem]]:
    """The config decisions use: every kind checked against its app's pulled template list.

    An app without a pulled list is used as configured (nothing to check against yet); a kind
    or variant that does not fit is kept, ``disabled`` with the reason (its candidates end as
    ``template_unfit``), and listed in the problems. Other kinds and apps are untouched."""
    out: dict[str, MerchantConfig] = {}
    problems: list[Problem] = []
    for appid, cfg in apps.items():
        listed = templates.get(appid)
        if listed is None:
            out[appid] = cfg
            continue
        problems += check_app(cfg, listed.templates)
        kinds = {n: _disable(k, listed.templates) for n, k in cfg.kinds.items()}
        out[appid] = replace(cfg, kinds=kinds)
    return Merchants(out), problems


def refuse_problems(problems: list[Problem]) -> None:
    """ConfigError for the first problem (``apply`` refuses a config that does not fit)."""
    if problems:
        p = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConfigError(p.key, f"{p.reason}{more}")

"""``wxsub merchants apply FILE | show`` and ``wxsub templates [pull | show]``: live configuration.

``merchants apply FILE`` validates the whole merchants TOML (every error names its key and
line; nothing is written unless all of it is valid), checks every kind's mapping against the
template lists pulled from WeChat (a mapping that does not fit is refused the same way), then
writes one record per mini program to the compacted ``merchants`` topic in one transaction,
all with the next version; an app live before and missing from FILE gets a removal record.
Running workers follow the topic and decide with the new version from then on.

``templates pull`` asks WeChat (gettemplate) for the template list of every app in
``wechat.apps`` and writes it to the compacted ``templates`` topic; ``templates`` shows it.
``docs/templates-and-config.md`` explains the flow.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from wxsub.errors import ConfigError
from wxsub.liveconfig import (
    AppRecord,
    AppTemplates,
    check_app,
    decode_app,
    decode_templates,
    encode_app,
    encode_templates,
    refuse_problems,
)
from wxsub.merchants import Merchants, parse_merchants
from wxsub.settings import Settings, load_settings
from wxsub.streams.connection import client_kwargs
from wxsub.streams.reading import read_topic
from wxsub.streams.topics import ensure_topics
from wxsub.tomlfile import read_toml

__all__ = ["apply_merchants", "line_of", "live_records", "live_templates", "pull_templates"]


# --- reading what is live -------------------------------------------------------------------------


async def live_records(settings: Settings) -> dict[str, AppRecord]:
    """The merchants topic's latest record per appid."""
    out: dict[str, AppRecord] = {}
    for rec in await read_topic(settings.kafka.bootstrap, settings.kafka.topic("merchants")):
        if rec.value is not None:
            app = decode_app(rec.value)
            out[app.appid] = app
    return out


async def live_templates(settings: Settings) -> dict[str, AppTemplates]:
    """The templates topic's latest list per appid."""
    out: dict[str, AppTemplates] = {}
    for rec in await read_topic(settings.kafka.bootstrap, settings.kafka.topic("templates")):
        if rec.value is not None:
            listed = decode_templates(rec.value)
            out[listed.appid] = listed
    return out


# --- apply ----------------------------------------------------------------------------------------

_HEADER = re.compile(r"^\s*\[+\s*([^\]]+?)\s*\]+")
_ASSIGN = re.compile(r"^\s*([A-Za-z0-9_\-\".]+)\s*=")


def line_of(text: str, key: str) -> int | None:
    """The line (1-based) of the TOML ``text`` where dotted ``key`` (or its nearest enclosing
    key) is written; None when nothing of it is."""
    best: tuple[int, int] | None = None  # (matched parts, line)
    want = key.split(".")
    table: list[str] = []
    for n, line in enumerate(text.splitlines(), 1):
        header = _HEADER.match(line)
        if header:
            table = [p.strip().strip('"') for p in header.group(1).split(".")]
            full = table
        else:
            assign = _ASSIGN.match(line)
            if not assign:
                continue
            full = table + [p.strip().strip('"') for p in assign.group(1).split(".")]
        if full == want[: len(full)] and (best is None or len(full) > best[0]):
            best = (len(full), n)
    return best[1] if best else None


def _validated(path: Path) -> tuple[Merchants, dict[str, Any], str]:
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    doc = read_toml(path, "merchants")
    try:
        merchants = parse_merchants(doc, path.parent)
    except ConfigError as exc:
        raise _with_line(exc, path, text) from None
    return merchants, doc, text


def _with_line(exc: ConfigError, path: Path, text: str) -> ConfigError:
    line = line_of(text, exc.key)
    where = f"{path}:{line}" if line else str(path)
    message = str(exc).split(": ", 1)[1] if ": " in str(exc) else str(exc)
    return ConfigError(exc.key, f"{message} ({where})")


async def apply_merchants(settings: Settings, path: Path, now_ms: int | None = None) -> int:
    """Validate ``path`` completely, check it against the pulled templates, and publish it as
    the next version; returns that version. ConfigError (key and line) and nothing written when
    any of it is wrong."""
    merchants, doc, text = _validated(path)
    await ensure_topics(settings.kafka, settings.worker.app_id)
    templates = await live_templates(settings)
    problems = [
        p
        for appid, cfg in merchants.apps.items()
        if appid in templates
        for p in check_app(cfg, templates[appid].templates)
    ]
    try:
        refuse_problems(problems)
    except ConfigError as exc:
        raise _with_line(exc, path, text) from None
    live = await live_records(settings)
    version = max((r.version for r in live.values()), default=0) + 1
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    records = [
        AppRecord(appid, version, now_ms, _app_table(doc["apps"][appid], cfg.sensitive_words))
        for appid, cfg in merchants.apps.items()
    ]
    records += [
        AppRecord(appid, version, now_ms, None)
        for appid, rec in live.items()
        if rec.app is not None and appid not in merchants.apps
    ]
    await _produce(settings, "merchants", [(r.appid, encode_app(r)) for r in records])
    return version


def _app_table(raw: Mapping[str, Any], words: tuple[str, ...]) -> dict[str, Any]:
    """The app's TOML table as published: word files read in (workers have no file)."""
    table = {k: v for k, v in raw.items() if k != "sensitive_words_file"}
    if words:
        table["sensitive_words"] = list(words)
    return table


async def _produce(settings: Settings, logical: str, items: list[tuple[str, bytes]]) -> None:
    """All of ``items`` in one transaction (followers read committed: all or nothing)."""
    producer = AIOKafkaProducer(
        **client_kwargs(settings.kafka),
        transactional_id=f"{settings.worker.app_id}-config-{logical}",
        enable_idempotence=True,
        acks="all",
    )
    await producer.start()
    try:
        async with producer.transaction():
            for key, value in items:
                await producer.send(settings.kafka.topic(logical), value, key=key.encode())
    finally:
        await producer.stop()


# --- templates ------------------------------------------------------------------------------------


async def pull_templates(settings: Settings, now_ms: int | None = None) -> dict[str, int]:
    """Pull every ``wechat.apps`` template list and publish it; appid -> template count."""
    from wxsub.agents.templates_pull import template_info
    from wxsub.wechat.client import WeChatClient

    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    await ensure_topics(settings.kafka, settings.worker.app_id)
    lists: list[AppTemplates] = []
    async with WeChatClient(settings.wechat) as client:
        for appid in sorted(settings.wechat.apps):
            listed = await client.get_templates(appid)
            templates = {t.template_id: template_info(t) for t in listed}
            lists.append(AppTemplates(appid, now_ms, templates))
    await _produce(settings, "templates", [(a.appid, encode_templates(a)) for a in lists])
    return {a.appid: len(a.templates) for a in lists}


# --- the command line -----------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    m = subparsers.add_parser(
        "merchants",
        help="apply or show the live merchant config",
        description="Apply a merchants TOML to the running workers (validated and checked "
        "against the pulled WeChat templates first), or show what is live.",
    )
    msub = m.add_subparsers(dest="action", metavar="ACTION", required=True)
    ap = msub.add_parser("apply", help="validate FILE and make it the live config")
    ap.add_argument("file", type=Path)
    ap.set_defaults(func=_apply)
    sp = msub.add_parser("show", help="print the live config, per mini program")
    sp.set_defaults(func=_show_merchants)
    for p in (ap, sp):
        p.add_argument("--config", default=argparse.SUPPRESS, help="settings TOML file")
    t = subparsers.add_parser(
        "templates",
        help="pull or show WeChat's template lists",
        description="Pull every app's template list from WeChat (gettemplate) into the "
        "templates topic, or show the pulled lists (the default).",
    )
    t.add_argument("action", nargs="?", choices=("show", "pull"), default="show")
    t.add_argument("--config", default=argparse.SUPPRESS, help="settings TOML file")
    t.set_defaults(func=_templates)


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(getattr(args, "config", None))


def _apply(args: argparse.Namespace) -> int:
    version = asyncio.run(apply_merchants(_settings(args), args.file))
    print(f"applied {args.file} as merchant-config version {version}")
    return 0


def _show_merchants(args: argparse.Namespace) -> int:
    settings = _settings(args)
    records = asyncio.run(live_records(settings))
    templates = asyncio.run(live_templates(settings))
    if not records:
        print("no live merchant config (workers use worker.merchants)")
        return 0
    for appid, rec in sorted(records.items()):
        if rec.app is None:
            print(f"{appid}  version {rec.version}  removed")
            continue
        cfg = parse_merchants({"apps": {appid: rec.app}}).apps[appid]
        print(f"{appid}  version {rec.version}")
        listed = templates.get(appid)
        bad = {p.key: p.reason for p in check_app(cfg, listed.templates)} if listed else {}
        for name, kind in cfg.kinds.items():
            for status, v in (("", kind), *kind.variants.items()):
                key = f"apps.{appid}.kinds.{name}" + (f".by_status.{status}" if status else "")
                label = f"{name}[{status}]" if status else name
                state = f"DISABLED: {bad[key]}" if key in bad else "ok"
                state = state if listed else "not checked (no template list pulled)"
                print(f"  {label:<24} {v.template_id:<44} {state}")
    return 0


def _templates(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.action == "pull":
        for appid, n in asyncio.run(pull_templates(settings)).items():
            print(f"{appid}: {n} templates")
        return 0
    for appid, listed in sorted(asyncio.run(live_templates(settings)).items()):
        print(f"{appid}  pulled at {listed.pulled_at}")
        for t in listed.templates.values():
            kws = ", ".join(f"{n}:{ty}" for n, ty in t.keywords.items())
            print(f"  {t.id}  {t.title}  [{kws}]")
            for name, values in t.enums.items():
                print(f"    {name}: {' | '.join(values)}")
    sys.stdout.flush()
    return 0

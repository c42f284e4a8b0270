"""The sandbox's world: apps, templates, users and their send credits, and the event hook.

A world is loaded from a TOML file (see ``deploy/sandbox-world.toml``) or a dict of the same
shape, and changed at run time through the admin API. ``reset()`` puts users and credits back
to what was loaded.

``on_event`` holds async callbacks (a later gateway push hooks in there), called with a dict
for every event WeChat would push: ``accept``/``reject`` -> ``subscribe_msg_popup_event``,
``revoke`` -> ``subscribe_msg_change_event``, a successful send (even one whose reply was
dropped) -> ``subscribe_msg_sent_event``::

    {"event": "subscribe_msg_popup_event", "appid": ..., "openid": ..., "time": 1700000000,
     "items": [{"template_id": ..., "status": "accept", "scene": 0}]}
    change items: {"template_id", "status": "reject"}
    sent items:   {"template_id", "msgid", "errcode": 0, "status": "success"}

Callbacks run as tasks, so a slow one never delays a response; ``drain_events()`` awaits them
and a failing one is logged.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import random
import string
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from wxsub.errors import ConfigError
from wxsub.settings import Secret
from wxsub.tomlfile import read_toml
from wxsub.wechat.keywords import TYPES
from wxsub.wechat.templates import TemplateKeyword, parse_content
from wxsub_sandbox.tokens import TokenConfig

__all__ = [
    "App",
    "EventHook",
    "Template",
    "World",
    "default_world",
    "load_world",
    "make_template",
]

log = logging.getLogger(__name__)

EventHook = Callable[[dict[str, Any]], Awaitable[None]]

MSGID_MIN = 2**53 + 1  # msgids are int64 above 2^53, like WeChat's: a float cannot hold them
_OPENID_CHARS = string.ascii_letters + string.digits + "-_"


@dataclass(frozen=True)
class Template:
    """A template an app added to its library (``priTmplId`` in WeChat's API)."""

    id: str
    title: str
    content: str
    example: str = ""
    type: int = 2  # 2 one-time (one send per accept), 3 long-term
    enums: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    banned: bool = False  # 43107: subscribe capability banned for this template
    keywords: tuple[TemplateKeyword, ...] = ()

    def to_api(self) -> dict[str, Any]:
        """The template as ``/wxaapi/newtmpl/gettemplate`` lists it."""
        return {
            "priTmplId": self.id,
            "title": self.title,
            "content": self.content,
            "example": self.example,
            "type": self.type,
            "keywordEnumValueList": [
                {"keywordCode": f"{name}.DATA", "enumValueList": list(values)}
                for name, values in self.enums.items()
            ],
        }


@dataclass(frozen=True)
class App:
    """A mini program: credentials, pages, sensitive words, templates."""

    appid: str
    secret: Secret
    name: str = ""
    pages: frozenset[str] = frozenset()
    sensitive_words: tuple[str, ...] = ()
    ip_whitelist: tuple[str, ...] = ()  # empty: any caller IP (else 40164)
    send_authorized: bool = True  # False: sends get 48001
    templates: Mapping[str, Template] = field(default_factory=dict)


class World:
    """Apps (fixed after load) and users with credits (changed at run time)."""

    def __init__(
        self,
        apps: Iterable[App],
        users: Mapping[str, Mapping[str, Mapping[str, int]]] | None = None,
        *,
        seed: int = 0,
        tokens: TokenConfig | None = None,
    ) -> None:
        self.apps: dict[str, App] = {app.appid: app for app in apps}
        self._loaded_apps = dict(self.apps)
        self.seed = seed
        self.token_config = tokens or TokenConfig()
        self.on_event: list[EventHook] = []
        self._initial = {a: {o: dict(c) for o, c in us.items()} for a, us in (users or {}).items()}
        self.users: dict[str, dict[str, dict[str, int]]] = {}
        self._pending: set[asyncio.Task[None]] = set()
        self.reset()

    # --- users and credits ---------------------------------------------------------------

    def reset(self) -> None:
        """Users, credits and templates back to what was loaded; the msgid sequence restarts."""
        self.apps = dict(self._loaded_apps)
        self.users = {appid: {} for appid in self.apps}
        for appid, users in copy.deepcopy(self._initial).items():
            self.users.setdefault(appid, {}).update(users)
        self.rng = random.Random(self.seed)  # noqa: S311 (reproducible msgids)
        self._msgids: set[int] = set()

    def app(self, appid: str) -> App:
        """The app, or KeyError."""
        return self.apps[appid]

    # --- templates (addtemplate/deltemplate, and the admin API's run-time changes) -----------

    def put_template(self, appid: str, template: Template) -> None:
        """Add or replace a template of the app (KeyError: no app)."""
        app = self.apps[appid]
        self.apps[appid] = replace(app, templates={**app.templates, template.id: template})

    def delete_template(self, appid: str, template_id: str) -> bool:
        """Remove a template; False when the app has no such template."""
        app = self.apps[appid]
        if template_id not in app.templates:
            return False
        rest = {k: v for k, v in app.templates.items() if k != template_id}
        self.apps[appid] = replace(app, templates=rest)
        return True

    def has_user(self, appid: str, openid: str) -> bool:
        return openid in self.users.get(appid, {})

    def add_user(self, appid: str, openid: str | None = None) -> str:
        """Create a user (a fresh 28-char openid unless given); idempotent. KeyError: no app."""
        users = self.users[appid]
        if openid is None:
            openid = "o" + "".join(self.rng.choice(_OPENID_CHARS) for _ in range(27))
        users.setdefault(openid, {})
        return openid

    def credits(self, appid: str, openid: str) -> dict[str, int]:
        """The user's credits per template id (a copy). KeyError: no such user."""
        return dict(self.users[appid][openid])

    def grant(self, appid: str, openid: str, template_id: str, count: int = 1) -> int:
        """Add ``count`` credits (accepts); returns the new balance."""
        user = self.users[appid][openid]
        user[template_id] = user.get(template_id, 0) + count
        return user[template_id]

    def accept(
        self, appid: str, openid: str, template_ids: Iterable[str], *, now: float, scene: int = 0
    ) -> None:
        """A popup where the user accepted ``template_ids``: +1 credit each, popup event."""
        tids = list(template_ids)
        for tid in tids:
            self.grant(appid, openid, tid)
        self._popup(appid, openid, tids, "accept", now, scene)

    def reject(
        self, appid: str, openid: str, template_ids: Iterable[str], *, now: float, scene: int = 0
    ) -> None:
        """A popup where the user refused: credits unchanged, popup event."""
        self._popup(appid, openid, list(template_ids), "reject", now, scene)

    def revoke(self, appid: str, openid: str, template_ids: Iterable[str], *, now: float) -> None:
        """The user switched the templates off in settings: credits 0, change event."""
        tids = list(template_ids)
        for tid in tids:
            self.users[appid][openid][tid] = 0
        items = [{"template_id": tid, "status": "reject"} for tid in tids]
        self.emit(_event("subscribe_msg_change_event", appid, openid, now, items))

    def sent(self, appid: str, openid: str, template_id: str, msgid: int, *, now: float) -> None:
        """A message was delivered: sent event (WeChat's final delivery receipt)."""
        item = {"template_id": template_id, "msgid": msgid, "errcode": 0, "status": "success"}
        self.emit(_event("subscribe_msg_sent_event", appid, openid, now, [item]))

    def _popup(
        self, appid: str, openid: str, tids: list[str], status: str, now: float, scene: int
    ) -> None:
        items = [{"template_id": tid, "status": status, "scene": scene} for tid in tids]
        self.emit(_event("subscribe_msg_popup_event", appid, openid, now, items))

    def consume(self, appid: str, openid: str, template: Template) -> bool:
        """Use one credit for a send; False when there is none. Long-term keeps its credit."""
        user = self.users[appid][openid]
        if user.get(template.id, 0) < 1:
            return False
        if template.type == 2:
            user[template.id] -= 1
        return True

    def new_msgid(self) -> int:
        """A fresh msgid above 2^53 and below 2^63 (seeded, never repeated)."""
        while True:
            msgid = self.rng.randrange(MSGID_MIN, 2**63)
            if msgid not in self._msgids:
                self._msgids.add(msgid)
                return msgid

    # --- events ----------------------------------------------------------------------------

    def emit(self, event: dict[str, Any]) -> None:
        """Hand ``event`` to every ``on_event`` callback, each in its own task."""
        for hook in self.on_event:
            task = asyncio.get_running_loop().create_task(self._call(hook, event))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def drain_events(self) -> None:
        """Wait until every callback started so far has finished."""
        while self._pending:
            await asyncio.gather(*list(self._pending))

    @staticmethod
    async def _call(hook: EventHook, event: dict[str, Any]) -> None:
        try:
            await hook(event)
        except Exception:
            log.exception("sandbox event hook failed", extra={"event": event.get("event")})


def _event(
    name: str, appid: str, openid: str, now: float, items: list[dict[str, Any]]
) -> dict[str, Any]:
    """An event for ``on_event``: WeChat's push fields in snake case, ``items`` = its List."""
    return {"event": name, "appid": appid, "openid": openid, "time": int(now), "items": items}


# --- loading ---------------------------------------------------------------------------------


def load_world(source: str | Path | Mapping[str, Any]) -> World:
    """A world from a TOML file path or an already-parsed dict. ConfigError names bad keys."""
    if isinstance(source, Mapping):
        return _world(source)
    return _world(read_toml(source, "world"))


def _world(doc: Mapping[str, Any]) -> World:
    apps = [_app(f"apps[{i}]", raw) for i, raw in enumerate(_list(doc, "apps", "world"))]
    users: dict[str, dict[str, dict[str, int]]] = {}
    for i, raw in enumerate(_list(doc, "apps", "world")):
        users[apps[i].appid] = _users(f"apps[{i}].users", apps[i], raw.get("users", []))
    tokens = doc.get("tokens", {})
    try:
        config = TokenConfig(**tokens)
    except TypeError as exc:
        raise ConfigError("tokens", str(exc)) from None
    return World(apps, users, seed=int(doc.get("seed", 0)), tokens=config)


def _list(doc: Mapping[str, Any], name: str, where: str) -> list[Mapping[str, Any]]:
    items = doc.get(name, [])
    if not isinstance(items, list) or not all(isinstance(i, Mapping) for i in items):
        raise ConfigError(f"{where}.{name}", "must be an array of tables")
    return items


def _app(key: str, raw: Mapping[str, Any]) -> App:
    for required in ("appid", "secret"):
        if not isinstance(raw.get(required), str) or not raw[required]:
            raise ConfigError(f"{key}.{required}", "required string")
    raw_templates = _list(raw, "templates", key)
    templates = [_template(f"{key}.templates[{i}]", t) for i, t in enumerate(raw_templates)]
    return App(
        appid=raw["appid"],
        secret=Secret(raw["secret"]),
        name=str(raw.get("name", "")),
        pages=frozenset(p.lstrip("/") for p in raw.get("pages", [])),
        sensitive_words=tuple(raw.get("sensitive_words", [])),
        ip_whitelist=tuple(raw.get("ip_whitelist", [])),
        send_authorized=bool(raw.get("send_authorized", True)),
        templates={t.id: t for t in templates},
    )


def make_template(raw: Mapping[str, Any], key: str = "template") -> Template:
    """A template from a table like the world file's (id, title, content, enums, type,
    banned); ConfigError names the bad key."""
    return _template(key, raw)


def _template(key: str, raw: Mapping[str, Any]) -> Template:
    for required in ("id", "title", "content"):
        if not isinstance(raw.get(required), str) or not raw[required]:
            raise ConfigError(f"{key}.{required}", "required string")
    try:
        keywords = tuple(parse_content(raw["content"]))
    except ValueError as exc:
        raise ConfigError(f"{key}.content", str(exc)) from None
    enums = {name: tuple(values) for name, values in raw.get("enums", {}).items()}
    for kw in keywords:
        if kw.type not in TYPES:
            raise ConfigError(f"{key}.content", f"unknown keyword type in {kw.name}")
        if kw.type == "enum" and not enums.get(kw.name):
            raise ConfigError(f"{key}.enums.{kw.name}", "an enum keyword needs its values")
    if raw.get("type", 2) not in (2, 3):
        raise ConfigError(f"{key}.type", "must be 2 (one-time) or 3 (long-term)")
    return Template(
        id=raw["id"],
        title=raw["title"],
        content=raw["content"],
        example=str(raw.get("example", "")),
        type=int(raw.get("type", 2)),
        enums=enums,
        banned=bool(raw.get("banned", False)),
        keywords=keywords,
    )


def _users(key: str, app: App, raw: Any) -> dict[str, dict[str, int]]:
    if not isinstance(raw, list):
        raise ConfigError(key, "must be an array of tables")
    out: dict[str, dict[str, int]] = {}
    for i, user in enumerate(raw):
        if not isinstance(user, Mapping) or not isinstance(user.get("openid"), str):
            raise ConfigError(f"{key}[{i}].openid", "required string")
        credits = dict(user.get("credits", {}))
        for tid, n in credits.items():
            if tid not in app.templates or not isinstance(n, int) or n < 0:
                raise ConfigError(f"{key}[{i}].credits.{tid}", "unknown template or bad count")
        out[user["openid"]] = credits
    return out


_TID = "TPL_ORDER_STATUS_0000000000000000000000001"


def default_world() -> World:
    """A small world: one app, one order-status template, two users with one credit each."""
    return load_world(
        {
            "seed": 1,
            "apps": [
                {
                    "appid": "wx00000000000000a1",
                    "secret": "sandbox-secret-a1",
                    "name": "Demo Shop",
                    "pages": ["pages/index/index", "pages/order/detail"],
                    "sensitive_words": ["违禁词"],
                    "templates": [
                        {
                            "id": _TID,
                            "title": "订单状态通知",
                            "content": "订单号:{{character_string1.DATA}}\n"
                            "订单状态:{{phrase2.DATA}}\n商品名称:{{thing3.DATA}}\n"
                            "更新时间:{{time4.DATA}}",
                            "example": "订单号:2024050112345\n订单状态:已发货\n"
                            "商品名称:无线耳机\n更新时间:2024年5月1日 12:00",
                        }
                    ],
                    "users": [
                        {"openid": "oUser000000000000000000000001", "credits": {_TID: 1}},
                        {"openid": "oUser000000000000000000000002", "credits": {_TID: 1}},
                    ],
                }
            ],
        }
    )

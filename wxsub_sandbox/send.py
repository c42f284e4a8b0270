"""``subscribe/send`` as WeChat judges it: every check, in order, then one credit consumed.

Order: body (47001) -> api authorized (48001) -> touser (40003) -> template_id (40037) ->
banned (43107) -> page (41030) -> miniprogram_state, lang, data (47003 naming the field) ->
sensitive words (45168) -> credit (43101) -> sent. The token and the per-openid concurrency
rule (43108) are checked by the HTTP layer (``api.py``) before this runs.

Leniency, as WeChat (and the SDKs' long practice against it) has it; docs/sandbox.md lists each
decision under "Differences from WeChat":
- ``page``, ``miniprogram_state`` and ``lang`` absent, null or ``""`` mean the default (no jump,
  ``formal``, ``zh_CN``): silenceper/wechat sends ``""`` for unset fields and always has.
- fields WeChat does not know are ignored, at the top level (``emphasis_keyword``, ``form_id``)
  and in data items (``color``, from the old template messages).
- a keyword value sent as a JSON number is judged as its decimal text (silenceper's
  ``DataItem.Value`` is ``interface{}``); ``true``/``false``, objects and arrays stay invalid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from wxsub.wechat.keywords import check
from wxsub_sandbox.tokens import WeChatReply, error
from wxsub_sandbox.world import App, Template, World

__all__ = ["LANGS", "STATES", "SendOutcome", "send"]

STATES = frozenset({"developer", "trial", "formal"})
LANGS = frozenset({"zh_CN", "en_US", "zh_HK", "zh_TW"})


@dataclass
class SendOutcome:
    """The reply and what the recorder keeps about the call."""

    reply: WeChatReply
    fields: dict[str, Any] = field(default_factory=dict)
    processed: bool = False


def send(world: World, appid: str, raw: bytes, now: float) -> SendOutcome:
    """Judge and perform one send for ``appid`` (whose token was valid) at time ``now``."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        return SendOutcome(error(47001), {"appid": appid})
    fields = {
        "appid": appid,
        "openid": body.get("touser"),
        "template_id": body.get("template_id"),
        "page": body.get("page"),
        "data": body.get("data"),
        "miniprogram_state": body.get("miniprogram_state"),
        "lang": body.get("lang"),
    }
    app = world.app(appid)
    refused = _judge(world, app, body)
    if refused is not None:
        return SendOutcome(refused, fields)
    template = app.templates[body["template_id"]]
    if not world.consume(appid, body["touser"], template):
        return SendOutcome(error(43101), fields)
    msgid = world.new_msgid()
    world.sent(appid, body["touser"], template.id, msgid, now=now)
    return SendOutcome({"errcode": 0, "errmsg": "ok", "msgid": msgid}, fields, processed=True)


def _judge(world: World, app: App, body: dict[str, Any]) -> WeChatReply | None:
    if not app.send_authorized:
        return error(48001)
    touser = body.get("touser")
    if not isinstance(touser, str) or not world.has_user(app.appid, touser):
        return error(40003)
    tid = body.get("template_id")
    template = app.templates.get(tid) if isinstance(tid, str) else None
    if template is None:
        return error(40037)
    if template.banned:
        return error(43107)
    page = body.get("page")
    if page not in (None, "") and (
        not isinstance(page, str) or page.split("?", 1)[0].lstrip("/") not in app.pages
    ):
        return error(41030)
    for name, allowed in (("miniprogram_state", STATES), ("lang", LANGS)):
        if body.get(name) not in (None, "") and body[name] not in allowed:  # "" = the default
            return error(47003, f"{name} invalid")
    return _judge_data(template, body.get("data")) or _judge_words(app, body["data"])


def _judge_data(template: Template, data: Any) -> WeChatReply | None:
    if not isinstance(data, dict):
        return error(47003, "data invalid")
    for kw in template.keywords:
        item = data.get(kw.name)
        value = _text(item.get("value")) if isinstance(item, dict) else None
        if value is None or value == "":
            return error(47003, f"data.{kw.name}.value is empty")
        if check(kw.type, value, template.enums.get(kw.name)) is not None:
            return error(47003, f"data.{kw.name}.value invalid")
    names = {kw.name for kw in template.keywords}
    for name in data:
        if name not in names:
            return error(47003, f"data.{name} invalid")
    return None


def _text(value: Any) -> Any:
    """A JSON number as its decimal text (``3`` -> ``"3"``, ``3.5`` -> ``"3.5"``); else as is."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


def _judge_words(app: App, data: dict[str, Any]) -> WeChatReply | None:
    text = "\n".join(str(item["value"]) for item in data.values()).casefold()
    if any(word.casefold() in text for word in app.sensitive_words):
        return error(45168)
    return None

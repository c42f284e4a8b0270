"""The sandbox's admin API under ``/admin/`` (JSON in, JSON out; errors are ``{"error": ...}``).

GET  /admin/world                 apps, pages, templates, user counts (no secrets)
GET  /admin/users?appid=          the app's openids
POST /admin/users                 {appid, openids?: [...], count?: n, credits?: {tid: n}}
POST /admin/accept                {appid, openid, template_id | template_ids, count?: 1,
                                   scene?: 0, create_user?: false}  (or a list of these)
POST /admin/reject                the same without count: a popup reject, credits unchanged
POST /admin/revoke                the same: switched off in settings, credits -> 0
GET  /admin/credits?appid=&openid=
POST /admin/reset                 {tokens?: false}: users/credits as loaded, no faults/records
POST /admin/tokens/expire         {appid?}: every live token expires now (42001 next)
GET  /admin/calls?endpoint=&appid=&openid=&template_id=&errcode=&dropped=&processed=&since=
GET  /admin/counters
GET|POST|DELETE /admin/faults     see wxsub_sandbox.faults
POST /admin/templates             {appid, id, title, content, enums?, type?, banned?}: add or
                                  change a template at run time (gettemplate lists it next call)
DELETE /admin/templates?appid=&id= the template is gone (gettemplate no longer lists it, a send
                                  with it gets 40037)
POST /admin/cards/pay             {appid, openid, transaction_id, amount, paid_at?}: a WeChat Pay
                                  payment (amount in fen, paid_at epoch s, default now), the code
                                  of a service card; visible to the card API visible_after_s later
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

from wxsub.errors import ConfigError
from wxsub_sandbox.faults import FaultSpec
from wxsub_sandbox.state import SandboxState
from wxsub_sandbox.world import make_template

__all__ = ["AdminApi"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AdminError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _json(doc: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(doc), status=status, content_type="application/json")


@web.middleware
async def admin_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """AdminError (and bad JSON) become JSON error replies."""
    try:
        return await handler(request)
    except AdminError as exc:
        return _json({"error": str(exc)}, exc.status)


class AdminApi:
    """Admin handlers bound to one sandbox state."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/admin/world", self.world)
        r.add_get("/admin/users", self.list_users)
        r.add_post("/admin/users", self.add_users)
        r.add_post("/admin/accept", self.accept)
        r.add_post("/admin/reject", self.reject)
        r.add_post("/admin/revoke", self.revoke)
        r.add_get("/admin/credits", self.credits)
        r.add_post("/admin/reset", self.reset)
        r.add_post("/admin/tokens/expire", self.expire_tokens)
        r.add_get("/admin/calls", self.calls)
        r.add_get("/admin/counters", self.counters)
        r.add_get("/admin/faults", self.get_faults)
        r.add_post("/admin/faults", self.set_faults)
        r.add_delete("/admin/faults", self.clear_faults)
        r.add_post("/admin/templates", self.put_template)
        r.add_delete("/admin/templates", self.delete_template)
        r.add_post("/admin/cards/pay", self.card_payment)

    # --- world and users -------------------------------------------------------------------

    async def world(self, request: web.Request) -> web.Response:
        world = self.state.world
        apps = [
            {
                "appid": app.appid,
                "name": app.name,
                "pages": sorted(app.pages),
                "templates": [t.to_api() for t in app.templates.values()],
                "users": len(world.users[app.appid]),
            }
            for app in world.apps.values()
        ]
        return _json({"apps": apps})

    async def list_users(self, request: web.Request) -> web.Response:
        appid = self._appid(request.query.get("appid"))
        return _json({"appid": appid, "openids": list(self.state.world.users[appid])})

    async def add_users(self, request: web.Request) -> web.Response:
        body = await _body(request)
        appid = self._appid(body.get("appid"))
        openids = body.get("openids", [])
        if not isinstance(openids, list) or not all(isinstance(o, str) and o for o in openids):
            raise AdminError(400, "openids must be a list of strings")
        count = _int(body, "count", 0)
        credits = body.get("credits", {})
        self._templates(appid, credits)
        world = self.state.world
        created = [world.add_user(appid, o) for o in openids]
        created += [world.add_user(appid) for _ in range(count)]
        for openid in created:
            for tid, n in credits.items():
                world.grant(appid, openid, tid, int(n))
        return _json({"appid": appid, "openids": created})

    async def credits(self, request: web.Request) -> web.Response:
        appid, openid = self._user(request.query)
        return _json(
            {"appid": appid, "openid": openid, "credits": self.state.world.credits(appid, openid)}
        )

    # --- templates -------------------------------------------------------------------------

    async def put_template(self, request: web.Request) -> web.Response:
        body = await _body(request)
        appid = self._appid(body.get("appid"))
        raw = {k: v for k, v in body.items() if k != "appid"}
        try:
            template = make_template(raw)
        except ConfigError as exc:
            raise AdminError(400, str(exc)) from None
        self.state.world.put_template(appid, template)
        return _json({"appid": appid, "template": template.to_api()})

    async def delete_template(self, request: web.Request) -> web.Response:
        appid = self._appid(request.query.get("appid"))
        tid = request.query.get("id", "")
        if not self.state.world.delete_template(appid, tid):
            raise AdminError(404, f"unknown template_id {tid!r} for {appid}")
        return _json({"appid": appid, "deleted": tid})

    # --- service cards ---------------------------------------------------------------------

    async def card_payment(self, request: web.Request) -> web.Response:
        """What ``cards.pay`` does in-process, for a sandbox run as its own process."""
        body = await _body(request)
        appid, openid = self._user(body)
        code = body.get("transaction_id")
        if not isinstance(code, str) or not code:
            raise AdminError(400, "transaction_id must be a non-empty string")
        amount = _int(body, "amount", 0)
        if amount < 1:
            raise AdminError(400, "amount must be an integer >= 1 (fen)")
        paid_at = _int(body, "paid_at", self._now())
        book = self.state.cards
        book.pay(appid, openid, code, amount, paid_at)
        visible_at = math.ceil(paid_at + book.visible_after_s)
        doc = {"appid": appid, "openid": openid, "transaction_id": code, "amount": amount}
        return _json(doc | {"paid_at": paid_at, "visible_at": visible_at})

    # --- subscriptions ---------------------------------------------------------------------

    async def accept(self, request: web.Request) -> web.Response:
        return _json(await self._each(request, self._accept))

    async def reject(self, request: web.Request) -> web.Response:
        return _json(await self._each(request, self._reject))

    async def revoke(self, request: web.Request) -> web.Response:
        return _json(await self._each(request, self._revoke))

    async def _each(
        self, request: web.Request, one: Callable[[Mapping[str, Any]], dict[str, Any]]
    ) -> Any:
        body = await _body(request, allow_list=True)
        if isinstance(body, list):
            return [one(_mapping(item)) for item in body]
        return one(body)

    def _accept(self, body: Mapping[str, Any]) -> dict[str, Any]:
        openid = body.get("openid")
        if body.get("create_user") and isinstance(openid, str) and openid:
            self.state.world.add_user(self._appid(body.get("appid")), openid)
        appid, openid = self._user(body)
        tids, scene, now = self._template_ids(appid, body), _int(body, "scene", 0), self._now()
        for _ in range(_int(body, "count", 1)):
            self.state.world.accept(appid, openid, tids, now=now, scene=scene)
        return self._credits_reply(appid, openid)

    def _reject(self, body: Mapping[str, Any]) -> dict[str, Any]:
        appid, openid = self._user(body)
        tids, scene = self._template_ids(appid, body), _int(body, "scene", 0)
        self.state.world.reject(appid, openid, tids, now=self._now(), scene=scene)
        return self._credits_reply(appid, openid)

    def _revoke(self, body: Mapping[str, Any]) -> dict[str, Any]:
        appid, openid = self._user(body)
        self.state.world.revoke(appid, openid, self._template_ids(appid, body), now=self._now())
        return self._credits_reply(appid, openid)

    def _now(self) -> int:
        return int(self.state.clock())

    def _credits_reply(self, appid: str, openid: str) -> dict[str, Any]:
        credits = self.state.world.credits(appid, openid)
        return {"appid": appid, "openid": openid, "credits": credits}

    # --- run-time control ------------------------------------------------------------------

    async def reset(self, request: web.Request) -> web.Response:
        body = await _body(request) if request.can_read_body else {}
        self.state.reset(tokens=bool(body.get("tokens", False)))
        return _json({"reset": True})

    async def expire_tokens(self, request: web.Request) -> web.Response:
        body = await _body(request) if request.can_read_body else {}
        appid = body.get("appid")
        if appid is not None:
            self._appid(appid)
        return _json({"expired": self.state.tokens.expire_all(appid)})

    async def calls(self, request: web.Request) -> web.Response:
        filters: dict[str, Any] = {}
        for key, value in request.query.items():
            if key in ("errcode", "since"):
                filters[key] = _parse_int(key, value)
            elif key in ("dropped", "processed"):
                filters[key] = value.lower() in ("1", "true", "yes")
            else:
                filters[key] = value
        try:
            records = self.state.recorder.calls(**filters)
        except ValueError as exc:
            raise AdminError(400, str(exc)) from None
        return _json({"calls": [r.to_json() for r in records]})

    async def counters(self, request: web.Request) -> web.Response:
        return _json({"counters": dict(self.state.recorder.counters)})

    async def get_faults(self, request: web.Request) -> web.Response:
        return _json(self.state.faults.describe())

    async def set_faults(self, request: web.Request) -> web.Response:
        body = await _body(request)
        try:
            spec = FaultSpec.from_json(body)
        except (TypeError, ValueError) as exc:
            raise AdminError(400, f"bad fault spec: {exc}") from None
        self.state.faults.set(spec)
        return _json(self.state.faults.describe())

    async def clear_faults(self, request: web.Request) -> web.Response:
        self.state.faults.clear()
        return _json(self.state.faults.describe())

    # --- lookups ---------------------------------------------------------------------------

    def _appid(self, appid: Any) -> str:
        if not isinstance(appid, str) or appid not in self.state.world.apps:
            raise AdminError(404, f"unknown appid {appid!r}")
        return appid

    def _user(self, doc: Mapping[str, Any]) -> tuple[str, str]:
        appid = self._appid(doc.get("appid"))
        openid = doc.get("openid")
        if not isinstance(openid, str) or not self.state.world.has_user(appid, openid):
            raise AdminError(404, f"unknown openid {openid!r} for {appid}")
        return appid, openid

    def _template_ids(self, appid: str, doc: Mapping[str, Any]) -> list[str]:
        tids = doc.get("template_ids", [doc["template_id"]] if "template_id" in doc else [])
        if not isinstance(tids, list) or not tids:
            raise AdminError(400, "template_id or template_ids required")
        self._templates(appid, {tid: 1 for tid in tids})
        return [str(t) for t in tids]

    def _templates(self, appid: str, tids: Mapping[str, Any]) -> None:
        known = self.state.world.app(appid).templates
        for tid in tids:
            if tid not in known:
                raise AdminError(404, f"unknown template_id {tid!r} for {appid}")


async def _body(request: web.Request, *, allow_list: bool = False) -> Any:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise AdminError(400, "body must be JSON") from None
    if isinstance(body, dict) or (allow_list and isinstance(body, list)):
        return body
    raise AdminError(400, "body must be a JSON object")


def _mapping(item: Any) -> Mapping[str, Any]:
    if not isinstance(item, dict):
        raise AdminError(400, "each item must be a JSON object")
    return item


def _int(doc: Mapping[str, Any], key: str, default: int) -> int:
    value = doc.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise AdminError(400, f"{key} must be an integer >= 0")
    return value


def _parse_int(key: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise AdminError(400, f"{key} must be an integer") from None

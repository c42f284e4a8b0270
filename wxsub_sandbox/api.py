"""The WeChat endpoints over HTTP: token, stable_token, subscribe/send, the newtmpl template calls
and the service cards.

Every call goes through :meth:`WeChatApi._serve`, which applies the fault plan (latency, reset
before processing, injected errcode, drop after processing) and records the call. Replies are
HTTP 200 with a JSON body written by orjson, so msgid stays an exact int64.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from wxsub.wechat.templates import parse_content
from wxsub_sandbox import library
from wxsub_sandbox import send as send_rules
from wxsub_sandbox.state import SandboxState
from wxsub_sandbox.tokens import WeChatReply, error
from wxsub_sandbox.world import Template

__all__ = ["WeChatApi"]

_CONTENT_TYPE = "application/json; encoding=utf-8"  # what WeChat sends

_DROPPED = {"dropped": True}
_CARD_ENDPOINTS = {
    "/wxa/set_user_notify": "set_user_notify",
    "/wxa/set_user_notifyext": "set_user_notifyext",
    "/wxa/get_user_notify": "get_user_notify",
}

Process = Callable[[bytes], send_rules.SendOutcome]


def reply(doc: WeChatReply) -> web.Response:
    return web.Response(body=orjson.dumps(doc), headers={"Content-Type": _CONTENT_TYPE})


class WeChatApi:
    """Handlers bound to one sandbox state."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/cgi-bin/token", self.token)
        app.router.add_post("/cgi-bin/stable_token", self.stable_token)
        app.router.add_post("/cgi-bin/message/subscribe/send", self.send)
        app.router.add_get("/wxaapi/newtmpl/gettemplate", self.gettemplate)
        app.router.add_get("/wxaapi/newtmpl/getpubtemplatekeywords", self.pub_keywords)
        app.router.add_post("/wxaapi/newtmpl/addtemplate", self.addtemplate)
        app.router.add_post("/wxaapi/newtmpl/deltemplate", self.deltemplate)
        for path, endpoint in _CARD_ENDPOINTS.items():
            app.router.add_post(path, self._card_handler(endpoint))

    # --- endpoints -------------------------------------------------------------------------

    async def token(self, request: web.Request) -> web.StreamResponse:
        params = dict(request.query)
        fields = {"appid": params.get("appid")}

        def process(_raw: bytes) -> send_rules.SendOutcome:
            doc = self.state.tokens.classic(params, request.remote)
            return send_rules.SendOutcome(doc, fields, processed="access_token" in doc)

        return await self._serve(request, "token", await request.read(), fields, process)

    async def stable_token(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = _json_object(raw)
        fields: dict[str, Any] = {}
        if body is not None:
            fields = {"appid": body.get("appid"), "force_refresh": body.get("force_refresh")}

        def process(_raw: bytes) -> send_rules.SendOutcome:
            if body is None:
                return send_rules.SendOutcome(error(47001), fields)
            doc = self.state.tokens.stable(body, request.remote)
            return send_rules.SendOutcome(doc, fields, processed="access_token" in doc)

        return await self._serve(request, "stable_token", raw, fields, process)

    async def send(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        token = request.query.get("access_token")
        body = _json_object(raw) or {}
        openid = body.get("touser") if isinstance(body.get("touser"), str) else None
        fields = {
            "appid": self.state.tokens.resolve(token)[0],
            "openid": body.get("touser"),
            "template_id": body.get("template_id"),
        }
        if openid is None:
            return await self._serve(request, "send", raw, fields, self._send_process(token))
        if openid in self.state.inflight:  # 43108: one call at a time per openid
            return self._answer("send", {**fields, "errcode": 43108}, error(43108))
        self.state.inflight.add(openid)
        try:
            return await self._serve(request, "send", raw, fields, self._send_process(token))
        finally:
            self.state.inflight.discard(openid)

    def _send_process(self, token: str | None) -> Process:
        def process(raw: bytes) -> send_rules.SendOutcome:
            appid, refused = self.state.tokens.resolve(token)
            if appid is None:
                return send_rules.SendOutcome(refused or error(40001))
            return send_rules.send(self.state.world, appid, raw, self.state.clock())

        return process

    async def gettemplate(self, request: web.Request) -> web.StreamResponse:
        token = request.query.get("access_token")

        def process(_raw: bytes) -> send_rules.SendOutcome:
            appid, refused = self.state.tokens.resolve(token)
            if appid is None:
                return send_rules.SendOutcome(refused or error(40001))
            templates = self.state.world.app(appid).templates.values()
            doc = {"errcode": 0, "errmsg": "ok", "data": [t.to_api() for t in templates]}
            return send_rules.SendOutcome(doc, {"appid": appid}, processed=True)

        return await self._serve(request, "gettemplate", await request.read(), {}, process)

    async def pub_keywords(self, request: web.Request) -> web.StreamResponse:
        token, tid = request.query.get("access_token"), request.query.get("tid", "")

        def process(appid: str, _body: dict[str, Any]) -> WeChatReply:
            title = library.LIBRARY.get(int(tid)) if tid.isdigit() else None
            if title is None:
                return error(200014)
            data = [k.to_api() for k in title.keywords]
            return {"errcode": 0, "errmsg": "ok", "count": len(data), "data": data}

        return await self._template_call(request, "getpubtemplatekeywords", token, process)

    async def addtemplate(self, request: web.Request) -> web.StreamResponse:
        def process(appid: str, body: dict[str, Any]) -> WeChatReply:
            world = self.state.world
            tid, kids = body.get("tid"), body.get("kidList")
            held = len(world.app(appid).templates)
            code = library.add_errcode(tid, kids, body.get("sceneDesc"), held)
            if code:
                return error(code)
            title = library.LIBRARY[int(str(tid))]
            assert isinstance(kids, list)  # add_errcode checked it
            content, enums = library.private_content(title, kids)
            pid = library.private_id(appid, title.tid, kids, held)
            world.put_template(appid, Template(pid, title.title, content, type=title.type,
                               enums=enums, keywords=tuple(parse_content(content))))  # fmt: skip
            return {"errcode": 0, "errmsg": "ok", "priTmplId": pid}

        token = request.query.get("access_token")
        return await self._template_call(request, "addtemplate", token, process)

    async def deltemplate(self, request: web.Request) -> web.StreamResponse:
        def process(appid: str, body: dict[str, Any]) -> WeChatReply:
            pid = body.get("priTmplId")
            if not isinstance(pid, str) or not self.state.world.delete_template(appid, pid):
                return error(20002)
            return {"errcode": 0, "errmsg": "ok"}

        token = request.query.get("access_token")
        return await self._template_call(request, "deltemplate", token, process)

    async def _template_call(
        self,
        request: web.Request,
        endpoint: str,
        token: str | None,
        handle: Callable[[str, dict[str, Any]], WeChatReply],
    ) -> web.StreamResponse:
        """A template-library call: token -> appid, JSON body (47001 when a POST's is not an
        object), then ``handle``."""
        raw = await request.read()

        def process(_raw: bytes) -> send_rules.SendOutcome:
            appid, refused = self.state.tokens.resolve(token)
            if appid is None:
                return send_rules.SendOutcome(refused or error(40001))
            body = _json_object(raw) if request.method == "POST" else {}
            if body is None:
                return send_rules.SendOutcome(error(47001), {"appid": appid})
            doc = handle(appid, body)
            ok = doc.get("errcode") == 0
            return send_rules.SendOutcome(doc, {"appid": appid}, processed=ok)

        return await self._serve(request, endpoint, raw, {}, process)

    def _card_handler(self, endpoint: str) -> Callable[[web.Request], Any]:
        """set_user_notify / set_user_notifyext / get_user_notify (cards.py), with faults."""
        book = self.state.cards
        judge = {"set_user_notify": book.set, "set_user_notifyext": book.set_ext,
                 "get_user_notify": book.get}[endpoint]  # fmt: skip

        async def handle(request: web.Request) -> web.StreamResponse:
            raw = await request.read()
            token = request.query.get("access_token")
            body = _json_object(raw)
            fields: dict[str, Any] = {"appid": self.state.tokens.resolve(token)[0]}
            if body is not None:
                fields.update(openid=body.get("openid"), notify_code=body.get("notify_code"))
                fields["notify_type"] = body.get("notify_type")

            def process(raw: bytes) -> send_rules.SendOutcome:
                appid, refused = self.state.tokens.resolve(token)
                if appid is None:
                    return send_rules.SendOutcome(refused or error(40001))
                if body is None:
                    return send_rules.SendOutcome(error(47001), fields)
                doc = judge(appid, body, self.state.clock())
                extra = {"content_json": body.get("content_json")}
                return send_rules.SendOutcome(doc, extra, processed=doc.get("errcode") == 0)

            return await self._serve(request, endpoint, raw, fields, process)

        return handle

    # --- the common path -------------------------------------------------------------------

    async def _serve(
        self,
        request: web.Request,
        endpoint: str,
        raw: bytes,
        fields: dict[str, Any],
        process: Process,
    ) -> web.StreamResponse:
        plan = self.state.faults.plan(endpoint)
        if plan.latency_s > 0:
            await asyncio.sleep(plan.latency_s)
        base = {"fault": plan.fault, "latency_s": plan.latency_s}
        if plan.action == "reset":
            self._record(endpoint, {**fields, **base, "reset": True})
            _reset(request)
            return web.Response()
        if plan.action == "error":
            doc = error(plan.errcode if plan.errcode is not None else -1)
            return self._answer(endpoint, {**fields, **base, "errcode": doc["errcode"]}, doc)
        outcome = process(raw)
        record = {**fields, **outcome.fields, **base, "processed": outcome.processed}
        record.update(errcode=outcome.reply.get("errcode", 0), msgid=outcome.reply.get("msgid"))
        if plan.action == "drop":
            self._record(endpoint, {**record, "errmsg": outcome.reply.get("errmsg")} | _DROPPED)
            if request.transport is not None:
                request.transport.close()
            return web.Response()
        return self._answer(endpoint, record, outcome.reply)

    def _answer(self, endpoint: str, record: dict[str, Any], doc: WeChatReply) -> web.Response:
        self._record(endpoint, {**record, "errmsg": doc.get("errmsg")})
        return reply(doc)

    def _record(self, endpoint: str, fields: dict[str, Any]) -> None:
        self.state.recorder.add(time=self.state.clock(), endpoint=endpoint, **fields)


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


def _reset(request: web.Request) -> None:
    """Abort the connection with a TCP RST: the caller gets a reset, no reply."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()

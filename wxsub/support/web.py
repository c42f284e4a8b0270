"""The support server of a worker: the query API, the local reads it forwards to, the console.

Served on a listener of its own (``[support]``: off by default, loopback unless configured), not
on the /metrics port: what it shows is personal data. With ``support.token`` set every API call
needs ``Authorization: Bearer <token>`` (compared in constant time); the console page itself
holds no data and asks for the token. No access log: query strings carry openids.

- ``GET /support/`` the console (plain HTML and JavaScript, ``console.html``)
- ``GET /support/api/user?appid=&openid=`` a user's trace (service.py)
- ``GET /support/api/order?appid=&order_id=`` an order's trace
- ``GET /support/local/{part}?...`` this worker's own committed store (local.py); 503 when it
  does not own the partition. What other workers forward to.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from importlib.resources import files

from aiohttp import web

from wxsub.settings import Settings
from wxsub.support.local import PARTS, Local
from wxsub.support.routing import Router, Unavailable
from wxsub.support.service import Traces

__all__ = ["SupportServer"]

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_REQUIRED = {
    "user": ("appid", "openid"),
    "order": ("appid", "order_id"),
    "ledger": ("appid", "openid"),
}


class SupportServer:
    """Built and started by the worker when ``support.enabled``."""

    def __init__(self, settings: Settings, local: Local) -> None:
        self._settings = settings
        self._local = local
        self.router = Router(local, settings)
        self._traces = Traces(self.router)
        token = settings.support.token
        self._expected = f"Bearer {token.reveal()}".encode() if token else None
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/support", self._console_redirect)
        app.router.add_get("/support/", self._console)
        app.router.add_get("/support/api/user", self._user)
        app.router.add_get("/support/api/order", self._order)
        app.router.add_get("/support/local/{part}", self._local_part)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        support = self._settings.support
        await web.TCPSite(self._runner, support.host, support.port).start()
        log.info("support server started", extra={"url": support.url})

    async def stop(self) -> None:
        await self.router.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self._expected is not None and not request.path.rstrip("/") == "/support":
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, self._expected):
                return web.json_response({"error": "a valid bearer token is required"}, status=401)
        return await handler(request)

    async def _console_redirect(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(
            "/support/" + (f"?{request.query_string}" if request.query_string else "")
        )

    async def _console(self, request: web.Request) -> web.Response:
        html = files("wxsub.support").joinpath("console.html").read_text(encoding="utf-8")
        headers = {"Cache-Control": "no-store", "X-Frame-Options": "DENY"}
        return web.Response(text=html, content_type="text/html", headers=headers)

    async def _user(self, request: web.Request) -> web.Response:
        q = request.query
        if not q.get("appid") or not q.get("openid"):
            return web.json_response({"error": "appid and openid are required"}, status=400)
        try:
            return web.json_response(await self._traces.user(q["appid"], q["openid"]))
        except Unavailable as exc:
            return web.json_response({"error": str(exc)}, status=503)

    async def _order(self, request: web.Request) -> web.Response:
        q = request.query
        if not q.get("appid") or not q.get("order_id"):
            return web.json_response({"error": "appid and order_id are required"}, status=400)
        try:
            return web.json_response(await self._traces.order(q["appid"], q["order_id"]))
        except Unavailable as exc:
            return web.json_response({"error": str(exc)}, status=503)

    async def _local_part(self, request: web.Request) -> web.Response:
        part = request.match_info["part"]
        if part not in PARTS:
            return web.json_response({"error": f"unknown part {part}"}, status=404)
        if any(not request.query.get(name) for name in _REQUIRED[part]):
            return web.json_response(
                {"error": f"{', '.join(_REQUIRED[part])} required"}, status=400
            )
        doc = self._local.read(part, request.query)
        if doc is None:
            return web.json_response({"error": "not the owner of this partition now"}, status=503)
        return web.json_response(doc)

"""The sandbox's message push: sandbox events -> the gateway, the way WeChat sends them.

Hook it into a sandbox with ``pusher.attach(sandbox.world)``; every popup, change and sent event
the sandbox emits is then POSTed to that app's push URL, signed with the push token and, in
safe mode, AES-encrypted (compatible mode sends both). Like WeChat it waits ``timeout_s`` for the
plain answer ``success`` and retries up to ``retries`` times; the outcome of each event is kept
in :attr:`EventPusher.results` for tests.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from xml.sax.saxutils import escape

import aiohttp
import orjson

from wxsub.settings import Secret, Settings
from wxsub.wechat.push_crypto import PushCipher, push_signature

__all__ = ["EventPusher", "PushResult", "PushTarget", "render_message"]

log = logging.getLogger(__name__)

_WRAPPERS = {
    "subscribe_msg_popup_event": "SubscribeMsgPopupEvent",
    "subscribe_msg_change_event": "SubscribeMsgChangeEvent",
    "subscribe_msg_sent_event": "SubscribeMsgSentEvent",
}


@dataclass(frozen=True)
class PushTarget:
    """Where and how one mini program's events are pushed."""

    url: str
    token: Secret
    mode: Literal["plain", "compatible", "safe"] = "safe"
    aes_key: Secret | None = None
    original_id: str = ""
    fmt: Literal["xml", "json"] = "xml"


@dataclass(frozen=True)
class PushResult:
    """How one event ended: delivered (a ``success`` answer) after ``attempts`` tries, or not."""

    event: str
    appid: str
    openid: str
    delivered: bool
    attempts: int
    last_status: int | None


@dataclass
class EventPusher:
    """An ``on_event`` hook pushing sandbox events to the gateway like WeChat does."""

    targets: Mapping[str, PushTarget]
    retries: int = 3
    timeout_s: float = 5.0
    retry_delay_s: float = 1.0
    clock: Callable[[], float] = time.time
    results: list[PushResult] = field(default_factory=list)
    _http: aiohttp.ClientSession | None = field(default=None, repr=False)

    @classmethod
    def from_settings(
        cls, settings: Settings, gateway_url: str, fmt: Literal["xml", "json"] = "xml", **kw: Any
    ) -> EventPusher:
        """A target per ``settings.gateway.apps`` entry: ``{gateway_url}/wechat/push/{appid}``."""
        base = gateway_url.rstrip("/")
        targets = {
            appid: PushTarget(
                f"{base}/wechat/push/{appid}",
                ep.token,
                ep.mode,
                ep.aes_key,
                ep.original_id or appid,
                fmt,
            )
            for appid, ep in settings.gateway.apps.items()
        }
        return cls(targets, **kw)

    def attach(self, world: Any) -> None:
        """Register on a sandbox World's ``on_event`` list."""
        world.on_event.append(self)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def __call__(self, event: dict[str, Any]) -> None:
        target = self.targets.get(event["appid"])
        if target is None or (event["event"] not in _WRAPPERS and "card" not in event):
            return
        message = render_message(event, target.original_id, target.fmt)
        attempts, status = 0, None
        for attempts in range(1, self.retries + 2):
            status = await self._post_once(target, event["appid"], message)
            if status == 200:
                break
            if attempts <= self.retries:
                await asyncio.sleep(self.retry_delay_s)
        result = PushResult(
            event["event"], event["appid"], event["openid"], status == 200, attempts, status
        )
        self.results.append(result)
        if not result.delivered:
            log.warning("sandbox push not acknowledged", extra={"appid": result.appid})

    async def _post_once(self, target: PushTarget, appid: str, message: bytes) -> int | None:
        """One delivery attempt; 200 only for the exact answer ``success``."""
        params, body = self._signed(target, appid, message)
        http = self._session()
        try:
            async with http.post(
                target.url,
                params=params,
                data=body,
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            ) as resp:
                text = await resp.text()
                return 200 if resp.status == 200 and text == "success" else resp.status
        except (TimeoutError, aiohttp.ClientError):
            return None

    def _signed(
        self, target: PushTarget, appid: str, message: bytes
    ) -> tuple[dict[str, str], bytes]:
        ts, nonce = str(int(self.clock())), os.urandom(8).hex()
        token = target.token.reveal()
        params = {"timestamp": ts, "nonce": nonce, "signature": push_signature(token, ts, nonce)}
        if target.mode == "plain":
            return params, message
        if target.aes_key is None:
            raise ValueError(f"push target {appid}: aes_key required in {target.mode} mode")
        encrypted = PushCipher(target.aes_key.reveal()).encrypt(message, appid)
        params["encrypt_type"] = "aes"
        params["msg_signature"] = push_signature(token, ts, nonce, encrypted)
        plain = message if target.mode == "compatible" else None
        return params, _envelope(encrypted, target.original_id, target.fmt, plain)

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        return self._http


def render_message(event: Mapping[str, Any], to_user: str, fmt: str = "xml") -> bytes:
    """A sandbox event dict as WeChat's push document (XML or JSON)."""
    name = event["event"]
    head: dict[str, Any] = {
        "ToUserName": to_user,
        "FromUserName": event["openid"],
        "CreateTime": int(event["time"]),
        "MsgType": "event",
        "Event": name,
    }
    if "card" in event:  # a service card's failure event: flat fields, no List
        card = {"openid": event["openid"], **event["card"]}
        if fmt == "json":
            return orjson.dumps({**head, **card})
        return f"<xml>{_xml_fields(head)}{_xml_fields(card)}</xml>".encode()
    items = [_wechat_item(name, item) for item in event["items"]]
    if fmt == "json":
        return orjson.dumps({**head, "List": items[0] if len(items) == 1 else items})
    lists = "".join(f"<List>{_xml_fields(item)}</List>" for item in items)
    wrapper = _WRAPPERS[name]
    return f"<xml>{_xml_fields(head)}<{wrapper}>{lists}</{wrapper}></xml>".encode()


def _wechat_item(event: str, item: Mapping[str, Any]) -> dict[str, Any]:
    if event == "subscribe_msg_sent_event":
        return {
            "TemplateId": item["template_id"],
            "MsgID": str(item["msgid"]),
            "ErrorCode": int(item.get("errcode", 0)),
            "ErrorStatus": item.get("status", "success"),
        }
    out = {"TemplateId": item["template_id"], "SubscribeStatusString": item["status"]}
    if event == "subscribe_msg_popup_event":
        out["PopupScene"] = str(item.get("scene", 0))
    return out


def _xml_fields(fields: Mapping[str, Any]) -> str:
    return "".join(f"<{k}>{escape(str(v))}</{k}>" for k, v in fields.items())


def _envelope(encrypted: str, to_user: str, fmt: str, plain: bytes | None) -> bytes:
    """The safe-mode body (compatible mode: the plaintext fields and ``Encrypt`` together)."""
    if fmt == "json":
        doc = orjson.loads(plain) if plain is not None else {"ToUserName": to_user}
        return orjson.dumps({**doc, "Encrypt": encrypted})
    if plain is None:
        inner = f"<ToUserName>{escape(to_user)}</ToUserName>"
    else:
        inner = plain.decode()[len("<xml>") : -len("</xml>")]
    return f"<xml>{inner}<Encrypt>{encrypted}</Encrypt></xml>".encode()

"""One interface over the three SDKs: ``await sdk.call(op, **fields) -> answer``.

Operations (the same names and fields for every SDK):

- ``config``: base, appid, secret, stable (bool), token, aes_key: a fresh SDK client
- ``token``: the SDK's access token (fetched or cached as the SDK does)
- ``force_token``: a stable token with force_refresh (where the SDK has it)
- ``send``: touser, template_id, data ({keyword: value}), page, miniprogram_state, lang
- ``templates``: the SDK's gettemplate: [{id, title, content, type, enums?}]
- ``encrypt``: message: a push body encrypted and signed by the SDK's crypto
- ``decrypt``: body, timestamp, nonce, msg_signature: a push read by the SDK's crypto
- ``pub_keywords``: tid: the library title's keywords [{kid, name, example, rule}]
- ``add_template``: tid, kids, scene: a private template from the library -> template_id
- ``del_template``: template_id: the private template deleted
- ``set_user_notify`` / ``set_user_notifyext`` / ``get_user_notify`` (silenceper/wechat only):
  openid, notify_type, notify_code, content_json, check_json, ext_json: service cards
  (tests/interop/test_cards_go.py)

An answer is ``{"ok": true, ...}`` or ``{"ok": false, "errcode": n, "error": text}``.

Go and Java run as child processes speaking one JSON line each way (``LineProbe``); one process
per SDK serves the whole session, reconfigured per test by ``config``. wechatpy runs in-process
in a worker thread (it is synchronous; the sandbox shares the test's event loop).
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["SDKS", "LineProbe", "ProbeError", "Sdk", "WechatpyProbe"]

Answer = dict[str, Any]

READ_TIMEOUT_S = 60.0


class ProbeError(RuntimeError):
    """The probe process died or did not answer."""


@dataclass(frozen=True)
class Sdk:
    """What an SDK offers (the tests check what it has and say what it lacks)."""

    name: str
    stable: bool  # stable_token through the SDK itself
    msgid: bool  # the send returns WeChat's msgid
    state_lang: bool  # the send can set miniprogram_state and lang
    token_retry: bool  # on 40001/40014/42001 it refetches the token and retries once
    enums: bool  # its template list carries keywordEnumValueList
    crypto: bool  # message-push encryption (WeChat's AES scheme)


SDKS = {
    # wechatpy 1.8.18 predates stable_token and miniprogram_state/lang; the stable token is the
    # docs' fetch_access_token override (docs/sandbox.md), templates go through client.get
    "wechatpy": Sdk("wechatpy", True, True, False, True, True, True),
    "wxjava": Sdk("wxjava", True, False, True, True, False, True),
    "silenceper": Sdk("silenceper", True, True, True, False, True, True),
}


class LineProbe:
    """A probe process: one JSON line in, one JSON line out, restarted if it dies."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def _process(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
        return self._proc

    def _exchange(self, line: bytes) -> Answer:
        with self._lock:
            proc = self._process()
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(line + b"\n")
            proc.stdin.flush()
            reply = proc.stdout.readline()
        if not reply:
            raise ProbeError(f"{self.argv[0]} exited ({proc.poll()}) without answering")
        answer: Answer = orjson.loads(reply)
        return answer

    async def call(self, op: str, **fields: Any) -> Answer:
        line = orjson.dumps({"op": op, **fields})
        try:
            return await asyncio.wait_for(asyncio.to_thread(self._exchange, line), READ_TIMEOUT_S)
        except TimeoutError:
            self.close()  # the reader thread then sees EOF
            raise ProbeError(f"{self.argv[0]}: no answer to {op} in {READ_TIMEOUT_S} s") from None

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


class WechatpyProbe:
    """wechatpy 1.8.18 in a worker thread, pointed at the sandbox as docs/sandbox.md shows."""

    def __init__(self) -> None:
        self.client: Any = None
        self.settings: dict[str, Any] = {}

    async def call(self, op: str, **fields: Any) -> Answer:
        return await asyncio.to_thread(self._call, op, fields)

    def _call(self, op: str, fields: dict[str, Any]) -> Answer:
        from wechatpy.exceptions import WeChatClientException

        try:
            answer: Answer = getattr(self, f"_{op}")(**fields)
        except WeChatClientException as exc:
            return {"ok": False, "errcode": exc.errcode, "error": str(exc.errmsg)}
        return {"ok": True, **answer}

    def _config(self, **settings: Any) -> Answer:
        self.settings = settings
        self.client = sandbox_client(
            settings["base"], settings["appid"], settings["secret"], settings.get("stable", False)
        )
        return {"sdk": "wechatpy 1.8.18"}

    def _token(self) -> Answer:
        return {"token": self.client.access_token}

    def _force_token(self) -> Answer:
        return {"token": self.client.fetch_access_token(force_refresh=True)["access_token"]}

    def _send(
        self,
        touser: str,
        template_id: str,
        data: dict[str, Any],
        page: str | None = None,
        **unsupported: Any,
    ) -> Answer:
        if unsupported:  # miniprogram_state, lang: wechatpy 1.8.18 cannot send them
            raise TypeError(f"wechatpy 1.8.18 has no {sorted(unsupported)}")
        items = {name: {"value": value} for name, value in data.items()}
        reply = self.client.wxa.send_subscribe_message(touser, template_id, items, page=page)
        return {"msgid": str(reply["msgid"])}

    def _templates(self) -> Answer:
        # no newtmpl API in 1.8.18: its generic client.get, as wechatpy users call missing APIs
        reply = self.client.get(
            "wxaapi/newtmpl/gettemplate", api_base_url=self.settings["base"] + "/"
        )
        return {
            "templates": [
                {
                    "id": t["priTmplId"],
                    "title": t["title"],
                    "content": t["content"],
                    "type": t["type"],
                    "enums": {
                        e["keywordCode"]: e["enumValueList"] for e in t["keywordEnumValueList"]
                    },
                }
                for t in reply["data"]
            ]
        }

    # no newtmpl API in 1.8.18 either: the template library through client.get / client.post

    def _pub_keywords(self, tid: str) -> Answer:
        reply = self.client.get(
            "wxaapi/newtmpl/getpubtemplatekeywords",
            params={"tid": tid},
            api_base_url=self.settings["base"] + "/",
        )
        keys = ("kid", "name", "example", "rule")
        return {"keywords": [{k: item[k] for k in keys} for item in reply["data"]]}

    def _add_template(self, tid: str, kids: list[int], scene: str) -> Answer:
        reply = self.client.post(
            "wxaapi/newtmpl/addtemplate",
            data={"tid": tid, "kidList": kids, "sceneDesc": scene},
            api_base_url=self.settings["base"] + "/",
        )
        return {"template_id": reply["priTmplId"]}

    def _del_template(self, template_id: str) -> Answer:
        self.client.post(
            "wxaapi/newtmpl/deltemplate",
            data={"priTmplId": template_id},
            api_base_url=self.settings["base"] + "/",
        )
        return {}

    def _crypto(self) -> Any:
        from wechatpy.crypto import WeChatCrypto

        s = self.settings
        return WeChatCrypto(s["token"], s["aes_key"], s["appid"])

    def _encrypt(self, message: str) -> Answer:
        from wechatpy.utils import WeChatSigner

        nonce = "n" + str(time.monotonic_ns())
        root = ET.fromstring(self._crypto().encrypt_message(message, nonce))
        timestamp = root.findtext("TimeStamp", "")
        signer = WeChatSigner()
        signer.add_data(self.settings["token"], timestamp, nonce)
        return {
            "encrypt": root.findtext("Encrypt"),
            "msg_signature": root.findtext("MsgSignature"),
            "timestamp": timestamp,
            "nonce": nonce,
            "signature": signer.signature,
        }

    def _decrypt(self, body: str, timestamp: str, nonce: str, msg_signature: str) -> Answer:
        plain = self._crypto().decrypt_message(body, msg_signature, timestamp, nonce)
        root = ET.fromstring(plain)
        items = [
            {child.tag: child.text for child in item}
            for wrapper in root
            if wrapper.tag.startswith("SubscribeMsg")
            for item in wrapper
        ]
        return {
            "to_user": root.findtext("ToUserName"),
            "from_user": root.findtext("FromUserName"),
            "event": root.findtext("Event"),
            "items": [
                {"template_id": i.get("TemplateId"), "status": i.get("SubscribeStatusString")}
                if "SubscribeStatusString" in i
                else {"template_id": i.get("TemplateId"), "msgid": i.get("MsgID")}
                for i in items
            ],
        }


def sandbox_client(base: str, appid: str, secret: str, stable: bool = False) -> Any:
    """A wechatpy WeChatClient on the sandbox: the override docs/sandbox.md shows shops.

    wechatpy 1.8.18 writes its token URL into ``fetch_access_token`` and its API bases into
    class attributes, so the override sets both; ``stable`` fetches a stable token instead (a
    recipe: 1.8.18 has no stable_token).
    """
    from wechatpy import WeChatClient
    from wechatpy.exceptions import WeChatClientException

    class SandboxClient(WeChatClient):  # type: ignore[misc]
        API_BASE_URL = f"{base}/cgi-bin/"

        def __init__(self) -> None:
            super().__init__(appid, secret)
            self.wxa.API_BASE_URL = f"{base}/"  # subscribe/send lives under /cgi-bin/ there

        def fetch_access_token(self, force_refresh: bool = False) -> dict[str, Any]:
            if not stable:
                return dict(
                    self._fetch_access_token(
                        url=f"{base}/cgi-bin/token",
                        params={
                            "grant_type": "client_credential",
                            "appid": appid,
                            "secret": secret,
                        },
                    )
                )
            body = {
                "grant_type": "client_credential",
                "appid": appid,
                "secret": secret,
                "force_refresh": force_refresh,
            }
            res = self._http.post(f"{base}/cgi-bin/stable_token", json=body, timeout=self.timeout)
            result: dict[str, Any] = res.json()
            if result.get("errcode"):
                raise WeChatClientException(result["errcode"], result.get("errmsg"), client=self)
            self.session.set(self.access_token_key, result["access_token"], result["expires_in"])
            self.expires_at = int(time.time()) + result["expires_in"]
            return result

    return SandboxClient()

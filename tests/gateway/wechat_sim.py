"""What WeChat does when it pushes, written independently of wxsub's code (for the tests).

AES uses the ``cryptography`` primitives directly with PKCS#7 done by hand, signatures use
hashlib: a bug shared with wxsub.wechat.push_crypto would have to be made twice.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
import time
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape

import orjson
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["WeChatSim", "aes_decrypt", "aes_encrypt", "sha1_signature"]


def sha1_signature(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


def _key(encoding_aes_key: str) -> bytes:
    return base64.b64decode(encoding_aes_key + "=")


def aes_encrypt(encoding_aes_key: str, message: bytes, appid: str, rand: bytes) -> str:
    key = _key(encoding_aes_key)
    plain = rand + struct.pack(">I", len(message)) + message + appid.encode()
    pad = 32 - len(plain) % 32
    plain += bytes([pad]) * pad
    enc = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(enc.update(plain) + enc.finalize()).decode()


def aes_decrypt(encoding_aes_key: str, encrypted: str) -> tuple[bytes, str]:
    key = _key(encoding_aes_key)
    dec = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
    plain = dec.update(base64.b64decode(encrypted)) + dec.finalize()
    plain = plain[: -plain[-1]]
    (length,) = struct.unpack(">I", plain[16:20])
    return plain[20 : 20 + length], plain[20 + length :].decode()


def _xml_value(value: Any) -> str:
    return str(value) if isinstance(value, int) else f"<![CDATA[{value}]]>"


def xml_doc(fields: dict[str, Any]) -> bytes:
    """``<xml>`` with scalar fields, and ``{"Wrapper": [item, ...]}`` as repeated ``<List>``."""
    out = ["<xml>"]
    for name, value in fields.items():
        if isinstance(value, list):
            lists = "".join(
                "<List>"
                + "".join(f"<{k}>{_xml_value(v)}</{k}>" for k, v in item.items())
                + "</List>"
                for item in value
            )
            out.append(f"<{name}>{lists}</{name}>")
        else:
            out.append(f"<{name}>{_xml_value(value)}</{name}>")
    out.append("</xml>")
    return "".join(out).encode()


_WRAPPER = {
    "subscribe_msg_popup_event": "SubscribeMsgPopupEvent",
    "subscribe_msg_change_event": "SubscribeMsgChangeEvent",
    "subscribe_msg_sent_event": "SubscribeMsgSentEvent",
}


@dataclass
class WeChatSim:
    """Builds push requests (query params + body) for one mini program."""

    appid: str
    token: str
    aes_key: str
    original_id: str = "gh_0123456789ab"
    mode: str = "safe"  # plain | compatible | safe
    fmt: str = "xml"  # xml | json
    clock: Any = field(default=time.time)

    def message(
        self, openid: str, event: str, items: list[dict[str, Any]], create_time: int
    ) -> bytes:
        head = {
            "ToUserName": self.original_id,
            "FromUserName": openid,
            "CreateTime": create_time,
            "MsgType": "event",
            "Event": event,
        }
        if self.fmt == "json":
            body = {**head, "List": items[0] if len(items) == 1 else items}
            return orjson.dumps(body)
        return xml_doc({**head, _WRAPPER.get(event, "Other"): items})

    def request(
        self, body: bytes, *, timestamp: int | None = None, nonce: str | None = None
    ) -> tuple[dict[str, str], bytes]:
        """(query params, body) as WeChat would send ``body`` in this sim's mode."""
        ts = str(int(self.clock()) if timestamp is None else timestamp)
        nonce = nonce or os.urandom(6).hex()
        params = {
            "timestamp": ts,
            "nonce": nonce,
            "signature": sha1_signature(self.token, ts, nonce),
        }
        if self.mode == "plain":
            return params, body
        encrypted = aes_encrypt(self.aes_key, body, self.appid, os.urandom(16))
        params.update(
            encrypt_type="aes", msg_signature=sha1_signature(self.token, ts, nonce, encrypted)
        )
        return params, self.envelope(encrypted, body if self.mode == "compatible" else None)

    def envelope(self, encrypted: str, plain: bytes | None = None) -> bytes:
        if self.fmt == "json":
            doc = orjson.loads(plain) if plain else {"ToUserName": self.original_id}
            return orjson.dumps({**doc, "Encrypt": encrypted})
        inner = (
            plain.decode()[5:-6]
            if plain
            else f"<ToUserName>{escape(self.original_id)}</ToUserName>"
        )
        return f"<xml>{inner}<Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>".encode()

    def popup(
        self, openid: str, accepts: dict[str, str], create_time: int | None = None
    ) -> tuple[dict[str, str], bytes]:
        items = [
            {"TemplateId": t, "SubscribeStatusString": s, "PopupScene": 0}
            for t, s in accepts.items()
        ]
        ct = int(self.clock()) if create_time is None else create_time
        return self.request(self.message(openid, "subscribe_msg_popup_event", items, ct))

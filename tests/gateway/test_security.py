"""Hostile pushes: each gets the right status, nothing reaches Kafka, the gateway stays up;
and no secret ever reaches a log line."""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable

import orjson
import pytest

from tests.fixtures.kafka_helpers import read_all
from tests.gateway.conftest import AES_KEY, APPSECRET, TOKEN, Gateway
from tests.gateway.wechat_sim import WeChatSim, aes_encrypt, sha1_signature
from wxsub.errors import InputError
from wxsub.logs import JsonFormatter
from wxsub.schemas import decode

pytestmark = pytest.mark.kafka

SAFE, PLAIN = "wxsafe0000000001", "wxplain000000002"
OPENID = "oAttacker0000000000000000000"
ITEMS = [{"TemplateId": "T1", "SubscribeStatusString": "accept"}]
BILLION_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY a "aaaaaaaaaa">'
    b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>'
    b"<xml><ToUserName>gh_x</ToUserName><FromUserName>&c;</FromUserName></xml>"
)
XXE = (
    b'<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY e SYSTEM "file:///etc/hostname">]>'
    b"<xml><ToUserName>gh_x</ToUserName><FromUserName>&e;</FromUserName></xml>"
)

Case = Callable[[Gateway], tuple[dict[str, str], bytes, str | None]]


def _msg(sim: WeChatSim) -> bytes:
    return sim.message(OPENID, "subscribe_msg_popup_event", ITEMS, int(time.time()))


def wrong_signature(g: Gateway):  # type: ignore[no-untyped-def]
    params, body = g.sim(PLAIN).request(_msg(g.sim(PLAIN)))
    return (
        {**params, "signature": sha1_signature("guess", params["timestamp"], params["nonce"])},
        body,
        PLAIN,
    )


def wrong_msg_signature(g: Gateway):  # type: ignore[no-untyped-def]
    params, body = g.sim(SAFE).request(_msg(g.sim(SAFE)))
    return {**params, "msg_signature": "0" * 40}, body, SAFE


def missing_signature(g: Gateway):  # type: ignore[no-untyped-def]
    params, body = g.sim(PLAIN).request(_msg(g.sim(PLAIN)))
    return {k: v for k, v in params.items() if k != "signature"}, body, PLAIN


def stale_timestamp(g: Gateway):  # type: ignore[no-untyped-def]
    sim = g.sim(SAFE)
    return (*sim.request(_msg(sim), timestamp=int(time.time()) - 3600), SAFE)


def future_timestamp(g: Gateway):  # type: ignore[no-untyped-def]
    sim = g.sim(PLAIN)
    return (*sim.request(_msg(sim), timestamp=int(time.time()) + 3600), PLAIN)


def oversize_body(g: Gateway):  # type: ignore[no-untyped-def]
    sim = g.sim(PLAIN)
    items = [{"TemplateId": f"T{i}", "SubscribeStatusString": "accept"} for i in range(2000)]
    return (
        *sim.request(sim.message(OPENID, "subscribe_msg_popup_event", items, int(time.time()))),
        PLAIN,
    )


def malformed_xml_plain(g: Gateway):  # type: ignore[no-untyped-def]
    return (*g.sim(PLAIN).request(b"<xml><ToUserName>gh_x</ToUserName><oops></xml>"), PLAIN)


def malformed_xml_encrypted(g: Gateway):  # type: ignore[no-untyped-def]
    return (*g.sim(SAFE).request(b"<xml><FromUserName>x</FromUser"), SAFE)


def entity_expansion(g: Gateway):  # type: ignore[no-untyped-def]
    return (*g.sim(PLAIN).request(BILLION_LAUGHS), PLAIN)


def external_entity_encrypted(g: Gateway):  # type: ignore[no-untyped-def]
    return (*g.sim(SAFE).request(XXE), SAFE)


def wrong_appid_after_decryption(g: Gateway):  # type: ignore[no-untyped-def]
    sim = g.sim(SAFE)
    other = WeChatSim("wxother000000009", TOKEN, AES_KEY, original_id=sim.original_id, mode="safe")
    return (*other.request(_msg(sim)), SAFE)


def _signed_encrypt(g: Gateway, encrypted: str):  # type: ignore[no-untyped-def]
    sim = g.sim(SAFE)
    ts, nonce = str(int(time.time())), "nonce-x"
    params = {
        "timestamp": ts,
        "nonce": nonce,
        "signature": sha1_signature(TOKEN, ts, nonce),
        "msg_signature": sha1_signature(TOKEN, ts, nonce, encrypted),
        "encrypt_type": "aes",
    }
    return params, sim.envelope(encrypted), SAFE


def truncated_ciphertext(g: Gateway):  # type: ignore[no-untyped-def]
    raw = base64.b64decode(aes_encrypt(AES_KEY, _msg(g.sim(SAFE)), SAFE, b"\1" * 16))
    return _signed_encrypt(g, base64.b64encode(raw[:-16]).decode())


def wrong_padding(g: Gateway):  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    key = base64.b64decode(AES_KEY + "=")
    plain = b"\0" * 16 + (4).to_bytes(4, "big") + b"<x/>" + SAFE.encode()
    plain += bytes([0x41]) * (32 - len(plain) % 32)  # 'A' bytes: not a valid PKCS#7 pad
    enc = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return _signed_encrypt(g, base64.b64encode(enc.update(plain) + enc.finalize()).decode())


def unknown_app_path(g: Gateway):  # type: ignore[no-untyped-def]
    return (*g.sim(SAFE).request(_msg(g.sim(SAFE))), "wxunknown0000000")


def invalid_event_values(g: Gateway):  # type: ignore[no-untyped-def]
    sim = g.sim(PLAIN)
    items = [{"TemplateId": "T1", "SubscribeStatusString": "maybe"}]
    return (
        *sim.request(sim.message(OPENID, "subscribe_msg_popup_event", items, int(time.time()))),
        PLAIN,
    )


def non_ascii_timestamp(g: Gateway):  # type: ignore[no-untyped-def]
    params, body = g.sim(PLAIN).request(_msg(g.sim(PLAIN)))
    return {**params, "timestamp": "١٢٣"}, body, PLAIN


CASES: list[tuple[Case, int, str]] = [
    (wrong_signature, 403, "bad_signature"),
    (wrong_msg_signature, 403, "bad_signature"),
    (missing_signature, 400, "missing_param"),
    (stale_timestamp, 403, "stale_timestamp"),
    (future_timestamp, 403, "stale_timestamp"),
    (oversize_body, 413, "too_large"),
    (malformed_xml_plain, 400, "malformed"),
    (malformed_xml_encrypted, 400, "malformed"),
    (entity_expansion, 400, "forbidden_xml"),
    (external_entity_encrypted, 400, "forbidden_xml"),
    (wrong_appid_after_decryption, 403, "appid_mismatch"),
    (truncated_ciphertext, 400, "bad_ciphertext"),
    (wrong_padding, 400, "bad_ciphertext"),
    (unknown_app_path, 404, "unknown_app"),
    (non_ascii_timestamp, 400, "missing_param"),
]


@pytest.mark.parametrize(("case", "status", "reason"), CASES, ids=[c[0].__name__ for c in CASES])
async def test_hostile_push_refused(gateway: Gateway, case: Case, status: int, reason: str) -> None:
    params, body, appid = case(gateway)
    assert await gateway.post(params, body, appid) == (status, reason)
    assert gateway.metric("wxsub_gateway_rejected_total", reason=reason) == 1
    assert await gateway.healthy()
    assert await gateway.records() == []


async def test_item_breaking_the_schema_is_kept_for_the_dlq(gateway: Gateway) -> None:
    """A verified push is made durable even when an item breaks the schema: its raw document
    goes to the subscriptions topic (the worker DLQs it with the reason), WeChat gets success."""
    params, body, appid = invalid_event_values(gateway)
    assert await gateway.post(params, body, appid) == (200, "success")
    raw = await read_all(gateway.bootstrap, gateway.topic)
    assert len(raw) == 1
    assert raw[0].key.decode() == f"{appid}:{OPENID}"
    with pytest.raises(InputError) as err:
        decode("subscription", raw[0].value)
    assert err.value.reason == "schema"
    assert orjson.loads(raw[0].value)["status"] == "maybe"
    assert gateway.metric("wxsub_gateway_events_total", event="invalid") == 1
    assert await gateway.healthy()


async def test_oversize_chunked_body_refused(gateway: Gateway) -> None:
    params, _ = gateway.sim(PLAIN).request(b"")

    async def chunks():  # type: ignore[no-untyped-def]
        yield b"<xml>"
        for _ in range(100):
            yield b"<A>" + b"x" * 1000 + b"</A>"
        yield b"</xml>"

    async with gateway.http.post(
        f"{gateway.url}/wechat/push/{PLAIN}", params=params, data=chunks()
    ) as resp:
        assert resp.status == 413
    assert await gateway.healthy()
    assert await gateway.records() == []


async def test_replayed_message_produces_nothing_more(gateway: Gateway) -> None:
    sim = gateway.sim(SAFE)
    params, body = sim.request(_msg(sim))
    for _ in range(3):  # byte-identical replay of one captured request
        assert await gateway.post(params, body, SAFE) == (200, "success")
    assert len(await gateway.records()) == 1
    assert gateway.metric("wxsub_gateway_requests_total", result="duplicate") == 2


async def test_replayed_signature_with_other_body_refused(gateway: Gateway) -> None:
    """Plain mode signs only (token, timestamp, nonce): a captured query reused for another
    body is caught by the (timestamp, nonce) memory."""
    sim = gateway.sim(PLAIN)
    params, body = sim.request(_msg(sim))
    assert await gateway.post(params, body, PLAIN) == (200, "success")
    forged = sim.message("oVictim", "subscribe_msg_popup_event", ITEMS, int(time.time()))
    assert await gateway.post(params, forged, PLAIN) == (403, "replayed_nonce")
    assert [r["openid"] for r in await gateway.records()] == [OPENID]


async def test_secrets_never_logged(gateway: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for case, _status, _reason in CASES:
        params, body, appid = case(gateway)
        await gateway.post(params, body, appid)
    sim = gateway.sim(SAFE)
    params, body = sim.request(_msg(sim))
    assert await gateway.post(params, body, SAFE) == (200, "success")
    assert any(r.name == "wxsub.gateway" for r in caplog.records)
    key = base64.b64decode(AES_KEY + "=")
    forms = [TOKEN, AES_KEY, APPSECRET, key.hex(), base64.b64encode(key).decode(), repr(key)[2:-1]]
    formatter = JsonFormatter()
    lines = caplog.text + "\n".join(formatter.format(r) for r in caplog.records)
    for secret in forms:
        assert secret not in lines

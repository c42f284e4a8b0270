"""The WeChat message-push endpoint (aiohttp): verify, decrypt, parse, produce, answer.

Routes: ``GET|POST /wechat/push/{appid}`` (one path per mini program), ``GET|POST /wechat/push``
(the app resolved from ``ToUserName``, matched against each app's ``original_id`` or appid),
``GET /health`` and ``GET /metrics``. A POST is answered ``success`` only after its records are
durable in Kafka; when Kafka cannot take them the answer is 503, so WeChat retries.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler

from wxsub.errors import ConfigError, ProduceError, PushRejected, RejectReason
from wxsub.gateway.dedupe import PushDeduper, TtlMap
from wxsub.gateway.metrics import GatewayMetrics, event_label
from wxsub.gateway.producer import RecordSink
from wxsub.gateway.records import card_record, dedupe_key, to_records_keeping_invalid
from wxsub.settings import GatewaySettings, PushEndpoint, Settings
from wxsub.wechat.push_crypto import PushCipher, signature_matches
from wxsub.wechat.push_parse import PushMessage, parse_document, read_message

__all__ = ["PUSH_PATH", "SUCCESS", "create_gateway_app"]

log = logging.getLogger("wxsub.gateway")

PUSH_PATH = "/wechat/push"
SUCCESS = "success"
_STATUS: dict[RejectReason, int] = {
    RejectReason.UNKNOWN_APP: 404,
    RejectReason.TOO_LARGE: 413,
    RejectReason.MISSING_PARAM: 400,
    RejectReason.BAD_SIGNATURE: 403,
    RejectReason.STALE_TIMESTAMP: 403,
    RejectReason.REPLAYED_NONCE: 403,
    RejectReason.APPID_MISMATCH: 403,
    RejectReason.BAD_CIPHERTEXT: 400,
    RejectReason.MALFORMED: 400,
    RejectReason.FORBIDDEN_XML: 400,
    RejectReason.INVALID_EVENT: 400,
}
_MAX_ECHOSTR = 256


def create_gateway_app(
    settings: Settings,
    producer: RecordSink,
    registry: CollectorRegistry,
    *,
    clock: Callable[[], float] = time.time,
    probe: ReadinessProbe | None = None,
    card_sink: RecordSink | None = None,
) -> web.Application:
    """The gateway's aiohttp application; ``producer`` must be started by the caller.

    ``probe`` (a :class:`wxsub.streams.connection.KafkaProbe`) backs ``/health/ready``: 503
    while Kafka is unreachable, so a load balancer sends WeChat's pushes elsewhere.
    ``card_sink`` takes service-card failure events (``card-events``); without one they are
    acknowledged and counted as ``other``."""
    gw = settings.gateway
    metrics = GatewayMetrics(registry)
    handler = _PushHandler(gw, _endpoints(gw), producer, metrics, clock, card_sink)
    app = web.Application(client_max_size=gw.max_body_bytes)
    app.router.add_get("/health", handler.health)
    app.router.add_get("/health/live", _live)
    app.router.add_get("/health/ready", _readiness(probe))
    app.router.add_get("/metrics", make_aiohttp_handler(registry))
    for path in (PUSH_PATH, PUSH_PATH + "/{appid}"):
        app.router.add_get(path, handler.verify)
        app.router.add_post(path, handler.push)
    return app


class ReadinessProbe(Protocol):
    async def check(self) -> tuple[bool, str]: ...


async def _live(request: web.Request) -> web.Response:
    return web.json_response({"live": True})


def _readiness(probe: ReadinessProbe | None) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def ready(request: web.Request) -> web.Response:
        ok, why = (True, "not probed") if probe is None else await probe.check()
        return web.json_response({"ready": ok, "kafka": why}, status=200 if ok else 503)

    return ready


@dataclass(frozen=True, slots=True)
class _Endpoint:
    conf: PushEndpoint
    cipher: PushCipher | None

    def __repr__(self) -> str:
        return f"_Endpoint(appid={self.conf.appid!r}, mode={self.conf.mode!r})"


@dataclass(frozen=True, slots=True)
class _Query:
    timestamp: str
    nonce: str
    signature: str
    msg_signature: str


def _endpoints(gw: GatewaySettings) -> dict[str, _Endpoint]:
    out: dict[str, _Endpoint] = {}
    for appid, conf in gw.apps.items():
        cipher = None
        if conf.aes_key is not None:
            try:
                cipher = PushCipher(conf.aes_key.reveal())
            except ValueError as exc:
                raise ConfigError(f"gateway.apps.{appid}.aes_key", str(exc)) from None
        out[appid] = _Endpoint(conf, cipher)
    return out


class _PushHandler:
    def __init__(
        self,
        gw: GatewaySettings,
        endpoints: Mapping[str, _Endpoint],
        producer: RecordSink,
        metrics: GatewayMetrics,
        clock: Callable[[], float],
        card_sink: RecordSink | None = None,
    ) -> None:
        self._gw = gw
        self._endpoints = endpoints
        self._producer = producer
        self._metrics = metrics
        self._clock = clock
        self._dedupe = PushDeduper(TtlMap(gw.dedupe_ttl_s, gw.dedupe_max_entries))
        self._nonces = TtlMap(gw.dedupe_ttl_s, gw.dedupe_max_entries)
        self._card_sink = card_sink

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "apps": len(self._endpoints)})

    # --- GET: URL verification ------------------------------------------------------------

    async def verify(self, request: web.Request) -> web.Response:
        try:
            candidates = self._path_endpoints(request)
            query = self._query(request)
            echostr = request.query.get("echostr", "")
            if not echostr or len(echostr) > _MAX_ECHOSTR:
                raise PushRejected(RejectReason.MISSING_PARAM, "echostr missing or too long")
            if not any(self._signed(e, query.signature, query) for e in candidates):
                raise PushRejected(RejectReason.BAD_SIGNATURE, "signature does not match")
        except PushRejected as exc:
            return self._reject(exc, request)
        self._metrics.requests.labels("verified").inc()
        return web.Response(text=echostr)

    # --- POST: a message push -------------------------------------------------------------

    async def push(self, request: web.Request) -> web.Response:
        try:
            appid, message = await self._authenticate(request)
        except PushRejected as exc:
            return self._reject(exc, request)
        sink = self._producer
        if message.is_card and self._card_sink is not None:
            records, sink = [card_record(appid, message)], self._card_sink
        elif not message.is_subscription:
            self._metrics.events.labels("other").inc()
            self._metrics.requests.labels("ignored").inc()
            return web.Response(text=SUCCESS)
        else:
            records = self._subscription_records(appid, message)
        try:
            ran = await self._dedupe.once(
                dedupe_key(appid, message), lambda: self._produce(sink, records, message.event)
            )
        except ProduceError as exc:
            log.warning(
                "push not durable, answering 503", extra={"appid": appid, "error": str(exc)}
            )
            self._metrics.requests.labels("produce_failed").inc()
            return web.Response(status=503, text="retry later")
        self._metrics.requests.labels("ok" if ran else "duplicate").inc()
        return web.Response(text=SUCCESS)

    def _subscription_records(self, appid: str, message: PushMessage) -> list[tuple[bytes, bytes]]:
        records, invalid = to_records_keeping_invalid(appid, message)
        if invalid:
            log.warning(
                "push item breaks the SubscriptionEvent schema; forwarded for the DLQ",
                extra={"appid": appid, "items": invalid},
            )
            self._metrics.events.labels("invalid").inc(invalid)
        return records

    async def _produce(
        self, sink: RecordSink, records: Sequence[tuple[bytes, bytes]], event: str
    ) -> None:
        started = time.perf_counter()
        await sink.produce(records)
        self._metrics.produce_seconds.observe(time.perf_counter() - started)
        self._metrics.events.labels(event_label(event)).inc()
        self._metrics.records.labels(event_label(event)).inc(len(records))

    async def _authenticate(self, request: web.Request) -> tuple[str, PushMessage]:
        """Every check, in order; returns the verified appid and message or PushRejected."""
        candidates = self._path_endpoints(request)
        body = await self._body(request)
        query = self._query(request)
        outer = parse_document(body)
        endpoint = candidates[0] if len(candidates) == 1 else self._by_to_user(outer)
        message = read_message(self._open(endpoint, query, outer))
        conf = endpoint.conf
        if conf.original_id and message.to_user not in (conf.original_id, conf.appid):
            raise PushRejected(RejectReason.APPID_MISMATCH, "ToUserName is not this mini program")
        self._check_nonce(conf.appid, query, dedupe_key(conf.appid, message))
        return conf.appid, message

    def _open(self, endpoint: _Endpoint, query: _Query, outer: dict[str, Any]) -> dict[str, Any]:
        """Check signatures; in safe (or compatible, when encrypted) mode, decrypt the body."""
        encrypted = outer.get("Encrypt")
        mode = endpoint.conf.mode
        if mode == "plain" or (mode == "compatible" and encrypted is None):
            if not self._signed(endpoint, query.signature, query):
                raise PushRejected(RejectReason.BAD_SIGNATURE, "signature does not match")
            return outer
        if not isinstance(encrypted, str) or not encrypted:
            raise PushRejected(RejectReason.MALFORMED, "Encrypt missing")
        if not query.msg_signature:
            raise PushRejected(RejectReason.MISSING_PARAM, "msg_signature missing")
        if query.signature and not self._signed(endpoint, query.signature, query):
            raise PushRejected(RejectReason.BAD_SIGNATURE, "signature does not match")
        if not self._signed(endpoint, query.msg_signature, query, encrypted):
            raise PushRejected(RejectReason.BAD_SIGNATURE, "msg_signature does not match")
        assert endpoint.cipher is not None  # settings require aes_key outside plain mode
        plain, appid = endpoint.cipher.decrypt(encrypted)
        if appid != endpoint.conf.appid:
            raise PushRejected(
                RejectReason.APPID_MISMATCH, "decrypted appid is not this mini program"
            )
        return parse_document(plain)

    # --- checks ---------------------------------------------------------------------------

    def _path_endpoints(self, request: web.Request) -> list[_Endpoint]:
        appid = request.match_info.get("appid")
        if appid is None:
            return list(self._endpoints.values())
        endpoint = self._endpoints.get(appid)
        if endpoint is None:
            raise PushRejected(RejectReason.UNKNOWN_APP, "no push endpoint for this path")
        return [endpoint]

    def _by_to_user(self, outer: Mapping[str, Any]) -> _Endpoint:
        to_user = outer.get("ToUserName")
        for endpoint in self._endpoints.values():
            if to_user in (endpoint.conf.original_id, endpoint.conf.appid):
                return endpoint
        raise PushRejected(
            RejectReason.UNKNOWN_APP, "ToUserName matches no configured mini program"
        )

    async def _body(self, request: web.Request) -> bytes:
        limit = self._gw.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise PushRejected(RejectReason.TOO_LARGE, f"body over {limit} bytes")
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise PushRejected(RejectReason.TOO_LARGE, f"body over {limit} bytes") from None

    def _query(self, request: web.Request) -> _Query:
        q = request.query
        query = _Query(
            q.get("timestamp", ""),
            q.get("nonce", ""),
            q.get("signature", ""),
            q.get("msg_signature", ""),
        )
        if not query.timestamp or not query.nonce or not (query.signature or query.msg_signature):
            raise PushRejected(
                RejectReason.MISSING_PARAM, "timestamp, nonce and a signature are required"
            )
        if not (query.timestamp.isascii() and query.timestamp.isdigit()):
            raise PushRejected(RejectReason.MISSING_PARAM, "timestamp is not an integer")
        if abs(self._clock() - int(query.timestamp)) > self._gw.timestamp_window_s:
            raise PushRejected(
                RejectReason.STALE_TIMESTAMP, "timestamp outside the accepted window"
            )
        return query

    def _signed(self, endpoint: _Endpoint, given: str, query: _Query, *extra: str) -> bool:
        token = endpoint.conf.token.reveal()
        return bool(given) and signature_matches(given, token, query.timestamp, query.nonce, *extra)

    def _check_nonce(self, appid: str, query: _Query, content: tuple[str, ...]) -> None:
        """A (timestamp, nonce) pair seen with other content is a replayed signature (in plain
        mode the signature does not cover the body, so this is the only thing tying them)."""
        key = (appid, query.timestamp, query.nonce)
        seen = self._nonces.get(key)
        if seen is not None and seen != content:
            raise PushRejected(
                RejectReason.REPLAYED_NONCE, "timestamp+nonce already used for another message"
            )
        self._nonces.put(key, content)

    def _reject(self, exc: PushRejected, request: web.Request) -> web.Response:
        self._metrics.reject(exc.reason)
        log.info(
            "push rejected",
            extra={"reason": exc.reason, "detail": str(exc), "path": request.path},
        )
        return web.Response(status=_STATUS.get(exc.reason, 400), text=exc.reason)

"""An httpx transport backed by one aiohttp ClientSession (fast pool, httpx's API on top).

httpx's own pool (httpcore) spends several ms of CPU per request with ~200 requests in flight;
aiohttp's pool spends a fraction of that (bench/sender.py measures both). We keep
``httpx.AsyncClient`` as the API and plug this transport in.

Why not ``httpx_aiohttp.AiohttpTransport`` (installed): it maps every
``aiohttp.ClientConnectionError`` -- including ``ServerDisconnectedError`` and connection resets
that happen after the request was written -- to ``httpx.ConnectTimeout``, i.e. "nothing was sent".
For a send that is wrong: it would turn an in-doubt send into a blind resend. It also trusts the
environment for proxies per request (a thread hop each time) and streams each tiny body through
an extra iterator. This module keeps httpx's contract exactly:

* ``httpx.ConnectError`` / ``httpx.ConnectTimeout``: the request never left (aiohttp raised while
  acquiring or opening the connection: DNS, refused, TLS, connect/pool timeout);
* ``httpx.ReadTimeout``, ``httpx.ReadError``, ``httpx.RemoteProtocolError``: the connection was
  handed the request, so the server may have processed it.

Exception messages are built here and scrubbed of query values (the access_token and, in classic
token mode, the appsecret ride in the query string), and the aiohttp chain is cut for the same
reason: aiohttp puts the full URL in some messages.

Two ways in, one pool and one error contract:

* ``handle_async_request``: the httpx transport API, for an ``httpx.AsyncClient``;
* ``exchange(method, url, body) -> (status, body bytes)``: the WeChat client's own lane. Building
  an ``httpx.Request``, passing it through ``AsyncClient.send`` (auth/redirect/cookie layers,
  its request log line) and building an ``httpx.Response`` cost ~0.3 ms of CPU per call, as much
  as the whole aiohttp exchange; WeChat replies are a few hundred bytes of JSON whose headers
  nobody reads. The lane raises the same ``httpx`` exceptions as the transport API.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping

import aiohttp
import httpx
from multidict import CIMultiDict
from yarl import URL

from wxsub.memo import remember

__all__ = ["AiohttpTransport", "client_timeout", "redact"]

_EXTENSIONS = {"http_version": b"HTTP/1.1"}
_URLS_MAX = 256  # the parsed-URL memo's bound (the client's URLs change with its tokens)
_SECRET_PARAM = re.compile(r"(access_token|secret)=[^&\s'\"]*", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with the values of access_token= and secret= query parameters masked."""
    return _SECRET_PARAM.sub(r"\1=***", text)


class AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx transport on a lazily created aiohttp session (it needs a running loop)."""

    def __init__(
        self,
        limits: httpx.Limits,
        *,
        verify: ssl.SSLContext | bool = True,
        headers: Mapping[str, str] | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> None:
        """``headers`` and ``timeout`` apply to :meth:`exchange` (the transport API takes them
        from each request)."""
        self._limits = limits
        self._ssl: ssl.SSLContext | bool = verify
        self._session: aiohttp.ClientSession | None = None
        # keyed by the request's (connect, read, pool) timeouts: a finite set (the settings')
        self._timeouts: dict[tuple[float | None, ...], aiohttp.ClientTimeout] = {}
        self._headers: CIMultiDict[str] = CIMultiDict(headers or {})
        self._timeout = client_timeout(timeout or httpx.Timeout(None))
        self._urls: dict[str, URL] = {}  # bounded: _URLS_MAX (wxsub.memo.remember)

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._limits.max_connections or 0,
                keepalive_timeout=self._limits.keepalive_expiry or 15.0,
                ssl=self._ssl,
                ttl_dns_cache=300,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,  # httpx decodes per Content-Encoding
                trust_env=False,
            )
        return self._session

    def _timeout_for(self, ext: dict[str, float | None]) -> aiohttp.ClientTimeout:
        key = (ext.get("connect"), ext.get("read"), ext.get("pool"))
        cached = self._timeouts.get(key)
        if cached is None:
            cached = _client_timeout(*key)
            self._timeouts[key] = cached
        return cached

    def _url(self, url: str) -> URL:
        """``url`` parsed once (the client reuses one string per path and token)."""
        parsed = self._urls.get(url)
        if parsed is None:
            parsed = remember(self._urls, url, URL(url), _URLS_MAX)
        return parsed

    async def exchange(self, method: str, url: str, body: bytes | None) -> tuple[int, bytes]:
        """One call with this transport's headers and timeout -> (status, raw body).

        Raises the httpx exceptions :meth:`handle_async_request` raises (with no ``request``
        attached).
        """
        session = self._get_session()
        try:
            async with session.request(
                method,
                self._url(url),
                headers=self._headers,
                data=body,
                allow_redirects=False,
                timeout=self._timeout,
                auto_decompress=True,  # raw bytes go straight to the JSON parser
            ) as resp:
                return resp.status, await resp.read()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _translate(exc, None) from None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._get_session()
        body = await request.aread()
        try:
            async with session.request(
                request.method,
                str(request.url),
                headers=request.headers.multi_items(),
                data=body or None,
                allow_redirects=False,
                compress=None,
                timeout=self._timeout_for(request.extensions.get("timeout", {})),
            ) as resp:
                content = await resp.read()
                status, headers = resp.status, resp.raw_headers
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _translate(exc, request) from None
        # content= (not a stream): httpx reads it synchronously, no async-generator round trip
        return httpx.Response(
            status_code=status,
            headers=headers,
            content=content,
            request=request,
            extensions=_EXTENSIONS,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


# Most specific first: ConnectionTimeoutError is a ServerTimeoutError, ClientConnectorError is a
# ClientOSError, ServerDisconnectedError is a ClientConnectionError.
_MAP: tuple[tuple[type[BaseException], type[httpx.TransportError], str], ...] = (
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout, "connect timed out"),
    (aiohttp.ClientConnectorError, httpx.ConnectError, "cannot connect"),
    (aiohttp.SocketTimeoutError, httpx.ReadTimeout, "read timed out"),
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout, "timed out"),
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError, "server disconnected"),
    (aiohttp.ClientPayloadError, httpx.ReadError, "response body broken"),
    (aiohttp.ClientResponseError, httpx.RemoteProtocolError, "bad response"),
    (aiohttp.InvalidURL, httpx.UnsupportedProtocol, "invalid URL"),
    (aiohttp.NonHttpUrlClientError, httpx.UnsupportedProtocol, "not an http(s) URL"),
    (aiohttp.ClientOSError, httpx.ReadError, "connection error"),
    (TimeoutError, httpx.ReadTimeout, "timed out"),
)


def client_timeout(timeout: httpx.Timeout) -> aiohttp.ClientTimeout:
    """aiohttp's equivalent of an httpx Timeout (``write`` has no counterpart: small bodies)."""
    return _client_timeout(timeout.connect, timeout.read, timeout.pool)


def _client_timeout(
    connect: float | None, read: float | None, pool: float | None
) -> aiohttp.ClientTimeout:
    # aiohttp's ``connect`` covers the pool wait plus the connect itself
    whole = None if connect is None or pool is None else connect + pool
    return aiohttp.ClientTimeout(total=None, connect=whole, sock_connect=connect, sock_read=read)


def _translate(exc: BaseException, request: httpx.Request | None) -> httpx.TransportError:
    """The httpx exception for an aiohttp one; anything unknown counts as 'maybe sent'."""
    target: type[httpx.TransportError] = httpx.ReadError
    what = "connection error"
    for source, mapped, text in _MAP:
        if isinstance(exc, source):
            target, what = mapped, text
            break
    detail = redact(str(exc))[:200]
    return target(f"{what} ({type(exc).__name__}: {detail})", request=request)

"""The WeChat API client: access tokens, subscribe/send, gettemplate. Async only.

Send path, in layers::

    send(appid, body)
      -> token (TokenManager: cached, single-flight refresh ahead of expiry)
      -> on 40001/40014/42001: drop that token if still cached, refresh, retry once
      -> one HTTP request (_call: the ONE place httpx errors become wxsub.errors)
      -> errcode -> SendResult, or RetryableError / QuotaExceeded / PermanentError / InDoubtError

The HTTP request takes one of two lanes, with one error contract (httpx exceptions):

* default: the aiohttp-backed transport's ``exchange`` lane (bytes in, status + bytes out), which
  skips building httpx Request/Response objects and AsyncClient.send's layers -- together more
  CPU than the aiohttp exchange itself (bench/sender.py);
* an injected ``transport``: a plain ``httpx.AsyncClient.send`` through it.

The client does not retry -1/43108/45011 or transport failures: the deliver stage retries on a
timer without blocking its partition. ``miniprogram_state`` and ``lang`` are fields of the body
the caller builds; the client sends the body as given.

Secrets: the appsecret goes only into the token request; the access_token only into the query
string of calls. Neither appears in our exception messages or reprs, and a log filter masks
both in httpx's own request log lines (our per-call DEBUG line is masked where it is built).
"""

from __future__ import annotations

import http.cookiejar
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from wxsub.errors import (
    InDoubtError,
    PermanentError,
    QuotaExceeded,
    RetryableError,
    WeChatError,
)
from wxsub.memo import remember
from wxsub.settings import AppCredentials, Secret, WeChatSettings
from wxsub.wechat.errcodes import TOKEN_ERRCODES, Disposition, describe
from wxsub.wechat.templates import TemplateKeyword, parse_content
from wxsub.wechat.tokens import AccessToken, TokenManager
from wxsub.wechat.transport import AiohttpTransport, redact

__all__ = ["SendResult", "Template", "WeChatClient"]

log = logging.getLogger(__name__)

_SEND = "/cgi-bin/message/subscribe/send"
_GETTEMPLATE = "/wxaapi/newtmpl/gettemplate"
_STABLE_TOKEN = "/cgi-bin/stable_token"  # noqa: S105 (a path)
_CLASSIC_TOKEN = "/cgi-bin/token"  # noqa: S105 (a path)
_URLS_MAX = 256  # the URL memos' bound (tokens rotate: old keys go stale)
_HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json",
    "Accept-Encoding": "identity",  # tiny bodies: compression costs more than it saves
    "User-Agent": "wxsub",
}


@dataclass(frozen=True, slots=True)
class SendResult:
    """A message WeChat accepted. ``msgid`` is exact (WeChat's ids exceed 2**53)."""

    msgid: int
    errcode: int = 0


@dataclass(frozen=True, slots=True)
class Template:
    """One private template of a mini program, as gettemplate lists it."""

    template_id: str
    title: str
    content: str
    example: str = ""
    type: int = 2
    keywords: tuple[TemplateKeyword, ...] = ()  # in layout order, with their types
    enum_values: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


class WeChatClient:
    """One per process: a long-lived httpx.AsyncClient (aiohttp-backed pool) and the tokens.

    ``transport`` replaces the aiohttp-backed lane: every call then goes through
    ``httpx.AsyncClient.send`` on it (tests, benchmarks: e.g. ``httpx.AsyncHTTPTransport`` for
    httpx's own pool). Use ``async with`` or ``aclose()``.
    """

    def __init__(
        self,
        settings: WeChatSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._base = settings.api_base.rstrip("/")
        # (path, token) -> URL, and URL -> parsed; bounded: _URLS_MAX each (wxsub.memo.remember)
        self._urls: dict[tuple[str, str], str] = {}
        self._httpx_urls: dict[str, httpx.URL] = {}
        limits = httpx.Limits(
            max_connections=settings.max_connections,
            max_keepalive_connections=settings.max_connections,
            keepalive_expiry=settings.keepalive_expiry_s,
        )
        timeout = httpx.Timeout(
            connect=settings.connect_timeout_s,
            read=settings.read_timeout_s,
            write=settings.read_timeout_s,
            pool=settings.connect_timeout_s,
        )
        self._headers = httpx.Headers(_HEADERS)
        self._extensions = {"timeout": timeout.as_dict()}
        self._lane: AiohttpTransport | None = None
        if transport is None:
            transport = self._lane = AiohttpTransport(limits, headers=_HEADERS, timeout=timeout)
        self._http = httpx.AsyncClient(
            headers=_HEADERS,
            timeout=timeout,
            limits=limits,
            transport=transport,
            follow_redirects=False,
            trust_env=False,
            cookies=_NoCookies(),
        )
        self.tokens = TokenManager(
            self._fetch_token, refresh_margin_s=settings.token_refresh_margin_s, clock=clock
        )
        _install_log_redaction()

    def __repr__(self) -> str:
        apps = len(self._settings.apps)
        return f"WeChatClient(api_base={self._settings.api_base!r}, apps={apps})"

    async def __aenter__(self) -> WeChatClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.tokens.aclose()
        await self._http.aclose()

    # --- public calls --------------------------------------------------------------------------

    async def send(self, appid: str, body: Mapping[str, Any]) -> SendResult:
        """POST subscribe/send with ``body`` (touser, template_id, data, page, miniprogram_state,
        lang) as given. Raises RetryableError (not sent), QuotaExceeded (45009), PermanentError
        or InDoubtError (may have been sent); all carry ``errcode`` (None for transport errors).
        """
        doc = await self._authed(appid, "POST", _SEND, orjson.dumps(body), idempotent=False)
        errcode = _errcode(doc)
        if errcode != 0:
            raise _refusal(errcode, doc, "send")
        return SendResult(_msgid(doc))

    async def get_templates(self, appid: str) -> list[Template]:
        """The mini program's private templates (gettemplate), keyword types parsed."""
        doc = await self._authed(appid, "GET", _GETTEMPLATE, None, idempotent=True)
        errcode = _errcode(doc)
        if errcode != 0:
            raise _refusal(errcode, doc, "gettemplate")
        items = doc.get("data") or []
        if not isinstance(items, list):
            raise PermanentError("gettemplate: unexpected response shape")
        return [_template(item) for item in items if isinstance(item, dict)]

    async def post(
        self, appid: str, path: str, body: Mapping[str, Any], *, idempotent: bool
    ) -> dict[str, Any]:
        """POST ``body`` to ``path`` with the appid's token (refreshed once on a token errcode);
        the JSON answer, errcode not judged (``wxsub.wechat.cards`` judges card calls)."""
        return await self._authed(appid, "POST", path, orjson.dumps(body), idempotent=idempotent)

    # --- layers --------------------------------------------------------------------------------

    async def _authed(
        self, appid: str, method: str, path: str, content: bytes | None, *, idempotent: bool
    ) -> dict[str, Any]:
        """One call with the appid's token; on a token errcode, refresh and retry once."""
        token = await self.tokens.get(appid)
        doc = await self._call(method, self._url(path, token), content, idempotent=idempotent)
        if _errcode(doc) in TOKEN_ERRCODES:
            self.tokens.invalidate(appid, token)
            token = await self.tokens.get(appid)
            doc = await self._call(method, self._url(path, token), content, idempotent=idempotent)
        return doc

    def _url(self, path: str, token: AccessToken) -> str:
        """The absolute URL with the token, built once per token (the same string each time,
        so the transports' parsed-URL caches hit)."""
        key = (path, token.reveal())
        url = self._urls.get(key)
        if url is None:
            url = f"{self._base}{path}?access_token={quote(key[1], safe='')}"
            remember(self._urls, key, url, _URLS_MAX)
        return url

    async def _fetch_token(self, appid: str) -> tuple[Secret, float]:
        creds = self._credentials(appid)
        if self._settings.token_mode == "stable":  # noqa: S105 (a mode name)
            body = orjson.dumps(_stable_token_body(creds))
            doc = await self._call("POST", self._base + _STABLE_TOKEN, body, idempotent=True)
        else:
            query = {"grant_type": "client_credential", "appid": appid}
            query["secret"] = creds.secret.reveal()
            url = f"{self._base}{_CLASSIC_TOKEN}?{httpx.QueryParams(query)}"
            doc = await self._call("GET", url, None, idempotent=True)
        errcode = _errcode(doc)
        if errcode != 0:
            raise _token_refusal(errcode, doc)
        token, expires_in = doc.get("access_token"), doc.get("expires_in")
        if not isinstance(token, str) or not token or not isinstance(expires_in, int | float):
            raise RetryableError("token call: response without access_token/expires_in")
        return Secret(token), float(expires_in)

    def _credentials(self, appid: str) -> AppCredentials:
        creds = self._settings.apps.get(appid)
        if creds is None:
            raise PermanentError(f"no credentials configured for appid {appid!r}")
        return creds

    async def _call(
        self, method: str, url: str, content: bytes | None, *, idempotent: bool
    ) -> dict[str, Any]:
        """One HTTP request -> the JSON object. The one boundary for foreign errors."""
        try:
            if self._lane is not None:
                status, raw = await self._lane.exchange(method, url, content)
            else:
                status, raw = await self._via_httpx(method, url, content)
        except httpx.HTTPError as exc:
            raise _transport_error(exc, idempotent) from exc
        if log.isEnabledFor(logging.DEBUG):
            log.debug("HTTP %s %s -> %d", method, redact(url), status)
        return _json_object(status, raw, idempotent)

    async def _via_httpx(self, method: str, url: str, content: bytes | None) -> tuple[int, bytes]:
        # A prebuilt Request skips build_request's per-call header/cookie merging; the URL is
        # parsed once (httpx parses character by character: a 500-char token costs more than
        # the whole send).
        parsed = self._httpx_urls.get(url)
        if parsed is None:
            parsed = httpx.URL(url)
            remember(self._httpx_urls, url, parsed, _URLS_MAX)
        request = httpx.Request(
            method, parsed, content=content, headers=self._headers, extensions=self._extensions
        )
        resp = await self._http.send(request)
        return resp.status_code, resp.content


# --- helpers (pure) ------------------------------------------------------------------------------


def _stable_token_body(creds: AppCredentials) -> dict[str, Any]:
    return {
        "grant_type": "client_credential",
        "appid": creds.appid,
        "secret": creds.secret.reveal(),
        "force_refresh": False,  # true would fence out every other worker's token
    }


def _transport_error(exc: httpx.HTTPError, idempotent: bool) -> WeChatError:
    """httpx error -> ours. Connect-phase errors prove nothing was sent; the rest do not."""
    detail = redact(f"{type(exc).__name__}: {exc}")[:300]
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return RetryableError(f"not sent ({detail})")
    if isinstance(exc, httpx.UnsupportedProtocol):
        return PermanentError(f"bad api_base ({detail})")
    if idempotent:
        return RetryableError(f"call failed, safe to repeat ({detail})")
    return InDoubtError(f"request may have reached WeChat ({detail})")


def _json_object(status: int, content: bytes, idempotent: bool) -> dict[str, Any]:
    if status == 200:
        try:
            doc = orjson.loads(content)
        except orjson.JSONDecodeError:
            doc = None
        if isinstance(doc, dict):
            if isinstance(doc.get("msgid"), float):  # past 64 bits orjson gives a float
                doc = json.loads(content)  # the stdlib parser keeps ints exact
            return doc  # type: ignore[no-any-return]
        what = "response is not a JSON object"
    elif status == 429:
        raise RetryableError("HTTP 429 (rate limited)")
    elif 400 <= status < 500:
        raise PermanentError(f"HTTP {status}")
    else:
        what = f"HTTP {status}"
    if idempotent:
        raise RetryableError(what)
    raise InDoubtError(what)


def _errcode(doc: Mapping[str, Any]) -> int:
    code = doc.get("errcode", 0)
    if isinstance(code, int):
        return code
    try:
        return int(code)
    except (TypeError, ValueError):
        return -999_999  # unknown -> permanent + alert via describe()


def _msgid(doc: Mapping[str, Any]) -> int:
    """WeChat's msgid as an exact int (an int from the parser, or a digit string)."""
    msgid = doc.get("msgid")
    if isinstance(msgid, int) and not isinstance(msgid, bool):
        return msgid
    if isinstance(msgid, str) and msgid.isdigit():
        return int(msgid)
    raise InDoubtError("errcode 0 without a usable msgid", 0)


def _refusal(errcode: int, doc: Mapping[str, Any], call: str) -> WeChatError:
    info = describe(errcode)
    text = f"{call}: {info.meaning}"
    errmsg = doc.get("errmsg")
    if isinstance(errmsg, str) and errmsg:
        text += f" [{redact(errmsg)[:200]}]"
    if info.disposition is Disposition.QUOTA:
        return QuotaExceeded(text, errcode)
    if info.disposition in (Disposition.RETRYABLE, Disposition.TOKEN):
        return RetryableError(text, errcode)  # TOKEN here: still rejected after one refresh
    return PermanentError(text, errcode)


def _token_refusal(errcode: int, doc: Mapping[str, Any]) -> WeChatError:
    if errcode == 40001:  # on the token call: the appsecret is wrong
        return PermanentError("token call: appsecret rejected", errcode)
    return _refusal(errcode, doc, "token call")


def _template(item: Mapping[str, Any]) -> Template:
    content = str(item.get("content", ""))
    template_id = str(item.get("priTmplId", ""))
    try:
        keywords = tuple(parse_content(content))
    except ValueError as exc:
        raise PermanentError(f"gettemplate: template {template_id}: {exc}") from exc
    enums: dict[str, tuple[str, ...]] = {}
    for entry in item.get("keywordEnumValueList") or []:
        if isinstance(entry, dict):
            code = str(entry.get("keywordCode", "")).removesuffix(".DATA")
            enums[code] = tuple(str(v) for v in entry.get("enumValueList") or [])
    return Template(
        template_id=template_id,
        title=str(item.get("title", "")),
        content=content,
        example=str(item.get("example", "")),
        type=int(item.get("type", 2)),
        keywords=keywords,
        enum_values=enums,
    )


class _NoCookies(http.cookiejar.CookieJar):
    """WeChat's API sets no cookies; httpx parses every response through the stdlib cookie
    machinery, which costs more CPU than the rest of httpx's per-request work."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        return None

    def add_cookie_header(self, request: Any) -> None:
        return None


class _RedactQuery(logging.Filter):
    """Masks access_token= and secret= values in a record (httpx logs every request URL)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.msg = redact(record.getMessage())
            record.args = None
        elif isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def _install_log_redaction() -> None:
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactQuery) for f in logger.filters):
        logger.addFilter(_RedactQuery())

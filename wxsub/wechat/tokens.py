"""Access tokens per appid: cached, refreshed ahead of expiry, one refresh at a time.

The manager knows nothing about HTTP: it is given ``fetch(appid) -> (token, expires_in)``
(the client's token call, whose errors are already ours). Rules, after WxJava's good practice
(wechat-api.md):

* single flight: at most one fetch per appid in flight; every caller that needs a token while it
  runs awaits that same fetch (100 concurrent sends -> one token call);
* ahead of expiry: once a token is within ``refresh_margin_s`` of expiry it is still served, and
  one background fetch replaces it; callers block only when there is no usable token;
* ``invalidate(appid, token)`` drops the cached token only if it is still the one that failed, so
  a burst of 40001s for an old token cannot throw away the fresh one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from wxsub.errors import WeChatError
from wxsub.settings import Secret

__all__ = ["AccessToken", "FetchToken", "TokenManager"]

log = logging.getLogger(__name__)

FetchToken = Callable[[str], Awaitable[tuple[Secret, float]]]

# a background refresh that failed is not tried again for this long (a blocking one always is)
_BACKGROUND_RETRY_S = 5.0


@dataclass(frozen=True, slots=True)
class AccessToken:
    """One token and its deadlines on the manager's (monotonic) clock; repr masks the value."""

    value: Secret
    refresh_at: float  # serve it, but start one background refresh from here on
    expires_at: float  # not used after this (a small guard before WeChat's expiry)

    def reveal(self) -> str:
        return self.value.reveal()


def _deadlines(t0: float, expires_in: float, margin: float) -> tuple[float, float]:
    """(refresh_at, expires_at) for a token fetched at ``t0``.

    ``t0`` is taken before the call, so deadlines err early. The margin is capped at half the
    lifetime so a short-lived token (a sandbox, a token fetched near its rotation) is not
    refreshed on every use; the hard deadline keeps a guard of min(10 s, lifetime/10).
    """
    refresh_at = t0 + max(expires_in - margin, expires_in / 2)
    expires_at = t0 + expires_in - min(10.0, expires_in / 10)
    return refresh_at, max(expires_at, refresh_at)


class TokenManager:
    """Caches one token per appid; see the module docstring for the rules."""

    def __init__(
        self,
        fetch: FetchToken,
        *,
        refresh_margin_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._margin = refresh_margin_s
        self._clock = clock
        self._tokens: dict[str, AccessToken] = {}
        self._inflight: dict[str, asyncio.Task[AccessToken]] = {}
        self._quiet_until: dict[str, float] = {}
        self.fetches = 0  # token calls made (successful or not), for metrics and tests
        self.failures = 0

    async def get(self, appid: str) -> AccessToken:
        """A usable token for ``appid``, fetching one (single flight) if there is none."""
        token = self._tokens.get(appid)
        now = self._clock()
        if token is not None and now < token.expires_at:
            if now >= token.refresh_at and now >= self._quiet_until.get(appid, 0.0):
                self._start(appid)
            return token
        return await asyncio.shield(self._start(appid))

    def invalidate(self, appid: str, token: AccessToken) -> bool:
        """Forget ``token`` if it is still the cached one; True if it was dropped."""
        current = self._tokens.get(appid)
        if current is not None and current.value == token.value:
            del self._tokens[appid]
            return True
        return False

    def cached(self, appid: str) -> AccessToken | None:
        return self._tokens.get(appid)

    async def aclose(self) -> None:
        """Cancel refreshes still running (at shutdown)."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _start(self, appid: str) -> asyncio.Task[AccessToken]:
        task = self._inflight.get(appid)
        if task is None:
            task = asyncio.create_task(self._refresh(appid), name=f"token-refresh-{appid}")
            self._inflight[appid] = task
            task.add_done_callback(self._done)
        return task

    async def _refresh(self, appid: str) -> AccessToken:
        t0 = self._clock()
        self.fetches += 1
        try:
            value, expires_in = await self._fetch(appid)
        except WeChatError:
            self.failures += 1
            self._quiet_until[appid] = self._clock() + _BACKGROUND_RETRY_S
            raise
        refresh_at, expires_at = _deadlines(t0, float(expires_in), self._margin)
        token = AccessToken(value, refresh_at, expires_at)
        self._tokens[appid] = token
        self._quiet_until.pop(appid, None)
        log.info("access token refreshed", extra={"appid": appid, "expires_in": expires_in})
        return token

    def _done(self, task: asyncio.Task[AccessToken]) -> None:
        for appid, running in list(self._inflight.items()):
            if running is task:
                del self._inflight[appid]
        if task.cancelled():
            return
        exc = task.exception()  # retrieved here, so a background failure is never "unretrieved"
        if exc is not None:
            log.warning("access token refresh failed: %s", exc)

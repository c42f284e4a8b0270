"""Access tokens as WeChat issues them: classic ``/cgi-bin/token`` and ``/cgi-bin/stable_token``.

Classic: every fetch mints a new token and cuts the previous one's life to ``overlap_s`` from
now (so independent refreshers knock each other out: the 40001 storm). Stable: the same token
comes back while it has more than ``stable_margin_s`` left; then a new one is minted and the old
one lives out its natural expiry (the overlap). ``force_refresh`` mints a new one and kills the
old one at once, at most ``force_refresh_per_day`` times, ``force_refresh_min_interval_s``
apart. The two kinds are independent. All durations are configurable so tests run in seconds.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from wxsub_sandbox.clock import Clock

if TYPE_CHECKING:
    from wxsub_sandbox.world import World

__all__ = ["TokenConfig", "TokenService", "WeChatReply", "error"]

WeChatReply = dict[str, Any]

ERRMSG = {
    -1: "system error",
    40001: "invalid credential, access_token is invalid or not latest",
    40002: "invalid grant_type",
    40003: "invalid openid",
    40013: "invalid appid",
    40014: "invalid access_token",
    40037: "invalid template_id",
    40164: "invalid ip, not in whitelist",
    41001: "access_token missing",
    41002: "appid missing",
    41004: "appsecret missing",
    41030: "invalid page",
    42001: "access_token expired",
    43101: "user refuse to accept the msg",
    43107: "subscribe capability banned",
    43108: "concurrent calls to the same openid, send one at a time",
    45009: "reach max api daily quota limit",
    45011: "api minute-quota reach limit mustslower retry next minute",
    45168: "content hit sensitive words",
    47001: "data format error",
    47003: "argument invalid!",
    48001: "api unauthorized",
    20002: "invalid args",
    200012: "private template count reached the limit",
    200014: "invalid tid",
    200020: "invalid kidList",
    200021: "invalid sceneDesc",
}

_DAY_OFFSET = 8 * 3600  # WeChat's days start at midnight Beijing time
_TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_-]{64,512}$")


def error(errcode: int, detail: str = "") -> WeChatReply:
    """A WeChat error body; errmsg ends with a request id like WeChat's (``rid: ...``)."""
    message = f"{ERRMSG.get(errcode, 'error')}{' ' + detail if detail else ''}"
    return {"errcode": errcode, "errmsg": f"{message} rid: {secrets.token_hex(12)}"}


@dataclass(frozen=True)
class TokenConfig:
    """Token lifetimes and limits (WeChat's values by default)."""

    expires_in: float = 7200.0
    overlap_s: float = 300.0
    stable_margin_s: float = 300.0
    force_refresh_per_day: int = 20
    force_refresh_min_interval_s: float = 30.0
    classic_per_day: int = 2000
    stable_per_day: int = 500_000
    stable_per_minute: int = 10_000

    def __post_init__(self) -> None:
        if self.stable_margin_s >= self.expires_in:
            raise ValueError("stable_margin_s must be below expires_in")


@dataclass
class _Token:
    appid: str
    kind: str
    expires_at: float
    revoked_at: float = float("inf")


class TokenService:
    """Issues and resolves tokens for the world's apps."""

    def __init__(self, world: World, clock: Clock) -> None:
        self._world = world
        self._clock = clock
        self._tokens: dict[str, _Token] = {}
        self._classic_latest: dict[str, str] = {}
        self._stable: dict[str, str] = {}
        self._last_force: dict[str, float] = {}
        self._usage: Counter[tuple[str, str, int]] = Counter()  # (appid, what, window) -> n

    @property
    def config(self) -> TokenConfig:
        return self._world.token_config

    # --- issuing ---------------------------------------------------------------------------

    def classic(self, params: Mapping[str, Any], ip: str | None) -> WeChatReply:
        """``GET /cgi-bin/token``: a new token; the previous one dies after the overlap."""
        refused = self._credentials(params, ip)
        if refused:
            return refused
        appid, now = params["appid"], self._clock()
        if not self._take(appid, "classic", self._day(now), self.config.classic_per_day):
            return error(45009)
        previous = self._tokens.get(self._classic_latest.get(appid, ""))
        if previous is not None:
            previous.revoked_at = min(previous.revoked_at, now + self.config.overlap_s)
        token = self._mint(appid, "classic", now + self.config.expires_in)
        self._classic_latest[appid] = token
        return {"access_token": token, "expires_in": int(self.config.expires_in)}

    def stable(self, body: Mapping[str, Any], ip: str | None) -> WeChatReply:
        """``POST /cgi-bin/stable_token``: the same token while valid, rotated near expiry."""
        refused = self._credentials(body, ip)
        if refused:
            return refused
        appid, now = body["appid"], self._clock()
        minute = int(now // 60)
        if not self._take(appid, "stable_min", minute, self.config.stable_per_minute):
            return error(45011)
        if not self._take(appid, "stable", self._day(now), self.config.stable_per_day):
            return error(45009)
        if body.get("force_refresh") is True:
            refused = self._force(appid, now)
            if refused:
                return refused
        current = self._tokens.get(self._stable.get(appid, ""))
        if current is None or now >= min(current.expires_at, current.revoked_at):
            current = None
        elif current.expires_at - now < self.config.stable_margin_s:
            current = None  # rotate; the old one lives out its expiry (the overlap)
        if current is None:
            self._stable[appid] = self._mint(appid, "stable", now + self.config.expires_in)
        token = self._stable[appid]
        return {"access_token": token, "expires_in": int(self._tokens[token].expires_at - now)}

    def _force(self, appid: str, now: float) -> WeChatReply | None:
        last = self._last_force.get(appid)
        if last is not None and now - last < self.config.force_refresh_min_interval_s:
            return error(45011, "force_refresh too frequent")
        if not self._take(appid, "force", self._day(now), self.config.force_refresh_per_day):
            return error(45009, "force_refresh daily limit")
        self._last_force[appid] = now
        old = self._tokens.get(self._stable.pop(appid, ""))
        if old is not None:
            old.revoked_at = min(old.revoked_at, now)
        return None

    def _credentials(self, params: Mapping[str, Any], ip: str | None) -> WeChatReply | None:
        appid, secret = params.get("appid"), params.get("secret")
        if not appid:
            return error(41002)
        app = self._world.apps.get(str(appid))
        if app is None:
            return error(40013)
        if params.get("grant_type") != "client_credential":
            return error(40002)
        if not secret:
            return error(41004)
        if not hmac.compare_digest(str(secret).encode(), app.secret.reveal().encode()):
            return error(40001)
        if app.ip_whitelist and ip not in app.ip_whitelist:
            return error(40164)
        return None

    def _take(self, appid: str, what: str, window: int, limit: int) -> bool:
        key = (appid, what, window)
        if self._usage[key] >= limit:
            return False
        self._usage[key] += 1
        return True

    @staticmethod
    def _day(now: float) -> int:
        return int((now + _DAY_OFFSET) // 86400)

    def _mint(self, appid: str, kind: str, expires_at: float) -> str:
        token = secrets.token_urlsafe(102)  # 136 chars of [A-Za-z0-9_-]
        self._tokens[token] = _Token(appid, kind, expires_at)
        return token

    # --- checking --------------------------------------------------------------------------

    def resolve(self, token: str | None) -> tuple[str | None, WeChatReply | None]:
        """(appid, None) for a live token, else (None, the WeChat error)."""
        if not token:
            return None, error(41001)
        record = self._tokens.get(token)
        if record is None:
            return None, error(40001 if _TOKEN_SHAPE.match(token) else 40014)
        now = self._clock()
        if now >= record.revoked_at and record.revoked_at <= record.expires_at:
            return None, error(40001)
        if now >= record.expires_at:
            return None, error(42001)
        return record.appid, None

    def expire_all(self, appid: str | None = None) -> int:
        """Make every live token (of one app, or all) expire now; returns how many."""
        now, count = self._clock(), 0
        for record in self._tokens.values():
            if (appid is None or record.appid == appid) and now < record.expires_at:
                record.expires_at = now
                count += 1
        return count

    def forget(self) -> None:
        """Drop every token and usage count (a full reset)."""
        self._tokens.clear()
        self._classic_latest.clear()
        self._stable.clear()
        self._last_force.clear()
        self._usage.clear()

"""The shop's side of open attribution in the demo: users open some of the messages they got.

Every third successful send the sandbox recorded (at least ``settle_s`` ago, so its result is
in the stats stage first) is opened once: the shop publishes an ``opened`` event with the page's
``wxref``. One of them is opened twice (a duplicate) and one open names a ref nobody was sent
(``unknown_ref``): docs/publishers.md, "Opens".
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from wxsub.agents.rules.attribution import REF_PARAM
from wxsub.schemas import MessageOpened, encode
from wxsub_dev.demo.shop import Published
from wxsub_sandbox.recorder import CallRecord

__all__ = ["Opener"]

UNKNOWN_REF = "AAAAAAAAAAAA"


@dataclass
class Opener:
    settle_s: float = 1.0
    seen: int = 0  # the last recorder seq looked at
    opened: list[tuple[str, str, str]] = field(default_factory=list)  # (appid, openid, ref)

    def opens(self, calls: Iterable[CallRecord], now: float) -> list[Published]:
        """``opened`` events for the settled sends after ``seen`` (``calls``: the sandbox's
        successful sends, in order)."""
        out: list[Published] = []
        for call in calls:
            if call.seq <= self.seen:
                continue
            if call.time > now - self.settle_s:
                break
            self.seen = call.seq
            ref = _ref(call.page)
            if ref is None or call.seq % 3 or not (call.appid and call.openid):
                continue
            if not self.opened:  # the first open: also one for a ref nobody was sent
                out.append(_opened(call.appid, call.openid, UNKNOWN_REF, now, "x"))
            self.opened.append((call.appid, call.openid, ref))
            out.append(_opened(call.appid, call.openid, ref, now, "1"))
            if len(self.opened) == 2:  # the second: opened twice
                out.append(_opened(call.appid, call.openid, ref, now, "2"))
        return out


def _ref(page: str | None) -> str | None:
    if not page:
        return None
    refs = parse_qs(urlsplit(page).query).get(REF_PARAM)
    return refs[0] if refs else None


def _opened(appid: str, openid: str, ref: str, now: float, n: str) -> Published:
    at = dt.datetime.fromtimestamp(now, dt.UTC)
    rec = MessageOpened(f"open-{openid}-{ref}-{n}", at, appid, openid, ref, 1014)
    return Published("opened", rec.key, encode(rec), rec.event_id)

"""A user's trace and an order's trace, composed from the parts (local.py) through the router.

A user's trace is their state (credits, mutes, caps, held, deferred) and their last decisions,
oldest first, each with the ledger state of its notification (when delivery knows it). An
order's trace is the order (status, owner) and its pending logistics, and the owner's trace
with only the decisions about this order. A part that no worker can give now (the deliver stage
runs nowhere, a rebalance outlasted the deadline) is reported in ``unavailable``, the rest is
still answered.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from wxsub.agents.rules import history as hist
from wxsub.support.routing import Router, Unavailable

__all__ = ["Traces"]

# decisions whose notification the deliver stage may have in its ledger
_LEDGERED = frozenset({hist.INTENT, hist.RELEASED})


class Traces:
    def __init__(self, router: Router) -> None:
        self._router = router

    async def user(self, appid: str, openid: str) -> dict[str, Any]:
        params = {"appid": appid, "openid": openid}
        user = await self._router.ask("user", params)
        out: dict[str, Any] = {"appid": appid, "openid": openid, **user, "unavailable": {}}
        nids = sorted({d["notification_id"] for d in user["decisions"]
                       if d["reason"] in _LEDGERED and d["notification_id"]})  # fmt: skip
        entries: Mapping[str, Any] = {}
        if nids:
            try:
                ledger = await self._router.ask("ledger", {**params, "nids": ",".join(nids)})
                entries = ledger["entries"]
            except Unavailable as exc:
                out["unavailable"]["ledger"] = str(exc)
        for d in out["decisions"]:
            d["delivery"] = entries.get(d["notification_id"]) if d["notification_id"] else None
        return out

    async def order(self, appid: str, order_id: str) -> dict[str, Any]:
        found = await self._router.ask("order", {"appid": appid, "order_id": order_id})
        out: dict[str, Any] = {"appid": appid, "order_id": order_id, **found, "user": None}
        order = found["order"]
        if order is not None:
            user = await self.user(appid, order["openid"])
            user["decisions"] = [d for d in user["decisions"] if d["subject"] == order_id]
            out["user"] = user
        return out

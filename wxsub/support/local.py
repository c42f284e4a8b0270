"""What this worker can answer from its own committed stores, per part of a trace.

A *part* is one store of one stage: ``user`` (decide's ``users``: credits, mutes, caps, held,
deferred, the last decisions), ``ledger`` (deliver's ``ledger``: the state of each notification
id asked for) and ``order`` (orders' ``orders``: the order and its pending logistics). Each is
read through ``StageRunner.committed_store``, so only committed state is seen, and only while
this worker owns the partition: :meth:`Local.read` returns None otherwise (the router then asks
the owner). Reads are synchronous RocksDB gets between the stage's awaits: they never interleave
with a commit's WriteBatch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from wxsub.agents.rules import decide as decide_rules
from wxsub.agents.rules import delivery as delivery_rules
from wxsub.agents.rules import history as hist
from wxsub.agents.rules import orders as order_rules
from wxsub.agents.rules.subscriptions import UserState, decode_user
from wxsub.merchants import Merchants
from wxsub.schemas.internal import encode_internal, user_key
from wxsub.streams.outbox import partition_for
from wxsub.streams.runtime import StageRunner
from wxsub.streams.store import CommittedView

__all__ = ["PARTS", "Local", "part_key", "plain"]

#: part -> (stage, store, the stage's first input: its partition p is the part's partition p)
PARTS: dict[str, tuple[str, str, str]] = {
    "user": ("decide", "users", "candidates"),
    "ledger": ("deliver", "ledger", "intents"),
    "order": ("orders", "orders", "order-status"),
}
MAX_NIDS = 100  # notification ids one ledger read looks up (a history holds at most 20)


def part_key(part: str, params: Mapping[str, str]) -> str:
    """The Kafka key whose partition holds ``part`` for these query parameters."""
    if part == "order":
        return f"{params['appid']}:{params['order_id']}"
    return user_key(params["appid"], params["openid"])


def plain(obj: Any) -> Any:
    """A record (dataclasses nested anywhere) as JSON-ready dicts and lists."""
    return orjson.loads(encode_internal(obj))


class Local:
    def __init__(
        self,
        runners: Mapping[str, StageRunner],
        merchants: Callable[[], Merchants],
        partitions: int,
        clock: Callable[[], int],
    ) -> None:
        """``merchants()`` gives the config in force now (live config swaps it at run time)."""
        self._runners = runners
        self._merchants = merchants
        self._partitions = partitions
        self._clock = clock

    def partition(self, part: str, params: Mapping[str, str]) -> int:
        return partition_for(part_key(part, params).encode(), self._partitions)

    def runs(self, stage: str) -> bool:
        return stage in self._runners

    def read(self, part: str, params: Mapping[str, str]) -> dict[str, Any] | None:
        """The part's answer from this worker's committed store, or None when it does not own
        the key's partition (now)."""
        stage, store, _ = PARTS[part]
        runner = self._runners.get(stage)
        p = self.partition(part, params)
        view = runner.committed_store(p, store) if runner is not None else None
        if view is None:
            return None
        key = part_key(part, params).encode()
        if part == "user":
            doc = self._user(view, key, params["appid"], params["openid"])
        elif part == "ledger":
            doc = self._ledger(view, params.get("nids", ""))
        else:
            doc = self._order(view, key)
        return {"partition": p, **doc}

    def _user(self, view: CommittedView, key: bytes, appid: str, openid: str) -> dict[str, Any]:
        raw = view.get(key)
        state = decode_user(raw) if raw else UserState()
        cfg = self._merchants().app(appid)
        now = self._clock()
        caps: dict[str, Any] = {}
        for label, marketing in (("transactional", False), ("marketing", True)):
            cap = cfg.cap(marketing) if cfg is not None else None
            if cap is None:
                continue
            used = decide_rules.sends_in_window(state.sends, marketing, cap.window_s, now)
            caps[label] = {"used": used, "max": cap.max, "window_s": cap.window_s}
        return {
            "known": raw is not None,
            "credits": dict(sorted(state.credits.items())),
            "muted_templates": list(state.muted_templates),
            "muted_kinds": list(state.muted_kinds),
            "caps": caps,
            "held": [
                {**_intent_summary(h.intent), "subject": h.subject, "due_at": h.until}
                for h in state.held
            ],
            "deferred": [
                {**_intent_summary(d.intent), "due_at": d.release_at} for d in state.deferred
            ],
            "decisions": [d._asdict() for d in hist.decisions(state.history, appid, openid)],
        }

    @staticmethod
    def _ledger(view: CommittedView, nids: str) -> dict[str, Any]:
        entries: dict[str, Any] = {}
        for nid in [n for n in nids.split(",") if n][:MAX_NIDS]:
            raw = view.get(b"n|" + nid.encode())
            if raw is None:
                continue
            e = delivery_rules.decode_entry(raw)
            entries[nid] = {
                "state": e.state, "attempts": e.attempts, "failures": e.failures,
                "attempt_at": e.attempt_at, "msgid": e.msgid, "errcode": e.errcode,
                "due_at": e.due, "at": e.at, "reconciled": e.reconciled,
            }  # fmt: skip
        return {"entries": entries}

    @staticmethod
    def _order(view: CommittedView, key: bytes) -> dict[str, Any]:
        raw = view.get(key)
        if raw is None:
            return {"order": None, "pending": []}
        doc = orjson.loads(raw)
        order = order_rules.OrderState.from_dict(doc["order"]) if doc.get("order") else None
        pending = order_rules.pending_from_list(doc.get("pending", ()))
        return {"order": plain(order) if order else None, "pending": plain(list(pending))}


def _intent_summary(intent: Any) -> dict[str, Any]:
    return {
        "notification_id": intent.notification_id,
        "template_id": intent.template_id,
        "kind": intent.kind,
        "event_ids": list(intent.event_ids),
        "occurred_at": intent.occurred_at,
    }

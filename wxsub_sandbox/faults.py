"""Fault injection: latency, errcodes, connection resets and dropped responses.

A :class:`FaultSpec` is set as JSON through ``POST /admin/faults`` (or in-process)::

    {
      "seed": 7,                              # the draws below are reproducible
      "endpoints": ["send"],                  # which WeChat endpoints it applies to
      "latency": {"dist": "fixed", "s": 0.05}          # or "uniform" lo/hi,
                                                       # or "lognormal" median_s/sigma[/max_s]
      "errors": {"-1": 0.01, "45011": 0.002}, # errcode -> probability (nothing is processed)
      "reset_rate": 0.01,                     # connection closed before processing
      "drop_rate": 0.01,                      # processed (sent!), then closed without a reply
      "quota_exhausted_for_s": 30,            # 45009 on every call for the next 30 s
      "next": [{"errcode": -1}, {"action": "drop"}]   # scripted: the next calls, in order
    }

One uniform draw per call picks at most one of reset / errors / drop, so the rates must sum to
<= 1. Scripted ``next`` items win over the rates; latency applies in both cases.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from wxsub_sandbox.clock import Clock

__all__ = ["ENDPOINTS", "FaultSpec", "Faults", "Latency", "Plan"]

ENDPOINTS = frozenset(
    {"token", "stable_token", "send", "gettemplate", "getpubtemplatekeywords", "addtemplate",
     "deltemplate", "set_user_notify", "set_user_notifyext", "get_user_notify"}
)  # fmt: skip

Action = Literal["reset", "drop", "error"]


@dataclass(frozen=True)
class Latency:
    """Added delay before a call is handled."""

    dist: Literal["none", "fixed", "uniform", "lognormal"] = "none"
    s: float = 0.0
    lo: float = 0.0
    hi: float = 0.0
    median_s: float = 0.0
    sigma: float = 0.0
    max_s: float = 30.0

    def sample(self, rng: random.Random) -> float:
        if self.dist == "fixed":
            return self.s
        if self.dist == "uniform":
            return rng.uniform(self.lo, self.hi)
        if self.dist == "lognormal":
            return min(self.max_s, rng.lognormvariate(math.log(self.median_s), self.sigma))
        return 0.0

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Latency:
        dist = doc.get("dist", "none")
        if dist not in ("none", "fixed", "uniform", "lognormal"):
            raise ValueError(f"latency.dist: unknown distribution {dist!r}")
        numbers = {k: float(v) for k, v in doc.items() if k != "dist"}
        latency = cls(dist, **numbers)
        if latency.dist == "lognormal" and latency.median_s <= 0:
            raise ValueError("latency.median_s must be > 0")
        if min(latency.s, latency.lo, latency.sigma) < 0 or latency.hi < latency.lo:
            raise ValueError("latency: negative values or hi < lo")
        return latency


@dataclass(frozen=True)
class Plan:
    """What happens to one call."""

    latency_s: float = 0.0
    action: Action | None = None
    errcode: int | None = None  # with action "error"
    fault: str | None = None  # a short name for the record ("error:-1", "reset", "drop")


@dataclass(frozen=True)
class FaultSpec:
    seed: int = 0
    endpoints: frozenset[str] = frozenset({"send"})
    latency: Latency = field(default_factory=Latency)
    errors: Mapping[int, float] = field(default_factory=dict)
    reset_rate: float = 0.0
    drop_rate: float = 0.0
    quota_exhausted_for_s: float = 0.0
    next: tuple[Plan, ...] = ()

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> FaultSpec:
        """Parse the admin JSON. ValueError names what is wrong."""
        unknown = set(doc) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise ValueError(f"unknown fault setting {sorted(unknown)[0]!r}")
        endpoints = frozenset(doc.get("endpoints", ["send"]))
        if not endpoints <= ENDPOINTS:
            raise ValueError(f"endpoints must be among {sorted(ENDPOINTS)}")
        spec = cls(
            seed=int(doc.get("seed", 0)),
            endpoints=endpoints,
            latency=Latency.from_json(doc.get("latency", {})),
            errors={int(code): float(rate) for code, rate in doc.get("errors", {}).items()},
            reset_rate=float(doc.get("reset_rate", 0.0)),
            drop_rate=float(doc.get("drop_rate", 0.0)),
            quota_exhausted_for_s=float(doc.get("quota_exhausted_for_s", 0.0)),
            next=tuple(_scripted(item) for item in doc.get("next", [])),
        )
        rates = [spec.reset_rate, spec.drop_rate, *spec.errors.values()]
        if min(rates) < 0 or sum(rates) > 1:
            raise ValueError("rates must be >= 0 and sum to <= 1")
        return spec

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "endpoints": sorted(self.endpoints),
            "latency": {k: v for k, v in vars(self.latency).items()},
            "errors": {str(code): rate for code, rate in self.errors.items()},
            "reset_rate": self.reset_rate,
            "drop_rate": self.drop_rate,
            "quota_exhausted_for_s": self.quota_exhausted_for_s,
            "next": [_scripted_json(plan) for plan in self.next],
        }


def _scripted(item: Mapping[str, Any]) -> Plan:
    latency = float(item.get("latency_s", 0.0))
    if "errcode" in item:
        code = int(item["errcode"])
        return Plan(latency, "error", code, f"error:{code}")
    action = item.get("action")
    if action in ("reset", "drop"):
        return Plan(latency, action, None, action)
    if action is None and "latency_s" in item:
        return Plan(latency, None, None, "latency")
    raise ValueError(f"next: need errcode, action reset|drop, or latency_s; got {dict(item)}")


def _scripted_json(plan: Plan) -> dict[str, Any]:
    out: dict[str, Any] = {"latency_s": plan.latency_s}
    if plan.action == "error":
        out["errcode"] = plan.errcode
    elif plan.action:
        out["action"] = plan.action
    return out


class Faults:
    """The active spec and its seeded random source; ``plan()`` once per call."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.clear()

    def clear(self) -> None:
        self.set(FaultSpec())

    def set(self, spec: FaultSpec) -> None:
        self.spec = spec
        self._rng = random.Random(spec.seed)  # noqa: S311 (reproducible, not secret)
        self._next: deque[Plan] = deque(spec.next)
        self._quota_until = self._clock() + spec.quota_exhausted_for_s

    def describe(self) -> dict[str, Any]:
        """The spec as JSON, with ``next`` showing the scripted items still to come."""
        doc = self.spec.to_json()
        doc["next"] = [_scripted_json(plan) for plan in self._next]
        return doc

    def plan(self, endpoint: str) -> Plan:
        """The fate of the next call to ``endpoint``."""
        spec = self.spec
        if endpoint not in spec.endpoints:
            return Plan()
        if self._next:
            return self._next.popleft()
        latency = spec.latency.sample(self._rng)
        if self._clock() < self._quota_until:
            return Plan(latency, "error", 45009, "quota_exhausted")
        draw = self._rng.random()
        if draw < spec.reset_rate:
            return Plan(latency, "reset", None, "reset")
        draw -= spec.reset_rate
        for code, rate in sorted(spec.errors.items()):
            if draw < rate:
                return Plan(latency, "error", code, f"error:{code}")
            draw -= rate
        if draw < spec.drop_rate:
            return Plan(latency, "drop", None, "drop")
        return Plan(latency)

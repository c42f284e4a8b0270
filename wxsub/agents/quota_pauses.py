"""Per-appid send pauses on WeChat's daily quota error (45009), held in memory per worker.

The first 45009 of an appid pauses its sends for ``DeliveryPolicy.quota_pause_ms``: the deliver
stage asks :meth:`QuotaPauses.until` before every call and defers the send to the pause end
instead (``rules.defer``). While paused, ``wxsub_quota_paused{appid}`` is 1 and an ``ALERT``
WARNING is logged once; the stage's timer calls :meth:`QuotaPauses.resume_due`, which sets the
gauge back to 0 (``docs/delivery.md``, "Retries, quota, credits").
"""

from __future__ import annotations

import logging

from wxsub.streams.metrics import WorkerMetrics

__all__ = ["QuotaPauses"]

log = logging.getLogger("wxsub.agents.deliver")  # the stage's logger, as before the split


class QuotaPauses:
    """appid -> wall ms when its pause ends; ``pause_ms`` long, started by :meth:`on_quota`."""

    def __init__(self, metrics: WorkerMetrics, pause_ms: int) -> None:
        self._gauge = metrics.quota_paused
        self._pause_ms = pause_ms
        self._until: dict[str, int] = {}

    def until(self, appid: str, now: int) -> int | None:
        """When the appid's pause ends, or None if it is not paused at ``now``."""
        until = self._until.get(appid)
        return until if until is not None and until > now else None

    def on_quota(self, appid: str, now: int) -> int:
        """A 45009 answer: pause the appid (unless it is already) and say until when."""
        until = self.until(appid, now)
        if until is None:
            until = self._until[appid] = now + self._pause_ms
            self._gauge.labels(appid).set(1)
            log.warning(
                "ALERT: daily send quota reached (45009); sends of this appid paused",
                extra={"appid": appid, "resume_at_ms": until},
            )
        return until

    def resume_due(self, now: int) -> None:
        """End every pause whose time has come."""
        for appid, until in list(self._until.items()):
            if until <= now:
                del self._until[appid]
                self._gauge.labels(appid).set(0)
                log.info("sends resumed after the quota pause", extra={"appid": appid})

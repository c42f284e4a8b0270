"""The pauses in force, as every worker sees them: the compacted ``pauses`` topic, followed whole.

``KindPauses.why(appid, kind)`` is what the deliver stage's send-time guard asks for every send
(``rules/guards.py``). The table is fed by a :class:`TableFollower` (``start`` reads the topic
whole before the stages start; ``run`` keeps up) and by :meth:`trip`, which the deliver stage
calls for a pause it writes itself (43107/45168), so that the next send of the same batch is
already held back. Bounded by the topic's keys (configured (appid, kind) pairs); ends with the
process, rebuilt from the topic on start.

Metric ``wxsub_kind_paused{appid,kind}``: 1 while paused; a series at 0 for every configured
kind of the live merchant config (refreshed when the pauses or the config change).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from wxsub.agents.base import StageEnv
from wxsub.agents.rules.pauses import PauseRecord, decode_pause, paused_table
from wxsub.streams.connection import security_kwargs
from wxsub.streams.follow import TableFollower

__all__ = ["KindPauses"]

log = logging.getLogger(__name__)


class KindPauses:
    def __init__(self, env: StageEnv, follow: bool = True) -> None:
        self.env = env
        self.table: dict[tuple[str, str], PauseRecord] = {}
        self._tripped: dict[tuple[str, str], PauseRecord] = {}  # written here, not yet read back
        self._series: set[tuple[str, str]] = set()
        self._merchants: object = None
        self.follower = (
            TableFollower(
                env.settings.kafka.bootstrap,
                env.topic("pauses"),
                self._on_table,
                security=security_kwargs(env.settings.kafka),
            )
            if follow
            else None
        )
        self.refresh()

    def why(self, appid: str, kind: str) -> str | None:
        rec = self.table.get((appid, kind))
        return rec.reason if rec is not None else None

    def trip(self, rec: PauseRecord) -> None:
        """A pause this worker wrote (in force here at once; the topic confirms it later)."""
        self._tripped[(rec.appid, rec.kind)] = rec
        if (rec.appid, rec.kind) not in self.table:
            self.table[(rec.appid, rec.kind)] = rec
            log.warning("ALERT kind paused", extra={"appid": rec.appid, "kind": rec.kind,
                        "reason": rec.reason, "source": rec.source})  # fmt: skip
        self.refresh(force=True)

    async def start(self) -> None:
        if self.follower is not None:
            await self.follower.start()
            await self.follower.catch_up()

    async def run(self) -> None:
        if self.follower is not None:
            await self.follower.run()

    async def stop(self) -> None:
        if self.follower is not None:
            await self.follower.stop()

    def _on_table(self, topic: Mapping[bytes, bytes]) -> None:
        records = []
        for key, raw in topic.items():
            try:
                records.append(decode_pause(raw))
            except (ValueError, KeyError, TypeError):
                log.error("bad pauses record ignored", extra={"key": key.decode(errors="replace")})
        read = {(r.appid, r.kind): r for r in records}
        # a trip of ours the topic does not show yet stays; once read back, the topic decides
        pending = {k: r for k, r in self._tripped.items() if read.get(k) is None or
                   read[k].at < r.at}  # fmt: skip
        self._tripped = pending
        table = paused_table(records)
        table.update({k: r for k, r in pending.items() if r.paused})
        for k in table.keys() - self.table.keys():
            r = table[k]
            log.warning("ALERT kind paused", extra={"appid": r.appid, "kind": r.kind,
                        "reason": r.reason, "source": r.source})  # fmt: skip
        for k in self.table.keys() - table.keys():
            log.info("kind pause lifted", extra={"appid": k[0], "kind": k[1]})
        self.table = table
        self.refresh(force=True)

    def refresh(self, force: bool = False) -> None:
        """The gauge: a series per configured kind and per pause (cheap when nothing changed)."""
        merchants = self.env.merchants
        if not force and merchants is self._merchants:
            return
        self._merchants = merchants
        gauge = self.env.metrics.kind_paused
        series = {(a, k) for a, cfg in merchants.apps.items() for k in cfg.kinds}
        series |= self.table.keys()
        for gone in self._series - series:
            gauge.remove(*gone)
        for s in series:
            gauge.labels(*s).set(1 if s in self.table else 0)
        self._series = series

"""The worker's live configuration: follow the merchants and templates topics, swap the config.

Built by the composition root. ``start()`` reads both compacted topics whole before the stages
start (a worker never decides with an older config than the one live when it started);
``run()`` follows them. Each change rebuilds the effective config (``wxsub.liveconfig.effective``:
mappings checked against the pulled template lists) and hands it to ``StageEnv.set_merchants``:
decisions made after that use it, without a restart or a rebalance.

Which config: the merchants topic's once it holds any record, else the ``worker.merchants`` file
(the bootstrap, version 0). A record that does not validate (written by a newer version, say)
is logged and that app keeps its previous config.

Metrics: ``wxsub_config_version`` (the highest version live), ``wxsub_kind_disabled{appid,kind}``
(1 while a kind's template does not fit; a series per configured kind, removed with the kind).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from wxsub.agents.base import StageEnv
from wxsub.errors import ConfigError
from wxsub.liveconfig import (
    AppRecord,
    AppTemplates,
    Problem,
    decode_app,
    decode_templates,
    effective,
    merchants_of,
)
from wxsub.merchants import MerchantConfig, Merchants
from wxsub.streams.connection import security_kwargs
from wxsub.streams.follow import TableFollower

__all__ = ["LiveConfig"]

log = logging.getLogger(__name__)


class LiveConfig:
    def __init__(self, env: StageEnv, bootstrap: Merchants) -> None:
        self.env = env
        self.file = bootstrap
        self.records: dict[str, AppRecord] = {}
        self.templates: dict[str, AppTemplates] = {}
        self.parsed: dict[str, MerchantConfig] = {}  # by appid, from the records
        self.problems: list[Problem] = []
        self._series: set[tuple[str, str]] = set()
        kafka = env.settings.kafka
        sec = security_kwargs(kafka)
        self.followers = (
            TableFollower(
                kafka.bootstrap, env.topic("merchants"), self._on_merchants, security=sec
            ),
            TableFollower(
                kafka.bootstrap, env.topic("templates"), self._on_templates, security=sec
            ),
        )
        self._rebuild()

    @property
    def version(self) -> int:
        return max((r.version for r in self.records.values()), default=0)

    def live_templates(self, appid: str) -> AppTemplates | None:
        return self.templates.get(appid)

    async def start(self) -> None:
        for follower in self.followers:
            await follower.start()
            await follower.catch_up()

    async def run(self) -> None:
        await asyncio.gather(*(f.run() for f in self.followers))

    async def stop(self) -> None:
        for follower in self.followers:
            await follower.stop()

    # --- changes ----------------------------------------------------------------------------

    def _on_merchants(self, table: Mapping[bytes, bytes]) -> None:
        records = {}
        for key, raw in table.items():
            try:
                rec = decode_app(raw)
            except (ValueError, KeyError, TypeError):
                log.error(
                    "bad merchants record ignored", extra={"key": key.decode(errors="replace")}
                )
                continue
            records[rec.appid] = rec
            if self.records.get(rec.appid) == rec:
                continue
            try:
                cfg = merchants_of([rec])
            except ConfigError as exc:
                extra = {"appid": rec.appid, "version": rec.version, "error": str(exc)}
                log.error("merchants record does not validate; the app keeps its config",
                          extra=extra)  # fmt: skip
                continue
            self.parsed.pop(rec.appid, None)
            self.parsed.update(cfg)
        self.records = records
        self._rebuild()
        log.info("merchant config version live", extra={"version": self.version,
                 "apps": sorted(self.parsed)})  # fmt: skip

    def _on_templates(self, table: Mapping[bytes, bytes]) -> None:
        templates = {}
        for key, raw in table.items():
            try:
                listed = decode_templates(raw)
            except (ValueError, KeyError, TypeError):
                log.error(
                    "bad templates record ignored", extra={"key": key.decode(errors="replace")}
                )
                continue
            templates[listed.appid] = listed
        self.templates = templates
        self._rebuild()

    def _rebuild(self) -> None:
        apps = dict(self.parsed) if self.records else dict(self.file.apps)
        merchants, problems = effective(apps, self.templates)
        self.env.set_merchants(merchants)
        if problems != self.problems:
            for p in problems:
                log.warning("kind disabled: its template does not fit",
                            extra={"appid": p.appid, "kind": p.kind, "template_id": p.template_id,
                                   "reason": p.reason, "key": p.key})  # fmt: skip
        self.problems = problems
        metrics = self.env.metrics
        metrics.config_version.set(self.version)
        series = {(appid, kind) for appid, cfg in apps.items() for kind in cfg.kinds}
        for gone in self._series - series:
            metrics.kind_disabled.remove(*gone)
        bad = {(p.appid, p.kind) for p in problems}
        for s in series:
            metrics.kind_disabled.labels(*s).set(1 if s in bad else 0)
        self._series = series

"""The scheduled template pull: one worker asks WeChat for every app's template list.

Run by the deliver stage's timer on the worker that owns deliver partition 0 (so one worker of
the fleet pulls, and a rebalance hands the job over with the partition), every
``worker.templates_pull_interval_s``. A list that differs from the live one is written to the
compacted ``templates`` topic inside partition 0's transaction; every worker follows that topic
and checks its mappings against it (``wxsub.liveconfig.effective``): a template deleted or
changed at WeChat disables its kind within one interval.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from wxsub.agents.base import StageEnv
from wxsub.errors import WeChatError
from wxsub.liveconfig import AppTemplates, TemplateInfo, encode_templates
from wxsub.streams.metering import tally
from wxsub.streams.stage import PartitionContext
from wxsub.wechat.client import Template, WeChatClient

__all__ = ["TemplatePuller", "template_info"]

log = logging.getLogger(__name__)


def template_info(t: Template) -> TemplateInfo:
    return TemplateInfo(t.template_id, t.title, t.content, t.type, dict(t.enum_values))


class TemplatePuller:
    def __init__(
        self,
        env: StageEnv,
        client: WeChatClient,
        live: Callable[[str], AppTemplates | None],
        interval_s: float,
    ) -> None:
        self.env = env
        self.client = client
        self.live = live  # the template list the workers follow now, by appid
        self.interval_ms = int(interval_s * 1000)
        self.next_at = 0  # wall clock; the first turn on partition 0 pulls at once

    async def maybe_pull(self, ctx: PartitionContext, now_ms: int) -> None:
        if not self.interval_ms or ctx.partition != 0 or now_ms < self.next_at:
            return
        self.next_at = now_ms + self.interval_ms
        topic = self.env.topic("templates")
        for appid in sorted(self.env.settings.wechat.apps):
            try:
                listed = await self.client.get_templates(appid)
            except WeChatError as exc:
                tally(ctx, self.env.metrics.template_pulls, "failed")
                log.warning("template pull failed", extra={"appid": appid, "error": str(exc)})
                continue
            tally(ctx, self.env.metrics.template_pulls, "ok")
            templates = {t.template_id: template_info(t) for t in listed}
            current = self.live(appid)
            if current is not None and dict(current.templates) == templates:
                continue
            record = AppTemplates(appid, now_ms, templates)
            await ctx.send(topic, appid.encode(), encode_templates(record))
            log.info("template list changed", extra={"appid": appid, "templates": len(templates)})

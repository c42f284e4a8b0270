"""What a pipeline run needs past decide: a WeChat sandbox world that takes every send the oracle
predicts, the workers' settings for it, the stats rows as readers sum them, and the wait for a
kind pause to be in force (or lifted) on every worker."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.pipeline.harness import Deployment
from wxsub.agents.rules.stats import RowKey, add_rows, decode_record
from wxsub.merchants import Merchants
from wxsub.schemas.internal import Intent

__all__ = ["kind_paused_everywhere", "read_stats", "sandbox_world", "wechat_settings"]

#: credits every user holds per template in the sandbox (more than any run sends)
CREDITS = 1000


def sandbox_world(merchants: Merchants, intents: Iterable[Intent]) -> dict[str, Any]:
    """A world with every configured app, each template of each kind and variant (its keywords
    as the config maps them), the pages the kinds open, and every user an intent is for, with
    :data:`CREDITS` of each template: the sandbox accepts every send a correct pipeline makes
    (the oracle does not model corrections from refused sends)."""
    users: dict[str, set[str]] = {}
    for i in intents:
        users.setdefault(i.appid, set()).add(i.openid)
    apps = []
    for appid, cfg in sorted(merchants.apps.items()):
        templates: dict[str, dict[str, Any]] = {}
        pages: set[str] = set()
        for kind in cfg.kinds.values():
            for kc in kind.all_templates():
                content = "\n".join(f"{name}:{{{{{name}.DATA}}}}" for name in kc.keywords)
                templates[kc.template_id] = {"id": kc.template_id, "title": kc.kind,
                                             "content": content}  # fmt: skip
                if kc.page:
                    pages.add(kc.page.split("?", 1)[0])
        apps.append({
            "appid": appid,
            "secret": _secret(appid),
            "pages": sorted(pages),
            "templates": list(templates.values()),
            "users": [{"openid": u, "credits": dict.fromkeys(templates, CREDITS)}
                      for u in sorted(users.get(appid, ()))],
        })  # fmt: skip
    return {"apps": apps}


def wechat_settings(api_base: str, appids: Iterable[str]) -> str:
    """The workers' settings TOML: the sandbox's API and each app's secret."""
    out = f'[wechat]\napi_base = "{api_base}"\n'
    for appid in appids:
        out += f'[wechat.apps.{appid}]\nsecret = "{_secret(appid)}"\n'
    return out


def _secret(appid: str) -> str:
    return f"sandbox-secret-{appid}"


async def read_stats(dep: Deployment) -> dict[tuple[str, str], dict[str, int]]:
    """(appid, template) -> counters summed over days and partitions (the latest record of each
    topic key), rows without counters left out."""
    latest: dict[tuple[RowKey, int], dict[str, int]] = {}
    for raw in await dep.read("stats"):
        if raw is not None:
            rec = decode_record(raw)
            latest[(rec.key, rec.partition)] = rec.counters
    rows: dict[tuple[str, str], list[dict[str, int]]] = {}
    for (key, _), counters in latest.items():
        rows.setdefault((key.appid, key.template), []).append(counters)
    summed = {k: {n: c for n, c in add_rows(v).items() if c} for k, v in rows.items()}
    return {k: v for k, v in summed.items() if v}


async def kind_paused_everywhere(
    dep: Deployment, appid: str, kind: str, paused: bool, timeout: float = 60
) -> bool:
    """Wait until every running worker's ``wxsub_kind_paused{appid,kind}`` is 1 (``paused``) or
    0: the pause is in force (or lifted) for its next decision. False at the timeout."""
    want = 1.0 if paused else 0.0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with httpx.AsyncClient(timeout=10) as client:
        while True:
            values = [await _gauge(client, port, appid, kind)
                      for i, port in dep.web_ports.items() if dep.procs[i] is not None]  # fmt: skip
            if values and all(v == want for v in values):
                return True
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.5)


async def _gauge(client: httpx.AsyncClient, port: int, appid: str, kind: str) -> float | None:
    try:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    except httpx.HTTPError:
        return None
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "wxsub_kind_paused" and s.labels == {"appid": appid, "kind": kind}:
                return float(s.value)
    return None

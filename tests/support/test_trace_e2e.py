"""Support traces on real components: a broker, two workers, the oracle, headless Chromium.

After a scripted scenario (the pipeline test's generated log), every user's trace shows exactly
the decisions the oracle made for them, asked through either worker (one of them forwards to the
owner of the user's partition), and again through the survivor after the other worker stopped
(a rebalance); the console in headless Chromium finds a user and shows why a message was
suppressed; an order's trace shows the decisions about that order.
"""

from __future__ import annotations

import asyncio
import html
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.pipeline.harness import Deployment, free_port
from tests.pipeline.oracle import Expected
from tests.pipeline.test_pipeline_e2e import _log, _run
from wxsub.agents.rules import history as hist
from wxsub.support.trace import fetch_trace, format_trace

pytestmark = pytest.mark.kafka


@dataclass
class SupportDeployment(Deployment):
    support_ports: dict[int, int] = field(default_factory=dict)

    def env(self, index: int) -> dict[str, str]:
        port = self.support_ports.setdefault(index, free_port())
        return {**super().env(index), "WXSUB_SUPPORT_ENABLED": "true",
                "WXSUB_SUPPORT_PORT": str(port)}  # fmt: skip

    def url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.support_ports[index]}"


Row = tuple[str, str, str, str, str, str, str]


def _row(d: Any) -> Row:
    """What a decision is compared by: all but its wall-clock time (and a hold's deadline)."""
    get = (lambda k: d[k]) if isinstance(d, dict) else (lambda k: getattr(d, k))
    detail = "" if get("reason") == hist.HELD else get("detail")
    return (get("event_id"), get("kind"), get("subject"), get("reason"), get("template_id"),
            get("notification_id"), detail)  # fmt: skip


def _expected_rows(exp: Expected) -> dict[str, Counter[Row]]:
    """Users whose whole history fits in the kept window -> the oracle's decisions for them."""
    out = {}
    for key, history in exp.histories.items():
        if len(history) < hist.HISTORY_MAX:
            out[key] = Counter(_row(d) for d in history)
    return out


async def _compare_traces(
    client: httpx.AsyncClient, urls: list[str], want: dict[str, Counter[Row]]
) -> None:
    bad = []
    for n, (key, rows) in enumerate(sorted(want.items())):
        appid, openid = key.split(":", 1)
        url = urls[n % len(urls)]
        resp = await client.get(
            f"{url}/support/api/user", params={"appid": appid, "openid": openid}
        )
        assert resp.status_code == 200, resp.text
        got = Counter(_row(d) for d in resp.json()["decisions"])
        if got != rows:
            bad.append(f"{key} via {url}: missing {rows - got}, extra {got - rows}")
    assert not bad, "\n".join(bad[:5])


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("chromium is missing: scripts/setup.sh installs Debian's chromium")
    return path


async def _console_dom(url: str, profile: Path) -> str:
    """The console page's DOM after its scripts ran (the search from the query string)."""
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
    cmd = [_chromium(), *flags, f"--user-data-dir={profile}", "--virtual-time-budget=15000",
           "--dump-dom", url]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 90)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return out.decode("utf-8", "replace")


async def test_traces_match_the_oracle_through_either_worker_and_a_rebalance(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    log, exp, early = _log(seed=23, window_s=6, users=60, orders=60)
    want = _expected_rows(exp)
    assert len(want) >= 20  # the test means something
    dep = SupportDeployment(kafka_bootstrap, tmp_path, log.merchants_toml)
    try:
        await _run(dep, log, exp, early, workers=2, kills=0, seed=0)
        async with httpx.AsyncClient(timeout=60) as client:
            await _compare_traces(client, [dep.url(0), dep.url(1)], want)
            # ... each user asked through the other worker too
            await _compare_traces(client, [dep.url(1), dep.url(0)], want)

            # the console, in a real browser: find a user, read why a message was suppressed
            key = next(k for k, r in sorted(want.items()) if any(x[3] == "no_credit" for x in r))
            appid, openid = key.split(":", 1)
            page = f"{dep.url(1)}/support/?appid={appid}&openid={openid}"
            dom = await _console_dom(page, tmp_path / "chromium")
            assert 'id="timeline"' in dom, dom[-2000:]
            timeline = html.unescape(dom.split('id="timeline"', 1)[1].split("</table>", 1)[0])
            assert "no_credit" in timeline and f"user {openid}" in html.unescape(dom)

            # an order's trace: the order, its owner, the decisions about it
            key, order_id = next((k, row[2]) for k, r in sorted(want.items()) for row in r
                                 if row[1] == "order_status")  # fmt: skip
            appid, openid = key.split(":", 1)
            doc = await asyncio.to_thread(fetch_trace, dep.url(0), appid, order_id, order=True)
            assert doc["order"]["openid"] == openid
            assert {d["subject"] for d in doc["user"]["decisions"]} == {order_id}
            assert f"order {appid}:{order_id}" in format_trace(doc)

            # a rebalance: worker 0 stops, the survivor owns every partition and answers all
            proc = dep.procs[0]
            assert proc is not None
            proc.terminate()
            proc.wait(30)
            dep.procs[0] = None
            await _compare_traces(client, [dep.url(1)], want)
    finally:
        dep.stop_all()

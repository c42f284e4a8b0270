"""Sender micro-benchmark: sends/s and client CPU per send against the WeChat sandbox.

Clients, all in this one process and run in interleaved rounds (medians reported):

* ``ours``          WeChatClient as deployed: the aiohttp-backed transport's exchange lane
* ``ours-httpx``    the same WeChatClient through httpx.AsyncClient.send on the same transport
                    (the design before the lane: httpx Request/Response per call)
* ``httpx-pool``    the same WeChatClient on httpx's default pool (httpcore)
* ``httpx-aiohttp`` the same WeChatClient on the httpx_aiohttp package's transport
* ``aiohttp``       a plain aiohttp loop (session.post + orjson): the floor

The sandbox runs in a subprocess (``python -m wxsub sandbox``) so its CPU does not count; CPU per
send is ``time.process_time()`` of this process over the sends completed. Each client gets the
same wall time; ``--inflight`` workers each send to their own openid (no 43108). The sandbox's
own CPU per call is printed too: when it nears 1 s / sends/s, the sandbox is the bottleneck.

    python -m bench.sender                # 3 rounds x 4 s per client, 200 in flight, 50 ms
    python -m bench.sender --tiny         # smoke run, a few seconds
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import httpx_aiohttp
import orjson

from wxsub.settings import AppCredentials, Secret, WeChatSettings
from wxsub.wechat.client import WeChatClient
from wxsub.wechat.transport import AiohttpTransport

__all__ = ["main"]

APPID, SECRET = "wxbench00000000001", "bench-secret-0001"
TID = "BENCH_ORDER_STATUS_00000000000000000000001"
WORLD = f"""
seed = 1
[[apps]]
appid = "{APPID}"
secret = "{SECRET}"
pages = ["pages/index/index"]
[[apps.templates]]
id = "{TID}"
title = "订单状态通知"
content = "订单号:{{{{character_string1.DATA}}}}\\n订单状态:{{{{phrase2.DATA}}}}"
"""
DATA = {"character_string1": {"value": "SO-2024050112345"}, "phrase2": {"value": "已发货"}}

SendFn = Callable[[str], Awaitable[None]]


def start_sandbox(world_path: Path, log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    cmd = [sys.executable, "-m", "wxsub", "sandbox", "--port", "0", "--world", str(world_path)]
    log = log_path.open("wb")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().strip()
    if not line.startswith("http"):
        proc.kill()
        raise SystemExit(f"sandbox did not start: {log_path.read_text()[-2000:]}")
    return proc, line


async def prepare(base: str, users: int, latency_s: float) -> list[str]:
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        reply = await http.post(
            "/admin/users", json={"appid": APPID, "count": users, "credits": {TID: 10**7}}
        )
        reply.raise_for_status()
        faults = {"endpoints": ["send"], "latency": {"dist": "fixed", "s": latency_s}}
        (await http.post("/admin/faults", json=faults)).raise_for_status()
        return list(reply.json()["openids"])


def body(openid: str) -> dict[str, Any]:
    return {"touser": openid, "template_id": TID, "data": DATA, "miniprogram_state": "formal"}


async def drive(send: SendFn, openids: list[str], seconds: float) -> dict[str, float]:
    """Each worker sends to its own openid until the deadline; returns counts and rates."""
    done = errors = 0
    deadline = 0.0

    async def worker(openid: str) -> None:
        nonlocal done, errors
        while time.perf_counter() < deadline:
            try:
                await send(openid)
                done += 1
            except Exception:
                errors += 1

    await asyncio.gather(*(send(o) for o in openids[:4]))  # warm: token, connections
    deadline = time.perf_counter() + seconds
    t0, c0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker(o) for o in openids))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "sends": done,
        "errors": errors,
        "per_s": done / wall,
        "cpu_ms": cpu / max(done, 1) * 1e3,
    }


def wechat_settings(base: str, inflight: int) -> WeChatSettings:
    apps = {APPID: AppCredentials(APPID, Secret(SECRET))}
    return WeChatSettings(api_base=base, max_connections=inflight, apps=apps)


async def run_wechat_client(
    base: str, openids: list[str], seconds: float, transport: str
) -> dict[str, float]:
    settings = wechat_settings(base, len(openids))
    limits = httpx.Limits(max_connections=len(openids), max_keepalive_connections=len(openids))
    chosen: httpx.AsyncBaseTransport | None = None
    if transport == "ours-httpx":
        chosen = AiohttpTransport(limits)
    elif transport == "httpx-pool":
        chosen = httpx.AsyncHTTPTransport(limits=limits)
    elif transport == "httpx-aiohttp":
        chosen = httpx_aiohttp.AiohttpTransport(limits=limits)
    async with WeChatClient(settings, transport=chosen) as client:

        async def send(openid: str) -> None:
            await client.send(APPID, body(openid))

        return await drive(send, openids, seconds)


async def run_plain_aiohttp(base: str, openids: list[str], seconds: float) -> dict[str, float]:
    connector = aiohttp.TCPConnector(limit=len(openids))
    async with aiohttp.ClientSession(connector=connector) as session:
        creds = {"grant_type": "client_credential", "appid": APPID, "secret": SECRET}
        async with session.post(f"{base}/cgi-bin/stable_token", json=creds) as resp:
            token = (await resp.json())["access_token"]
        url = f"{base}/cgi-bin/message/subscribe/send?access_token={token}"
        headers = {"Content-Type": "application/json"}

        async def send(openid: str) -> None:
            async with session.post(url, data=orjson.dumps(body(openid)), headers=headers) as r:
                doc = orjson.loads(await r.read())
            if doc.get("errcode", 0) != 0:
                raise RuntimeError(doc["errcode"])

        return await drive(send, openids, seconds)


KINDS = ("ours", "ours-httpx", "httpx-pool", "httpx-aiohttp", "aiohttp")


async def run_kind(kind: str, base: str, openids: list[str], seconds: float) -> dict[str, float]:
    if kind == "aiohttp":
        return await run_plain_aiohttp(base, openids, seconds)
    return await run_wechat_client(base, openids, seconds, kind)


def proc_cpu_s(pid: int) -> float:
    """User+system CPU seconds of another process (Linux /proc; 0.0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def bench(base: str, pid: int, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    openids = await prepare(base, args.inflight, args.latency)
    kinds = tuple(args.kinds)
    results: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
    for r in range(args.rounds):
        order = kinds[r % len(kinds) :] + kinds[: r % len(kinds)]
        for kind in order:
            before = proc_cpu_s(pid)
            run = await run_kind(kind, base, openids, args.seconds)
            run["sandbox_cpu_ms"] = (proc_cpu_s(pid) - before) / max(run["sends"], 1) * 1e3
            results[kind].append(run)
    keys = ("sends", "errors", "per_s", "cpu_ms", "sandbox_cpu_ms")
    return {
        kind: {key: statistics.median(run[key] for run in runs) for key in keys}
        for kind, runs in results.items()
    }


def report(summary: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    print(
        f"sender bench: {args.inflight} in flight, {args.latency * 1e3:.0f} ms added latency, "
        f"{args.rounds} round(s) x {args.seconds:g} s per client (medians)"
    )
    print(
        f"{'client':<15}{'sends/s':>10}{'CPU ms/send':>13}{'sends':>9}{'errors':>8}"
        f"{'sandbox CPU ms/call':>21}"
    )
    for kind, row in summary.items():
        print(
            f"{kind:<15}{row['per_s']:>10.0f}{row['cpu_ms']:>13.3f}"
            f"{row['sends']:>9.0f}{row['errors']:>8.0f}{row['sandbox_cpu_ms']:>21.3f}"
        )
    if args.json:
        print(json.dumps({"bench": "sender", "params": vars(args), "results": summary}))
    ours = summary.get("ours")
    if ours is None:
        return
    for kind in [k for k in summary if k != "ours"]:
        other = summary[kind]
        print(
            f"ours vs {kind}: {ours['per_s'] / other['per_s']:.2f}x sends/s, "
            f"{other['cpu_ms'] / ours['cpu_ms']:.2f}x less CPU per send"
        )
    target = ours["per_s"] >= 2000 and ours["cpu_ms"] <= 0.5
    print(f"target (>= 2000 sends/s, <= 0.5 ms CPU/send): {'met' if target else 'NOT met'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="smoke run in a few seconds")
    parser.add_argument("--inflight", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.05, help="added latency, seconds")
    parser.add_argument("--seconds", type=float, default=4.0, help="wall time per client run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="also print one JSON line")
    parser.add_argument(
        "--kinds", nargs="+", choices=KINDS, default=list(KINDS), help="clients to run"
    )
    args = parser.parse_args(argv)
    if args.tiny:
        args.inflight, args.latency, args.seconds, args.rounds = 20, 0.01, 0.4, 1
    with tempfile.TemporaryDirectory() as tmp:
        world = Path(tmp, "world.toml")
        world.write_text(WORLD, encoding="utf-8")
        proc, base = start_sandbox(world, Path(tmp, "sandbox.log"))
        try:
            summary = asyncio.run(bench(base, proc.pid, args))
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    report(summary, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

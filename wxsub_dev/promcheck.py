"""Run a throw-away Prometheus against wxsub processes and query it (tests, end-to-end checks).

::

    async with run_prometheus({"wxsub-worker": ["127.0.0.1:6066"]}) as prom:
        await prom.wait_targets_up()
        rows = await prom.wait_for("sum(rate(wxsub_events_in_total[30s]))")

The process is Debian's ``prometheus`` (``deploy/prometheus/install.sh``), bound to a free
loopback port, with its own temporary config and TSDB, the repo's alert rules loaded, scraping and
evaluating every ``interval``; it is stopped (and its files removed) when the block exits, even on
error. Job names match ``deploy/prometheus/prometheus.yml`` so the rules' ``job`` matchers apply.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import shutil
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp

from wxsub.errors import PrometheusError, SetupError

__all__ = [
    "DASHBOARD_FILE",
    "DASHBOARD_FILES",
    "GATEWAY_JOB",
    "MERCHANT_DASHBOARD_FILE",
    "RULES_FILE",
    "WORKER_JOB",
    "PanelQuery",
    "Prometheus",
    "dashboard_queries",
    "has_finite_value",
    "panels_without_data",
    "run_prometheus",
]

WORKER_JOB = "wxsub-worker"
GATEWAY_JOB = "wxsub-gateway"
#: the repo's alert rules (present in a source checkout)
RULES_FILE = (
    Path(__file__).resolve().parents[1] / "deploy" / "prometheus" / "rules" / "wxsub.rules.yml"
)

#: the SRE Grafana dashboard, whose panel queries ``dashboard_queries`` reads by default
DASHBOARD_FILE = RULES_FILE.parents[2] / "grafana" / "dashboards" / "wxsub.json"
#: the merchants' dashboard (the funnel per template and kind), provisioned beside it
MERCHANT_DASHBOARD_FILE = DASHBOARD_FILE.with_name("wxsub-merchant.json")
DASHBOARD_FILES = (DASHBOARD_FILE, MERCHANT_DASHBOARD_FILE)

Rows = list[dict[str, Any]]


class PanelQuery(NamedTuple):
    """One query of a dashboard panel, rewritten to plain PromQL."""

    panel: str
    ref_id: str
    expr: str


def dashboard_queries(path: Path = DASHBOARD_FILE, rate_interval: str = "10s") -> list[PanelQuery]:
    """Every panel target of a Grafana dashboard, with Grafana's interval macros replaced.

    ``rate_interval`` stands for ``$__rate_interval`` / ``$__interval``: a few scrape intervals.
    A query variable (the merchants' ``$appid``) stands for its "All" value (``allValue``).
    """
    dashboard = json.loads(path.read_text())
    variables = {
        v["name"]: v.get("allValue", ".*")
        for v in dashboard.get("templating", {}).get("list", ())
        if v.get("type") == "query"
    }
    out: list[PanelQuery] = []
    for panel in _panels(dashboard["panels"]):
        for target in panel.get("targets", ()):
            expr = target["expr"]
            for macro in ("$__rate_interval", "${__rate_interval}", "$__interval"):
                expr = expr.replace(macro, rate_interval)
            for name, value in variables.items():
                expr = expr.replace(f"${{{name}}}", value).replace(f"${name}", value)
            out.append(PanelQuery(panel["title"], target["refId"], expr))
    return out


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # collapsed rows nest their panels


def has_finite_value(rows: Rows) -> bool:
    """True when some instant-vector row holds a number (not NaN/Inf)."""
    return any(math.isfinite(float(row["value"][1])) for row in rows)


class Prometheus:
    """A client of one running Prometheus's HTTP API (``/api/v1``)."""

    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url
        self._session = session

    async def _get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        async with self._session.get(self.url + path, params=params) as resp:
            body = await resp.json(content_type=None)
        if body.get("status") != "success":
            raise PrometheusError(f"{path}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    async def query(self, expr: str, at: float | None = None) -> Rows:
        """The instant query's result rows (``[{"metric": {...}, "value": [t, "v"]}, ...]``)."""
        params = {"query": expr}
        if at is not None:
            params["time"] = repr(at)
        data = await self._get("/api/v1/query", params)
        result = data["result"]
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": result}]
        return list(result)

    async def wait_for(
        self,
        expr: str,
        *,
        timeout: float = 30.0,
        accept: Callable[[Rows], bool] = bool,
    ) -> Rows:
        """Poll ``expr`` until ``accept(rows)`` (default: any row); PrometheusError on timeout."""
        deadline = time.monotonic() + timeout
        rows: Rows = []
        while time.monotonic() < deadline:
            rows = await self.query(expr)
            if accept(rows):
                return rows
            await asyncio.sleep(0.5)
        raise PrometheusError(f"no acceptable result for {expr!r} in {timeout}s (last: {rows})")

    async def targets(self) -> Rows:
        """Active scrape targets (``health``: up/down/unknown, ``lastError``, ``labels``)."""
        data = await self._get("/api/v1/targets", {"state": "active"})
        return list(data["activeTargets"])

    async def wait_targets_up(self, *, timeout: float = 30.0) -> Rows:
        """Wait until every target has been scraped successfully."""
        deadline = time.monotonic() + timeout
        targets: Rows = []
        while time.monotonic() < deadline:
            targets = await self.targets()
            if targets and all(t["health"] == "up" for t in targets):
                return targets
            await asyncio.sleep(0.3)
        down = [(t["scrapeUrl"], t["health"], t["lastError"]) for t in targets]
        raise PrometheusError(f"targets not up in {timeout}s: {down}")

    async def rules(self) -> Rows:
        """Every loaded rule (alerting and recording), with its group name under ``group``."""
        data = await self._get("/api/v1/rules")
        return [{**rule, "group": g["name"]} for g in data["groups"] for rule in g["rules"]]

    async def wait_rules_evaluated(self, *, timeout: float = 30.0) -> Rows:
        """Wait until every rule has been evaluated at least once, and return them all."""
        deadline = time.monotonic() + timeout
        rules: Rows = []
        while time.monotonic() < deadline:
            rules = await self.rules()
            if all(not r["lastEvaluation"].startswith("0001-") for r in rules):
                return rules
            await asyncio.sleep(0.3)
        raise PrometheusError(f"rules not evaluated in {timeout}s")

    async def alerts(self) -> Rows:
        """Active alerts (pending and firing)."""
        data = await self._get("/api/v1/alerts")
        return list(data["alerts"])


async def panels_without_data(
    prom: Prometheus, queries: Sequence[PanelQuery] | None = None, *, timeout: float = 30.0
) -> list[tuple[PanelQuery, str]]:
    """The panel queries that gave no number within ``timeout`` (all polled at once), with why."""
    queries = dashboard_queries() if queries is None else queries

    async def check(q: PanelQuery) -> str | None:
        try:
            await prom.wait_for(q.expr, accept=has_finite_value, timeout=timeout)
        except PrometheusError as exc:
            return str(exc)
        return None

    errors = await asyncio.gather(*(check(q) for q in queries))
    return [(q, err) for q, err in zip(queries, errors, strict=True) if err is not None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _config(
    targets: Mapping[str, Sequence[str]], rule_files: Sequence[Path], interval: str
) -> dict[str, Any]:
    return {
        "global": {
            "scrape_interval": interval,
            "evaluation_interval": interval,
            "scrape_timeout": interval,
        },
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": list(addrs)}]}
            for job, addrs in targets.items()
        ],
    }


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), 10)
    except TimeoutError:
        proc.kill()
        await proc.wait()


async def _wait_ready(
    proc: asyncio.subprocess.Process,
    session: aiohttp.ClientSession,
    url: str,
    log: Path,
    timeout: float,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            break
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(url + "/-/ready") as resp:
                if resp.status == 200:
                    return
        await asyncio.sleep(0.1)
    tail = log.read_text(errors="replace")[-2000:]
    raise PrometheusError(f"prometheus did not become ready (exit {proc.returncode}): {tail}")


@contextlib.asynccontextmanager
async def run_prometheus(
    targets: Mapping[str, Sequence[str]],
    *,
    rule_files: Sequence[Path] = (RULES_FILE,),
    interval: str = "1s",
    binary: str = "prometheus",
    start_timeout: float = 30.0,
) -> AsyncIterator[Prometheus]:
    """A Prometheus scraping ``targets`` (job name -> ``host:port`` list) on a free port.

    Yields a :class:`Prometheus` client; the process is stopped when the block exits.
    """
    exe = shutil.which(binary)
    if exe is None:
        raise SetupError(f"{binary} not found: run deploy/prometheus/install.sh")
    with tempfile.TemporaryDirectory(prefix="wxsub-prom-") as tmp:
        root = Path(tmp)
        config = root / "prometheus.yml"  # JSON is YAML
        config.write_text(json.dumps(_config(targets, rule_files, interval), indent=1))
        port = _free_port()
        log = root / "prometheus.log"
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                exe,
                f"--config.file={config}",
                f"--storage.tsdb.path={root / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
                url = f"http://127.0.0.1:{port}"
                await _wait_ready(proc, session, url, log, start_timeout)
                yield Prometheus(url, session)
        finally:
            await _stop(proc)

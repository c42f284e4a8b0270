"""The composition root of a worker, and ``wxsub worker``: settings in, running stages out.

The only module that knows both the runtime (``wxsub.streams``) and the stages
(``wxsub.agents``). ``create_worker(settings)`` builds the metrics, the merchant config, the
stages and their runners, the WeChat client, and the web app (/metrics, /health, /stats);
``Worker.run(stop)`` runs them until ``stop`` is set. Nothing is built at import time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from wxsub.agents.base import StageEnv
from wxsub.agents.decide import DecideStage
from wxsub.agents.orders import OrdersStage
from wxsub.agents.products import ProductsStage
from wxsub.agents.stats import StatsStage
from wxsub.config_follow import LiveConfig
from wxsub.errors import ConfigError, SetupError
from wxsub.logs import setup_logging
from wxsub.merchants import Merchants, load_merchants
from wxsub.retention import check_receipt_horizon
from wxsub.settings import Settings, load_settings
from wxsub.stats import read_stats
from wxsub.streams.connection import KafkaProbe, security_kwargs
from wxsub.streams.metrics import WorkerMetrics
from wxsub.streams.runtime import StageRunner
from wxsub.streams.stage import Stage
from wxsub.streams.topics import changelog_name, ensure_topics

__all__ = ["ALL_STAGES", "Worker", "create_worker", "parse_stages", "register"]

log = logging.getLogger(__name__)

ALL_STAGES = ("orders", "products", "decide", "deliver", "stats", "cards")


@dataclass
class Worker:
    settings: Settings
    env: StageEnv
    runners: list[StageRunner]
    closers: list[Any] = field(default_factory=list)
    client: Any = None  # the WeChat client when this worker delivers
    live: LiveConfig | None = None  # the live merchant config and template lists
    kind_pauses: Any = None  # the pauses in force (KindPauses), when it decides or delivers
    support: Any = None  # the SupportServer when support.enabled (docs/support.md)
    _token_counts: tuple[int, int] = (0, 0)
    probe: KafkaProbe | None = None  # /health/ready: is Kafka reachable now

    async def run(self, stop: asyncio.Event) -> None:
        settings = self.settings
        await ensure_topics(settings.kafka, settings.worker.app_id)
        follow: asyncio.Task[None] | None = None
        if self.live is not None:  # the config live now, before any decision
            await self.live.start()
            follow = asyncio.create_task(self.live.run(), name="live-config")
        pauses: asyncio.Task[None] | None = None
        if self.kind_pauses is not None:  # the pauses in force, before any send
            await self.kind_pauses.start()
            pauses = asyncio.create_task(self.kind_pauses.run(), name="kind-pauses")
        site_runner = web.AppRunner(self.web_app(), access_log=None)
        await site_runner.setup()
        site = web.TCPSite(site_runner, settings.worker.web_host, settings.worker.web_port)
        await site.start()
        log.info(
            "worker started",
            extra={"stages": [r.spec.name for r in self.runners], "port": settings.worker.web_port},
        )
        if self.support is not None:
            await self.support.start()
            self.closers.append(self.support.stop)
        tasks = [asyncio.create_task(r.run(), name=f"stage-{r.spec.name}") for r in self.runners]
        stopped = asyncio.create_task(stop.wait())
        try:
            # a stage's run() only returns early with a fatal error (AccessDenied): stop all
            await asyncio.wait([stopped, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for t in tasks:
                if t.done() and not t.cancelled() and t.exception() is not None:
                    raise typing.cast(BaseException, t.exception())
        finally:
            stopped.cancel()
            for r in self.runners:
                await r.stop()
            _, pending = await asyncio.wait(tasks, timeout=15)
            for t in pending:
                t.cancel()
            if follow is not None and self.live is not None:
                follow.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await follow
                await self.live.stop()
            if pauses is not None:
                pauses.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pauses
                await self.kind_pauses.stop()
            if self.probe is not None:
                with contextlib.suppress(Exception):
                    await self.probe.close()
            for closer in self.closers:
                with contextlib.suppress(Exception):
                    await closer()
            await site_runner.cleanup()
            log.info("worker stopped")

    def web_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/health", self._health)
        app.router.add_get("/health/live", self._live)
        app.router.add_get("/health/ready", self._ready)
        app.router.add_get("/stats", self._stats)
        return app

    async def _metrics(self, request: web.Request) -> web.Response:
        self._sample()
        body = generate_latest(self.env.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _stats(self, request: web.Request) -> web.Response:
        """The stats topic summed over partitions (``?appid=&day=&template=`` filter it)."""
        q = request.query
        try:
            table = await read_stats(self.settings.kafka)
        except SetupError as exc:
            return web.json_response({"error": str(exc)}, status=503)
        rows = table.select(q.get("appid"), q.get("day"), q.get("template")).to_json()
        return web.json_response({"rows": rows})

    def _sample(self) -> None:
        """Gauges and counters owned by other objects, read at scrape time."""
        metrics = self.env.metrics
        for r in self.runners:
            metrics.lag.labels(r.spec.name).set(r.lag())
        if self.client is not None:
            fetches, failures = self.client.tokens.fetches, self.client.tokens.failures
            old_fetches, old_failures = self._token_counts
            failed = failures - old_failures
            metrics.token_refreshes.labels("failed").inc(failed)
            metrics.token_refreshes.labels("ok").inc(fetches - old_fetches - failed)
            self._token_counts = (fetches, failures)

    async def _live(self, request: web.Request) -> web.Response:
        """Liveness: the process and its event loop answer (restart it when this fails)."""
        return web.json_response({"live": True})

    async def _ready(self, request: web.Request) -> web.Response:
        """Readiness: every stage assigned and restored, and Kafka reachable now."""
        stages = {r.spec.name: r.ready.is_set() for r in self.runners}
        if self.probe is None:
            self.probe = KafkaProbe(self.settings.kafka)
        kafka_ok, why = await self.probe.check()
        ok = kafka_ok and all(stages.values())
        body = {"ready": ok, "kafka": why, "stages": stages}
        return web.json_response(body, status=200 if ok else 503)

    async def _health(self, request: web.Request) -> web.Response:
        stages = {r.spec.name: r.ready.is_set() for r in self.runners}
        ok = all(stages.values())
        return web.json_response({"ok": ok, "stages": stages}, status=200 if ok else 503)


def create_worker(settings: Settings, stages: Sequence[str] = ALL_STAGES) -> Worker:
    """Build a worker running ``stages`` (all by default; see :func:`parse_stages`)."""
    stages = parse_stages(",".join(stages))
    path = settings.worker.merchants
    merchants = load_merchants(path) if path is not None else Merchants({})
    env = StageEnv(settings, merchants, WorkerMetrics())
    env.metrics.known_apps(settings.wechat.apps)
    live = LiveConfig(env, merchants)
    closers: list[Any] = []
    client = None
    kind_pauses = None
    if "decide" in stages or "deliver" in stages:  # both honour the pauses in force
        from wxsub.agents.kind_pauses import KindPauses

        kind_pauses = KindPauses(env)
    agents: list[Stage] = []
    if "orders" in stages:
        agents.append(OrdersStage(env))
    if "products" in stages:
        agents.append(ProductsStage(env))
    if "decide" in stages:
        agents.append(DecideStage(env, kind_pauses))
    if "stats" in stages:
        agents.append(StatsStage(env))
    max_batch: dict[str, int] = {}
    if "deliver" in stages:
        from wxsub.agents.deliver import DeliverStage, delivery_policy
        from wxsub.agents.templates_pull import TemplatePuller
        from wxsub.wechat.client import WeChatClient

        d = settings.delivery
        retentions = {appid: cfg.retention for appid, cfg in merchants.apps.items()}
        check_receipt_horizon(retentions, d.receipt_window_ms, d.receipt_skew_ms)
        client = WeChatClient(settings.wechat)
        closers.append(client.aclose)
        interval = settings.worker.templates_pull_interval_s
        puller = TemplatePuller(env, client, live.live_templates, interval)
        policy = delivery_policy(settings.delivery)
        agents.append(DeliverStage(env, client, policy, puller, kind_pauses))
        max_batch["deliver"] = settings.worker.max_in_flight
    if "cards" in stages:
        from wxsub.agents.cards import CardStage
        from wxsub.wechat.client import WeChatClient

        if client is None:
            client = WeChatClient(settings.wechat)
            closers.append(client.aclose)
        agents.append(CardStage(env, client))
    for agent in agents:
        env.metrics.stage_started(agent.spec.name)
    runners = [
        _runner(settings, env, agent, max_batch.get(agent.spec.name, settings.worker.max_batch))
        for agent in agents
    ]
    worker = Worker(settings, env, runners, closers, client, live, kind_pauses)
    if settings.support.enabled:
        from wxsub.support.local import Local
        from wxsub.support.web import SupportServer

        by_stage = {r.spec.name: r for r in runners}
        local = Local(by_stage, lambda: env.merchants, settings.kafka.partitions, env.clock)
        worker.support = SupportServer(settings, local)
    return worker


def _runner(settings: Settings, env: StageEnv, agent: Stage, max_batch: int) -> StageRunner:
    metrics = env.metrics
    name = agent.spec.name

    def on_commit(partition: int, records: int) -> None:
        metrics.batches.labels(name).inc()
        metrics.records.labels(name).inc(records)

    return StageRunner(
        agent,
        bootstrap=settings.kafka.bootstrap,
        app_id=settings.worker.app_id,
        state_dir=settings.worker.state_dir,
        changelog_topic=lambda stage, store: changelog_name(
            settings.kafka, settings.worker.app_id, stage, store
        ),
        linger_ms=int(settings.kafka.producer_linger_s * 1000),
        max_batch=max_batch,
        commit_interval_ms=settings.worker.commit_interval_ms,
        session_timeout_ms=settings.worker.session_timeout_ms,
        on_commit=on_commit,
        guarantee=settings.worker.processing_guarantee,
        # where support queries for this member's partitions go (wxsub.support.routing)
        member_data=settings.support.url.encode() if settings.support.enabled else b"",
        security=security_kwargs(settings.kafka),
    )


def parse_stages(text: str) -> tuple[str, ...]:
    """The stages named in ``text`` (comma-separated), in pipeline order.

    Raises ConfigError (one line, exit 2 from the CLI) for an unknown or empty list."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = sorted(set(names) - set(ALL_STAGES))
    if unknown:
        raise ConfigError(
            "--stages", f"unknown stage(s) {', '.join(unknown)} (known: {', '.join(ALL_STAGES)})"
        )
    if not names:
        raise ConfigError("--stages", f"name at least one of {', '.join(ALL_STAGES)}")
    return tuple(s for s in ALL_STAGES if s in names)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "worker",
        help="run the stream worker (stages + /metrics, /health, /stats)",
        description="Run the wxsub worker: the orders, products, decide, deliver and stats stages, "
        "exactly once, plus a web server with /metrics and /health.",
    )
    p.add_argument(
        "--stages",
        default=",".join(ALL_STAGES),
        help="comma-separated stages to run here (default: all)",
    )
    p.add_argument("-l", "--log-level", default=None, help="log level (default: worker.log_level)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    stages = parse_stages(args.stages)  # before anything starts: a typo is a one-line error
    settings = load_settings(args.config)
    setup_logging(args.log_level or settings.worker.log_level)
    _tune_gc()
    asyncio.run(_main(settings, stages))
    return 0


#: CPython's cyclic GC thresholds for a worker (the default is 700, 10, 10)
GC_THRESHOLDS = (20_000, 20, 20)


def _tune_gc() -> None:
    """Fewer cyclic collections. A worker allocates dozens of container objects per event,
    nearly all freed at once by reference counting, yet each counts towards the default
    young-generation threshold (700); and the modules, settings and schemas loaded by now are
    moved out of the collector's sight (``gc.freeze``), so the older generations' collections
    no longer walk them. Measured: -4% CPU per event in the pipeline A/B (bench/RESULTS.md,
    session 8)."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def _main(settings: Settings, stages: Sequence[str]) -> None:
    worker = create_worker(settings, stages)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await worker.run(stop)

"""``python -m bench`` (``make bench``): every benchmark, on a real broker and the sandbox.

    python -m bench                       # full sizes (several minutes)
    python -m bench --tiny                # smoke sizes (the test suite runs this)
    python -m bench --only pipeline,latency --events 50000

The broker is ``--bootstrap`` / ``$WXSUB_KAFKA_BOOTSTRAP`` or a LocalKafka started for the run.
Every Kafka client connects with the ``[kafka]`` settings of ``$WXSUB_CONFIG`` / ``WXSUB_KAFKA_*``
(``bench.common.kafka_settings``: ``security_protocol``, SASL, TLS), as the worker processes do,
so a benchmark runs against a secured cluster as it does against a plaintext broker.
Each benchmark prints its figures and its ratio to the baseline measured in the same run;
``--json`` adds one JSON line with everything. bench/RESULTS.md records the latest full run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench import sender
from bench.baseline import run_baseline
from bench.common import broker, kafka_settings, machine, order_events, produce, ratio
from bench.fanout import run_fanout
from bench.latency import run_latency
from bench.peers import run_peers
from bench.pipeline import run_pipeline
from wxsub.streams.topics import ensure_topics

__all__ = ["main"]

ALL = ("baseline", "pipeline", "peers", "latency", "fanout", "sender")


def sizes(args: argparse.Namespace) -> dict[str, Any]:
    if args.tiny:
        return {
            "events": 600, "faust": 200, "rates": [50], "seconds": 1.0, "fanout": 2000,
            "partitions": args.latency_partitions, "rounds": 1, "peers": 400, "peers_faust": 200,
            "peers_rounds": 1,
        }  # fmt: skip
    return {
        "events": args.events,
        "faust": args.faust_events,
        "rates": [500, 1000, 2000],
        "seconds": args.seconds,
        "fanout": args.fanout,
        "partitions": args.latency_partitions,
        "rounds": args.pipeline_rounds,
        "peers": args.events,
        "peers_faust": args.faust_events,
        "peers_rounds": args.peers_rounds,
    }


async def bench_baseline(boot: str, size: dict[str, Any], out: dict[str, Any]) -> None:
    n = size["events"]
    kafka = replace(kafka_settings(boot), topic_prefix=f"base{os.getpid()}-{time.time_ns()}.")
    await ensure_topics(kafka, "base")
    inp = kafka.topic("order-status")
    await produce(boot, ((inp, k, v) for _, k, v in order_events(n, max(n // 5, 1), 0)))
    raw = run_baseline("raw", boot, inp, kafka.topic("candidates"), n, timeout=300)
    nf = min(size["faust"], n)
    faust = run_baseline("faust", boot, inp, kafka.topic("intents"), nf, timeout=300)
    for name, r in (("raw aiokafka", raw), ("faust pass-through", faust)):
        r["per_s"], r["cpu_us"] = r["n"] / r["wall_s"], r["cpu_s"] / r["n"] * 1e6
        print(f"  {name:<20} {r['per_s']:>9.0f} msg/s {r['cpu_us']:>8.1f} µs CPU/msg  (n={r['n']})")
    print(f"  faust vs raw: {ratio(faust['per_s'], raw['per_s'])} throughput, "
          f"{ratio(faust['cpu_us'], raw['cpu_us'])} CPU per message")  # fmt: skip
    out["baseline"] = {"raw": raw, "faust": faust, "raw_topics": (inp, kafka.topic("candidates"))}


async def bench_pipeline(boot: str, size: dict[str, Any], work: Path, out: dict[str, Any]) -> None:
    """``rounds`` rounds of at-least-once and exactly-once (alternating which goes first), each
    round after a raw loop of its own (the first round's is the baseline's), so the ratios
    compare runs minutes apart at most; medians over the rounds (the VM drifts 15-20% within
    minutes: bench/RESULTS.md, session 4)."""
    n, rounds = size["events"], size["rounds"]
    base = out.get("baseline", {})
    runs: dict[str, list[dict[str, Any]]] = {"at_least_once": [], "exactly_once": []}
    raws: list[dict[str, Any]] = []
    for i in range(rounds):
        if base.get("raw"):
            raws.append(base["raw"] if i == 0 else _raw_again(boot, base["raw_topics"], n))
            if i > 0:
                print(f"  round {i + 1}: raw aiokafka {raws[-1]['per_s']:>8.0f} msg/s "
                      f"{raws[-1]['cpu_us']:>7.1f} µs CPU/msg")  # fmt: skip
        order = (
            ("at_least_once", "exactly_once") if i % 2 == 0 else ("exactly_once", "at_least_once")
        )
        for g in order:
            r = await run_pipeline(boot, work / f"{g}-{i}", n, max(n // 5, 1), g)
            runs[g].append(r)
            if raws:
                r["vs_raw"] = r["events_per_s"] / raws[-1]["per_s"]
            print(f"  {g:<14} {r['events_per_s']:>8.0f} events/s {r['cpu_us_per_event']:>7.1f} µs "
                  f"CPU/event  intents={r['intents']} dup={r['duplicates']}"
                  + (f"  ({r['vs_raw']:.2f}x this round's raw)" if raws else ""))  # fmt: skip
    res: dict[str, Any] = {g: _median_run(rs) for g, rs in runs.items()}
    res["rounds"] = runs
    eos = res["exactly_once"]
    if rounds > 1:
        print(f"  medians of {rounds} rounds:")
        for g in ("at_least_once", "exactly_once"):
            print(f"  {g:<14} {res[g]['events_per_s']:>8.0f} events/s "
                  f"{res[g]['cpu_us_per_event']:>7.1f} µs CPU/event")  # fmt: skip
    if raws:
        raw_cpu = statistics.median(r["cpu_us"] for r in raws)
        for g in ("at_least_once", "exactly_once"):
            print(f"  {g}: {res[g]['vs_raw']:.2f}x raw throughput (target >= 0.25), "
                  f"{res[g]['cpu_us_per_event'] / raw_cpu:.1f}x raw CPU/event")  # fmt: skip
        faust = base["faust"]
        print(f"  exactly_once vs faust pass-through: "
              f"{ratio(eos['events_per_s'], faust['per_s'])} throughput, "
              f"{ratio(faust['cpu_us'], eos['cpu_us_per_event'])} less CPU per event")  # fmt: skip
    res["eos_vs_alo"] = statistics.median(
        e["events_per_s"] / a["events_per_s"]
        for e, a in zip(runs["exactly_once"], runs["at_least_once"], strict=True)
    )
    print(
        f"  exactly_once / at_least_once: {res['eos_vs_alo']:.2f} (target >= 0.9); "
        f"CPU target <= 150 µs/event: {'met' if eos['cpu_us_per_event'] <= 150 else 'NOT met'}"
    )
    out["pipeline"] = res


def _raw_again(boot: str, topics: tuple[str, str], n: int) -> dict[str, Any]:
    """The raw loop once more over the baseline's input (a new consumer group reads it all)."""
    return run_baseline("raw", boot, topics[0], topics[1], n, timeout=300)


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One run's fields, each the median over ``runs`` (numbers) or the first run's."""
    out = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = statistics.median(r[key] for r in runs)
    return out


async def bench_peers(boot: str, size: dict[str, Any], out: dict[str, Any]) -> None:
    """One stateful hop in wxsub, Quix Streams and Faust (bench/peers.py), ABBA rounds."""
    from bench.peers import ENGINES

    n, nf, rounds = size["peers"], size["peers_faust"], size["peers_rounds"]
    engines = list(ENGINES)
    if n < 1000:  # smoke size: Faust's fast path has tests of its own
        engines = [e for e in engines if e[0] != "faust-fast"]
    out["peers"] = await run_peers(boot, n, nf, rounds, engines)


async def bench_latency(boot: str, size: dict[str, Any], work: Path, out: dict[str, Any]) -> None:
    res = await run_latency(
        boot, work / "latency", size["rates"], size["seconds"], partitions=size["partitions"]
    )
    print(f"  ({size['partitions']} partitions)")
    for r in res:
        print(
            f"  {r['rate']:>5}/s  p50 {r['p50_ms']:>7.0f} ms  p95 {r['p95_ms']:>7.0f} ms  "
            f"p99 {r['p99_ms']:>7.0f} ms  max {r['max_ms']:>7.0f} ms  (n={r['events']})"
        )
    interval = 100  # worker.commit_interval_ms, the default the latency deployment runs
    for rate, limit in ((1000, 3), (2000, 5)):
        for r in (r for r in res if r["rate"] == rate):
            x = r["p99_ms"] / interval
            print(f"  target p99 <= {limit}x commit_interval_ms ({interval} ms) at {rate}/s: "
                  f"{x:.1f}x, {'met' if x <= limit else 'NOT met'}")  # fmt: skip
    out["latency"] = res


async def bench_fanout(boot: str, size: dict[str, Any], work: Path, out: dict[str, Any]) -> None:
    modes = ("cold",) if size["fanout"] < 10_000 else ("warm", "cold")  # smoke: one restart
    r = await run_fanout(boot, work / "fanout", size["fanout"], modes)
    print(f"  fan-out to {r['watchers']} watchers: {r['fanout_s']:.1f} s "
          f"({r['fanout_per_s']:.0f} intents/s, {r['fanout_cpu_us']:.1f} µs CPU each), "
          f"intents={r['intents']:.0f}; target <= 120 s: "
          f"{'met' if r['fanout_s'] <= 120 else 'NOT met'}")  # fmt: skip
    base = out.get("baseline", {}).get("raw")
    if base:
        # per layout: ``two`` (two identical workers) is how an operator scales the fan-out out
        for layout, lr in r["layouts"].items():
            x = lr["fanout_per_s"] / base["per_s"]
            print(f"  fan-out intents/s vs raw msg/s, layout {layout}: {x:.2f}x; target >= 0.6x: "
                  f"{'met' if x >= 0.6 else 'NOT met'}")  # fmt: skip
    print(f"  first start (restore {r['watchers']} watches + users): {r['first_start_s']:.1f} s")
    for mode in modes:
        x = r[f"restart_{mode}"]
        ok = x["resume_s"] <= 30 and x["rss_mib"] <= 512
        print(f"  restart {mode} ({r['watchers']} users): resumes in {x['resume_s']:.1f} s, "
              f"RSS {x['rss_mib']:.0f} MiB; targets <= 30 s, <= 512 MiB: "
              f"{'met' if ok else 'NOT met'}")  # fmt: skip
    rr = r.get("restore_rate")
    if rr:
        print(f"  cold restore: {rr['restore_per_s']:.0f} changelog records/s vs a raw read of the "
              f"same changelogs {rr['raw_per_s']:.0f}/s ({rr['records']} records): "
              f"{rr['ratio']:.2f}x (target >= 0.5)")  # fmt: skip
    out["fanout"] = r


def run(args: argparse.Namespace) -> dict[str, Any]:
    only = [s for s in args.only.split(",") if s] if args.only else list(ALL)
    size = sizes(args)
    out: dict[str, Any] = {"machine": machine(), "sizes": size}
    print(f"wxsub bench on {out['machine']}")
    with broker(args.bootstrap) as boot, tempfile.TemporaryDirectory(prefix="wxbench-") as tmp:
        work = Path(tmp)
        steps = {
            "baseline": lambda: bench_baseline(boot, size, out),
            "pipeline": lambda: bench_pipeline(boot, size, work, out),
            "peers": lambda: bench_peers(boot, size, out),
            "latency": lambda: bench_latency(boot, size, work, out),
            "fanout": lambda: bench_fanout(boot, size, work, out),
        }
        for name in only:
            t = time.perf_counter()
            print(f"[{name}]", flush=True)
            if name == "sender":
                sender.main(["--tiny"] if args.tiny else [])
            else:
                asyncio.run(steps[name]())
            print(f"  ({time.perf_counter() - t:.0f} s)", flush=True)
    return out


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="smoke sizes")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {','.join(ALL)}")
    parser.add_argument("--bootstrap", default=os.environ.get("WXSUB_KAFKA_BOOTSTRAP"))
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--faust-events", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=10.0, help="per latency rate")
    parser.add_argument("--fanout", type=int, default=1_000_000)
    parser.add_argument(
        "--latency-partitions", type=int, default=2, help="partitions of the latency deployment"
    )
    parser.add_argument(
        "--pipeline-rounds", type=int, default=3,
        help="rounds of the pipeline benchmark, each with its own raw loop (medians reported)",
    )  # fmt: skip
    parser.add_argument(
        "--peers-rounds", type=int, default=2, help="ABBA rounds of the peers comparison"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)  # unwind, so a LocalKafka we started stops
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # leader-election retry noise
    out = run(args)
    if args.json:
        print(json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Latency A/B: the end-to-end latency benchmark for two checkouts, alternated on one broker.

The latency of a shared VM drifts with its other load, so two versions measured one after the
other differ by the drift as much as by the code. This runs :func:`bench.latency.run_latency`
with the workers of checkout A, then B, then B, then A, ... (pairs in ABBA order) on one broker
and prints each run's p50/p99 per rate, the per-hop medians and the workers' CPU per event,
then the medians per arm.

    git worktree add /tmp/base <rev>
    python -m bench.latency_ab /tmp/base . [--rates 1000,2000] [--seconds 10] [--pairs 2]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.ab import checkouts
from bench.common import broker
from bench.latency import run_latency

__all__ = ["main", "run_ab"]

WORKERS = ("upstream", "deliver1")


def cpu_us_per_event(r: dict[str, Any]) -> float:
    """The workers' CPU per event, in µs (their % of a core over the rate's publishing and
    draining, times that span, over the events)."""
    pct = sum(r["cpu_pct"].get(w, 0.0) for w in WORKERS)
    return pct / 100 * r["span_s"] / r["events"] * 1e6


def line(arm: str, r: dict[str, Any]) -> str:
    hops = " ".join(f"{k} {v:.0f}" for k, v in r["hops_ms"].items())
    return (
        f"  {arm} {r['rate']:>5}/s  p50 {r['p50_ms']:5.0f}  p99 {r['p99_ms']:5.0f} ms  "
        f"hops {hops}  workers {cpu_us_per_event(r):5.0f} µs CPU/event"
    )


async def run_ab(
    bootstrap: str, roots: tuple[Path, Path], rates: list[int], seconds: float, pairs: int,
    work: Path,
) -> dict[str, list[dict[str, Any]]]:  # fmt: skip
    runs: dict[str, list[dict[str, Any]]] = {"A": [], "B": []}
    for i in range(pairs):
        for arm in ("A", "B") if i % 2 == 0 else ("B", "A"):
            root = roots[0] if arm == "A" else roots[1]
            res = await run_latency(bootstrap, work / f"{i}{arm}", rates, seconds, code_root=root)
            for r in res:
                runs[arm].append(r)
                print(line(arm, r), flush=True)
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.latency_ab", description=__doc__.split("\n")[0]
    )
    parser.add_argument("a", type=Path, help="checkout A (the base)")
    parser.add_argument("b", type=Path, help="checkout B")
    parser.add_argument("--rates", default="1000,2000")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--bootstrap", default=None)
    args = parser.parse_args(argv)
    roots = checkouts(parser, args.a, args.b)
    rates = [int(x) for x in args.rates.split(",")]
    print(f"A = {roots[0]}\nB = {roots[1]}", flush=True)
    with broker(args.bootstrap) as boot, tempfile.TemporaryDirectory(prefix="wxlat-") as tmp:
        runs = asyncio.run(run_ab(boot, roots, rates, args.seconds, args.pairs, Path(tmp)))
    for rate in rates:
        for arm in ("A", "B"):
            rs = [r for r in runs[arm] if r["rate"] == rate]
            hops = {k: statistics.median(r["hops_ms"][k] for r in rs) for k in rs[0]["hops_ms"]}
            print(
                f"  {arm} {rate:>5}/s median of {len(rs)}: "
                f"p50 {statistics.median(r['p50_ms'] for r in rs):5.0f}  "
                f"p99 {statistics.median(r['p99_ms'] for r in rs):5.0f} ms  hops "
                + " ".join(f"{k} {v:.0f}" for k, v in hops.items())
                + f"  {statistics.median(cpu_us_per_event(r) for r in rs):5.0f} µs CPU/event"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
